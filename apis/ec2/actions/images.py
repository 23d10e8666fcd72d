"""Images: a user's OS images seen as AMIs."""

from __future__ import annotations

from typing import Any

from apis.ec2 import filters, ids, views
from apis.ec2.actions import Context, action
from apis.ec2.actions.instances import one_instance
from apis.ec2.errors import Ec2Error, invalid_value
from core import template
from core.errors import Conflict, Forbidden, InvalidRequest, NotFound
from core.lifecycle import VmState
from core.models import Image
from core.service import disks, images, tags
from core.service.access import MINE

IMAGE_FILTERS = {
    "image-id": filters.field("ImageId"), "name": filters.field("Name"),
    "state": filters.field("State"), "owner-id": filters.field("OwnerId"),
    "architecture": filters.field("Architecture"), "image-type": filters.field("ImageType"),
    "is-public": filters.field("Public"), "description": filters.field("Description"),
}


@action("DescribeImages")
def describe_images(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    rows = images.list_images(ctx.cloud, ctx.caller, flag=MINE)
    with ctx.cloud.session() as s:
        found = tags.tags_of(s, "image", [r.id for r in rows if r.id is not None])
    items = [views.image(r, owner=ctx.owner, tags=found.get(r.id or 0, {})) for r in rows
             if r.type == 0]
    if p.get("ImageIds"):
        have = {i["ImageId"] for i in items}
        for text in p["ImageIds"]:
            ids.core("image", text)
            if text not in have:
                raise ids.not_found("image", text)
        items = [i for i in items if i["ImageId"] in p["ImageIds"]]
    owners = set(p.get("Owners", []))
    if owners and not owners & {"self", ctx.owner}:
        items = []
    matches = filters.compile_filters(p.get("Filters", []), IMAGE_FILTERS)
    return {"Images": [i for i in items if matches(i)]}




def _own(ctx: Context, public_id: str) -> Image:
    try:
        row = images.get_image(ctx.cloud, ctx.caller, image_id=ids.core("image", public_id))
    except (NotFound, Forbidden):
        raise ids.not_found("image", public_id) from None
    if row.type != 0:  # volumes and snapshots are images of the core, not AMIs
        raise ids.not_found("image", public_id)
    return row


@action("RegisterImage")
def register_image(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    """ImageLocation is a path on the front-end or an http(s) URL."""
    location = p.get("ImageLocation")
    if not location:
        raise Ec2Error("MissingParameter", "The request must contain ImageLocation")
    if not p.get("Name"):
        raise Ec2Error("MissingParameter", "The request must contain the parameter Name")
    spec = template.Template([("NAME", p["Name"]), ("PATH", location), ("TYPE", "OS")])
    if p.get("Description"):
        spec.set("DESCRIPTION", p["Description"])
    ctx.commit_point()
    try:
        image_id = images.create_image(ctx.cloud, ctx.caller, text=spec.dumps())
    except Conflict:
        raise invalid_value("Name", p["Name"], "you already have an image by that name") \
            from None
    except InvalidRequest as exc:
        raise invalid_value("ImageLocation", location, str(exc)) from None
    image_tags = {t["Key"]: t.get("Value", "") for spec_ in p.get("TagSpecifications", [])
                  for t in spec_.get("Tags", [])}
    if image_tags:
        tags.set_tags(ctx.cloud, ctx.caller, kind="image", ids=[image_id], tags=image_tags)
    return {"ImageId": ids.public("image", image_id)}


@action("DeregisterImage")
def deregister_image(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    image = _own(ctx, p["ImageId"])
    ctx.commit_point()
    try:
        images.delete_image(ctx.cloud, ctx.caller, image_id=image.id or 0)
    except Conflict as exc:
        raise Ec2Error("InvalidAMIID.InUse", str(exc)) from None
    return {"Return": True, "DeleteSnapshotResults": []}


@action("DescribeImageAttribute")
def describe_image_attribute(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    image = _own(ctx, p["ImageId"])
    view = views.image(image, owner=ctx.owner, tags={})
    values: dict[str, tuple[str, Any]] = {
        "description": ("Description", {"Value": view["Description"]}),
        "launchPermission": ("LaunchPermissions", []),
        "blockDeviceMapping": ("BlockDeviceMappings", []),
        "productCodes": ("ProductCodes", []),
        "kernel": ("KernelId", {"Value": ""}),
        "ramdisk": ("RamdiskId", {"Value": ""}),
    }
    name = p["Attribute"]
    if name not in values:
        raise invalid_value("Attribute", name, f"supported: {', '.join(sorted(values))}")
    member, value = values[name]
    return {"ImageId": p["ImageId"], member: value}


@action("CreateImage")
def create_image(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    """Save a stopped instance's root disk as a new AMI (pending until the copy is done)."""
    info = one_instance(ctx, p["InstanceId"])
    if not 3 <= len(p["Name"]) <= 128:
        raise invalid_value("Name", p["Name"], "it must be 3 to 128 characters long")
    if info.vm.state != VmState.STOPPED:
        raise Ec2Error("IncorrectInstanceState", f"The instance '{p['InstanceId']}' is not "
                       "stopped: CreateImage saves a stopped instance's disk (stop it first)")
    root = next((d for d in template.parse(info.vm.template).vectors("DISK")
                 if d.get("IMAGE_ID", "").isdigit()), None)
    if root is None:
        raise Ec2Error("InvalidParameterValue", f"The instance '{p['InstanceId']}' has no "
                       "image-backed disk to save")
    image_tags = {t["Key"]: t.get("Value", "") for spec in p.get("TagSpecifications", [])
                  for t in spec.get("Tags", [])}
    ctx.commit_point()
    try:
        image_id = disks.save_disk(ctx.cloud, ctx.caller, vm_id=info.vm.id or 0,
                                   disk_id=int(root.get("DISK_ID", "0")), name=p["Name"],
                                   description=p.get("Description") or "")
    except Conflict as exc:
        if "already have an image" in str(exc):
            raise Ec2Error("InvalidAMIName.Duplicate", f"AMI name {p['Name']} is already in "
                           "use by an AMI you own") from None
        raise Ec2Error("IncorrectInstanceState", str(exc)) from None
    if image_tags:
        tags.set_tags(ctx.cloud, ctx.caller, kind="image", ids=[image_id], tags=image_tags)
    return {"ImageId": ids.public("image", image_id)}
