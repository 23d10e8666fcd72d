"""The seed's network-isolation hooks, pasted into nubo.conf as OpenNebula 3.4 wrote them
(`/srv/cloud/one/share/hooks/ebtables-kvm`, remote = "yes"): they run Nubo's shipped
scripts on the VM's lab host, where qemu runs the guest with a tap on a bridge. While a VM
runs, the host's bridge FORWARD chain holds its two anti-spoofing rules; once it is DONE,
ebtables-flush removes them, and only them. The rules are read with `ebtables -L` inside
the host's network namespace, never from Nubo."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from tests.e2e.labcloud import Cloud, qemu_cloud, wait_until
from tests.guest import guest_os
from tests.strict import missing

pytestmark = pytest.mark.slow
BOOT = 120.0
SEED_NETWORK_HOOKS = """
VM_HOOK = [
    name = "ebtables-start",
    on = "running",
    command = "/srv/cloud/one/share/hooks/ebtables-kvm",
    arguments = "one-$VMID",
    remote = "yes" ]
VM_HOOK = [
    name = "ebtables-flush",
    on = "done",
    command = "/srv/cloud/one/share/hooks/ebtables-flush",
    arguments = "",
    remote = "yes" ]
"""
BRIDGE = "br-red"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    if subprocess.run(["sh", "-c", "command -v ebtables"], capture_output=True).returncode:
        missing("ebtables (scripts/system-deps installs it)")
    with qemu_cloud(tmp_path_factory, "ebt", 1, lambda lab: SEED_NETWORK_HOOKS) as made:
        ip = ["ip", "-n", made.lab.host("h1").netns]
        subprocess.run([*ip, "link", "add", BRIDGE, "type", "bridge"], check=True)
        subprocess.run([*ip, "link", "set", BRIDGE, "up"], check=True)
        yield made


def ebtables(cloud: Cloud, *args: str) -> list[str]:
    done = subprocess.run(["ip", "netns", "exec", cloud.lab.host("h1").netns, "ebtables",
                           *args], capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def rules(cloud: Cloud) -> list[str]:
    return [line for line in ebtables(cloud, "-L", "FORWARD") if line.startswith("-")]


def settled(cloud: Cloud, event: str, vm_id: int) -> ET.Element:
    """The finished run of the hook on `event` (ebtables-start: RUNNING, -flush: DONE)."""
    def run() -> ET.Element | None:
        for record in ET.fromstring(cloud.call("one.hooklog.info", 0, 0, -1, 0)):
            if (record.findtext("EVENT") == event and record.findtext("RESOURCE_ID")
                    == str(vm_id) and record.findtext("STATUS") in ("done", "failed")):
                return record
        return None

    wait_until(f"the {event} hook to run for VM {vm_id}", lambda: run() is not None, BOOT)
    found = run()
    assert found is not None
    return found


def test_the_seeds_ebtables_hooks_guard_each_running_vm_and_go_with_it(
        cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> None:
    os_vector = guest_os(tmp_path_factory.mktemp("ebt-guest"))
    net = cloud.call("one.vn.allocate", f'NAME = "red"\nTYPE = FIXED\nBRIDGE = "{BRIDGE}"\n'
                     'LEASES = [ IP = "10.217.0.5" ]\nLEASES = [ IP = "10.217.0.6" ]\n', -1)
    ebtables(cloud, "-A", "FORWARD", "-i", BRIDGE, "-j", "ACCEPT")  # the operator's: stays
    vms = [int(cloud.call("one.vm.allocate",
                          f'NAME = "red{i}"\nCPU = "0.1"\nMEMORY = "96"\n' + os_vector +
                          f'NIC = [ NETWORK_ID = "{net}" ]\n')) for i in range(2)]
    for vm_id in vms:
        record = settled(cloud, "RUNNING", vm_id)
        assert record.findtext("STATUS") == "done", record.findtext("EXECUTION_RESULT/STDOUT")
        assert "1 NIC(s), 2 rule(s) added" in (record.findtext("EXECUTION_RESULT/STDOUT") or "")
    found = rules(cloud)
    macs = set()
    for vm_id in vms:
        tap = f"one-{vm_id}-0"
        mac = ET.fromstring(cloud.call("one.vm.info", vm_id)).findtext("TEMPLATE/NIC/MAC")
        macs.add(mac)
        assert f"-s ! 02:00:0a:d9:00:00/ff:ff:ff:ff:ff:00 -o {tap} -j DROP" in found, found
        assert f"-s ! {mac} -i {tap} -j DROP" in found, found
    assert macs == {"02:00:0a:d9:00:05", "02:00:0a:d9:00:06"}  # OpenNebula's MAC from IP
    assert len(found) == 5

    cloud.call("one.vm.action", "cancel", vms[0])
    record = settled(cloud, "DONE", vms[0])
    assert record.findtext("STATUS") == "done", record.findtext("EXECUTION_RESULT/STDOUT")
    found = rules(cloud)
    assert not any(f"one-{vms[0]}-0" in rule for rule in found), found
    assert sum(f"one-{vms[1]}-0" in rule for rule in found) == 2
    assert f"-i {BRIDGE} -j ACCEPT" in found

    cloud.call("one.vm.action", "cancel", vms[1])
    settled(cloud, "DONE", vms[1])
    assert rules(cloud) == [f"-i {BRIDGE} -j ACCEPT"]
