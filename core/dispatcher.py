"""Runs pending Operations through the drivers and records their outcomes.

A step goes: claim the operation (commit `running`), run the driver actions with a
timeout, then commit the outcome and the next state (and next operation) in one new
transaction. Operations of one VM run one at a time, oldest first. An operation found
`running` at start-up was cut off by a crash: it is run again, but steps that start or
stop a guest first ask the hypervisor (poll) whether the work already happened, so no VM
is deployed twice.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import shlex
import socket
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace

import anyio
from sqlmodel import col, select, update

from core import bursting, context, disk_steps, documents, template, transfers
from core.drivers import Drivers, Runner
from core.errors import InvalidState
from core.lifecycle import (
    DISK_STEPS,
    SOURCE_STEPS,
    HistoryReason,
    HostState,
    LcmState,
    Step,
    VmState,
    state_name,
    step_event,
    step_is_due,
)
from core.models import VM, Datastore, Group, History, Host, Image, LogEntry, Operation, User, now
from core.service import sgrules
from core.service.context import DISPATCHER, SCHEDULER, Cloud, vm_log
from core.service.disks import settle
from core.service.transitions import apply

log = logging.getLogger("nubo.dispatcher")


@dataclass
class Job:
    """Everything a step needs, read in one short transaction."""

    op_id: int
    step: Step
    recovering: bool
    vm: VM
    history: History | None
    host: Host | None
    doc: bytes
    disks: list[dict[str, str]]
    context: dict[str, str] | None
    disk_tm: dict[int, str]  # DISK_ID -> tm_mad of the image's datastore
    system_tm: str
    # the placement before this one (a migration's source), its host and the VM's
    # document as it was there (its last HISTORY is the source's)
    source: History | None = None
    source_host: Host | None = None
    source_doc: bytes = b""

    @property
    def vmdir(self) -> str:
        assert self.history is not None
        return f"{self.history.ds_location}/0/{self.vm.id}"

    @property
    def hostname(self) -> str:
        assert self.history is not None
        return self.history.hostname

    def at_source(self) -> Job:
        """The same job, acting on the placement the VM is leaving."""
        if self.source is None:
            raise RuntimeError(f"VM {self.vm.id} has no earlier placement to act on")
        return replace(self, history=self.source, host=self.source_host, doc=self.source_doc,
                       source=None, source_host=None, source_doc=b"")


class Dispatcher:
    def __init__(self, cloud: Cloud, drivers: Drivers) -> None:
        self.cloud = cloud
        self.drivers = drivers
        self.frontend = socket.gethostname()
        self._slots = asyncio.Semaphore(cloud.config.dispatch_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy_vms: set[int] = set()

    # --- loop ---

    def recover(self) -> int:
        """Operations left `running` by a crash go back to `pending` (they re-check first)."""
        with self.cloud.session() as s:
            result = s.exec(
                update(Operation).where(col(Operation.status) == "running").values(status="pending")
            )
            return int(result.rowcount or 0)

    async def run(self) -> None:
        while True:
            try:
                jobs = await anyio.to_thread.run_sync(self._claim)
                for op_id in jobs:
                    task = asyncio.create_task(self._execute(op_id))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            except Exception:  # the loop must survive a bad row or a lost DB connection
                log.exception("dispatcher cycle failed")
            await self.cloud.wakeups.wait(DISPATCHER, 1.0)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _claim(self) -> list[int]:
        free = self.cloud.config.dispatch_concurrency - len(self._busy_vms)
        if free <= 0:
            return []
        claimed: list[int] = []
        vms: list[int] = []
        with self.cloud.session() as s:
            pending = s.exec(
                select(Operation).where(Operation.status == "pending").order_by(col(Operation.id))
                .limit(free * 8)
            ).all()
            running_vms = set(
                s.exec(select(Operation.vm_id).where(Operation.status == "running")).all()
            )
            seen: set[int] = set()
            for op in pending:
                if op.vm_id in seen or op.vm_id in running_vms or op.vm_id in self._busy_vms:
                    seen.add(op.vm_id)
                    continue
                seen.add(op.vm_id)
                op.status = "running"
                op.attempts += 1
                op.started = now()
                s.add(op)
                assert op.id is not None
                claimed.append(op.id)
                vms.append(op.vm_id)
                if len(claimed) >= free:
                    break
        self._busy_vms.update(vms)  # only once the claim is committed
        return claimed

    async def _execute(self, op_id: int) -> None:
        job: Job | None = None
        try:
            async with self._slots:
                job = await anyio.to_thread.run_sync(self._load, op_id)
                if job is None:
                    return
                sink = LogSink(job.vm.id or 0)
                try:
                    ok, error, deploy_id = await self._run_step(job, sink)
                except Exception as exc:  # a bug here must not leave the VM in PROLOG forever
                    log.exception("operation %s crashed", op_id)
                    ok, error, deploy_id = False, f"internal error: {exc}", None
                await anyio.to_thread.run_sync(self._finish, job, sink, ok, error, deploy_id)
        except Exception as exc:
            log.exception("operation %s could not be recorded", op_id)
            await anyio.to_thread.run_sync(self._crashed, op_id, f"internal error: {exc}")
        finally:
            if job is not None:
                self._busy_vms.discard(job.vm.id or -1)
            else:
                await anyio.to_thread.run_sync(self._forget, op_id)
            self.cloud.wakeups.notify(DISPATCHER)

    def _forget(self, op_id: int) -> None:
        with self.cloud.session() as s:
            op = s.get(Operation, op_id)
            if op is not None:
                self._busy_vms.discard(op.vm_id)

    def _crashed(self, op_id: int, error: str) -> None:
        with self.cloud.session() as s:
            op = s.get(Operation, op_id)
            if op is not None:
                op.status, op.error, op.finished = "failed", error, now()
                s.add(op)
                vm_log(s, op.vm_id, f"{op.step}: {error}", "E")

    # --- reading and writing ---

    def _load(self, op_id: int) -> Job | None:
        with self.cloud.session() as s:
            op = s.get(Operation, op_id)
            if op is None:
                return None
            vm = s.get(VM, op.vm_id)
            if vm is None:
                op.status, op.error = "failed", "the VM no longer exists"
                s.add(op)
                return None
            if not step_is_due(Step(op.step), vm.state, vm.lcm_state):
                op.status, op.finished = "skipped", now()
                op.error = f"the VM moved on to {state_name(vm.state, vm.lcm_state)}"
                s.add(op)
                vm_log(s, op.vm_id,
                       f"Skipped queued {op.step}: the VM is {state_name(vm.state, vm.lcm_state)}")
                settle(s, vm, Step(op.step), False, op.error)
                return None
            histories = list(
                s.exec(select(History).where(History.vm_id == vm.id).order_by(col(History.seq)))
            )
            history = next((h for h in histories if h.seq == op.seq), None)
            host = s.get(Host, history.host_id) if history is not None else None
            user = s.get(User, vm.uid)
            group = s.get(Group, vm.gid)
            uname, gname = user.name if user else "", group.name if group else ""
            # the document as of the placement the step acts on (the last, but for RECLAIM)
            placed = [h for h in histories if history is None or h.seq <= history.seq]
            element = documents.vm_xml(vm, history=placed, uname=uname, gname=gname)
            if op.step in _FILTERING:
                documents.add_vectors(element, "SECURITY_GROUP_RULE",
                                      sgrules.document_rules(s, vm))
            doc = documents.to_string(element).encode()
            earlier = [h for h in histories if history is not None and h.seq < history.seq]
            source = earlier[-1] if earlier else None
            source_doc = b""
            if source is not None and source.host_id != (history.host_id if history else -1):
                source_doc = documents.to_string(documents.vm_xml(
                    vm, history=earlier, uname=uname, gname=gname)).encode()
            else:
                source = None
            tmpl = template.parse(vm.template)
            disks = tmpl.vectors("DISK")
            disk_tm: dict[int, str] = {}
            for i, disk in enumerate(disks):
                if disk.get("IMAGE_ID", "").isdigit():
                    image = s.get(Image, int(disk["IMAGE_ID"]))
                    ds = s.get(Datastore, image.datastore_id) if image else None
                    if ds is not None:
                        disk_tm[i] = ds.tm_mad
            system = s.get(Datastore, 0)
            return Job(
                op_id=op_id, step=Step(op.step), recovering=op.attempts > 1, vm=vm,
                history=history, host=host, doc=doc, disks=disks,
                context=context.resolve(tmpl, vm.id or 0),
                disk_tm=disk_tm, system_tm=system.tm_mad if system else "dummy",
                source=source, source_host=s.get(Host, source.host_id) if source else None,
                source_doc=source_doc,
            )

    def _finish(self, job: Job, sink: LogSink, ok: bool, error: str,
                deploy_id: str | None) -> None:
        with self.cloud.session() as s:
            s.add_all(sink.entries)
            op = s.get(Operation, job.op_id)
            vm = s.get(VM, job.vm.id, with_for_update=True)
            if op is None or vm is None:
                return
            op.status = "done" if ok else "failed"
            op.error = error
            op.finished = now()
            s.add(op)
            if deploy_id is not None:
                vm.deploy_id = deploy_id
            message = None if ok else f"{job.step.value} failed: {error}"
            settle(s, vm, job.step, ok, error)
            hotplug = vm.state == VmState.ACTIVE and vm.lcm_state == LcmState.HOTPLUG
            moves = (job.step not in (Step.RECLAIM, Step.UPDATE_SG)
                     and (job.step not in DISK_STEPS or hotplug))
            try:
                if moves:  # a stopped VM's disks, a reclaim: no transition
                    apply(s, vm, step_event(job.step, ok), message=message)
            except InvalidState:
                vm_log(s, vm.id or 0, f"{job.step.value} finished "
                       f"({'ok' if ok else 'failed'}) after the VM moved on; outcome ignored")
            if not ok:
                vm_log(s, vm.id or 0, f"{job.step.value} failed: {error}", "E")
        self.cloud.wakeups.notify(SCHEDULER)

    # --- the steps ---

    async def _run_step(self, job: Job, sink: LogSink) -> tuple[bool, str, str | None]:
        if job.history is None or (job.host is None and job.step is not Step.CLEANUP):
            return False, "the VM has no placement on an existing host", None
        if job.recovering:
            sink("I", f"Resuming {job.step.value} after a restart of the daemon")
        step = job.step
        if step in _TRANSFERS and bursting.public_host(job.host):
            sink("I", f"{step.value}: host {job.hostname} is a public cloud: no files to "
                      "transfer (the instance has its own disks)")
            return True, "", None
        if step in (Step.PROLOG,):
            return await self._prolog(job, sink)
        if step is Step.PROLOG_RESUME:
            return await self.tm_lines(job, sink, transfers.mv_lines(job, self.frontend, to_host=True))
        if step is Step.EPILOG:
            return await self.tm_lines(job, sink, transfers.epilog_lines(job))
        if step is Step.EPILOG_STOP:
            return await self.tm_lines(job, sink, transfers.mv_lines(job, self.frontend,
                                                                     to_host=False))
        if step is Step.CLEANUP:
            return await self._cleanup(job, sink)
        if step is Step.RECLAIM:
            return await self._reclaim(job, sink)
        if step in DISK_STEPS:
            return await disk_steps.run(self, job, sink)
        if step is Step.PROLOG_MIGRATE:
            return await self.tm_lines(job, sink, transfers.migrate_lines(job))
        if step is Step.MIGRATE:
            return await self._live_migrate(job, sink)
        if step is Step.UPDATE_SG:
            return await self._update_sg(job, sink)
        if step in SOURCE_STEPS:
            return await self._vmm(job.at_source(), sink)
        return await self._vmm(job, sink)

    def _tm(self, job: Job) -> Runner:
        return self.drivers.local()

    def host_runner(self, job: Job, kind: str = "vmm") -> Runner:
        """Where the placement's `kind` driver (vmm, vnm) runs for its host."""
        assert job.host is not None and job.history is not None
        driver = job.history.vnm_mad if kind == "vnm" else job.history.vmm_mad
        return self.drivers.for_host(job.host.name, template.strings(job.host.template), kind,
                                     driver)

    async def tm_lines(self, job: Job, sink: LogSink,
                       lines: list[transfers.Line]) -> tuple[bool, str, None]:
        """Run transfer lines in order (OpenNebula's transfer file); the first failure stops."""
        timeout = self.cloud.config.driver_timeout
        for action, tm_mad, args in lines:
            result = await self._tm(job).run("tm", tm_mad, action, args, stdin=job.doc,
                                             timeout=timeout, log=sink)
            if not result.ok:
                return False, result.error, None
        return True, "", None

    def fe(self, path: str) -> str:
        return transfers.on_frontend(self.frontend, path)

    async def _prolog(self, job: Job, sink: LogSink) -> tuple[bool, str, None]:
        context_file = None
        if job.context is not None:
            folder = self.cloud.config.var / "vms" / str(job.vm.id)
            context_file = await anyio.to_thread.run_sync(transfers.write_context, job, folder)
        return await self.tm_lines(job, sink, transfers.prolog_lines(job, self.frontend,
                                                                     context_file))

    async def _cleanup(self, job: Job, sink: LogSink) -> tuple[bool, str, None]:
        """Best effort: stop whatever may still run, then remove the VM dir; on the host
        it was leaving too when a migration was cut short (its record is still open)."""
        source = job.source
        if source is not None and source.reason == HistoryReason.USER and not source.etime:
            sink("I", f"cleanup: the VM was migrating from {source.hostname}: cleaning there too")
            await self._cleanup_at(job.at_source(), sink)
        return await self._cleanup_at(job, sink)

    async def _cleanup_at(self, job: Job, sink: LogSink) -> tuple[bool, str, None]:
        timeout = self.cloud.config.driver_timeout
        assert job.history is not None
        # a stopped VM's files wait on the front-end and nothing runs on the host
        stopped = job.history.reason == HistoryReason.STOP_RESUME
        if not stopped and job.host is not None and job.host.state == HostState.ERROR:
            # a failed host (fenced by host_error, or unreachable): nothing is asked of it,
            # which would only wait for timeouts; what is left there goes when it returns
            sink("I", f"cleanup: host {job.hostname} is in ERROR: nothing done there now; "
                      "what the VM left there is removed when the host answers again")
            await anyio.to_thread.run_sync(self._leftover, job.history.id, True)
            return True, "", None
        if job.host is not None and not stopped:
            runner = self.host_runner(job)
            result = await runner.run(
                "vmm", job.history.vmm_mad, "cancel",
                [job.vm.deploy_id or "-", job.hostname, str(job.vm.id), job.hostname],
                stdin=job.doc, timeout=timeout, log=sink,
            )
            if not result.ok:
                sink("I", f"cleanup: cancel reported '{result.error}' (ignored)")
            cleaned, why = await self._vnm(job, "clean", sink)
            if not cleaned:
                sink("I", f"cleanup: network driver clean reported '{why}' (ignored)")
        if bursting.public_host(job.host):
            return True, "", None  # no VM dir in a public cloud
        location = self.frontend if stopped else job.hostname
        result = await self._tm(job).run("tm", job.system_tm, "delete",
                                         [f"{location}:{job.vmdir}"], stdin=job.doc,
                                         timeout=timeout, log=sink)
        if not result.ok:
            sink("I", f"cleanup: delete reported '{result.error}' (ignored)")
        return True, "", None

    def _leftover(self, history_id: int | None, value: bool) -> None:
        with self.cloud.session() as s:
            history = s.get(History, history_id)
            if history is not None:
                history.leftover = value
                s.add(history)

    async def _reclaim(self, job: Job, sink: LogSink) -> tuple[bool, str, None]:
        """A host back from ERROR: stop the copy of the VM it may still run and remove the
        VM dir of a placement the VM left while the host was away. Unreachable again: the
        placement stays marked, for its next return."""
        assert job.history is not None and job.host is not None
        sink("I", f"Host {job.hostname} answers again: removing what the VM left there "
                  f"(history seq {job.history.seq})")
        timeout = self.cloud.config.driver_timeout
        public = bursting.public_host(job.host)
        # a region finds the instance of that placement by its tags: the VM's deploy id
        # is its current placement's, maybe an instance in the same account
        deploy_id = "-" if public else job.vm.deploy_id or "-"
        result = await self.host_runner(job).run(
            "vmm", job.history.vmm_mad, "cancel",
            [deploy_id, job.hostname, str(job.vm.id), job.hostname],
            stdin=job.doc, timeout=timeout, log=sink)
        if result.rc == 255:
            await anyio.to_thread.run_sync(self._leftover, job.history.id, True)
            return False, result.error, None
        if public:
            return result.ok, result.error, None
        deleted = await self._tm(job).run("tm", job.system_tm, "delete",
                                          [f"{job.hostname}:{job.vmdir}"], stdin=job.doc,
                                          timeout=timeout, log=sink)
        if not deleted.ok:
            return False, deleted.error, None
        return True, "", None

    async def _update_sg(self, job: Job, sink: LogSink) -> tuple[bool, str, None]:
        """The network driver's `update_sg` on a running VM's host: its filtering again,
        from the current document (a security group rule or its Elastic IP changed)."""
        ok, error = await self._vnm(job, "update_sg", sink, job.vm.deploy_id or f"one-{job.vm.id}")
        if not ok:
            sink("E", f"network driver update_sg failed: {error}; the VM keeps its "
                      "earlier rules")
        return ok, error, None

    async def _live_migrate(self, job: Job, sink: LogSink) -> tuple[bool, str, None]:
        """The network driver's pre on the target, then the move, then its post on the
        target and clean on the source; a failed move cleans the target instead."""
        assert job.history is not None
        source = job.at_source()
        ok, error = await self._vnm(job, "pre", sink)  # idempotent, also after a crash
        if not ok:
            return False, f"network driver pre: {error}", None
        ok, error, _ = await self._live_send(job, source, sink)
        if not ok:
            cleaned, why = await self._vnm(job, "clean", sink)
            if not cleaned:
                sink("E", f"network driver clean on {job.hostname} failed (ignored): {why}")
            return False, error, None
        deploy_id = job.vm.deploy_id or f"one-{job.vm.id}"
        posted, why = await self._vnm(job, "post", sink, deploy_id)
        if not posted:  # the guest runs on the target without its rules: say so loudly
            sink("E", f"network driver post on {job.hostname} failed: {why}")
        cleaned, why = await self._vnm(source, "clean", sink)
        if not cleaned:
            sink("E", f"network driver clean on {source.hostname} failed (ignored): {why}")
        return True, "", None

    async def _live_send(self, job: Job, source: Job, sink: LogSink) -> tuple[bool, str, None]:
        """The target gets ready to receive (drivers with `migrate_receive`: it prints the
        PORT it listens on), then the source sends: `migrate <deploy_id> <target> <host>`
        with the target's URI as MIGR_URI in the document. A failed send cancels the
        waiting receiver; the guest stays on the source."""
        assert job.history is not None and job.host is not None
        target, driver = job.hostname, job.history.vmm_mad
        runner, source_runner = self.host_runner(job), self.host_runner(source)
        vmid, deploy_id = str(job.vm.id), job.vm.deploy_id or f"one-{job.vm.id}"
        timeout = self.cloud.config.driver_timeout
        if job.recovering and await self._migrated(job, source, deploy_id, sink):
            return True, "", None
        doc = job.doc
        receiving = self.drivers.has_action("vmm", driver, "migrate_receive")
        if receiving:
            result = await runner.run("vmm", driver, "migrate_receive",
                                      [deploy_id, source.hostname, target, vmid, target],
                                      stdin=job.doc, timeout=timeout, log=sink)
            port = dict(_pairs(result.stdout)).get("PORT", "")
            if not result.ok or not port.isdigit():
                return False, result.error or f"migrate_receive printed no PORT on {target}", None
            doc = _with_element(job.doc, "MIGR_URI", f"tcp:{self._address(job.host)}:{port}")
        result = await source_runner.run(
            "vmm", driver, "migrate", [deploy_id, target, source.hostname, vmid, source.hostname],
            stdin=doc, timeout=timeout, log=sink)
        if not result.ok and receiving:
            undo = await runner.run("vmm", driver, "cancel", [deploy_id, target, vmid, target],
                                    stdin=job.doc, timeout=timeout, log=sink)
            if not undo.ok:
                sink("I", f"migrate: cancelling the receiver on {target} reported "
                          f"'{undo.error}' (ignored)")
        return result.ok, result.error, None

    async def _migrated(self, job: Job, source: Job, deploy_id: str, sink: LogSink) -> bool:
        """After a crash: did the interrupted live migration finish? Only when the guest
        runs on the target and no longer on the source (a receiver still waiting there
        also polls as running); the copy qemu leaves paused on the source is removed."""
        states = []
        for side in (job, source):
            result = await self.host_runner(side).run(
                "vmm", job.history.vmm_mad if job.history else "", "poll",
                [deploy_id, side.hostname, str(job.vm.id), side.hostname], stdin=side.doc,
                timeout=self.cloud.config.driver_timeout, log=sink)
            states.append(poll_state(result.stdout) if result.ok else "?")
        if states[0] != "a" or states[1] not in ("d", ""):
            return False
        sink("I", f"{job.hostname} runs the VM and {source.hostname} no longer does: the "
                  "migration had completed")
        await self.host_runner(source).run(
            "vmm", job.history.vmm_mad if job.history else "", "cancel",
            [deploy_id, source.hostname, str(job.vm.id), source.hostname], stdin=source.doc,
            timeout=self.cloud.config.driver_timeout, log=sink)
        return True

    @staticmethod
    def _address(host: Host) -> str:
        """Where other hosts reach `host`: MIGRATION_ADDRESS, else SSH_ADDRESS, else its name."""
        attrs = template.parse(host.template)
        return attrs.get("MIGRATION_ADDRESS") or attrs.get("SSH_ADDRESS") or host.name

    async def _vmm(self, job: Job, sink: LogSink) -> tuple[bool, str, str | None]:
        """The VMM action of the step, within the network driver's pre/post (a VM arriving)
        or followed by its clean (a VM leaving the host), as OpenNebula 3.4 runs them."""
        step = job.step
        arriving = step in (Step.BOOT, Step.RESTORE)
        if arriving:
            ok, error = await self._vnm(job, "pre", sink)
            if not ok:
                return False, f"network driver pre: {error}", None
        ok, error, new_id = await self._vmm_action(job, sink)
        if ok and arriving:
            deploy_id = new_id or job.vm.deploy_id or f"one-{job.vm.id}"
            posted, why = await self._vnm(job, "post", sink, deploy_id)
            if not posted:  # never leave a VM running without the rules it asked for
                assert job.history is not None
                await self.host_runner(job).run(
                    "vmm", job.history.vmm_mad, "cancel",
                    [deploy_id, job.hostname, str(job.vm.id), job.hostname], stdin=job.doc,
                    timeout=self.cloud.config.driver_timeout, log=sink)
                await self._vnm(job, "clean", sink)
                return False, f"network driver post: {why}", None
        if ok and step in _LEAVING:
            cleaned, why = await self._vnm(job, "clean", sink)
            if not cleaned:
                sink("E", f"network driver clean failed (ignored): {why}")
        return ok, error, new_id

    async def _vnm(self, job: Job, action: str, sink: LogSink,
                   deploy_id: str = "") -> tuple[bool, str]:
        """`vnm/<driver>/<action> <base64 VM XML> [deploy id]` on the host, when the host's
        network driver has that action (the dummy driver has none)."""
        assert job.history is not None and job.host is not None
        driver = job.history.vnm_mad
        if not driver or not self.drivers.has_action("vnm", driver, action):
            return True, ""
        runner = self.host_runner(job, "vnm")
        with_id = action in ("post", "update_sg")
        args = [base64.b64encode(job.doc).decode()] + ([deploy_id] if with_id else [])
        result = await runner.run("vnm", driver, action, args, stdin=job.doc,
                                  timeout=self.cloud.config.driver_timeout, log=sink)
        return result.ok, result.error

    async def _vmm_action(self, job: Job, sink: LogSink) -> tuple[bool, str, str | None]:
        assert job.history is not None
        runner = self.host_runner(job)
        host, vmid, driver = job.hostname, str(job.vm.id), job.history.vmm_mad
        timeout = self.cloud.config.driver_timeout
        deploy_id = job.vm.deploy_id or f"one-{vmid}"
        checkpoint = f"{job.vmdir}/checkpoint"
        step = job.step
        if job.recovering:
            done = await self._already_done(job, runner, deploy_id, sink)
            if done is not None:
                return True, "", done or None
        if step is Step.BOOT:
            dfile = f"{job.vmdir}/deployment.{job.history.seq}"
            result = await runner.run("vmm", driver, "deploy", [dfile, host, vmid, host],
                                      stdin=job.doc, timeout=timeout, log=sink)
            new_id = _last_line(result.stdout) or deploy_id
            return result.ok, result.error, new_id if result.ok else None
        action, args = {
            Step.RESTORE: ("restore", [checkpoint, host, vmid, host]),
            Step.SHUTDOWN: ("shutdown", [deploy_id, host, vmid, host]),
            Step.CANCEL: ("cancel", [deploy_id, host, vmid, host]),
            Step.REBOOT: ("reboot", [deploy_id, host, vmid, host]),
            Step.SAVE_STOP: ("save", [deploy_id, checkpoint, host, vmid, host]),
            Step.SAVE_SUSPEND: ("save", [deploy_id, checkpoint, host, vmid, host]),
            Step.SAVE_MIGRATE: ("save", [deploy_id, checkpoint, host, vmid, host]),
        }[step]
        result = await runner.run("vmm", driver, action, args, stdin=job.doc, timeout=timeout,
                                  log=sink)
        return result.ok, result.error, None

    async def _already_done(self, job: Job, runner: Runner, deploy_id: str,
                            sink: LogSink) -> str | None:
        """After a crash: did the interrupted VMM step already happen? Asks the host.

        Returns the deploy id ("" if unchanged) when it did, None when it must run again.
        """
        assert job.history is not None
        host, vmid = job.hostname, str(job.vm.id)
        result = await runner.run("vmm", job.history.vmm_mad, "poll", [deploy_id, host, vmid, host],
                                  stdin=job.doc, timeout=self.cloud.config.driver_timeout,
                                  log=sink)
        if not result.ok:
            return None
        letter = poll_state(result.stdout)
        step = job.step
        running = letter == "a"
        gone = letter in ("d", "")
        if step in (Step.BOOT, Step.RESTORE) and running:
            sink("I", f"Host {host} reports the VM running: {step.value} had completed")
            return deploy_id if step is Step.BOOT else ""
        if step in (Step.SHUTDOWN, Step.CANCEL) and gone:
            sink("I", f"Host {host} no longer runs the VM: {step.value} had completed")
            return ""
        if step in (Step.SAVE_STOP, Step.SAVE_SUSPEND, Step.SAVE_MIGRATE) and (letter == "p"
                                                                               or gone):
            sink("I", f"Host {host} reports the VM saved: {step.value} had completed")
            return ""
        if step is Step.REBOOT and running:
            return ""
        return None


# steps whose network driver runs post or update_sg: only their document carries the VM's
# security group rules (the others have no use for the queries)
_FILTERING = (Step.BOOT, Step.RESTORE, Step.MIGRATE, Step.UPDATE_SG)
# VMM steps after which the VM no longer runs on the host: the network driver cleans
_LEAVING = (Step.SHUTDOWN, Step.CANCEL, Step.SAVE_STOP, Step.SAVE_SUSPEND, Step.SAVE_MIGRATE)
# steps that only move files between the front-end and the host
_TRANSFERS = (Step.PROLOG, Step.PROLOG_RESUME, Step.EPILOG, Step.EPILOG_STOP,
              Step.PROLOG_MIGRATE)


def _pairs(text: str) -> list[tuple[str, str]]:
    """NAME=VALUE tokens of a driver's output."""
    return [(name.upper(), value) for name, sep, value
            in (token.partition("=") for token in shlex.split(text)) if sep]


def _with_element(doc: bytes, name: str, text: str) -> bytes:
    """The VM document with one more top-level element (data for one driver call)."""
    root = ET.fromstring(doc)
    ET.SubElement(root, name).text = text
    return ET.tostring(root)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def poll_state(output: str) -> str:
    """The STATE letter of a VMM poll line (`STATE=a USEDCPU=...`), or ""."""
    return dict(_pairs(output)).get("STATE", "").strip()


class LogSink:
    """Collects driver log lines with their times; written to the VM's log with the
    step's outcome (the event loop never blocks on the database)."""

    def __init__(self, vm_id: int) -> None:
        self.vm_id = vm_id
        self.entries: list[LogEntry] = []

    def __call__(self, severity: str, message: str) -> None:
        self.entries.append(LogEntry(vm_id=self.vm_id, severity=severity, message=message,
                                     time=time.time()))
