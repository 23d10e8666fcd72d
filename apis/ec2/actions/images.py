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

IMAGE_FILTERS = {
    "image-id": filters.field("ImageId"), "name": filters.field("Name"),
    "state": filters.field("State"), "owner-id": filters.field("OwnerId"),
    "architecture": filters.field("Architecture"), "image-type": filters.field("ImageType"),
    "is-public": filters.field("Public"), "description": filters.field("Description"),
}


@action("DescribeImages")
def describe_images(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    """The caller's AMIs and every public one (EC2's "images you can launch")."""
    rows = [r for r in images.list_images(ctx.cloud, ctx.caller)
            if r.type == 0 and (r.uid == ctx.caller.uid or r.public)]
    with ctx.cloud.session() as s:
        found = tags.tags_of(s, "image", [r.id for r in rows if r.id is not None])
    items = [views.image(r, tags=found.get(r.id or 0, {}) if r.uid == ctx.caller.uid else {})
             for r in rows]
    if p.get("ImageIds"):
        have = {i["ImageId"] for i in items}
        for text in p["ImageIds"]:
            ids.core("image", text)
            if text not in have:
                raise ids.not_found("image", text)
        items = [i for i in items if i["ImageId"] in p["ImageIds"]]
    owners = {ctx.owner if o == "self" else o for o in p.get("Owners", [])}
    if owners:
        items = [i for i in items if i["OwnerId"] in owners]
    executable = set(p.get("ExecutableUsers", []))
    if executable:  # "all": the public ones; self or the caller's id: all it can launch
        items = [i for i in items if ("all" in executable and i["Public"]) or
                 executable & {"self", ctx.owner}]
    matches = filters.compile_filters(p.get("Filters", []), IMAGE_FILTERS)
    return {"Images": [i for i in items if matches(i)]}


def _own(ctx: Context, public_id: str, *, change: bool = True) -> Image:
    """The AMI behind an id: the caller's own, or (to read it) a public one."""
    try:
        row = images.get_image(ctx.cloud, ctx.caller, image_id=ids.core("image", public_id))
    except (NotFound, Forbidden):
        raise ids.not_found("image", public_id) from None
    if row.type != 0:  # volumes and snapshots are images of the core, not AMIs
        raise ids.not_found("image", public_id)
    if row.uid != ctx.caller.uid and not row.public:
        raise ids.not_found("image", public_id)
    if change and row.uid != ctx.caller.uid:
        raise Ec2Error("UnauthorizedOperation", f"You are not authorized to change "
                       f"{public_id}: it belongs to another account", 403)
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
    image = _own(ctx, p["ImageId"], change=False)
    view = views.image(image, tags={})
    values: dict[str, tuple[str, Any]] = {
        "description": ("Description", {"Value": view["Description"]}),
        "launchPermission": ("LaunchPermissions", [{"Group": "all"}] if image.public else []),
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


@action("ModifyImageAttribute")
def modify_image_attribute(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    """Launch permission for group `all` (make the AMI public or private again) and the
    description; other accounts cannot be named one by one on this cloud."""
    image = _own(ctx, p["ImageId"])
    add, remove = _launch_groups(p)
    description = (p.get("Description") or {}).get("Value")
    if p.get("Attribute") == "description":
        description = p.get("Value", description)
    if not add and not remove and description is None:
        raise Ec2Error("MissingParameter", "Give LaunchPermission (Group all) or Description")
    ctx.commit_point()
    if add or remove:
        images.publish_image(ctx.cloud, ctx.caller, image_id=image.id or 0, public=bool(add))
    if description is not None:
        images.update_image(ctx.cloud, ctx.caller, image_id=image.id or 0,
                            description=str(description))
    return {}


def _launch_groups(p: dict[str, Any]) -> tuple[bool, bool]:
    """Whether the request adds or removes launch permission for everyone."""
    permission = p.get("LaunchPermission") or {}
    add = [g for g in permission.get("Add", [])]
    remove = [g for g in permission.get("Remove", [])]
    if p.get("Attribute") == "launchPermission":
        entries = [{"Group": g} for g in p.get("UserGroups", [])] + \
            [{"UserId": u} for u in p.get("UserIds", [])]
        (add if p.get("OperationType") == "add" else remove).extend(entries)
    for entry in add + remove:
        if entry.get("UserId") or entry.get("Group") != "all":
            raise Ec2Error("InvalidParameterValue", "Launch permission goes to group all only "
                           "(public or private): this cloud does not share with single accounts")
    if add and remove:
        raise Ec2Error("InvalidParameterCombination", "Add and Remove launch permission at once")
    return bool(add), bool(remove)
