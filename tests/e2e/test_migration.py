"""Migration through a live daemon and the dummy drivers: cold (SAVE_MIGRATE →
PROLOG_MIGRATE → BOOT) and live (MIGRATE), what each does to the history records and to
both hosts' capacity, failures that leave the VM running where it was, a VM finalized in
the middle, and every refusal with its reason. tests/e2e/test_qemu_migration.py moves real
guests between lab hosts."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

from tests.live import FAST_CONF, LiveNubo, call, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def nubo(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNubo]:
    db = request.getfixturevalue("postgres").create_database() \
        if request.param == "postgresql" else ""
    live = LiveNubo(tmp_path_factory.mktemp("migration"), db=db,
                    conf=FAST_CONF + "REGISTER_LOCALHOST = NO\n")
    try:
        live.start()
        for name in ("m1", "m2"):
            live.cli("host", "create", name, "--im", "dummy", "--vmm", "dummy")
        for name in ("m1", "m2"):
            wait_until(f"{name} monitored", lambda n=name: host(live, n)["STATE"] == "2")
        yield live
    finally:
        live.stop()



def refused(nubo: LiveNubo, method: str, *args: Any, session: str = "") -> tuple[str, int]:
    ok, message, code = getattr(nubo.rpc(), method)(session or nubo.session, *args)[:3]
    assert not ok, (method, message)
    return str(message), int(code)


def host(nubo: LiveNubo, name: str) -> dict[str, str]:
    for found in ET.fromstring(call(nubo, "one.hostpool.info")).findall("HOST"):
        if found.findtext("NAME") == name:
            return {c.tag: c.text or "" for c in found.iter() if len(c) == 0}
    raise AssertionError(f"no host {name}")


def host_id(nubo: LiveNubo, name: str) -> int:
    return int(host(nubo, name)["ID"])


def usage(nubo: LiveNubo, name: str) -> tuple[int, int, int]:
    found = host(nubo, name)
    return int(found["CPU_USAGE"]), int(found["MEM_USAGE"]), int(found["RUNNING_VMS"])


def vm_doc(nubo: LiveNubo, vm_id: int) -> ET.Element:
    return ET.fromstring(call(nubo, "one.vm.info", vm_id))


def history(nubo: LiveNubo, vm_id: int) -> list[dict[str, str]]:
    return [{c.tag: c.text or "" for c in h}
            for h in vm_doc(nubo, vm_id).findall("HISTORY_RECORDS/HISTORY")]


def state(nubo: LiveNubo, vm_id: int) -> tuple[str, str]:
    doc = vm_doc(nubo, vm_id)
    return doc.findtext("STATE") or "", doc.findtext("LCM_STATE") or ""


def actions(nubo: LiveNubo, vm_id: int) -> list[str]:
    path = nubo.var / "datastores" / "0" / str(vm_id) / "dummy.json"
    return [str(a) for a in json.loads(path.read_text())["actions"]]


def running_vm(nubo: LiveNubo, on: str, extra: str = "") -> int:
    vm_id = int(call(nubo, "one.vm.allocate", "MEMORY = 64\nCPU = 0.5\n"
                     f'REQUIREMENTS = "NAME = \\"{on}\\""\n' + extra))
    nubo.wait_vm(vm_id, "RUNNING")
    return vm_id



def settled(nubo: LiveNubo, vm_id: int) -> None:
    """Wait until the VM is RUNNING again (ACTIVE/RUNNING), whatever host it is on."""
    wait_until(f"VM {vm_id} RUNNING", lambda: state(nubo, vm_id) == ("3", "3"))


def test_cold_migration_moves_the_vm_and_its_capacity(nubo: LiveNubo) -> None:
    before = usage(nubo, "m1"), usage(nubo, "m2")
    vm_id = running_vm(nubo, "m1")
    assert usage(nubo, "m1")[2] == before[0][2] + 1
    out = nubo.cli("vm", "migrate", str(vm_id), "m2", "--wait")
    assert out.returncode == 0, out.stderr
    assert "save" in out.stdout and "runn" in out.stdout  # the states it went through
    records = history(nubo, vm_id)
    assert [r["HOSTNAME"] for r in records] == ["m1", "m2"]
    assert records[0]["REASON"] == "3" and records[0]["ETIME"] != "0"  # left by the user
    assert records[1]["ETIME"] == "0"
    assert usage(nubo, "m1") == before[0]  # nothing left reserved on the source
    assert usage(nubo, "m2") == (before[1][0] + 50, before[1][1] + 64 * 1024, before[1][2] + 1)
    done = actions(nubo, vm_id)
    assert done[-2:] == ["save", "restore"], done
    log = nubo.cli("vm", "log", str(vm_id)).stdout
    for step in ("SAVE_MIGRATE", "PROLOG_MIGRATE", "BOOT"):
        assert f"ACTIVE/{step}" in log
    call(nubo, "one.vm.action", "shutdown", vm_id)
    nubo.wait_vm(vm_id, "DONE")
    assert usage(nubo, "m2") == before[1]


def test_live_migration_keeps_the_vm_running(nubo: LiveNubo) -> None:
    vm_id = running_vm(nubo, "m2")
    assert call(nubo, "one.vm.migrate", vm_id, host_id(nubo, "m1"), True) == vm_id
    assert state(nubo, vm_id)[1] in ("4", "3")  # MIGRATE, or already done
    settled(nubo, vm_id)
    assert [r["HOSTNAME"] for r in history(nubo, vm_id)] == ["m2", "m1"]
    assert actions(nubo, vm_id)[-1] == "migrate"  # no save, no restore
    assert usage(nubo, "m2")[2] == 0 and usage(nubo, "m1")[2] == 1
    call(nubo, "one.vm.action", "cancel", vm_id)
    nubo.wait_vm(vm_id, "DONE")


@pytest.mark.parametrize(("live", "fail"), [(False, "save"), (True, "migrate")])
def test_a_failed_migration_leaves_the_vm_running_where_it_was(nubo: LiveNubo, live: bool,
                                                               fail: str) -> None:
    vm_id = running_vm(nubo, "m1", f'DUMMY_FAIL = "{fail}"\n')
    before = usage(nubo, "m1"), usage(nubo, "m2")
    call(nubo, "one.vm.migrate", vm_id, host_id(nubo, "m2"), live)
    wait_until("the failure", lambda: len(history(nubo, vm_id)) == 3)
    settled(nubo, vm_id)
    records = history(nubo, vm_id)
    assert [r["HOSTNAME"] for r in records] == ["m1", "m2", "m1"]
    assert records[1]["REASON"] == "1" and records[1]["ETIME"] != "0"  # the attempt: ERROR
    assert (usage(nubo, "m1"), usage(nubo, "m2")) == before
    message = vm_doc(nubo, vm_id).findtext("USER_TEMPLATE/ERROR") or ""
    log = nubo.cli("vm", "log", str(vm_id)).stdout
    assert f"injected failure of {fail}" in message and "runs on m1 again" in log
    # the VM is still usable: polls keep it RUNNING, and it shuts down from m1
    call(nubo, "one.vm.action", "shutdown", vm_id)
    nubo.wait_vm(vm_id, "DONE")
    assert usage(nubo, "m1")[2] == before[0][2] - 1


def test_the_cli_says_when_a_migration_did_not_happen(nubo: LiveNubo) -> None:
    vm_id = running_vm(nubo, "m2", 'DUMMY_FAIL = "save"\n')
    out = nubo.cli("vm", "migrate", str(vm_id), "m1", "--wait", check=False)
    assert out.returncode == 1 and f"VM {vm_id} still runs on m2" in out.stderr
    call(nubo, "one.vm.action", "cancel", vm_id)
    nubo.wait_vm(vm_id, "DONE")


def test_a_vm_finalized_while_migrating_releases_both_hosts(nubo: LiveNubo) -> None:
    before = usage(nubo, "m1"), usage(nubo, "m2")
    vm_id = running_vm(nubo, "m1", "DUMMY_DELAY_SAVE = 3\n")
    call(nubo, "one.vm.migrate", vm_id, host_id(nubo, "m2"), False)
    assert state(nubo, vm_id) == ("3", "7")  # SAVE_MIGRATE, holding both hosts
    assert usage(nubo, "m1")[2] == before[0][2] + 1 and usage(nubo, "m2")[2] == before[1][2] + 1
    call(nubo, "one.vm.action", "finalize", vm_id)
    nubo.wait_vm(vm_id, "DONE")
    assert (usage(nubo, "m1"), usage(nubo, "m2")) == before
    wait_until("the cleanup on both hosts", lambda: "cleaning there too" in
             nubo.cli("vm", "log", str(vm_id)).stdout)


def test_refusals(nubo: LiveNubo) -> None:
    vm_id = running_vm(nubo, "m1")
    m1, m2 = host_id(nubo, "m1"), host_id(nubo, "m2")
    message, code = refused(nubo, "one.vm.migrate", vm_id, m1, False)
    assert "already runs on host m1" in message
    message, code = refused(nubo, "one.vm.migrate", vm_id, 9999, False)
    assert code == 0x400 and "9999" in message
    call(nubo, "one.host.update", m2, "DUMMY_TOTALCPU = 10\n", 1)  # no room for 0.5 CPU
    wait_until("m2 down to 0.1 CPU", lambda: host(nubo, "m2")["MAX_CPU"] == "10")
    message, _ = refused(nubo, "one.vm.migrate", vm_id, m2, False, True)
    assert "no room" in message
    call(nubo, "one.host.update", m2, "DUMMY_TOTALCPU = 800\n", 1)
    wait_until("m2 back to 8 CPUs", lambda: host(nubo, "m2")["MAX_CPU"] == "800")
    call(nubo, "one.host.enable", m2, False)
    message, _ = refused(nubo, "one.vm.migrate", vm_id, m2, False)
    assert "disabled" in message
    call(nubo, "one.host.enable", m2, True)
    out = nubo.cli("datastore", "update", "system", "--tm", "ssh")
    try:
        message, _ = refused(nubo, "one.vm.migrate", vm_id, m2, True)
        assert "shared storage" in message and "cold migration" in message
    finally:
        nubo.cli("datastore", "update", "system", "--tm", "dummy")
    assert out.returncode == 0
    call(nubo, "one.user.allocate", "mallory", "pw", "")
    message, code = refused(nubo, "one.vm.migrate", vm_id, m2, False, session="mallory:pw")
    assert code == 0x200 and "oneadmin" in message
    call(nubo, "one.vm.action", "suspend", vm_id)
    nubo.wait_vm(vm_id, "SUSPENDED")
    message, _ = refused(nubo, "one.vm.migrate", vm_id, m2, False)
    assert "SUSPENDED" in message
    out = nubo.cli("vm", "migrate", str(vm_id), "m2", check=False)
    assert out.returncode == 1 and "SUSPENDED" in out.stderr and "Traceback" not in out.stderr
    call(nubo, "one.vm.action", "finalize", vm_id)


@pytest.mark.parametrize("live", [False, True], ids=["cold", "live"])
def test_a_daemon_killed_mid_migration_finishes_it(nubo: LiveNubo, live: bool) -> None:
    """SIGKILL while the driver step runs; after the restart the VM ends RUNNING on the
    target, deployed once, holding capacity on the target only."""
    before = usage(nubo, "m1"), usage(nubo, "m2")
    vm_id = running_vm(nubo, "m1", "DUMMY_DELAY_SAVE = 1.5\nDUMMY_DELAY_MIGRATE = 1.5\n")
    call(nubo, "one.vm.migrate", vm_id, host_id(nubo, "m2"), live)
    time.sleep(0.7)  # inside the save (cold) or the send (live)
    assert state(nubo, vm_id)[1] == ("4" if live else "7")
    nubo.kill()
    nubo.start()
    settled(nubo, vm_id)
    assert [r["HOSTNAME"] for r in history(nubo, vm_id)] == ["m1", "m2"]
    record = json.loads((nubo.var / "datastores" / "0" / str(vm_id) / "dummy.json").read_text())
    assert record["deploys"] == 1 and record["state"] == "running"
    assert "after a restart of the daemon" in nubo.cli("vm", "log", str(vm_id)).stdout
    assert usage(nubo, "m1") == before[0] and usage(nubo, "m2")[2] == before[1][2] + 1
    call(nubo, "one.vm.action", "cancel", vm_id)
    nubo.wait_vm(vm_id, "DONE")
