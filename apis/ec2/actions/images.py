"""Images: a user's OS images seen as AMIs."""

from __future__ import annotations

from typing import Any

from apis.ec2 import filters, ids, views
from apis.ec2.actions import Context, action
from apis.ec2.errors import Ec2Error, invalid_value
from core import template
from core.errors import Conflict, Forbidden, InvalidRequest, NotFound
from core.models import Image
from core.service import images, tags
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
        return images.get_image(ctx.cloud, ctx.caller, image_id=ids.core("image", public_id))
    except (NotFound, Forbidden):
        raise ids.not_found("image", public_id) from None


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
