"""A VM's security groups as its network drivers read them: SECURITY_GROUP_RULE vectors
added to the VM document the dispatcher hands to `post` and `update_sg` (OpenNebula 5's
attribute names, one rule per peer block):

    SECURITY_GROUP_RULE = [ SECURITY_GROUP_ID = 3, SECURITY_GROUP_NAME = "web",
      RULE_TYPE = "inbound", PROTOCOL = "TCP", RANGE = "80:80", NETWORK = "0.0.0.0/0" ]

PROTOCOL is TCP, UDP, ICMP, ICMPV6, ALL or an IP protocol number. RANGE (TCP and UDP) is
the port range; ICMP_TYPE and ICMP_CODE are there when the rule names them. A rule whose
peer is a security group becomes one rule per address of the group's members now (the
IPs of the NICs of its VMs that have not ended); a group without members adds none.

The VM's template keeps SECURITY_GROUPS (the group ids): its presence tells the driver
the VM is in groups, so what no inbound rule allows is dropped, as EC2 does.
"""

from __future__ import annotations

from sqlmodel import Session, col, delete, select

from core import template
from core.errors import InvalidRequest
from core.lifecycle import LcmState, VmState
from core.models import VM, GroupMember, Lease, SecurityGroup
from core.service import refilter
from core.service.access import fetch
from core.service.context import Caller
from core.service.secgroups import ATTRIBUTE, DIRECTIONS, Rule, groups_of, rules_of

RULE_TYPES = {"ingress": "inbound", "egress": "outbound"}
ENDED = (VmState.DONE, VmState.FAILED)


def check(s: Session, caller: Caller, tmpl: template.Template) -> list[int]:
    """A new VM's SECURITY_GROUPS names groups that exist and the caller owns (NotFound,
    Forbidden), as ids separated by spaces (InvalidRequest); returns the ids."""
    value = tmpl.get(ATTRIBUTE)
    if value is None:
        return []
    words = list(dict.fromkeys(value.replace(",", " ").split()))
    if not all(word.isdigit() for word in words):
        raise InvalidRequest(f"{ATTRIBUTE} = {value!r}: security group ids separated by spaces")
    for word in words:
        fetch(s, SecurityGroup, int(word), caller, "security group")
    tmpl.set(ATTRIBUTE, " ".join(words))
    return [int(word) for word in words]


def join(s: Session, vm: VM, groups: list[int]) -> None:
    """A new VM's membership rows (GroupMember); its peers' rules change with it."""
    assert vm.id is not None
    s.add_all(GroupMember(group_id=g, vm_id=vm.id) for g in groups)
    if groups:
        membership_changed(s, vm, "joined", set(groups))


def leave(s: Session, vm: VM) -> None:
    """A VM that is DONE is in no group any more."""
    s.execute(delete(GroupMember).where(col(GroupMember.vm_id) == vm.id))


def document_rules(s: Session, vm: VM) -> list[dict[str, str]]:
    """The SECURITY_GROUP_RULE vectors of `vm`'s document, groups in the template's order."""
    ids = groups_of(vm.template)
    if not ids:
        return []
    rows = {g.id: g for g in s.exec(select(SecurityGroup).where(
        col(SecurityGroup.id).in_(ids)))}
    groups = [rows[i] for i in ids if i in rows]
    peers = {r.group for g in groups for d in DIRECTIONS for r in rules_of(g, d)
             if r.group is not None}
    members = _member_addresses(s, peers) if peers else {}
    vectors = []
    for group in groups:
        for direction in DIRECTIONS:
            for r in rules_of(group, direction):
                peers_now = members.get(r.group, []) if r.group is not None else []
                blocks = [r.cidr] if r.cidr else [f"{ip}/32" for ip in peers_now]
                for block in blocks:
                    vectors.append(_vector(group, direction, r, block))
    return vectors


def _vector(group: SecurityGroup, direction: str, r: Rule, block: str) -> dict[str, str]:
    vector = {"SECURITY_GROUP_ID": str(group.id), "SECURITY_GROUP_NAME": group.name,
              "RULE_TYPE": RULE_TYPES[direction],
              "PROTOCOL": "ALL" if r.protocol == "-1" else r.protocol.upper()}
    if r.protocol in ("tcp", "udp"):
        vector["RANGE"] = f"{r.from_port}:{r.to_port}"
    elif r.protocol in ("icmp", "icmpv6"):
        if r.from_port is not None and r.from_port >= 0:
            vector["ICMP_TYPE"] = str(r.from_port)
            if r.to_port is not None and r.to_port >= 0:
                vector["ICMP_CODE"] = str(r.to_port)
    vector["NETWORK"] = block
    return vector


def _member_addresses(s: Session, groups: set[int]) -> dict[int, list[str]]:
    """group id -> the addresses (leases) of the VMs in it that have not ended."""
    found: dict[int, list[str]] = {g: [] for g in groups}
    query = (select(GroupMember.group_id, Lease.ip)
             .join(VM, col(VM.id) == GroupMember.vm_id)
             .join(Lease, col(Lease.vm_id) == GroupMember.vm_id)
             .where(col(GroupMember.group_id).in_(groups), col(VM.state).not_in(ENDED))
             .order_by(col(GroupMember.vm_id), col(Lease.id)))
    for group, ip in s.exec(query):
        found[group].append(ip)
    return found


def membership_changed(s: Session, vm: VM, how: str,
                       groups: set[int] | None = None) -> list[int]:
    """`vm` joined its groups (created) or left them (ended): the VMs whose rules name one
    of them as peer have a peer address more or less, so their filtering is re-applied.
    `groups`: the VM's groups when the caller knows them. Returns the VMs queued."""
    if groups is None:
        groups = set(s.exec(select(GroupMember.group_id).where(GroupMember.vm_id == vm.id)))
    if not groups:
        return []
    naming = {g.id for g in s.exec(select(SecurityGroup).where(SecurityGroup.uid == vm.uid))
              if any(r.group in groups for d in DIRECTIONS for r in rules_of(g, d))}
    if not naming:
        return []
    query = (select(GroupMember.vm_id).join(VM, col(VM.id) == GroupMember.vm_id)
             .where(col(GroupMember.group_id).in_(naming), col(GroupMember.vm_id) != vm.id,
                    VM.state == VmState.ACTIVE, VM.lcm_state == LcmState.RUNNING))
    return refilter.request(s, set(s.exec(query)), f"VM {vm.id} {how} a peer security group")
