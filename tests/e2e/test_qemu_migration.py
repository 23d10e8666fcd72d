"""Real guests migrated between lab hosts by a live daemon: cold through tm/ssh (each host
has its own datastores directory), live through the qemu driver's migrate_receive and QMP
migrate (both hosts see one VM dir, as on shared storage). Where a guest runs is checked
from the process table and each process's network namespace, and that it was not rebooted
from its serial console."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.lifecycle import LcmState, VmState
from tests.e2e.labcloud import Cloud, qemu_cloud, wait_until
from tests.guest import guest_os

pytestmark = pytest.mark.slow
BOOT = 90.0


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with qemu_cloud(tmp_path_factory, "mig") as made:
        yield made


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> str:
    return ('CPU = "0.1"\nMEMORY = "128"\nVCPU = "1"\n'
            + guest_os(tmp_path_factory.mktemp("migration-guest"))
            + 'DISK = [ TYPE = fs, SIZE = 8, FORMAT = raw ]\n')


def vm_on(cloud: Cloud, template: str, host: str, name: str) -> int:
    vm_id = int(cloud.call("one.vm.allocate", template + f'NAME = "{name}"\n'
                           f'CONTEXT = [ HOSTNAME = "{name}" ]\n'
                           f'REQUIREMENTS = "NAME = \\"{host}\\""\n'))
    wait_running(cloud, vm_id)
    wait_until(f"{name} ready", lambda: "NUBO-READY" in console(cloud, vm_id), BOOT)
    return vm_id


def state(cloud: Cloud, vm_id: int) -> tuple[int, int]:
    doc = cloud.vm_doc(vm_id)
    return int(doc.findtext("STATE") or -1), int(doc.findtext("LCM_STATE") or -1)


def wait_running(cloud: Cloud, vm_id: int) -> None:
    def running() -> bool:
        now = state(cloud, vm_id)
        assert now[0] != VmState.FAILED, cloud.nubo.cli("vm", "log", str(vm_id)).stdout
        return now == (VmState.ACTIVE, LcmState.RUNNING)

    wait_until(f"VM {vm_id} RUNNING", running, BOOT)


def placement(cloud: Cloud, vm_id: int) -> tuple[str, Path]:
    """The VM's host and its directory there, from its last history record."""
    record = cloud.vm_doc(vm_id).findall("HISTORY_RECORDS/HISTORY")[-1]
    return (record.findtext("HOSTNAME") or "",
            Path(record.findtext("DS_LOCATION") or "") / "0" / str(vm_id))


def console(cloud: Cloud, vm_id: int) -> str:
    try:
        return (placement(cloud, vm_id)[1] / "console.log").read_text(errors="replace")
    except FileNotFoundError:
        return ""


def test_cold_migration_over_ssh(cloud: Cloud, template: str) -> None:
    vm_id = vm_on(cloud, template, "h1", "cold")
    _, old_dir = placement(cloud, vm_id)
    assert cloud.qemu_hosts(vm_id) == ["h1"]
    live = cloud.nubo.cli("vm", "migrate", str(vm_id), "h2", "--live", check=False)
    assert live.returncode == 1 and "shared storage" in live.stderr  # tm/ssh: cold only

    asked = time.monotonic()
    out = cloud.nubo.cli("vm", "migrate", str(vm_id), "h2", "--wait", "--timeout", str(BOOT))
    assert out.returncode == 0, out.stderr
    print(f"cold migration h1 -> h2 over ssh, CLI call to RUNNING: "
          f"{time.monotonic() - asked:.1f} s")
    host, new_dir = placement(cloud, vm_id)
    assert host == "h2" and new_dir != old_dir
    assert cloud.qemu_hosts(vm_id) == ["h2"]
    assert not old_dir.exists()  # tm/ssh mv took the files away from h1
    text = console(cloud, vm_id)  # the console log moved with the VM dir
    assert text.count("NUBO-GUEST-START") == 1  # restored on h2, not booted again
    assert "NUBO-DISK" in text and (new_dir / "disk.0").exists()
    wait_until("h1 shows no VM", lambda: cloud.host_doc("h1").findtext("HOST_SHARE/RUNNING_VMS")
               == "0")
    cloud.call("one.vm.action", "reboot", vm_id)  # the guest answers on h2
    wait_until("a reboot on h2", lambda: console(cloud, vm_id).count("NUBO-READY") == 2, BOOT)
    cloud.call("one.vm.action", "shutdown", vm_id)
    wait_until("cold DONE", lambda: state(cloud, vm_id)[0] == VmState.DONE, BOOT)
    assert cloud.qemu_hosts(vm_id) == []


def test_live_migration_on_shared_storage(cloud: Cloud, template: str,
                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    """One datastores directory for both hosts (the lab's hosts share a filesystem) and
    tm/shared for the system datastore: the guest moves while it runs, and back; a
    migration that cannot reach its target leaves it running where it was."""
    shared = tmp_path_factory.mktemp("shared-datastores")
    for name in ("h1", "h2"):
        cloud.call("one.host.update", cloud.host_id(name),
                   f'DATASTORE_LOCATION = "{shared}"\n', 1)
    cloud.nubo.cli("datastore", "update", "system", "--tm", "shared")
    try:
        vm_id = vm_on(cloud, template, "h1", "live")
        assert cloud.qemu_hosts(vm_id) == ["h1"]
        asked = time.monotonic()
        cloud.call("one.vm.migrate", vm_id, cloud.host_id("h2"), True)
        seen = set()
        while state(cloud, vm_id) != (VmState.ACTIVE, LcmState.RUNNING):
            seen.add(state(cloud, vm_id)[1])
        wait_running(cloud, vm_id)
        print(f"live migration h1 -> h2, call to RUNNING: {time.monotonic() - asked:.1f} s")
        assert placement(cloud, vm_id)[0] == "h2" and cloud.qemu_hosts(vm_id) == ["h2"]
        assert LcmState.SAVE_MIGRATE not in seen  # live: never saved
        assert console(cloud, vm_id).count("NUBO-GUEST-START") == 1

        # h1 is announced at an address where nothing listens: the send fails
        cloud.call("one.host.update", cloud.host_id("h1"), 'MIGRATION_ADDRESS = "127.0.0.1"\n', 1)
        out = cloud.nubo.cli("vm", "migrate", str(vm_id), "h1", "--live", "--wait", check=False)
        assert out.returncode == 1 and "still runs on h2" in out.stderr
        assert cloud.qemu_hosts(vm_id) == ["h2"]  # the receiver on h1 was cancelled
        records = cloud.vm_doc(vm_id).findall("HISTORY_RECORDS/HISTORY")
        assert [r.findtext("HOSTNAME") for r in records] == ["h1", "h2", "h1", "h2"]
        log = cloud.nubo.cli("vm", "log", str(vm_id)).stdout
        assert "migrating" in log and "runs on h2 again" in log

        address = cloud.lab.host("h1").address
        cloud.call("one.host.update", cloud.host_id("h1"), f'MIGRATION_ADDRESS = "{address}"\n', 1)
        out = cloud.nubo.cli("vm", "migrate", str(vm_id), "h1", "--live", "--wait")
        assert out.returncode == 0, out.stderr
        assert cloud.qemu_hosts(vm_id) == ["h1"]
        assert console(cloud, vm_id).count("NUBO-GUEST-START") == 1
        cloud.call("one.vm.action", "shutdown", vm_id)  # ACPI reaches the moved guest
        wait_until("live DONE", lambda: state(cloud, vm_id)[0] == VmState.DONE, BOOT)
        assert cloud.qemu_hosts(vm_id) == []
    finally:
        cloud.nubo.cli("datastore", "update", "system", "--tm", "ssh")
