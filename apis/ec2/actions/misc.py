"""Regions, zones, account attributes, tags and instance status (the default VPC and its
subnets are in apis.ec2.actions.subnets)."""

from __future__ import annotations

from typing import Any

from apis.ec2 import filters, ids, views
from apis.ec2.actions import Context, action, volumes
from apis.ec2.errors import Ec2Error, invalid_value
from core.errors import Forbidden, NotFound
from core.service import images, tags
from core.service.access import MINE


@action("DescribeRegions")
def describe_regions(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    region = {"RegionName": ctx.region, "Endpoint": ctx.endpoint_host,
              "OptInStatus": "opt-in-not-required"}
    wanted = p.get("RegionNames", [])
    matches = filters.compile_filters(p.get("Filters", []), {
        "region-name": filters.field("RegionName"), "endpoint": filters.field("Endpoint")})
    keep = (not wanted or ctx.region in wanted) and matches(region)
    return {"Regions": [region] if keep else []}


@action("DescribeAvailabilityZones")
def describe_availability_zones(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    zone = {"ZoneName": ctx.region + views.ZONE_SUFFIX, "ZoneId": views.ZONE_ID,
            "State": "available", "RegionName": ctx.region, "ZoneType": "availability-zone",
            "OptInStatus": "opt-in-not-required", "Messages": [], "GroupName": ctx.region}
    wanted = p.get("ZoneNames", [])
    matches = filters.compile_filters(p.get("Filters", []), {
        "zone-name": filters.field("ZoneName"), "region-name": filters.field("RegionName"),
        "state": filters.field("State"), "zone-id": filters.field("ZoneId"),
        "zone-type": filters.field("ZoneType")})
    keep = (not wanted or zone["ZoneName"] in wanted) and matches(zone)
    return {"AvailabilityZones": [zone] if keep else []}


@action("DescribeAccountAttributes")
def describe_account_attributes(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    values = {"supported-platforms": ["VPC"], "default-vpc": [views.VPC_ID],
              "max-instances": ["1000"], "vpc-max-security-groups-per-interface": ["5"],
              "max-elastic-ips": ["5"], "vpc-max-elastic-ips": ["5"]}
    wanted = p.get("AttributeNames", []) or list(values)
    return {"AccountAttributes": [
        {"AttributeName": name, "AttributeValues": [{"AttributeValue": v} for v in values[name]]}
        for name in wanted if name in values]}


# --- tags ---

# public prefix -> (core kind, ids kind); volumes and snapshots are images of the core
KINDS = {"i": ("vm", "instance"), "ami": ("image", "image"), "key": ("keypair", "keypair"),
         "sg": ("secgroup", "secgroup"), "eipalloc": ("address", "address"),
         "vol": ("image", "volume"), "snap": ("image", "snapshot")}
RESOURCE_TYPES = {"instance": "instance", "image": "image", "keypair": "key-pair",
                  "secgroup": "security-group", "address": "elastic-ip", "volume": "volume",
                  "snapshot": "snapshot"}


def _resources(ctx: Context, public_ids: list[str]) -> dict[str, list[int]]:
    by_kind: dict[str, list[int]] = {}
    for text in public_ids:
        prefix = text.split("-", 1)[0]
        if prefix not in KINDS:
            raise invalid_value("ResourceId", text, "tags go on instances, images, volumes, "
                                "snapshots, key pairs, security groups and elastic IPs")
        kind, public_kind = KINDS[prefix]
        by_kind.setdefault(kind, []).append(ids.core(public_kind, text))
    return by_kind


def _tagging(ctx: Context, p: dict[str, Any], change: Any,
             pairs: dict[str, Any]) -> dict[str, Any]:
    """Apply `change` (tags.set_tags or tags.delete_tags) to every named resource."""
    targets = _resources(ctx, p.get("Resources", []))
    ctx.commit_point()
    for kind, object_ids in targets.items():
        try:
            change(ctx.cloud, ctx.caller, kind=kind, ids=object_ids, tags=pairs)
        except (NotFound, Forbidden):
            raise Ec2Error("InvalidID", "The ID(s) given do not exist or are not yours") \
                from None
    return {}


@action("CreateTags")
def create_tags(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    return _tagging(ctx, p, tags.set_tags, {t["Key"]: t.get("Value", "") for t in p.get("Tags", [])})


@action("DeleteTags")
def delete_tags(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    return _tagging(ctx, p, tags.delete_tags, {t["Key"]: t.get("Value") for t in p.get("Tags", [])})


@action("DescribeTags")
def describe_tags(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    public_kind = {"vm": "instance", "keypair": "keypair", "secgroup": "secgroup",
                   "address": "address"}
    found = [t for t in tags.list_tags(ctx.cloud, ctx.caller) if t.uid == ctx.caller.uid]
    image_kinds: dict[int | None, str] = {}
    if any(t.kind == "image" for t in found):
        image_kinds = {r.id: volumes.kind_of(r)
                       for r in images.list_images(ctx.cloud, ctx.caller, flag=MINE)}
    items = []
    for t in found:
        kind = image_kinds.get(t.object_id, "image") if t.kind == "image" else public_kind[t.kind]
        items.append({"ResourceId": ids.public(kind, t.object_id),
                      "ResourceType": RESOURCE_TYPES[kind], "Key": t.key, "Value": t.value})
    matches = filters.compile_filters(p.get("Filters", []), {
        "resource-id": filters.field("ResourceId"), "resource-type": filters.field("ResourceType"),
        "key": filters.field("Key"), "value": filters.field("Value")})
    return {"Tags": [i for i in items if matches(i)]}


@action("DescribeInstanceStatus")
def describe_instance_status(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    from apis.ec2.actions.instances import describe_instances

    listing = describe_instances(ctx, {k: v for k, v in p.items()
                                       if k in ("InstanceIds", "Filters")})
    out = []
    for reservation in listing["Reservations"]:
        for inst in reservation["Instances"]:
            running = inst["State"]["Name"] == "running"
            if not running and not p.get("IncludeAllInstances"):
                continue
            status = "ok" if running else "not-applicable"
            out.append({"InstanceId": inst["InstanceId"],
                        "AvailabilityZone": inst["Placement"]["AvailabilityZone"],
                        "InstanceState": inst["State"],
                        "InstanceStatus": {"Status": status, "Details": [
                            {"Name": "reachability", "Status": "passed" if running else
                             "not-applicable"}]},
                        "SystemStatus": {"Status": status, "Details": [
                            {"Name": "reachability", "Status": "passed" if running else
                             "not-applicable"}]},
                        "Events": []})
    return {"InstanceStatuses": out}


