"""The daemon's loop over HookRun rows (queued by core.hooks): each hook's command, a few at
a time (HOOK_CONCURRENCY), each with HOOK_TIMEOUT, its exit status and output recorded on
the row (`nubo hook log`) and, for a VM hook, in the VM's log. A hook that hangs or fails
costs only its own slot. A remote hook runs on its host or nowhere: when that host was
deleted after the event, the run fails without running. A run found `running` at start-up
was cut off by a stop or a crash and runs again: a fault-tolerance hook must not be lost
(hooks should be safe to run twice, as OpenNebula's are).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass

import anyio
from sqlmodel import select

from core import hooks, template
from core.drivers import Drivers, Result, Runner
from core.models import HookRun, Host, LogEntry
from core.service.context import HOOKS, Cloud, host_log
from core.work_loop import WorkLoop

log = logging.getLogger("nubo.hooks")
IDLE_SECONDS = 5.0  # runs are woken for (core.hooks queues them with notify_after_commit)
OUTPUT_LIMIT = 4000  # characters of a run's output kept


@dataclass(frozen=True)
class Work:
    run_id: int
    name: str
    resource: str
    object_id: int
    event: str
    argv: list[str]
    remote: str  # remote hooks: the name of the host it runs on, as queued
    host: Host | None  # that host, None when it was deleted since


@dataclass(frozen=True)
class NotRun:
    """The Result of a run that never started: no process, only a reason."""

    error: str
    rc: int = 255  # as for a host that does not answer
    stdout: str = ""
    ok: bool = False

    @property
    def stderr(self) -> str:
        return self.error


class HookRuns(WorkLoop):
    model = HookRun
    channel = HOOKS
    idle = IDLE_SECONDS
    log = log

    def __init__(self, cloud: Cloud, drivers: Drivers) -> None:
        super().__init__(cloud, cloud.config.hook_concurrency)
        self.drivers = drivers

    def started(self, row: HookRun) -> None:
        row.started = time.time()

    def _load(self, run_id: int) -> Work | None:
        with self.cloud.session() as s:
            run = s.get(HookRun, run_id)
            if run is None:
                return None
            host = s.exec(select(Host).where(Host.name == run.host)).first() if run.host else None
            return Work(run_id=run_id, name=run.hook_name, resource=run.resource,
                        object_id=run.object_id, event=run.event,
                        argv=[str(a) for a in json.loads(run.argv)], remote=run.host,
                        host=host)

    async def execute(self, run_id: int) -> None:
        try:
            work = await anyio.to_thread.run_sync(self._load, run_id)
            if work is None:
                return
            result = await self._command(work)
            await anyio.to_thread.run_sync(self._record, work, result)
        except Exception as exc:  # a bug here must not leave the run `running` forever
            log.exception("hook run %s crashed", run_id)
            await anyio.to_thread.run_sync(self._crashed, run_id, str(exc))

    async def _command(self, work: Work) -> Result:
        timeout = self.cloud.config.hook_timeout
        words = work.argv
        tool = hooks.ONE_TOOLS.get(words[0])
        if tool is not None:  # `onevm resubmit 7`: Nubo's CLI, as oneadmin, on the front-end
            argv = [sys.executable, "-m", "core.cli", tool, *words[1:]]
            return await self.drivers.local().execute(argv, timeout=timeout, env=self._cli_env())
        if work.remote and work.host is None:  # deleted since it fired: not the front-end either
            return NotRun(f"host {work.remote} no longer exists: the hook did not run")
        runner = self._runner(work)
        name = os.path.basename(words[0])
        shipped = self._shipped(name)
        if not os.path.isabs(words[0]) or (shipped and "/hooks/" in words[0]
                                           and not os.path.exists(words[0])):
            if work.host is None:  # on the front-end: with the CLI's address and credentials
                path = str(self.cloud.config.remotes / "hooks" / (shipped or name))
                return await runner.execute([path, *words[1:]], timeout=timeout,
                                            env=self._cli_env())
            return await runner.run("hooks", "", shipped or name, words[1:], timeout=timeout)
        local = work.host is None  # the CLI's address and credentials mean nothing on a host
        return await runner.execute(words, timeout=timeout, env=self._cli_env() if local else None)

    def _shipped(self, name: str) -> str:
        """The hook in remotes/hooks/ that `name` means (`host_error.rb` → host_error)."""
        folder = self.cloud.config.remotes / "hooks"
        for candidate in (name, os.path.splitext(name)[0]):
            if candidate and (folder / candidate).is_file():
                return candidate
        return ""

    def _runner(self, work: Work) -> Runner:
        if work.host is None:
            return self.drivers.local()
        attrs = template.strings(work.host.template)
        return self.drivers.for_host(work.host.name, attrs, "hooks", "")

    def _cli_env(self) -> dict[str, str]:
        cfg = self.cloud.config
        listen = "127.0.0.1" if cfg.host in ("0.0.0.0", "", "::") else cfg.host
        return {"NUBO_URL": f"http://{listen}:{cfg.port}/RPC2", "ONE_AUTH": str(cfg.one_auth),
                "NUBO_VAR": str(cfg.var), "NUBO_MONITORING_INTERVAL": f"{cfg.monitoring_interval:g}",
                "NUBO_FENCE_COMMAND": cfg.fence_command, "NUBO_FENCE_GRACE": f"{cfg.fence_grace:g}"}

    def _record(self, work: Work, result: Result) -> None:
        output = (result.stdout + result.stderr).strip()[-OUTPUT_LIMIT:]
        with self.cloud.session() as s:
            run = s.get(HookRun, work.run_id)
            if run is None:
                return
            run.status = "done" if result.ok else "failed"
            run.rc, run.output, run.finished = result.rc, output, time.time()
            s.add(run)
            where = f" on {work.remote}" if work.remote else ""
            line = (f"Hook {work.name} ({work.event}){where}: exit {result.rc}"
                    + ("" if result.ok else f": {result.error}"))
            severity = "I" if result.ok else "E"
            if work.resource == "vm":
                s.add(LogEntry(vm_id=work.object_id, severity=severity, message=line))
            elif s.get(Host, work.object_id) is not None:
                host_log(s, work.object_id, line, severity)
        if not result.ok:
            log.warning("%s %s %s", work.resource, work.object_id, line)

    def _crashed(self, run_id: int, error: str) -> None:
        with self.cloud.session() as s:
            run = s.get(HookRun, run_id)
            if run is not None:
                run.status, run.output, run.finished = "failed", f"internal error: {error}", \
                    time.time()
                s.add(run)
