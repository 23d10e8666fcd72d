"""Shared code of the dummy drivers (vmm/dummy, tm/dummy, im/dummy.d): no hypervisor,
scriptable outcomes. Standard library only, Python 3.8+, because it also runs on hosts.

Outcomes are scripted from the TEMPLATE of the document on stdin (VM or host):
  DUMMY_FAIL = "deploy clone"     these actions fail with "dummy: injected failure of <a>"
  DUMMY_DELAY = 0.5               every action sleeps first (seconds)
  DUMMY_DELAY_DEPLOY = 2          this action sleeps first (wins over DUMMY_DELAY)
  DUMMY_POLL_STATE = e            poll reports this STATE letter
VM state lives in <DS_LOCATION>/0/<vmid>/dummy.json:
  {"state": "running"|"saved"|"off", "deploys": n, "actions": [every call but poll],
   "disks": {target: path of each hot-plugged disk}}
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any

ERROR_BEGIN = "ERROR MESSAGE --8<------"
ERROR_END = "ERROR MESSAGE ------>8--"
DEFAULT_DS_LOCATION = "/var/lib/one/datastores"
SYSTEM_DS = "0"

# Positional arguments before the appended "<vmid> <host>" (reference §3).
VMM_ARGS = {
    "deploy": "<remote_dfile> <host>",
    "shutdown": "<deploy_id> <host>",
    "cancel": "<deploy_id> <host>",
    "reboot": "<deploy_id> <host>",
    "poll": "<deploy_id> <host>",
    "save": "<deploy_id> <checkpoint> <host>",
    "restore": "<checkpoint> <host>",
    "migrate": "<deploy_id> <dest> <host>",
    "attach_disk": "<deploy_id> <path> <target> <disk_id>",
    "detach_disk": "<deploy_id> <path> <target> <disk_id>",
}
# Minimum positional arguments of the 3.4 TM actions (4.x appends <vmid> <dsid>).
TM_ARGS = {
    "clone": "fe:SRC host:DST [SIZE]",
    "ln": "fe:SRC host:DST [SIZE]",
    "mkswap": "SIZE host:DST",
    "mkimage": "SIZE FORMAT host:DST",
    "context": "CONTEXT_SH [FILES...] host:DST",
    "delete": "host:PATH",
    "mv": "SRC_HOST:PATH DST_HOST:PATH",
    "mvds": "host:DISK SOURCE",
    "cpds": "host:DISK SOURCE",
}


class DummyError(Exception):
    """The action fails with this message in the error block."""


def fail(message: str) -> None:
    sys.stderr.write(f"{ERROR_BEGIN}\n{message}\n{ERROR_END}\n")
    sys.stderr.flush()
    sys.exit(1)


def main(body: Callable[[], None]) -> None:
    sys.dont_write_bytecode = True
    try:
        body()
    except DummyError as exc:
        fail(str(exc))


def read_document() -> ET.Element | None:
    data = sys.stdin.buffer.read() if sys.stdin is not None else b""
    if not data.strip():
        return None
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise DummyError(f"dummy: cannot parse the document on stdin: {exc}") from None


def template(doc: ET.Element | None) -> dict[str, str]:
    """Single-valued TEMPLATE attributes, names in upper case."""
    found = doc.find("TEMPLATE") if doc is not None else None
    if found is None:
        return {}
    return {child.tag.upper(): (child.text or "").strip() for child in found if len(child) == 0}


def delay(tmpl: dict[str, str], action: str) -> None:
    value = tmpl.get(f"DUMMY_DELAY_{action.upper()}", tmpl.get("DUMMY_DELAY", ""))
    if value:
        try:
            seconds = float(value)
        except ValueError:
            raise DummyError(f"dummy: DUMMY_DELAY is not a number: {value!r}") from None
        time.sleep(max(seconds, 0.0))


def injected(tmpl: dict[str, str], action: str) -> str | None:
    if action in tmpl.get("DUMMY_FAIL", "").replace(",", " ").lower().split():
        return f"dummy: injected failure of {action}"
    return None


def check_args(argv: list[str], minimum: int, action: str, usage: str) -> None:
    if len(argv) < minimum:
        raise DummyError(f"dummy: usage: {action} {usage}")


def number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


# --- VMM ---------------------------------------------------------------------------------


def ds_locations(doc: ET.Element | None) -> list[str]:
    """DS_LOCATION of each HISTORY record, oldest first."""
    if doc is None:
        return []
    return [
        (h.findtext("DS_LOCATION") or "").strip() or DEFAULT_DS_LOCATION
        for h in doc.findall("HISTORY_RECORDS/HISTORY")
    ]


def vm_dir(location: str, vmid: str) -> str:
    return os.path.join(location, SYSTEM_DS, vmid)


def adopt(doc: ET.Element | None, vmid: str, current: str) -> None:
    """Migrate/save/restore move a domain between hosts: bring its state file along from
    the directory of an older placement when the current one has none."""
    target = os.path.join(current, "dummy.json")
    if os.path.exists(target):
        return
    for location in reversed(ds_locations(doc)[:-1]):
        source = os.path.join(vm_dir(location, vmid), "dummy.json")
        if os.path.exists(source):
            os.makedirs(current, exist_ok=True)
            shutil.move(source, target)
            return


def load(directory: str) -> dict[str, Any]:
    try:
        with open(os.path.join(directory, "dummy.json")) as f:
            state: dict[str, Any] = json.load(f)
    except FileNotFoundError:
        state = {}
    state.setdefault("state", "off")
    state.setdefault("deploys", 0)
    state.setdefault("actions", [])
    return state


def store(directory: str, state: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".dummy.", dir=directory)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f)
    os.replace(tmp, os.path.join(directory, "dummy.json"))


@contextlib.contextmanager
def locked_state(directory: str) -> Iterator[dict[str, Any]]:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "dummy.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = load(directory)
        yield state
        store(directory, state)


def transition(action: str, state: dict[str, Any], argv: list[str], vmid: str) -> str:
    """Apply action to state; returns stdout, raises DummyError when not allowed."""
    domain = f"dummy-{vmid}"
    current = state["state"]
    if action == "deploy":
        state["deploys"] += 1
        if current == "running":
            raise DummyError(f"domain {domain} already exists")
        state["state"] = "running"
        return domain
    if action == "cancel":
        state["state"] = "off"
        return ""
    if action == "restore":
        if current != "saved":
            raise DummyError(f"domain {domain} has no saved state")
        state["state"] = "running"
        return ""
    if current != "running":
        raise DummyError(f"domain {domain} is not running")
    if action in ("shutdown", "save"):
        state["state"] = "off" if action == "shutdown" else "saved"
        if action == "save":
            state["checkpoint"] = argv[1]
    elif action == "migrate":
        state["migrated_to"] = argv[1]
    elif action == "attach_disk":  # idempotent, as the core retries after a crash
        state.setdefault("disks", {})[argv[2]] = argv[1]
    elif action == "detach_disk":
        state.setdefault("disks", {}).pop(argv[2], None)
    return ""


def poll_line(state: dict[str, Any], tmpl: dict[str, str]) -> str:
    letter = {"running": "a", "saved": "p"}.get(state["state"], "d")
    letter = tmpl.get("DUMMY_POLL_STATE", "").strip() or letter
    if state["state"] == "off" and letter == "d":
        return "STATE=d"
    cpu = memory = 0.0
    if state["state"] == "running":
        cpu = float(tmpl.get("CPU") or 0) * 10
        memory = float(tmpl.get("MEMORY") or 0) * 1024
    return f"STATE={letter} USEDCPU={number(cpu)} USEDMEMORY={number(memory)} NETRX=0 NETTX=0"


def vmm_action(action: str) -> None:
    argv = sys.argv[1:]
    check_args(argv, VMM_ARGS[action].count("<") + 2, action, VMM_ARGS[action] + " <vmid> <host>")
    vmid = argv[-2]
    doc = read_document()
    tmpl = template(doc)
    locations = ds_locations(doc)
    directory = vm_dir(locations[-1] if locations else DEFAULT_DS_LOCATION, vmid)
    out = ""
    if action in ("migrate", "save", "restore"):
        adopt(doc, vmid, directory)
    # The whole action, delay included, holds the VM's lock: a host works on one VM one
    # action at a time, so a poll made while a deploy is under way waits for its outcome.
    with locked_state(directory) as state:
        delay(tmpl, action)
        failure = injected(tmpl, action)
        if action == "poll":
            if failure is None:
                out = poll_line(state, tmpl)
        else:
            state["actions"].append(action)
            if failure is None:
                try:
                    out = transition(action, state, argv, vmid)
                except DummyError as exc:
                    failure = str(exc)
    if failure is not None:
        raise DummyError(failure)
    if out:
        print(out)


# --- TM ------------------------------------------------------------------------------------


def tm_action(action: str) -> None:
    argv = sys.argv[1:]
    usage = TM_ARGS[action]
    check_args(argv, len(usage.replace("[SIZE]", "").replace("[FILES...]", "").split()),
               action, usage)
    tmpl = template(read_document())
    delay(tmpl, action)
    failure = injected(tmpl, action)
    if failure:
        raise DummyError(failure)
    sys.stderr.write(f"INFO: {action}: dummy: nothing to do for {' '.join(argv)}\n")


# --- IM ------------------------------------------------------------------------------------


def monitor() -> None:
    argv = sys.argv[1:]
    host = argv[1] if len(argv) >= 2 else socket.gethostname()
    tmpl = template(read_document())
    delay(tmpl, "monitor")
    failure = injected(tmpl, "monitor")
    if failure:
        raise DummyError(failure)
    try:
        cpu = int(tmpl.get("DUMMY_TOTALCPU") or 800)
        memory = int(tmpl.get("DUMMY_TOTALMEMORY") or 16777216)
    except ValueError:
        raise DummyError("dummy: DUMMY_TOTALCPU and DUMMY_TOTALMEMORY must be integers") from None
    metrics = [
        ("HYPERVISOR", "dummy"),
        ("TOTALCPU", cpu), ("FREECPU", cpu), ("USEDCPU", 0),
        ("TOTALMEMORY", memory), ("FREEMEMORY", memory), ("USEDMEMORY", 0),
        ("HOSTNAME", host), ("ARCH", "x86_64"), ("CPUSPEED", 2000),
        ("MODELNAME", "Nubo dummy CPU"),
    ]
    print(" ".join(f"{k}={quote(str(v))}" for k, v in metrics))


def quote(value: str) -> str:
    return f'"{value}"' if any(c.isspace() for c in value) or not value else value
