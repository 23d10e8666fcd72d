"""Watching a VM: `--wait` follows it to RUNNING, `vm log --follow` tails its log."""

from __future__ import annotations

import json
import time
from typing import Any

from core.cli import views
from core.cli.client import Client
from core.cli.output import arrow, emit, emit_json, error, log_time

POLL_SECONDS = 0.25
LOG_POLL_SECONDS = 1.0


def wait_running(client: Client, vm_id: int, *, timeout: float, as_json: bool,
                 settle: bool = False) -> int:
    """Print each state change until RUNNING (0), FAILED or DONE (1), or the timeout (1).

    With `settle`, stop at the first state that needs no more driver work (RUNNING,
    UNKNOWN, HOLD, STOPPED, SUSPENDED, DONE: 0; FAILED: 1): what an action leads to."""
    start = time.monotonic()
    changes: list[dict[str, Any]] = []
    last_state = last_message = ""
    sep = arrow()
    while True:
        vm = views.vm(client.document("one.vm.info", vm_id))
        elapsed = round(time.monotonic() - start, 1)
        short, pending = vm["short_state"], vm["state"] == "PENDING"
        if short != last_state:
            changes.append({"elapsed": elapsed, "state": vm["state_name"], "short": short})
            if not as_json:
                shown = f"{last_state} {sep} {short}" if last_state else short
                emit(f"{elapsed:7.1f}s  {shown}")
            last_state = short
        if pending and vm["message"] and vm["message"] != last_message:
            changes.append({"elapsed": elapsed, "waiting": vm["message"]})
            if not as_json:
                emit(f"{elapsed:7.1f}s  waiting: {vm['message']}")
            last_message = vm["message"]
        problem = _settled(vm, elapsed, timeout) if settle else _outcome(vm, elapsed, timeout)
        if problem is not None:
            if as_json:
                emit_json({"id": vm_id, "state": vm["state_name"], "elapsed": elapsed,
                           "message": vm["message"], "changes": changes,
                           "ok": problem == ""})
            if problem:
                error(problem)
                return 1
            return 0
        time.sleep(POLL_SECONDS)


def _outcome(vm: views.View, elapsed: float, timeout: float) -> str | None:
    """None to keep waiting, "" when RUNNING, else why waiting ends in failure."""
    if vm["state"] == "ACTIVE" and vm["lcm_state"] == "RUNNING":
        return ""
    if vm["state"] == "FAILED":
        return f"VM {vm['id']} failed: {vm['message'] or 'no reason recorded'}"
    if vm["state"] == "DONE":
        return f"VM {vm['id']} ended (DONE) before it was RUNNING"
    if timeout > 0 and elapsed >= timeout:
        why = f": {vm['message']}" if vm["state"] == "PENDING" and vm["message"] else ""
        return f"VM {vm['id']} is still {vm['state_name']} after {timeout:g}s{why}"
    return None


SETTLED = {"HOLD", "STOPPED", "SUSPENDED", "DONE"}


def _settled(vm: views.View, elapsed: float, timeout: float) -> str | None:
    if vm["state"] in SETTLED or (vm["state"] == "ACTIVE" and vm["lcm_state"] == "UNKNOWN"):
        return ""
    return _outcome(vm, elapsed, timeout)


def log_entries(client: Client, vm_id: int, after: int, method: str = "one.vm.log"
                ) -> list[dict[str, Any]]:
    """Log rows of a VM (or, with method one.host.log, of a host) after id `after`."""
    rows = client.call(method, vm_id, after)
    return [{"id": int(r[0]), "time": float(r[1]), "severity": str(r[2]), "message": str(r[3])}
            for r in rows]


def log_line(entry: dict[str, Any]) -> str:
    return f"{log_time(entry['time'])} [{entry['severity']}]: {entry['message']}"


def show_log(client: Client, vm_id: int, *, follow: bool, as_json: bool,
             method: str = "one.vm.log") -> int:
    """Print the log; with `follow`, keep polling for new lines until Ctrl-C."""
    entries = log_entries(client, vm_id, 0, method)
    if as_json and not follow:
        emit_json(entries)
        return 0
    last = 0
    try:
        while True:
            for entry in entries:
                emit(_json_line(entry) if as_json else log_line(entry))
                last = max(last, entry["id"])
            if not follow:
                return 0
            time.sleep(LOG_POLL_SECONDS)
            entries = log_entries(client, vm_id, last, method)
    except KeyboardInterrupt:
        return 0


def _json_line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, ensure_ascii=False)
