"""drivers.wiring: what the daemon hands the drivers from nubo.conf."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.config import Config, apply_text
from drivers.wiring import DriverSet
from tests.drivers.conftest import write_script


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
