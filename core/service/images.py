"""Images, datastores and VM templates: what users register before creating VMs."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core import template
from core.errors import Conflict, Forbidden, InvalidRequest, NotFound
from core.models import (
    DEFAULT_DATASTORE_ID,
    IMAGE_DISABLED,
    IMAGE_READY,
    IMAGE_USED,
    SYSTEM_DATASTORE_ID,
    Datastore,
    Image,
    VMTemplate,
)
from core.service import tokens
from core.service.access import ALL, fetch, id_range, restrict
from core.service.context import Caller, Cloud

IMAGE_TYPES = {"OS": 0, "CDROM": 1, "DATABLOCK": 2}


def bootstrap_datastores(cloud: Cloud) -> None:
    with cloud.session() as s:
        if s.get(Datastore, SYSTEM_DATASTORE_ID) is None:
            s.add(Datastore(id=SYSTEM_DATASTORE_ID, name="system", system=True,
                            base_path=cloud.config.datastores + "/0"))
            s.add(Datastore(id=DEFAULT_DATASTORE_ID, name="default",
                            base_path=cloud.config.datastores + "/1"))


def _name(tmpl: template.Template, kind: str) -> str:
    name = (tmpl.get("NAME") or "").strip()
    if not name:
        raise InvalidRequest(f"the {kind} template needs a NAME")
    return name


def create_image(cloud: Cloud, caller: Caller, *, text: str,
                 datastore_id: int = DEFAULT_DATASTORE_ID, name_from_id: str = "",
                 token: str = "", fingerprint: str = "") -> int:
    """Register an image. Without a NAME, `name_from_id` (a format string with `{id}`)
    names it after its id. With a `token` the call is idempotent (core.service.tokens)."""
    tmpl = template.parse(text)
    name = (tmpl.get("NAME") or "").strip() if name_from_id else _name(tmpl, "image")
    type_name = (tmpl.get("TYPE") or "OS").upper()
    if type_name not in IMAGE_TYPES:
        raise InvalidRequest(f"image TYPE must be one of {', '.join(IMAGE_TYPES)}, not {type_name}")
    path = tmpl.get("PATH") or ""
    source = tmpl.get("SOURCE") or path
    size = tmpl.get("SIZE") or "0"
    if not size.isdigit():
        raise InvalidRequest(f"image SIZE must be a number of MB, not {size!r}")
    if not source and type_name != "DATABLOCK":
        raise InvalidRequest("an OS or CDROM image needs a PATH (or SOURCE)")
    if type_name == "DATABLOCK" and not source and int(size) <= 0:
        raise InvalidRequest("an empty DATABLOCK image needs a SIZE in MB")
    size_mb = int(size)
    if path and not path.startswith(("http://", "https://")) and Path(path).is_file():
        size_mb = size_mb or max(1, Path(path).stat().st_size >> 20)
    persistent = (tmpl.get("PERSISTENT") or "NO").upper() in ("YES", "TRUE", "1")
    if token:
        done = tokens.earlier(cloud, caller, token=token, kind="image", fingerprint=fingerprint)
        if done is not None:
            return done.first_id
    try:
        with cloud.session() as s:
            request = tokens.record(s, caller, token=token, kind="image",
                                    fingerprint=fingerprint) if token else None
            ds = s.get(Datastore, datastore_id)
            if ds is None:
                raise NotFound("datastore", datastore_id)
            if ds.system:
                raise InvalidRequest(f"datastore {ds.name} is a system datastore; images go "
                                     "elsewhere")
            if name:
                dup = s.exec(select(Image).where(Image.uid == caller.uid,
                                                 Image.name == name)).first()
                if dup is not None:
                    raise Conflict(f"you already have an image named {name} (id {dup.id})")
            if not source:  # an empty datablock: its place in the datastore (OpenNebula's SOURCE)
                source = f"{ds.base_path}/{uuid.uuid4().hex}"
            image = Image(
                name=name or f"~{uuid.uuid4().hex}", uid=caller.uid, gid=caller.gid,
                type=IMAGE_TYPES[type_name], persistent=persistent, path=path, source=source,
                size_mb=size_mb, fstype=tmpl.get("FSTYPE") or "", datastore_id=datastore_id,
                template=tmpl.dumps(),
            )
            s.add(image)
            s.flush()
            assert image.id is not None
            if not name:
                image.name = name_from_id.format(id=image.id)
                tmpl.set("NAME", image.name)
                image.template = tmpl.dumps()
            if request is not None:
                request.first_id = image.id
                s.add(request)
            return image.id
    except IntegrityError:
        if token:
            done = tokens.earlier(cloud, caller, token=token, kind="image",
                                  fingerprint=fingerprint)
            if done is not None:
                return done.first_id
        raise


def clone_image(cloud: Cloud, caller: Caller, *, image_id: int, changes: template.Template,
                name_from_id: str = "", token: str = "", fingerprint: str = "") -> int:
    """A new image with the original's contents, kind and size, plus `changes` (NAME,
    PERSISTENT, TYPE, SIZE, other attributes). OpenNebula 4's one.image.clone.

    The copy shares the original's SOURCE until datastore drivers copy image files (the
    real-hosts issue adds them); every other attribute is the clone's own."""
    original = get_image(cloud, caller, image_id=image_id)
    if original.state not in (IMAGE_READY, IMAGE_USED):
        raise InvalidRequest(f"image {original.name} is not ready to be copied")
    spec = template.Template([
        ("TYPE", next(k for k, v in IMAGE_TYPES.items() if v == original.type)),
        ("SOURCE", original.source), ("SIZE", str(original.size_mb)),
        ("PERSISTENT", "YES" if original.persistent else "NO"),
    ])
    if original.fstype:
        spec.set("FSTYPE", original.fstype)
    spec.merge(changes)
    return create_image(cloud, caller, text=spec.dumps(), datastore_id=original.datastore_id,
                        name_from_id=name_from_id, token=token, fingerprint=fingerprint)


def usable(session: Session, image_id: int, caller: Caller, *, lock: bool = False,
           as_disk: bool = False) -> Image:
    """An image the caller may read and use: its own, or a public one (only its owner
    changes it; `fetch` checks that). `as_disk`: a persistent image is written by the VM
    using it, so only its owner's VMs may."""
    image = session.get(Image, image_id, with_for_update=lock)
    if image is None:
        raise NotFound("image", image_id)
    if not (caller.owns(image.uid) or image.public):
        raise Forbidden(f"user {caller.name} is not authorized to use image {image_id}")
    if as_disk and image.persistent and not caller.owns(image.uid):
        raise Forbidden(f"image {image.name} is persistent: only its owner's VMs use it")
    return image


def get_image(cloud: Cloud, caller: Caller, *, image_id: int) -> Image:
    with cloud.session() as s:
        return usable(s, image_id, caller)


def list_images(cloud: Cloud, caller: Caller, *, flag: int = ALL, start: int = -1,
                end: int = -1) -> list[Image]:
    """OpenNebula's pool filter; "all" (-2) also shows other users' public images."""
    with cloud.session() as s:
        if flag == ALL and not caller.admin:
            query = select(Image).where((col(Image.uid) == caller.uid) | col(Image.public))
        else:
            query = restrict(select(Image), Image, caller, flag)
        query = id_range(query, Image, start, end)
        return list(s.exec(query.order_by(col(Image.id))))


def publish_image(cloud: Cloud, caller: Caller, *, image_id: int, public: bool) -> None:
    """Let every user see and use the image (or stop letting them)."""
    with cloud.session() as s:
        image = fetch(s, Image, image_id, caller, "image", lock=True)
        image.public = public
        s.add(image)


def find_image(cloud: Cloud, caller: Caller, *, ref: str) -> int:
    if ref.isdigit():
        return int(ref)
    with cloud.session() as s:
        query = restrict(select(Image).where(Image.name == ref), Image, caller)
        found = list(s.exec(query))
        own = [i for i in found if i.uid == caller.uid] or found
        if not own or own[0].id is None:
            raise NotFound("image", ref)
        return int(own[0].id)


def delete_image(cloud: Cloud, caller: Caller, *, image_id: int) -> None:
    with cloud.session() as s:
        image = fetch(s, Image, image_id, caller, "image")
        if image.running_vms > 0:
            raise Conflict(f"image {image.name} is used by {image.running_vms} VM(s)")
        s.delete(image)


def enable_image(cloud: Cloud, caller: Caller, *, image_id: int, enable: bool) -> None:
    with cloud.session() as s:
        image = fetch(s, Image, image_id, caller, "image")
        if image.state == IMAGE_USED:
            raise Conflict(f"image {image.name} is in use")
        image.state = IMAGE_READY if enable else IMAGE_DISABLED
        s.add(image)


def persistent_image(cloud: Cloud, caller: Caller, *, image_id: int, persistent: bool) -> None:
    with cloud.session() as s:
        image = fetch(s, Image, image_id, caller, "image")
        if image.running_vms > 0:
            raise Conflict(f"image {image.name} is in use; release it first")
        image.persistent = persistent
        s.add(image)


def chtype_image(cloud: Cloud, caller: Caller, *, image_id: int, type_name: str) -> None:
    type_name = type_name.upper()
    if type_name not in IMAGE_TYPES:
        raise InvalidRequest(f"image type must be one of {', '.join(IMAGE_TYPES)}")
    with cloud.session() as s:
        image = fetch(s, Image, image_id, caller, "image")
        image.type = IMAGE_TYPES[type_name]
        s.add(image)


def update_image(cloud: Cloud, caller: Caller, *, image_id: int, name: str | None = None,
                 description: str | None = None, size_mb: int | None = None) -> None:
    """Rename, describe or resize an image (a size change only for an unused DATABLOCK)."""
    with cloud.session() as s:
        image = fetch(s, Image, image_id, caller, "image", lock=True)
        tmpl = template.parse(image.template)
        if name is not None and name != image.name:
            name = name.strip()
            if not name:
                raise InvalidRequest("an image name cannot be empty")
            if s.exec(select(Image.id).where(Image.uid == image.uid, Image.name == name)).first():
                raise Conflict(f"you already have an image named {name}")
            image.name = name
            tmpl.set("NAME", name)
        if description is not None:
            tmpl.set("DESCRIPTION", description)
        if size_mb is not None and size_mb != image.size_mb:
            if image.type != IMAGE_TYPES["DATABLOCK"] or image.running_vms > 0:
                raise Conflict(f"image {image.name}: only an unused DATABLOCK changes size")
            if size_mb <= 0:
                raise InvalidRequest("an image size is a positive number of MB")
            image.size_mb = size_mb
            tmpl.set("SIZE", str(size_mb))
        image.template = tmpl.dumps()
        s.add(image)


def list_datastores(cloud: Cloud, caller: Caller) -> list[tuple[Datastore, list[int]]]:
    with cloud.session() as s:
        stores = list(s.exec(select(Datastore).order_by(col(Datastore.id))))
        images: dict[int, list[int]] = {}
        for image_id, ds_id in s.exec(select(Image.id, Image.datastore_id)):
            if image_id is not None:
                images.setdefault(ds_id, []).append(image_id)
        return [(d, images.get(d.id or 0, [])) for d in stores]


def get_datastore(cloud: Cloud, caller: Caller, *, datastore_id: int) -> tuple[Datastore, list[int]]:
    for ds, images in list_datastores(cloud, caller):
        if ds.id == datastore_id:
            return ds, images
    raise NotFound("datastore", datastore_id)


def create_datastore(cloud: Cloud, caller: Caller, *, text: str) -> int:
    if not caller.admin:
        raise Forbidden("only members of group oneadmin may create datastores")
    tmpl = template.parse(text)
    name = _name(tmpl, "datastore")
    tm_mad = _tm_mad(cloud, tmpl.get("TM_MAD") or "dummy")
    with cloud.session() as s:
        if s.exec(select(Datastore).where(Datastore.name == name)).first() is not None:
            raise Conflict(f"datastore {name} already exists")
        ds = Datastore(name=name, ds_mad=tmpl.get("DS_MAD") or "fs", tm_mad=tm_mad,
                       template=tmpl.dumps())
        s.add(ds)
        s.flush()
        assert ds.id is not None
        ds.base_path = f"{cloud.config.datastores}/{ds.id}"
        return ds.id


def update_datastore(cloud: Cloud, caller: Caller, *, datastore_id: int, text: str,
                     merge: bool = False) -> None:
    """Replace a datastore's template, or merge `text` into it (OpenNebula's
    one.datastore.update): TM_MAD and DS_MAD in it choose its drivers from then on; the
    system datastore's TM_MAD is the one that makes each VM's directory, context CD and
    swap."""
    if not caller.admin:
        raise Forbidden("only members of group oneadmin may update datastores")
    new = template.parse(text)
    with cloud.session() as s:
        ds = s.get(Datastore, datastore_id, with_for_update=True)
        if ds is None:
            raise NotFound("datastore", datastore_id)
        tmpl = template.updated(ds.template, new, merge=merge)
        ds.tm_mad = _tm_mad(cloud, tmpl.get("TM_MAD") or ds.tm_mad)
        ds.ds_mad = tmpl.get("DS_MAD") or ds.ds_mad
        ds.template = tmpl.dumps()
        s.add(ds)


def _tm_mad(cloud: Cloud, tm_mad: str) -> str:
    folder = cloud.config.remotes / "tm" / tm_mad
    if "/" in tm_mad or tm_mad.startswith(".") or not folder.is_dir():
        raise InvalidRequest(f"no TM driver {tm_mad!r}: {folder} does not exist")
    return tm_mad


def delete_datastore(cloud: Cloud, caller: Caller, *, datastore_id: int) -> None:
    if not caller.admin:
        raise Forbidden("only members of group oneadmin may delete datastores")
    with cloud.session() as s:
        ds = s.get(Datastore, datastore_id)
        if ds is None:
            raise NotFound("datastore", datastore_id)
        if datastore_id in (SYSTEM_DATASTORE_ID, DEFAULT_DATASTORE_ID):
            raise Forbidden(f"datastore {ds.name} is built in")
        if s.exec(select(Image.id).where(Image.datastore_id == datastore_id)).first() is not None:
            raise Conflict(f"datastore {ds.name} still holds images")
        s.delete(ds)


# --- VM templates ---

def create_template(cloud: Cloud, caller: Caller, *, text: str) -> int:
    tmpl = template.parse(text)
    name = _name(tmpl, "VM")
    with cloud.session() as s:
        row = VMTemplate(name=name, uid=caller.uid, gid=caller.gid, template=tmpl.dumps())
        s.add(row)
        s.flush()
        assert row.id is not None
        return int(row.id)


def get_template(cloud: Cloud, caller: Caller, *, template_id: int) -> VMTemplate:
    with cloud.session() as s:
        return fetch(s, VMTemplate, template_id, caller, "template")


def list_templates(cloud: Cloud, caller: Caller, *, flag: int = ALL, start: int = -1,
                   end: int = -1) -> list[VMTemplate]:
    with cloud.session() as s:
        query = restrict(select(VMTemplate), VMTemplate, caller, flag)
        query = id_range(query, VMTemplate, start, end)
        return list(s.exec(query.order_by(col(VMTemplate.id))))


def find_template(cloud: Cloud, caller: Caller, *, ref: str) -> int:
    if ref.isdigit():
        return int(ref)
    with cloud.session() as s:
        query = restrict(select(VMTemplate).where(VMTemplate.name == ref), VMTemplate, caller)
        row = s.exec(query).first()
        if row is None or row.id is None:
            raise NotFound("template", ref)
        return int(row.id)


def update_template(cloud: Cloud, caller: Caller, *, template_id: int, text: str,
                    merge: bool = False) -> None:
    given = template.parse(text)
    with cloud.session() as s:
        row = fetch(s, VMTemplate, template_id, caller, "template")
        new = template.updated(row.template, given, merge=merge)
        row.name = new.get("NAME") or row.name
        row.template = new.dumps()
        s.add(row)


def delete_template(cloud: Cloud, caller: Caller, *, template_id: int) -> None:
    with cloud.session() as s:
        s.delete(fetch(s, VMTemplate, template_id, caller, "template"))
