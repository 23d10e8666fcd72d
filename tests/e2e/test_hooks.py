"""Hooks through a live daemon and the dummy drivers: VM_HOOK and HOST_HOOK from nubo.conf
(the seed's snippets pasted verbatim), hooks added and removed at runtime through the CLI
and XML-RPC, every event firing once per transition with its variables, and hooks that
hang or fail leaving the core alone."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live import FAST_CONF, ROOT, LiveNubo, call, wait_until

pytestmark = pytest.mark.slow

RECORD = """#!/bin/sh
# hooks/record <file> <words...>: one line per run
out=$1; shift
printf '%s\\n' "$*" >> "$out"
"""

# the seed's fault-tolerance VM hook, as its slides print it (FAILURE, onevm)
SEED_VM_HOOK = """
VM_HOOK = [
name	=	"on_failure_resubmit",
on	=	"FAILURE",
command	=	"onevm resubmit",
arguments	=	"\\$VMID"]
"""


def conf(record: Path) -> str:
    events = ["CREATE", "PROLOG", "RUNNING", "SHUTDOWN", "STOP", "DONE", "UNKNOWN"]
    hooks = "".join(
        f'VM_HOOK = [ name = "rec-{e.lower()}", on = "{e}", command = "record", '
        f'arguments = "{record} {e} $VMID $ID $HID $PREV_STATE $PREV_LCM_STATE" ]\n'
        for e in events)
    hooks += (f'VM_HOOK = [ name = "rec-custom", on = "CUSTOM", state = "ACTIVE", '
              f'lcm_state = "SAVE_STOP", command = "record", arguments = "{record} CUSTOM '
              '${VMID}" ]\n')
    hooks += (f'VM_HOOK = [ name = "rec-template", on = "RUNNING", command = "record", '
              f'arguments = "{record}.template $TEMPLATE" ]\n')
    for e in ("CREATE", "ERROR", "DISABLE"):
        hooks += (f'HOST_HOOK = [ name = "host-{e.lower()}", on = "{e}", command = "record", '
                  f'arguments = "{record}.hosts {e} $HID $PREV_STATE" ]\n')
    return FAST_CONF + "HOOK_TIMEOUT = 3\n" + hooks + SEED_VM_HOOK


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hook-records") / "record.txt"


@pytest.fixture(scope="module")
def nubo(tmp_path_factory: pytest.TempPathFactory, record: Path) -> Iterator[LiveNubo]:
    var = tmp_path_factory.mktemp("hooks")
    hooks = var / "remotes" / "hooks"  # the operator's own hook, beside the shipped ones
    hooks.mkdir(parents=True)
    (hooks / "record").write_text(RECORD)
    (hooks / "record").chmod(0o755)
    live = LiveNubo(var, conf=conf(record))
    try:
        live.start()
        yield live
    finally:
        live.stop()



def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []



def runs(nubo: LiveNubo, **filters: Any) -> list[ET.Element]:
    found = ET.fromstring(call(nubo, "one.hooklog.info", 0, 0, -1, 0))
    return [r for r in found.findall("HOOK_EXECUTION_RECORD")
            if all(r.findtext(k.upper()) == str(v) for k, v in filters.items())]


def settle(nubo: LiveNubo) -> None:
    """Until no hook run is pending or running."""
    wait_until("the hooks to run", lambda: not any(
        r.findtext("STATUS") in ("pending", "running") for r in runs(nubo)))


def test_vm_events_fire_once_each_with_their_variables(nubo: LiveNubo, record: Path) -> None:
    vm_id = int(call(nubo, "one.vm.allocate", 'NAME = "hooked"\nMEMORY = 32\nCPU = 0.1\n'))
    nubo.wait_vm(vm_id, "RUNNING")
    call(nubo, "one.vm.action", "stop", vm_id)
    nubo.wait_vm(vm_id, "STOPPED")
    call(nubo, "one.vm.action", "resume", vm_id)
    nubo.wait_vm(vm_id, "RUNNING")
    call(nubo, "one.vm.action", "shutdown", vm_id)
    nubo.wait_vm(vm_id, "DONE")
    settle(nubo)
    mine = [line for line in lines(record) if line.split()[1:2] == [str(vm_id)]]
    events = sorted(line.split()[0] for line in mine)  # runs go in parallel: any order
    # a resume goes through PROLOG_RESUME, which is not PROLOG (OpenNebula's rule)
    assert events == sorted(["CREATE", "PROLOG", "RUNNING", "CUSTOM", "STOP", "RUNNING",
                             "SHUTDOWN", "DONE"]), mine
    by_event = {line.split()[0]: line.split() for line in mine}
    host = call(nubo, "one.vm.info", vm_id)
    hid = ET.fromstring(host).findtext("HISTORY_RECORDS/HISTORY/HID")
    # CREATE: from INIT (0/0), no host yet; RUNNING: from ACTIVE/BOOT (3/2) on its host
    assert by_event["CREATE"][1:] == [str(vm_id), str(vm_id), "-1", "0", "0"]
    assert by_event["DONE"][1:4] == [str(vm_id), str(vm_id), hid]
    assert by_event["SHUTDOWN"][4:] == ["3", "12"]  # from ACTIVE/SHUTDOWN
    encoded = [line for line in lines(record.with_name("record.txt.template"))]
    docs = [ET.fromstring(base64.b64decode(e)) for e in encoded]
    assert any(d.findtext("ID") == str(vm_id) and d.findtext("LCM_STATE") == "3" for d in docs)
    log = nubo.cli("vm", "log", str(vm_id)).stdout
    assert "Hook rec-running (RUNNING): exit 0" in log


def test_host_events(nubo: LiveNubo, record: Path, tmp_path: Path) -> None:
    out = nubo.cli("host", "create", "flaky", "--im", "dummy", "--vmm", "dummy")
    host_id = int(out.stdout.split()[-1])
    hosts = record.with_name("record.txt.hosts")
    wait_until("flaky monitored", lambda: ET.fromstring(call(nubo, "one.host.info", host_id))
             .findtext("STATE") == "2")
    spec = tmp_path / "attrs"
    spec.write_text('DUMMY_FAIL = "monitor"\n')
    nubo.cli("host", "update", "flaky", str(spec), "--merge")
    wait_until("host ERROR", lambda: any(line.startswith(f"ERROR {host_id} ")
                                       for line in lines(hosts)))
    time.sleep(3)  # more failed probes: ERROR fires on entering the state only
    nubo.cli("host", "disable", "flaky")
    settle(nubo)
    mine = [line for line in lines(hosts) if line.split()[1] == str(host_id)]
    assert [line.split()[0] for line in mine] == ["CREATE", "ERROR", "DISABLE"], mine
    assert mine[2].split()[2] == "3"  # DISABLE came from ERROR
    shown = nubo.cli("host", "log", "flaky").stdout
    for line in ("[E]: In ERROR: ", "[I]: Hook host-error (ERROR): exit 0",
                 "[I]: Template merged by oneadmin: DUMMY_FAIL",
                 "[I]: Disabled by oneadmin: no new VMs", "[I]: Hook host-disable (DISABLE)"):
        assert line in shown, (line, shown)
    call(nubo, "one.user.allocate", "peeker", "pw", "")
    ok, message, code = nubo.rpc().one.host.log("peeker:pw", host_id, 0)[:3]
    assert not ok and code == 0x200 and "oneadmin" in message


def test_the_seeds_failure_hook_resubmits_through_onevm(nubo: LiveNubo) -> None:
    vm_id = int(call(nubo, "one.vm.allocate",
                     'NAME = "doomed"\nMEMORY = 32\nCPU = 0.1\nDUMMY_FAIL = "deploy"\n'))
    wait_until("a resubmit by the hook", lambda: any(
        r.findtext("STATUS") == "done" for r in runs(nubo, resource="VM", resource_id=vm_id,
                                                     event="FAILED")), 30)
    assert "asked for resubmit" in nubo.cli("vm", "log", str(vm_id)).stdout
    call(nubo, "one.vm.action", "finalize", vm_id)  # or it fails and comes back forever
    nubo.wait_vm(vm_id, "DONE")


def test_runtime_hooks_through_the_cli_and_xmlrpc(nubo: LiveNubo, tmp_path: Path) -> None:
    out = tmp_path / "runtime.txt"
    made = nubo.cli("hook", "create", "--name", "late", "--on", "RUNNING", "--command",
                    "record", "--arguments", f"{out} late $VMID")
    hook_id = int(made.stdout.split()[-1])
    five = int(call(nubo, "one.hook.allocate",
                    f'NAME = "five"\nTYPE = state\nRESOURCE = VM\nON = "DONE"\n'
                    f'COMMAND = "record"\nARGUMENTS = "{out} five $ID"\n'))
    listed = nubo.cli("hook", "list").stdout
    assert "late" in listed and "five" in listed and "nubo.conf" in listed
    vm_id = int(call(nubo, "one.vm.allocate", 'NAME = "late"\nMEMORY = 32\nCPU = 0.1\n'))
    nubo.wait_vm(vm_id, "RUNNING")
    call(nubo, "one.vm.action", "cancel", vm_id)
    nubo.wait_vm(vm_id, "DONE")
    settle(nubo)
    assert lines(out) == [f"late {vm_id}", f"five {vm_id}"]
    shown = nubo.cli("hook", "log", "late", "--output").stdout
    assert f"vm {vm_id} RUNNING, done (exit 0)" in shown
    nubo.cli("hook", "delete", "late")
    call(nubo, "one.hook.delete", five)
    vm_id = int(call(nubo, "one.vm.allocate", 'NAME = "after"\nMEMORY = 32\nCPU = 0.1\n'))
    nubo.wait_vm(vm_id, "RUNNING")
    settle(nubo)
    assert len(lines(out)) == 2  # deleted hooks fire no more
    assert hook_id != five
    gone = nubo.cli("hook", "delete", "rec-running", check=False)  # nubo.conf's: not here
    assert gone.returncode == 1 and "nubo.conf" in gone.stderr
    quoted = nubo.cli("hook", "create", "--name", "quoted", "--on", "DONE", "--command", "record",
                      "--arguments", '"two words" a\\b $VMID')
    shown = nubo.cli("hook", "show", "quoted", "--json").stdout
    assert '"arguments": "\\"two words\\" a\\\\b $VMID"' in shown, shown
    nubo.cli("hook", "delete", quoted.stdout.split()[-1])
    bad = nubo.cli("hook", "create", "--name", "x", "--on", "REBOOT", "--command", "record",
                   check=False)
    assert bad.returncode == 1 and "on must be one of" in bad.stderr
    call(nubo, "one.user.allocate", "hookless", "pw", "")
    ok, message, code = nubo.rpc().one.hookpool.info("hookless:pw")[:3]
    assert not ok and code == 0x200 and "oneadmin" in message


def test_a_hook_that_hangs_or_fails_leaves_the_core_alone(nubo: LiveNubo, tmp_path: Path) -> None:
    hooks = nubo.var / "remotes" / "hooks"
    (hooks / "hang").write_text("#!/bin/sh\nsleep 60\n")
    (hooks / "fail").write_text("#!/bin/sh\necho 'it went wrong' >&2\nexit 3\n")
    made = []
    for name in ("hang", "fail"):
        (hooks / name).chmod(0o755)
        made.append(str(call(nubo, "one.hook.allocate", f'NAME = "{name}"\nRESOURCE = VM\n'
                             f'ON = PROLOG\nCOMMAND = "{name}"\n')))
    started = time.monotonic()
    vm_id = int(call(nubo, "one.vm.allocate", 'NAME = "unbothered"\nMEMORY = 32\nCPU = 0.1\n'))
    nubo.wait_vm(vm_id, "RUNNING")
    took = time.monotonic() - started
    settle(nubo)
    hang = [r for r in runs(nubo, resource_id=vm_id, event="PROLOG")
            if r.findtext("HOOK_ID") in made]
    codes = sorted(r.findtext("EXECUTION_RESULT/CODE") or "" for r in hang)
    assert codes == ["124", "3"], codes  # HOOK_TIMEOUT = 3 stopped the hanging one
    log = nubo.cli("vm", "log", str(vm_id)).stdout
    assert "Hook fail (PROLOG): exit 3: it went wrong" in log
    assert "Hook hang (PROLOG): exit 124" in log
    print(f"create -> RUNNING with a hanging hook: {took:.1f} s")
    for name in ("hang", "fail"):
        nubo.cli("hook", "delete", name)


def test_a_bad_hook_in_nubo_conf_stops_the_daemon_with_a_clear_message(tmp_path: Path) -> None:
    env = LiveNubo(tmp_path).env()  # writes a nubo.conf: replaced below
    (tmp_path / "nubo.conf").write_text(FAST_CONF + 'VM_HOOK = [ name = "x", on = "LATER", '
                                        'command = "record" ]\n')
    done = subprocess.run([sys.executable, "-m", "core.cli", "serve"], cwd=ROOT, text=True,
                          capture_output=True, timeout=60, env=env)
    assert done.returncode == 1
    assert "VM_HOOK 'x': on must be one of" in done.stderr and "Traceback" not in done.stderr


# hooks/blocker <file> <words...>: the first run hangs (until killed), later ones do not
BLOCKER = """#!/bin/sh
out=$1; shift
printf 'start %s\\n' "$*" >> "$out"
if [ ! -e "$out.blocked" ]; then echo $$ > "$out.blocked"; sleep 600; fi
printf 'end %s\\n' "$*" >> "$out"
"""


def test_runs_queued_or_cut_off_by_a_crash_run_after_it_and_done_ones_never_again(
        tmp_path: Path) -> None:
    """One hook slot, taken by a run that hangs: every later event's runs wait in the queue
    (UNKNOWN and CUSTOM among them). The daemon and the hanging run are SIGKILLed, as by a
    power cut. After the restart each queued run runs once; the run cut off runs again
    (hooks must be safe to run twice, as OpenNebula's); nothing fires twice."""
    record = tmp_path / "record.txt"
    var = tmp_path / "var"
    hooks = var / "remotes" / "hooks"
    hooks.mkdir(parents=True)
    for name, text in (("record", RECORD), ("blocker", BLOCKER)):
        (hooks / name).write_text(text)
        (hooks / name).chmod(0o755)
    conf = FAST_CONF + "REGISTER_LOCALHOST = NO\nHOOK_CONCURRENCY = 1\nHOOK_TIMEOUT = 900\n"
    conf += f'VM_HOOK = [ name = "blocker", on = "CREATE", command = "blocker", ' \
            f'arguments = "{record} CREATE $VMID" ]\n'
    for event in ("RUNNING", "UNKNOWN"):
        conf += (f'VM_HOOK = [ name = "rec-{event.lower()}", on = "{event}", command = "record",'
                 f' arguments = "{record} {event} $VMID $PREV_LCM_STATE" ]\n')
    conf += (f'VM_HOOK = [ name = "rec-custom", on = "CUSTOM", state = "ACTIVE", lcm_state = '
             f'"UNKNOWN", command = "record", arguments = "{record} CUSTOM $VMID" ]\n')
    nubo = LiveNubo(var, conf=conf)
    blocked = record.with_name("record.txt.blocked")
    try:
        nubo.start()
        nubo.cli("host", "create", "d1", "--im", "dummy", "--vmm", "dummy")
        vm_id = int(call(nubo, "one.vm.allocate", 'NAME = "crashy"\nMEMORY = 32\nCPU = 0.1\n'))
        nubo.wait_vm(vm_id, "RUNNING")
        spec = tmp_path / "attrs"
        spec.write_text('DUMMY_FAIL = "monitor"\n')  # d1 in ERROR: the VM UNKNOWN...
        nubo.cli("host", "update", "d1", str(spec), "--merge")
        wait_until("UNKNOWN, then RUNNING again", lambda: "(was ACTIVE/UNKNOWN, on "
                   "poll_running)" in nubo.cli("vm", "log", str(vm_id)).stdout)  # ...polled
        wait_until("the blocker to hang", blocked.exists)
        assert lines(record) == [f"start CREATE {vm_id}"]  # everything else waits
        queued = sorted(r.findtext("EVENT") or "" for r in runs(nubo, status="pending"))
        assert queued == ["CUSTOM", "RUNNING", "RUNNING", "UNKNOWN"], queued
        nubo.kill()
        os.kill(int(blocked.read_text()), signal.SIGKILL)  # its own process group
        nubo.start()
        settle(nubo)
        mine = sorted(lines(record))
        assert mine == sorted([f"start CREATE {vm_id}", f"start CREATE {vm_id}",
                               f"end CREATE {vm_id}", f"RUNNING {vm_id} 2",
                               f"UNKNOWN {vm_id} 3", f"CUSTOM {vm_id}",
                               f"RUNNING {vm_id} 16"]), mine
        assert [r.findtext("STATUS") for r in runs(nubo)] == ["done"] * 5
    finally:
        nubo.stop()
        if blocked.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(blocked.read_text()), signal.SIGKILL)
