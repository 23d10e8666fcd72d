"""The embedded default: `nubo serve` registers the front-end as host `localhost` with qemu
when qemu works here (probed by starting it), and with the dummy drivers when it does not,
and says which when it starts. With qemu, a real guest boots on the front-end."""

from __future__ import annotations

import os
import signal
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.guest import guest_files_in
from tests.live import FAST_CONF, LiveNubo, call, wait_until

pytestmark = pytest.mark.slow
AUTO_CONF = FAST_CONF.replace("LOCALHOST_VMM = dummy\n", "")


class QemuLessNubo(LiveNubo):
    """A daemon whose qemu binary does not exist (as on a machine without qemu)."""

    def env(self) -> dict[str, str]:
        return {**super().env(), "NUBO_QEMU": "qemu-system-nowhere"}



def localhost(nubo: LiveNubo) -> ET.Element:
    pool = ET.fromstring(str(call(nubo, "one.hostpool.info")))
    found = [h for h in pool.findall("HOST") if h.findtext("NAME") == "localhost"]
    assert len(found) == 1
    return found[0]


def kill_qemus_under(var: Path) -> None:
    """Whatever qemu a failed test left running from this daemon's datastores."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(var).encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture
def auto(tmp_path: Path) -> Iterator[LiveNubo]:
    nubo = LiveNubo(tmp_path / "var", conf=AUTO_CONF)
    try:
        nubo.start()
        yield nubo
    finally:
        nubo.stop()
        kill_qemus_under(nubo.var)


def test_qemu_on_the_front_end_boots_a_guest(auto: LiveNubo, tmp_path: Path) -> None:
    banner = auto.log_path.read_text()
    assert "Host localhost runs VMs with qemu" in banner, banner
    host = localhost(auto)
    assert (host.findtext("IM_MAD"), host.findtext("VM_MAD")) == ("kvm", "qemu")
    for ds in ET.fromstring(str(call(auto, "one.datastorepool.info"))).findall("DATASTORE"):
        assert ds.findtext("TM_MAD") == "shared", ET.tostring(ds)
    wait_until("localhost monitored by the kvm probes",
               lambda: int(localhost(auto).findtext("HOST_SHARE/MAX_CPU") or 0) > 0, 30)

    (tmp_path / "guest").mkdir()
    kernel, initrd = guest_files_in(tmp_path / "guest")
    vm_id = int(str(call(auto, "one.vm.allocate",
                         f'NAME = "tiny"\nMEMORY = 128\nCPU = 0.1\n'
                         f'OS = [ KERNEL = "{kernel}", INITRD = "{initrd}", '
                         'KERNEL_CMD = "console=ttyS0 quiet panic=-1" ]\n'
                         'DISK = [ TYPE = fs, SIZE = 8, FORMAT = raw ]\n'
                         'CONTEXT = [ HOSTNAME = "$NAME" ]\n')))
    auto.wait_vm(vm_id, "RUNNING", timeout=90)
    wait_until("the guest's marker in `nubo vm console`",
               lambda: "NUBO-READY" in auto.cli("vm", "console", str(vm_id)).stdout, 90)
    shown = auto.cli("vm", "console", str(vm_id)).stdout
    assert "NUBO-CONTEXT-FOUND hostname=tiny" in shown
    vmdir = auto.var / "datastores" / "0" / str(vm_id)
    assert (vmdir / "disk.0").stat().st_size == 8 << 20  # tm/shared made it on the front-end
    out = auto.cli("vm", "shutdown", str(vm_id), "--wait", "--timeout", "90")
    assert out.returncode == 0, out.stderr
    assert not vmdir.exists()


def test_without_qemu_localhost_pretends_and_says_why(tmp_path: Path) -> None:
    nubo = QemuLessNubo(tmp_path / "var", conf=AUTO_CONF)
    try:
        nubo.start()
        banner = nubo.log_path.read_text()
        assert "Host localhost runs VMs with the dummy driver: they are only pretended " \
               "(qemu-system-nowhere is not installed)" in banner, banner
        host = localhost(nubo)
        assert (host.findtext("IM_MAD"), host.findtext("VM_MAD")) == ("dummy", "dummy")
        vm_id = int(str(call(nubo, "one.vm.allocate", 'NAME = "p"\nMEMORY = 64\nCPU = 0.1\n')))
        nubo.wait_vm(vm_id, "RUNNING")
    finally:
        nubo.stop()
