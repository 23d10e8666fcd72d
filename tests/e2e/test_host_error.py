"""The shipped host_error hook through a live daemon and the dummy drivers: the seed's
HOST HOOK pasted verbatim moves a failed host's VMs to another host once the fence command
succeeded; a fence that fails, a host that recovers during -p's wait or the grace period,
and SUSPENDED VMs without -f leave everything where it is. (The dummy drivers' host
failure is its probe failing: the real-host kill tests live with the lab.)"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.live import FAST_CONF, SEED_HOST_HOOK, LiveNubo, call, wait_until

pytestmark = pytest.mark.slow

FENCE = """#!/bin/sh
# fence <host> <id>: what a real one would do is power the host off
echo "$1 $2" >> "$(dirname "$0")/fenced.txt"
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[[str], LiveNubo]]:
    made: list[LiveNubo] = []

    def start(extra: str) -> LiveNubo:
        fence = tmp_path / "fence"
        fence.write_text(FENCE)
        fence.chmod(0o755)
        nubo = LiveNubo(tmp_path / "var", conf=FAST_CONF + "REGISTER_LOCALHOST = NO\n"
                        + extra.replace("@FENCE@", str(fence)))
        made.append(nubo)
        nubo.start()
        return nubo

    yield start
    for nubo in made:
        nubo.stop()




def host(nubo: LiveNubo, name: str, *attrs: str) -> int:
    """A dummy host with its own VM directories, as a real host has its own disks."""
    own = f"DATASTORE_LOCATION={nubo.var / ('ds-' + name)}"
    args = [a for attr in (own, *attrs) for a in ("--attr", attr)]
    out = nubo.cli("host", "create", name, "--im", "dummy", "--vmm", "dummy", *args)
    host_id = int(out.stdout.split()[-1])
    wait_until(f"{name} monitored", lambda: host_state(nubo, host_id) == 2)
    return host_id


def host_state(nubo: LiveNubo, host_id: int) -> int:
    return int(ET.fromstring(call(nubo, "one.host.info", host_id)).findtext("STATE") or -1)


def fail_host(nubo: LiveNubo, name: str, tmp_path: Path) -> None:
    spec = tmp_path / f"{name}.attrs"
    spec.write_text('DUMMY_FAIL = "monitor"\n')
    nubo.cli("host", "update", name, str(spec), "--merge")


def heal_host(nubo: LiveNubo, name: str, tmp_path: Path) -> None:
    spec = tmp_path / f"{name}.attrs"
    spec.write_text('DUMMY_FAIL = ""\n')
    nubo.cli("host", "update", name, str(spec), "--merge")


def vms_on(nubo: LiveNubo, count: int) -> list[int]:
    ids = [int(call(nubo, "one.vm.allocate", f'NAME = "ft-{i}"\nMEMORY = 32\nCPU = 0.1\n'))
           for i in range(count)]
    for vm_id in ids:
        nubo.wait_vm(vm_id, "RUNNING")
    return ids


def placements(nubo: LiveNubo, vm_id: int) -> list[str]:
    doc = ET.fromstring(call(nubo, "one.vm.info", vm_id))
    return [h.findtext("HOSTNAME") or "" for h in doc.findall("HISTORY_RECORDS/HISTORY")]


def running_on(nubo: LiveNubo, vm_id: int, name: str) -> bool:
    doc = ET.fromstring(call(nubo, "one.vm.info", vm_id))
    records = doc.findall("HISTORY_RECORDS/HISTORY")
    return (doc.findtext("STATE"), doc.findtext("LCM_STATE")) == ("3", "3") and bool(
        records) and records[-1].findtext("HOSTNAME") == name


def dummy_state(vmdir: Path) -> str:
    """What the dummy hypervisor of that host believes of the VM."""
    return str(json.loads((vmdir / "dummy.json").read_text())["state"])


def hook_runs(nubo: LiveNubo) -> list[ET.Element]:
    return ET.fromstring(call(nubo, "one.hooklog.info", 0, 0, -1, 0)).findall(
        "HOOK_EXECUTION_RECORD")


def test_the_seeds_host_hook_fences_then_moves_the_vms(daemon: Callable[[str], LiveNubo],
                                                       tmp_path: Path) -> None:
    nubo = daemon(SEED_HOST_HOOK + 'FENCE_COMMAND = "@FENCE@ $HOST $HID"\n')
    sick = host(nubo, "sick")
    vms = vms_on(nubo, 3)
    suspended = vms_on(nubo, 1)[0]
    call(nubo, "one.vm.action", "suspend", suspended)
    nubo.wait_vm(suspended, "SUSPENDED")
    host(nubo, "spare")
    started = time.monotonic()
    fail_host(nubo, "sick", tmp_path)
    wait_until("every VM RUNNING on spare", lambda: all(running_on(nubo, v, "spare") for v in vms))
    print(f"host failure -> {len(vms)} VMs RUNNING on spare: {time.monotonic() - started:.1f} s")
    assert (tmp_path / "fenced.txt").read_text() == f"sick {sick}\n"  # fenced once, first
    for vm_id in vms:
        assert placements(nubo, vm_id) == ["sick", "spare"]
        assert "asked for resubmit" in nubo.cli("vm", "log", str(vm_id)).stdout
    assert placements(nubo, suspended) == ["sick"]  # `n`: SUSPENDED VMs stay
    runs = hook_runs(nubo)
    assert [r.findtext("STATUS") for r in runs] == ["done"]
    assert f"resubmit of 3 VM(s) of host {sick}" in (runs[0].findtext(
        "EXECUTION_RESULT/STDOUT") or "")
    # the host comes back: what the moved VMs left there goes, nothing else changes
    left = [nubo.var / "ds-sick" / "0" / str(v) for v in vms]
    assert {dummy_state(d) for d in left} == {"running"}  # nothing was asked of sick
    heal_host(nubo, "sick", tmp_path)
    wait_until("the copies on sick cancelled", lambda: {dummy_state(d) for d in left} == {"off"})
    for vm_id in vms:
        assert running_on(nubo, vm_id, "spare")
        # (the step's log lines land when it ends, a moment after the cancel itself)
        wait_until(f"VM {vm_id}'s reclaim logged", lambda v=vm_id: "answers again: removing "
                   "what the VM left there" in nubo.cli("vm", "log", str(v)).stdout)
    assert dummy_state(nubo.var / "ds-sick" / "0" / str(suspended)) == "saved"
    assert placements(nubo, suspended) == ["sick"]


def test_vms_of_a_host_in_error_are_unknown_until_polled(daemon: Callable[[str], LiveNubo],
                                                          tmp_path: Path) -> None:
    nubo = daemon("")  # no hook: nothing moves
    host(nubo, "quiet")
    vm_id = vms_on(nubo, 1)[0]
    fail_host(nubo, "quiet", tmp_path)
    # the dummy VM poll still answers (only the host probe fails): back to RUNNING at once
    wait_until("UNKNOWN, then RUNNING again", lambda: "(was ACTIVE/UNKNOWN, on poll_running)"
             in nubo.cli("vm", "log", str(vm_id)).stdout)
    log = nubo.cli("vm", "log", str(vm_id)).stdout
    assert "Host quiet does not answer" in log and "New state is ACTIVE/UNKNOWN" in log
    assert placements(nubo, vm_id) == ["quiet"]


def test_a_failed_fence_moves_nothing(daemon: Callable[[str], LiveNubo],
                                      tmp_path: Path) -> None:
    nubo = daemon(SEED_HOST_HOOK)
    host(nubo, "walled", "FENCE_COMMAND=/bin/false")
    vms = vms_on(nubo, 2)
    host(nubo, "spare")
    fail_host(nubo, "walled", tmp_path)
    wait_until("the hook to end", lambda: any(r.findtext("STATUS") == "failed"
                                            for r in hook_runs(nubo)))
    output = hook_runs(nubo)[0].findtext("EXECUTION_RESULT/STDOUT") or ""
    assert "fencing walled failed" in output and "left where they are" in output
    for vm_id in vms:
        assert placements(nubo, vm_id) == ["walled"]


def test_a_host_that_recovers_during_the_wait_keeps_its_vms(daemon: Callable[[str], LiveNubo],
                                                            tmp_path: Path) -> None:
    # 4.x's flags: wait one monitoring interval (2 s here), then look again
    nubo = daemon('HOST_HOOK = [ name = "error", on = "ERROR", command = "host_error", '
                  'arguments = "$HID -r -p 1" ]\nFENCE_COMMAND = "@FENCE@ $HOST $HID"\n')
    blip = host(nubo, "blip")
    vms = vms_on(nubo, 2)
    host(nubo, "spare")
    fail_host(nubo, "blip", tmp_path)
    wait_until("blip in ERROR", lambda: host_state(nubo, blip) == 3)
    heal_host(nubo, "blip", tmp_path)
    wait_until("the hook to end", lambda: any(r.findtext("STATUS") in ("done", "failed")
                                            for r in hook_runs(nubo)))
    output = hook_runs(nubo)[0].findtext("EXECUTION_RESULT/STDOUT") or ""
    assert "no longer in ERROR: nothing to do" in output, output
    assert not (tmp_path / "fenced.txt").exists()
    for vm_id in vms:
        assert placements(nubo, vm_id) == ["blip"]


def test_without_a_fence_command_the_grace_period_decides(daemon: Callable[[str], LiveNubo],
                                                          tmp_path: Path) -> None:
    nubo = daemon(SEED_HOST_HOOK + "FENCE_GRACE = 3\n")
    host(nubo, "gone")
    vms = vms_on(nubo, 2)
    host(nubo, "spare")
    fail_host(nubo, "gone", tmp_path)
    wait_until("the VMs on spare", lambda: all(running_on(nubo, v, "spare") for v in vms))
    output = hook_runs(nubo)[0].findtext("EXECUTION_RESULT/STDOUT") or ""
    assert "must stay unreachable for 3 s" in output


def test_a_host_goes_to_error_only_after_the_missed_probe_threshold(
        daemon: Callable[[str], LiveNubo], tmp_path: Path) -> None:
    nubo = daemon("HOST_MISSED_PROBES = 3\n")
    wobbly = host(nubo, "wobbly")
    fail_host(nubo, "wobbly", tmp_path)
    wait_until("one missed probe", lambda: "host wobbly missed probe 1 of 3"
             in nubo.log_path.read_text())
    heal_host(nubo, "wobbly", tmp_path)
    wait_until("a good probe", lambda: host_state(nubo, wobbly) == 2)
    time.sleep(4)  # two monitoring intervals (FAST_CONF) more
    assert host_state(nubo, wobbly) in (1, 2)  # MONITORING or MONITORED, never ERROR
    assert f"host {wobbly} in ERROR" not in nubo.log_path.read_text()
    fail_host(nubo, "wobbly", tmp_path)  # for good, this time
    wait_until("ERROR after three missed probes", lambda: host_state(nubo, wobbly) == 3)
    text = nubo.log_path.read_text()
    assert "host wobbly missed probe 2 of 3" in text and f"host {wobbly} in ERROR" in text
