"""VM_HOOK and HOST_HOOK: commands run when a VM or a host enters a state.

    VM_HOOK = [ name = "on_failure_resubmit", on = "FAILURE",
                command = "onevm resubmit", arguments = "$VMID" ]
    HOST_HOOK = [ name = "error", on = "ERROR", command = "host_error.rb",
                  arguments = "$HID -r n", remote = no ]

Events: a VM's CREATE (when it is allocated), PROLOG, RUNNING, SHUTDOWN (ACTIVE/EPILOG),
STOP, DONE, FAILED (FAILURE is an alias), UNKNOWN, and CUSTOM with `state` and `lcm_state`
(names or numbers); a host's CREATE, ERROR and DISABLE. Each fires once per transition
into that state: `fire_vm` and `fire_host` queue a HookRun row in the transaction that
changes the state, and core.hook_runs runs it, so a slow or failing hook never holds the
core up and a crash never loses one.

Variables, replaced in every word of `arguments` (split like a shell would, then each word
handled on its own: nothing reaches a shell): `$VMID` and `$ID` (the object's id), `$HID`
(the host's id: the VM's host, or the host itself), `$TEMPLATE` (base64 of the object's
XML as XML-RPC renders it), `$PREV_STATE` and `$PREV_LCM_STATE`. `${NAME}` works too.

Commands: `onevm ...`, `onehost ...` and the other OpenNebula tools run Nubo's CLI as
oneadmin; a relative name is a shipped or operator hook in `remotes/hooks/` (`host_error.rb`
finds `host_error`); an absolute path runs as it is, except one under an OpenNebula
`.../hooks/` folder whose script Nubo ships, which runs the shipped one (so the seed's
snippets paste in verbatim). `remote = yes` runs it on the VM's host over SSH (not at all if
the VM has never been placed) or on the host itself.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine
from sqlmodel import Session, col, select

from core import db, documents
from core.errors import InvalidRequest
from core.lifecycle import LcmState, VmState
from core.models import VM, Group, History, Hook, HookRun, Host, User
from core.service.context import HOOKS, notify_after_commit

VM_EVENTS = ("CREATE", "PROLOG", "RUNNING", "SHUTDOWN", "STOP", "DONE", "FAILED", "UNKNOWN",
             "CUSTOM")
HOST_EVENTS = ("CREATE", "ERROR", "DISABLE")
ALIASES = {"FAILURE": "FAILED"}
EVENTS = {"vm": VM_EVENTS, "host": HOST_EVENTS}
# the OpenNebula command-line tools a hook may call, and Nubo's command for each
ONE_TOOLS = {"onevm": "vm", "onehost": "host", "oneimage": "image", "onevnet": "vnet",
             "onetemplate": "template", "oneuser": "user", "onedatastore": "datastore",
             "onehook": "hook"}
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(VMID|HID|ID|TEMPLATE|PREV_STATE|PREV_LCM_STATE)\b)")

# the state a VM enters -> the event it fires (CUSTOM is matched on the states themselves)
_ON_ENTERING: dict[tuple[int, int], str] = {
    (VmState.ACTIVE, LcmState.PROLOG): "PROLOG",
    (VmState.ACTIVE, LcmState.RUNNING): "RUNNING",
    (VmState.ACTIVE, LcmState.EPILOG): "SHUTDOWN",
    (VmState.ACTIVE, LcmState.UNKNOWN): "UNKNOWN",
    (VmState.STOPPED, LcmState.LCM_INIT): "STOP",
    (VmState.DONE, LcmState.LCM_INIT): "DONE",
    (VmState.FAILED, LcmState.LCM_INIT): "FAILED",
}


@dataclass(frozen=True)
class Spec:
    """A hook as written, checked."""

    name: str
    resource: str
    on: str
    command: str
    arguments: str = ""
    remote: bool = False
    state: int = -1
    lcm_state: int = -1

    def row(self, origin: str) -> Hook:
        return Hook(name=self.name, resource=self.resource, on=self.on, command=self.command,
                    arguments=self.arguments, remote=self.remote, state=self.state,
                    lcm_state=self.lcm_state, origin=origin)


def spec(resource: str, vector: Mapping[str, str], *, where: str = "") -> Spec:
    """A VM_HOOK/HOST_HOOK vector (keys in any case) as a Spec; InvalidRequest if wrong."""
    values = {k.upper(): v.strip() for k, v in vector.items()}
    label = f"{where}{resource.upper()}_HOOK {values.get('NAME', '')!r}".strip()
    name = values.get("NAME", "")
    if not name:
        raise InvalidRequest(f"{where}{resource.upper()}_HOOK needs a name")
    on = values.get("ON", "").upper()
    on = ALIASES.get(on, on)
    if on not in EVENTS[resource]:
        raise InvalidRequest(f"{label}: on must be one of {', '.join(EVENTS[resource])}, "
                             f"not {values.get('ON', '')!r}")
    command = values.get("COMMAND", "")
    if not command:
        raise InvalidRequest(f"{label} needs a command")
    try:
        shlex.split(command)
        shlex.split(_unescape(values.get("ARGUMENTS", "")))
    except ValueError as exc:
        raise InvalidRequest(f"{label}: {exc}") from None
    remote = values.get("REMOTE", "no").lower()
    if remote not in ("yes", "no", "true", "false", "1", "0"):
        raise InvalidRequest(f"{label}: remote must be yes or no, not {remote!r}")
    state = lcm = -1
    if on == "CUSTOM":
        if "STATE" not in values or "LCM_STATE" not in values:
            raise InvalidRequest(f"{label}: on = CUSTOM needs state and lcm_state")
        state = _number(values["STATE"], VmState, label)
        lcm = _number(values["LCM_STATE"], LcmState, label)
    return Spec(name=name, resource=resource, on=on, command=command,
                arguments=_unescape(values.get("ARGUMENTS", "")),
                remote=remote in ("yes", "true", "1"), state=state, lcm_state=lcm)


def _unescape(text: str) -> str:
    """`\\$HID` as some copies of OpenNebula's docs write it is `$HID`."""
    return text.replace("\\$", "$")


def _number(value: str, names: type[VmState] | type[LcmState], label: str) -> int:
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        return int(names[value.upper()])
    except KeyError:
        raise InvalidRequest(f"{label}: unknown state {value!r}") from None


def vm_event(state: int, lcm: int) -> str | None:
    return _ON_ENTERING.get((state, lcm if state == VmState.ACTIVE else LcmState.LCM_INIT))


# --- firing ------------------------------------------------------------------------------


def fire_vm(session: Session, vm: VM, events: Sequence[str], *, prev_state: int,
            prev_lcm: int) -> int:
    """Queue the runs of every VM hook on one of `events` (and of CUSTOM hooks whose states
    the VM is now in); returns how many."""
    wanted = [*events, "CUSTOM"] if events else ["CUSTOM"]
    hooks = [h for h in _hooks(session, "vm", wanted)
             if h.on != "CUSTOM" or ((h.state in (-1, vm.state))
                                     and (h.lcm_state in (-1, vm.lcm_state)))]
    if not hooks:
        return 0
    assert vm.id is not None
    host = session.get(Host, vm.host_id) if vm.host_id is not None else None
    values = {"VMID": str(vm.id), "ID": str(vm.id), "HID": str(vm.host_id if host else -1),
              "PREV_STATE": str(prev_state), "PREV_LCM_STATE": str(prev_lcm)}
    return _queue(session, hooks, "vm", vm.id, host, values, lambda: _vm_template(session, vm),
                  lambda h: h.on if h.on != "CUSTOM" else "CUSTOM")


def fire_host(session: Session, host: Host, event: str, *, prev_state: int) -> int:
    hooks = _hooks(session, "host", [event])
    if not hooks:
        return 0
    assert host.id is not None
    values = {"HID": str(host.id), "ID": str(host.id), "VMID": "",
              "PREV_STATE": str(prev_state), "PREV_LCM_STATE": ""}
    return _queue(session, hooks, "host", host.id, host, values,
                  lambda: documents.to_string(documents.host_xml(host)), lambda h: event)


def _hooks(session: Session, resource: str, events: Sequence[str]) -> list[Hook]:
    known = _INDEX.events(_engine(session))
    if not any((resource, event) in known for event in events):
        return []  # most transitions: no query
    return list(session.exec(select(Hook).where(Hook.resource == resource,
                                                col(Hook.on).in_(events))))


def changed(engine: Engine) -> None:
    """Hooks were added or removed (call it once that transaction committed)."""
    _INDEX.forget(engine)


class _Index:
    """Which (resource, event) pairs have hooks at all, per database. Nearly every VM
    transition has none, and asking the database each time cost about 0.25 ms per
    transition. The set is read in a transaction of its own (not the caller's, whose
    snapshot may predate the last change) and kept unless forget() was called meanwhile."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: weakref.WeakKeyDictionary[Engine, frozenset[tuple[str, str]]] = (
            weakref.WeakKeyDictionary())
        self._generation = 0

    def events(self, engine: Engine) -> frozenset[tuple[str, str]]:
        with self._lock:
            known = self._known.get(engine)
            generation = self._generation
        if known is not None:
            return known
        with db.read_unit(engine) as s:
            known = frozenset((r, o) for r, o in s.exec(select(Hook.resource, Hook.on)))
        with self._lock:
            if self._generation == generation:
                self._known[engine] = known
        return known

    def forget(self, engine: Engine) -> None:
        with self._lock:
            self._generation += 1
            self._known.pop(engine, None)


_INDEX = _Index()


def _engine(session: Session) -> Engine:
    bind = session.get_bind()
    return bind.engine if isinstance(bind, Connection) else bind


def _queue(session: Session, hooks: Sequence[Hook], resource: str, object_id: int,
           host: Host | None, values: dict[str, str], xml: Callable[[], str],
           event_of: Callable[[Hook], str]) -> int:
    document: str | None = None
    queued = 0
    for hook in hooks:
        if hook.remote and host is None:
            continue  # OpenNebula skips a remote VM hook for a VM that was never placed
        if document is None and "TEMPLATE" in hook.arguments:
            document = base64.b64encode(xml().encode()).decode()
        argv = expand([*shlex.split(hook.command), *shlex.split(hook.arguments)],
                      {**values, "TEMPLATE": document or ""})
        assert hook.id is not None
        session.add(HookRun(hook_id=hook.id, hook_name=hook.name, resource=resource,
                            object_id=object_id, event=event_of(hook), argv=json.dumps(argv),
                            host=host.name if hook.remote and host is not None else ""))
        queued += 1
    if queued:
        notify_after_commit(session, HOOKS)
    return queued


def expand(words: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Every `$NAME`/`${NAME}` of a known variable replaced, in every word."""
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return values.get(name, match.group(0))

    return [_VARIABLE.sub(one, word) for word in words]


def _vm_template(session: Session, vm: VM) -> str:
    history = list(session.exec(select(History).where(History.vm_id == vm.id)
                                .order_by(col(History.seq))))
    user, group = session.get(User, vm.uid), session.get(Group, vm.gid)
    return documents.to_string(documents.vm_xml(
        vm, history=history, uname=user.name if user else "", gname=group.name if group else ""))
