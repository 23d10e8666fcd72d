"""Heartbeats: how a dead host is noticed in seconds rather than at its next probe.

Full monitoring (core.monitor) runs every probe on a host each MONITORING_INTERVAL (60 s,
as OpenNebula), and a probe to a host whose link was cut only fails after
MONITOR_TIMEOUT. Between probes, every host reached over SSH gets a heartbeat each
HEARTBEAT_INTERVAL seconds: `true` on a channel of its own (SshRunner.beat), which must
answer within the interval. HOST_MISSED_BEATS beats missed in a row put the host in ERROR
(through the monitor, which fires the ERROR hooks once); a host that answers again after
missing beats is probed at once, which brings it back from ERROR.

One task per host beats it, so a host that hangs delays nobody else. The set of hosts is
read again every interval: hosts in INIT (never probed), DISABLED hosts, hosts whose
drivers run on the front-end (localhost, the dummy drivers) and public-cloud regions are
not beaten.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from sqlmodel import select

from core import template
from core.drivers import Drivers, Runner
from core.lifecycle import HostState
from core.models import Host
from core.service.context import Cloud, host_log

log = logging.getLogger("nubo.heartbeat")


@dataclass(frozen=True)
class Target:
    name: str
    im: str
    attributes: dict[str, str]
    in_error: bool


class Heartbeats:
    def __init__(self, cloud: Cloud, drivers: Drivers,
                 missed: Callable[[int, str], Awaitable[None]],
                 answered: Callable[[int], Awaitable[None]]) -> None:
        """missed(host id, why): the host missed HOST_MISSED_BEATS beats in a row (called
        once per outage); answered(host id): it answers again after missing some."""
        self.cloud = cloud
        self.drivers = drivers
        self._missed = missed
        self._answered = answered
        self._targets: dict[int, Target] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._parsed: dict[int, tuple[str, dict[str, str]]] = {}  # host id -> (template, attrs)

    @property
    def interval(self) -> float:
        return self.cloud.config.heartbeat_interval

    def targets(self) -> dict[int, Target]:
        """The hosts to beat, read from the database (in a worker thread)."""
        wanted = (HostState.MONITORED, HostState.MONITORING, HostState.ERROR)
        found: dict[int, Target] = {}
        with self.cloud.session() as s:
            for host in s.exec(select(Host).where(Host.state.in_(wanted))):  # type: ignore[attr-defined]
                if host.id is None:
                    continue
                known = self._parsed.get(host.id)
                if known is None or known[0] != host.template:
                    known = self._parsed[host.id] = (host.template,
                                                     template.strings(host.template))
                found[host.id] = Target(host.name, host.im_mad, known[1],
                                        host.state == HostState.ERROR)
        for gone in set(self._parsed) - set(found):
            del self._parsed[gone]
        return found

    def update(self, targets: dict[int, Target]) -> None:
        """Beat exactly these hosts from now on."""
        if self.interval <= 0:
            targets = {}
        self._targets = {i: t for i, t in targets.items() if not self._local(t)}
        for host_id in set(self._tasks) - set(self._targets):
            self._tasks.pop(host_id).cancel()
        for host_id, target in self._targets.items():
            if host_id not in self._tasks:
                self._tasks[host_id] = asyncio.create_task(
                    self._beat(host_id, target.in_error), name=f"heartbeat-{target.name}")

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _runner(self, target: Target) -> Runner:
        return self.drivers.for_host(target.name, target.attributes, "im", target.im)

    def _local(self, target: Target) -> bool:
        """Nothing to beat: the front-end itself, or a driver that reaches no machine of
        ours (a public cloud's API answers each call, or the call fails)."""
        runner = self._runner(target)
        return runner is self.drivers.local() or not getattr(runner, "needs_heartbeat", True)

    def _note(self, host_id: int, message: str, severity: str) -> None:
        with self.cloud.session() as s:
            if s.get(Host, host_id) is not None:
                host_log(s, host_id, message, severity)

    async def _beat(self, host_id: int, in_error: bool) -> None:
        """Beat one host until cancelled. A host already in ERROR counts as having missed
        its beats, so its first answer has it probed."""
        threshold = max(1, self.cloud.config.host_missed_beats)
        missed = threshold if in_error else 0
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            target = self._targets.get(host_id)
            if target is None:
                return
            interval = self.interval
            result = await self._runner(target).beat(interval)
            try:
                if result.ok:
                    if missed:
                        log.info("host %s answers its heartbeat again", target.name)
                        await anyio.to_thread.run_sync(
                            self._note, host_id, "Answers its heartbeat again", "I")
                        await self._answered(host_id)
                    missed = 0
                else:
                    missed += 1
                    if missed < threshold:
                        log.warning("host %s missed heartbeat %d of %d: %s", target.name,
                                    missed, threshold, result.error)
                        await anyio.to_thread.run_sync(
                            self._note, host_id,
                            f"Missed heartbeat {missed} of {threshold}: {result.error}", "E")
                    elif missed == threshold:
                        await self._missed(host_id, f"no answer to {threshold} heartbeat(s) "
                                           f"in a row: {result.error}")
            except Exception:  # a database hiccup must not stop this host's beats
                log.exception("heartbeat of host %s", target.name)
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))
