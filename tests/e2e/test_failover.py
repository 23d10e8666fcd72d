"""Fault tolerance on real hosts, with the monitoring defaults (heartbeats every 2 s, probes
every 60 s): a lab host carrying guests under qemu is killed (its sshd and VMs stopped, its
link cut); the monitor puts it in ERROR, the seed's HOST HOOK runs host_error, which fences
it with `nubo lab fence` and resubmits its VMs, and every guest boots again on another
host. The killed host then comes back and is cleaned; last, a host is only cut off (its
guests run on, unreachable): it is fenced before anything moves, and cleaned when it
returns. Where each guest runs is read from the process table and each process's network
namespace, never from Nubo.

Tests run in file order on one daemon and one lab."""

from __future__ import annotations

import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.lab import Lab
from tests.e2e.labcloud import MONITORING_DEFAULTS, Cloud, qemu_cloud, wait_until
from tests.guest import guest_os
from tests.live import SEED_HOST_HOOK

pytestmark = pytest.mark.slow
BOOT = 120.0


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    nubo_cli = Path(sys.executable).parent / "nubo"

    def conf(lab: Lab) -> str:
        return MONITORING_DEFAULTS + SEED_HOST_HOOK + (f'FENCE_COMMAND = "{nubo_cli} lab fence $HOST '
                                 f'--dir {lab.workdir}"\n')

    with qemu_cloud(tmp_path_factory, "fo", 3, conf) as made:
        yield made


MOVED: list[int] = []  # the VMs of the first test, for the next ones


def state(cloud: Cloud, vm_id: int) -> tuple[str, str, str]:
    doc = cloud.vm_doc(vm_id)
    records = doc.findall("HISTORY_RECORDS/HISTORY")
    return (doc.findtext("STATE") or "", doc.findtext("LCM_STATE") or "",
            records[-1].findtext("HOSTNAME") or "" if records else "")


def test_a_killed_host_s_guests_boot_again_elsewhere(cloud: Cloud,
                                                      tmp_path_factory: pytest.TempPathFactory
                                                      ) -> None:
    os_vector = guest_os(tmp_path_factory.mktemp("failover-guest"))
    for name in ("h2", "h3"):  # so that every VM starts on h1
        cloud.nubo.cli("host", "disable", name)
    vms = [int(cloud.call("one.vm.allocate",
                          f'NAME = "ft{i}"\nCPU = "0.1"\nMEMORY = "96"\n' + os_vector +
                          f'CONTEXT = [ HOSTNAME = "ft{i}" ]\n')) for i in range(3)]
    for vm_id in vms:
        wait_until(f"VM {vm_id} ready on h1", lambda v=vm_id: state(cloud, v) == ("3", "3", "h1")
                   and "NUBO-READY" in cloud.console(v), BOOT)
        assert cloud.qemu_hosts(vm_id) == ["h1"]
    for name in ("h2", "h3"):
        cloud.nubo.cli("host", "enable", name)
        wait_until(f"{name} monitored", lambda n=name: cloud.host_doc(n).findtext("STATE") == "2")

    h1 = cloud.lab.host("h1")
    killed = time.monotonic()
    h1.power_off()  # sshd and every VM gone...
    h1.cut()  # ...and its link down
    seen_twice: list[tuple[int, list[str]]] = []

    def moved() -> bool:
        for vm_id in vms:
            where = cloud.qemu_hosts(vm_id)
            if len(set(where)) > 1:  # (a starting qemu shows twice: -daemonize)
                seen_twice.append((vm_id, where))
        return all(state(cloud, v)[:2] == ("3", "3") and state(cloud, v)[2] != "h1"
                   for v in vms)

    wait_until("every VM RUNNING on another host", moved, BOOT)
    MOVED.extend(vms)
    running = time.monotonic() - killed
    for vm_id in vms:
        wait_until(f"VM {vm_id} ready again", lambda v=vm_id: "NUBO-READY" in cloud.console(v),
                   BOOT)
    ready = time.monotonic() - killed
    print(f"host killed -> {len(vms)} VMs RUNNING elsewhere: {running:.1f} s, "
          f"guests ready: {ready:.1f} s")
    assert not seen_twice, seen_twice
    for vm_id in vms:
        host = state(cloud, vm_id)[2]
        assert cloud.qemu_hosts(vm_id) == [host]
    log = ET.fromstring(cloud.call("one.hooklog.info", 0, 0, -1, 0))
    outputs = [r.findtext("EXECUTION_RESULT/STDOUT") or "" for r in log]
    assert any("h1 fenced" in o and "resubmit of 3 VM(s)" in o for o in outputs), outputs
    assert cloud.host_doc("h1").findtext("STATE") == "3"


def vm_dir(cloud: Cloud, host: str, vm_id: int) -> Path:
    return cloud.lab.host(host).datastores / "0" / str(vm_id)


def test_the_killed_host_is_cleaned_when_it_comes_back(cloud: Cloud) -> None:
    assert MOVED, "runs after the kill test"
    assert all(vm_dir(cloud, "h1", v).is_dir() for v in MOVED)  # nothing was asked of h1
    cloud.lab.power_on("h1")
    wait_until("h1 MONITORED", lambda: cloud.host_doc("h1").findtext("STATE") == "2")
    wait_until("the VM dirs on h1 removed",
               lambda: not any(vm_dir(cloud, "h1", v).exists() for v in MOVED))
    for vm_id in MOVED:
        where = state(cloud, vm_id)
        assert where[:2] == ("3", "3") and where[2] != "h1"
        assert cloud.qemu_hosts(vm_id) == [where[2]]
        wait_until(f"VM {vm_id}'s reclaim logged", lambda v=vm_id: "Host h1 answers again: "
                   "removing what the VM left there" in cloud.nubo.cli("vm", "log", str(v)).stdout)


def test_a_cut_off_host_is_fenced_before_its_guests_move_and_cleaned_when_back(
        cloud: Cloud) -> None:
    assert MOVED, "runs after the kill test"
    hosts = {v: state(cloud, v)[2] for v in MOVED}
    victim = max(("h2", "h3"), key=lambda h: sum(where == h for where in hosts.values()))
    guests = [v for v, where in hosts.items() if where == victim]
    for vm_id in guests:
        assert cloud.qemu_hosts(vm_id) == [victim]
        wait_until(f"VM {vm_id} ready", lambda v=vm_id: "NUBO-READY" in cloud.console(v), BOOT)
    cut = time.monotonic()
    cloud.lab.host(victim).cut()  # a partition: its guests run on, out of reach
    seen_twice: list[tuple[int, list[str]]] = []

    def moved() -> bool:
        for vm_id in guests:
            where = cloud.qemu_hosts(vm_id)
            if len(set(where)) > 1:
                seen_twice.append((vm_id, where))
        return all(state(cloud, v)[:2] == ("3", "3") and state(cloud, v)[2] != victim
                   for v in guests)

    wait_until("its VMs RUNNING on another host", moved, BOOT)
    running = time.monotonic() - cut
    print(f"{victim} cut off -> {len(guests)} VMs RUNNING elsewhere: {running:.1f} s")
    assert not seen_twice, seen_twice  # the fence killed them before they moved
    log = ET.fromstring(cloud.call("one.hooklog.info", 0, 0, -1, 0))
    assert any(f"{victim} fenced" in (r.findtext("EXECUTION_RESULT/STDOUT") or "")
               for r in log)
    assert all(vm_dir(cloud, victim, v).is_dir() for v in guests)
    cloud.lab.power_on(victim)
    wait_until(f"{victim} MONITORED", lambda: cloud.host_doc(victim).findtext("STATE") == "2")
    wait_until(f"the VM dirs on {victim} removed",
               lambda: not any(vm_dir(cloud, victim, v).exists() for v in guests))
    for vm_id in guests:
        wait_until(f"VM {vm_id} ready again", lambda v=vm_id: "NUBO-READY" in cloud.console(v),
                   BOOT)
        where = state(cloud, vm_id)
        assert where[:2] == ("3", "3") and cloud.qemu_hosts(vm_id) == [where[2]]
