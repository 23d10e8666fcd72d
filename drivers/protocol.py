"""OpenNebula's driver protocol as a runner sees it, and the run() and execute() every
runner shares.

An action is an executable in any language. Its argv is positional (reference §1-3), the
object's XML document arrives on stdin, stdout is the result, exit 0 means success, stderr
carries log lines (`ERROR:`/`DEBUG:`/`INFO:` prefixes set the severity) and, on failure, the
error block between `ERROR MESSAGE --8<------` and `ERROR MESSAGE ------>8--`.

Driver failures never raise: they come back as a DriverResult (124 timeout, 255 host
unreachable, 42 script missing; for execute(), 126 refused and 127 command missing). Only
programming errors raise.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import re
import shlex
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass

from core.drivers import LogFn

ERROR_BEGIN = "ERROR MESSAGE --8<------"
ERROR_END = "ERROR MESSAGE ------>8--"
RC_SCRIPT_MISSING = 42
RC_TIMEOUT = 124
RC_NOT_EXECUTABLE = 126
RC_COMMAND_MISSING = 127
RC_UNREACHABLE = 255
PID_TAG = "nubo-pid "  # SshRunner's wrapper reports the remote pid on a first stderr line
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*\Z")  # path components, hv and netns names
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")  # execute()'s env names

_logger = logging.getLogger("nubo.drivers")
_LEVELS = {"I": logging.INFO, "E": logging.ERROR, "D": logging.DEBUG}
_PREFIXES = (("ERROR:", "E"), ("DEBUG:", "D"), ("INFO:", "I"))


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


def failure(rc: int, message: str, stderr: str = "") -> DriverResult:
    return DriverResult(rc, "", stderr + error_block(message))


def action_path(kind: str, driver: str, action: str) -> str:
    """`kind/driver/action`, or `kind/action` when driver is "" (im/run_probes)."""
    parts = [kind, driver, action] if driver else [kind, action]
    for part in parts:
        if not SAFE_NAME.match(part):
            raise ValueError(f"invalid driver path component {part!r}")
    return "/".join(parts)


def emit(log: LogFn | None, severity: str, message: str) -> None:
    if log is None:
        _logger.log(_LEVELS.get(severity, logging.INFO), "%s", message)
    else:
        log(severity, message)


class StderrLog:
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
            if line.startswith(PID_TAG) and line[len(PID_TAG) :].isdigit():
                self.pid = int(line[len(PID_TAG) :])
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
        emit(self._log, severity, text)

    @property
    def text(self) -> str:
        return "".join(line + "\n" for line in self._lines)


# On top of an action's own timeout: the time a transport may spend reaching the host and
# syncing the remotes tree. Past both, the caller gets an answer whatever the transport is
# stuck on (a connection to a host whose link was cut answers nothing, not even an error).
REACH_GRACE = 30.0


async def _bounded(work: Awaitable[DriverResult], timeout: float) -> DriverResult:
    try:
        async with asyncio.timeout(timeout + REACH_GRACE):
            return await work
    except TimeoutError:
        return failure(RC_TIMEOUT, f"no answer after {timeout + REACH_GRACE:g} s (the host "
                       "or the connection to it hangs)")


class RunnerBase:
    """run() and execute() for every transport: check the request, log the command line and
    the outcome around the transport's _run_action() or _run_command()."""

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
        emit(log, "I", f"Command execution: {shlex.join([rel, *argv])}")
        return _outcome(log, rel, await _bounded(
            self._run_action(rel, argv, stdin, timeout, log), timeout))

    async def execute(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float = 60.0,
        log: LogFn | None = None,
        env: Mapping[str, str] | None = None,
    ) -> DriverResult:
        """Run `argv` as it is (argv[0] an absolute path, no shell), with `env` over the
        runner's environment. A refused argv or env is a failure with RC_NOT_EXECUTABLE."""
        if isinstance(argv, str):
            raise TypeError("argv must be a sequence of arguments, not a string")
        words = [str(a) for a in argv]
        extra = {str(k): str(v) for k, v in (env or {}).items()}
        emit(log, "I", f"Command execution: {shlex.join(words)}")
        name = words[0] if words else "command"
        refused = _refusal(words, extra)
        if refused is not None:
            return _outcome(log, name, failure(RC_NOT_EXECUTABLE, refused))
        return _outcome(log, name, await _bounded(
            self._run_command(words, extra, stdin, timeout, log), timeout))

    async def beat(self, timeout: float) -> DriverResult:
        """Whether the host answers now (a heartbeat): success, or why not, within
        `timeout`. The front-end always answers itself."""
        return DriverResult(0, "", "")

    async def _run_action(
        self, rel: str, argv: list[str], stdin: bytes | None, timeout: float, log: LogFn | None
    ) -> DriverResult:
        """Run remotes/`rel` with `argv`; RC_SCRIPT_MISSING when it is not there."""
        raise NotImplementedError

    async def _run_command(
        self, argv: list[str], env: dict[str, str], stdin: bytes | None, timeout: float,
        log: LogFn | None,
    ) -> DriverResult:
        """Run the checked `argv` with `env` added; RC_COMMAND_MISSING when argv[0] is not
        an executable file."""
        raise NotImplementedError


def _outcome(log: LogFn | None, name: str, result: DriverResult) -> DriverResult:
    if result.ok:
        emit(log, "I", f"{name} succeeded")
    else:
        emit(log, "E", f"{name} failed: {result.error}")
    return result


def _refusal(argv: list[str], env: dict[str, str]) -> str | None:
    """Why execute() refuses this argv and env, or None."""
    if not argv:
        return "cannot execute an empty command line"
    if not posixpath.isabs(argv[0]):
        return f"command must be an absolute path, not {argv[0]!r}"
    if any("\0" in word for word in argv):
        return f"command line of {argv[0]} contains a NUL byte"
    for name, value in env.items():
        if not ENV_NAME.match(name):
            return f"invalid environment variable name {name!r}"
        if "\0" in value:
            return f"environment variable {name} contains a NUL byte"
    if env and "=" in argv[0]:  # `env NAME=VALUE... CMD` would take CMD for an assignment
        return f"cannot pass an environment to a command whose path has '=': {argv[0]}"
    return None
