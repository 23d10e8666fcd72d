"""Virtual machines: allocation, user actions, queries, logs."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select, update

from core import db, expr, hooks, lifecycle, template
from core.errors import (
    Forbidden,
    InvalidRequest,
    InvalidState,
    NotFound,
)
from core.lifecycle import Event, HistoryReason, VmState
from core.models import (
    IMAGE_USED,
    SYSTEM_DATASTORE_ID,
    VM,
    Datastore,
    Group,
    History,
    Host,
    Image,
    LogEntry,
    User,
)
from core.service import disks as disks_service
from core.service import images as image_service
from core.service import leases, sgrules, tokens
from core.service import templates as template_service
from core.service.access import ALL, fetch, id_range, restrict
from core.service.context import DISPATCHER, SCHEDULER, Caller, Cloud, vm_log
from core.service.identity import names
from core.service.transitions import (
    apply,
    deploy_event,
    last_history,
    place,
)

# API action names: OpenNebula 3.4's, plus the later names pyone users may send
ACTIONS: dict[str, Event] = {
    "shutdown": Event.SHUTDOWN,
    "hold": Event.HOLD,
    "release": Event.RELEASE,
    "stop": Event.STOP,
    "cancel": Event.CANCEL,
    "suspend": Event.SUSPEND,
    "resume": Event.RESUME,
    "restart": Event.RESTART,
    "reboot": Event.REBOOT,
    "finalize": Event.FINALIZE,
    "delete": Event.FINALIZE,
    "resubmit": Event.RESUBMIT,
    "terminate": Event.SHUTDOWN,
    "terminate-hard": Event.CANCEL,
}


def _number(tmpl: template.Template, name: str, kind: type, *, minimum: float) -> float:
    raw = tmpl.get(name)
    if raw is None or raw == "":
        raise InvalidRequest(f"the VM template needs {name}")
    try:
        value = kind(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be a {'number' if kind is float else 'whole number'}, "
                             f"not {raw!r}") from None
    if value < minimum or value != value:
        raise InvalidRequest(f"{name} must be greater than 0, not {raw}")
    return float(value)


def _resolve_disks(session: Session, caller: Caller, tmpl: template.Template) -> list[Image]:
    """Fill each DISK from its image; returns the images used (for their counters)."""
    used: list[Image] = []
    disks = tmpl.vectors("DISK")
    targets = iter("abcdefghijklmnopqrstuvwxyz")
    for disk_id, disk in enumerate(disks):
        image: Image | None = None
        if "IMAGE_ID" in disk:
            if not disk["IMAGE_ID"].isdigit():
                raise InvalidRequest(f"DISK {disk_id}: IMAGE_ID must be a number")
            image = image_service.usable(session, int(disk["IMAGE_ID"]), caller,
                                         as_disk=True)
        elif "IMAGE" in disk:
            owner = caller.uid
            query = select(Image).where(Image.name == disk["IMAGE"], Image.uid == owner)
            image = session.exec(query).first()
            if image is None:
                raise NotFound("image", disk["IMAGE"])
            image_service.copied(image)  # not LOCKED (being copied) nor in ERROR
        if image is not None:
            disks_service.fill_from_image(disk, image)
            used.append(image)
        else:
            kind = disk.get("TYPE", "").lower()
            if kind in ("swap", "fs"):
                if not disk.get("SIZE", "").isdigit():
                    raise InvalidRequest(f"DISK {disk_id}: a {kind} disk needs SIZE in MB")
            elif not disk.get("SOURCE"):
                raise InvalidRequest(f"DISK {disk_id} needs IMAGE, IMAGE_ID, SOURCE or TYPE=swap/fs")
        disk["DISK_ID"] = str(disk_id)
        disk.setdefault("TARGET", "hd" + next(targets))
    context = tmpl.vector("CONTEXT")
    if context is not None:
        context["DISK_ID"] = str(len(disks))  # the context CD comes after the disks
    return used


def create_vm(cloud: Cloud, caller: Caller, *, text: str, hold: bool = False,
              name: str | None = None) -> int:
    return create_vms(cloud, caller, text=text, hold=hold, name=name)[0]


def create_vms(cloud: Cloud, caller: Caller, *, text: str, count: int = 1, hold: bool = False,
               name: str | None = None, token: str = "", fingerprint: str = "") -> list[int]:
    """`count` VMs from one template, created together (they share a batch id).

    With a `token`, the call is idempotent for this user: a retry with the same token and
    `fingerprint` returns the VMs the first call created, a different fingerprint is
    refused (IdempotencyMismatch); concurrent retries create the VMs once."""
    tmpl = template.parse(text)
    memory = _number(tmpl, "MEMORY", int, minimum=1)
    cpu = _number(tmpl, "CPU", float, minimum=0.01)
    requirements = tmpl.get("REQUIREMENTS") or ""
    rank = tmpl.get("RANK") or ""
    expr.parse_requirements(requirements)  # refuse a bad expression now, not at scheduling
    expr.parse_rank(rank)
    if not 1 <= count <= 1000:
        raise InvalidRequest(f"a request creates 1 to 1000 VMs, not {count}")
    if name:
        tmpl.set("NAME", name)
    if token:
        done = _earlier(cloud, caller, token, fingerprint)
        if done is not None:
            return done
    try:
        with cloud.session() as s:
            request = tokens.record(s, caller, token=token, kind="vm", fingerprint=fingerprint,
                                    count=count) if token else None
            ids = [_create_one(s, caller, tmpl, hold=hold, memory=int(memory), cpu=cpu,
                               requirements=requirements, rank=rank) for _ in range(count)]
            for vm_id in ids:
                row = s.get(VM, vm_id)
                assert row is not None
                row.batch = ids[0]
                s.add(row)
            if request is not None:
                request.first_id = ids[0]
                s.add(request)
    except IntegrityError:
        if token:
            done = _earlier(cloud, caller, token, fingerprint)
            if done is not None:
                return done
        raise
    cloud.wakeups.notify(SCHEDULER)
    return ids


def _earlier(cloud: Cloud, caller: Caller, token: str, fingerprint: str) -> list[int] | None:
    request = tokens.earlier(cloud, caller, token=token, kind="vm", fingerprint=fingerprint)
    if request is None:
        return None
    with cloud.session() as s:
        rows = s.exec(select(VM.id).where(VM.batch == request.first_id).order_by(col(VM.id)))
        return [vm_id for vm_id in rows if vm_id is not None]


def _create_one(s: Session, caller: Caller, base: template.Template, *, hold: bool,
                memory: int, cpu: float, requirements: str, rank: str) -> int:
    tmpl = template.Template(base)
    used = _resolve_disks(s, caller, tmpl)
    state = VmState.HOLD if hold else VmState.PENDING
    vm = VM(name=tmpl.get("NAME") or "", uid=caller.uid, gid=caller.gid, state=int(state),
            cpu=cpu, memory=memory, requirements=requirements, rank=rank)
    s.add(vm)
    s.flush()
    assert vm.id is not None
    if not vm.name:
        vm.name = f"one-{vm.id}"
        tmpl.set("NAME", vm.name)
    tmpl.set("VMID", str(vm.id))
    groups = sgrules.check(s, caller, tmpl)
    leases.lease_nics(s, caller, tmpl, vm.id)
    vm.template = tmpl.dumps()
    sgrules.join(s, vm, groups)
    for image in used:
        s.execute(update(Image).where(col(Image.id) == image.id).values(
            running_vms=col(Image.running_vms) + 1, state=IMAGE_USED))
    vm_log(s, vm.id, f"New VM {vm.name} created by {caller.name}, state {state.name}")
    hooks.fire_vm(s, vm, ["CREATE"], prev_state=VmState.INIT, prev_lcm=0)
    return vm.id


def instantiate(cloud: Cloud, caller: Caller, *, template_id: int, name: str = "",
                hold: bool = False) -> int:
    row = template_service.get_template(cloud, caller, template_id=template_id)
    tmpl = template.parse(row.template)
    tmpl.set("TEMPLATE_ID", str(template_id))
    if not name:
        tmpl.remove("NAME")
    return create_vm(cloud, caller, text=tmpl.dumps(), hold=hold, name=name or None)


def act(cloud: Cloud, caller: Caller, *, vm_id: int, action: str) -> None:
    """A user action (shutdown, hold, ...) on a VM."""
    event = ACTIONS.get(action.lower())
    if event is None:
        raise InvalidRequest(f"unknown action {action!r}; known: {', '.join(sorted(ACTIONS))}")
    with cloud.session() as s:
        vm = fetch(s, VM, vm_id, caller, "VM", lock=True)
        if event is Event.STOP:
            history = last_history(s, vm_id)
            if history is not None and vm.state == VmState.ACTIVE:
                history.reason = HistoryReason.STOP_RESUME
                s.add(history)
        vm_log(s, vm_id, f"User {caller.name} asked for {action}")
        apply(s, vm, event)
    cloud.wakeups.notify(SCHEDULER, DISPATCHER)


def deploy(cloud: Cloud, caller: Caller, *, vm_id: int, host_id: int) -> None:
    """Place a PENDING VM on a chosen host (oneadmin only, as `onevm deploy`)."""
    if not caller.admin:
        raise Forbidden("only members of group oneadmin may deploy VMs by hand")
    with cloud.session() as s:
        vm = s.get(VM, vm_id, with_for_update=True)
        if vm is None:
            raise NotFound("VM", vm_id)
        host = s.get(Host, host_id)
        if host is None:
            raise NotFound("host", host_id)
        system = s.get(Datastore, SYSTEM_DATASTORE_ID)
        tm_mad = system.tm_mad if system else "dummy"
        if vm.state != VmState.PENDING:
            raise InvalidState(lifecycle.state_name(vm.state, vm.lcm_state), "deploy")
        place(s, vm, host, deploy_event(s, vm), ds_location_for(cloud, host), tm_mad)
    cloud.wakeups.notify(DISPATCHER)


def ds_location_for(cloud: Cloud, host: Host) -> str:
    """Where the host keeps datastores: its DATASTORE_LOCATION attribute or the default."""
    own = template.parse(host.template).get("DATASTORE_LOCATION")
    return own or cloud.config.datastores


@dataclass
class VMInfo:
    vm: VM
    history: list[History]
    uname: str
    gname: str


def get_vm(cloud: Cloud, caller: Caller, *, vm_id: int) -> VMInfo:
    with cloud.session() as s:
        vm = fetch(s, VM, vm_id, caller, "VM")
        history = list(
            s.exec(select(History).where(History.vm_id == vm_id).order_by(col(History.seq)))
        )
        users, groups = names(s)
        return VMInfo(vm, history, users.get(vm.uid, str(vm.uid)), groups.get(vm.gid, str(vm.gid)))


def list_vms(cloud: Cloud, caller: Caller, *, flag: int = ALL, start: int = -1, end: int = -1,
             state: int = -1, done_since: int | None = None,
             ids: Sequence[int] | None = None) -> list[VMInfo]:
    """OpenNebula's vmpool filter: state -2 any, -1 any but DONE, >=0 that state.

    `done_since` (with state -2) keeps DONE VMs only if they ended at or after it; `ids`
    restricts the listing to those VMs."""
    wanted = [] if ids is None else list(ids)
    one = len(wanted) == 1  # a point read: no IN list to expand
    query = _vm_query(caller, flag, start, end, state, done_since is not None,
                      "one" if one else "" if ids is None else "some")
    params = {"since": done_since, "ids": wanted, "id": wanted[0] if one else None}
    infos: dict[int, VMInfo] = {}
    vm_end = len(_VM_COLUMNS)
    with cloud.session() as s:
        for row in db.rows(s, query, params):
            vm_id = row[0]
            info = infos.get(vm_id)
            if info is None:
                vm = db.detached(VM, row[:vm_end])
                uname, gname = row[vm_end], row[vm_end + 1]
                info = infos[vm_id] = VMInfo(vm, [], str(vm.uid) if uname is None else uname,
                                             str(vm.gid) if gname is None else gname)
            if row[vm_end + 2] is not None:
                info.history.append(db.detached(History, row[vm_end + 2:]))
    return list(infos.values())


_VM_COLUMNS = tuple(VM.__table__.columns)  # type: ignore[attr-defined]
_HISTORY_COLUMNS = tuple(History.__table__.columns)  # type: ignore[attr-defined]


@lru_cache(maxsize=512)
def _vm_query(caller: Caller, flag: int, start: int, end: int, state: int, since: bool,
              ids: str) -> Any:
    """list_vms' statement for one caller and filter shape, built once: building it costs
    more than running it. `since` and the ids (`ids` "one" or "some") are bound at run time.
    Rows of a VM's columns, its owner's and group's names, and a history record's columns
    (all None if it has none), one row per history record."""
    joined: Any = sa_select(*_VM_COLUMNS, col(User.name), col(Group.name),
                              *_HISTORY_COLUMNS).outerjoin(
        User, col(User.id) == col(VM.uid)).outerjoin(Group, col(Group.id) == col(VM.gid)
    ).outerjoin(History, col(History.vm_id) == col(VM.id))
    query = id_range(restrict(joined, VM, caller, flag), VM, start, end)
    if state == -1:
        query = query.where(col(VM.state) != VmState.DONE)
    elif state >= 0:
        query = query.where(VM.state == state)
    elif state != -2:
        raise InvalidRequest(f"invalid state filter {state}")
    if since:
        query = query.where((col(VM.state) != VmState.DONE)
                            | (col(VM.etime) >= bindparam("since")))
    if ids == "one":
        query = query.where(col(VM.id) == bindparam("id"))
    elif ids:
        query = query.where(col(VM.id).in_(bindparam("ids", expanding=True)))
    return query.order_by(col(VM.id), col(History.seq))


def vm_log_entries(cloud: Cloud, caller: Caller, *, vm_id: int, after: int = 0) -> list[LogEntry]:
    with cloud.session() as s:
        fetch(s, VM, vm_id, caller, "VM")
        query = select(LogEntry).where(LogEntry.vm_id == vm_id, col(LogEntry.id) > after)
        return list(s.exec(query.order_by(col(LogEntry.id))))


def find_vm(cloud: Cloud, caller: Caller, *, ref: str) -> int:
    if ref.isdigit():
        return int(ref)
    with cloud.session() as s:
        query = restrict(select(VM).where(VM.name == ref, col(VM.state) != VmState.DONE), VM,
                         caller)
        vm = s.exec(query).first()
        if vm is None or vm.id is None:
            raise NotFound("VM", ref)
        return int(vm.id)


RESIZABLE = (VmState.PENDING, VmState.HOLD, VmState.STOPPED)


def resize(cloud: Cloud, caller: Caller, *, vm_id: int, cpu: float, memory: int,
           attributes: Mapping[str, str] | None = None) -> None:
    """New CPU and memory (and template attributes such as a size name) for a VM that
    holds no host capacity: PENDING, HOLD or STOPPED."""
    if cpu <= 0 or memory <= 0:
        raise InvalidRequest("CPU and MEMORY must be greater than 0")
    with cloud.session() as s:
        vm = fetch(s, VM, vm_id, caller, "VM", lock=True)
        if vm.state not in RESIZABLE:
            raise InvalidState(lifecycle.state_name(vm.state, vm.lcm_state), "resize")
        tmpl = template.parse(vm.template)
        tmpl.set("CPU", f"{cpu:g}")
        tmpl.set("MEMORY", str(memory))
        for name, value in (attributes or {}).items():
            tmpl.set(name, value)
        vm.cpu, vm.memory, vm.template = cpu, memory, tmpl.dumps()
        s.add(vm)
        vm_log(s, vm_id, f"Resized by {caller.name} to CPU={cpu:g} MEMORY={memory}")


CONSOLE_LIMIT = 64 * 1024


def _console_path(cloud: Cloud, vm_id: int) -> Path:
    return cloud.config.var / "vms" / str(vm_id) / "console.log"


def save_console(cloud: Cloud, vm_id: int, text: str) -> None:
    """The front-end's copy of a VM's serial console, which `console` reads: the monitor
    refreshes it at every poll from hypervisor drivers that have a `console` action."""
    path = _console_path(cloud, vm_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def console(cloud: Cloud, caller: Caller, *, vm_id: int) -> str:
    """The last 64 KB of the VM's serial console, as the monitor last saved it
    (save_console; "" when there is none yet)."""
    with cloud.session() as s:
        fetch(s, VM, vm_id, caller, "VM")
    path = _console_path(cloud, vm_id)
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - CONSOLE_LIMIT))
            return handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
