"""Re-applying a running VM's network filtering when what it depends on changes: a rule
of one of its security groups, the members of a group its rules name as peer, or the
Elastic IP associated with it.

The network driver's `update_sg` action (OpenNebula 5's name) runs on the VM's host with
the VM's current document; it replaces the rules `post` made. A VM that is not running
on a host now needs nothing: its next boot runs `post` with the current rules.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session, col, select

from core.lifecycle import LcmState, Step, VmState
from core.models import VM, History, Operation
from core.service.context import DISPATCHER, notify_after_commit, vm_log


def request(session: Session, vm_ids: Iterable[int], reason: str) -> list[int]:
    """Queue an `update_sg` for each of these VMs that is RUNNING and has none pending;
    returns the VMs queued. The dispatcher is woken once the caller commits."""
    wanted = sorted(set(vm_ids))
    if not wanted:
        return []
    running = session.exec(select(VM).where(
        col(VM.id).in_(wanted), VM.state == VmState.ACTIVE,
        VM.lcm_state == LcmState.RUNNING)).all()
    pending = set(session.exec(select(Operation.vm_id).where(
        col(Operation.vm_id).in_(wanted), Operation.step == Step.UPDATE_SG.value,
        Operation.status == "pending")).all())
    queued = []
    for vm in running:
        assert vm.id is not None
        if vm.id in pending:
            continue
        seq = session.exec(select(History.seq).where(History.vm_id == vm.id)
                           .order_by(col(History.seq).desc())).first()
        session.add(Operation(vm_id=vm.id, step=Step.UPDATE_SG.value,
                              seq=seq if seq is not None else -1))
        vm_log(session, vm.id, f"Queued driver work: {Step.UPDATE_SG.value} ({reason})")
        queued.append(vm.id)
    if queued:
        notify_after_commit(session, DISPATCHER)
    return queued
