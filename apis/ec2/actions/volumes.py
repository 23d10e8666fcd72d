"""Volumes and snapshots: EBS seen through the core's images.

A volume is a persistent DATABLOCK image (OpenNebula's econe did the same); attaching one
is a disk hotplug on the instance (core.service.disks). A snapshot is a copy of a volume
(an image clone marked SNAPSHOT_OF); a volume created from a snapshot is a copy of it.
"""

from __future__ import annotations

import math
import re
from typing import Any

from apis.ec2 import filters, ids, pages, views
from apis.ec2.actions import Context, action, fingerprint
from apis.ec2.errors import Ec2Error, invalid_value
from core import template
from core.errors import Conflict, Forbidden, IdempotencyMismatch, InvalidState, NotFound
from core.lifecycle import VmState
from core.models import (
    IMAGE_DISABLED,
    IMAGE_ERROR,
    IMAGE_LOCKED,
    IMAGE_READY,
    IMAGE_USED,
    VM,
    Image,
)
from core.service import disks, images, tags
from core.service.access import MINE

DATABLOCK = 2
MB_PER_GIB = 1024
MAX_GIB = 16384
_DEVICE = re.compile(r"(/dev/)?((?:sd|xvd|vd|hd)[a-z]{1,2})\Z")

VOLUME_FILTERS = {
    "volume-id": filters.field("VolumeId"), "size": filters.field("Size"),
    "status": filters.field("State"), "availability-zone": filters.field("AvailabilityZone"),
    "create-time": filters.field("CreateTime"), "snapshot-id": filters.field("SnapshotId"),
    "volume-type": filters.field("VolumeType"), "encrypted": filters.field("Encrypted"),
    "multi-attach-enabled": filters.field("MultiAttachEnabled"),
    "attachment.instance-id": filters.field("Attachments", "InstanceId"),
    "attachment.device": filters.field("Attachments", "Device"),
    "attachment.status": filters.field("Attachments", "State"),
    "attachment.attach-time": filters.field("Attachments", "AttachTime"),
    "attachment.delete-on-termination": filters.field("Attachments", "DeleteOnTermination"),
}
SNAPSHOT_FILTERS = {
    "snapshot-id": filters.field("SnapshotId"), "volume-id": filters.field("VolumeId"),
    "status": filters.field("State"), "owner-id": filters.field("OwnerId"),
    "description": filters.field("Description"), "volume-size": filters.field("VolumeSize"),
    "start-time": filters.field("StartTime"), "progress": filters.field("Progress"),
    "encrypted": filters.field("Encrypted"), "storage-tier": filters.field("StorageTier"),
}


def kind_of(row: Image) -> str:
    """How EC2 shows a core image: "volume", "snapshot" or "image" (an AMI, or nothing)."""
    if row.type != DATABLOCK:
        return "image"
    if "SNAPSHOT_OF" in template.parse(row.template):
        return "snapshot"
    return "volume" if row.persistent else "image"


def _gib(size_mb: int) -> int:
    return max(1, math.ceil(size_mb / MB_PER_GIB))


def _own(ctx: Context, kind: str, public_id: str) -> Image:
    core_id = ids.core(kind, public_id)
    try:
        row = images.get_image(ctx.cloud, ctx.caller, image_id=core_id)
    except (NotFound, Forbidden):
        raise ids.not_found(kind, public_id) from None
    if row.uid != ctx.caller.uid or kind_of(row) != kind:
        raise ids.not_found(kind, public_id)
    return row


def _attachment(volume_id: str, vm: VM, disk: dict[str, str]) -> dict[str, Any]:
    state, since = views.attachment(disk, vm.stime)
    return {"VolumeId": volume_id, "InstanceId": ids.public("instance", vm.id or 0),
            "Device": "/dev/" + disk.get("TARGET", ""), "State": state, "AttachTime": since,
            "DeleteOnTermination": False}


def _volume(ctx: Context, row: Image, holders: dict[int, tuple[VM, dict[str, str]]],
            found_tags: dict[str, str]) -> dict[str, Any]:
    assert row.id is not None
    tmpl = template.parse(row.template)
    volume_id = ids.public("volume", row.id)
    held = holders.get(row.id)
    state = {IMAGE_LOCKED: "creating", IMAGE_ERROR: "error", IMAGE_DISABLED: "error"}.get(
        row.state, "in-use" if held else "available")
    origin = tmpl.get("FROM_SNAPSHOT") or ""
    return {
        "VolumeId": volume_id, "Size": _gib(row.size_mb),
        "SnapshotId": ids.public("snapshot", int(origin)) if origin.isdigit() else "",
        "AvailabilityZone": tmpl.get("AVAILABILITY_ZONE") or ctx.region + views.ZONE_SUFFIX,
        "State": state, "CreateTime": views.when(row.regtime),
        "Attachments": [_attachment(volume_id, *held)] if held else [],
        "Encrypted": False, "VolumeType": tmpl.get("VOLUME_TYPE") or "gp2",
        "MultiAttachEnabled": False, "Tags": views.tag_list(found_tags),
    }


def _snapshot(ctx: Context, row: Image, found_tags: dict[str, str]) -> dict[str, Any]:
    assert row.id is not None
    tmpl = template.parse(row.template)
    origin = tmpl.get("SNAPSHOT_OF") or ""
    state = {IMAGE_LOCKED: "pending", IMAGE_ERROR: "error"}.get(row.state, "completed")
    return {
        "SnapshotId": ids.public("snapshot", row.id),
        "VolumeId": ids.public("volume", int(origin)) if origin.isdigit() else "",
        "State": state, "StartTime": views.when(row.regtime),
        "Progress": "100%" if state == "completed" else "0%", "OwnerId": ctx.owner,
        "Description": tmpl.get("DESCRIPTION") or "", "VolumeSize": _gib(row.size_mb),
        "Encrypted": False, "StorageTier": "standard", "Tags": views.tag_list(found_tags),
    }


def _rows(ctx: Context, kind: str) -> list[Image]:
    return [r for r in images.list_images(ctx.cloud, ctx.caller, flag=MINE) if kind_of(r) == kind]


def _named(rows: list[Image], kind: str, wanted: list[str], limit: int | None) -> list[Image]:
    """The rows a Describe names by id (all when it names none); malformed ids first, then
    NotFound naming every missing one. Ids and MaxResults do not go together."""
    if not wanted:
        return rows
    if limit is not None:
        raise Ec2Error("InvalidParameterCombination", f"The parameter {kind}Set cannot be "
                       "used with the parameter maxResults")
    for text in wanted:
        ids.core(kind, text)
    by_id = {ids.public(kind, r.id or 0): r for r in rows}
    missing = [text for text in wanted if text not in by_id]
    if missing:
        raise ids.not_found(kind, ", ".join(missing))
    return [r for r in rows if ids.public(kind, r.id or 0) in wanted]


def _tags_of(ctx: Context, rows: list[Image]) -> dict[int, dict[str, str]]:
    with ctx.cloud.session() as s:
        return tags.tags_of(s, "image", [r.id for r in rows if r.id is not None])


def _spec_tags(p: dict[str, Any], resource: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for spec in p.get("TagSpecifications", []):
        if spec.get("ResourceType", resource) != resource:
            raise invalid_value("TagSpecification.ResourceType", spec.get("ResourceType"),
                                f"this call tags a {resource}")
        found.update({t["Key"]: t.get("Value", "") for t in spec.get("Tags", [])})
    return found


# --- volumes ---

@action("CreateVolume")
def create_volume(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    size = p.get("Size")
    snapshot = _own(ctx, "snapshot", p["SnapshotId"]) if p.get("SnapshotId") else None
    if size is None and snapshot is None:
        raise Ec2Error("MissingParameter", "The request must contain the parameter size or "
                       "snapshotId")
    if size is not None and not 1 <= size <= MAX_GIB:
        raise invalid_value("Size", size, f"it must be between 1 and {MAX_GIB} GiB")
    if snapshot is not None and size is not None and size < _gib(snapshot.size_mb):
        raise invalid_value("Size", size, f"the snapshot is {_gib(snapshot.size_mb)} GiB")
    zone = p.get("AvailabilityZone") or ctx.region + views.ZONE_SUFFIX
    if not zone.startswith(ctx.region):
        raise invalid_value("AvailabilityZone", zone, "no such zone in this region (see "
                            "DescribeAvailabilityZones)")
    token = p.get("ClientToken", "")
    if len(token) > 64:
        raise invalid_value("ClientToken", token, "at most 64 characters")
    volume_tags = _spec_tags(p, "volume")
    ctx.commit_point()
    changes = template.Template([("TYPE", "DATABLOCK"), ("PERSISTENT", "YES"),
                                 ("AVAILABILITY_ZONE", zone),
                                 ("VOLUME_TYPE", p.get("VolumeType") or "gp2")])
    if size is not None:
        changes.set("SIZE", str(size * MB_PER_GIB))
    try:
        if snapshot is not None:
            assert snapshot.id is not None
            changes.set("FROM_SNAPSHOT", str(snapshot.id))
            image_id = images.clone_image(ctx.cloud, ctx.caller, image_id=snapshot.id,
                                          changes=changes, name_from_id="volume-{id}",
                                          token=token, fingerprint=fingerprint(p))
        else:
            image_id = images.create_image(ctx.cloud, ctx.caller, text=changes.dumps(),
                                           name_from_id="volume-{id}", token=token,
                                           fingerprint=fingerprint(p))
    except IdempotencyMismatch as exc:
        raise Ec2Error("IdempotentParameterMismatch", str(exc)) from None
    if volume_tags:
        tags.set_tags(ctx.cloud, ctx.caller, kind="image", ids=[image_id], tags=volume_tags)
    row = images.get_image(ctx.cloud, ctx.caller, image_id=image_id)
    if not token:  # a new volume: attached to nothing, tagged as asked
        return _volume(ctx, row, {}, volume_tags)
    # a retry may answer with a volume created earlier: show it as it is now
    return _volume(ctx, row, disks.holders(ctx.cloud, ctx.caller),
                   _tags_of(ctx, [row]).get(image_id, {}))


@action("DescribeVolumes")
def describe_volumes(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    limit = pages.max_results(p)
    rows = _named(_rows(ctx, "volume"), "volume", p.get("VolumeIds", []), limit)
    after = pages.after(p.get("NextToken"), "v")
    rows = [r for r in rows if (r.id or 0) > after]
    holders = disks.holders(ctx.cloud, ctx.caller)
    found = _tags_of(ctx, rows)
    matches = filters.compile_filters(p.get("Filters", []), VOLUME_FILTERS)
    items = [(r.id or 0, view) for r in rows
             if matches(view := _volume(ctx, r, holders, found.get(r.id or 0, {})))]
    return pages.answer("Volumes", items, limit, "v")


def _instance(ctx: Context, public_id: str) -> VM:
    core_id = ids.core("instance", public_id)
    with ctx.cloud.session() as s:
        vm = s.get(VM, core_id)
    if vm is None or vm.uid != ctx.caller.uid or vm.state == VmState.DONE:
        raise ids.not_found("instance", public_id)
    return vm


@action("AttachVolume")
def attach_volume(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    row = _own(ctx, "volume", p["VolumeId"])
    vm = _instance(ctx, p["InstanceId"])
    device = _DEVICE.match(p["Device"])
    if device is None:
        raise invalid_value("Device", p["Device"], "expecting a name like /dev/sdf or xvdf")
    if row.running_vms > 0 or row.state != IMAGE_READY:
        raise Ec2Error("VolumeInUse", f"{p['VolumeId']} is already attached to an instance")
    zone = template.parse(row.template).get("AVAILABILITY_ZONE")
    vm_zone = template.parse(vm.template).get("AVAILABILITY_ZONE")
    if zone and vm_zone and zone != vm_zone:
        raise Ec2Error("InvalidVolume.ZoneMismatch", f"The volume '{p['VolumeId']}' is not in "
                       f"the same availability zone as instance '{p['InstanceId']}'")
    ctx.commit_point()
    assert row.id is not None and vm.id is not None
    try:
        disks.attach_disk(ctx.cloud, ctx.caller, vm_id=vm.id, image_id=row.id,
                          target=device.group(2))
    except InvalidState:
        raise Ec2Error("IncorrectInstanceState", f"The instance '{p['InstanceId']}' is not "
                       "running or stopped; volumes attach to running or stopped instances") \
            from None
    except Conflict as exc:
        if "target" in str(exc):
            raise invalid_value("Device", p["Device"], "the attachment point is already in use") \
                from None
        raise Ec2Error("VolumeInUse", str(exc)) from None
    held = disks.holders(ctx.cloud, ctx.caller)[row.id]
    return _attachment(p["VolumeId"], *held)


@action("DetachVolume")
def detach_volume(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    row = _own(ctx, "volume", p["VolumeId"])
    assert row.id is not None
    held = disks.holders(ctx.cloud, ctx.caller).get(row.id)
    if held is None:
        raise Ec2Error("IncorrectState", f"Volume '{p['VolumeId']}' is in the 'available' state")
    vm, disk = held
    if p.get("InstanceId") and p["InstanceId"] != ids.public("instance", vm.id or 0):
        raise Ec2Error("InvalidAttachment.NotFound", f"Volume '{p['VolumeId']}' is not attached "
                       f"to instance '{p['InstanceId']}'")
    if p.get("Device") and p["Device"].removeprefix("/dev/") != disk.get("TARGET"):
        raise Ec2Error("InvalidAttachment.NotFound", f"Volume '{p['VolumeId']}' is not attached "
                       f"as {p['Device']}")
    if disk.get("ATTACH") or disk.get("DETACH"):
        state = "attaching" if disk.get("ATTACH") else "detaching"
        raise Ec2Error("IncorrectState", f"Volume '{p['VolumeId']}' is {state}; try again when "
                       "that is done")
    ctx.commit_point()
    try:
        disks.detach_disk(ctx.cloud, ctx.caller, vm_id=vm.id or 0,
                          disk_id=int(disk.get("DISK_ID", "-1")))
    except InvalidState:
        raise Ec2Error("IncorrectInstanceState", f"The instance '{ids.public('instance', vm.id or 0)}'"
                       " is not running or stopped; try again when it is") from None
    except Conflict as exc:
        raise Ec2Error("IncorrectState", str(exc)) from None
    held = disks.holders(ctx.cloud, ctx.caller).get(row.id)
    if held is None:  # a VM not yet deployed lets go at once
        return {**_attachment(p["VolumeId"], vm, disk), "State": "detached"}
    return _attachment(p["VolumeId"], *held)


@action("DeleteVolume")
def delete_volume(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    row = _own(ctx, "volume", p["VolumeId"])
    if row.running_vms > 0:
        raise Ec2Error("VolumeInUse", f"Volume {p['VolumeId']} is currently attached to an "
                       "instance")
    ctx.commit_point()
    try:
        images.delete_image(ctx.cloud, ctx.caller, image_id=row.id or 0)
    except Conflict as exc:
        raise Ec2Error("VolumeInUse", str(exc)) from None
    return {}


# --- snapshots ---

@action("CreateSnapshot")
def create_snapshot(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    row = _own(ctx, "volume", p["VolumeId"])
    snapshot_tags = _spec_tags(p, "snapshot")
    if row.state not in (IMAGE_READY, IMAGE_USED):
        raise Ec2Error("IncorrectState", f"Volume '{p['VolumeId']}' is not ready")
    ctx.commit_point()
    changes = template.Template([("PERSISTENT", "NO"), ("SNAPSHOT_OF", str(row.id))])
    if p.get("Description"):
        changes.set("DESCRIPTION", p["Description"])
    snapshot_id = images.clone_image(ctx.cloud, ctx.caller, image_id=row.id or 0,
                                     changes=changes, name_from_id="snapshot-{id}")
    if snapshot_tags:
        tags.set_tags(ctx.cloud, ctx.caller, kind="image", ids=[snapshot_id], tags=snapshot_tags)
    snap = images.get_image(ctx.cloud, ctx.caller, image_id=snapshot_id)
    return _snapshot(ctx, snap, snapshot_tags)


@action("DescribeSnapshots")
def describe_snapshots(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    limit = pages.max_results(p)
    rows = _named(_rows(ctx, "snapshot"), "snapshot", p.get("SnapshotIds", []), limit)
    owners = set(p.get("OwnerIds", []))
    if owners and not owners & {"self", ctx.owner}:
        rows = []
    restorable = set(p.get("RestorableByUserIds", []))
    if restorable and not restorable & {"self", ctx.owner, "all"}:
        rows = []
    after = pages.after(p.get("NextToken"), "s")
    rows = [r for r in rows if (r.id or 0) > after]
    found = _tags_of(ctx, rows)
    matches = filters.compile_filters(p.get("Filters", []), SNAPSHOT_FILTERS)
    items = [(r.id or 0, view) for r in rows
             if matches(view := _snapshot(ctx, r, found.get(r.id or 0, {})))]
    return pages.answer("Snapshots", items, limit, "s")


@action("DeleteSnapshot")
def delete_snapshot(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    row = _own(ctx, "snapshot", p["SnapshotId"])
    ctx.commit_point()
    images.delete_image(ctx.cloud, ctx.caller, image_id=row.id or 0)
    return {}
