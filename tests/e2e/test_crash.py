"""Kill a real daemon with SIGKILL during bursts of deployments and shutdowns, restart it,
and check that no VM is lost, stuck in a transitional state or deployed twice."""

from __future__ import annotations

import json
import random
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from core.lifecycle import LcmState, VmState
from tests.live import FAST_CONF, LiveNubo

pytestmark = pytest.mark.slow

VMS = 24
KILLS = 6


def vm_states(nubo: LiveNubo) -> dict[int, tuple[int, int]]:
    ok, doc, _ = nubo.rpc().one.vmpool.info(nubo.session, -2, -1, -1, -2)
    assert ok, doc
    return {int(vm.findtext("ID") or -1): (int(vm.findtext("STATE") or 0),
                                            int(vm.findtext("LCM_STATE") or 0))
            for vm in ET.fromstring(doc).findall("VM")}


def wait_all(nubo: LiveNubo, ids: list[int], want: tuple[int, int], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    states: dict[int, tuple[int, int]] = {}
    while time.monotonic() < deadline:
        states = vm_states(nubo)
        if all(states.get(i) == want for i in ids):
            return
        time.sleep(0.2)
    stuck = {i: states.get(i) for i in ids if states.get(i) != want}
    raise AssertionError(f"VMs not in {want}: {stuck}\n" + nubo.log_path.read_text()[-4000:])


def dummy_record(nubo: LiveNubo, vm_id: int) -> dict[str, object]:
    path = nubo.var / "datastores" / "0" / str(vm_id) / "dummy.json"
    return dict(json.loads(path.read_text()))


def crash_during(nubo: LiveNubo, rng: random.Random, kills: int) -> None:
    for _ in range(kills):
        time.sleep(rng.uniform(0.05, 0.6))
        nubo.kill()
        nubo.start()


@pytest.mark.parametrize(("seed", "database"), [(1, "sqlite"), (2, "sqlite"), (3, "postgresql")])
def test_sigkill_during_bursts(tmp_path: Path, seed: int, database: str,
                               request: pytest.FixtureRequest) -> None:
    rng = random.Random(seed)
    db = request.getfixturevalue("postgres").create_database() if database == "postgresql" else ""
    nubo = LiveNubo(tmp_path / "var", db=db, conf=FAST_CONF + "DISPATCH_CONCURRENCY = 8\n")
    nubo.start()
    try:
        rpc = nubo.rpc()
        ids = []
        for i in range(VMS):
            delay = rng.choice(["0.05", "0.2", "0.4"])
            ok, vm_id, _ = rpc.one.vm.allocate(
                nubo.session, f'NAME = "burst-{i}"\nMEMORY = 32\nCPU = 0.1\nDUMMY_DELAY = {delay}\n'
                'DISK = [ TYPE = swap, SIZE = 16 ]\n')
            assert ok, vm_id
            ids.append(vm_id)
        crash_during(nubo, rng, KILLS)
        wait_all(nubo, ids, (VmState.ACTIVE, LcmState.RUNNING))
        # the kills really cut driver work off (otherwise this test proves nothing)
        assert "interrupted by the last stop" in nubo.log_path.read_text()
        for vm_id in ids:
            record = dummy_record(nubo, vm_id)
            assert record["deploys"] == 1, (vm_id, record)
            assert record["state"] == "running"

        for vm_id in ids:
            ok, _, _ = rpc.one.vm.action(nubo.session, "shutdown", vm_id)
            assert ok
        crash_during(nubo, rng, KILLS // 2)
        wait_all(nubo, ids, (VmState.DONE, LcmState.LCM_INIT))
        for vm_id in ids:
            assert not (nubo.var / "datastores" / "0" / str(vm_id) / "dummy.json").exists() or \
                dummy_record(nubo, vm_id)["state"] == "off"
        ok, doc, _ = rpc.one.hostpool.info(nubo.session)
        share = ET.fromstring(doc).find("HOST/HOST_SHARE")
        assert share is not None
        assert (share.findtext("CPU_USAGE"), share.findtext("MEM_USAGE"),
                share.findtext("RUNNING_VMS")) == ("0", "0", "0")
    finally:
        nubo.kill()
