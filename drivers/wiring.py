"""The daemon's view of the drivers (core.drivers.Drivers) over drivers.runner."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from core.config import Config
from core.drivers import LogFn, Result, Runner
from drivers import runner as runner_module
from drivers.runner import DriverResult, HostAccess, LocalRunner, RunnerPool
from hybrid.ec2_driver import Ec2Runner, Refusing, clients
from hybrid.region import Region, RegionError, cloud_tag, region_for

# A driver folder holding this file runs its actions on the front-end for every host.
LOCAL_MARKER = "LOCAL"
# A driver folder holding this file is a driver inside the daemon: the file names its
# module (the ec2 drivers: hybrid.ec2_driver). Removing it makes the folder's scripts run.
BUILTIN_MARKER = "BUILTIN"
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
    def __init__(self, pool: RunnerPool, defaults: HostAccess,
                 regions: Mapping[str, Mapping[str, str]] | None = None,
                 cloud: str = "") -> None:
        self.pool = pool
        self.defaults = defaults
        self.regions = dict(regions or {})  # nubo.conf's HYBRID_REGION vectors by HOST
        self.cloud = cloud  # this installation's name in public clouds (hybrid.region)
        self._builtin: dict[str, tuple[object, Runner]] = {}

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
        regions = {v.get("HOST", ""): dict(v) for v in cfg.extra.vectors("HYBRID_REGION")}
        cloud = cloud_tag(f"{socket.gethostname()}:{cfg.var}")
        return cls(RunnerPool(cfg.remotes, ssh_defaults=defaults, local_env=env), defaults,
                   regions, cloud)

    def for_host(self, name: str, attributes: Mapping[str, str], kind: str, driver: str) -> Runner:
        folder = f"{driver}.d" if kind == "im" else driver
        if (self.pool.remotes_dir / kind / folder / BUILTIN_MARKER).exists():
            return self._region(name, attributes)
        if (self.pool.remotes_dir / kind / folder / LOCAL_MARKER).exists():
            return self.pool.local()
        found: Runner = self.pool.for_host(name, _access(self.defaults, attributes))
        return found

    def _region(self, name: str, attributes: Mapping[str, str]) -> Runner:
        """The ec2 drivers of host `name`, one runner per host while its settings hold (it
        keeps the region's poll cache)."""
        try:
            region: object = region_for(name, attributes, self.regions.get(name))
        except RegionError as exc:
            return Refusing(f"host {name}: {exc}")
        known = self._builtin.get(name)
        if known is None or known[0] != region:
            assert isinstance(region, Region)
            known = self._builtin[name] = (region, Ec2Runner(region, clients(), self.cloud))
        return known[1]

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
