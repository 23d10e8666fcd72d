"""Applying a lifecycle event to a VM row, with everything it implies, in the caller's
transaction: the new states, the driver work (an Operation), host capacity, history
timestamps and the VM log. The scheduler, the dispatcher, the monitor and the user
actions all change VM states through `apply`."""

from __future__ import annotations

from sqlmodel import Session, col, select, update

from core import hooks, lifecycle, template
from core.lifecycle import LcmState, VmState
from core.models import IMAGE_READY, IMAGE_USED, VM, History, Host, Image, Operation, now
from core.service import leases, sgrules
from core.service.context import vm_log

# When each LCM state is entered, which history timestamp starts or ends
_STAMPS: dict[LcmState, tuple[str, ...]] = {
    LcmState.PROLOG: ("pstime",),
    LcmState.PROLOG_RESUME: ("pstime",),
    LcmState.BOOT: ("petime", "rstime"),
    LcmState.EPILOG: ("retime", "estime"),
    LcmState.EPILOG_STOP: ("retime", "estime"),
}


def last_history(session: Session, vm_id: int) -> History | None:
    return session.exec(
        select(History).where(History.vm_id == vm_id).order_by(col(History.seq).desc())
    ).first()


def apply(session: Session, vm: VM, event: str, *, message: str | None = None) -> lifecycle.Transition:
    """Move `vm` by `event`; raises InvalidState if the table has no such row."""
    old_state, old_lcm = vm.state, vm.lcm_state
    move = lifecycle.transition(vm.state, vm.lcm_state, event)
    assert vm.id is not None
    history = last_history(session, vm.id) if vm.host_id is not None else None
    _account(session, vm, old_state, move.state)
    if old_state == VmState.ACTIVE and old_lcm in lifecycle.MIGRATING and history is not None:
        _end_migration(session, vm, history, event)
    vm.state, vm.lcm_state = int(move.state), int(move.lcm)
    stamp = now()
    if history is not None:
        for attr in _STAMPS.get(move.lcm, ()):
            setattr(history, attr, stamp)
        if move.state in (VmState.DONE, VmState.FAILED, VmState.STOPPED, VmState.PENDING):
            if not history.etime:
                history.etime = stamp
            if old_lcm in (LcmState.EPILOG, LcmState.EPILOG_STOP):
                history.eetime = stamp
        session.add(history)
    if move.state == VmState.DONE:
        vm.etime = stamp
        _release_images(session, vm)
        leases.release_leases(session, vm)
    if move.state in sgrules.ENDED and old_state not in sgrules.ENDED:
        sgrules.membership_changed(session, vm, "left")
    if move.state == VmState.DONE:
        sgrules.leave(session, vm)
    if message is not None:
        vm.message = message
    elif move.state in (VmState.ACTIVE, VmState.PENDING, VmState.HOLD) and old_state != move.state:
        vm.message = ""
    if move.step is not None:
        seq = history.seq if history is not None else -1
        session.add(Operation(vm_id=vm.id, step=move.step.value, seq=seq))
    session.add(vm)
    before = lifecycle.state_name(old_state, old_lcm)
    after = lifecycle.state_name(vm.state, vm.lcm_state)
    if before != after:
        line = f"New state is {after} (was {before}, on {event})"
        vm_log(session, vm.id, line, "E" if move.state == VmState.FAILED else "I")
        entered = hooks.vm_event(vm.state, vm.lcm_state)
        hooks.fire_vm(session, vm, [entered] if entered else [], prev_state=old_state,
                      prev_lcm=old_lcm)
    if move.step is not None:
        vm_log(session, vm.id, f"Queued driver work: {move.step.value}")
    return move


def _account(session: Session, vm: VM, old: int, new: int) -> None:
    """Reserve or release the host's capacity when the VM starts or stops holding it."""
    if vm.host_id is None or lifecycle.holds_host(old) == lifecycle.holds_host(new):
        return
    reserve(session, vm, vm.host_id, 1 if lifecycle.holds_host(new) else -1)


def reserve(session: Session, vm: VM, host_id: int, sign: int) -> None:
    """Add (sign 1) or remove (-1) the VM's capacity on a host.

    One UPDATE with relative values, so concurrent placements and releases on the same
    host never lose each other's change."""
    session.execute(
        update(Host).where(col(Host.id) == host_id).values(
            cpu_usage=col(Host.cpu_usage) + sign * round(vm.cpu * 100),
            mem_usage=col(Host.mem_usage) + sign * vm.memory * 1024,
            running_vms=col(Host.running_vms) + sign,
        ).execution_options(synchronize_session="fetch")
    )


def previous_history(session: Session, history: History) -> History | None:
    """The placement before `history`: the host a migrating VM is leaving."""
    return session.exec(
        select(History).where(History.vm_id == history.vm_id, col(History.seq) < history.seq)
        .order_by(col(History.seq).desc())
    ).first()


def _end_migration(session: Session, vm: VM, target: History, event: str) -> None:
    """A migrating VM holds capacity on both hosts. When the guest has left the source,
    the source's is released; when the migration failed with the guest still on the
    source, the target's is, and a new placement on the source records where it runs.
    Anything else (finalize, resubmit) releases the source and leaves its record open
    (no etime): the cleanup step then stops whatever is left of the VM there too."""
    source = previous_history(session, target)
    if source is None:
        return
    stamp = now()
    done = event in (lifecycle.success(lifecycle.Step.SAVE_MIGRATE),
                     lifecycle.success(lifecycle.Step.MIGRATE))
    failed = event in (lifecycle.failure(lifecycle.Step.SAVE_MIGRATE),
                       lifecycle.failure(lifecycle.Step.MIGRATE))
    if done or failed:
        source.etime = source.retime = stamp
        session.add(source)
    if not failed:
        reserve(session, vm, source.host_id, -1)
        return
    reserve(session, vm, target.host_id, -1)
    target.etime, target.reason = stamp, lifecycle.HistoryReason.ERROR
    session.add(target)
    back = History(vm_id=target.vm_id, seq=target.seq + 1, host_id=source.host_id,
                   hostname=source.hostname, vmm_mad=source.vmm_mad, vnm_mad=source.vnm_mad,
                   tm_mad=source.tm_mad, ds_location=source.ds_location, stime=stamp,
                   rstime=stamp)
    session.add(back)
    vm.host_id = source.host_id
    vm_log(session, target.vm_id, f"Migration to {target.hostname} failed: the VM runs on "
           f"{source.hostname} again (history seq {back.seq})", "E")


def place(session: Session, vm: VM, host: Host, event: str, ds_location: str,
          tm_mad: str) -> lifecycle.Transition:
    """Record a placement (a new History row) and apply the deploy event."""
    assert vm.id is not None and host.id is not None
    previous = last_history(session, vm.id)
    seq = 0 if previous is None else previous.seq + 1
    session.add(
        History(
            vm_id=vm.id, seq=seq, host_id=host.id, hostname=host.name, vmm_mad=host.vmm_mad,
            vnm_mad=host.vnm_mad, tm_mad=tm_mad, ds_location=ds_location,
        )
    )
    vm.host_id = host.id
    session.flush()
    vm_log(session, vm.id, f"Placed on host {host.name} (id {host.id}), history seq {seq}")
    return apply(session, vm, event)


def deploy_event(session: Session, vm: VM) -> str:
    """DEPLOY, or DEPLOY_RESUME when the VM's files wait on the front-end after a stop."""
    assert vm.id is not None
    previous = last_history(session, vm.id)
    if previous is not None and previous.reason == lifecycle.HistoryReason.STOP_RESUME:
        return lifecycle.Event.DEPLOY_RESUME
    return lifecycle.Event.DEPLOY


def _release_images(session: Session, vm: VM) -> None:
    """A VM that is DONE no longer uses its images."""
    for disk in template.parse(vm.template).vectors("DISK"):
        if disk.get("IMAGE_ID", "").isdigit():
            release_image(session, int(disk["IMAGE_ID"]))


def release_image(session: Session, image_id: int) -> None:
    """One VM less uses the image; the last one makes it READY again."""
    session.execute(update(Image).where(col(Image.id) == image_id).values(
        running_vms=col(Image.running_vms) - 1))
    session.execute(update(Image).where(
        col(Image.id) == image_id, col(Image.running_vms) <= 0,
        col(Image.state) == IMAGE_USED).values(running_vms=0, state=IMAGE_READY))
