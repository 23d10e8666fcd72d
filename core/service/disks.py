"""A VM's disks after creation: attach, detach, and save a disk as a new image.

On a RUNNING VM, attach and detach go through the HOTPLUG state (OpenNebula 3.6+): the
dispatcher copies or links the disk (TM) and plugs it (VMM attach_disk), or unplugs it
and moves it back. On a STOPPED VM the same driver work runs on the front-end copy of the
VM's files, without a state change. On a VM not yet deployed only the template changes.

The disk being worked on carries a flag in the VM template until the driver outcome is
settled (`settle`, called by the dispatcher in the transaction that records it):
ATTACH=YES, DETACH=YES, or SAVE_AS=<image id> with SAVE_AS_SOURCE (OpenNebula's names).
"""

from __future__ import annotations

import time
import uuid

from sqlmodel import Session, col, select, update

from core import bursting, template
from core.errors import Conflict, InvalidRequest, InvalidState, NotFound
from core.lifecycle import DISK_STEPS, Event, HistoryReason, LcmState, Step, VmState, state_name
from core.models import (
    IMAGE_ERROR,
    IMAGE_LOCKED,
    IMAGE_READY,
    IMAGE_USED,
    VM,
    Datastore,
    Host,
    Image,
    Operation,
)
from core.service import images
from core.service.access import fetch
from core.service.context import DISPATCHER, Caller, Cloud, vm_log
from core.service.transitions import apply, last_history, release_image

_TYPES = {0: "DISK", 1: "CDROM", 2: "DISK"}


def fill_from_image(disk: dict[str, str], image: Image) -> None:
    """A DISK vector's attributes taken from the image it uses (also at VM creation)."""
    if image.state not in (IMAGE_READY, IMAGE_USED):
        raise InvalidState(f"image {image.name} is not READY", "use")
    if image.persistent and image.running_vms > 0:
        raise Conflict(f"persistent image {image.name} is already used by a VM")
    disk["IMAGE_ID"] = str(image.id)
    disk["IMAGE"] = image.name
    disk["SOURCE"] = image.source
    disk["TYPE"] = _TYPES.get(image.type, "DISK")
    disk["CLONE"] = "NO" if image.persistent else "YES"
    disk["SAVE"] = "YES" if image.persistent else disk.get("SAVE", "NO")
    disk["READONLY"] = "YES" if image.type == 1 else disk.get("READONLY", "NO")


def attach_disk(cloud: Cloud, caller: Caller, *, vm_id: int, image_id: int,
                target: str = "") -> int:
    """Attach an image as a new disk; returns its DISK_ID."""
    with cloud.session() as s:
        vm = fetch(s, VM, vm_id, caller, "VM", lock=True)
        mode = _mode(s, vm, "attach")
        image = images.usable(s, image_id, caller, lock=True, as_disk=True)
        tmpl = template.parse(vm.template)
        disks = tmpl.vectors("DISK")
        target = target or _free_target(disks)
        if any(d.get("TARGET") == target for d in disks):
            raise Conflict(f"VM {vm_id} already has a disk on target {target}")
        disk: dict[str, str] = {}
        fill_from_image(disk, image)
        disk_id = _reserve_disk_id(tmpl)
        disk.update(DISK_ID=str(disk_id), TARGET=target, ATTACH_TIME=str(int(time.time())))
        if mode != "template":
            disk["ATTACH"] = "YES"
        tmpl.add("DISK", disk)
        vm.template = tmpl.dumps()
        s.execute(update(Image).where(col(Image.id) == image.id).values(
            running_vms=col(Image.running_vms) + 1, state=IMAGE_USED))
        vm_log(s, vm_id, f"Attaching image {image.name} (id {image.id}) as disk {disk_id} "
               f"on {target}")
        _queue(s, vm, mode, Step.ATTACH, Event.ATTACH)
    cloud.wakeups.notify(DISPATCHER)
    return disk_id


def detach_disk(cloud: Cloud, caller: Caller, *, vm_id: int, disk_id: int) -> None:
    with cloud.session() as s:
        vm = fetch(s, VM, vm_id, caller, "VM", lock=True)
        mode = _mode(s, vm, "detach")
        tmpl = template.parse(vm.template)
        disk = _disk(tmpl, vm_id, disk_id)
        if mode == "template":
            _drop(s, vm, tmpl, disk)
        else:
            disk["DETACH"] = "YES"
            vm.template = tmpl.dumps()
            vm_log(s, vm_id, f"Detaching disk {disk_id} ({disk.get('TARGET', '')})")
            _queue(s, vm, mode, Step.DETACH, Event.DETACH)
        s.add(vm)
    cloud.wakeups.notify(DISPATCHER)


def save_disk(cloud: Cloud, caller: Caller, *, vm_id: int, disk_id: int, name: str,
              description: str = "", type_name: str = "OS") -> int:
    """A stopped VM's disk copied into a new image (LOCKED until the copy is done)."""
    if not name.strip():
        raise InvalidRequest("the new image needs a name")
    kinds = images.IMAGE_TYPES
    if type_name.upper() not in kinds:
        raise InvalidRequest(f"image type must be one of {', '.join(kinds)}")
    with cloud.session() as s:
        vm = fetch(s, VM, vm_id, caller, "VM", lock=True)
        if vm.state != VmState.STOPPED:
            raise InvalidState(state_name(vm.state, vm.lcm_state), "save a disk of (stop it first)")
        _no_disk_work(s, vm)
        tmpl = template.parse(vm.template)
        disk = _disk(tmpl, vm_id, disk_id)
        if disk.get("TYPE", "DISK").upper() not in ("DISK", "FS"):
            raise InvalidRequest(f"disk {disk_id} is a {disk.get('TYPE')}; only disks are saved")
        if s.exec(select(Image.id).where(Image.uid == caller.uid, Image.name == name)).first():
            raise Conflict(f"you already have an image named {name}")
        origin = s.get(Image, int(disk["IMAGE_ID"])) if disk.get("IMAGE_ID", "").isdigit() else None
        ds = s.get(Datastore, origin.datastore_id if origin else 1)
        assert ds is not None
        source = f"{ds.base_path}/{uuid.uuid4().hex}"
        size = int(disk.get("SIZE") or 0) or (origin.size_mb if origin else 0)
        saved = template.Template([("NAME", name), ("SAVED_VM_ID", str(vm_id)),
                                   ("SAVED_DISK_ID", str(disk_id))])
        if description:
            saved.set("DESCRIPTION", description)
        image = Image(name=name, uid=caller.uid, gid=caller.gid, type=kinds[type_name.upper()],
                      state=IMAGE_LOCKED, source=source, size_mb=size,
                      fstype=origin.fstype if origin else "", datastore_id=ds.id or 1,
                      template=saved.dumps())
        s.add(image)
        s.flush()
        assert image.id is not None
        disk["SAVE_AS"], disk["SAVE_AS_SOURCE"] = str(image.id), source
        vm.template = tmpl.dumps()
        s.add(vm)
        vm_log(s, vm_id, f"Saving disk {disk_id} as image {name} (id {image.id})")
        _queue(s, vm, "stopped", Step.SAVE_DISK, None)
        image_id = image.id
    cloud.wakeups.notify(DISPATCHER)
    return image_id


def settle(session: Session, vm: VM, step: Step, ok: bool, error: str = "") -> None:
    """Record a disk step's outcome in the VM template and the images it touched."""
    if step not in DISK_STEPS:
        return
    tmpl = template.parse(vm.template)
    for disk in tmpl.vectors("DISK"):
        if step is Step.ATTACH and disk.get("ATTACH") == "YES":
            if ok:
                del disk["ATTACH"]
            else:
                _drop(session, vm, tmpl, disk)
                return
        elif step is Step.DETACH and disk.get("DETACH") == "YES":
            if ok:
                _drop(session, vm, tmpl, disk)
                return
            del disk["DETACH"]
        elif step is Step.SAVE_DISK and disk.get("SAVE_AS", "").isdigit():
            image = session.get(Image, int(disk["SAVE_AS"]), with_for_update=True)
            if image is not None:
                image.state = IMAGE_READY if ok else IMAGE_ERROR
                if not ok:
                    saved = template.parse(image.template)
                    saved.set("ERROR", error or "the disk could not be saved")
                    image.template = saved.dumps()
                session.add(image)
            del disk["SAVE_AS"]
            disk.pop("SAVE_AS_SOURCE", None)
    vm.template = tmpl.dumps()
    session.add(vm)


def disk_images(vm: VM) -> dict[int, dict[str, str]]:
    """IMAGE_ID -> DISK vector of each image-backed disk of the VM."""
    found: dict[int, dict[str, str]] = {}
    for disk in template.parse(vm.template).vectors("DISK"):
        if disk.get("IMAGE_ID", "").isdigit():
            found[int(disk["IMAGE_ID"])] = disk
    return found


# --- helpers ---

def _mode(session: Session, vm: VM, verb: str) -> str:
    """How a disk changes on this VM now: "running" (hotplug), "stopped" (front-end files)
    or "template" (not deployed: nothing exists anywhere yet)."""
    placed = last_history(session, vm.id) if vm.id is not None else None
    host = session.get(Host, placed.host_id) if placed is not None else None
    if host is not None and bursting.public_host(host):
        if vm.state in (VmState.ACTIVE, VmState.STOPPED, VmState.SUSPENDED):
            raise InvalidRequest(f"VM {vm.id} runs in public cloud host {host.name}: its "
                                 "disks are the instance's (EC2 volumes are not attached "
                                 f"through Nubo); cannot {verb} a disk")
    if vm.state == VmState.ACTIVE and vm.lcm_state == LcmState.RUNNING:
        return "running"
    if vm.state == VmState.STOPPED:
        _no_disk_work(session, vm)
        return "stopped"
    if vm.state in (VmState.PENDING, VmState.HOLD):
        assert vm.id is not None
        previous = last_history(session, vm.id)
        if previous is None or previous.reason != HistoryReason.STOP_RESUME:
            return "template"
    raise InvalidState(state_name(vm.state, vm.lcm_state), f"{verb} a disk")


def _no_disk_work(session: Session, vm: VM) -> None:
    busy = session.exec(select(Operation.step).where(
        Operation.vm_id == vm.id, col(Operation.status).in_(("pending", "running")),
        col(Operation.step).in_([s.value for s in DISK_STEPS]))).first()
    if busy is not None:
        raise Conflict(f"VM {vm.id} has a disk operation ({busy}) under way; try again soon")


def _queue(session: Session, vm: VM, mode: str, step: Step, event: Event | None) -> None:
    assert vm.id is not None
    if mode == "running" and event is not None:
        apply(session, vm, event)
        return
    session.add(vm)
    if mode == "stopped":
        history = last_history(session, vm.id)
        session.add(Operation(vm_id=vm.id, step=step.value,
                              seq=history.seq if history is not None else -1))
        vm_log(session, vm.id, f"Queued driver work: {step.value}")


def _disk(tmpl: template.Template, vm_id: int, disk_id: int) -> dict[str, str]:
    for disk in tmpl.vectors("DISK"):
        if disk.get("DISK_ID") == str(disk_id):
            if any(disk.get(flag) for flag in ("ATTACH", "DETACH", "SAVE_AS")):
                raise Conflict(f"disk {disk_id} of VM {vm_id} is being changed; try again soon")
            return disk
    raise NotFound("disk", f"{disk_id} of VM {vm_id}")


def _drop(session: Session, vm: VM, tmpl: template.Template, disk: dict[str, str]) -> None:
    """Remove a disk from the VM and release its image."""
    tmpl.attrs = [(n, v) for n, v in tmpl.attrs if v is not disk]
    vm.template = tmpl.dumps()
    session.add(vm)
    # a DONE VM released all its images when it ended
    if disk.get("IMAGE_ID", "").isdigit() and vm.state != VmState.DONE:
        release_image(session, int(disk["IMAGE_ID"]))
    assert vm.id is not None
    vm_log(session, vm.id, f"Disk {disk.get('DISK_ID')} ({disk.get('TARGET', '')}) removed")


def _reserve_disk_id(tmpl: template.Template) -> int:
    """The next DISK_ID; the context CD keeps the id it was given at creation."""
    disks = tmpl.vectors("DISK")
    context = tmpl.vector("CONTEXT")
    used = [int(d["DISK_ID"]) for d in disks if d.get("DISK_ID", "").isdigit()]
    if context is not None:
        if not context.get("DISK_ID", "").isdigit():
            context["DISK_ID"] = str(len(disks))  # where the dispatcher put it
        used.append(int(context["DISK_ID"]))
    return max(used, default=-1) + 1


def _free_target(disks: list[dict[str, str]]) -> str:
    taken = {d.get("TARGET", "") for d in disks}
    prefix = next((t[:2] for t in sorted(taken) if len(t) == 3), "hd")
    for letter in "bcdefghijklmnopqrstuvwxyz":
        if prefix + letter not in taken:
            return prefix + letter
    raise Conflict("the VM has no free disk target left")


def holders(cloud: Cloud, caller: Caller) -> dict[int, tuple[VM, dict[str, str]]]:
    """IMAGE_ID -> (VM, DISK) for every image a live VM of the caller uses as a disk."""
    found: dict[int, tuple[VM, dict[str, str]]] = {}
    with cloud.session() as s:
        rows = s.exec(select(VM).where(VM.uid == caller.uid, col(VM.state) != VmState.DONE)
                      .order_by(col(VM.id)))
        for vm in rows:
            for image_id, disk in disk_images(vm).items():
                found[image_id] = (vm, disk)
    return found
