"""Public addresses (EC2's Elastic IPs): leases of the public network (EC2_PUBLIC_NETWORK,
a virtual network the admin creates, normally FIXED or RANGED over public addresses),
each held for its Address row and associated with at most one of its owner's VMs.

Allocating holds a free lease of that network for the address (the network shows it
held; no NIC gets it) and releasing gives it back. Associating writes PUBLIC_IP = <ip>
on the VM's first NIC, which the network drivers read from the VM document; the VM must
have a NIC. A VM has at most one address: associating another one moves the first off
it. An association ends with its VM (core.service.leases.release_leases), and a running
VM whose address changes gets its filtering re-applied (core.service.refilter). An
address is released only when it is not associated, as AWS does for VPC addresses.
"""

from __future__ import annotations

from sqlmodel import Session, col, delete, select

from core import lifecycle, template
from core.errors import (
    Conflict,
    InvalidRequest,
    InvalidState,
    LeaseTaken,
    NotConfigured,
    NotFound,
)
from core.lifecycle import VmState
from core.models import VM, Address, Tag, VNet
from core.service import leases, refilter, vnets
from core.service.access import ALL, fetch, restrict
from core.service.context import Caller, Cloud, vm_log


def _public_network(s: Session, cloud: Cloud) -> VNet:
    ref = cloud.config.ec2_public_network
    if not ref.strip():
        raise NotConfigured("Elastic IPs are not configured on this cloud "
                            "(EC2_PUBLIC_NETWORK is not set)")
    found = vnets.configured(s, ref)
    if found is None or found.id is None:
        raise NotConfigured(f"Elastic IPs are not configured on this cloud "
                            f"(EC2_PUBLIC_NETWORK names no network: {ref!r})")
    return s.get(VNet, found.id, with_for_update=True) or found


def allocate(cloud: Cloud, caller: Caller, *, ip: str = "") -> Address:
    """Hold a free lease of the public network (or `ip`, if it is one and free) for a new
    address. NotConfigured; NoFreeLease, LeaseTaken; InvalidRequest or
    NotFound for an `ip` the network does not have."""
    with cloud.session() as s:
        vnet = _public_network(s, cloud)
        lease = leases.hold_for_address(s, vnet, ip)
        if s.exec(select(Address.id).where(Address.ip == lease.ip)).first() is not None:
            raise LeaseTaken(f"the address {lease.ip} is already allocated")
        row = Address(uid=caller.uid, gid=caller.gid, ip=lease.ip, vnet_id=vnet.id)
        s.add(row)
        s.flush()
        return row


def list_addresses(cloud: Cloud, caller: Caller, *, flag: int = ALL) -> list[Address]:
    with cloud.session() as s:
        query = restrict(select(Address), Address, caller, flag)
        return list(s.exec(query.order_by(col(Address.id))))


def get(cloud: Cloud, caller: Caller, *, address_id: int) -> Address:
    with cloud.session() as s:
        return fetch(s, Address, address_id, caller, "address")


def find(cloud: Cloud, caller: Caller, *, ip: str) -> Address:
    """The caller's own address `ip`."""
    with cloud.session() as s:
        row = s.exec(select(Address).where(Address.uid == caller.uid,
                                           Address.ip == ip)).first()
        if row is None:
            raise NotFound("address", ip)
        return row


def _locked(s: Session, caller: Caller, address_id: int) -> Address:
    """The address, locked, and the VM it is associated with locked before it: VMs are
    locked before their addresses everywhere (a VM ending updates its address)."""
    while True:
        row = fetch(s, Address, address_id, caller, "address")
        vm_id = row.vm_id
        if vm_id is not None:
            s.get(VM, vm_id, with_for_update=True)
        s.refresh(row, with_for_update=True)
        if row.vm_id == vm_id:
            return row


def _public_ip(s: Session, vm_id: int, row: Address, on: bool, what: str) -> None:
    """PUBLIC_IP = the address on the VM's first NIC (or none), and the VM's filtering
    re-applied if it is running."""
    vm = s.get(VM, vm_id, with_for_update=True)
    if vm is None:
        return
    vm.template = leases.set_public_ip(vm.template, row.ip if on else "")
    s.add(vm)
    vm_log(s, vm_id, f"Elastic IP {row.ip} {what}")
    refilter.request(s, [vm_id], f"elastic IP {row.ip}")


def associate(cloud: Cloud, caller: Caller, *, address_id: int, vm_id: int,
              reassociate: bool = True) -> Address:
    """Associate the address with one of its owner's VMs that has a NIC (InvalidRequest
    otherwise); it leaves any VM it was on (a Conflict instead when `reassociate` is
    false) and any address the VM had leaves it. Associating it again with the same VM
    changes nothing."""
    with cloud.session() as s:
        vm = fetch(s, VM, vm_id, caller, "VM", lock=True)
        row = _locked(s, caller, address_id)
        if vm.uid != row.uid:
            raise NotFound("VM", vm_id)
        if vm.state == VmState.DONE:
            raise InvalidState(lifecycle.state_name(vm.state, vm.lcm_state), "associate")
        if not template.parse(vm.template).vectors("NIC"):
            raise InvalidRequest(f"VM {vm_id} has no NIC: an Elastic IP needs a private "
                                 "address to go to")
        if row.vm_id == vm_id:
            return row
        if row.vm_id is not None and not reassociate:
            raise Conflict(f"the address {row.ip} is already associated with VM {row.vm_id}")
        if row.vm_id is not None:
            _public_ip(s, row.vm_id, row, False, f"moved to VM {vm_id}")
        for other in s.exec(select(Address).where(col(Address.vm_id) == vm_id,
                                                  col(Address.id) != address_id)):
            other.vm_id = None
            s.add(other)
        row.vm_id = vm_id
        row.associations += 1
        s.add(row)
        _public_ip(s, vm_id, row, True, "associated")
        return row


def disassociate(cloud: Cloud, caller: Caller, *, address_id: int,
                 association: int | None = None) -> None:
    """End the address's association (nothing to do if it has none). With `association`,
    only that one: NotFound if the address is no longer in it."""
    with cloud.session() as s:
        row = _locked(s, caller, address_id)
        if association is not None and (row.vm_id is None or row.associations != association):
            raise NotFound("association", association)
        if row.vm_id is None:
            return
        _public_ip(s, row.vm_id, row, False, "disassociated")
        row.vm_id = None
        s.add(row)


def release(cloud: Cloud, caller: Caller, *, address_id: int) -> None:
    """Give the lease back to the public network; a Conflict while it is associated."""
    with cloud.session() as s:
        row = fetch(s, Address, address_id, caller, "address", lock=True)
        if row.vm_id is not None:
            raise Conflict(f"the address {row.ip} is associated with VM {row.vm_id}; "
                           "disassociate it first")
        if row.vnet_id is not None:
            leases.free_for_address(s, row.vnet_id, row.ip)
        s.execute(delete(Tag).where(col(Tag.kind) == "address",
                                    col(Tag.object_id) == address_id))
        s.delete(row)
