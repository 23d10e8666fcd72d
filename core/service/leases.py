"""Leases taken from virtual networks: a VM's NICs (core.service.vnets has the networks
and their lease rows) and the Elastic IPs (core.service.addresses).

A VM's NIC = [ NETWORK_ID = n | NETWORK = name, IP = optional ] gets its lease when the
VM is created (`lease_nics`), in the same transaction, and gives it back when the VM is
DONE (`release_leases`). The network row is locked while a lease is picked, so two VMs
never get the same address (on PostgreSQL too). The NIC then carries its network's
attributes the network drivers read (NIC_COPIES).

An Elastic IP is a lease of the public network held for its Address row
(`hold_for_address`): it shows as held, no NIC gets it, and neither `release` nor
deleting the network takes it from the address. The VM it is associated with carries it
as PUBLIC_IP on its first NIC (`set_public_ip`).
"""

from __future__ import annotations

import ipaddress
import socket

from sqlmodel import Session, col, select, update

from core import template
from core.errors import Conflict, Forbidden, InvalidRequest, LeaseTaken, NoFreeLease, NotFound
from core.models import VM, Address, Lease, VNet
from core.service import vnets
from core.service.context import Caller

# attributes of the network a NIC carries along (for the network drivers)
NIC_COPIES = ("BRIDGE", "PHYDEV", "VLAN", "VLAN_ID", "VLAN_TAGGED_ID", "VXLAN_MC",
              "WHITE_PORTS_TCP", "WHITE_PORTS_UDP", "BLACK_PORTS_TCP", "BLACK_PORTS_UDP", "ICMP",
              "NETWORK_MASK", "GATEWAY", "DNS")


def hold_for_address(s: Session, vnet: VNet, ip: str = "") -> Lease:
    """Hold a free lease of the (locked) network for an Elastic IP: `ip`, or the first
    free one. LeaseTaken, NoFreeLease, or InvalidRequest/NotFound for an address the
    network does not have."""
    lease = _pick(s, vnet, ip)
    lease.vm_id = vnets.HELD
    s.add(lease)
    return lease


def free_for_address(s: Session, vnet_id: int, ip: str) -> None:
    """The lease an Elastic IP held goes back to its network."""
    vnet = s.get(VNet, vnet_id, with_for_update=True)
    lease = s.exec(select(Lease).where(Lease.vnet_id == vnet_id, Lease.ip == ip,
                                       Lease.vm_id == vnets.HELD)).first()
    if vnet is not None and lease is not None:
        vnets.free_lease(s, vnet, lease)


def lease_nics(s: Session, caller: Caller, tmpl: template.Template, vm_id: int) -> None:
    """Give each NIC of a new VM its lease and the network's attributes."""
    for index, nic in enumerate(tmpl.vectors("NIC")):
        lease_nic(s, caller, nic, vm_id, index)


def lease_nic(s: Session, caller: Caller, nic: dict[str, str], vm_id: int, nic_id: int) -> None:
    """One NIC's lease (NETWORK_ID or NETWORK, optional IP) and the network's attributes."""
    if nic.get("NETWORK_ID", "").isdigit():
        vnet = s.get(VNet, int(nic["NETWORK_ID"]), with_for_update=True)
        if vnet is None:
            raise NotFound("virtual network", nic["NETWORK_ID"])
        if not vnets.usable(vnet, caller):
            raise Forbidden(f"user {caller.name} is not authorized to use virtual network "
                            f"{vnet.id}")
    elif nic.get("NETWORK"):
        named = select(VNet).where(VNet.name == nic["NETWORK"]).order_by(col(VNet.id))
        found = next((v for v in s.exec(named) if caller.owns(v.uid)), None) or next(
            (v for v in s.exec(named) if vnets.is_public(v)), None)  # own before published
        if found is None:
            raise NotFound("virtual network", nic["NETWORK"])
        vnet = s.get(VNet, found.id, with_for_update=True) or found
    else:
        raise InvalidRequest(f"NIC {nic_id} needs NETWORK_ID or NETWORK")
    if vnets.is_down(vnet):
        raise Conflict(f"network {vnet.name} is down: it gives no new leases")
    lease = _pick(s, vnet, nic.get("IP", ""))
    lease.vm_id = vm_id
    s.add(lease)
    net = template.parse(vnet.template)
    nic.update(NETWORK=vnet.name, NETWORK_ID=str(vnet.id), IP=lease.ip, MAC=lease.mac,
               BRIDGE=vnet.bridge, NIC_ID=str(nic_id))
    for name in NIC_COPIES[1:]:
        value = net.get(name)
        if value and name not in nic:
            nic[name] = value
    if vnet.vlan:
        nic["VLAN"] = "YES"


def release_lease(s: Session, vm_id: int, nic: dict[str, str]) -> None:
    """The lease of one NIC goes back to its network."""
    lease = s.exec(select(Lease).where(Lease.vm_id == vm_id, Lease.ip == nic.get("IP", ""),
                                       Lease.vnet_id == int(nic.get("NETWORK_ID") or -1))).first()
    vnet = s.get(VNet, lease.vnet_id) if lease is not None else None
    if lease is not None and vnet is not None:
        vnets.free_lease(s, vnet, lease)


def _pick(s: Session, vnet: VNet, wanted: str) -> Lease:
    """The lease a NIC or an Elastic IP gets: `wanted`, or the first free one (in address
    order). Only the rows it needs are read: a RANGED network's taken addresses as text."""
    assert vnet.id is not None
    if wanted:
        ip = str(vnets.parse_ip(wanted, "NIC IP"))
        lease = s.exec(select(Lease).where(Lease.vnet_id == vnet.id, Lease.ip == ip)).first()
        if lease is not None and lease.vm_id is not None:
            raise LeaseTaken(f"{ip} of network {vnet.name} is already in use")
        if lease is None:
            vnets.check_in_range(vnet, template.parse(vnet.template), ip)
            lease = Lease(vnet_id=vnet.id, ip=ip, mac=vnets.mac_of(ip))
        return lease
    if vnet.type == vnets.FIXED:
        free = [lease for lease in s.exec(select(Lease).where(
            Lease.vnet_id == vnet.id, col(Lease.vm_id).is_(None)))]
        if free:
            return min(free, key=lambda lease: ipaddress.IPv4Address(lease.ip))
    else:
        first, last = vnets.address_range(template.parse(vnet.template))
        taken = {int.from_bytes(socket.inet_aton(ip), "big")
                 for ip in s.exec(select(Lease.ip).where(Lease.vnet_id == vnet.id))}
        for number in range(first, last + 1):
            if number not in taken:
                ip = str(ipaddress.IPv4Address(number))
                return Lease(vnet_id=vnet.id, ip=ip, mac=vnets.mac_of(ip))
    raise NoFreeLease(f"network {vnet.name} has no free lease left")


def release_leases(s: Session, vm: VM) -> None:
    """A VM that is DONE gives its leases back, and the Elastic IP associated with it
    leaves it (the address stays its owner's)."""
    for lease in s.exec(select(Lease).where(Lease.vm_id == vm.id)):
        vnet = s.get(VNet, lease.vnet_id)
        if vnet is not None:
            vnets.free_lease(s, vnet, lease)
    s.execute(update(Address).where(col(Address.vm_id) == vm.id).values(vm_id=None))
    vm.template = set_public_ip(vm.template, "")


def set_public_ip(vm_template: str, ip: str) -> str:
    """The VM template with PUBLIC_IP = `ip` on its first NIC (none anywhere for "")."""
    tmpl = template.parse(vm_template)
    found = tmpl.vectors("NIC")
    if not any("PUBLIC_IP" in nic for nic in found) and not ip:
        return vm_template
    for index, nic in enumerate(found):
        nic.pop("PUBLIC_IP", None)
        if ip and index == 0:
            nic["PUBLIC_IP"] = ip
    return tmpl.dumps()
