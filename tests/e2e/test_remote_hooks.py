"""Remote hooks on real SSH hosts: a live daemon whose hosts are lab hosts (network
namespaces with their own sshd, drivers/lab.py) on the remote-dummy drivers, and hooks with
`remote = yes` that run over the drivers' SSH connection.

Each lab host has a home directory of its own (bound over the user's home inside its sshd),
so a hook that writes into `$HOME` shows where it ran: its mark appears in that host's
`lab.host(name).home` only, never in the other host's nor in the front-end's home.

Tests run in file order on one daemon and one lab; the last one powers h2 off.
"""

from __future__ import annotations

import base64
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.lifecycle import HostState
from tests.e2e.labcloud import Cloud, remote_dummy_cloud, wait_until

pytestmark = pytest.mark.slow

MARKS = f".nubo-hook-marks-{os.getpid()}"  # in $HOME of whichever machine ran the hook
# var/remotes/hooks/mark <name> <words...>: a relative command, from the synced tree
MARK = f"""#!/bin/sh
name=$1; shift
mkdir -p "$HOME/{MARKS}"
{{ printf '%s\\n' "$@"; echo "sshd: $SSH_CONNECTION"; }} > "$HOME/{MARKS}/$name"
"""
# <shared>/argv-hook <vmid> <words...>: an absolute command, at the same path on every host
ARGV_HOOK = f"""#!/bin/sh
id=$1; shift
mkdir -p "$HOME/{MARKS}"
printf '%s\\n' "$@" > "$HOME/{MARKS}/argv-$id"
"""
# words a shell would split, expand or glob; none may reach one
TRICKY = r'\"two  words\" \"x $VMID y\" * ; \$HID'


def hooks(argv_hook: Path) -> str:
    true = shutil.which("true") or "/bin/true"
    return "HOOK_TIMEOUT = 15\n" + f"""
VM_HOOK = [ name = "on-host", on = "RUNNING", command = "mark", remote = yes,
            arguments = "running-$VMID $VMID $HID $TEMPLATE" ]
VM_HOOK = [ name = "argv", on = "RUNNING", command = "{argv_hook}", remote = yes,
            arguments = "$VMID {TRICKY}" ]
VM_HOOK = [ name = "unplaced", on = "CREATE", command = "mark", remote = yes,
            arguments = "create-$VMID" ]
VM_HOOK = [ name = "created", on = "CREATE", command = "{true}" ]
VM_HOOK = [ name = "lost", on = "UNKNOWN", command = "mark", remote = yes,
            arguments = "unknown-$VMID" ]
HOST_HOOK = [ name = "disabled", on = "DISABLE", command = "host-mark", remote = yes,
              arguments = "disable-$HID $HID $PREV_STATE" ]
"""


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    # the hosts see the front-end's filesystem, home directories aside
    argv_hook = tmp_path_factory.mktemp("rhooks-bin") / "argv-hook"
    argv_hook.write_text(ARGV_HOOK)
    argv_hook.chmod(0o755)

    def add_mark(remotes: Path) -> None:
        mark = remotes / "hooks" / "mark"
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.write_text(MARK)
        mark.chmod(0o755)

    try:
        with remote_dummy_cloud(tmp_path_factory, "rhooks", lambda lab: hooks(argv_hook),
                                add_mark) as made:
            yield made
    finally:
        shutil.rmtree(Path.home() / MARKS, ignore_errors=True)  # only if a hook ran here


def wait_host(cloud: Cloud, name: str, state: HostState) -> None:
    wait_until(f"{name} {state.name}",
               lambda: cloud.host_doc(name).findtext("STATE") == str(int(state)))


def marks(home: Path) -> dict[str, list[str]]:
    """The marks hooks left in a home directory: name -> lines."""
    folder = home / MARKS
    if not folder.is_dir():
        return {}
    return {path.name: path.read_text().splitlines() for path in folder.iterdir()}


def runs(cloud: Cloud, hook: str) -> list[ET.Element]:
    """The hook log's runs of the hook named `hook`, oldest first."""
    pool = ET.fromstring(cloud.call("one.hookpool.info"))
    ids = [h.findtext("ID") for h in pool.findall("HOOK") if h.findtext("NAME") == hook]
    assert len(ids) == 1, (hook, ids)
    found = ET.fromstring(cloud.call("one.hooklog.info", 0, 0, int(ids[0] or -1), 0))
    return found.findall("HOOK_EXECUTION_RECORD")


def settled(cloud: Cloud, hook: str, object_id: int, count: int = 1) -> list[ET.Element]:
    """The runs of `hook` for `object_id`, once `count` of them have finished."""
    def mine() -> list[ET.Element]:
        return [r for r in runs(cloud, hook) if r.findtext("RESOURCE_ID") == str(object_id)]

    wait_until(f"{hook} to run for {object_id}", lambda: sum(
        r.findtext("STATUS") in ("done", "failed") for r in mine()) >= count)
    return mine()


def place(cloud: Cloud, name: str, host: str) -> int:
    vm_id = int(cloud.call("one.vm.allocate", f'NAME = "{name}"\nMEMORY = 32\nCPU = 0.1\n'
                           f'REQUIREMENTS = "NAME = \\"{host}\\""\n'))
    cloud.nubo.wait_vm(vm_id, "RUNNING")
    assert cloud.vm_doc(vm_id).findtext("HISTORY_RECORDS/HISTORY[last()]/HOSTNAME") == host
    return vm_id


@pytest.fixture(scope="module")
def on_h2(cloud: Cloud) -> int:
    """A VM running on h2, its RUNNING hooks finished."""
    vm_id = place(cloud, "on-h2", "h2")
    for hook in ("on-host", "argv"):
        settled(cloud, hook, vm_id)
    return vm_id


def test_remote_vm_hook_runs_on_the_vms_host_with_its_variables(cloud: Cloud,
                                                                on_h2: int) -> None:
    h1, h2 = cloud.lab.host("h1"), cloud.lab.host("h2")
    [run] = settled(cloud, "on-host", on_h2)
    assert run.findtext("STATUS") == "done", run.findtext("EXECUTION_RESULT/STDOUT")
    assert run.findtext("REMOTE_HOST") == "h2"
    mark = marks(h2.home)[f"running-{on_h2}"]
    vm_id, hid, encoded, sshd = mark
    assert (vm_id, hid) == (str(on_h2), str(cloud.host_id("h2")))
    assert sshd.split()[-2] == h2.address  # the address sshd answered on: h2's
    doc = ET.fromstring(base64.b64decode(encoded))
    assert doc.findtext("ID") == str(on_h2) and doc.findtext("LCM_STATE") == "3"  # RUNNING
    assert doc.findtext("HISTORY_RECORDS/HISTORY[last()]/HOSTNAME") == "h2"
    assert f"running-{on_h2}" not in marks(h1.home)
    assert not (Path.home() / MARKS).exists()  # nothing ran on the front-end
    log = cloud.nubo.cli("vm", "log", str(on_h2)).stdout
    assert "Hook on-host (RUNNING) on h2: exit 0" in log


def test_absolute_command_gets_its_words_intact_on_the_host(cloud: Cloud, on_h2: int) -> None:
    [run] = settled(cloud, "argv", on_h2)
    assert run.findtext("STATUS") == "done", run.findtext("EXECUTION_RESULT/STDOUT")
    words = marks(cloud.lab.host("h2").home)[f"argv-{on_h2}"]
    assert words == ["two  words", f"x {on_h2} y", "*", ";", str(cloud.host_id("h2"))]
    assert f"argv-{on_h2}" not in marks(cloud.lab.host("h1").home)
    assert not (Path.home() / MARKS).exists()


def test_remote_vm_hook_for_a_vm_never_placed_does_not_run(cloud: Cloud, on_h2: int) -> None:
    # CREATE fired (the local hook on it ran) but the VM had no host then
    [created] = settled(cloud, "created", on_h2)
    assert created.findtext("EVENT") == "CREATE" and created.findtext("STATUS") == "done"
    assert runs(cloud, "unplaced") == []
    for host in cloud.lab.hosts:
        assert not any(name.startswith("create-") for name in marks(host.home))


def test_remote_host_hook_runs_on_that_host(cloud: Cloud) -> None:
    h1, h2 = cloud.lab.host("h1"), cloud.lab.host("h2")
    hid = cloud.host_id("h1")
    # the operator adds the hook's script after the start: `host sync` ships it
    script = cloud.nubo.var / "remotes" / "hooks" / "host-mark"
    script.write_text(MARK)
    script.chmod(0o755)
    cloud.nubo.cli("host", "sync")
    cloud.nubo.cli("host", "disable", "h1")
    try:
        [run] = settled(cloud, "disabled", hid)
        assert run.findtext("STATUS") == "done", run.findtext("EXECUTION_RESULT/STDOUT")
        assert run.findtext("REMOTE_HOST") == "h1" and run.findtext("RESOURCE") == "HOST"
        mark = marks(h1.home)[f"disable-{hid}"]
        assert mark[0] == str(hid)  # $HID; $PREV_STATE: MONITORING while a probe runs
        assert HostState(int(mark[1])) in (HostState.MONITORED, HostState.MONITORING)
        assert mark[2].split()[-2] == h1.address
        assert f"disable-{hid}" not in marks(h2.home)
        assert (Path(h1.remote_dir) / "hooks" / "host-mark").read_text() == MARK
        assert not (Path.home() / MARKS).exists()
    finally:
        cloud.nubo.cli("host", "enable", "h1")
        wait_host(cloud, "h1", HostState.MONITORED)


def test_remote_hook_on_a_host_that_does_not_answer_fails_and_nothing_else(
        cloud: Cloud, on_h2: int) -> None:
    h2 = cloud.lab.host("h2")
    h2.power_off()
    wait_host(cloud, "h2", HostState.ERROR)
    cloud.nubo.wait_vm(on_h2, "UNKNOWN")  # fires `lost`, a remote hook: on h2
    [run] = settled(cloud, "lost", on_h2)
    unreachable = f"cannot reach host h2 ({h2.address}:22): Connection refused"
    assert run.findtext("STATUS") == "failed" and run.findtext("REMOTE_HOST") == "h2"
    assert run.findtext("EXECUTION_RESULT/CODE") == "255"
    shown = cloud.nubo.cli("hook", "log", "lost", "--output").stdout
    assert f"vm {on_h2} UNKNOWN, failed (exit 255)" in shown and unreachable in shown
    log = cloud.nubo.cli("vm", "log", str(on_h2)).stdout
    assert f"Hook lost (UNKNOWN) on h2: exit 255: {unreachable}" in log
    assert f"unknown-{on_h2}" not in marks(h2.home)

    # the daemon carries on: a new VM runs on h1, and its remote hooks run there
    other = place(cloud, "after", "h1")
    [run] = settled(cloud, "on-host", other)
    assert run.findtext("STATUS") == "done" and run.findtext("REMOTE_HOST") == "h1"
    assert marks(cloud.lab.host("h1").home)[f"running-{other}"][:2] == [
        str(other), str(cloud.host_id("h1"))]
