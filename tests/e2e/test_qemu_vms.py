"""Real VMs end to end: a live daemon places VMs on lab hosts monitored by the KVM probes,
the ssh transfer manager copies their disks and context CD, and the qemu driver boots the
test guest (tests/guest.py) under qemu. What each step did is checked on the hosts: the
guest's serial console, the qemu processes, the VM directories."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.lifecycle import LcmState, VmState
from tests.e2e.labcloud import Cloud, qemu_cloud, wait_until
from tests.guest import guest_os

pytestmark = pytest.mark.slow
BOOT = 90.0  # TCG on 2 shared cores, several VMs at once


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with qemu_cloud(tmp_path_factory, "qemu") as made:
        yield made


@pytest.fixture(scope="module")
def template(cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A VM template booting the test guest with one 16 MB data disk from an image."""
    where = tmp_path_factory.mktemp("guest-images")
    os_vector = guest_os(where)
    data = where / "data.img"
    with open(data, "wb") as f:
        f.truncate(16 * 1024 * 1024)
    image = cloud.call("one.image.allocate", f'NAME = "data"\nPATH = "{data}"\n', 1)
    return ('CPU = "0.1"\nMEMORY = "128"\nVCPU = "1"\n' + os_vector +
            f'DISK = [ IMAGE_ID = "{image}" ]\n')


class Vm:
    def __init__(self, cloud: Cloud, vm_id: int) -> None:
        self.cloud, self.id = cloud, vm_id

    def doc(self) -> Any:
        return self.cloud.vm_doc(self.id)

    def state(self) -> tuple[int, int]:
        doc = self.doc()
        return int(doc.findtext("STATE") or -1), int(doc.findtext("LCM_STATE") or -1)

    def wait(self, state: VmState, lcm: LcmState = LcmState.LCM_INIT,
             timeout: float = BOOT) -> None:
        def reached() -> bool:
            now = self.state()
            assert now[0] != VmState.FAILED, self.log()
            return now == (state, lcm)

        wait_until(f"VM {self.id} {state.name}/{lcm.name}", reached, timeout)

    def host(self) -> str:
        return self.doc().findall("HISTORY_RECORDS/HISTORY")[-1].findtext("HOSTNAME") or ""

    def vmdir(self) -> Path:
        return self.cloud.lab.host(self.host()).datastores / "0" / str(self.id)

    def console(self) -> str:
        try:
            return (self.vmdir() / "console.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_console(self, marker: str, count: int = 1) -> str:
        wait_until(f"{marker!r} x{count} on VM {self.id}'s console",
                   lambda: self.console().count(marker) >= count, BOOT)
        return self.console()

    def action(self, name: str) -> None:
        self.cloud.call("one.vm.action", name, self.id)

    def log(self) -> str:
        return self.cloud.nubo.cli("vm", "log", str(self.id)).stdout[-3000:]


def create(cloud: Cloud, template: str, name: str) -> Vm:
    text = template + f'NAME = "{name}"\nCONTEXT = [ HOSTNAME = "{name}" ]\n'
    return Vm(cloud, cloud.call("one.vm.allocate", text))


def test_a_vm_runs_the_guest_and_goes_through_its_life(cloud: Cloud, template: str) -> None:
    vm = create(cloud, template, "life")
    started = time.monotonic()
    vm.wait(VmState.ACTIVE, LcmState.RUNNING)
    console = vm.wait_console("NUBO-READY")
    print(f"create -> guest ready: {time.monotonic() - started:.1f} s")
    assert "NUBO-CONTEXT-FOUND hostname=life" in console
    assert "NUBO-DISK /dev/vda 32768" in console  # the image, copied by tm/ssh
    vmdir = vm.vmdir()
    assert cloud.qemu_hosts(vm.id) == [vm.host()]
    # the monitor keeps a copy on the front-end: the CLI and EC2's GetConsoleOutput show it
    wait_until("the console on the front-end",
               lambda: "NUBO-READY" in cloud.nubo.cli("vm", "console", str(vm.id)).stdout)

    vm.action("reboot")
    vm.wait_console("NUBO-READY", 2)
    vm.wait(VmState.ACTIVE, LcmState.RUNNING)

    vm.action("suspend")  # memory to a checkpoint on the host; qemu stops
    vm.wait(VmState.SUSPENDED)
    assert cloud.qemu_hosts(vm.id) == [] and (vmdir / "checkpoint").stat().st_size > 1_000_000
    vm.action("resume")
    vm.wait(VmState.ACTIVE, LcmState.RUNNING)
    assert cloud.qemu_hosts(vm.id) == [vm.host()]
    assert vm.console().count("NUBO-GUEST-START") == 2  # restored, not booted again

    vm.action("stop")  # checkpoint, then the VM dir goes to the front-end
    vm.wait(VmState.STOPPED)
    assert cloud.qemu_hosts(vm.id) == []
    vm.action("resume")
    vm.wait(VmState.ACTIVE, LcmState.RUNNING)
    assert cloud.qemu_hosts(vm.id) == [vm.host()]
    assert vm.console().count("NUBO-GUEST-START") == 2

    vm.action("shutdown")  # ACPI: the guest powers itself off
    vm.wait(VmState.DONE)
    assert cloud.qemu_hosts(vm.id) == []
    assert not vm.vmdir().exists()  # epilog deleted it on the host


def test_cancel_and_a_failed_prolog(cloud: Cloud, template: str, tmp_path: Path) -> None:
    vm = create(cloud, template, "cancelled")
    vm.wait(VmState.ACTIVE, LcmState.RUNNING)
    vmdir = vm.vmdir()
    vm.action("cancel")
    vm.wait(VmState.DONE)
    assert cloud.qemu_hosts(vm.id) == [] and not vmdir.exists()

    gone = tmp_path / "gone.img"
    gone.write_bytes(b"x" * 1024)
    image = cloud.call("one.image.allocate", f'NAME = "gone"\nPATH = "{gone}"\n', 1)
    gone.unlink()
    broken = template.replace("DISK = [ IMAGE_ID", f'DISK = [ IMAGE_ID = "{image}" ]\n#')
    vm = Vm(cloud, cloud.call("one.vm.allocate", broken + 'NAME = "broken"\n'))
    wait_until("the broken VM FAILED", lambda: vm.state()[0] == VmState.FAILED, BOOT)
    assert "gone.img" in (vm.doc().findtext("USER_TEMPLATE/ERROR") or "") + vm.log()


def test_the_guest_takes_its_leased_address_from_the_context(cloud: Cloud,
                                                             template: str) -> None:
    """A NIC on a virtual network whose bridge every host has; CONTEXT hands the guest the
    leased address through `$NIC[IP]`; the host reaches the guest on it."""
    bridge = f"nb{os.getpid() % 100000}"
    for host in cloud.lab.hosts:
        ip = ["ip", "-n", host.netns]
        subprocess.run([*ip, "link", "add", bridge, "type", "bridge"], check=True)
        subprocess.run([*ip, "addr", "add", "10.216.0.1/24", "dev", bridge], check=True)
        subprocess.run([*ip, "link", "set", bridge, "up"], check=True)
    try:
        net = cloud.call("one.vn.allocate", f'NAME = "lab"\nTYPE = FIXED\nBRIDGE = "{bridge}"\n'
                         'LEASES = [ IP = "10.216.0.23" ]\n', -1)
        text = template + (f'NAME = "netted"\nNIC = [ NETWORK_ID = "{net}" ]\n'
                           'CONTEXT = [ HOSTNAME = "$NAME", ETH0_IP = "$NIC[IP]", '
                           'ETH0_MASK = "255.255.255.0" ]\n')
        vm = Vm(cloud, cloud.call("one.vm.allocate", text))
        vm.wait(VmState.ACTIVE, LcmState.RUNNING)
        console = vm.wait_console("NUBO-NET-UP")
        assert "NUBO-CONTEXT-FOUND hostname=netted ip=10.216.0.23" in console
        assert "NUBO-NET-UP ip=10.216.0.23" in console
        netns = cloud.lab.host(vm.host()).netns
        ping = subprocess.run(["ip", "netns", "exec", netns, "ping", "-c", "1", "-W", "5",
                               "10.216.0.23"], capture_output=True, text=True)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        vm.action("shutdown")
        vm.wait(VmState.DONE)
    finally:
        for host in cloud.lab.hosts:
            subprocess.run(["ip", "-n", host.netns, "link", "del", bridge], check=False)


def test_qemu_failing_to_start_fails_the_vm_with_its_message(cloud: Cloud,
                                                            template: str) -> None:
    broken = re.sub(r'KERNEL = "[^"]*"', 'KERNEL = "/nonexistent/vmlinuz"', template)
    vm = Vm(cloud, cloud.call("one.vm.allocate", broken + 'NAME = "no-kernel"\n'))
    wait_until("the VM without a kernel FAILED", lambda: vm.state()[0] == VmState.FAILED, BOOT)
    reason = vm.doc().findtext("USER_TEMPLATE/ERROR") or ""
    assert "boot failed" in reason and "/nonexistent/vmlinuz" in reason, reason
    assert cloud.qemu_hosts(vm.id) == []


def test_a_storage_driver_the_operator_copied_and_edited(cloud: Cloud, template: str) -> None:
    """The seed's hands-on: copy a transfer manager, change its clone, point the datastore
    at it; the next VM's disks go through the edited script (TM scripts run on the
    front-end, so no sync is needed)."""
    tm = cloud.nubo.var / "remotes" / "tm"
    shutil.copytree(tm / "ssh", tm / "mine")
    clone = tm / "mine" / "clone"
    first, rest = clone.read_text().split("\n", 1)
    clone.write_text(f'{first}\necho "INFO: mine: custom clone of $1" >&2\n{rest}')
    cloud.nubo.cli("datastore", "update", "default", "--tm", "mine")
    try:
        vm = create(cloud, template, "custom-tm")
        vm.wait(VmState.ACTIVE, LcmState.RUNNING)
        assert "custom clone of" in vm.log()
        vm.action("cancel")
        vm.wait(VmState.DONE)
    finally:
        cloud.nubo.cli("datastore", "update", "default", "--tm", "ssh")


def test_a_host_lost_during_the_prolog_fails_the_vm(cloud: Cloud, template: str,
                                                    tmp_path_factory: pytest.TempPathFactory
                                                    ) -> None:
    """Last in this module: it powers h2 off for good. The transfer manager's copy breaks
    off, and the VM ends FAILED with the driver's reason instead of waiting forever."""
    big = tmp_path_factory.mktemp("big") / "big.img"
    with open(big, "wb") as f:  # not sparse: the copy takes a while
        for _ in range(400):
            f.write(os.urandom(1 << 20))
    image = cloud.call("one.image.allocate", f'NAME = "big"\nPATH = "{big}"\n', 1)
    text = template.replace("DISK = [ IMAGE_ID", f'DISK = [ IMAGE_ID = "{image}" ]\n#')
    vm = Vm(cloud, cloud.call("one.vm.allocate", text + 'NAME = "lost"\n'
                              'REQUIREMENTS = "NAME = \\"h2\\""\n'))
    vmdir = cloud.lab.host("h2").datastores / "0" / str(vm.id)
    wait_until("the copy to h2", vmdir.exists, BOOT)  # made when the clone starts
    assert vm.state() == (VmState.ACTIVE, LcmState.PROLOG)
    cloud.lab.host("h2").power_off()
    wait_until("the lost VM FAILED", lambda: vm.state()[0] == VmState.FAILED, BOOT)
    reason = (vm.doc().findtext("USER_TEMPLATE/ERROR") or "") + vm.log()
    assert "h2" in reason and ("cannot reach" in reason or "timed out" in reason), reason
