"""Security groups: a user's named sets of ingress and egress rules.

The network drivers enforce them: a VM's document carries its groups' rules
(core.service.sgrules), read by the driver's `post` when the VM boots. When rules of a
group change, the running VMs they concern get their filtering re-applied
(core.service.refilter): the group's members and the members of groups whose rules name
it as peer.

A VM references its groups by the template attribute SECURITY_GROUPS, a space-separated
list of group ids; a group is not deleted while a VM that has not ended references it, or
while another group's rule names it. Each user has a group named "default", created the
first time it is needed (a listing, a creation, a launch that names no group); it lets
members of the group talk to each other and everything out, and cannot be deleted.

Rules are kept one per peer, as JSON lists in the row's `ingress` and `egress` columns:
protocol ("tcp", "udp", "icmp", "icmpv6", "-1" for all, or an IP protocol number),
from_port and to_port (the ICMP type and code for ICMP; null where ports do not apply),
the peer (`cidr`, an IPv4 or IPv6 block, or `group`, a group id) and a description that
is not part of the rule's identity.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Literal

from sqlalchemy import bindparam
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, func, select
from sqlmodel.sql.expression import SelectOfScalar

from core import db, template
from core.errors import Conflict, InvalidRequest, NotFound
from core.models import GroupMember, SecurityGroup, Tag
from core.service import refilter
from core.service.access import ALL, fetch, restrict
from core.service.context import Caller, Cloud

DEFAULT = "default"
ATTRIBUTE = "SECURITY_GROUPS"  # in a VM template: the ids of its groups
Direction = Literal["ingress", "egress"]
DIRECTIONS: tuple[Direction, ...] = ("ingress", "egress")
_ALIASES = {"6": "tcp", "17": "udp", "1": "icmp", "58": "icmpv6", "all": "-1"}
_PORTED = ("tcp", "udp")
_ICMP = ("icmp", "icmpv6")
MAX_TEXT = 255


@dataclass(frozen=True)
class Rule:
    """One permission for one peer; equal rules differ at most in their description."""

    protocol: str
    from_port: int | None = None
    to_port: int | None = None
    cidr: str = ""
    group: int | None = None
    description: str = field(default="", compare=False)


EVERYWHERE = (Rule("-1", cidr="0.0.0.0/0"),)


def rule(protocol: str, from_port: int | None = None, to_port: int | None = None, *,
         cidr: str = "", group: int | None = None, description: str = "") -> Rule:
    """A validated rule in normal form (protocol names, canonical CIDR), or InvalidRequest."""
    proto = _ALIASES.get(str(protocol).strip().lower(), str(protocol).strip().lower())
    if proto not in (*_PORTED, *_ICMP, "-1"):
        if not proto.isdigit() or int(proto) > 255:
            raise InvalidRequest(f"unknown IP protocol {protocol!r}")
        proto = str(int(proto))
    if proto in _PORTED:
        if from_port is None or to_port is None:
            raise InvalidRequest(f"a {proto} rule needs FromPort and ToPort")
        if not 0 <= from_port <= to_port <= 65535:
            raise InvalidRequest(f"invalid port range {from_port}-{to_port}")
    elif proto in _ICMP:
        from_port = -1 if from_port is None else from_port
        to_port = -1 if to_port is None else to_port
        if not (-1 <= from_port <= 255 and -1 <= to_port <= 255):
            raise InvalidRequest(f"invalid {proto} type {from_port} or code {to_port}")
    else:
        from_port = to_port = None
    if bool(cidr) == (group is not None):
        raise InvalidRequest("a rule names exactly one peer: a CIDR block or a security group")
    if cidr:
        try:
            cidr = str(ipaddress.ip_network(cidr, strict=True))
        except ValueError:
            raise InvalidRequest(f"CIDR block {cidr} is malformed") from None
    if len(description) > MAX_TEXT:
        raise InvalidRequest(f"a rule description has at most {MAX_TEXT} characters")
    return Rule(proto, from_port, to_port, cidr, group, description)


def rules_of(group: SecurityGroup, direction: Direction) -> list[Rule]:
    return [Rule(**item) for item in json.loads(getattr(group, direction) or "[]")]


def _store(group: SecurityGroup, direction: Direction, rules: Iterable[Rule]) -> None:
    setattr(group, direction, json.dumps([asdict(r) for r in rules]))


def groups_of(vm_template: str) -> list[int]:
    """The group ids a VM template references (SECURITY_GROUPS)."""
    value = template.parse(vm_template).get(ATTRIBUTE) or ""
    return [int(word) for word in value.split() if word.isdigit()]


def validate(*, name: str, description: str) -> None:
    if not name or len(name) > MAX_TEXT or any(ord(c) < 32 for c in name):
        raise InvalidRequest(f"a security group name has 1 to {MAX_TEXT} printable characters")
    if name.lower().startswith("sg-"):
        raise InvalidRequest("a security group name cannot start with sg-")
    if len(description) > MAX_TEXT or any(ord(c) < 32 for c in description):
        raise InvalidRequest(f"a description has at most {MAX_TEXT} printable characters")


def _by_name(s: Session, uid: int, name: str) -> SecurityGroup | None:
    """The user's group of that name; names are unique regardless of case."""
    return s.exec(select(SecurityGroup).where(
        SecurityGroup.uid == uid, func.lower(SecurityGroup.name) == name.lower())).first()


def ensure_default(cloud: Cloud, caller: Caller) -> SecurityGroup:
    """The caller's default group, created now if it does not exist yet."""
    with cloud.session() as s:
        found = _by_name(s, caller.uid, DEFAULT)
        if found is not None:
            return found
    try:
        with cloud.session() as s:
            row = SecurityGroup(uid=caller.uid, gid=caller.gid, name=DEFAULT,
                                description="default VPC security group")
            s.add(row)
            s.flush()
            _store(row, "ingress", [Rule("-1", group=row.id)])
            _store(row, "egress", EVERYWHERE)
            s.add(row)
            return row
    except IntegrityError:  # a concurrent request created it first
        with cloud.session() as s:
            found = _by_name(s, caller.uid, DEFAULT)
            if found is None:
                raise
            return found


def create(cloud: Cloud, caller: Caller, *, name: str, description: str) -> SecurityGroup:
    """A new group that allows all outbound traffic and no inbound traffic."""
    validate(name=name, description=description)
    ensure_default(cloud, caller)
    try:
        with cloud.session() as s:
            if _by_name(s, caller.uid, name) is not None:
                raise Conflict(f"the security group {name!r} already exists")
            row = SecurityGroup(uid=caller.uid, gid=caller.gid, name=name,
                                description=description)
            _store(row, "egress", EVERYWHERE)
            s.add(row)
            s.flush()
            return row
    except IntegrityError:
        raise Conflict(f"the security group {name!r} already exists") from None


def list_groups(cloud: Cloud, caller: Caller, *, flag: int = ALL) -> list[SecurityGroup]:
    """The groups the caller may see (its own unless it is an admin), the caller's default
    group included."""
    ensure_default(cloud, caller)
    with cloud.session() as s:
        query = restrict(select(SecurityGroup), SecurityGroup, caller, flag)
        return list(s.exec(query.order_by(col(SecurityGroup.id))))


def names(cloud: Cloud, caller: Caller, *, ids: Iterable[int]) -> dict[int, str]:
    """id -> name of those groups the caller may see."""
    wanted = list(ids)
    if not wanted:
        return {}
    with cloud.session() as s:
        found = db.rows(s, _names_query(caller), {"ids": wanted})  # rows suffice
        return {row.id: row.name for row in found if row.id is not None}


@lru_cache(maxsize=256)
def _names_query(caller: Caller) -> SelectOfScalar[SecurityGroup]:
    """names' statement for one caller, built once (DescribeInstances runs it every time)."""
    return restrict(select(SecurityGroup), SecurityGroup, caller).where(
        col(SecurityGroup.id).in_(bindparam("ids", expanding=True)))


def get(cloud: Cloud, caller: Caller, *, group_id: int) -> SecurityGroup:
    with cloud.session() as s:
        return fetch(s, SecurityGroup, group_id, caller, "security group")


def find(cloud: Cloud, caller: Caller, *, name: str) -> SecurityGroup:
    """The caller's own group of that name."""
    if name.lower() == DEFAULT:
        return ensure_default(cloud, caller)
    with cloud.session() as s:
        row = _by_name(s, caller.uid, name)
        if row is None:
            raise NotFound("security group", name)
        return row


def resolve(cloud: Cloud, caller: Caller, *, ids: Sequence[int] = (),
            names: Sequence[str] = ()) -> list[int]:
    """The ids of the caller's own groups named by id or name, in order, for a launch; the
    caller's default group when none is named. NotFound names the first one missing."""
    if not ids and not names:
        default = ensure_default(cloud, caller)
        assert default.id is not None
        return [default.id]
    found = [find(cloud, caller, name=name).id for name in names]
    with cloud.session() as s:
        for group_id in ids:
            row = s.get(SecurityGroup, group_id)
            if row is None or row.uid != caller.uid:
                raise NotFound("security group", group_id)
            found.append(group_id)
    return list(dict.fromkeys(g for g in found if g is not None))


def _users(s: Session, group_id: int) -> list[int]:
    """VMs that have not ended and are in the group."""
    return sorted(s.exec(select(GroupMember.vm_id).where(GroupMember.group_id == group_id)))


def _concerned(s: Session, group: SecurityGroup) -> list[int]:
    """VMs whose filtering depends on the group's rules: its members (members of groups
    that name it as peer depend on its members, not its rules: core.service.sgrules)."""
    assert group.id is not None
    return _users(s, group.id)


def delete_group(cloud: Cloud, caller: Caller, *, group_id: int) -> None:
    """Refused (InvalidRequest) for a default group, and (Conflict) while a VM or another
    group's rule references the group."""
    with cloud.session() as s:
        row = fetch(s, SecurityGroup, group_id, caller, "security group", lock=True)
        if row.name == DEFAULT:
            raise InvalidRequest("the default security group cannot be deleted")
        users = _users(s, group_id)
        if users:
            raise Conflict(f"security group {group_id} is used by VM "
                           f"{', '.join(map(str, users))}")
        others = s.exec(select(SecurityGroup).where(SecurityGroup.uid == row.uid,
                                                    col(SecurityGroup.id) != group_id))
        for other in others:
            if any(r.group == group_id for d in DIRECTIONS for r in rules_of(other, d)):
                raise Conflict(f"security group {group_id} is referenced by a rule of "
                               f"security group {other.id}")
        s.execute(delete(Tag).where(col(Tag.kind) == "secgroup",
                                    col(Tag.object_id) == group_id))
        s.delete(row)


def _check_peers(s: Session, owner: int, rules: Iterable[Rule]) -> None:
    for r in rules:
        if r.group is not None:
            peer = s.get(SecurityGroup, r.group)
            if peer is None or peer.uid != owner:
                raise NotFound("security group", r.group)


def authorize(cloud: Cloud, caller: Caller, *, group_id: int, direction: Direction,
              rules: Sequence[Rule]) -> list[Rule]:
    """Add rules, all or none: a rule the group already has (or one given twice) is a
    Conflict; a peer group must exist and belong to the group's owner (NotFound)."""
    with cloud.session() as s:
        row = fetch(s, SecurityGroup, group_id, caller, "security group", lock=True)
        current = rules_of(row, direction)
        seen = set(current)
        for r in rules:
            if r in seen:
                raise Conflict(f"the {direction} rule {describe(r)} already exists")
            seen.add(r)
        _check_peers(s, row.uid, rules)
        _store(row, direction, [*current, *rules])
        s.add(row)
        refilter.request(s, _concerned(s, row), f"security group {group_id}")
    return list(rules)


def revoke(cloud: Cloud, caller: Caller, *, group_id: int, direction: Direction,
           rules: Sequence[Rule]) -> list[Rule]:
    """Remove rules, all or none (NotFound for a rule the group does not have); returns
    the removed rules as stored (with their descriptions)."""
    with cloud.session() as s:
        row = fetch(s, SecurityGroup, group_id, caller, "security group", lock=True)
        current = rules_of(row, direction)
        for r in rules:
            if r not in current:
                raise NotFound(f"{direction} rule", describe(r))
        gone = set(rules)
        _store(row, direction, [r for r in current if r not in gone])
        s.add(row)
        refilter.request(s, _concerned(s, row), f"security group {group_id}")
    return [r for r in current if r in gone]


def describe(r: Rule) -> str:
    ports = "" if r.from_port is None else f" {r.from_port}-{r.to_port}"
    peer = r.cidr or f"group {r.group}"
    return f"{r.protocol}{ports} {peer}"
