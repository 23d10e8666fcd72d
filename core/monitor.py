"""Host monitoring through IM probes and VM polling through the VMM driver.

A host is probed when it is new (INIT), when its interval has passed, when it was
enabled or updated (the service resets its last monitoring time), or on `nubo host sync`.
Probe output is `NAME=VALUE` tokens; TOTAL*/FREE*/USED* feed the host share, every token
lands in the host template. A probe
that fails or times out puts the host in ERROR with the message (a DISABLED host stays
DISABLED). A host left MONITORING (a probe cut off by a stop) is probed again at once.
Between probes, core.heartbeat beats every SSH host each HEARTBEAT_INTERVAL: a dead host is
in ERROR seconds after it died, and one that answers again is probed at once.
VMs in RUNNING or UNKNOWN are polled, one poll per VM at a time; the STATE letter becomes
an event.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections.abc import Coroutine
from typing import Any

import anyio
from sqlmodel import Session, col, select

from core import documents, hooks, template
from core.drivers import Drivers
from core.errors import InvalidRequest, InvalidState
from core.heartbeat import Heartbeats
from core.lifecycle import Event, HostState, LcmState, Step, VmState
from core.models import VM, Group, History, Host, Operation, User, now
from core.service import vms
from core.service.context import MONITOR, Cloud, host_log, vm_log
from core.service.hosts import SYNC
from core.service.transitions import apply

log = logging.getLogger("nubo.monitor")

SHARE = {
    "TOTALCPU": "max_cpu",
    "TOTALMEMORY": "max_mem",
    "FREECPU": "free_cpu",
    "FREEMEMORY": "free_mem",
    "USEDCPU": "used_cpu",
    "USEDMEMORY": "used_mem",
}
POLL_EVENTS = {
    "a": Event.POLL_RUNNING,
    "p": Event.POLL_SUSPENDED,
    "e": Event.POLL_ERROR,
    "d": Event.POLL_MISSING,
}


def parse_metrics(output: str) -> template.Template:
    """`A=1 B="two words"` (one line or many) as a template; commas are separators as in 3.4."""
    attrs = template.Template()
    try:
        tokens = shlex.split(output.replace(",", "\n"))
    except ValueError as exc:
        raise InvalidRequest(f"cannot parse probe output: {exc}") from None
    for token in tokens:
        name, sep, value = token.partition("=")
        if not sep or not name or not name.replace("_", "").isalnum():
            raise InvalidRequest(f"cannot parse probe output: {token!r} is not NAME=VALUE")
        attrs.set(name.upper(), value)
    return attrs


class Monitor:
    def __init__(self, cloud: Cloud, drivers: Drivers) -> None:
        self.cloud = cloud
        self.drivers = drivers
        self._inflight: set[int] = set()
        self._polling: set[int] = set()  # VM ids whose poll runs (one at a time per VM)
        self._missed: dict[int, int] = {}  # host id -> probes failed in a row
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_vm_poll = 0.0
        self.heartbeats = Heartbeats(cloud, drivers, self._no_heartbeat, self._heartbeat_back)
        self._last_beat_sync = -float("inf")

    async def run(self) -> None:
        while True:
            try:
                await self.cycle()
            except Exception:
                log.exception("monitor cycle failed")
            woken = await self.cloud.wakeups.wait(MONITOR, 1.0)
            if woken and self.cloud.wakeups.take(SYNC):
                self.drivers.invalidate()
                await self.cycle(force=True)

    async def cycle(self, force: bool = False) -> None:
        due = await anyio.to_thread.run_sync(self._due_hosts, force)
        for host_id in due:
            self._spawn(self.monitor_host(host_id))
        if force or time.monotonic() - self._last_beat_sync >= self.heartbeats.interval:
            self._last_beat_sync = time.monotonic()
            self.heartbeats.update(await anyio.to_thread.run_sync(self.heartbeats.targets))
        interval = self.cloud.config.vm_polling_interval
        if time.monotonic() - self._last_vm_poll >= interval:
            self._last_vm_poll = time.monotonic()
            for vm_id in await anyio.to_thread.run_sync(self._pollable_vms):
                self._spawn(self.poll_vm(vm_id))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        await self.heartbeats.stop()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _due_hosts(self, force: bool) -> list[int]:
        horizon = now() - self.cloud.config.monitoring_interval
        with self.cloud.session() as s:
            hosts = s.exec(select(Host)).all()
            due = [
                h.id for h in hosts
                if h.id is not None and h.id not in self._inflight
                and (force or h.state in (HostState.INIT, HostState.MONITORING)
                     or h.last_mon_time <= horizon)
            ]
        return due

    async def monitor_host(self, host_id: int) -> None:
        self._inflight.add(host_id)
        try:
            loaded = await anyio.to_thread.run_sync(self._host_doc, host_id)
            if loaded is None:
                return
            name, im, attrs, doc, seen, first = loaded
            runner = self.drivers.for_host(name, attrs, "im", im)
            result = await self.drivers.run_probes(
                runner, im, host_id, name, stdin=doc, timeout=self.cloud.config.monitor_timeout
            )
            error = "" if result.ok else result.error
            metrics = template.Template()
            if result.ok:
                try:
                    metrics = parse_metrics(result.stdout)
                except InvalidRequest as exc:
                    error = str(exc)
            if not error:
                self._missed.pop(host_id, None)
                await anyio.to_thread.run_sync(self._host_monitored, host_id, seen, metrics,
                                               first)
                return
            self._missed[host_id] = missed = self._missed.get(host_id, 0) + 1
            if missed < self.cloud.config.host_missed_probes:
                log.warning("host %s missed probe %d of %d before ERROR: %s", name, missed,
                            self.cloud.config.host_missed_probes, error)
                await anyio.to_thread.run_sync(self._retry_soon, host_id)
                return
            await anyio.to_thread.run_sync(self._host_failed, host_id, seen, error, first)
        finally:
            self._inflight.discard(host_id)

    def _host_doc(self, host_id: int
                  ) -> tuple[str, str, dict[str, str], bytes, str, bool] | None:
        """What a probe needs; the last item: the host is new (or was just enabled)."""
        with self.cloud.session() as s:
            host = s.get(Host, host_id, with_for_update=True)
            if host is None:
                return None
            first = host.state == HostState.INIT
            if host.state in (HostState.INIT, HostState.MONITORED):
                host.state = HostState.MONITORING  # 3.4: shown as `update` while probed
                s.add(host)
            attrs = template.strings(host.template)
            doc = documents.to_string(documents.host_xml(host)).encode()
            return host.name, host.im_mad, attrs, doc, host.template, first

    @staticmethod
    def _stale(host: Host, seen: str, first: bool) -> bool:
        """The host was updated while the probe ran (e.g. its SSH address was set just
        after it was created): drop the result and probe it again at once (still as its
        first probe, when it was)."""
        if host.template == seen:
            return False
        host.last_mon_time = 0
        if first and host.state == HostState.MONITORING:
            host.state = HostState.INIT
        return True

    def _host_monitored(self, host_id: int, seen: str, metrics: template.Template,
                        first: bool) -> None:
        with self.cloud.session() as s:
            host = s.get(Host, host_id, with_for_update=True)
            if host is None:
                return
            if self._stale(host, seen, first):
                s.add(host)
                return
            current = template.parse(host.template)
            current.remove("ERROR")
            current.merge(metrics)
            host.template = current.dumps()
            for name, attr in SHARE.items():
                value = metrics.get(name)
                if value is not None:
                    try:
                        setattr(host, attr, int(float(value)))
                    except ValueError:
                        pass
            if host.state == HostState.ERROR:
                reclaimed = _reclaim(s, host)
                host_log(s, host_id, "Answers again: MONITORED" + (
                    f"; queued the removal of what {reclaimed} VM(s) left here while it was "
                    "away" if reclaimed else ""))
            elif first:
                host_log(s, host_id, "Monitored: its first probe succeeded")
            if host.state != HostState.DISABLED:
                host.state = HostState.MONITORED
            host.error = ""
            host.last_mon_time = now()
            s.add(host)

    def _retry_soon(self, host_id: int) -> None:
        """Probe a host that missed one again after a second rather than an interval."""
        with self.cloud.session() as s:
            host = s.get(Host, host_id, with_for_update=True)
            if host is not None:
                host.last_mon_time = now() - int(self.cloud.config.monitoring_interval) + 1
                s.add(host)

    async def _no_heartbeat(self, host_id: int, message: str) -> None:
        """Heartbeats missed: the host is in ERROR now, not at its next probe; what still
        waits on its connection fails at once rather than at its timeout."""
        name = await anyio.to_thread.run_sync(self._host_failed, host_id, None, message)
        if name:
            await self.drivers.abort(name)

    async def _heartbeat_back(self, host_id: int) -> None:
        """A host answers again after missing beats: probe it now (it leaves ERROR)."""
        if host_id not in self._inflight:
            self._spawn(self.monitor_host(host_id))

    def _host_failed(self, host_id: int, seen: str | None, message: str,
                     first: bool = False) -> str:
        """Put the host in ERROR (unless DISABLED); its name when it is in ERROR now.
        seen: the template the failed probe was given (None for a heartbeat)."""
        with self.cloud.session() as s:
            host = s.get(Host, host_id, with_for_update=True)
            if host is None:
                return ""
            if seen is not None and self._stale(host, seen, first):
                s.add(host)
                return ""
            if host.state not in (HostState.DISABLED, HostState.ERROR):
                hooks.fire_host(s, host, "ERROR", prev_state=host.state)
                host.state = HostState.ERROR
                lost = _lost(s, host)
                host_log(s, host_id, f"In ERROR: {message or 'monitoring failed'}" + (
                    f"; {lost} VM(s) UNKNOWN until it answers" if lost else ""), "E")
            host.error = message or "monitoring failed"
            host.last_mon_time = now()
            s.add(host)
            name = host.name if host.state == HostState.ERROR else ""
        log.warning("host %s in ERROR: %s", host_id, message)
        return name

    # --- VM polling ---

    def _pollable_vms(self) -> list[int]:
        with self.cloud.session() as s:
            busy = select(Operation.vm_id).where(col(Operation.status).in_(("pending", "running")))
            rows = s.exec(
                select(VM.id).where(
                    VM.state == VmState.ACTIVE,
                    col(VM.lcm_state).in_((LcmState.RUNNING, LcmState.UNKNOWN)),
                    col(VM.id).not_in(busy),
                )
            ).all()
            return [r for r in rows if r is not None]

    async def poll_vm(self, vm_id: int) -> None:
        if vm_id in self._polling:  # the last poll still waits on its host
            return
        self._polling.add(vm_id)
        try:
            await self._poll_vm(vm_id)
        finally:
            self._polling.discard(vm_id)

    async def _poll_vm(self, vm_id: int) -> None:
        loaded = await anyio.to_thread.run_sync(self._vm_doc, vm_id)
        if loaded is None:
            return
        host_name, attrs, vmm, deploy_id, doc, seq = loaded
        runner = self.drivers.for_host(host_name, attrs, "vmm", vmm)
        result = await runner.run(
            "vmm", vmm, "poll", [deploy_id, host_name, str(vm_id), host_name], stdin=doc,
            timeout=self.cloud.config.monitor_timeout,
        )
        await anyio.to_thread.run_sync(self._vm_polled, vm_id, seq, result.ok, result.stdout,
                                       result.error)
        if result.ok and (self.cloud.config.remotes / "vmm" / vmm / "console").is_file():
            shown = await runner.run(
                "vmm", vmm, "console", [deploy_id, host_name, str(vm_id), host_name],
                stdin=doc, timeout=self.cloud.config.monitor_timeout)
            if shown.ok:
                await anyio.to_thread.run_sync(vms.save_console, self.cloud, vm_id, shown.stdout)

    def _vm_doc(self, vm_id: int) -> tuple[str, dict[str, str], str, str, bytes, int] | None:
        with self.cloud.session() as s:
            vm = s.get(VM, vm_id)
            if vm is None or vm.host_id is None:
                return None
            host = s.get(Host, vm.host_id)
            if host is None:
                return None
            history = list(
                s.exec(select(History).where(History.vm_id == vm_id).order_by(col(History.seq)))
            )
            user, group = s.get(User, vm.uid), s.get(Group, vm.gid)
            doc = documents.to_string(documents.vm_xml(
                vm, history=history, uname=user.name if user else "",
                gname=group.name if group else "")).encode()
            attrs = template.strings(host.template)
            vmm = history[-1].vmm_mad if history else host.vmm_mad
            seq = history[-1].seq if history else -1
            return host.name, attrs, vmm, vm.deploy_id or f"one-{vm_id}", doc, seq

    def _vm_polled(self, vm_id: int, seq: int, ok: bool, output: str, error: str) -> None:
        """Record a poll of placement `seq`; dropped when the VM left that placement (or
        stopped running) while the poll waited on its host: a late answer from the host
        it left must not touch the VM where it runs now."""
        with self.cloud.session() as s:
            vm = s.get(VM, vm_id, with_for_update=True)
            if vm is None or vm.state != VmState.ACTIVE or vm.lcm_state not in (
                    LcmState.RUNNING, LcmState.UNKNOWN):
                return
            last = s.exec(select(History.seq).where(History.vm_id == vm_id)
                          .order_by(col(History.seq).desc()).limit(1)).first()
            if (last if last is not None else -1) != seq:
                return
            if not ok:
                vm_log(s, vm_id, f"Poll failed: {error}", "E")
                return
            try:
                metrics = parse_metrics(output)
            except InvalidRequest as exc:
                vm_log(s, vm_id, f"Poll output rejected: {exc}", "E")
                return
            extra = template.Template()
            for name, value in metrics:
                assert isinstance(value, str)
                if name == "USEDCPU":
                    vm.used_cpu = _num(value)
                elif name == "USEDMEMORY":
                    vm.used_memory = int(_num(value))
                elif name == "NETRX":
                    vm.net_rx = int(_num(value))
                elif name == "NETTX":
                    vm.net_tx = int(_num(value))
                elif name != "STATE":
                    extra.set(name, value)
            vm.monitoring = extra.dumps()
            vm.last_poll = now()
            event = POLL_EVENTS.get(metrics.get("STATE") or "-")
            if event is not None:
                try:
                    reason = "the hypervisor reports an error" if event == Event.POLL_ERROR else None
                    apply(s, vm, event, message=reason)
                except InvalidState:
                    pass  # e.g. `a` while RUNNING: nothing changes
            s.add(vm)


def _num(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


def _lost(session: Session, host: Host) -> int:
    """A host entering ERROR: its RUNNING VMs are UNKNOWN until a poll finds them again;
    how many."""
    vms = session.exec(select(VM).where(VM.host_id == host.id, VM.state == VmState.ACTIVE,
                                        VM.lcm_state == LcmState.RUNNING)).all()
    for vm in vms:
        vm_log(session, vm.id or 0, f"Host {host.name} does not answer: the VM's state is "
               "unknown until it does")
        apply(session, vm, Event.POLL_MISSING)
    return len(vms)


def _reclaim(session: Session, host: Host) -> int:
    """A host back from ERROR: what VMs left there while it was away (their cleanup asked
    nothing of it) is removed by a RECLAIM step each."""
    left = session.exec(select(History).where(History.host_id == host.id,
                                              col(History.leftover).is_(True))).all()
    for history in left:
        history.leftover = False
        session.add(history)
        session.add(Operation(vm_id=history.vm_id, step=Step.RECLAIM.value, seq=history.seq))
        vm_log(session, history.vm_id, f"Host {host.name} answers again: queued the removal "
               f"of what the VM left there (history seq {history.seq})")
    return len(left)
