"""Images: the disks users register in a datastore before creating VMs.

An image registered in a datastore whose DS_MAD is a driver (`fs`) starts LOCKED with an
ImageJob (`cp` of its PATH, `mkfs` of an empty DATABLOCK) that the daemon runs
(core.image_copies); DS_MAD `dummy` registers it in place, READY at once, as does a SOURCE
given in the template.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core import template
from core.errors import Conflict, Forbidden, InvalidRequest, NotFound
from core.image_copies import DATASTORES, ERROR, copies
from core.models import (
    DEFAULT_DATASTORE_ID,
    IMAGE_DISABLED,
    IMAGE_ERROR,
    IMAGE_LOCKED,
    IMAGE_READY,
    IMAGE_USED,
    Datastore,
    Image,
    ImageJob,
)
from core.service import tokens
from core.service.access import ALL, fetch, id_range, restrict
from core.service.context import Caller, Cloud

IMAGE_TYPES = {"OS": 0, "CDROM": 1, "DATABLOCK": 2}


def create_image(cloud: Cloud, caller: Caller, *, text: str,
                 datastore_id: int = DEFAULT_DATASTORE_ID, name_from_id: str = "",
                 token: str = "", fingerprint: str = "") -> int:
    """Register an image. Without a NAME, `name_from_id` (a format string with `{id}`)
    names it after its id. With a `token` the call is idempotent (core.service.tokens)."""
    return _register(cloud, caller, template.parse(text), datastore_id=datastore_id,
                     name_from_id=name_from_id, token=token, fingerprint=fingerprint)


@dataclass(frozen=True)
class _Origin:
    """The image a clone copies: its id, and its datastore's dir when the datastore
    stored its file there (the copy may read it, restricted dirs or not)."""

    image_id: int
    safe_dir: str


def _register(cloud: Cloud, caller: Caller, tmpl: template.Template, *, datastore_id: int,
              name_from_id: str, token: str, fingerprint: str,
              origin: _Origin | None = None) -> int:
    image = _checked(tmpl, named=not name_from_id)
    name = image.name
    if token:
        done = tokens.earlier(cloud, caller, token=token, kind="image", fingerprint=fingerprint)
        if done is not None:
            return done.first_id
    try:
        with cloud.session() as s:
            request = tokens.record(s, caller, token=token, kind="image",
                                    fingerprint=fingerprint) if token else None
            copy = _place(s, caller, image, tmpl, _image_datastore(s, datastore_id))
            s.add(image)
            s.flush()
            assert image.id is not None
            if copy:
                s.add(ImageJob(image_id=image.id, datastore_id=datastore_id,
                               action="cp" if image.path else "mkfs",
                               origin_id=origin.image_id if origin else None,
                               safe_dir=origin.safe_dir if origin else ""))
            if not name:
                image.name = name_from_id.format(id=image.id)
                tmpl.set("NAME", image.name)
                image.template = tmpl.dumps()
            if request is not None:
                request.first_id = image.id
                s.add(request)
            image_id = image.id
    except IntegrityError:
        if token:
            done = tokens.earlier(cloud, caller, token=token, kind="image",
                                  fingerprint=fingerprint)
            if done is not None:
                return done.first_id
        raise
    if copy:
        cloud.wakeups.notify(DATASTORES)
    return image_id


def _checked(tmpl: template.Template, *, named: bool) -> Image:
    """An image row from its template, attributes checked; not yet owned nor placed."""
    name = template.required_name(tmpl, "image") if named else (tmpl.get("NAME") or "").strip()
    type_name = (tmpl.get("TYPE") or "OS").upper()
    if type_name not in IMAGE_TYPES:
        raise InvalidRequest(f"image TYPE must be one of {', '.join(IMAGE_TYPES)}, not {type_name}")
    path = tmpl.get("PATH") or ""
    size = tmpl.get("SIZE") or "0"
    if not size.isdigit():
        raise InvalidRequest(f"image SIZE must be a number of MB, not {size!r}")
    if not (tmpl.get("SOURCE") or path) and type_name != "DATABLOCK":
        raise InvalidRequest("an OS or CDROM image needs a PATH (or SOURCE)")
    if type_name == "DATABLOCK" and not (tmpl.get("SOURCE") or path) and int(size) <= 0:
        raise InvalidRequest("an empty DATABLOCK image needs a SIZE in MB")
    return Image(name=name, uid=-1, gid=-1, type=IMAGE_TYPES[type_name], path=path,
                 persistent=(tmpl.get("PERSISTENT") or "NO").upper() in ("YES", "TRUE", "1"),
                 size_mb=int(size), fstype=tmpl.get("FSTYPE") or "", template=tmpl.dumps())


def _place(s: Session, caller: Caller, image: Image, tmpl: template.Template,
           ds: Datastore) -> bool:
    """Give the image its owner and datastore: LOCKED when the datastore's driver copies
    it in (True), else READY where it is."""
    if image.name:
        dup = s.exec(select(Image).where(Image.uid == caller.uid, Image.name == image.name)).first()
        if dup is not None:
            raise Conflict(f"you already have an image named {image.name} (id {dup.id})")
    image.name = image.name or f"~{uuid.uuid4().hex}"  # until it is named after its id
    image.uid, image.gid, image.datastore_id = caller.uid, caller.gid, ds.id or 0
    copy = copies(ds) and not tmpl.get("SOURCE")
    image.state = IMAGE_LOCKED if copy else IMAGE_READY
    if not copy:
        image.source = _in_place(tmpl, ds)
        path = image.path
        if path and not path.startswith(("http://", "https://")) and Path(path).is_file():
            image.size_mb = image.size_mb or max(1, Path(path).stat().st_size >> 20)
    return copy


def _image_datastore(s: Session, datastore_id: int) -> Datastore:
    ds = s.get(Datastore, datastore_id)
    if ds is None:
        raise NotFound("datastore", datastore_id)
    if ds.system:
        raise InvalidRequest(f"datastore {ds.name} is a system datastore; images go elsewhere")
    return ds


def _in_place(tmpl: template.Template, ds: Datastore) -> str:
    """The SOURCE of an image registered where it is: its SOURCE, else its PATH, else (an
    empty datablock) its place in the datastore."""
    return tmpl.get("SOURCE") or tmpl.get("PATH") or f"{ds.base_path}/{uuid.uuid4().hex}"


def clone_image(cloud: Cloud, caller: Caller, *, image_id: int, changes: template.Template,
                name_from_id: str = "", token: str = "", fingerprint: str = "") -> int:
    """A new image with the original's contents, kind and size, plus `changes` (NAME,
    PERSISTENT, TYPE, SIZE, other attributes). OpenNebula 4's one.image.clone.

    In a datastore with a driver the contents are copied (`cp` from the original's SOURCE,
    the clone LOCKED meanwhile, the original not deletable); in a `dummy` one the clone
    shares the original's SOURCE. Every other attribute is the clone's own."""
    original = get_image(cloud, caller, image_id=image_id)
    if original.state not in (IMAGE_READY, IMAGE_USED):
        raise InvalidRequest(f"image {original.name} is not ready to be copied")
    with cloud.session() as s:
        ds = _image_datastore(s, original.datastore_id)
    copy = copies(ds)
    spec = template.Template([
        ("TYPE", next(k for k, v in IMAGE_TYPES.items() if v == original.type)),
        ("PATH" if copy else "SOURCE", original.source), ("SIZE", str(original.size_mb)),
        ("PERSISTENT", "YES" if original.persistent else "NO"),
    ])
    if original.fstype:
        spec.set("FSTYPE", original.fstype)
    spec.merge(changes)
    origin = _Origin(image_id, ds.base_path if original.stored else "") if copy else None
    return _register(cloud, caller, spec, datastore_id=original.datastore_id,
                     name_from_id=name_from_id, token=token, fingerprint=fingerprint,
                     origin=origin)


def usable(session: Session, image_id: int, caller: Caller, *, lock: bool = False,
           as_disk: bool = False) -> Image:
    """An image the caller may read and use: its own, or a public one (only its owner
    changes it; `fetch` checks that). `as_disk`: a persistent image is written by the VM
    using it, so only its owner's VMs may; and one still being copied into its datastore,
    or whose copy failed, is refused (OpenNebula's acquire_image)."""
    image = session.get(Image, image_id, with_for_update=lock)
    if image is None:
        raise NotFound("image", image_id)
    if not (caller.owns(image.uid) or image.public):
        raise Forbidden(f"user {caller.name} is not authorized to use image {image_id}")
    if as_disk and image.persistent and not caller.owns(image.uid):
        raise Forbidden(f"image {image.name} is persistent: only its owner's VMs use it")
    if as_disk:
        copied(image)
    return image


def copied(image: Image) -> None:
    """Refuse an image that is LOCKED (being copied into its datastore) or in ERROR."""
    if image.state == IMAGE_LOCKED:
        raise InvalidRequest(f"image {image.id} is being copied into its datastore: use it "
                             "once it is READY")
    if image.state == IMAGE_ERROR:
        error = template.parse(image.template).get(ERROR) or "no reason recorded"
        raise InvalidRequest(f"image {image.id} failed: {error}")


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
    """Delete the image; the datastore driver's `rm` removes the file it stored (never an
    image registered in place). A copy under way finishes first and is then removed."""
    with cloud.session() as s:
        image = fetch(s, Image, image_id, caller, "image", lock=True)
        if image.running_vms > 0:
            raise Conflict(f"image {image.name} is used by {image.running_vms} VM(s)")
        if s.exec(select(ImageJob.id).where(ImageJob.origin_id == image_id)).first():
            raise Conflict(f"image {image.name} is being cloned: delete it once the copy "
                           "is done")
        job = s.exec(select(ImageJob).where(ImageJob.image_id == image_id)
                     .with_for_update()).first()
        if job is not None and job.status == "pending":
            s.delete(job)  # nothing ran yet
        remove = image.stored and bool(image.source)
        if remove:
            s.add(ImageJob(image_id=image_id, datastore_id=image.datastore_id, action="rm",
                           source=image.source))
        s.delete(image)
    if remove:
        cloud.wakeups.notify(DATASTORES)


def enable_image(cloud: Cloud, caller: Caller, *, image_id: int, enable: bool) -> None:
    with cloud.session() as s:
        image = fetch(s, Image, image_id, caller, "image")
        if image.state == IMAGE_USED:
            raise Conflict(f"image {image.name} is in use")
        if image.state in (IMAGE_LOCKED, IMAGE_ERROR):
            raise Conflict(f"image {image.name} is {'LOCKED' if image.state == IMAGE_LOCKED else 'in ERROR'}"
                           ": only a READY or DISABLED image is enabled or disabled")
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
