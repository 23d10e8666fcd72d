"""Run one driver action, `remotes/<kind>/<driver>/<action> args...`, with OpenNebula's
conventions (drivers.protocol), on the front-end or on a host.

    Runner (core.drivers) ── LocalRunner   subprocess on the front-end, straight from remotes_dir
                          └─ SshRunner     same path under the host's remote dir, over one
                                           multiplexed asyncssh connection; the tree is synced
                                           by content hash and re-synced when a script is missing
    RunnerPool            one runner per host name, what the daemon holds

SshRunner lives in drivers.ssh, the synced tree in drivers.remotes_tree; this module is the
entry point and re-exports their public names.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterable, Mapping
from pathlib import Path

from core.drivers import LogFn, Result, Runner
from drivers.netns import netns_socket
from drivers.protocol import (
    ERROR_BEGIN,
    ERROR_END,
    RC_COMMAND_MISSING,
    RC_NOT_EXECUTABLE,
    RC_SCRIPT_MISSING,
    RC_TIMEOUT,
    RC_UNREACHABLE,
    SAFE_NAME,
    DriverResult,
    RunnerBase,
    StderrLog,
    action_path,
    error_block,
    failure,
)
from drivers.remotes_tree import HASH_FILE, MANIFEST_FILE, RemotesTree
from drivers.ssh import SYNC_TIMEOUT, HostAccess, SshRunner, SyncFailed
from drivers.streams import feed, pump, together

__all__ = [
    "ERROR_BEGIN",
    "ERROR_END",
    "HASH_FILE",
    "MANIFEST_FILE",
    "RC_COMMAND_MISSING",
    "RC_NOT_EXECUTABLE",
    "RC_SCRIPT_MISSING",
    "RC_TIMEOUT",
    "RC_UNREACHABLE",
    "SYNC_TIMEOUT",
    "DriverResult",
    "HostAccess",
    "LocalRunner",
    "LogFn",
    "RemotesTree",
    "Runner",
    "RunnerPool",
    "SshRunner",
    "SyncFailed",
    "action_path",
    "error_block",
    "netns_socket",
    "run_probes",
]


STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL: a script's traps clean up


async def _stop_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM to the action's process group (its traps remove partial files), then
    SIGKILL to whatever is left of the group once the script ended or STOP_GRACE passed."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(STOP_GRACE):
            await proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


class LocalRunner(RunnerBase):
    """Runs remotes_dir/<kind>/<driver>/<action>, or an absolute command (execute), as a
    subprocess of the front-end."""

    def __init__(self, remotes_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.remotes_dir = Path(remotes_dir)
        self._env = {**os.environ, **env} if env is not None else None

    async def _run_action(
        self, rel: str, argv: list[str], stdin: bytes | None, timeout: float, log: LogFn | None
    ) -> DriverResult:
        path = self.remotes_dir / rel
        if not path.is_file() or not os.access(path, os.X_OK):
            return failure(RC_SCRIPT_MISSING, f"script missing: {path}")
        return await self._process([str(path), *argv], rel, self._env, stdin, timeout, log)

    async def _run_command(
        self, argv: list[str], env: dict[str, str], stdin: bytes | None, timeout: float,
        log: LogFn | None,
    ) -> DriverResult:
        command = argv[0]
        if not os.path.isfile(command) or not os.access(command, os.X_OK):
            return failure(RC_COMMAND_MISSING, f"command missing: {command}")
        merged = self._env
        if env:
            merged = {**(self._env if self._env is not None else os.environ), **env}
        return await self._process(argv, command, merged, stdin, timeout, log)

    async def _process(
        self, argv: list[str], name: str, env: Mapping[str, str] | None, stdin: bytes | None,
        timeout: float, log: LogFn | None,
    ) -> DriverResult:
        """Run argv in its own session; on a timeout or a cancel its whole group goes."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            return failure(RC_NOT_EXECUTABLE, f"cannot execute {name}: {exc.strerror or exc}")
        assert proc.stdout is not None and proc.stderr is not None
        out = bytearray()
        err = StderrLog(log)
        jobs = [pump(proc.stdout, out.extend), pump(proc.stderr, err.feed)]
        if proc.stdin is not None and stdin is not None:
            jobs.append(feed(proc.stdin, stdin, proc.stdin.close))
        try:
            async with asyncio.timeout(timeout):
                await together(*jobs)
                rc = await proc.wait()
        except TimeoutError:
            err.close()
            return failure(RC_TIMEOUT, f"timed out after {timeout:g} s", err.text)
        finally:
            if proc.returncode is None:  # timed out or cancelled: the whole group goes
                await _stop_group(proc)
        err.close()
        return DriverResult(rc, out.decode(errors="replace"), err.text)


async def run_probes(
    runner: Runner,
    hv: str,
    host_id: int,
    host_name: str,
    *,
    stdin: bytes | None,
    timeout: float,
    log: LogFn | None,
) -> Result:
    """`im/run_probes <hv> <hid> <host>`: every probe of `im/<hv>.d`, stdout joined."""
    if not SAFE_NAME.match(hv):
        raise ValueError(f"invalid hypervisor name {hv!r}")
    return await runner.run(
        "im", "", "run_probes", [hv, str(host_id), host_name],
        stdin=stdin, timeout=timeout, log=log,
    )


class RunnerPool:
    """One runner per host name: local_names → the LocalRunner, others → an SshRunner."""

    def __init__(
        self,
        remotes_dir: Path,
        *,
        local_names: Iterable[str] = ("localhost",),
        ssh_defaults: HostAccess,
        max_channels: int = 8,
        local_env: Mapping[str, str] | None = None,
    ) -> None:
        self.remotes_dir = Path(remotes_dir)
        self._local_names = frozenset(local_names)
        self._defaults = ssh_defaults
        self._max_channels = max_channels
        self._tree = RemotesTree(self.remotes_dir)
        self._local = LocalRunner(self.remotes_dir, env=local_env)
        self._ssh: dict[str, tuple[HostAccess, SshRunner]] = {}
        self._retired: list[SshRunner] = []

    def local(self) -> LocalRunner:
        return self._local

    def for_host(self, name: str, access: HostAccess | None = None) -> Runner:
        """The host's runner. access=None reuses the existing runner whatever it was built
        with; a different access replaces it (the old one is closed by close())."""
        if name in self._local_names:
            return self._local
        known = self._ssh.get(name)
        if known is not None and (access is None or known[0] == access.over(self._defaults)):
            return known[1]
        effective = (access or HostAccess()).over(self._defaults)
        if known is not None:
            self._retired.append(known[1])
        runner = SshRunner.from_access(
            name, effective, remotes_dir=self.remotes_dir, tree=self._tree,
            max_channels=self._max_channels,
        )
        self._ssh[name] = (effective, runner)
        return runner

    def invalidate(self) -> None:
        """`nubo host sync`: recompute the hash; each host re-checks it on its next call."""
        self._tree.invalidate()
        for _, runner in self._ssh.values():
            runner.invalidate()

    async def discard(self, name: str) -> None:
        """Forget a deleted host and close its connection."""
        known = self._ssh.pop(name, None)
        if known is not None:
            await known[1].close()

    async def abort(self, name: str) -> None:
        """Drop the connection to a host declared dead (the runner stays)."""
        known = self._ssh.get(name)
        if known is not None:
            await known[1].abort()

    async def close(self) -> None:
        runners = [runner for _, runner in self._ssh.values()] + self._retired
        self._ssh.clear()
        self._retired.clear()
        await asyncio.gather(*(runner.close() for runner in runners))
