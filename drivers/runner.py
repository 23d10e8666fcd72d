"""Run one driver action: `remotes/<kind>/<driver>/<action> args...` with OpenNebula's conventions.

An action is an executable in any language. Its argv is positional (reference §1-3), the
object's XML document arrives on stdin, stdout is the result, exit 0 means success, stderr
carries log lines (`ERROR:`/`DEBUG:`/`INFO:` prefixes set the severity) and, on failure, the
error block between `ERROR MESSAGE --8<------` and `ERROR MESSAGE ------>8--`.

    Runner (Protocol) ── LocalRunner   subprocess on the front-end, straight from remotes_dir
                      └─ SshRunner     same path under the host's remote dir, over one
                                       multiplexed asyncssh connection; the tree is synced
                                       by content hash and re-synced when a script is missing
    RunnerPool        one runner per host name, what the daemon holds

Driver failures never raise: they come back as a DriverResult (124 timeout, 255 host
unreachable, 42 script missing). Only programming errors raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import hashlib
import io
import logging
import os
import posixpath
import re
import shlex
import signal
import socket
import stat
import tarfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import asyncssh

ERROR_BEGIN = "ERROR MESSAGE --8<------"
ERROR_END = "ERROR MESSAGE ------>8--"
RC_SCRIPT_MISSING = 42
RC_TIMEOUT = 124
RC_NOT_EXECUTABLE = 126
RC_UNREACHABLE = 255
HASH_FILE = ".nubo-remotes-hash"
MANIFEST_FILE = ".nubo-remotes-manifest"
SYNC_TIMEOUT = 120.0

LogFn = Callable[[str, str], None]
"""(severity "I" | "E" | "D", message); the callback adds the timestamp."""

_logger = logging.getLogger("nubo.drivers")
_LEVELS = {"I": logging.INFO, "E": logging.ERROR, "D": logging.DEBUG}
_PREFIXES = (("ERROR:", "E"), ("DEBUG:", "D"), ("INFO:", "I"))
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*\Z")
_SKIP = {"__pycache__", HASH_FILE, MANIFEST_FILE}

# Remote side. Fixed scripts, run as `sh -c SCRIPT nubo ARGS...`; only ARGS vary.
# The wrapper reports its pid (the session leader: sshd setsid()s and the login shell
# execs) as a first stderr line, so a timed-out action can be killed with its children:
# OpenSSH ignores signal requests for root sessions.
_PID_TAG = "nubo-pid "
_RUN = (
    'if [ ! -f "$1" ] || [ ! -x "$1" ]; then '
    'echo "nubo: script missing: $1" >&2; exit 42; fi; '
    f'echo "{_PID_TAG}$$" >&2; exec "$@"'
)
_KILL = 'kill -s KILL -- "-$1" 2>/dev/null || kill -s KILL -- "$1" 2>/dev/null; exit 0'
_READ_HASH = f'cat -- "$1/{HASH_FILE}" 2>/dev/null; exit 0'
_SYNC = f"""set -eu
mkdir -p -- "$1"
cd -- "$1"
rm -f -- {HASH_FILE}
tar -x -o -f -
if [ -f {MANIFEST_FILE} ]; then
  grep -F -x -v -f {MANIFEST_FILE}.new {MANIFEST_FILE} | while IFS= read -r f; do
    rm -f -- "$f" || true
    p=$(dirname -- "$f")
    while [ "$p" != . ] && rmdir -- "$p" 2>/dev/null; do p=$(dirname -- "$p"); done
  done
fi
mv -f -- {MANIFEST_FILE}.new {MANIFEST_FILE}
printf '%s\\n' "$2" > {HASH_FILE}
"""


@dataclass(frozen=True)
class DriverResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def error(self) -> str:
        """The error block, else the last stderr line without `ERROR:`, else the exit code."""
        block = _error_block(self.stderr)
        if block:
            return block
        for line in reversed(self.stderr.splitlines()):
            text = line.strip()
            if text and text not in (ERROR_BEGIN, ERROR_END):
                return text.removeprefix("ERROR:").strip()
        return f"exit code {self.rc}"


def _error_block(stderr: str) -> str | None:
    found: list[str] | None = None
    current: list[str] | None = None
    for line in stderr.splitlines():
        text = line.strip()
        if text == ERROR_BEGIN:
            current = []
        elif text == ERROR_END and current is not None:
            found, current = current, None
        elif current is not None:
            current.append(line)
    if current:  # unterminated: the process died while printing it
        found = current
    return "\n".join(found).strip() if found is not None else None


def error_block(message: str) -> str:
    """`message` wrapped in the markers, as a driver prints it on stderr."""
    return f"{ERROR_BEGIN}\n{message}\n{ERROR_END}\n"


def _failure(rc: int, message: str, stderr: str = "") -> DriverResult:
    return DriverResult(rc, "", stderr + error_block(message))


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


class Runner(Protocol):
    async def run(
        self,
        kind: str,
        driver: str,
        action: str,
        args: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float = 60.0,
        log: LogFn | None = None,
    ) -> DriverResult: ...


def action_path(kind: str, driver: str, action: str) -> str:
    """`kind/driver/action`, or `kind/action` when driver is "" (im/run_probes)."""
    parts = [kind, driver, action] if driver else [kind, action]
    for part in parts:
        if not _NAME.match(part):
            raise ValueError(f"invalid driver path component {part!r}")
    return "/".join(parts)


def _emit(log: LogFn | None, severity: str, message: str) -> None:
    if log is None:
        _logger.log(_LEVELS.get(severity, logging.INFO), "%s", message)
    else:
        log(severity, message)


class _Stderr:
    """Collects stderr and passes each line to the log as it arrives (error block excluded:
    the runner logs it once as the failure reason)."""

    def __init__(self, log: LogFn | None, *, pid_line: bool = False) -> None:
        self._log = log
        self._pid_line = pid_line  # first line is the wrapper's "nubo-pid N"
        self.pid: int | None = None
        self._lines: list[str] = []
        self._pending = b""
        self._in_block = False

    def feed(self, chunk: bytes) -> None:
        *complete, self._pending = (self._pending + chunk).split(b"\n")
        for raw in complete:
            self._line(raw)

    def close(self) -> None:
        if self._pending:
            self._line(self._pending)
            self._pending = b""

    def _line(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip("\r")
        if self._pid_line:
            self._pid_line = False
            if line.startswith(_PID_TAG) and line[len(_PID_TAG) :].isdigit():
                self.pid = int(line[len(_PID_TAG) :])
                return
        self._lines.append(line)
        text = line.strip()
        if text in (ERROR_BEGIN, ERROR_END):
            self._in_block = text == ERROR_BEGIN
            return
        if self._in_block or not text:
            return
        severity = "I"
        for prefix, sev in _PREFIXES:
            if text.startswith(prefix):
                severity, text = sev, text[len(prefix) :].strip()
                break
        _emit(self._log, severity, text)

    @property
    def text(self) -> str:
        return "".join(line + "\n" for line in self._lines)


class _Reader(Protocol):
    def read(self, n: int = -1) -> Awaitable[bytes]: ...


class _Writer(Protocol):
    def write(self, data: bytes) -> None: ...
    def drain(self) -> Awaitable[None]: ...


async def _pump(reader: _Reader, sink: Callable[[bytes], None]) -> None:
    while chunk := await reader.read(65536):
        sink(chunk)


async def _together(*coros: Awaitable[None]) -> None:
    """Run concurrently; the first exception cancels the others and propagates as is."""
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _feed(writer: _Writer, data: bytes, close: Callable[[], None]) -> None:
    # The script may exit without reading its stdin: that is not a failure.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, asyncssh.Error):
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError, asyncssh.Error):
        close()


class _RunnerBase:
    async def run(
        self,
        kind: str,
        driver: str,
        action: str,
        args: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float = 60.0,
        log: LogFn | None = None,
    ) -> DriverResult:
        if isinstance(args, str):
            raise TypeError("args must be a sequence of arguments, not a string")
        rel = action_path(kind, driver, action)
        argv = [str(a) for a in args]
        _emit(log, "I", f"Command execution: {shlex.join([rel, *argv])}")
        result = await self._execute(rel, argv, stdin, timeout, log)
        if result.ok:
            _emit(log, "I", f"{rel} succeeded")
        else:
            _emit(log, "E", f"{rel} failed: {result.error}")
        return result

    async def _execute(
        self, rel: str, argv: list[str], stdin: bytes | None, timeout: float, log: LogFn | None
    ) -> DriverResult:
        raise NotImplementedError


class LocalRunner(_RunnerBase):
    """Runs remotes_dir/<kind>/<driver>/<action> as a subprocess of the front-end."""

    def __init__(self, remotes_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.remotes_dir = Path(remotes_dir)
        self._env = {**os.environ, **env} if env is not None else None

    async def _execute(
        self, rel: str, argv: list[str], stdin: bytes | None, timeout: float, log: LogFn | None
    ) -> DriverResult:
        path = self.remotes_dir / rel
        if not path.is_file() or not os.access(path, os.X_OK):
            return _failure(RC_SCRIPT_MISSING, f"script missing: {path}")
        try:
            proc = await asyncio.create_subprocess_exec(
                str(path),
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
                start_new_session=True,
            )
        except OSError as exc:
            return _failure(RC_NOT_EXECUTABLE, f"cannot execute {rel}: {exc.strerror or exc}")
        assert proc.stdout is not None and proc.stderr is not None
        out = bytearray()
        err = _Stderr(log)
        jobs = [_pump(proc.stdout, out.extend), _pump(proc.stderr, err.feed)]
        if proc.stdin is not None and stdin is not None:
            jobs.append(_feed(proc.stdin, stdin, proc.stdin.close))
        try:
            async with asyncio.timeout(timeout):
                await _together(*jobs)
                rc = await proc.wait()
        except TimeoutError:
            err.close()
            return _failure(RC_TIMEOUT, f"timed out after {timeout:g} s", err.text)
        finally:
            if proc.returncode is None:  # timed out or cancelled: the whole group goes
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        err.close()
        return DriverResult(rc, out.decode(errors="replace"), err.text)


class RemotesTree:
    """The remotes directory as synced to hosts: content hash and tar archive, cached."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._cached: tuple[str, bytes] | None = None

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None

    async def snapshot(self) -> tuple[str, bytes]:
        """(sha256 hex digest, tar archive) of the tree."""
        cached = self._cached
        if cached is None:
            cached = await asyncio.to_thread(self._build)
        return cached

    def _build(self) -> tuple[str, bytes]:
        with self._lock:
            if self._cached is None:
                self._cached = self._scan()
            return self._cached

    def _scan(self) -> tuple[str, bytes]:
        digest = hashlib.sha256()
        buf = io.BytesIO()
        names: list[str] = []
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for path in sorted(self._walk(self.root), key=lambda p: p.relative_to(self.root).parts):
                rel = path.relative_to(self.root).as_posix()
                info = tarfile.TarInfo(rel)
                mode = path.lstat().st_mode
                if stat.S_ISDIR(mode):
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                    continue
                names.append(rel)
                if stat.S_ISLNK(mode):
                    info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
                    digest.update(f"{rel}\0l\0{info.linkname}\0".encode())
                    tar.addfile(info)
                    continue
                data = path.read_bytes()
                executable = bool(mode & stat.S_IXUSR)
                info.mode, info.size = (0o755 if executable else 0o644), len(data)
                digest.update(f"{rel}\0{'x' if executable else '-'}\0{len(data)}\0".encode())
                digest.update(data)
                tar.addfile(info, io.BytesIO(data))
            manifest = "".join(name + "\n" for name in names).encode()
            info = tarfile.TarInfo(MANIFEST_FILE + ".new")
            info.mode, info.size = 0o644, len(manifest)
            tar.addfile(info, io.BytesIO(manifest))
        return digest.hexdigest(), buf.getvalue()

    def _walk(self, top: Path) -> Iterable[Path]:
        for entry in top.iterdir():
            if entry.name in _SKIP or entry.name.endswith(".pyc"):
                continue
            yield entry
            if entry.is_dir() and not entry.is_symlink():
                yield from self._walk(entry)


class SyncFailed(Exception):
    """SshRunner.sync() could not reach the host or copy the tree; `result` says why."""

    def __init__(self, result: DriverResult) -> None:
        super().__init__(result.error)
        self.result = result


class _ChannelOpenFailed(Exception):
    pass


_libc: ctypes.CDLL | None = None


def _setns_net(fd: int) -> None:
    global _libc
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, 0x40000000)
        return
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def netns_socket(netns: str, family: int) -> socket.socket:
    """A TCP socket created inside /run/netns/<netns>; it stays there once this thread ends."""
    if not _NAME.match(netns):
        raise ValueError(f"invalid netns name {netns!r}")
    box: dict[str, socket.socket | BaseException] = {}

    def make() -> None:  # setns() affects only the calling thread: use a throwaway one
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns_net(fd)
            finally:
                os.close(fd)
            box["sock"] = socket.socket(family, socket.SOCK_STREAM)
        except BaseException as exc:  # handed to the caller's thread
            box["exc"] = exc

    thread = threading.Thread(target=make, name=f"netns-{netns}")
    thread.start()
    thread.join()
    made = box.get("sock") or box["exc"]
    if isinstance(made, BaseException):
        raise made
    return made


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


class SshRunner(_RunnerBase):
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
        if netns is not None and not _NAME.match(netns):
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
            failed = _failure(RC_UNREACHABLE, f"lost connection to {self._where}: {exc}")
            raise SyncFailed(failed) from None

    async def _execute(
        self, rel: str, argv: list[str], stdin: bytes | None, timeout: float, log: LogFn | None
    ) -> DriverResult:
        command = shlex.join(["sh", "-c", _RUN, "nubo", f"{self.remote_dir}/{rel}", *argv])
        for attempt in (1, 2):
            try:
                conn = await self._connect()
                digest, _ = await self._tree.snapshot()
                if self._synced != digest:
                    async with self._sync_lock:
                        if self._synced != digest:
                            await self._sync(conn, False, log)
                generation = self._generation
                result = await self._channel(conn, command, stdin, timeout, log, wrapped=True)
                if result.rc != RC_SCRIPT_MISSING:
                    return result
                _emit(log, "I", f"{rel} missing on {self.name}: syncing remotes and retrying")
                async with self._sync_lock:
                    if self._generation == generation:  # nobody re-copied meanwhile
                        self._tree.invalidate()  # the local tree may have changed too
                        await self._sync(conn, True, log)
                return await self._channel(conn, command, stdin, timeout, log, wrapped=True)
            except _Unavailable as exc:
                return exc.result
            except _ChannelOpenFailed as exc:
                # Nothing ran: the connection died under us. Reconnect once.
                await self._drop()
                if attempt == 2:
                    return _failure(RC_UNREACHABLE, f"lost connection to {self._where}: {exc}")
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
                    _failure(RC_UNREACHABLE, f"cannot reach {self._where}: {why}")
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
            probe = shlex.join(["sh", "-c", _READ_HASH, "nubo", self.remote_dir])
            found = await self._channel(conn, probe, None, SYNC_TIMEOUT, None)
            if found.ok and found.stdout.strip() == digest:
                self._synced = digest
                return
        _emit(log, "I", f"Copying remotes to {self.name}:{self.remote_dir}")
        command = shlex.join(["sh", "-c", _SYNC, "nubo", self.remote_dir, digest])
        result = await self._channel(conn, command, archive, SYNC_TIMEOUT, None)
        if not result.ok:
            raise _Unavailable(
                _failure(result.rc, f"cannot copy remotes to {self._where}: {result.error}")
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
        err = _Stderr(log, pid_line=wrapped)
        session = _Session()
        async with self._channels:
            try:
                async with contextlib.AsyncExitStack() as stack, asyncio.timeout(timeout):
                    proc = await self._start(conn, command, stack, session, err)
                    await _together(
                        _pump(proc.stdout, out.extend),
                        _pump(proc.stderr, err.feed),
                        _feed(proc.stdin, stdin or b"", proc.stdin.write_eof),
                    )
                    await proc.wait_closed()
            except TimeoutError:
                if session.killer is not None:
                    await session.killer
                err.close()
                return _failure(RC_TIMEOUT, f"timed out after {timeout:g} s", err.text)
            except (asyncssh.Error, OSError) as exc:
                err.close()
                lost = f"lost connection to {self._where}: {_describe(exc)}"
                return _failure(RC_UNREACHABLE, lost, err.text)
        err.close()
        rc = proc.returncode
        if rc is None:
            return _failure(RC_UNREACHABLE, f"lost connection to {self._where}", err.text)
        if rc < 0:  # killed by a signal
            rc = 128 - rc
        return DriverResult(rc, out.decode(errors="replace"), err.text)

    async def _start(
        self,
        conn: asyncssh.SSHClientConnection,
        command: str,
        stack: contextlib.AsyncExitStack,
        session: _Session,
        err: _Stderr,
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


_R = TypeVar("_R", covariant=True)


class _RunsActions(Protocol[_R]):
    """Any runner shape (drivers.runner.Runner, core.drivers.Runner), whatever it returns."""

    def run(
        self,
        kind: str,
        driver: str,
        action: str,
        args: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float = 60.0,
        log: LogFn | None = None,
    ) -> Awaitable[_R]: ...


async def run_probes(
    runner: _RunsActions[_R],
    hv: str,
    host_id: int,
    host_name: str,
    *,
    stdin: bytes | None,
    timeout: float,
    log: LogFn | None,
) -> _R:
    """`im/run_probes <hv> <hid> <host>`: every probe of `im/<hv>.d`, stdout joined."""
    if not _NAME.match(hv):
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
    ) -> None:
        self.remotes_dir = Path(remotes_dir)
        self._local_names = frozenset(local_names)
        self._defaults = ssh_defaults
        self._max_channels = max_channels
        self._tree = RemotesTree(self.remotes_dir)
        self._local = LocalRunner(self.remotes_dir)
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

    async def close(self) -> None:
        runners = [runner for _, runner in self._ssh.values()] + self._retired
        self._ssh.clear()
        self._retired.clear()
        await asyncio.gather(*(runner.close() for runner in runners))
