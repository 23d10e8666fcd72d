"""The daemon's start-up and its loops: scheduler, dispatcher, monitor, image copies.

`Daemon.start()` migrates the schema, creates the admin and the embedded localhost host
on first run, finishes what a crash left behind, and starts the loops; front doors run
beside it on the same event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
from pathlib import Path

import anyio
from sqlmodel import Session, col, select

from core import bursting, db, localhost, scheduler, template
from core.config import Config
from core.dispatcher import Dispatcher
from core.drivers import Drivers
from core.errors import CloudError
from core.hook_runs import HookRuns
from core.image_copies import ImageCopies
from core.lifecycle import HistoryReason, HostState, VmState
from core.models import ADMIN_USER_ID, SYSTEM_DATASTORE_ID, VM, Datastore, History, Host, User
from core.monitor import Monitor
from core.service import datastores, identity
from core.service import hooks as hook_service
from core.service.context import SCHEDULER, Caller, Cloud
from core.service.transitions import deploy_event, place
from core.service.vms import ds_location_for

log = logging.getLogger("nubo.daemon")

PACKAGED_REMOTES = Path(__file__).resolve().parent.parent / "drivers" / "remotes"


def admin_password(cfg: Config) -> str:
    """NUBO_ADMIN_PASSWORD, else the one in var/one_auth, else a new one written there."""
    given = os.environ.get("NUBO_ADMIN_PASSWORD")
    if given:
        password = given
    elif cfg.one_auth.exists():
        _, _, password = cfg.one_auth.read_text().strip().partition(":")
    else:
        password = secrets.token_urlsafe(18)
    cfg.var.mkdir(parents=True, exist_ok=True)
    if not cfg.one_auth.exists() or cfg.one_auth.read_text().strip() != f"oneadmin:{password}":
        tmp = cfg.one_auth.with_suffix(".tmp")
        tmp.write_text(f"oneadmin:{password}\n")
        tmp.chmod(0o600)
        os.replace(tmp, cfg.one_auth)
    return password


def install_remotes(cfg: Config) -> None:
    """Give the data dir its own remotes tree (operators edit it, like /var/lib/one/remotes).

    New packaged files are added; files the operator already has are left alone."""
    for src in PACKAGED_REMOTES.rglob("*"):
        if "__pycache__" in src.parts:
            continue
        dst = cfg.remotes / src.relative_to(PACKAGED_REMOTES)
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
        elif not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def prepare(cfg: Config) -> Cloud:
    """Schema, admin, datastores and the localhost host: safe to run on every start."""
    cfg.var.mkdir(parents=True, exist_ok=True)
    install_remotes(cfg)
    engine = db.make_engine(cfg.db_url)
    db.migrate(engine)
    cloud = Cloud(engine=engine, config=cfg)
    identity.bootstrap(cloud, admin_password=admin_password(cfg))
    datastores.bootstrap_datastores(cloud)
    hook_service.load_conf_hooks(cloud)
    if cfg.register_localhost:
        register_localhost(cloud)
    return cloud


def register_localhost(cloud: Cloud) -> None:
    """The front-end as host `localhost`, once, with the drivers core.localhost chooses; the
    datastores still on the dummy transfer manager take the one that goes with them."""
    with cloud.session() as s:
        if s.exec(select(Host).where(Host.name == "localhost")).first() is not None:
            return
    chosen = localhost.choose(cloud.config)
    with cloud.session() as s:
        if s.exec(select(Host).where(Host.name == "localhost")).first() is not None:
            return
        s.add(Host(name="localhost", im_mad=chosen.im, vmm_mad=chosen.vmm))
        for ds in s.exec(select(Datastore).where(col(Datastore.tm_mad) == "dummy")):
            ds.tm_mad = chosen.tm
            s.add(ds)
        log.info("host localhost registered with im %s, vmm %s, tm %s (%s)",
                    chosen.im, chosen.vmm, chosen.tm, chosen.why)


def admin_caller(cloud: Cloud) -> Caller:
    with cloud.session() as s:
        admin = s.get(User, ADMIN_USER_ID)
        assert admin is not None
        return Caller(uid=ADMIN_USER_ID, gid=admin.gid, name=admin.name)


def schedule_once(cloud: Cloud) -> int:
    """One scheduler cycle: place up to MAX_DISPATCH pending VMs; returns how many.

    Private hosts first (core.scheduler); what is left and says how to run in a public
    cloud goes to the regions (core.bursting). A VM stopped in a region goes back to the
    instance it stopped there; one stopped on a private host never bursts (its files wait
    on the front-end)."""
    cfg = cloud.config
    with cloud.session() as s:
        pending = s.exec(
            select(VM).where(VM.state == VmState.PENDING).order_by(col(VM.id)).limit(cfg.max_vm)
            .with_for_update(skip_locked=True)
        ).all()
        if not pending:
            return 0
        hosts = s.exec(select(Host).where(col(Host.state) < HostState.ERROR)).all()
        views = [_host_view(h) for h in hosts]
        regions = [bursting.RegionView(v.id, v.name, v.template) for v in views
                   if bursting.is_public(v.template)]
        for view in regions:
            view.placed = _placed_types(s, view)
        region_ids = {r.id for r in regions}
        by_id = {v.id or 0: v for v in pending}
        placements: list[tuple[int, int]] = []
        unplaced: dict[int, str] = {}
        public = _public_ids(s)
        # VMs resuming from a stop -> the host they stopped on
        stopped = _stopped_on(s, list(by_id)) if public else {}
        for vm_id, host_id in stopped.items():
            if host_id not in public:
                continue
            if host_id in region_ids:  # back to the instance it stopped
                placements.append((vm_id, host_id))
            else:
                unplaced[vm_id] = f"stopped in public cloud host {host_id}: waits for it"
        requests = [
            scheduler.VMRequest(id=v.id or 0, cpu=v.cpu, memory=v.memory,
                                requirements=v.requirements, rank=v.rank)
            for v in pending if stopped.get(v.id or 0) not in public
        ]
        plan = scheduler.plan(
            requests, [v for v in views if v.id not in region_ids],
            policy=scheduler.Policy(cfg.sched_policy), default_rank=cfg.sched_rank,
            max_dispatch=cfg.max_dispatch - len(placements), max_host=cfg.max_host,
        )
        placements += plan.placements
        unplaced.update(plan.unplaced)
        burstable = [
            bursting.Burstable(vm_id, sections, by_id[vm_id].requirements, by_id[vm_id].rank)
            for vm_id in plan.unplaced if regions and vm_id not in stopped
            and "EC2" in by_id[vm_id].template
            and (sections := template.parse(by_id[vm_id].template).vectors("EC2"))]
        if burstable:
            burst = bursting.plan(burstable, regions,
                                  max_dispatch=cfg.max_dispatch - len(placements),
                                  max_host=cfg.max_host)
            placements += burst.placements
            for vm_id, _ in burst.placements:
                del unplaced[vm_id]
            for vm_id, why in burst.unplaced.items():
                unplaced[vm_id] = f"{unplaced[vm_id]}; public clouds: {why}"
        host_by_id = {h.id: h for h in hosts}
        system = s.get(Datastore, SYSTEM_DATASTORE_ID)
        tm_mad = system.tm_mad if system else "dummy"
        for vm_id, host_id in placements:
            vm, host = by_id[vm_id], host_by_id[host_id]
            place(s, vm, host, deploy_event(s, vm), ds_location_for(cloud, host), tm_mad)
        for vm_id, reason in unplaced.items():
            vm = by_id[vm_id]
            if vm.message != reason:
                vm.message = reason
                s.add(vm)
        placed = len(placements)
    if placed:
        cloud.wakeups.notify("dispatcher")
    return placed


def _placed_types(session: Session, region: bursting.RegionView) -> dict[str, int]:
    """Instance types of the VMs placed on a region (launched or not), by count."""
    counts: dict[str, int] = {}
    for text in session.exec(select(VM.template).where(
            VM.host_id == region.id, col(VM.state).in_((VmState.ACTIVE, VmState.SUSPENDED)))):
        section = bursting.section_for(template.parse(text).vectors("EC2"), region.name)
        kind = region.instance_type(section or {})
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def _public_ids(session: Session) -> set[int]:
    """Every public-cloud host, whatever its state."""
    return {h.id for h in session.exec(select(Host)) if h.id is not None
            and bursting.public_host(h)}


def _stopped_on(session: Session, vm_ids: list[int]) -> dict[int, int]:
    """The VMs among `vm_ids` resuming from a stop, and the host each stopped on."""
    last: dict[int, History] = {}
    for history in session.exec(select(History).where(col(History.vm_id).in_(vm_ids))
                                .order_by(col(History.seq))):
        last[history.vm_id] = history
    return {vm_id: h.host_id for vm_id, h in last.items()
            if h.reason == HistoryReason.STOP_RESUME}


def _host_view(host: Host) -> scheduler.HostView:
    return scheduler.HostView(
        id=host.id or 0, name=host.name, template=template.strings(host.template), max_cpu=host.max_cpu,
        max_mem=host.max_mem, free_cpu=host.free_cpu, free_mem=host.free_mem,
        used_cpu=host.used_cpu, used_mem=host.used_mem, cpu_usage=host.cpu_usage,
        mem_usage=host.mem_usage, running_vms=host.running_vms,
    )


class Daemon:
    def __init__(self, cloud: Cloud, drivers: Drivers) -> None:
        self.cloud = cloud
        self.drivers = drivers
        self.dispatcher = Dispatcher(cloud, drivers)
        self.monitor = Monitor(cloud, drivers)
        self.image_copies = ImageCopies(cloud, drivers)
        self.hook_runs = HookRuns(cloud, drivers)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.cloud.wakeups.bind(asyncio.get_running_loop())
        recovered = await anyio.to_thread.run_sync(self.dispatcher.recover)
        if recovered:
            log.warning("resuming %d operation(s) interrupted by the last stop", recovered)
        copies = await anyio.to_thread.run_sync(self.image_copies.recover)
        if copies:
            log.warning("resuming %d image copy(ies) interrupted by the last stop", copies)
        runs = await anyio.to_thread.run_sync(self.hook_runs.recover)
        if runs:
            log.warning("running again %d hook(s) interrupted by the last stop", runs)
        self._tasks = [
            asyncio.create_task(self.dispatcher.run(), name="dispatcher"),
            asyncio.create_task(self.monitor.run(), name="monitor"),
            asyncio.create_task(self._schedule_loop(), name="scheduler"),
            asyncio.create_task(self.image_copies.run(), name="image-copies"),
            asyncio.create_task(self.hook_runs.run(), name="hook-runs"),
        ]

    async def _schedule_loop(self) -> None:
        interval = self.cloud.config.sched_interval
        while True:
            try:
                await anyio.to_thread.run_sync(schedule_once, self.cloud)
            except CloudError as exc:
                log.error("scheduler: %s", exc)
            except Exception:
                log.exception("scheduler cycle failed")
            await self.cloud.wakeups.wait(SCHEDULER, interval)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.hook_runs.stop()
        await self.image_copies.stop()
        await self.dispatcher.drain()
        await self.monitor.drain()
        await self.drivers.close()
