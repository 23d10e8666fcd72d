"""core.hook_runs choosing where a hook runs, with drivers that only record the calls
(tests/e2e/test_remote_hooks.py runs remote hooks on real SSH hosts)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.hook_runs import HookRuns
from core.service import hooks, hosts
from core.service.context import Cloud
from tests.core.clouds import ADMIN, make_cloud


@dataclass(frozen=True)
class Ran:
    rc: int = 0
    stdout: str = ""
    stderr: str = ""
    ok: bool = True
    error: str = ""


class Recorder:
    """A runner that runs nothing and notes where it was asked to run what."""

    def __init__(self, where: str, calls: list[tuple[str, list[str]]]) -> None:
        self.where, self.calls = where, calls

    async def run(self, kind: str, driver: str, action: str, args: Sequence[str],
                  **_: Any) -> Ran:
        self.calls.append((self.where, [kind, driver, action, *args]))
        return Ran()

    async def execute(self, argv: Sequence[str], **_: Any) -> Ran:
        self.calls.append((self.where, list(argv)))
        return Ran()


class Drivers:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def for_host(self, name: str, attributes: Mapping[str, str], kind: str,
                 driver: str) -> Recorder:
        return Recorder(name, self.calls)

    def local(self) -> Recorder:
        return Recorder("front-end", self.calls)


@pytest.fixture
def cloud(db_url: str, tmp_path: Path) -> Iterator[Cloud]:
    c = make_cloud(db_url, tmp_path)
    folder = c.config.remotes / "hooks"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mark").write_text("#!/bin/sh\n")
    (folder / "mark").chmod(0o755)
    try:
        yield c
    finally:
        c.engine.dispose()


async def run_pending(runs: HookRuns) -> None:
    for run_id in runs._claim():
        await runs._guarded(run_id)


def test_a_remote_hook_whose_host_was_deleted_runs_nowhere(cloud: Cloud) -> None:
    """`nubo host disable h1; nubo host delete h1`: the DISABLE hook's run, queued with the
    host's name, found no host row any more and ran on the front-end instead."""
    hooks.create_hook(cloud, ADMIN, text='HOST_HOOK = [ name = "off", on = "DISABLE", '
                      'command = "mark", arguments = "$HID", remote = yes ]')
    hooks.create_hook(cloud, ADMIN, text='HOST_HOOK = [ name = "off-abs", on = "DISABLE", '
                      'command = "/usr/local/bin/off", arguments = "$HID", remote = yes ]')
    ids = {name: hosts.create_host(cloud, ADMIN, name=name, im="dummy", vmm="dummy")
           for name in ("h1", "h2")}
    for host_id in ids.values():
        hosts.enable_host(cloud, ADMIN, host_id=host_id, enable=False)
    hosts.delete_host(cloud, ADMIN, host_id=ids["h1"])  # before the daemon got to its runs
    drivers = Drivers()
    asyncio.run(run_pending(HookRuns(cloud, drivers)))  # type: ignore[arg-type]

    h2 = str(ids["h2"])
    assert sorted(drivers.calls) == [("h2", ["/usr/local/bin/off", h2]),
                                     ("h2", ["hooks", "", "mark", h2])]
    gone = [r for r in hooks.list_runs(cloud, ADMIN) if r.object_id == ids["h1"]]
    assert [(r.hook_name, r.status, r.rc, r.host) for r in sorted(gone, key=lambda r: r.hook_name)
            ] == [("off", "failed", 255, "h1"), ("off-abs", "failed", 255, "h1")]
    assert {r.output for r in gone} == {"host h1 no longer exists: the hook did not run"}
