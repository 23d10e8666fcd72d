"""SshRunner: driver actions on a host over one multiplexed asyncssh connection.

An action runs as <remote_dir>/<kind>/<driver>/<action> through a fixed wrapper script. The
remotes tree is synced by content hash (drivers.remotes_tree) and synced again, then the
action retried once, when the wrapper reports the script missing. execute() runs an
absolute command of the host through a second wrapper, with no sync. A timed-out command is
killed with its process group. HostAccess says how to reach a host.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import posixpath
import shlex
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from core.drivers import LogFn
from drivers.netns import netns_socket
from drivers.protocol import (
    ERROR_BEGIN,
    ERROR_END,
    PID_TAG,
    RC_COMMAND_MISSING,
    RC_SCRIPT_MISSING,
    RC_TIMEOUT,
    RC_UNREACHABLE,
    SAFE_NAME,
    DriverResult,
    RunnerBase,
    StderrLog,
    emit,
    failure,
)
from drivers.remotes_tree import READ_HASH_SCRIPT, SYNC_SCRIPT, RemotesTree
from drivers.streams import feed, pump, together

SYNC_TIMEOUT = 120.0

# Remote side. Fixed scripts, run as `sh -c SCRIPT nubo ARGS...`; only ARGS vary.
# The wrapper reports its pid (the session leader: sshd setsid()s and the login shell
# execs) as a first stderr line, so a timed-out action can be killed with its children:
# OpenSSH ignores signal requests for root sessions.
_RUN = (
    'if [ ! -f "$1" ] || [ ! -x "$1" ]; then '
    'echo "nubo: script missing: $1" >&2; exit 42; fi; '
    f'echo "{PID_TAG}$$" >&2; exec "$@"'
)
# execute(): `sh -c _EXEC nubo PATH [env NAME=VALUE...] PATH ARGS...` checks PATH, then runs
# the rest. A missing command gets the error block LocalRunner returns.
_EXEC = (
    'if [ ! -f "$1" ] || [ ! -x "$1" ]; then '
    f"printf '%s\\ncommand missing: %s\\n%s\\n' '{ERROR_BEGIN}' \"$1\" '{ERROR_END}' >&2; "
    f'exit {RC_COMMAND_MISSING}; fi; '
    f'echo "{PID_TAG}$$" >&2; shift; exec "$@"'
)
_KILL = 'kill -s KILL -- "-$1" 2>/dev/null || kill -s KILL -- "$1" 2>/dev/null; exit 0'


@dataclass(frozen=True)
class HostAccess:
    """How to reach a host; fields left at their default take RunnerPool's ssh_defaults."""

    address: str | None = None
    port: int = 22
    username: str | None = None
    client_keys: tuple[str, ...] = ()
    known_hosts: str | None = None
    netns: str | None = None
    remote_dir: str = "/var/tmp/one"

    def over(self, defaults: HostAccess) -> HostAccess:
        base = HostAccess()
        changed = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(base, f.name)
        }
        return dataclasses.replace(defaults, **changed)


class SyncFailed(Exception):
    """SshRunner.sync() could not reach the host or copy the tree; `result` says why."""

    def __init__(self, result: DriverResult) -> None:
        super().__init__(result.error)
        self.result = result


class _ChannelOpenFailed(Exception):
    pass


def _describe(exc: BaseException, address: str = "") -> str:
    if isinstance(exc, TimeoutError):
        return "connection timed out"
    if isinstance(exc, asyncssh.Error):
        return exc.reason or type(exc).__name__
    if isinstance(exc, socket.gaierror):  # resolver codes are negative: not errno values
        what = f"cannot resolve host name {address}".rstrip()
        return f"{what} ({exc.strerror})" if exc.strerror else what
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


class SshRunner(RunnerBase):
    """Runs <remote_dir>/<kind>/<driver>/<action> on a host over ONE asyncssh connection.

    The connection is opened lazily and re-opened when it dropped. At most max_channels
    actions run at once on it (stock OpenSSH allows 10 sessions per connection); `timeout`
    counts from the moment a channel is free. The first call after connecting (or after
    invalidate()) compares the tree hash with the host's and copies the tree if they differ.
    """

    def __init__(
        self,
        *,
        address: str,
        remotes_dir: Path,
        remote_dir: str = "/var/tmp/one",
        port: int = 22,
        username: str | None = None,
        client_keys: Sequence[str] | None = None,
        known_hosts: str | None = None,
        netns: str | None = None,
        connect_timeout: float = 10.0,
        name: str | None = None,
        max_channels: int = 8,
        tree: RemotesTree | None = None,
    ) -> None:
        if not posixpath.isabs(remote_dir) or posixpath.normpath(remote_dir) == "/":
            raise ValueError(f"remote_dir must be an absolute directory, not {remote_dir!r}")
        if netns is not None and not SAFE_NAME.match(netns):
            raise ValueError(f"invalid netns name {netns!r}")
        self.name = name or address
        self.address = address
        self.port = port
        self.remote_dir = posixpath.normpath(remote_dir)
        self._tree = tree if tree is not None else RemotesTree(remotes_dir)
        self._username = username
        self._client_keys = list(client_keys) if client_keys is not None else None
        self._known_hosts = known_hosts
        self._netns = netns
        self._connect_timeout = connect_timeout
        self._channels = asyncio.Semaphore(max_channels)
        self._conn: asyncssh.SSHClientConnection | None = None
        self._conn_lock = asyncio.Lock()
        self._sync_lock = asyncio.Lock()
        self._synced: str | None = None  # digest known to be on the host
        self._generation = 0  # bumped by every copy of the tree
        self._beating = asyncio.Lock()  # one heartbeat at a time

    @classmethod
    def from_access(
        cls,
        name: str,
        access: HostAccess,
        *,
        remotes_dir: Path,
        tree: RemotesTree | None = None,
        max_channels: int = 8,
    ) -> SshRunner:
        """The runner for host `name` (its address when access.address is None)."""
        return cls(
            name=name,
            address=access.address or name,
            port=access.port,
            username=access.username,
            client_keys=access.client_keys or None,
            known_hosts=access.known_hosts,
            netns=access.netns,
            remote_dir=access.remote_dir,
            remotes_dir=remotes_dir,
            max_channels=max_channels,
            tree=tree,
        )

    @property
    def _where(self) -> str:
        return f"host {self.name} ({self.address}:{self.port})"

    def invalidate(self) -> None:
        """Recompute the tree hash; the next call compares it with the host's again."""
        self._tree.invalidate()
        self._synced = None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 5)

    async def sync(self, force: bool = False) -> None:
        """Copy the tree unless the host already has this hash (always when force).
        Raises SyncFailed when the host cannot be reached or the copy fails."""
        try:
            conn = await self._connect()
            async with self._sync_lock:
                await self._sync(conn, force, None)
        except _Unavailable as exc:
            raise SyncFailed(exc.result) from None
        except _ChannelOpenFailed as exc:
            await self._drop()
            failed = failure(RC_UNREACHABLE, f"lost connection to {self._where}: {exc}")
            raise SyncFailed(failed) from None

    async def _run_action(
        self, rel: str, argv: list[str], stdin: bytes | None, timeout: float, log: LogFn | None
    ) -> DriverResult:
        command = shlex.join(["sh", "-c", _RUN, "nubo", f"{self.remote_dir}/{rel}", *argv])

        async def synced(conn: asyncssh.SSHClientConnection) -> DriverResult:
            digest, _ = await self._tree.snapshot()
            if self._synced != digest:
                async with self._sync_lock:
                    if self._synced != digest:
                        await self._sync(conn, False, log)
            generation = self._generation
            result = await self._channel(conn, command, stdin, timeout, log, wrapped=True)
            if result.rc != RC_SCRIPT_MISSING:
                return result
            emit(log, "I", f"{rel} missing on {self.name}: syncing remotes and retrying")
            async with self._sync_lock:
                if self._generation == generation:  # nobody re-copied meanwhile
                    self._tree.invalidate()  # the local tree may have changed too
                    await self._sync(conn, True, log)
            return await self._channel(conn, command, stdin, timeout, log, wrapped=True)

        return await self._on_host(synced)

    async def beat(self, timeout: float) -> DriverResult:
        """A heartbeat: `true` on a channel of its own, outside the max_channels limit (a
        host busy with long actions still answers; OpenSSH's 10 sessions leave room for it
        and for _kill). A beat that times out leaves the connection alone: actions still
        running on a slow host are not cut off because of it (abort() is for a host
        declared dead)."""
        try:
            async with asyncio.timeout(timeout), self._beating:
                conn = await self._connect()
                done = await conn.run("true", check=False)
        except TimeoutError:
            return failure(RC_TIMEOUT, f"{self._where} did not answer within {timeout:g} s")
        except _Unavailable as exc:
            return exc.result
        except (asyncssh.Error, OSError) as exc:
            return failure(RC_UNREACHABLE, f"lost connection to {self._where}: {_describe(exc)}")
        if done.exit_status != 0:
            return failure(RC_UNREACHABLE, f"{self._where} answered its heartbeat with exit "
                           f"status {done.exit_status}")
        return DriverResult(0, "", "")

    async def abort(self) -> None:
        """Drop the connection at once (the host was declared dead): whatever runs on it
        fails now, and the next call connects afresh."""
        await self._drop()

    async def _run_command(
        self, argv: list[str], env: dict[str, str], stdin: bytes | None, timeout: float,
        log: LogFn | None,
    ) -> DriverResult:
        assignments = [f"{name}={value}" for name, value in env.items()]
        line = ["env", *assignments, *argv] if assignments else argv
        command = shlex.join(["sh", "-c", _EXEC, "nubo", argv[0], *line])
        return await self._on_host(
            lambda conn: self._channel(conn, command, stdin, timeout, log, wrapped=True)
        )

    async def _on_host(
        self, body: Callable[[asyncssh.SSHClientConnection], Awaitable[DriverResult]]
    ) -> DriverResult:
        """body(connection), reconnecting once when the connection died before anything ran;
        an unreachable host is a failure with RC_UNREACHABLE."""
        for attempt in (1, 2):
            try:
                return await body(await self._connect())
            except _Unavailable as exc:
                return exc.result
            except _ChannelOpenFailed as exc:
                # Nothing ran: the connection died under us. Reconnect once.
                await self._drop()
                if attempt == 2:
                    return failure(RC_UNREACHABLE, f"lost connection to {self._where}: {exc}")
        raise AssertionError("unreachable")

    async def _connect(self) -> asyncssh.SSHClientConnection:
        conn = self._conn
        if conn is not None and not conn.is_closed():
            return conn
        async with self._conn_lock:
            conn = self._conn
            if conn is not None and not conn.is_closed():
                return conn
            self._conn = None
            self._synced = None  # the host may have been wiped while we were away
            try:
                self._conn = await self._open()
            except (OSError, asyncssh.Error, TimeoutError) as exc:
                why = _describe(exc, self.address)
                raise _Unavailable(
                    failure(RC_UNREACHABLE, f"cannot reach {self._where}: {why}")
                ) from None
            return self._conn

    async def _open(self) -> asyncssh.SSHClientConnection:
        sock: socket.socket | None = None
        if self._netns is not None:
            loop = asyncio.get_running_loop()
            infos = await loop.getaddrinfo(self.address, self.port, type=socket.SOCK_STREAM)
            family, _, _, _, sockaddr = infos[0]
            sock = netns_socket(self._netns, family)
            sock.setblocking(False)
        try:
            if sock is not None:
                await asyncio.wait_for(loop.sock_connect(sock, sockaddr), self._connect_timeout)
            # () means "asyncssh's default": ~/.ssh keys, ~/.ssh/known_hosts (never unchecked).
            return await asyncssh.connect(
                self.address,
                self.port,
                sock=sock,
                username=self._username if self._username is not None else (),
                client_keys=self._client_keys if self._client_keys is not None else (),
                known_hosts=self._known_hosts if self._known_hosts is not None else (),
                connect_timeout=self._connect_timeout,
                keepalive_interval=30,
                keepalive_count_max=3,
            )
        except BaseException:
            if sock is not None:
                sock.close()
            raise

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()

    async def _sync(
        self, conn: asyncssh.SSHClientConnection, force: bool, log: LogFn | None
    ) -> None:
        digest, archive = await self._tree.snapshot()
        if not force:
            probe = shlex.join(["sh", "-c", READ_HASH_SCRIPT, "nubo", self.remote_dir])
            found = await self._channel(conn, probe, None, SYNC_TIMEOUT, None)
            if found.ok and found.stdout.strip() == digest:
                self._synced = digest
                return
        emit(log, "I", f"Copying remotes to {self.name}:{self.remote_dir}")
        command = shlex.join(["sh", "-c", SYNC_SCRIPT, "nubo", self.remote_dir, digest])
        result = await self._channel(conn, command, archive, SYNC_TIMEOUT, None)
        if not result.ok:
            raise _Unavailable(
                failure(result.rc, f"cannot copy remotes to {self._where}: {result.error}")
            )
        self._synced = digest
        self._generation += 1

    async def _channel(
        self,
        conn: asyncssh.SSHClientConnection,
        command: str,
        stdin: bytes | None,
        timeout: float,
        log: LogFn | None,
        *,
        wrapped: bool = False,
    ) -> DriverResult:
        """Run one command on its own channel; wrapped = it is the _RUN wrapper."""
        out = bytearray()
        err = StderrLog(log, pid_line=wrapped)
        session = _Session()
        try:
            # waiting for a free channel counts against the timeout: actions piling up on a
            # host that stopped answering must not starve the next one (a probe) for ever
            async with asyncio.timeout(timeout), self._channels:
                async with contextlib.AsyncExitStack() as stack:
                    proc = await self._start(conn, command, stack, session, err)
                    await together(
                        pump(proc.stdout, out.extend),
                        pump(proc.stderr, err.feed),
                        feed(proc.stdin, stdin or b"", proc.stdin.write_eof),
                    )
                    await proc.wait_closed()
        except TimeoutError:
            if session.killer is not None:
                await session.killer
            err.close()
            return failure(RC_TIMEOUT, f"timed out after {timeout:g} s", err.text)
        except (asyncssh.Error, OSError) as exc:
            err.close()
            lost = f"lost connection to {self._where}: {_describe(exc)}"
            return failure(RC_UNREACHABLE, lost, err.text)
        err.close()
        rc = proc.returncode
        if rc is None:
            return failure(RC_UNREACHABLE, f"lost connection to {self._where}", err.text)
        if rc < 0:  # killed by a signal
            rc = 128 - rc
        return DriverResult(rc, out.decode(errors="replace"), err.text)

    async def _start(
        self,
        conn: asyncssh.SSHClientConnection,
        command: str,
        stack: contextlib.AsyncExitStack,
        session: _Session,
        err: StderrLog,
    ) -> asyncssh.SSHClientProcess[bytes]:
        try:
            proc: asyncssh.SSHClientProcess[bytes] = await conn.create_process(
                command, encoding=None
            )
        except (asyncssh.ChannelOpenError, asyncssh.ConnectionLost, ConnectionError) as exc:
            raise _ChannelOpenFailed(_describe(exc)) from None
        except TimeoutError:
            await self._drop()  # cannot even open a channel in time: assume the link is dead
            raise

        @contextlib.asynccontextmanager
        async def reap() -> AsyncIterator[None]:
            try:
                yield
            finally:  # timed out, cancelled or failed while the action still runs
                if proc.exit_status is None and proc.exit_signal is None:
                    with contextlib.suppress(asyncssh.Error, OSError):
                        proc.send_signal("KILL")  # works for unprivileged logins only
                    proc.close()
                    if err.pid is not None:
                        session.killer = asyncio.ensure_future(self._kill(conn, err.pid))

        await stack.enter_async_context(reap())
        return proc

    async def _kill(self, conn: asyncssh.SSHClientConnection, pid: int) -> None:
        """Kill the remote process group of a timed-out action (outside the channel limit:
        its own channel was just closed)."""
        command = shlex.join(["sh", "-c", _KILL, "nubo", str(pid)])
        try:
            await asyncio.wait_for(conn.run(command, check=False), 3)
        except (asyncssh.Error, OSError, TimeoutError):
            if self._conn is conn:  # the host stopped answering: start afresh next time
                await self._drop()


@dataclass
class _Session:
    killer: asyncio.Future[None] | None = None


class _Unavailable(Exception):
    def __init__(self, result: DriverResult) -> None:
        super().__init__(result.error)
        self.result = result
