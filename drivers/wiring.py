"""The daemon's view of the drivers (core.drivers.Drivers) over drivers.runner."""

from __future__ import annotations

import os
from collections.abc import Mapping

from core.config import Config
from core.drivers import LogFn, Result, Runner
from drivers import runner as runner_module
from drivers.runner import DriverResult, HostAccess, LocalRunner, RunnerPool

# A driver folder holding this file runs its actions on the front-end for every host.
LOCAL_MARKER = "LOCAL"
# im/<hv>.local.d: probes of <hv> hosts that run on the front-end (reading an external
# monitoring system, say), after im/<hv>.d ran wherever it runs; their output is appended.
LOCAL_PROBES = ".local"


def _access(defaults: HostAccess, attributes: Mapping[str, str]) -> HostAccess:
    """SSH settings for one host: its template's SSH_* attributes over the defaults."""
    port = attributes.get("SSH_PORT", "")
    return HostAccess(
        address=attributes.get("SSH_ADDRESS") or defaults.address,
        port=int(port) if port.isdigit() else defaults.port,
        username=attributes.get("SSH_USER") or defaults.username,
        client_keys=defaults.client_keys,
        known_hosts=attributes.get("SSH_KNOWN_HOSTS") or defaults.known_hosts,
        netns=attributes.get("SSH_NETNS") or defaults.netns,
        remote_dir=attributes.get("SCRIPTS_REMOTE_DIR") or defaults.remote_dir,
    )


class DriverSet:
    def __init__(self, pool: RunnerPool, defaults: HostAccess) -> None:
        self.pool = pool
        self.defaults = defaults

    @classmethod
    def from_config(cls, cfg: Config) -> DriverSet:
        defaults = HostAccess(
            username=cfg.ssh_user or None,
            client_keys=(os.path.expanduser(cfg.ssh_key),) if cfg.ssh_key else (),
            known_hosts=os.path.expanduser(cfg.ssh_known_hosts) if cfg.ssh_known_hosts else None,
            remote_dir=cfg.scripts_remote_dir,
        )
        env = {"NUBO_VAR": str(cfg.var)}  # the datastore drivers refuse to copy from it
        # drivers that run on the front-end and ssh to hosts themselves (the transfer
        # manager's) find the operator's ssh_config here (`nubo lab up` writes one)
        if cfg.ssh_config:
            env["NUBO_SSH_CONFIG"] = os.path.expanduser(cfg.ssh_config)
        return cls(RunnerPool(cfg.remotes, ssh_defaults=defaults, local_env=env), defaults)

    def for_host(self, name: str, attributes: Mapping[str, str], kind: str, driver: str) -> Runner:
        folder = f"{driver}.d" if kind == "im" else driver
        if (self.pool.remotes_dir / kind / folder / LOCAL_MARKER).exists():
            return self.pool.local()
        found: Runner = self.pool.for_host(name, _access(self.defaults, attributes))
        return found

    def local(self) -> LocalRunner:
        return self.pool.local()

    def has_action(self, kind: str, driver: str, action: str) -> bool:
        return (self.pool.remotes_dir / kind / driver / action).is_file()

    async def run_probes(self, runner: Runner, hv: str, host_id: int, host_name: str, *,
                         stdin: bytes, timeout: float, log: LogFn | None = None) -> Result:
        result: Result = await runner_module.run_probes(
            runner, hv, host_id, host_name, stdin=stdin, timeout=timeout, log=log)
        local_hv = hv + LOCAL_PROBES
        if not result.ok or not (self.pool.remotes_dir / "im" / f"{local_hv}.d").is_dir():
            return result
        extra: Result = await runner_module.run_probes(
            self.pool.local(), local_hv, host_id, host_name, stdin=stdin, timeout=timeout,
            log=log)
        if not extra.ok:
            return extra
        joined = " ".join(out for out in (result.stdout.strip(), extra.stdout.strip()) if out)
        return DriverResult(0, joined + "\n", result.stderr + extra.stderr)

    def invalidate(self) -> None:
        self.pool.invalidate()

    async def abort(self, host_name: str) -> None:
        await self.pool.abort(host_name)

    async def close(self) -> None:
        await self.pool.close()
