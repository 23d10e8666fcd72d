"""Heartbeats on real SSH hosts, with OpenNebula's monitoring defaults (a probe every 60 s,
60 s before it times out): a lab host whose link is cut, or that is powered off, is in
ERROR seconds later through its missed heartbeats, not at its next probe; its VMs become
UNKNOWN; when it answers again it is probed at once and its VMs RUNNING again. The VM
hooks on the way fire once per transition (a local hook appends one line per run).

Tests run in file order on one daemon and one lab (remote-dummy drivers).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from core.lifecycle import HostState
from tests.e2e.labcloud import MONITORING_DEFAULTS, Cloud, remote_dummy_cloud, wait_until

pytestmark = pytest.mark.slow

DETECTION = 15.0  # seconds: two 2 s beats of 2 s each, plus slack for a loaded machine
RECORD = """#!/bin/sh
echo "$*" >> "$(dirname "$0")/events.txt"
"""
BIN = "beat-bin"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    record = tmp_path_factory.mktemp(BIN, numbered=False) / "record"
    record.write_text(RECORD)
    record.chmod(0o755)
    hooks = "".join(
        f'VM_HOOK = [ name = "{event.lower()}", on = "{event}", command = "{record}", '
        f'arguments = "{event} $VMID $PREV_STATE $PREV_LCM_STATE" ]\n'
        for event in ("RUNNING", "UNKNOWN"))
    hooks += (f'VM_HOOK = [ name = "custom", on = "CUSTOM", state = "ACTIVE", '
              f'lcm_state = "UNKNOWN", command = "{record}", '
              'arguments = "CUSTOM $VMID $PREV_STATE $PREV_LCM_STATE" ]\n')
    with remote_dummy_cloud(tmp_path_factory, "beat",
                            lambda lab: MONITORING_DEFAULTS + hooks) as made:
        yield made


def wait_host(cloud: Cloud, name: str, state: HostState, timeout: float = 30.0) -> float:
    """Seconds it took `name` to reach `state`."""
    started = time.monotonic()
    wait_until(f"{name} {state.name}",
               lambda: cloud.host_doc(name).findtext("STATE") == str(int(state)), timeout)
    return time.monotonic() - started


def events(tmp_path_factory: pytest.TempPathFactory, vm_id: int) -> list[str]:
    """The hook runs recorded for VM `vm_id`, oldest first: `EVENT PREV_STATE PREV_LCM`."""
    path = tmp_path_factory.getbasetemp() / BIN / "events.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [" ".join(words[:1] + words[2:]) for words in map(str.split, lines)
            if words[1] == str(vm_id)]


def run_on(cloud: Cloud, host: str) -> int:
    vm_id = int(cloud.call("one.vm.allocate", 'NAME = "beat"\nCPU = "0.1"\nMEMORY = "64"\n'
                           f'REQUIREMENTS = "NAME = \\"{host}\\""\n'))
    cloud.nubo.wait_vm(vm_id, "RUNNING")
    return vm_id


def test_a_cut_host_is_in_error_within_seconds_and_back_when_it_answers(
        cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> None:
    vm_id = run_on(cloud, "h1")
    h1 = cloud.lab.host("h1")
    h1.cut()
    try:
        detected = wait_host(cloud, "h1", HostState.ERROR, DETECTION)
        error = cloud.host_doc("h1").findtext("TEMPLATE/ERROR") or ""
        cloud.nubo.wait_vm(vm_id, "UNKNOWN")
        assert cloud.host_doc("h2").findtext("STATE") == str(int(HostState.MONITORED))
    finally:
        h1.mend()
    back = wait_host(cloud, "h1", HostState.MONITORED, DETECTION)
    cloud.nubo.wait_vm(vm_id, "RUNNING")  # the next poll finds it
    print(f"link cut -> ERROR: {detected:.1f} s; link back -> MONITORED: {back:.1f} s "
          "(probes every 60 s)")
    assert error.startswith("no answer to 2 heartbeat(s) in a row: host h1 "), error
    wait_until("the hooks to run", lambda: len(events(tmp_path_factory, vm_id)) == 4)
    # ACTIVE=3; RUNNING=3, UNKNOWN=16; BOOT=2 (remote-dummy's deploy is one step)
    shown = cloud.nubo.cli("host", "log", "h1").stdout
    for line in ("[I]: Created by oneadmin: im remote-dummy, vmm remote-dummy",
                 "[I]: Monitored: its first probe succeeded",
                 "[E]: Missed heartbeat 1 of 2: host h1 ",
                 "[E]: In ERROR: no answer to 2 heartbeat(s) in a row: host h1 ",
                 "1 VM(s) UNKNOWN until it answers",
                 "[I]: Answers its heartbeat again", "[I]: Answers again: MONITORED"):
        assert line in shown, (line, shown)
    # (runs of one transition may finish in any order)
    assert sorted(events(tmp_path_factory, vm_id)) == [
        "CUSTOM 3 3", "RUNNING 3 16", "RUNNING 3 2", "UNKNOWN 3 3"], "each once"


def test_a_powered_off_host_is_in_error_and_back_after_power_on(cloud: Cloud) -> None:
    h2 = cloud.lab.host("h2")
    h2.power_off()
    detected = wait_host(cloud, "h2", HostState.ERROR, DETECTION)
    cloud.lab.power_on("h2")
    back = wait_host(cloud, "h2", HostState.MONITORED, DETECTION)
    print(f"power off -> ERROR: {detected:.1f} s; power on -> MONITORED: {back:.1f} s")
    assert cloud.host_doc("h1").findtext("STATE") == str(int(HostState.MONITORED))
