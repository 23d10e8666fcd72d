"""Public addresses (EC2's Elastic IPs): a user holds addresses from the configured pool
(EC2_ADDRESS_POOL, a CIDR block) and associates each with at most one of its VMs.

Recorded only, for now: nothing routes the address to the VM yet (that comes with the
network issue). A VM has at most one address: associating another one moves the first
off it. An association ends with its VM: once the VM is DONE the address is free to
associate again. An address is released only when it is not associated, as AWS does
for VPC addresses (InvalidIPAddress.InUse).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from sqlalchemy import bindparam
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select, update
from sqlmodel.sql.expression import SelectOfScalar

from core import db, lifecycle
from core.errors import CapacityExceeded, Conflict, InvalidRequest, InvalidState, NotFound
from core.lifecycle import VmState
from core.models import VM, Address, Tag
from core.service.access import ALL, fetch, restrict
from core.service.context import Caller, Cloud

ATTEMPTS = 5  # concurrent allocations may pick the same address; the loser retries


def pool(cloud: Cloud) -> ipaddress.IPv4Network:
    """The configured pool, or InvalidRequest if EC2_ADDRESS_POOL is not an IPv4 block."""
    text = cloud.config.ec2_address_pool
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidRequest(f"EC2_ADDRESS_POOL {text!r} is not a CIDR block") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise InvalidRequest(f"EC2_ADDRESS_POOL {text!r} is not an IPv4 block")
    return net


def _choose(s: Session, net: ipaddress.IPv4Network, wanted: str) -> str:
    taken = set(s.exec(select(Address.ip)))
    if wanted:
        try:
            ip = ipaddress.IPv4Address(wanted)
        except ValueError:
            raise InvalidRequest(f"{wanted!r} is not an IPv4 address") from None
        if ip not in net:
            raise InvalidRequest(f"{wanted} is not in the address pool {net}")
        if str(ip) in taken:
            raise Conflict(f"the address {wanted} is already allocated")
        return str(ip)
    for ip in net.hosts():
        if str(ip) not in taken:
            return str(ip)
    raise CapacityExceeded(f"the address pool {net} is exhausted")


def allocate(cloud: Cloud, caller: Caller, *, ip: str = "") -> Address:
    """The first free address of the pool (or `ip`, if it is in the pool and free)."""
    net = pool(cloud)
    for _ in range(ATTEMPTS):
        try:
            with cloud.session() as s:
                row = Address(uid=caller.uid, gid=caller.gid, ip=_choose(s, net, ip))
                s.add(row)
                s.flush()
                return row
        except IntegrityError:
            if ip:
                raise Conflict(f"the address {ip} is already allocated") from None
    raise Conflict("the address pool is busy; try again")


def _end_finished(s: Session) -> None:
    """Associations end with their VMs."""
    ended = select(VM.id).where(VM.state == VmState.DONE)
    s.execute(update(Address).where(col(Address.vm_id).in_(ended)).values(vm_id=None))


def list_addresses(cloud: Cloud, caller: Caller, *, flag: int = ALL) -> list[Address]:
    with cloud.session() as s:
        _end_finished(s)
        query = restrict(select(Address), Address, caller, flag)
        return list(s.exec(query.order_by(col(Address.id))))


def get(cloud: Cloud, caller: Caller, *, address_id: int) -> Address:
    with cloud.session() as s:
        _end_finished(s)
        return fetch(s, Address, address_id, caller, "address")


def find(cloud: Cloud, caller: Caller, *, ip: str) -> Address:
    """The caller's own address `ip`."""
    with cloud.session() as s:
        _end_finished(s)
        row = s.exec(select(Address).where(Address.uid == caller.uid,
                                           Address.ip == ip)).first()
        if row is None:
            raise NotFound("address", ip)
        return row


def of_vms(cloud: Cloud, caller: Caller, *, vm_ids: Iterable[int]) -> dict[int, str]:
    """vm id -> its public address, for the VMs given that have not ended."""
    wanted = list(vm_ids)
    if not wanted:
        return {}
    with cloud.session() as s:
        found = db.rows(s, _of_vms_query(caller), {"ids": wanted})  # rows suffice
        return {row.vm_id: row.ip for row in found if row.vm_id is not None}


@lru_cache(maxsize=256)
def _of_vms_query(caller: Caller) -> SelectOfScalar[Address]:
    """of_vms' statement for one caller, built once (DescribeInstances runs it every time)."""
    return restrict(select(Address), Address, caller).join(
        VM, col(VM.id) == col(Address.vm_id)).where(
        col(Address.vm_id).in_(bindparam("ids", expanding=True)), col(VM.state) != VmState.DONE)


def associate(cloud: Cloud, caller: Caller, *, address_id: int, vm_id: int,
              reassociate: bool = True) -> Address:
    """Associate the address with one of its owner's VMs; it leaves any VM it was on (a
    Conflict instead when `reassociate` is false) and any address the VM had leaves it.
    Associating it again with the same VM changes nothing."""
    with cloud.session() as s:
        _end_finished(s)
        row = fetch(s, Address, address_id, caller, "address", lock=True)
        vm = fetch(s, VM, vm_id, caller, "VM")
        if vm.uid != row.uid:
            raise NotFound("VM", vm_id)
        if vm.state == VmState.DONE:
            raise InvalidState(lifecycle.state_name(vm.state, vm.lcm_state), "associate")
        if row.vm_id == vm_id:
            return row
        if row.vm_id is not None and not reassociate:
            raise Conflict(f"the address {row.ip} is already associated with VM {row.vm_id}")
        s.execute(update(Address).where(col(Address.vm_id) == vm_id,
                                        col(Address.id) != address_id).values(vm_id=None))
        row.vm_id = vm_id
        row.associations += 1
        s.add(row)
        return row


def disassociate(cloud: Cloud, caller: Caller, *, address_id: int,
                 association: int | None = None) -> None:
    """End the address's association (nothing to do if it has none). With `association`,
    only that one: NotFound if the address is no longer in it."""
    with cloud.session() as s:
        _end_finished(s)
        row = fetch(s, Address, address_id, caller, "address", lock=True)
        if association is not None and (row.vm_id is None or row.associations != association):
            raise NotFound("association", association)
        row.vm_id = None
        s.add(row)


def release(cloud: Cloud, caller: Caller, *, address_id: int) -> None:
    """Return the address to the pool; a Conflict while it is associated."""
    with cloud.session() as s:
        _end_finished(s)
        row = fetch(s, Address, address_id, caller, "address", lock=True)
        if row.vm_id is not None:
            raise Conflict(f"the address {row.ip} is associated with VM {row.vm_id}; "
                           "disassociate it first")
        s.execute(delete(Tag).where(col(Tag.kind) == "address",
                                    col(Tag.object_id) == address_id))
        s.delete(row)
