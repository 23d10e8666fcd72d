"""The interface core uses to reach drivers; `drivers.runner` implements it.

core never imports the runner's transports (asyncssh, subprocesses): the daemon is
handed an object with this shape at start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

# (severity "I" | "E" | "D", message): a driver log line; the receiver adds the timestamp
LogFn = Callable[[str, str], None]


class Result(Protocol):
    @property
    def rc(self) -> int: ...
    @property
    def stdout(self) -> str: ...
    @property
    def stderr(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def error(self) -> str: ...


class Runner(Protocol):
    async def run(
        self, kind: str, driver: str, action: str, args: Sequence[str], *,
        stdin: bytes | None = None, timeout: float = 60.0, log: LogFn | None = None,
    ) -> Result: ...

    async def execute(
        self, argv: Sequence[str], *, stdin: bytes | None = None, timeout: float = 60.0,
        log: LogFn | None = None, env: Mapping[str, str] | None = None,
    ) -> Result:
        """`argv` as it is, where the runner runs: argv[0] an absolute path outside the
        remotes tree (a hook's command), no shell, `env` added to the environment. Same
        protocol as run(); 127 when the command is missing, 126 when argv is refused."""
        ...

    async def beat(self, timeout: float) -> Result:
        """A heartbeat: whether the host answers now, within `timeout`."""
        ...


class Drivers(Protocol):
    """Runners per host, plus the front-end's own (TM actions run there)."""

    def for_host(self, name: str, attributes: Mapping[str, str], kind: str, driver: str) -> Runner:
        """Where `kind/driver` actions for host `name` run: over SSH on the host, or on the
        front-end for the host `localhost` and for drivers marked local (OpenNebula's
        dummy and EC2 drivers are local: they talk to something other than the host)."""
        ...

    def local(self) -> Runner: ...

    def has_action(self, kind: str, driver: str, action: str) -> bool:
        """Whether the remotes tree has this driver action (optional actions)."""
        ...

    async def run_probes(
        self, runner: Runner, hv: str, host_id: int, host_name: str, *, stdin: bytes,
        timeout: float, log: LogFn | None = None,
    ) -> Result: ...

    def invalidate(self) -> None: ...

    async def abort(self, host_name: str) -> None:
        """Drop the connection to a host declared dead: what runs over it fails now."""
        ...

    async def close(self) -> None: ...
