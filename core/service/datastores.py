"""Datastores: where images are stored, each with the drivers that handle it. The system
datastore (id 0) holds the VMs' directories, the default one (id 1) the images registered
without another; DS_MAD chooses how images come in (a driver that copies them, or `dummy`:
used where they are), TM_MAD how they reach the hosts. Only oneadmin creates, changes and
deletes them.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlmodel import col, select

from core import template
from core.errors import Conflict, Forbidden, InvalidRequest, NotFound
from core.image_copies import IN_PLACE
from core.models import DEFAULT_DATASTORE_ID, SYSTEM_DATASTORE_ID, Datastore, Image, ImageJob
from core.service.context import Caller, Cloud


def bootstrap_datastores(cloud: Cloud) -> None:
    """The system and default datastores, on first start; the default one's DS_MAD is
    nubo.conf's DEFAULT_DS_MAD (an existing row keeps its own)."""
    ds_mad = _ds_mad(cloud, cloud.config.default_ds_mad, "nubo.conf: DEFAULT_DS_MAD: ")
    with cloud.session() as s:
        if s.get(Datastore, SYSTEM_DATASTORE_ID) is None:
            s.add(Datastore(id=SYSTEM_DATASTORE_ID, name="system", system=True,
                            base_path=cloud.config.datastores + "/0"))
            s.add(Datastore(id=DEFAULT_DATASTORE_ID, name="default", ds_mad=ds_mad,
                            base_path=cloud.config.datastores + "/1"))
            s.flush()
        if s.get_bind().dialect.name == "postgresql":  # ids given above leave it behind
            s.execute(text("SELECT setval(pg_get_serial_sequence('datastore', 'id'), "
                           "(SELECT MAX(id) FROM datastore))"))


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
    name = template.required_name(tmpl, "datastore")
    tm_mad = _tm_mad(cloud, tmpl.get("TM_MAD") or "dummy")
    ds_mad = _ds_mad(cloud, tmpl.get("DS_MAD") or "fs")
    with cloud.session() as s:
        if s.exec(select(Datastore).where(Datastore.name == name)).first() is not None:
            raise Conflict(f"datastore {name} already exists")
        ds = Datastore(name=name, ds_mad=ds_mad, tm_mad=tm_mad, template=tmpl.dumps())
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
        ds.ds_mad = _ds_mad(cloud, tmpl.get("DS_MAD") or ds.ds_mad)
        ds.template = tmpl.dumps()
        s.add(ds)


def _tm_mad(cloud: Cloud, tm_mad: str) -> str:
    folder = cloud.config.remotes / "tm" / tm_mad
    if "/" in tm_mad or tm_mad.startswith(".") or not folder.is_dir():
        raise InvalidRequest(f"no TM driver {tm_mad!r}: {folder} does not exist")
    return tm_mad


def _ds_mad(cloud: Cloud, ds_mad: str, context: str = "") -> str:
    """`dummy` (images used in place), or a folder of datastore actions."""
    folder = cloud.config.remotes / "datastore" / ds_mad
    if ds_mad != IN_PLACE and ("/" in ds_mad or ds_mad.startswith(".") or not folder.is_dir()):
        raise InvalidRequest(f"{context}no DS driver {ds_mad!r}: {folder} does not exist "
                             f"(or use {IN_PLACE}: images registered in place)")
    return ds_mad


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
        if s.exec(select(ImageJob.id).where(ImageJob.datastore_id == datastore_id)).first():
            raise Conflict(f"datastore {ds.name} is still removing image files")
        s.delete(ds)
