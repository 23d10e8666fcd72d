"""drivers.wiring: what the daemon hands the drivers from nubo.conf."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.config import Config, apply_text
from drivers.wiring import DriverSet
from tests.drivers.conftest import REMOTES, write_script


def test_ssh_config_reaches_front_end_drivers(tmp_path: Path) -> None:
    cfg = Config(var=tmp_path)
    apply_text(cfg, f'SSH_CONFIG = "{tmp_path}/lab/ssh_config"\n')
    write_script(cfg.remotes, "tm/probe/env", '#!/bin/sh\necho "config=$NUBO_SSH_CONFIG"\n')
    drivers = DriverSet.from_config(cfg)
    result = asyncio.run(drivers.local().run("tm", "probe", "env", []))
    assert result.ok, result.stderr
    assert result.stdout.strip() == f"config={tmp_path}/lab/ssh_config"


def test_without_ssh_config_nothing_is_exported(tmp_path: Path) -> None:
    cfg = Config(var=tmp_path)
    write_script(cfg.remotes, "tm/probe/env", '#!/bin/sh\necho "config=${NUBO_SSH_CONFIG-unset}"\n')
    result = asyncio.run(DriverSet.from_config(cfg).local().run("tm", "probe", "env", []))
    assert result.stdout.strip() == "config=unset"


def test_local_probes_run_on_the_front_end_after_the_hosts(tmp_path: Path) -> None:
    """im/<hv>.local.d: appended to what im/<hv>.d printed; a failure there is the result."""
    cfg = Config(var=tmp_path)
    write_script(cfg.remotes, "im/run_probes", (REMOTES / "im" / "run_probes").read_text())
    write_script(cfg.remotes, "im/mine.d/cpu", "#!/bin/sh\necho TOTALCPU=200\n")
    (cfg.remotes / "im/mine.d/LOCAL").write_text("")  # the host's own probes, run here too
    write_script(cfg.remotes, "im/mine.local.d/ganglia",
                 '#!/bin/sh\necho GANGLIA_LOAD=0.5\necho "FOR=$2"\n')
    drivers = DriverSet.from_config(cfg)
    runner = drivers.for_host("h1", {}, "im", "mine")

    def probe() -> object:
        return asyncio.run(drivers.run_probes(runner, "mine", 3, "h1", stdin=b"<HOST/>",
                                              timeout=10))

    result = probe()
    assert result.ok and result.stdout == "TOTALCPU=200 GANGLIA_LOAD=0.5 FOR=h1\n"  # type: ignore[attr-defined]
    write_script(cfg.remotes, "im/mine.local.d/broken",
                 '#!/bin/sh\necho "ERROR: broken: no ganglia" >&2\nexit 1\n')
    failed = probe()
    assert not failed.ok and "no ganglia" in failed.error  # type: ignore[attr-defined]
