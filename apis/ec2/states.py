"""The core's VM states as EC2 instance states, in one table (reference §2.12)."""

from __future__ import annotations

from core.lifecycle import LcmState, VmState

PENDING = (0, "pending")
RUNNING = (16, "running")
SHUTTING_DOWN = (32, "shutting-down")
TERMINATED = (48, "terminated")
STOPPING = (64, "stopping")
STOPPED = (80, "stopped")

BY_STATE: dict[VmState, tuple[int, str]] = {
    VmState.INIT: PENDING,
    VmState.PENDING: PENDING,
    VmState.HOLD: PENDING,
    VmState.STOPPED: STOPPED,
    VmState.SUSPENDED: STOPPED,
    VmState.DONE: TERMINATED,
    VmState.FAILED: TERMINATED,
}
BY_LCM: dict[LcmState, tuple[int, str]] = {
    LcmState.LCM_INIT: PENDING,
    LcmState.PROLOG: PENDING,
    LcmState.BOOT: PENDING,
    LcmState.PROLOG_RESUME: PENDING,
    LcmState.PROLOG_MIGRATE: PENDING,
    LcmState.RUNNING: RUNNING,
    LcmState.MIGRATE: RUNNING,
    LcmState.UNKNOWN: RUNNING,
    LcmState.HOTPLUG: RUNNING,
    LcmState.SAVE_MIGRATE: RUNNING,
    LcmState.SAVE_STOP: STOPPING,
    LcmState.SAVE_SUSPEND: STOPPING,
    LcmState.EPILOG_STOP: STOPPING,
    LcmState.SHUTDOWN: SHUTTING_DOWN,
    LcmState.CANCEL: SHUTTING_DOWN,
    LcmState.EPILOG: SHUTTING_DOWN,
    LcmState.CLEANUP: SHUTTING_DOWN,
    LcmState.FAILURE: SHUTTING_DOWN,
}


def instance_state(state: int, lcm: int) -> tuple[int, str]:
    """(code, name) of a VM in (state, lcm_state)."""
    if state == VmState.ACTIVE:
        return BY_LCM[LcmState(lcm)]
    return BY_STATE[VmState(state)]
