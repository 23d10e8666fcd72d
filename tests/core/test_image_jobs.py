"""Image jobs in the database (core.image_copies, core.service.images and .datastores),
without a daemon: what registering, cloning and deleting queue, the document the driver
gets, how an outcome is recorded, and what a restart finds. The drivers themselves run in
tests/e2e/test_datastores.py.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import col, select

from core import template
from core.config import Config, apply_text
from core.errors import Conflict, InvalidRequest
from core.image_copies import ImageCopies
from core.models import IMAGE_ERROR, IMAGE_LOCKED, IMAGE_READY, Datastore, Image, ImageJob
from core.service import datastores, images, vms
from core.service.context import Cloud
from tests.core.clouds import ADMIN, make_cloud


@pytest.fixture
def cloud(db_url: str, tmp_path: Path) -> Iterator[Cloud]:
    for driver in ("datastore/fs", "tm/dummy"):
        (tmp_path / "remotes" / driver).mkdir(parents=True)
    made = make_cloud(db_url, tmp_path, default_ds_mad="fs", ds_concurrency=1)  # one at a time
    try:
        yield made
    finally:
        made.engine.dispose()


def jobs(cloud: Cloud) -> list[ImageJob]:
    with cloud.session() as s:
        return list(s.exec(select(ImageJob).order_by(col(ImageJob.id))))


def image(cloud: Cloud, image_id: int) -> Image:
    return images.get_image(cloud, ADMIN, image_id=image_id)


def worker(cloud: Cloud) -> ImageCopies:
    return ImageCopies(cloud, drivers=None)  # type: ignore[arg-type]  # no driver runs here


def sent(cloud: Cloud) -> ET.Element:
    """Claim the next job; the DS_DRIVER_ACTION_DATA the driver would get."""
    w = worker(cloud)
    (job_id,) = w._claim()
    work = w._load(job_id)
    assert work is not None
    return ET.fromstring(base64.b64decode(work.data))


def test_the_settings() -> None:
    cfg = Config(var=Path("/v"))
    assert (cfg.default_ds_mad, cfg.ds_concurrency, cfg.ds_timeout) == ("fs", 4, 7200.0)
    apply_text(cfg, "DEFAULT_DS_MAD = dummy\nDS_CONCURRENCY = 2\nDS_TIMEOUT = 60\n")
    assert (cfg.default_ds_mad, cfg.ds_concurrency, cfg.ds_timeout) == ("dummy", 2, 60.0)


def test_the_default_datastore_takes_default_ds_mad_once(cloud: Cloud) -> None:
    assert datastores.get_datastore(cloud, ADMIN, datastore_id=1)[0].ds_mad == "fs"
    cloud.config.default_ds_mad = "dummy"  # a restart with a new setting
    datastores.bootstrap_datastores(cloud)
    assert datastores.get_datastore(cloud, ADMIN, datastore_id=1)[0].ds_mad == "fs"
    cloud.config.default_ds_mad = "nope"
    with pytest.raises(InvalidRequest, match="nubo.conf: DEFAULT_DS_MAD: no DS driver 'nope'"):
        datastores.bootstrap_datastores(cloud)
    with pytest.raises(InvalidRequest, match="no DS driver"):
        datastores.create_datastore(cloud, ADMIN, text='NAME = "x"\nDS_MAD = "../bin"\n')


def test_registering_queues_cp_or_mkfs_and_locks(cloud: Cloud) -> None:
    copied = images.create_image(cloud, ADMIN, text='NAME = "a"\nPATH = "/srv/a.img"\n')
    empty = images.create_image(cloud, ADMIN, text='NAME = "b"\nTYPE = DATABLOCK\nSIZE = 8\n')
    given = images.create_image(cloud, ADMIN, text='NAME = "c"\nSOURCE = "/srv/c.img"\n')
    assert [(j.image_id, j.action, j.status) for j in jobs(cloud)] == [
        (copied, "cp", "pending"), (empty, "mkfs", "pending")]
    assert (image(cloud, copied).state, image(cloud, copied).source) == (IMAGE_LOCKED, "")
    assert (image(cloud, given).state, image(cloud, given).source) == (IMAGE_READY, "/srv/c.img")
    for ref in (f"IMAGE_ID = {copied}", 'IMAGE = "a"'):
        with pytest.raises(InvalidRequest, match=f"image {copied} is being copied"):
            vms.create_vm(cloud, ADMIN, text=f"MEMORY = 64\nCPU = 1\nDISK = [ {ref} ]\n")
    with pytest.raises(Conflict, match="LOCKED"):
        images.enable_image(cloud, ADMIN, image_id=copied, enable=True)

    ds = datastores.create_datastore(cloud, ADMIN, text='NAME = "here"\nDS_MAD = "dummy"\n')
    here = images.create_image(cloud, ADMIN, text='NAME = "d"\nPATH = "/srv/d.img"\n',
                               datastore_id=ds)
    assert (image(cloud, here).state, image(cloud, here).source) == (IMAGE_READY, "/srv/d.img")
    assert len(jobs(cloud)) == 2


def test_the_document_carries_the_restricted_and_safe_dirs(cloud: Cloud) -> None:
    ds = datastores.create_datastore(cloud, ADMIN, text=(
        'NAME = "guarded"\nDS_MAD = "fs"\nRESTRICTED_DIRS = "/srv /home/x"\n'
        'SAFE_DIRS = "/srv/ok"\n'))
    images.create_image(cloud, ADMIN, text='NAME = "a"\nPATH = "/srv/ok/a.img"\n',
                        datastore_id=ds)
    doc = sent(cloud)
    assert doc.tag == "DS_DRIVER_ACTION_DATA"
    assert (doc.findtext("IMAGE/PATH"), doc.findtext("DATASTORE/DS_MAD")) == ("/srv/ok/a.img", "fs")
    cfg = cloud.config
    assert (doc.findtext("DATASTORE/TEMPLATE/RESTRICTED_DIRS") or "").split() == [
        "/srv", "/home/x", str(cfg.var), cfg.datastores]
    assert doc.findtext("DATASTORE/TEMPLATE/SAFE_DIRS") == "/srv/ok"
    assert doc.findtext("DATASTORE/BASE_PATH") == f"{cfg.datastores}/{ds}"
    # the datastore's own template is unchanged
    stored = datastores.get_datastore(cloud, ADMIN, datastore_id=ds)[0]
    assert template.parse(stored.template).get("RESTRICTED_DIRS") == "/srv /home/x"

    images.create_image(cloud, ADMIN, text='NAME = "b"\nTYPE = DATABLOCK\nSIZE = 8\n')
    doc = sent(cloud)
    assert (doc.findtext("IMAGE/SIZE"), doc.findtext("IMAGE/FSTYPE")) == ("8", "raw")


def finish(cloud: Cloud, ok: bool, stdout: str = "", error: str = "") -> bool:
    w = worker(cloud)
    (job_id,) = w._claim()
    return w._record(job_id, ok, stdout, error)


def test_an_outcome_makes_the_image_ready_or_error(cloud: Cloud) -> None:
    good = images.create_image(cloud, ADMIN, text='NAME = "a"\nPATH = "/srv/a.img"\n')
    bad = images.create_image(cloud, ADMIN, text='NAME = "b"\nPATH = "/srv/b.img"\n')
    odd = images.create_image(cloud, ADMIN, text='NAME = "c"\nPATH = "/srv/c.img"\n')
    assert not finish(cloud, True, "INFO chatter\n/store/1/with space 12\n")
    row = image(cloud, good)
    assert (row.state, row.source, row.size_mb, row.stored) == (
        IMAGE_READY, "/store/1/with space", 12, True)
    finish(cloud, False, error="the image file /srv/b.img does not exist")
    row = image(cloud, bad)
    assert (row.state, row.source, row.stored) == (IMAGE_ERROR, "", False)
    assert template.parse(row.template).get("ERROR") == "the image file /srv/b.img does not exist"
    with pytest.raises(InvalidRequest, match=f"image {bad} failed: the image file"):
        vms.create_vm(cloud, ADMIN, text=f"MEMORY = 64\nCPU = 1\nDISK = [ IMAGE_ID = {bad} ]\n")
    finish(cloud, True, "")  # success with nothing printed: no SOURCE to use
    assert image(cloud, odd).state == IMAGE_ERROR
    assert "not SOURCE SIZE_MB" in (template.parse(image(cloud, odd).template).get("ERROR") or "")
    assert jobs(cloud) == []


def test_delete_queues_rm_only_for_what_the_datastore_stored(cloud: Cloud) -> None:
    stored = images.create_image(cloud, ADMIN, text='NAME = "a"\nPATH = "/srv/a.img"\n')
    finish(cloud, True, "/store/1/abc 3\n")
    in_place = images.create_image(cloud, ADMIN, text='NAME = "b"\nSOURCE = "/srv/b.img"\n')
    pending = images.create_image(cloud, ADMIN, text='NAME = "c"\nPATH = "/srv/c.img"\n')
    images.delete_image(cloud, ADMIN, image_id=in_place)
    images.delete_image(cloud, ADMIN, image_id=pending)  # its cp had not started: dropped
    assert jobs(cloud) == []
    images.delete_image(cloud, ADMIN, image_id=stored)
    assert [(j.image_id, j.action, j.source) for j in jobs(cloud)] == [(stored, "rm", "/store/1/abc")]
    assert not finish(cloud, True)
    assert jobs(cloud) == []


def test_an_image_deleted_during_its_copy_loses_the_copy(cloud: Cloud) -> None:
    doomed = images.create_image(cloud, ADMIN, text='NAME = "a"\nPATH = "/srv/a.img"\n')
    w = worker(cloud)
    (job_id,) = w._claim()
    images.delete_image(cloud, ADMIN, image_id=doomed)  # while cp runs
    assert w._record(job_id, True, "/store/1/abc 3\n", "")  # an rm is queued
    assert [(j.action, j.source, j.status) for j in jobs(cloud)] == [("rm", "/store/1/abc", "pending")]


def test_a_restart_runs_cut_off_jobs_again(cloud: Cloud) -> None:
    image_id = images.create_image(cloud, ADMIN, text='NAME = "a"\nPATH = "/srv/a.img"\n')
    worker(cloud)._claim()
    assert [j.status for j in jobs(cloud)] == ["running"]
    base = Path(cloud.config.datastores) / "1"
    base.mkdir(parents=True)
    for name in (".0cc175b9.part", ".92eb5ffe.part.gz", "0cc175b9", ".keep"):
        (base / name).write_bytes(b"x")
    assert worker(cloud).recover() == 1
    assert sorted(p.name for p in base.iterdir()) == [".keep", "0cc175b9"]  # half copies go
    assert [(j.status, j.attempts) for j in jobs(cloud)] == [("pending", 1)]
    assert "stopped during the copy" in (template.parse(image(cloud, image_id).template)
                                         .get("PROGRESS") or "")
    assert worker(cloud).recover() == 0


def test_a_clone_is_copied_from_the_originals_file(cloud: Cloud) -> None:
    original = images.create_image(cloud, ADMIN, text='NAME = "a"\nPATH = "/srv/a.img"\n')
    finish(cloud, True, "/store/1/abc 3\n")
    clone = images.clone_image(cloud, ADMIN, image_id=original,
                               changes=template.Template([("NAME", "copy")]))
    row = image(cloud, clone)
    assert (row.state, row.path, row.source) == (IMAGE_LOCKED, "/store/1/abc", "")
    with pytest.raises(Conflict, match="being cloned"):
        images.delete_image(cloud, ADMIN, image_id=original)
    doc = sent(cloud)  # the original's datastore dir is safe for this copy only
    assert doc.findtext("IMAGE/PATH") == "/store/1/abc"
    with cloud.session() as s:
        ds = s.get(Datastore, 1)
        assert ds is not None
        assert doc.findtext("DATASTORE/TEMPLATE/SAFE_DIRS") == ds.base_path
