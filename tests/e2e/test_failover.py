"""Fault tolerance on real hosts: a lab host carrying guests under qemu is killed (its sshd
and VMs stopped, its link cut); the monitor puts it in ERROR, the seed's HOST HOOK runs
host_error, which fences it with `nubo lab fence` and resubmits its VMs, and every guest
boots again on another host. Where each guest runs is read from the process table and each
process's network namespace, never from Nubo."""

from __future__ import annotations

import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.lab import Lab
from tests.e2e.labcloud import Cloud, qemu_cloud, wait_until
from tests.guest import guest_files_in

pytestmark = pytest.mark.slow
BOOT = 120.0
SEED_HOST_HOOK = """
HOST HOOK = [
name	=	"error",
on	=	"ERROR",
command	=	"host_error.rb",
arguments	=	"\\$HID -r n",
remote	=	no]
"""


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    nubo_cli = Path(sys.executable).parent / "nubo"

    def conf(lab: Lab) -> str:
        return SEED_HOST_HOOK + (f'FENCE_COMMAND = "{nubo_cli} lab fence $HOST '
                                 f'--dir {lab.workdir}"\n')

    with qemu_cloud(tmp_path_factory, "fo", 3, conf) as made:
        yield made


def state(cloud: Cloud, vm_id: int) -> tuple[str, str, str]:
    doc = cloud.vm_doc(vm_id)
    records = doc.findall("HISTORY_RECORDS/HISTORY")
    return (doc.findtext("STATE") or "", doc.findtext("LCM_STATE") or "",
            records[-1].findtext("HOSTNAME") or "" if records else "")


def console(cloud: Cloud, vm_id: int) -> str:
    record = cloud.vm_doc(vm_id).findall("HISTORY_RECORDS/HISTORY")[-1]
    path = Path(record.findtext("DS_LOCATION") or "") / "0" / str(vm_id) / "console.log"
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def test_a_killed_host_s_guests_boot_again_elsewhere(cloud: Cloud,
                                                      tmp_path_factory: pytest.TempPathFactory
                                                      ) -> None:
    kernel, initrd = guest_files_in(tmp_path_factory.mktemp("failover-guest"))
    for name in ("h2", "h3"):  # so that every VM starts on h1
        cloud.nubo.cli("host", "disable", name)
    vms = [int(cloud.call("one.vm.allocate",
                          f'NAME = "ft{i}"\nCPU = "0.1"\nMEMORY = "96"\n'
                          f'OS = [ KERNEL = "{kernel}", INITRD = "{initrd}", '
                          'KERNEL_CMD = "console=ttyS0 quiet panic=-1" ]\n'
                          f'CONTEXT = [ HOSTNAME = "ft{i}" ]\n')) for i in range(3)]
    for vm_id in vms:
        wait_until(f"VM {vm_id} ready on h1", lambda v=vm_id: state(cloud, v) == ("3", "3", "h1")
                   and "NUBO-READY" in console(cloud, v), BOOT)
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
    running = time.monotonic() - killed
    for vm_id in vms:
        wait_until(f"VM {vm_id} ready again", lambda v=vm_id: "NUBO-READY" in console(cloud, v),
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
