"""Elastic IPs: leases of the public network (EC2_PUBLIC_NETWORK; core.service.addresses),
shown on instances as PublicIpAddress and on their first network interface. Without
that network, AllocateAddress answers Unsupported (as econe did without
`:elasticips_vnet_id`).

Allocation ids are `eipalloc-<address id>`; an association id also names which
association of the address it is (`eipassoc-<count><address id as 8 hex digits>`), so a
stale one is InvalidAssociationID.NotFound. Another user's address is NotFound.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apis.ec2 import filters, ids, views
from apis.ec2.actions import Context, action
from apis.ec2.actions.network import owner_id, tags_for
from apis.ec2.errors import Ec2Error, invalid_value, missing_parameter
from core import errors, template
from core.errors import Conflict, Forbidden, InvalidRequest, InvalidState, NotFound
from core.models import Address
from core.service import addresses, tags, vms
from core.service.access import MINE

ADDRESS_FILTERS = {name: filters.field(member) for name, member in {
    "allocation-id": "AllocationId", "association-id": "AssociationId",
    "instance-id": "InstanceId", "public-ip": "PublicIp", "domain": "Domain",
    "private-ip-address": "PrivateIpAddress", "network-border-group": "NetworkBorderGroup",
    "network-interface-owner-id": "NetworkInterfaceOwnerId",
    "network-interface-id": "NetworkInterfaceId",
    "public-ipv4-pool": "PublicIpv4Pool"}.items()}
_LOW32 = 0xFFFFFFFF


def _association(row: Address) -> str:
    return ids.public("association", row.associations << 32 | (row.id or 0))


def _not_found(allocation_id: str) -> Ec2Error:
    return Ec2Error("InvalidAllocationID.NotFound",
                    f"The allocation ID '{allocation_id}' does not exist")


def _own(ctx: Context, allocation_id: str | None, public_ip: str | None) -> Address:
    if allocation_id and public_ip:
        raise Ec2Error("InvalidParameterCombination",
                       "You may specify public IP or allocation id, but not both")
    if allocation_id:
        core_id = ids.core("address", allocation_id)
        try:
            row = addresses.get(ctx.cloud, ctx.caller, address_id=core_id)
        except (NotFound, Forbidden):
            raise _not_found(allocation_id) from None
        if row.uid != ctx.caller.uid:
            raise _not_found(allocation_id)
        return row
    if public_ip:
        try:
            return addresses.find(ctx.cloud, ctx.caller, ip=public_ip)
        except NotFound:
            raise Ec2Error("InvalidAddress.NotFound",
                           f"Address '{public_ip}' not found.") from None
    raise missing_parameter("AllocationId")


def _view(ctx: Context, row: Address, interfaces: Mapping[int, Mapping[str, str]],
          found: Mapping[str, str]) -> dict[str, Any]:
    item: dict[str, Any] = {
        "AllocationId": ids.public("address", row.id or 0), "PublicIp": row.ip,
        "Domain": "vpc", "PublicIpv4Pool": "amazon", "NetworkBorderGroup": ctx.region,
        "Tags": views.tag_list(found)}
    if row.vm_id is not None:
        item.update(InstanceId=ids.public("instance", row.vm_id),
                    AssociationId=_association(row), NetworkInterfaceOwnerId=owner_id(row.uid))
        nic = interfaces.get(row.vm_id, {})
        if nic.get("IP"):
            item["PrivateIpAddress"] = nic["IP"]
        if nic.get("NIC_ID", "").isdigit():
            item["NetworkInterfaceId"] = ids.public("interface",
                                                    row.vm_id << 8 | int(nic["NIC_ID"]))
    return item


def _first_nics(ctx: Context, vm_ids: list[int]) -> dict[int, dict[str, str]]:
    """vm id -> its first NIC (the one its Elastic IP goes to)."""
    if not vm_ids:
        return {}
    out = {}
    for info in vms.list_vms(ctx.cloud, ctx.caller, flag=MINE, ids=vm_ids):
        nics = template.parse(info.vm.template).vectors("NIC")
        out[info.vm.id or 0] = nics[0] if nics else {}
    return out


@action("AllocateAddress")
def allocate_address(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    """Domain `standard` (EC2-Classic, libcloud's default) is taken as `vpc`."""
    if p.get("Domain", "vpc") not in ("vpc", "standard"):
        raise invalid_value("Domain", p["Domain"], "vpc is the only domain")
    address_tags = tags_for(p, "elastic-ip")
    ctx.commit_point()
    try:
        row = addresses.allocate(ctx.cloud, ctx.caller, ip=p.get("Address") or "")
    except errors.NotConfigured as exc:
        raise Ec2Error("Unsupported", str(exc)) from None
    except errors.NoFreeLease as exc:
        raise Ec2Error("AddressLimitExceeded", str(exc)) from None
    except (Conflict, InvalidRequest, NotFound) as exc:
        raise invalid_value("Address", p.get("Address"), str(exc)) from None
    assert row.id is not None
    if address_tags:
        tags.set_tags(ctx.cloud, ctx.caller, kind="address", ids=[row.id], tags=address_tags)
    return {"PublicIp": row.ip, "AllocationId": ids.public("address", row.id), "Domain": "vpc",
            "PublicIpv4Pool": "amazon", "NetworkBorderGroup": ctx.region}


@action("AssociateAddress")
def associate_address(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    """AllowReassociation defaults to true (EC2-VPC); false refuses to move an address
    that is associated elsewhere (Resource.AlreadyAssociated)."""
    if not p.get("InstanceId"):
        if p.get("NetworkInterfaceId"):
            raise Ec2Error("UnsupportedOperation", "Associate addresses with instances")
        raise missing_parameter("InstanceId")
    row = _own(ctx, p.get("AllocationId"), p.get("PublicIp"))
    vm_id = ids.core("instance", p["InstanceId"])
    try:
        if vms.get_vm(ctx.cloud, ctx.caller, vm_id=vm_id).vm.uid != ctx.caller.uid:
            raise NotFound("VM", vm_id)
    except (NotFound, Forbidden):
        raise ids.not_found("instance", p["InstanceId"]) from None
    ctx.commit_point()
    try:
        row = addresses.associate(ctx.cloud, ctx.caller, address_id=row.id or 0, vm_id=vm_id,
                                  reassociate=p.get("AllowReassociation", True))
    except Conflict as exc:
        raise Ec2Error("Resource.AlreadyAssociated", str(exc)) from None
    except InvalidState as exc:
        raise Ec2Error("IncorrectInstanceState", str(exc)) from None
    except InvalidRequest:
        raise Ec2Error("InvalidInstanceID", f"The instance '{p['InstanceId']}' has no "
                       "network interface: launch it with a SubnetId to give it a private "
                       "address") from None
    except (NotFound, Forbidden):
        raise ids.not_found("instance", p["InstanceId"]) from None
    return {"AssociationId": _association(row)}


@action("DisassociateAddress")
def disassociate_address(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    """Idempotent by PublicIp; an AssociationId must name the current association."""
    text = p.get("AssociationId")
    if not text:
        row = _own(ctx, None, p.get("PublicIp") or "")
        ctx.commit_point()
        addresses.disassociate(ctx.cloud, ctx.caller, address_id=row.id or 0)
        return {}
    number = ids.core("association", text)
    gone = Ec2Error("InvalidAssociationID.NotFound",
                    f"The association ID '{text}' does not exist")
    try:
        row = addresses.get(ctx.cloud, ctx.caller, address_id=number & _LOW32)
    except (NotFound, Forbidden):
        raise gone from None
    if row.uid != ctx.caller.uid or row.vm_id is None or row.associations != number >> 32:
        raise gone
    ctx.commit_point()
    try:
        addresses.disassociate(ctx.cloud, ctx.caller, address_id=row.id or 0,
                               association=number >> 32)
    except NotFound:
        raise gone from None
    return {}


@action("ReleaseAddress")
def release_address(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    """Refused while associated (InvalidIPAddress.InUse), as for VPC addresses on AWS."""
    row = _own(ctx, p.get("AllocationId"), p.get("PublicIp"))
    ctx.commit_point()
    try:
        addresses.release(ctx.cloud, ctx.caller, address_id=row.id or 0)
    except Conflict as exc:
        raise Ec2Error("InvalidIPAddress.InUse", str(exc)) from None
    return {}


@action("DescribeAddresses")
def describe_addresses(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    rows = addresses.list_addresses(ctx.cloud, ctx.caller, flag=MINE)
    by_ip = {row.ip for row in rows}
    for ip in p.get("PublicIps", []):
        if ip not in by_ip:
            raise Ec2Error("InvalidAddress.NotFound", f"Address '{ip}' not found.")
    wanted = {ids.core("address", text): text for text in p.get("AllocationIds", [])}
    for core_id, text in wanted.items():
        if core_id not in {row.id for row in rows}:
            raise _not_found(text)
    picked = [r for r in rows if (not wanted or r.id in wanted)
              and (not p.get("PublicIps") or r.ip in p["PublicIps"])]
    with ctx.cloud.session() as s:
        found = tags.tags_of(s, "address", [r.id for r in picked if r.id is not None])
    interfaces = _first_nics(ctx, [r.vm_id for r in picked if r.vm_id is not None])
    matches = filters.compile_filters(p.get("Filters", []), ADDRESS_FILTERS)
    items = [_view(ctx, r, interfaces, found.get(r.id or 0, {})) for r in picked]
    return {"Addresses": [i for i in items if matches(i)]}
