"""Security groups of the default VPC, and the groups instances show (apis.ec2.actions
.addresses has the Elastic IPs, apis.ec2.actions.subnets the VPC and its subnets).

The network drivers enforce the groups (core.service.sgrules). Every lookup is by the
caller's own groups: another user's group is InvalidGroup.NotFound.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from apis.ec2 import filters, ids, pages, views
from apis.ec2.actions import Context, action
from apis.ec2.errors import Ec2Error, invalid_value, missing_parameter
from core.errors import Conflict, Forbidden, InvalidRequest, NotFound
from core.models import SecurityGroup
from core.service import secgroups, tags
from core.service.access import MINE
from core.service.secgroups import Direction, Rule


def _permission_filters(prefix: str, member: str) -> dict[str, filters.Extractor]:
    pairs = (member, "UserIdGroupPairs")
    return {f"{prefix}ip-permission.{name}": filters.field(*path) for name, path in {
        "cidr": (member, "IpRanges", "CidrIp"), "ipv6-cidr": (member, "Ipv6Ranges", "CidrIpv6"),
        "from-port": (member, "FromPort"), "to-port": (member, "ToPort"),
        "protocol": (member, "IpProtocol"), "group-id": (*pairs, "GroupId"),
        "group-name": (*pairs, "GroupName"), "user-id": (*pairs, "UserId"),
        "prefix-list-id": (member, "PrefixListIds", "PrefixListId")}.items()}


GROUP_FILTERS = {
    "group-id": filters.field("GroupId"), "group-name": filters.field("GroupName"),
    "description": filters.field("Description"), "owner-id": filters.field("OwnerId"),
    "vpc-id": filters.field("VpcId"),
    **_permission_filters("", "IpPermissions"),
    **_permission_filters("egress.", "IpPermissionsEgress"),
}
_FLAT = ("IpProtocol", "FromPort", "ToPort", "CidrIp", "SourceSecurityGroupName",
         "SourceSecurityGroupOwnerId")


def owner_id(uid: int) -> str:
    return f"{uid:012d}"


def group_not_found(ref: object) -> Ec2Error:
    text = ids.public("secgroup", ref) if isinstance(ref, int) else str(ref)
    return Ec2Error("InvalidGroup.NotFound", f"The security group '{text}' does not exist")


def _own_group(ctx: Context, group_id: str | None, name: str | None) -> SecurityGroup:
    if group_id:
        core_id = ids.core("secgroup", group_id)
        try:
            row = secgroups.get(ctx.cloud, ctx.caller, group_id=core_id)
        except (NotFound, Forbidden):
            raise group_not_found(group_id) from None
        if row.uid != ctx.caller.uid:
            raise group_not_found(group_id)
        return row
    if name:
        try:
            return secgroups.find(ctx.cloud, ctx.caller, name=name)
        except NotFound:
            raise group_not_found(name) from None
    raise missing_parameter("GroupId")


def launch_groups(ctx: Context, p: Mapping[str, Any]) -> str:
    """SECURITY_GROUPS for RunInstances: the caller's groups named by SecurityGroups and
    SecurityGroupIds, or its default group."""
    wanted = [ids.core("secgroup", text) for text in p.get("SecurityGroupIds", [])]
    try:
        found = secgroups.resolve(ctx.cloud, ctx.caller, ids=wanted,
                                  names=list(p.get("SecurityGroups", [])))
    except NotFound as exc:
        raise group_not_found(exc.ident) from None
    return " ".join(map(str, found))


def annotate(ctx: Context, reservations: list[dict[str, Any]]) -> None:
    """Fill in the SecurityGroups of each instance and of its network interfaces, and each
    reservation's Groups (those of its first instance)."""
    held = {inst["InstanceId"]: [ids.core("secgroup", g["GroupId"])
                                 for g in inst["SecurityGroups"]]
            for reservation in reservations for inst in reservation["Instances"]}
    names = secgroups.names(ctx.cloud, ctx.caller, ids={g for gs in held.values() for g in gs})
    for reservation in reservations:
        for inst in reservation["Instances"]:
            inst["SecurityGroups"] = [{"GroupId": ids.public("secgroup", g), "GroupName": names[g]}
                                      for g in held.get(inst["InstanceId"], []) if g in names]
            for interface in inst["NetworkInterfaces"]:
                interface["Groups"] = list(inst["SecurityGroups"])
        first = reservation["Instances"][:1]
        reservation["Groups"] = list(first[0]["SecurityGroups"]) if first else []


# --- security groups ---

def _permissions(rules: Sequence[Rule], names: Mapping[int, str],
                 owner: str) -> list[dict[str, Any]]:
    """Rules grouped by protocol and ports, as IpPermissions."""
    out: dict[tuple[str, int | None, int | None], dict[str, Any]] = {}
    for r in rules:
        perm = out.get((r.protocol, r.from_port, r.to_port))
        if perm is None:
            perm = {"IpProtocol": r.protocol, "IpRanges": [], "Ipv6Ranges": [],
                    "UserIdGroupPairs": [], "PrefixListIds": []}
            if r.from_port is not None:
                perm.update(FromPort=r.from_port, ToPort=r.to_port)
            out[(r.protocol, r.from_port, r.to_port)] = perm
        said = {"Description": r.description} if r.description else {}
        if r.group is not None:
            named = {"GroupName": names[r.group]} if r.group in names else {}
            perm["UserIdGroupPairs"].append({"GroupId": ids.public("secgroup", r.group),
                                             "UserId": owner, **named, **said})
        elif ":" in r.cidr:
            perm["Ipv6Ranges"].append({"CidrIpv6": r.cidr, **said})
        else:
            perm["IpRanges"].append({"CidrIp": r.cidr, **said})
    return list(out.values())


def _arn(ctx: Context, row: SecurityGroup) -> str:
    return (f"arn:aws:ec2:{ctx.region}:{owner_id(row.uid)}:security-group/"
            f"{ids.public('secgroup', row.id or 0)}")


def _group_view(ctx: Context, row: SecurityGroup, names: Mapping[int, str],
                found: Mapping[str, str]) -> dict[str, Any]:
    owner = owner_id(row.uid)
    return {"GroupId": ids.public("secgroup", row.id or 0), "GroupName": row.name,
            "Description": row.description, "OwnerId": owner, "VpcId": views.VPC_ID,
            "SecurityGroupArn": _arn(ctx, row), "Tags": views.tag_list(found),
            "IpPermissions": _permissions(secgroups.rules_of(row, "ingress"), names, owner),
            "IpPermissionsEgress": _permissions(secgroups.rules_of(row, "egress"), names, owner)}


def tags_for(p: Mapping[str, Any], resource_type: str) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for spec in p.get("TagSpecifications", [])
            if spec.get("ResourceType", resource_type) == resource_type
            for t in spec.get("Tags", [])}


@action("CreateSecurityGroup")
def create_security_group(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    name, description = p.get("GroupName"), p.get("Description")
    if not name:
        raise missing_parameter("GroupName")
    if description is None:
        raise missing_parameter("GroupDescription")
    if p.get("VpcId", views.VPC_ID) != views.VPC_ID:
        raise Ec2Error("InvalidVpcID.NotFound", f"The vpc ID '{p['VpcId']}' does not exist")
    try:
        secgroups.validate(name=name, description=description)
    except InvalidRequest as exc:
        raise invalid_value("GroupName", name, str(exc)) from None
    group_tags = tags_for(p, "security-group")
    ctx.commit_point()
    try:
        row = secgroups.create(ctx.cloud, ctx.caller, name=name, description=description)
    except Conflict:
        raise Ec2Error("InvalidGroup.Duplicate", f"The security group '{name}' already "
                       f"exists for VPC '{views.VPC_ID}'") from None
    assert row.id is not None
    if group_tags:
        tags.set_tags(ctx.cloud, ctx.caller, kind="secgroup", ids=[row.id], tags=group_tags)
    return {"GroupId": ids.public("secgroup", row.id), "Tags": views.tag_list(group_tags),
            "SecurityGroupArn": _arn(ctx, row)}


@action("DescribeSecurityGroups")
def describe_security_groups(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    limit = pages.max_results(p)
    rows = secgroups.list_groups(ctx.cloud, ctx.caller, flag=MINE)
    by_id = {row.id: row for row in rows}
    by_name = {row.name: row for row in rows}
    wanted = {ids.core("secgroup", text): text for text in p.get("GroupIds", [])}
    for core_id, text in wanted.items():
        if core_id not in by_id:
            raise group_not_found(text)
    for name in p.get("GroupNames", []):
        if name not in by_name:
            raise group_not_found(name)
    picked = [r for r in rows if (not wanted or r.id in wanted)
              and (not p.get("GroupNames") or r.name in p["GroupNames"])
              and (r.id or 0) > pages.after(p.get("NextToken"), "g")]
    with ctx.cloud.session() as s:
        found = tags.tags_of(s, "secgroup", [r.id for r in picked if r.id is not None])
    names = {row.id: row.name for row in rows if row.id is not None}
    matches = filters.compile_filters(p.get("Filters", []), GROUP_FILTERS)
    items = [(r.id or 0, view) for r in picked
             if matches(view := _group_view(ctx, r, names, found.get(r.id or 0, {})))]
    return pages.answer("SecurityGroups", items, limit, "g")


@action("DeleteSecurityGroup")
def delete_security_group(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    row = _own_group(ctx, p.get("GroupId"), p.get("GroupName"))
    ctx.commit_point()
    try:
        secgroups.delete_group(ctx.cloud, ctx.caller, group_id=row.id or 0)
    except Conflict as exc:
        raise Ec2Error("DependencyViolation", str(exc)) from None
    except InvalidRequest as exc:
        raise Ec2Error("CannotDelete", str(exc)) from None
    return {"Return": True, "GroupId": ids.public("secgroup", row.id or 0)}


def _target(ctx: Context, p: Mapping[str, Any], direction: Direction) -> SecurityGroup:
    if direction == "egress" and not p.get("GroupId"):
        raise missing_parameter("GroupId")
    return _own_group(ctx, p.get("GroupId"), p.get("GroupName"))


def _permission_rules(ctx: Context, perm: Mapping[str, Any], where: str) -> list[Rule]:
    protocol = perm.get("IpProtocol")
    if protocol is None:
        raise missing_parameter(f"{where}.IpProtocol")
    if perm.get("PrefixListIds"):
        raise invalid_value(f"{where}.PrefixListIds", "...", "prefix lists are not supported")
    peers: list[dict[str, Any]] = []
    for item in perm.get("IpRanges", []):
        if ":" in str(item.get("CidrIp", ":")):
            raise invalid_value(f"{where}.IpRanges.CidrIp", item.get("CidrIp"), "not IPv4")
        peers.append({"cidr": item["CidrIp"], "description": item.get("Description", "")})
    for item in perm.get("Ipv6Ranges", []):
        if ":" not in str(item.get("CidrIpv6", "")):
            raise invalid_value(f"{where}.Ipv6Ranges.CidrIpv6", item.get("CidrIpv6"), "not IPv6")
        peers.append({"cidr": item["CidrIpv6"], "description": item.get("Description", "")})
    for pair in perm.get("UserIdGroupPairs", []):
        ref = pair.get("GroupId") or pair.get("GroupName")
        if pair.get("UserId") not in (None, "", ctx.owner):
            raise group_not_found(ref)
        peer = _own_group(ctx, pair.get("GroupId"), pair.get("GroupName"))
        peers.append({"group": peer.id, "description": pair.get("Description", "")})
    if not peers:
        raise missing_parameter(f"{where}.IpRanges")
    try:
        return [secgroups.rule(str(protocol), perm.get("FromPort"), perm.get("ToPort"), **peer)
                for peer in peers]
    except InvalidRequest as exc:
        raise invalid_value(where, protocol, str(exc)) from None


def _requested(ctx: Context, p: Mapping[str, Any]) -> list[Rule]:
    """The rules of IpPermissions, or of the old flat form (IpProtocol, CidrIp, ...)."""
    perms = list(p.get("IpPermissions", []))
    if any(k in p for k in _FLAT):
        if perms:
            raise Ec2Error("InvalidParameterCombination",
                           "IpPermissions cannot be combined with IpProtocol, CidrIp, ...")
        perm: dict[str, Any] = {"IpProtocol": p.get("IpProtocol") or "-1",
                                "FromPort": p.get("FromPort"), "ToPort": p.get("ToPort")}
        if p.get("CidrIp"):
            perm["IpRanges"] = [{"CidrIp": p["CidrIp"]}]
        if p.get("SourceSecurityGroupName"):
            perm["UserIdGroupPairs"] = [{"GroupName": p["SourceSecurityGroupName"],
                                         "UserId": p.get("SourceSecurityGroupOwnerId")}]
        perms = [perm]
    if not perms:
        raise missing_parameter("IpPermissions")
    return [r for n, perm in enumerate(perms, 1)
            for r in _permission_rules(ctx, perm, f"IpPermissions.{n}")]


def _rule_number(row: SecurityGroup, direction: Direction, r: Rule) -> int:
    key = json.dumps([row.id, direction, r.protocol, r.from_port, r.to_port, r.cidr, r.group])
    return int(hashlib.sha256(key.encode()).hexdigest()[:15], 16)


def _rule_view(row: SecurityGroup, direction: Direction, r: Rule, *,
               revoked: bool = False) -> dict[str, Any]:
    item: dict[str, Any] = {
        "SecurityGroupRuleId": ids.public("rule", _rule_number(row, direction, r)),
        "GroupId": ids.public("secgroup", row.id or 0), "IsEgress": direction == "egress",
        "IpProtocol": r.protocol, "FromPort": -1 if r.from_port is None else r.from_port,
        "ToPort": -1 if r.to_port is None else r.to_port}
    if r.description:
        item["Description"] = r.description
    if r.group is not None and revoked:
        item["ReferencedGroupId"] = ids.public("secgroup", r.group)
    elif r.group is not None:
        item["ReferencedGroupInfo"] = {"GroupId": ids.public("secgroup", r.group),
                                       "UserId": owner_id(row.uid)}
    else:
        item["CidrIpv6" if ":" in r.cidr else "CidrIpv4"] = r.cidr
    if not revoked:
        item.update(GroupOwnerId=owner_id(row.uid), Tags=[])
    return item


def _authorize(ctx: Context, p: dict[str, Any], direction: Direction) -> dict[str, Any]:
    row = _target(ctx, p, direction)
    wanted = _requested(ctx, p)
    ctx.commit_point()
    try:
        added = secgroups.authorize(ctx.cloud, ctx.caller, group_id=row.id or 0,
                                    direction=direction, rules=wanted)
    except Conflict as exc:
        raise Ec2Error("InvalidPermission.Duplicate", str(exc)) from None
    except NotFound as exc:
        raise group_not_found(exc.ident) from None
    return {"Return": True, "SecurityGroupRules": [_rule_view(row, direction, r) for r in added]}


def _revoke(ctx: Context, p: dict[str, Any], direction: Direction) -> dict[str, Any]:
    row = _target(ctx, p, direction)
    if p.get("SecurityGroupRuleIds"):
        if p.get("IpPermissions") or any(k in p for k in _FLAT):
            raise Ec2Error("InvalidParameterCombination",
                           "SecurityGroupRuleIds cannot be combined with IpPermissions")
        current = {_rule_number(row, direction, r): r
                   for r in secgroups.rules_of(row, direction)}
        wanted = []
        for text in p["SecurityGroupRuleIds"]:
            number = ids.core("rule", text)
            if number not in current:
                raise Ec2Error("InvalidSecurityGroupRuleId.NotFound",
                               f"The security group rule ID '{text}' does not exist")
            wanted.append(current[number])
    else:
        wanted = _requested(ctx, p)
    ctx.commit_point()
    try:
        gone = secgroups.revoke(ctx.cloud, ctx.caller, group_id=row.id or 0,
                                direction=direction, rules=wanted)
    except NotFound as exc:
        if exc.kind == "security group":
            raise group_not_found(exc.ident) from None
        raise Ec2Error("InvalidPermission.NotFound", "The specified rule does not exist in "
                       f"this security group: {exc.ident}") from None
    return {"Return": True, "UnknownIpPermissions": [],
            "RevokedSecurityGroupRules": [_rule_view(row, direction, r, revoked=True)
                                          for r in gone]}


@action("AuthorizeSecurityGroupIngress")
def authorize_security_group_ingress(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    return _authorize(ctx, p, "ingress")


@action("AuthorizeSecurityGroupEgress")
def authorize_security_group_egress(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    return _authorize(ctx, p, "egress")


@action("RevokeSecurityGroupIngress")
def revoke_security_group_ingress(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    return _revoke(ctx, p, "ingress")


@action("RevokeSecurityGroupEgress")
def revoke_security_group_egress(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    return _revoke(ctx, p, "egress")
