"""The `nubo` command line as a user runs it: a subprocess against a live daemon.

Tests run in file order on one daemon: the host test first (no VM may land on the host
it creates), then VMs, images, templates and users. Every VM a test starts is deleted
before it ends so the `localhost` host keeps its capacity.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.live import ROOT, LiveNubo, free_port

SMALL = ["--memory", "64", "--cpu", "0.1"]
# no host is called that: the scheduler leaves such a VM PENDING and says why
NOWHERE = 'REQUIREMENTS=NAME = "no-such-host"'
LOG_LINE = re.compile(r"^\w{3} \w{3} \d{2} \d{2}:\d{2}:\d{2} \d{4} \[[IEDW]\]: .+$")
STATE_LINE = re.compile(r"^\s*\d+\.\d+s\s+\S")
WAIT = ["--wait", "--timeout", "60"]


# --- helpers ---------------------------------------------------------------------------


def run(nubo: LiveNubo, *args: str, auth: Path | None = None, url: str | None = None,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """`nubo ARGS` with another user's credentials file or another daemon URL."""
    env = nubo.env()
    if auth is not None:
        env["ONE_AUTH"] = str(auth)
    if url is not None:
        env["NUBO_URL"] = url
    return subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=ROOT, env=env,
                          text=True, capture_output=True, input=input, timeout=120)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 1, one `nubo: error:` line on stderr, no traceback; returns the message."""
    assert result.returncode == 1, (result.args, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nubo: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0].removeprefix("nubo: error: ")


def new_id(output: str) -> int:
    match = re.match(r"ID: (\d+)$", output.splitlines()[0])
    assert match, output
    return int(match.group(1))


def as_json(nubo: LiveNubo, *args: str, auth: Path | None = None) -> Any:
    return json.loads(ok(run(nubo, *args, "--json", auth=auth)))


def vm_view(nubo: LiveNubo, vm_id: int) -> dict[str, Any]:
    view: dict[str, Any] = as_json(nubo, "vm", "show", str(vm_id))
    return view


def delete_vms(nubo: LiveNubo, *vm_ids: int) -> None:
    ok(nubo.cli("vm", "delete", *(str(i) for i in vm_ids)))
    for vm_id in vm_ids:
        nubo.wait_vm(vm_id, "DONE", timeout=30)


def auth_file(tmp_path: Path, user: str, password: str) -> Path:
    path = tmp_path / f"{user}_auth"
    path.write_text(f"{user}:{password}\n")
    return path


# --- help and usage --------------------------------------------------------------------

COMMANDS = [
    [], ["serve"], ["host"], ["vm"], ["image"], ["template"], ["user"],
    *(["host", v] for v in ("create", "list", "show", "enable", "disable", "delete", "sync",
                            "update")),
    *(["vm", v] for v in ("create", "list", "show", "log", "shutdown", "hold", "release",
                          "stop", "cancel", "suspend", "resume", "restart", "reboot",
                          "delete", "resubmit", "deploy", "migrate", "console")),
    ["hook"], *(["hook", v] for v in ("create", "list", "show", "delete", "log")),
    *(["image", v] for v in ("create", "list", "show", "delete")),
    *(["template", v] for v in ("create", "list", "show", "delete", "instantiate")),
    *(["user", v] for v in ("create", "list", "show", "passwd", "keys")),
]


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w) or "nubo")
def test_every_command_has_help(words: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "core.cli", *words, "--help"], cwd=ROOT,
                            text=True, capture_output=True, timeout=60)
    out = ok(result)
    assert out.startswith("usage: nubo")
    if len(words) == 2:
        assert "--json" in out


def test_usage_error_is_one_line(nubo: LiveNubo) -> None:
    assert "required" in one_error(run(nubo, "vm", "deploy", "1"))
    assert "invalid choice" in one_error(run(nubo, "vm", "explode", "1"))
    assert "memory" in one_error(run(nubo, "vm", "create", "--memory", "lots"))


# --- hosts -----------------------------------------------------------------------------


def test_host_list_shows_localhost(nubo: LiveNubo) -> None:
    row = re.compile(r"^\s*\d+\s+localhost\s+\d+\s+\d+ / \d+ \(\d+%\)\s+"
                     r"\d+(\.\d)?[KMGT] / \d+(\.\d)?[KMGT] \(\d+%\)\s+on$", re.M)
    wait_for(lambda: row.search(ok(nubo.cli("host", "list"))), timeout=30)
    header = ok(nubo.cli("host", "list")).splitlines()[0].split()
    assert header == ["ID", "NAME", "RVM", "ALLOCATED_CPU", "ALLOCATED_MEM", "STAT"]
    hosts = as_json(nubo, "host", "list")
    local = next(h for h in hosts if h["name"] == "localhost")
    assert local["state"] == "MONITORED" and local["cpu"]["max"] > 0


def test_host_commands(nubo: LiveNubo, tmp_path: Path) -> None:
    out = ok(nubo.cli("host", "create", "cli-node", "--im", "dummy", "--vmm", "dummy",
                      "--attr", "DUMMY_TOTALCPU=400", "--attr", "DUMMY_TOTALMEMORY=8388608"))
    host_id = new_id(out)
    ok(nubo.cli("host", "disable", "cli-node"))  # keep the other tests' VMs off it
    assert re.search(rf"^\s*{host_id}\s+cli-node\s.*\soff$", ok(nubo.cli("host", "list")), re.M)
    shown = as_json(nubo, "host", "show", "cli-node")
    assert shown["id"] == host_id and shown["state"] == "DISABLED"
    assert shown["template"]["DUMMY_TOTALCPU"] == "400"
    page = ok(nubo.cli("host", "show", str(host_id)))
    assert "cli-node" in page and "DUMMY_TOTALCPU" in page and "VIRTUAL MACHINES" in page

    # update: --merge keeps what is there, without it the template is replaced
    ok(nubo.cli("host", "update", "cli-node", "-", "--merge", input='RACK = "r12"\n'))
    template = as_json(nubo, "host", "show", "cli-node")["template"]
    assert template["RACK"] == "r12" and template["DUMMY_TOTALCPU"] == "400"
    update = tmp_path / "host.tmpl"
    update.write_text('RACK = "r13"\nDUMMY_TOTALCPU = 200\n')
    ok(nubo.cli("host", "update", "cli-node", str(update)))
    template = as_json(nubo, "host", "show", "cli-node")["template"]
    assert template["RACK"] == "r13" and template["DUMMY_TOTALCPU"] == "200"

    ok(nubo.cli("host", "enable", str(host_id)))
    assert as_json(nubo, "host", "show", "cli-node")["state"] != "DISABLED"
    ok(nubo.cli("host", "disable", str(host_id)))
    assert ok(nubo.cli("host", "sync")) == ""
    assert ok(nubo.cli("host", "delete", "cli-node")) == ""
    assert "cli-node" in one_error(nubo.cli("host", "show", "cli-node", check=False))
    assert "does not exist" in one_error(nubo.cli("host", "show", str(host_id), check=False))


def test_host_in_error_shows_why(nubo: LiveNubo) -> None:
    """A host whose probes fail goes to ERROR; `host show` says why."""
    host_id = new_id(ok(nubo.cli("host", "create", "cli-broken", "--im", "dummy",
                                 "--vmm", "dummy", "--attr", "DUMMY_TOTALCPU=lots")))
    try:
        wait_for(lambda: as_json(nubo, "host", "show", str(host_id))["state"] == "ERROR",
                 timeout=30)
        page = ok(nubo.cli("host", "show", "cli-broken"))
        assert re.search(r"^ERROR\s+: \S", page, re.M), page
        assert re.search(r"\serr$", ok(nubo.cli("host", "list")), re.M)
    finally:
        ok(nubo.cli("host", "delete", str(host_id)))


# --- VMs -------------------------------------------------------------------------------


def test_vm_wait_follows_to_running(nubo: LiveNubo) -> None:
    # a swap disk gives the prolog a driver action; the delay makes each state last
    out = ok(nubo.cli("vm", "create", *SMALL, "--name", "cli-web", "--attr", "DUMMY_DELAY=0.8",
                      "--attr", "DISK=[TYPE=swap, SIZE=16]", *WAIT))
    vm_id = new_id(out)
    changes = out.splitlines()[1:]
    assert changes and all(STATE_LINE.match(line) for line in changes), out
    # scheduling is immediate: the first state seen may already be the prolog
    assert changes[0].split()[-1] in ("pend", "prol")
    assert changes[-1].endswith("runn")
    assert any("prol" in line for line in changes) and any("boot" in line for line in changes), \
        out
    assert all("→" in line or "->" in line for line in changes[1:] if "waiting" not in line)

    table = ok(nubo.cli("vm", "list"))
    assert table.splitlines()[0].split() == ["ID", "USER", "GROUP", "NAME", "STAT", "UCPU",
                                             "UMEM", "HOST", "TIME"]
    row = re.compile(rf"^\s*{vm_id}\s+oneadmin\s+oneadmin\s+cli-web\s+runn\s+\S+\s+\S+\s+"
                     r"localhost\s+\d+d \d\d:\d\d:\d\d$", re.M)
    assert row.search(table), table
    listed = as_json(nubo, "vm", "list", "--state", "running")
    assert vm_id in [v["id"] for v in listed]
    assert all(v["lcm_state"] == "RUNNING" for v in listed)
    assert vm_id not in [v["id"] for v in as_json(nubo, "vm", "list", "--state", "pending")]

    page = ok(nubo.cli("vm", "show", "cli-web"))
    for text in ("ACTIVE", "RUNNING", "localhost", "MEMORY=\"64\"", "VIRTUAL MACHINE HISTORY"):
        assert text in page
    view = vm_view(nubo, vm_id)
    assert (view["state"], view["lcm_state"], view["host"]) == ("ACTIVE", "RUNNING", "localhost")
    assert view["history"][-1]["host"] == "localhost"

    log = ok(nubo.cli("vm", "log", str(vm_id))).splitlines()
    assert log and all(LOG_LINE.match(line) for line in log), log
    entries = as_json(nubo, "vm", "log", "cli-web")
    assert len(entries) == len(log) and {"id", "time", "severity", "message"} <= set(entries[0])
    delete_vms(nubo, vm_id)


def test_vm_wait_reports_failure(nubo: LiveNubo) -> None:
    result = nubo.cli("vm", "create", *SMALL, "--attr", "DUMMY_FAIL=deploy", *WAIT, check=False)
    message = one_error(result)
    vm_id = new_id(result.stdout)
    assert message.startswith(f"VM {vm_id} failed: ") and "injected failure" in message
    assert result.stdout.splitlines()[-1].endswith("fail")
    view = vm_view(nubo, vm_id)
    assert view["state"] == "FAILED" and "injected failure" in view["message"]
    assert "injected failure" in ok(nubo.cli("vm", "show", str(vm_id)))
    # --json: one object with the outcome, still exit 1 with the reason on stderr
    result = nubo.cli("vm", "create", *SMALL, "--attr", "DUMMY_FAIL=deploy", *WAIT, "--json",
                      check=False)
    one_error(result)
    outcome = json.loads(result.stdout)
    assert outcome["state"] == "FAILED" and outcome["ok"] is False
    assert "injected failure" in outcome["message"]
    delete_vms(nubo, vm_id, outcome["id"])


def test_vm_wait_shows_why_pending_and_times_out(nubo: LiveNubo) -> None:
    result = nubo.cli("vm", "create", *SMALL, "--attr", NOWHERE, "--wait", "--timeout", "4",
                      check=False)
    message = one_error(result)
    vm_id = new_id(result.stdout)
    assert f"VM {vm_id} is still PENDING after 4s" in message
    waiting = [line for line in result.stdout.splitlines() if "waiting: " in line]
    assert waiting and waiting[0].split("waiting: ", 1)[1].strip(), result.stdout
    assert vm_view(nubo, vm_id)["message"]
    assert "WAITING" in ok(nubo.cli("vm", "show", str(vm_id)))
    # deploy by hand ignores the requirements
    assert ok(nubo.cli("vm", "deploy", str(vm_id), "localhost")) == ""
    nubo.wait_vm(vm_id, "RUNNING")
    assert vm_view(nubo, vm_id)["host"] == "localhost"
    delete_vms(nubo, vm_id)


def test_vm_create_from_file_and_stdin(nubo: LiveNubo, tmp_path: Path) -> None:
    path = tmp_path / "vm.one"
    path.write_text('NAME = "from-file"\nMEMORY = 64\nCPU = 0.1\n')
    file_vm = new_id(ok(nubo.cli("vm", "create", str(path), "--hold")))
    stdin_vm = as_json_input(nubo, 'NAME = "from-stdin"\nMEMORY = 32\nCPU = 0.1\n')
    held = as_json(nubo, "vm", "list", "--state", "hold")
    assert {"from-file", "from-stdin"} <= {v["name"] for v in held}
    assert vm_view(nubo, stdin_vm)["memory_mb"] == 32
    # options amend a file
    amended = new_id(ok(nubo.cli("vm", "create", str(path), "--hold", "--name", "amended",
                                 "--memory", "48", "--attr", "ROLE=db")))
    view = vm_view(nubo, amended)
    assert (view["name"], view["memory_mb"], view["template"]["ROLE"]) == ("amended", 48, "db")
    bad = tmp_path / "bad.one"
    bad.write_text("MEMORY = [ oops\n")
    assert "bad.one" in one_error(nubo.cli("vm", "create", str(bad), check=False))
    delete_vms(nubo, file_vm, stdin_vm, amended)


def as_json_input(nubo: LiveNubo, text: str) -> int:
    out = ok(run(nubo, "vm", "create", "-", "--hold", "--json", input=text))
    vm_id = json.loads(out)["id"]
    assert isinstance(vm_id, int)
    return vm_id


def test_vm_actions(nubo: LiveNubo) -> None:
    vm_id = new_id(ok(nubo.cli("vm", "create", *SMALL, "--hold", "--name", "cli-acts")))
    message = one_error(nubo.cli("vm", "suspend", str(vm_id), check=False))
    assert "suspend" in message and "HOLD" in message and "<Event" not in message
    for action, state in (("release", "RUNNING"), ("suspend", "SUSPENDED"),
                          ("resume", "RUNNING"), ("stop", "STOPPED"), ("resume", "RUNNING")):
        assert ok(nubo.cli("vm", action, "cli-acts")) == "", action
        nubo.wait_vm(vm_id, state, timeout=30)
    assert ok(nubo.cli("vm", "reboot", "cli-acts")) == ""
    wait_for(lambda: "reboot" in ok(nubo.cli("vm", "log", str(vm_id))).lower())
    time.sleep(1)  # let the reboot finish before the next action
    message = one_error(nubo.cli("vm", "restart", str(vm_id), check=False))
    assert "restart" in message and "RUNNING" in message
    assert ok(nubo.cli("vm", "resubmit", str(vm_id))) == ""
    nubo.wait_vm(vm_id, "RUNNING", timeout=30)
    assert ok(nubo.cli("vm", "shutdown", str(vm_id))) == ""
    nubo.wait_vm(vm_id, "DONE", timeout=30)

    first, second = (new_id(ok(nubo.cli("vm", "create", *SMALL))) for _ in range(2))
    nubo.wait_vm(first, "RUNNING")
    assert ok(nubo.cli("vm", "cancel", str(first))) == ""
    nubo.wait_vm(first, "DONE", timeout=30)
    held = new_id(ok(nubo.cli("vm", "create", *SMALL, "--hold")))
    # several ids at once; a bad one is reported and the others still go
    result = nubo.cli("vm", "delete", str(second), "999999", str(held), check=False)
    assert "999999" in one_error(result)
    for gone in (second, held):
        nubo.wait_vm(gone, "DONE", timeout=30)
    done = [v["id"] for v in as_json(nubo, "vm", "list", "--all", "--state", "done")]
    assert {vm_id, first, second, held} <= set(done)


def test_vm_log_follow(nubo: LiveNubo) -> None:
    vm_id = new_id(ok(nubo.cli("vm", "create", *SMALL, "--attr", NOWHERE)))
    lines: queue.Queue[str] = queue.Queue()
    with subprocess.Popen([sys.executable, "-m", "core.cli", "vm", "log", str(vm_id),
                           "--follow"], cwd=ROOT, env=nubo.env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        stdout = proc.stdout

        def read() -> None:
            for line in stdout:
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        first = lines.get(timeout=20)
        assert LOG_LINE.match(first.rstrip("\n")), first
        ok(nubo.cli("vm", "hold", str(vm_id)))
        deadline = time.monotonic() + 20
        seen = [first]
        while not any("hold" in line.lower() for line in seen[1:]):
            seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert "Traceback" not in proc.stderr.read()
    delete_vms(nubo, vm_id)


def test_vm_errors(nubo: LiveNubo, tmp_path: Path) -> None:
    message = one_error(nubo.cli("vm", "show", "999999", check=False))
    assert "999999" in message and "does not exist" in message
    assert "no-such-vm" in one_error(nubo.cli("vm", "show", "no-such-vm", check=False))
    assert "999999" in one_error(nubo.cli("vm", "shutdown", "999999", check=False))

    url = f"http://127.0.0.1:{free_port()}/RPC2"
    message = one_error(run(nubo, "vm", "list", url=url))
    assert message == (f"cannot reach the Nubo daemon at {url}: connection refused "
                       "(is `nubo serve` running?)")

    wrong = auth_file(tmp_path, "oneadmin", "not-the-password")
    message = one_error(run(nubo, "vm", "list", auth=wrong))
    assert "authentication failed" in message and str(wrong) in message
    assert "cannot read credentials" in one_error(run(nubo, "vm", "list",
                                                      auth=tmp_path / "missing"))


# --- images and templates --------------------------------------------------------------


def test_image_commands(nubo: LiveNubo, tmp_path: Path) -> None:
    disk = tmp_path / "cli.img"
    disk.write_bytes(b"\0" * (2 << 20))
    os_id = new_id(ok(nubo.cli("image", "create", "--name", "cli-os", "--path", str(disk))))
    block = as_json(nubo, "image", "create", "--name", "cli-block", "--type", "DATABLOCK",
                    "--size", "16", "--persistent")["id"]
    spec = tmp_path / "img.tmpl"
    spec.write_text(f'NAME = "cli-cd"\nTYPE = CDROM\nPATH = "{disk}"\n')
    cd_id = new_id(ok(nubo.cli("image", "create", str(spec))))
    piped = new_id(ok(run(nubo, "image", "create", "-",
                          input=f'NAME = "cli-piped"\nPATH = "{disk}"\n')))

    table = ok(nubo.cli("image", "list"))
    assert table.splitlines()[0].split()[:4] == ["ID", "USER", "GROUP", "NAME"]
    assert re.search(rf"^\s*{block}\s+oneadmin\s+oneadmin\s+cli-block\s+\S+\s+16M\s+"
                     r"DATABLOCK\s+Yes\s+rdy\s+0$", table, re.M), table
    images = {i["name"]: i for i in as_json(nubo, "image", "list")}
    assert images["cli-cd"]["type"] == "CDROM" and images["cli-os"]["size_mb"] == 2
    shown = as_json(nubo, "image", "show", "cli-os")
    assert shown["id"] == os_id and shown["state"] == "READY" and shown["path"] == str(disk)
    assert "cli-os" in ok(nubo.cli("image", "show", str(os_id)))

    # a VM using it by name: the image counts it, and may not be deleted meanwhile
    vm_id = new_id(ok(nubo.cli("vm", "create", *SMALL, "--disk", "cli-os", *WAIT)))
    assert vm_view(nubo, vm_id)["template"]["DISK"]["IMAGE"] == "cli-os"
    assert as_json(nubo, "image", "show", "cli-os")["running_vms"] == 1
    one_error(nubo.cli("image", "delete", "cli-os", check=False))
    delete_vms(nubo, vm_id)

    assert ok(nubo.cli("image", "delete", "cli-os", "cli-block", str(cd_id), str(piped))) == ""
    assert "does not exist" in one_error(nubo.cli("image", "show", str(os_id), check=False))


def test_datastore_commands(nubo: LiveNubo, tmp_path: Path) -> None:
    table = ok(nubo.cli("datastore", "list"))
    assert table.splitlines()[0].split() == ["ID", "NAME", "TYPE", "TM", "DS", "IMAGES", "BASE",
                                             "PATH"]
    assert re.search(r"^\s*0\s+system\s+system\s+dummy\s+fs\s", table, re.M), table
    spec = tmp_path / "ds.tmpl"
    spec.write_text('NAME = "cli-ds"\nTM_MAD = "dummy"\nREPLICAS = [ HOST = "a" ]\n')
    ds_id = int(nubo.rpc().one.datastore.allocate(nubo.session, spec.read_text())[1])
    assert ok(nubo.cli("datastore", "update", "cli-ds", "--tm", "ssh")) == ""
    shown = as_json(nubo, "datastore", "show", str(ds_id))
    assert (shown["tm_mad"], shown["type"]) == ("ssh", "image")
    assert shown["template"]["REPLICAS"] == {"HOST": "a"}  # merged, nothing lost
    assert "TM_MAD" in ok(nubo.cli("datastore", "show", "cli-ds"))
    spec.write_text('TM_MAD = "shared"\n')
    assert ok(nubo.cli("datastore", "update", "cli-ds", str(spec))) == ""
    replaced = as_json(nubo, "datastore", "show", "cli-ds")
    assert replaced["tm_mad"] == "shared" and "REPLICAS" not in replaced["template"]
    assert "no TM driver" in one_error(nubo.cli("datastore", "update", "cli-ds", "--tm", "nope",
                                                check=False))
    assert "give a template FILE" in one_error(nubo.cli("datastore", "update", "cli-ds",
                                                        check=False))
    nubo.rpc().one.datastore.delete(nubo.session, ds_id)


def test_template_commands(nubo: LiveNubo, tmp_path: Path) -> None:
    spec = tmp_path / "small.tmpl"
    spec.write_text('NAME = "cli-small"\nMEMORY = 64\nCPU = 0.1\nROLE = "web"\n')
    template_id = new_id(ok(nubo.cli("template", "create", str(spec))))
    piped = as_json_template(nubo, 'NAME = "cli-piped"\nMEMORY = 32\nCPU = 0.1\n')
    table = ok(nubo.cli("template", "list"))
    assert re.search(rf"^\s*{template_id}\s+oneadmin\s+oneadmin\s+cli-small\s", table, re.M)
    shown = as_json(nubo, "template", "show", "cli-small")
    assert shown["id"] == template_id and shown["template"]["ROLE"] == "web"
    assert 'ROLE="web"' in ok(nubo.cli("template", "show", str(template_id)))

    out = ok(nubo.cli("template", "instantiate", "cli-small", "--name", "from-tpl", *WAIT))
    vm_id = new_id(out)
    assert out.splitlines()[-1].endswith("runn")
    view = vm_view(nubo, vm_id)
    assert view["name"] == "from-tpl" and view["template"]["ROLE"] == "web"
    held = as_json(nubo, "template", "instantiate", str(template_id), "--hold")["id"]
    assert vm_view(nubo, held)["state"] == "HOLD"
    delete_vms(nubo, vm_id, held)

    assert ok(nubo.cli("template", "delete", "cli-small", str(piped))) == ""
    assert "cli-small" not in ok(nubo.cli("template", "list"))


def as_json_template(nubo: LiveNubo, text: str) -> int:
    template_id = json.loads(ok(run(nubo, "template", "create", "-", "--json", input=text)))["id"]
    assert isinstance(template_id, int)
    return template_id


# --- users -----------------------------------------------------------------------------


def test_user_commands(nubo: LiveNubo, tmp_path: Path) -> None:
    uid = new_id(ok(nubo.cli("user", "create", "cli-bob", "bob-pw")))
    assert re.search(rf"^\s*{uid}\s+users\s+cli-bob\s+core\s", ok(nubo.cli("user", "list")), re.M)
    assert as_json(nubo, "user", "show")["name"] == "oneadmin"
    bob = as_json(nubo, "user", "show", "cli-bob")
    assert (bob["id"], bob["group"], bob["auth_driver"]) == (uid, "users", "core")
    assert "cli-bob" in ok(nubo.cli("user", "show", str(uid)))
    assert "cli-bob" in {u["name"] for u in as_json(nubo, "user", "list")}

    ok(nubo.cli("user", "passwd", "cli-bob", "bob-new"))
    one_error(run(nubo, "user", "show", auth=auth_file(tmp_path, "cli-bob", "bob-pw")))
    new_auth = auth_file(tmp_path, "cli-bob", "bob-new")
    assert as_json(nubo, "user", "show", auth=new_auth)["id"] == uid

    # keys: exactly two shell assignments, the same as --json, exported with export $(...)
    lines = ok(run(nubo, "user", "keys", auth=new_auth)).splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"AWS_ACCESS_KEY_ID=\S+", lines[0])
    assert re.fullmatch(r"AWS_SECRET_ACCESS_KEY=\S+", lines[1])
    keys = as_json(nubo, "user", "keys", "cli-bob")
    assert lines == [f"AWS_ACCESS_KEY_ID={keys['AWS_ACCESS_KEY_ID']}",
                     f"AWS_SECRET_ACCESS_KEY={keys['AWS_SECRET_ACCESS_KEY']}"]
    env = nubo.env() | {"ONE_AUTH": str(new_auth)}
    shell = subprocess.run(
        ["bash", "-c", f'export $({sys.executable} -m core.cli user keys) && '
                       f'{sys.executable} -c "import os; print(os.environ[\'AWS_ACCESS_KEY_ID\'], '
                       'os.environ[\'AWS_SECRET_ACCESS_KEY\'])"'],
        cwd=ROOT, env=env, text=True, capture_output=True, timeout=60)
    assert ok(shell).split() == [keys["AWS_ACCESS_KEY_ID"], keys["AWS_SECRET_ACCESS_KEY"]]
    admin_keys = as_json(nubo, "user", "keys")
    assert admin_keys["AWS_ACCESS_KEY_ID"] != keys["AWS_ACCESS_KEY_ID"]


def test_non_admin_sees_only_its_own(nubo: LiveNubo, tmp_path: Path) -> None:
    admin_vm = new_id(ok(nubo.cli("vm", "create", *SMALL, "--hold", "--name", "admin-only")))
    uid = new_id(ok(nubo.cli("user", "create", "cli-carol", "carol-pw")))
    carol = auth_file(tmp_path, "cli-carol", "carol-pw")

    # a fresh user: empty lists print just the header
    for resource in ("vm", "image", "template"):
        out = ok(run(nubo, resource, "list", auth=carol))
        assert len(out.splitlines()) == 1 and out.split()[0] == "ID", out
        assert as_json(nubo, resource, "list", auth=carol) == []

    own = new_id(ok(run(nubo, "vm", "create", *SMALL, "--hold", "--name", "carols", auth=carol)))
    for flags in ([], ["--all"], ["--mine"]):
        listed = as_json(nubo, "vm", "list", *flags, auth=carol)
        assert [v["id"] for v in listed] == [own], flags
        assert "admin-only" not in ok(run(nubo, "vm", "list", *flags, auth=carol))
    message = one_error(run(nubo, "vm", "show", str(admin_vm), auth=carol))
    assert str(admin_vm) in message
    one_error(run(nubo, "vm", "delete", str(admin_vm), auth=carol))
    assert "admin-only" in one_error(run(nubo, "vm", "show", "admin-only", auth=carol))
    assert vm_view(nubo, admin_vm)["state"] == "HOLD"
    one_error(run(nubo, "user", "create", "cli-eve", "x", auth=carol))
    assert as_json(nubo, "user", "show", auth=carol)["id"] == uid
    assert [u["name"] for u in as_json(nubo, "user", "list", auth=carol)] == ["cli-carol"]

    # oneadmin sees carol's VM with --all, not in its default (own group) listing
    assert own in [v["id"] for v in as_json(nubo, "vm", "list", "--all")]
    assert own not in [v["id"] for v in as_json(nubo, "vm", "list", "--mine")]
    ok(run(nubo, "vm", "delete", "carols", auth=carol))
    delete_vms(nubo, admin_vm)
    nubo.wait_vm(own, "DONE")


def test_default_credentials_under_nubo_var(nubo: LiveNubo) -> None:
    """Without ONE_AUTH the CLI reads var/one_auth, which `nubo serve` wrote."""
    env = {k: v for k, v in nubo.env().items() if k != "ONE_AUTH"}
    result = subprocess.run([sys.executable, "-m", "core.cli", "user", "show", "--json"],
                            cwd=ROOT, env=env, text=True, capture_output=True, timeout=60)
    assert json.loads(ok(result))["name"] == "oneadmin"
    env["NUBO_VAR"] = os.devnull + "-nothing-here"
    env["HOME"] = env["NUBO_VAR"]
    result = subprocess.run([sys.executable, "-m", "core.cli", "vm", "list"], cwd=ROOT, env=env,
                            text=True, capture_output=True, timeout=60)
    assert "no credentials" in one_error(result)


def test_vnet_commands(nubo: LiveNubo) -> None:
    out = nubo.cli("vnet", "create", "--name", "cli-red", "--address", "10.8.0.0/29",
                   "--gateway", "10.8.0.1").stdout
    net_id = out.split()[-1]
    fixed = json.loads(nubo.cli("vnet", "create", "--name", "cli-blue", "--lease", "10.8.1.5",
                                "--json").stdout)["id"]
    listed = nubo.cli("vnet", "list").stdout.splitlines()
    assert listed[0].split() == ["ID", "USER", "GROUP", "NAME", "TYPE", "BRIDGE", "LEASES"]
    assert any(line.split()[3:5] == ["cli-red", "RANGED"] for line in listed[1:])
    vm = nubo.cli("vm", "create", "--memory", "64", "--cpu", "0.1", "--hold", "--attr",
                  "NIC=[NETWORK=cli-red]").stdout.split()[-1]
    shown = nubo.cli("vnet", "show", "cli-red").stdout
    assert "LEASES" in shown and "10.8.0.1" in shown and "02:00:0a:08:00:01" in shown
    nubo.cli("vnet", "hold", "cli-red", "10.8.0.2")
    nubo.cli("vnet", "addleases", str(fixed), "10.8.1.6,02:00:00:00:01:06")
    leases = json.loads(nubo.cli("vnet", "show", str(fixed), "--json").stdout)["leases"]
    assert [(lease["ip"], lease["mac"]) for lease in leases] == \
        [("10.8.1.5", "02:00:0a:08:01:05"), ("10.8.1.6", "02:00:00:00:01:06")]
    failed = nubo.cli("vnet", "delete", "cli-red", check=False)
    assert failed.returncode == 1 and "in use" in failed.stderr
    nubo.cli("vm", "delete", vm)
    nubo.cli("vnet", "release", "cli-red", "10.8.0.2")
    nubo.cli("vnet", "delete", net_id)
    assert "cli-red" not in nubo.cli("vnet", "list").stdout


def test_user_token(nubo: LiveNubo) -> None:
    import httpx

    token = nubo.cli("user", "token", "--expire", "120").stdout.strip()
    assert len(token) > 30
    answer = httpx.get(f"http://127.0.0.1:{nubo.port}/compute/", headers={"X-Auth-Token": token})
    assert answer.status_code == 200
    shown = json.loads(nubo.cli("user", "token", "--json").stdout)
    assert shown["expires_in"] == 3600 and shown["token"] != token
    nubo.cli("user", "token", "--revoke")
    answer = httpx.get(f"http://127.0.0.1:{nubo.port}/compute/", headers={"X-Auth-Token": token})
    assert answer.status_code == 401
    too_long = nubo.cli("user", "token", "--expire", "99999999", check=False)
    assert too_long.returncode == 1 and "at most" in too_long.stderr


def test_vm_nic_commands(nubo: LiveNubo) -> None:
    nubo.cli("vnet", "create", "--name", "cli-nics", "--address", "10.9.9.0/29")
    vm = nubo.cli("vm", "create", "--memory", "64", "--cpu", "0.1", "--hold").stdout.split()[-1]
    out = nubo.cli("vm", "nic-attach", vm, "cli-nics", "--ip", "10.9.9.4").stdout.strip()
    assert out == "NIC_ID: 0 (10.9.9.4, 02:00:0a:09:09:04)"
    shown = json.loads(nubo.cli("vm", "nic-attach", vm, "cli-nics", "--json").stdout)
    assert (shown["nic_id"], shown["ip"]) == (1, "10.9.9.1")
    nubo.cli("vm", "nic-detach", vm, "0")
    failed = nubo.cli("vm", "nic-detach", vm, "0", check=False)
    assert failed.returncode == 1 and "NIC" in failed.stderr
    nubo.cli("vm", "delete", vm)
    nubo.cli("vnet", "delete", "cli-nics")
