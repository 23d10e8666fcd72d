"""The default VPC and its subnets: one subnet per virtual network the caller may lease
from (`subnet-<vnet id>`), and the NICs RunInstances asks for on them.

The VPC's CidrBlock is the smallest block holding the caller's subnets (10.0.0.0/16 while
it has none). The subnet of EC2_DEFAULT_NETWORK is DefaultForAz: an instance launched
without a subnet gets a NIC there (none when the setting is empty). The network of
EC2_PUBLIC_NETWORK holds the Elastic IPs and is no subnet.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from apis.ec2 import filters, ids, pages, views
from apis.ec2.actions import Context, action
from apis.ec2.errors import Ec2Error, invalid_value
from core import errors
from core.errors import CloudError, NotFound
from core.models import Lease, VNet
from core.service import vnets

SUBNET_FILTERS = {name: filters.field(member) for name, member in {
    "subnet-id": "SubnetId", "vpc-id": "VpcId", "cidr-block": "CidrBlock",
    "cidr": "CidrBlock", "cidrBlock": "CidrBlock", "availability-zone": "AvailabilityZone",
    "availability-zone-id": "AvailabilityZoneId", "default-for-az": "DefaultForAz",
    "defaultForAz": "DefaultForAz", "state": "State", "owner-id": "OwnerId",
    "subnet-arn": "SubnetArn", "available-ip-address-count": "AvailableIpAddressCount",
    "map-public-ip-on-launch": "MapPublicIpOnLaunch"}.items()}
VPC_FILTERS = {name: filters.field(*path) for name, path in {
    "vpc-id": ("VpcId",), "is-default": ("IsDefault",), "state": ("State",),
    "cidr": ("CidrBlock",), "cidr-block-association.cidr-block":
    ("CidrBlockAssociationSet", "CidrBlock"), "owner-id": ("OwnerId",)}.items()}
FALLBACK_BLOCK = "10.0.0.0/16"


def _setting(ctx: Context, ref: str) -> int | None:
    return vnets.configured_id(ctx.cloud, ref=ref) if ref.strip() else None


def _networks(ctx: Context) -> list[tuple[VNet, list[Lease]]]:
    """The caller's subnets as networks: those it may lease from, but the public one."""
    public = _setting(ctx, ctx.cloud.config.ec2_public_network)
    return [(v, leases) for v, leases in vnets.usable_vnets(ctx.cloud, ctx.caller)
            if v.id != public]


def _subnet(ctx: Context, vnet: VNet, leases: Sequence[Lease],
            default: int | None) -> dict[str, Any]:
    assert vnet.id is not None
    subnet_id = ids.public("subnet", vnet.id)
    owner = f"{vnet.uid:012d}"
    block = vnets.block_of(vnet, leases)
    down = vnets.is_down(vnet)
    return {"SubnetId": subnet_id, "VpcId": views.VPC_ID,
            "State": "unavailable" if down else "available",
            "CidrBlock": str(block) if block else "",
            "AvailabilityZone": ctx.region + views.ZONE_SUFFIX,
            "AvailabilityZoneId": views.ZONE_ID,
            "AvailableIpAddressCount": 0 if down else vnets.free_count(vnet, leases),
            "DefaultForAz": vnet.id == default, "MapPublicIpOnLaunch": False,
            "AssignIpv6AddressOnCreation": False, "Ipv6CidrBlockAssociationSet": [],
            "OwnerId": owner, "Tags": [],
            "SubnetArn": f"arn:aws:ec2:{ctx.region}:{owner}:subnet/{subnet_id}"}


def _not_found(texts: Sequence[str]) -> Ec2Error:
    return ids.not_found("subnet", ", ".join(texts))


@action("DescribeSubnets")
def describe_subnets(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    limit = pages.max_results(p)
    networks = _networks(ctx)
    wanted = {ids.core("subnet", text): text for text in p.get("SubnetIds", [])}
    missing = [text for core_id, text in wanted.items()
               if core_id not in {v.id for v, _ in networks}]
    if missing:
        raise _not_found(missing)
    default = _setting(ctx, ctx.cloud.config.ec2_default_network)
    matches = filters.compile_filters(p.get("Filters", []), SUBNET_FILTERS)
    after = pages.after(p.get("NextToken"), "s")
    items = [(v.id or 0, view) for v, leases in networks
             if (not wanted or v.id in wanted) and (v.id or 0) > after
             and matches(view := _subnet(ctx, v, leases, default))]
    return pages.answer("Subnets", items, limit, "s")


def _vpc_block(networks: Sequence[tuple[VNet, list[Lease]]]) -> str:
    blocks = [b for v, leases in networks if (b := vnets.block_of(v, leases)) is not None]
    if not blocks:
        return FALLBACK_BLOCK
    low = min(int(b.network_address) for b in blocks)
    high = max(int(b.broadcast_address) for b in blocks)
    return str(ipaddress.IPv4Network((low, 32 - (low ^ high).bit_length()), strict=False))


@action("DescribeVpcs")
def describe_vpcs(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    missing = [text for text in p.get("VpcIds", []) if text != views.VPC_ID]
    for text in missing:
        ids.core("vpc", text)  # Malformed before NotFound
    if missing:
        raise ids.not_found("vpc", ", ".join(missing))
    block = _vpc_block(_networks(ctx))
    vpc = {"VpcId": views.VPC_ID, "State": "available", "CidrBlock": block,
           "CidrBlockAssociationSet": [{"AssociationId": "vpc-cidr-assoc-00000001",
                                        "CidrBlock": block,
                                        "CidrBlockState": {"State": "associated"}}],
           "IsDefault": True, "OwnerId": ctx.owner, "InstanceTenancy": "default",
           "DhcpOptionsId": "default", "Tags": []}
    matches = filters.compile_filters(p.get("Filters", []), VPC_FILTERS)
    return {"Vpcs": [vpc] if matches(vpc) else []}


# --- NICs for RunInstances ---

def _network_of(ctx: Context, subnet: str) -> int:
    """The network behind a subnet id the caller may launch into."""
    vnet_id = ids.core("subnet", subnet)
    if vnet_id not in {v.id for v, _ in _networks(ctx)}:
        raise _not_found([subnet])
    return vnet_id


def _default_network(ctx: Context) -> int | None:
    """EC2_DEFAULT_NETWORK's network (None when unset); VPCIdNotSpecified when the caller
    may not use it."""
    ref = ctx.cloud.config.ec2_default_network
    if not ref.strip():
        return None
    found = _setting(ctx, ref)
    if found is None or found not in {v.id for v, _ in _networks(ctx)}:
        raise Ec2Error("VPCIdNotSpecified", "No default subnet for this user: name a "
                       "SubnetId (see DescribeSubnets)")
    return found


def launch_nics(ctx: Context, p: Mapping[str, Any]) -> list[dict[str, str]]:
    """The NIC vectors of RunInstances: NetworkInterfaces.N (by DeviceIndex), else
    SubnetId and PrivateIpAddress, else a NIC on the default subnet if there is one."""
    specs = sorted(p.get("NetworkInterfaces", []), key=lambda n: n.get("DeviceIndex", 0))
    if specs and (p.get("SubnetId") or p.get("PrivateIpAddress")):
        raise Ec2Error("InvalidParameterCombination", "Network interfaces and an "
                       "instance-level subnet ID or private IP address may not be "
                       "specified on the same request")
    if not specs:
        specs = [{"SubnetId": p.get("SubnetId"), "PrivateIpAddress": p.get("PrivateIpAddress")}]
    nics = []
    for spec in specs:
        if spec.get("NetworkInterfaceId"):
            raise Ec2Error("UnsupportedOperation", "Launch with a SubnetId: existing "
                           "network interfaces cannot be attached")
        ip = spec.get("PrivateIpAddress") or ""
        if spec.get("SubnetId"):
            vnet_id: int | None = _network_of(ctx, spec["SubnetId"])
        else:
            vnet_id = _default_network(ctx)
            if vnet_id is None and (ip or len(specs) > 1):
                raise Ec2Error("VPCIdNotSpecified", "No default subnet for this user: "
                               "name a SubnetId")
        if vnet_id is None:
            continue
        nics.append({"NETWORK_ID": str(vnet_id)} | ({"IP": ip} if ip else {}))
    if any("IP" in nic for nic in nics) and p.get("MaxCount", 1) > 1:
        raise Ec2Error("InvalidParameterCombination",
                       "A private IP address can only be given to a single instance")
    return nics


def nic_error(exc: CloudError, nics: Sequence[Mapping[str, str]]) -> Ec2Error | None:
    """The EC2 error for a NIC that got no lease, or None if `exc` is not one."""
    ip = next((nic["IP"] for nic in nics if nic.get("IP")), "")
    if isinstance(exc, errors.NoFreeLease):
        return Ec2Error("InsufficientFreeAddressesInSubnet", "The specified subnet does not "
                        f"have enough free addresses to satisfy the request ({exc})")
    if isinstance(exc, errors.LeaseTaken):
        return Ec2Error("InvalidIPAddress.InUse", f"Address {ip} is in use.")
    if isinstance(exc, errors.OutsideNetwork) or isinstance(exc, NotFound) and exc.kind == "lease":
        return invalid_value("PrivateIpAddress", ip,
                             "it does not fall within the subnet's address range")
    if isinstance(exc, NotFound) and exc.kind == "virtual network" \
            and str(exc.ident).isdigit():  # deleted meanwhile
        return ids.not_found("subnet", ids.public("subnet", int(str(exc.ident))))
    return None
