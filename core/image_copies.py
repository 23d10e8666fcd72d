"""Image copies: the datastore drivers at work on images, an image's `cp` or `mkfs` while it
is LOCKED, the `rm` of a deleted image's file. They run on the front-end, in the daemon, a
few at a time.

    core.service.images  create / clone / delete an image, and its ImageJob row, in one
                         transaction; then wake this loop
    ImageCopies.run      claims pending jobs and runs, for each,
                             datastore/<DS_MAD>/<action> <b64 DS_DRIVER_ACTION_DATA> <image id>
                         cp, mkfs: stdout `SOURCE SIZE_MB` makes the image READY; a failure
                         makes it ERROR with the driver's message (template ERROR)
                         rm: the file goes; a failure is logged (the image is gone already)

The driver's INFO lines (the copy's progress) are kept in the LOCKED image's PROGRESS
attribute. A job found `running` at start-up was cut off by a stop or a crash: it runs
again (fs/cp writes `.part` and renames, so a rerun is safe). DS_MAD `dummy` runs nothing:
images are used where they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import anyio
from sqlmodel import Session, select

from core import documents, template
from core.drivers import Drivers
from core.models import (
    IMAGE_ERROR,
    IMAGE_LOCKED,
    IMAGE_READY,
    Datastore,
    Group,
    Image,
    ImageJob,
    User,
    now,
)
from core.service.context import Cloud
from core.work_loop import WorkLoop

log = logging.getLogger("nubo.datastores")

DATASTORES = "datastores"  # the wake-up sent when a job is queued
IN_PLACE = "dummy"  # the DS_MAD that registers images where they are: no driver runs
PROGRESS = "PROGRESS"  # image template attribute: the driver's latest INFO line
ERROR = "ERROR"  # image template attribute: why the copy failed
PROGRESS_SECONDS = 0.5  # at most one PROGRESS write per image per interval
IDLE_SECONDS = 5.0  # a cycle without a wake-up (jobs queued by another process)


def copies(ds: Datastore) -> bool:
    """Whether images registered in `ds` are copied in by its driver."""
    return ds.ds_mad != IN_PLACE


@dataclass(frozen=True)
class Work:
    """One job as the driver gets it, read in one short transaction."""

    image_id: int
    ds_mad: str
    action: str
    data: str  # base64 DS_DRIVER_ACTION_DATA


class ImageCopies(WorkLoop):
    """The daemon's loop over ImageJob rows: each job's datastore driver action, a few at
    a time (DS_CONCURRENCY)."""

    model = ImageJob
    channel = DATASTORES
    idle = IDLE_SECONDS
    log = log

    def __init__(self, cloud: Cloud, drivers: Drivers) -> None:
        super().__init__(cloud, cloud.config.ds_concurrency)
        self.drivers = drivers

    def recover(self) -> int:
        """Jobs left `running` by a stop or a crash go back to `pending`; what their `fs`
        copies left half-written goes (before any copy starts)."""
        count = super().recover()
        with self.cloud.session() as s:
            stores = s.exec(select(Datastore.base_path).where(Datastore.ds_mad == "fs")).all()
        for base in stores:
            _sweep(base)
        return count

    def recovered(self, session: Session, row: ImageJob) -> None:
        if row.action != "rm":
            note(session, row.image_id, PROGRESS, "the daemon stopped during the copy: "
                 "starting it again")

    def started(self, row: ImageJob) -> None:
        row.attempts, row.started = row.attempts + 1, now()

    async def execute(self, job_id: int) -> None:
        try:
            work = await anyio.to_thread.run_sync(self._load, job_id)
            if work is None:
                return
            progress = Progress(self.cloud, work)
            try:
                result = await self.drivers.local().run(
                    "datastore", work.ds_mad, work.action, [work.data, str(work.image_id)],
                    timeout=self.cloud.config.ds_timeout, log=progress.line)
            finally:
                await progress.close()
            outcome = (result.ok, result.stdout, result.error)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not leave the image LOCKED forever
            log.exception("image job %s crashed", job_id)
            outcome = (False, "", f"internal error: {exc}")
        if await anyio.to_thread.run_sync(self._record, job_id, *outcome):
            self.cloud.wakeups.notify(DATASTORES)

    def _load(self, job_id: int) -> Work | None:
        with self.cloud.session() as s:
            job = s.get(ImageJob, job_id)
            if job is None:
                return None
            ds = s.get(Datastore, job.datastore_id)
            image = (Image(id=job.image_id, name=f"image-{job.image_id}", uid=0, gid=0,
                           source=job.source, datastore_id=job.datastore_id)
                     if job.action == "rm" else s.get(Image, job.image_id))
            if image is None or ds is None:
                if image is not None and job.action != "rm":
                    _failed(s, image, f"datastore {job.datastore_id} does not exist")
                log.warning("image job %s: image %s or datastore %s is gone", job_id,
                            job.image_id, job.datastore_id)
                s.delete(job)
                return None
            user, group = s.get(User, image.uid), s.get(Group, image.gid)
            if job.action == "mkfs" and not image.fstype:
                image = Image(**{**image.model_dump(), "fstype": "raw"})  # no filesystem
            cfg = self.cloud.config
            data = documents.ds_action_data(
                image, ds, uname=user.name if user else "", gname=group.name if group else "",
                restricted=[str(cfg.var), cfg.datastores], safe=[job.safe_dir])
            return Work(image_id=job.image_id, ds_mad=ds.ds_mad, action=job.action, data=data)

    def _record(self, job_id: int, ok: bool, stdout: str, error: str) -> bool:
        """The outcome, in one transaction; True when it queued an rm."""
        with self.cloud.session() as s:
            job = s.get(ImageJob, job_id, with_for_update=True)
            if job is None:
                return False
            if job.action == "rm":
                if not ok:
                    log.error("image %s: removing %s failed: %s", job.image_id, job.source, error)
                s.delete(job)
                return False
            stored = _stored(stdout) if ok else None
            if ok and stored is None:
                error = f"datastore driver {job.action} printed {stdout.strip()!r}, not SOURCE SIZE_MB"
            image = s.get(Image, job.image_id, with_for_update=True)
            if image is None:  # deleted during the copy: the copy goes too
                if stored is None:
                    s.delete(job)
                    return False
                job.action, job.source, job.status = "rm", stored[0], "pending"
                job.origin_id, job.safe_dir = None, ""
                s.add(job)
                return True
            if stored is None:
                _failed(s, image, error)
            else:
                _ready(s, image, *stored)
            s.delete(job)
            return False


def _sweep(base_path: str) -> None:
    """fs/cp and fs/mkfs write `BASE_PATH/.<name>.part` (a download being decompressed:
    `.part.gz`) and rename it when complete; one cut off (killed with the daemon's process
    group, or orphaned by a crash) leaves it behind."""
    for leftover in Path(base_path).glob(".*.part*") if base_path else ():
        if leftover.is_file() and not leftover.is_symlink():
            log.warning("removing %s, left by a copy the last stop cut off", leftover)
            leftover.unlink(missing_ok=True)


def _stored(stdout: str) -> tuple[str, int | None] | None:
    """`SOURCE SIZE_MB` (split at the last space); a lone SOURCE as OpenNebula 4.4 prints."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    source, _, size = lines[-1].rpartition(" ")
    if source and size.isdigit():
        return source, int(size)
    return lines[-1], None


def _ready(s: Session, image: Image, source: str, size_mb: int | None) -> None:
    tmpl = template.parse(image.template)
    tmpl.remove(PROGRESS)
    tmpl.remove(ERROR)
    asked = tmpl.get("SIZE") or ""
    image.source, image.stored, image.state = source, True, IMAGE_READY
    # the driver's size, unless the template asked for more (a volume grown from a snapshot)
    image.size_mb = max(size_mb or 0, int(asked) if asked.isdigit() else 0)
    image.template = tmpl.dumps()
    s.add(image)
    log.info("image %s is READY: %s (%s MB)", image.id, source, image.size_mb)


def _failed(s: Session, image: Image, error: str) -> None:
    tmpl = template.parse(image.template)
    tmpl.remove(PROGRESS)
    tmpl.set(ERROR, error or "the datastore driver failed")
    image.state = IMAGE_ERROR
    image.template = tmpl.dumps()
    s.add(image)
    log.warning("image %s is in ERROR: %s", image.id, error)


def note(s: Session, image_id: int, name: str, value: str) -> None:
    """Set a template attribute of a LOCKED image (not of one whose outcome is recorded)."""
    image = s.get(Image, image_id, with_for_update=True)
    if image is None or image.state != IMAGE_LOCKED:
        return
    tmpl = template.parse(image.template)
    tmpl.set(name, value)
    image.template = tmpl.dumps()
    s.add(image)


class Progress:
    """The driver's INFO lines as they arrive (on the event loop): the latest is written to
    the image's PROGRESS from a thread, at most every PROGRESS_SECONDS."""

    def __init__(self, cloud: Cloud, work: Work) -> None:
        self._cloud = cloud
        self._work = work
        self._runner_lines = ("Command execution:",
                              f"datastore/{work.ds_mad}/{work.action} succeeded")
        self.latest = ""
        self._changed = asyncio.Event()
        self._closing = asyncio.Event()
        self._task = asyncio.create_task(self._writer())

    def line(self, severity: str, message: str) -> None:
        if severity != "I" or message.startswith(self._runner_lines):
            return
        log.debug("image %s: %s", self._work.image_id, message)
        if self._work.action != "rm":
            self.latest = message
            self._changed.set()

    async def _writer(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._closing.is_set():
                return
            await anyio.to_thread.run_sync(self._save, self.latest)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), PROGRESS_SECONDS)

    def _save(self, text: str) -> None:
        with self._cloud.session() as s:
            note(s, self._work.image_id, PROGRESS, text)

    async def close(self) -> None:
        """Stop writing (a write under way finishes first)."""
        self._closing.set()
        self._changed.set()
        with contextlib.suppress(Exception):
            await self._task
