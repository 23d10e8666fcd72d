"""VM and host states with OpenNebula 3.4's numbers, and the one VM transition table.

Every change of a VM's (state, lcm_state) goes through `transition()`. A row says: in this
state, this event leads to that state and implies this driver step (an Operation the
dispatcher will run). Driver outcomes come back as `<step>_success` / `<step>_failure`
events and are looked up in the same table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from core.errors import InvalidState


class VmState(IntEnum):
    INIT = 0
    PENDING = 1
    HOLD = 2
    ACTIVE = 3
    STOPPED = 4
    SUSPENDED = 5
    DONE = 6
    FAILED = 7


class LcmState(IntEnum):
    LCM_INIT = 0
    PROLOG = 1
    BOOT = 2
    RUNNING = 3
    MIGRATE = 4
    SAVE_STOP = 5
    SAVE_SUSPEND = 6
    SAVE_MIGRATE = 7
    PROLOG_MIGRATE = 8
    PROLOG_RESUME = 9
    EPILOG_STOP = 10
    EPILOG = 11
    SHUTDOWN = 12
    CANCEL = 13
    FAILURE = 14
    CLEANUP = 15
    UNKNOWN = 16
    HOTPLUG = 17  # OpenNebula 3.6+: a disk is being attached or detached


class HostState(IntEnum):
    INIT = 0
    MONITORING = 1
    MONITORED = 2
    ERROR = 3
    DISABLED = 4


class HistoryReason(IntEnum):
    NONE = 0
    ERROR = 1
    STOP_RESUME = 2
    USER = 3
    CANCEL = 4


# onevm's four-letter short states, used by the CLI and the logs
SHORT_STATE = {
    VmState.INIT: "init",
    VmState.PENDING: "pend",
    VmState.HOLD: "hold",
    VmState.STOPPED: "stop",
    VmState.SUSPENDED: "susp",
    VmState.DONE: "done",
    VmState.FAILED: "fail",
}
SHORT_LCM = {
    LcmState.LCM_INIT: "init",
    LcmState.PROLOG: "prol",
    LcmState.BOOT: "boot",
    LcmState.RUNNING: "runn",
    LcmState.MIGRATE: "migr",
    LcmState.SAVE_STOP: "save",
    LcmState.SAVE_SUSPEND: "save",
    LcmState.SAVE_MIGRATE: "save",
    LcmState.PROLOG_MIGRATE: "migr",
    LcmState.PROLOG_RESUME: "prol",
    LcmState.EPILOG_STOP: "epil",
    LcmState.EPILOG: "epil",
    LcmState.SHUTDOWN: "shut",
    LcmState.CANCEL: "shut",
    LcmState.FAILURE: "fail",
    LcmState.CLEANUP: "clea",
    LcmState.UNKNOWN: "unkn",
    LcmState.HOTPLUG: "hotp",
}
SHORT_HOST = {
    HostState.INIT: "init",
    HostState.MONITORING: "update",
    HostState.MONITORED: "on",
    HostState.ERROR: "err",
    HostState.DISABLED: "off",
}


class Step(StrEnum):
    """Driver work an Operation carries out; see core.dispatcher for what each runs."""

    PROLOG = "prolog"  # TM: clone/ln/mkimage/mkswap each disk, context ISO
    PROLOG_RESUME = "prolog_resume"  # TM: mv the VM dir back from the front-end
    BOOT = "boot"  # VMM deploy
    RESTORE = "restore"  # VMM restore from the checkpoint
    SHUTDOWN = "shutdown"  # VMM shutdown
    CANCEL = "cancel"  # VMM cancel
    SAVE_STOP = "save_stop"  # VMM save, then epilog_stop
    SAVE_SUSPEND = "save_suspend"  # VMM save, VM stays on the host
    EPILOG = "epilog"  # TM: mvds SAVE=YES disks, delete the VM dir
    EPILOG_STOP = "epilog_stop"  # TM: mv the VM dir to the front-end
    REBOOT = "reboot"  # VMM reboot
    CLEANUP = "cleanup"  # VMM cancel if it may still run, TM delete the VM dir
    ATTACH = "attach"  # TM clone/ln the disk marked ATTACH=YES, VMM attach_disk if running
    DETACH = "detach"  # VMM detach_disk if running, TM mvds (persistent) and delete
    SAVE_DISK = "save_disk"  # TM cpds: a stopped VM's disk (SAVE_AS) into a new image
    SAVE_MIGRATE = "save_migrate"  # VMM save on the source host (cold migration)
    PROLOG_MIGRATE = "prolog_migrate"  # TM: mv the VM dir from the source to the target host
    MIGRATE = "migrate"  # VMM live migration: the target receives, the source sends
    RECLAIM = "reclaim"  # VMM cancel, TM delete on a host back from ERROR: what the VM left
    UPDATE_SG = "update_sg"  # VNM update_sg: a running VM's filtering changed (core.service.refilter)


class Event(StrEnum):
    # user and scheduler actions (OpenNebula 3.4's API action names, plus deploy)
    DEPLOY = "deploy"
    DEPLOY_RESUME = "deploy_resume"  # deploy of a VM that was stopped: its files come back
    HOLD = "hold"
    RELEASE = "release"
    SHUTDOWN = "shutdown"
    CANCEL = "cancel"
    STOP = "stop"
    SUSPEND = "suspend"
    RESUME = "resume"
    RESTART = "restart"
    REBOOT = "reboot"
    FINALIZE = "finalize"
    RESUBMIT = "resubmit"
    ATTACH = "attach"  # a disk to a running VM (hotplug)
    DETACH = "detach"
    MIGRATE = "migrate"  # cold: save, move the files, restore on the target host
    LIVE_MIGRATE = "live_migrate"  # the running guest moves without stopping
    # what the VMM poll reports (state letters a, p, e, d)
    POLL_RUNNING = "poll_running"
    POLL_SUSPENDED = "poll_suspended"
    POLL_ERROR = "poll_error"
    POLL_MISSING = "poll_missing"


USER_ACTIONS = frozenset(
    {
        Event.HOLD,
        Event.RELEASE,
        Event.SHUTDOWN,
        Event.CANCEL,
        Event.STOP,
        Event.SUSPEND,
        Event.RESUME,
        Event.RESTART,
        Event.REBOOT,
        Event.FINALIZE,
        Event.RESUBMIT,
        Event.ATTACH,
        Event.DETACH,
        Event.MIGRATE,
        Event.LIVE_MIGRATE,
    }
)


def success(step: Step) -> str:
    return f"{step.value}_success"


def failure(step: Step) -> str:
    return f"{step.value}_failure"


@dataclass(frozen=True)
class Transition:
    state: VmState
    lcm: LcmState
    step: Step | None = None


V, L, S, E = VmState, LcmState, Step, Event
A = V.ACTIVE
_I = L.LCM_INIT

# (state, lcm_state, event) -> (state, lcm_state, driver step or None)
TABLE: dict[tuple[VmState, LcmState, str], Transition] = {
    # --- user and scheduler actions ---
    (V.PENDING, _I, E.HOLD): Transition(V.HOLD, _I),
    (V.HOLD, _I, E.RELEASE): Transition(V.PENDING, _I),
    (V.PENDING, _I, E.DEPLOY): Transition(A, L.PROLOG, S.PROLOG),
    (V.PENDING, _I, E.DEPLOY_RESUME): Transition(A, L.PROLOG_RESUME, S.PROLOG_RESUME),
    (A, L.RUNNING, E.SHUTDOWN): Transition(A, L.SHUTDOWN, S.SHUTDOWN),
    (A, L.RUNNING, E.CANCEL): Transition(A, L.CANCEL, S.CANCEL),
    (A, L.UNKNOWN, E.CANCEL): Transition(A, L.CANCEL, S.CANCEL),
    (A, L.RUNNING, E.STOP): Transition(A, L.SAVE_STOP, S.SAVE_STOP),
    (A, L.RUNNING, E.SUSPEND): Transition(A, L.SAVE_SUSPEND, S.SAVE_SUSPEND),
    (A, L.RUNNING, E.REBOOT): Transition(A, L.RUNNING, S.REBOOT),
    (A, L.BOOT, E.RESTART): Transition(A, L.BOOT, S.BOOT),
    (A, L.UNKNOWN, E.RESTART): Transition(A, L.BOOT, S.BOOT),
    (V.STOPPED, _I, E.RESUME): Transition(V.PENDING, _I),
    (V.SUSPENDED, _I, E.RESUME): Transition(A, L.BOOT, S.RESTORE),
    (A, L.RUNNING, E.ATTACH): Transition(A, L.HOTPLUG, S.ATTACH),
    (A, L.RUNNING, E.DETACH): Transition(A, L.HOTPLUG, S.DETACH),
    (A, L.RUNNING, E.MIGRATE): Transition(A, L.SAVE_MIGRATE, S.SAVE_MIGRATE),
    (A, L.RUNNING, E.LIVE_MIGRATE): Transition(A, L.MIGRATE, S.MIGRATE),
    # finalize: DONE at once; whatever is left on a host is cleaned up behind it
    (V.INIT, _I, E.FINALIZE): Transition(V.DONE, _I),
    (V.PENDING, _I, E.FINALIZE): Transition(V.DONE, _I),
    (V.HOLD, _I, E.FINALIZE): Transition(V.DONE, _I),
    (V.STOPPED, _I, E.FINALIZE): Transition(V.DONE, _I, S.CLEANUP),
    (V.SUSPENDED, _I, E.FINALIZE): Transition(V.DONE, _I, S.CLEANUP),
    (V.FAILED, _I, E.FINALIZE): Transition(V.DONE, _I, S.CLEANUP),
    # resubmit (3.4): back to PENDING; an active VM is cleaned from its host first
    (V.HOLD, _I, E.RESUBMIT): Transition(V.PENDING, _I),
    (V.STOPPED, _I, E.RESUBMIT): Transition(V.PENDING, _I),
    (V.FAILED, _I, E.RESUBMIT): Transition(V.PENDING, _I, S.CLEANUP),
    # --- driver outcomes ---
    (A, L.PROLOG, success(S.PROLOG)): Transition(A, L.BOOT, S.BOOT),
    (A, L.PROLOG, failure(S.PROLOG)): Transition(V.FAILED, _I),
    (A, L.PROLOG_RESUME, success(S.PROLOG_RESUME)): Transition(A, L.BOOT, S.RESTORE),
    (A, L.PROLOG_RESUME, failure(S.PROLOG_RESUME)): Transition(V.FAILED, _I),
    (A, L.BOOT, success(S.BOOT)): Transition(A, L.RUNNING),
    (A, L.BOOT, failure(S.BOOT)): Transition(V.FAILED, _I),
    (A, L.BOOT, success(S.RESTORE)): Transition(A, L.RUNNING),
    (A, L.BOOT, failure(S.RESTORE)): Transition(V.FAILED, _I),
    (A, L.SHUTDOWN, success(S.SHUTDOWN)): Transition(A, L.EPILOG, S.EPILOG),
    (A, L.SHUTDOWN, failure(S.SHUTDOWN)): Transition(A, L.RUNNING),
    (A, L.CANCEL, success(S.CANCEL)): Transition(A, L.EPILOG, S.EPILOG),
    (A, L.CANCEL, failure(S.CANCEL)): Transition(A, L.RUNNING),
    (A, L.SAVE_STOP, success(S.SAVE_STOP)): Transition(A, L.EPILOG_STOP, S.EPILOG_STOP),
    (A, L.SAVE_STOP, failure(S.SAVE_STOP)): Transition(A, L.RUNNING),
    (A, L.SAVE_SUSPEND, success(S.SAVE_SUSPEND)): Transition(V.SUSPENDED, _I),
    (A, L.SAVE_SUSPEND, failure(S.SAVE_SUSPEND)): Transition(A, L.RUNNING),
    (A, L.EPILOG, success(S.EPILOG)): Transition(V.DONE, _I),
    (A, L.EPILOG, failure(S.EPILOG)): Transition(V.FAILED, _I),
    (A, L.EPILOG_STOP, success(S.EPILOG_STOP)): Transition(V.STOPPED, _I),
    (A, L.EPILOG_STOP, failure(S.EPILOG_STOP)): Transition(V.FAILED, _I),
    (A, L.RUNNING, success(S.REBOOT)): Transition(A, L.RUNNING),
    (A, L.RUNNING, failure(S.REBOOT)): Transition(A, L.RUNNING),
    # migration: a failure before the guest left the source leaves it running there
    (A, L.SAVE_MIGRATE, success(S.SAVE_MIGRATE)): Transition(A, L.PROLOG_MIGRATE,
                                                             S.PROLOG_MIGRATE),
    (A, L.SAVE_MIGRATE, failure(S.SAVE_MIGRATE)): Transition(A, L.RUNNING),
    (A, L.PROLOG_MIGRATE, success(S.PROLOG_MIGRATE)): Transition(A, L.BOOT, S.RESTORE),
    (A, L.PROLOG_MIGRATE, failure(S.PROLOG_MIGRATE)): Transition(V.FAILED, _I),
    (A, L.MIGRATE, success(S.MIGRATE)): Transition(A, L.RUNNING),
    (A, L.MIGRATE, failure(S.MIGRATE)): Transition(A, L.RUNNING),
    (A, L.HOTPLUG, success(S.ATTACH)): Transition(A, L.RUNNING),
    (A, L.HOTPLUG, failure(S.ATTACH)): Transition(A, L.RUNNING),
    (A, L.HOTPLUG, success(S.DETACH)): Transition(A, L.RUNNING),
    (A, L.HOTPLUG, failure(S.DETACH)): Transition(A, L.RUNNING),
    (A, L.CLEANUP, success(S.CLEANUP)): Transition(V.PENDING, _I),
    (A, L.CLEANUP, failure(S.CLEANUP)): Transition(V.PENDING, _I),
    # --- what the VMM poll says (only acted on in RUNNING or UNKNOWN) ---
    (A, L.RUNNING, E.POLL_MISSING): Transition(A, L.UNKNOWN),
    (A, L.UNKNOWN, E.POLL_RUNNING): Transition(A, L.RUNNING),
    (A, L.RUNNING, E.POLL_SUSPENDED): Transition(V.SUSPENDED, _I),
    (A, L.UNKNOWN, E.POLL_SUSPENDED): Transition(V.SUSPENDED, _I),
    (A, L.RUNNING, E.POLL_ERROR): Transition(V.FAILED, _I),
    (A, L.UNKNOWN, E.POLL_ERROR): Transition(V.FAILED, _I),
}

# resubmit of an ACTIVE VM, whatever its LCM state: CLEANUP, then PENDING
for _lcm in LcmState:
    if _lcm not in (L.LCM_INIT, L.CLEANUP):
        TABLE[(A, _lcm, E.RESUBMIT)] = Transition(A, L.CLEANUP, S.CLEANUP)
        TABLE[(A, _lcm, E.FINALIZE)] = Transition(V.DONE, _I, S.CLEANUP)
TABLE[(A, L.CLEANUP, E.FINALIZE)] = Transition(V.DONE, _I)


# The LCM state an ACTIVE VM is in while a step's work is due. A queued step whose VM has
# moved on (finalized, resubmitted) is skipped; CLEANUP runs whatever the state. Disk
# steps also run on a STOPPED VM (its files wait on the front-end; no state change).
STEP_LCM: dict[Step, LcmState | None] = {
    Step.PROLOG: L.PROLOG,
    Step.PROLOG_RESUME: L.PROLOG_RESUME,
    Step.BOOT: L.BOOT,
    Step.RESTORE: L.BOOT,
    Step.SHUTDOWN: L.SHUTDOWN,
    Step.CANCEL: L.CANCEL,
    Step.SAVE_STOP: L.SAVE_STOP,
    Step.SAVE_SUSPEND: L.SAVE_SUSPEND,
    Step.EPILOG: L.EPILOG,
    Step.EPILOG_STOP: L.EPILOG_STOP,
    Step.REBOOT: L.RUNNING,
    Step.CLEANUP: None,
    Step.ATTACH: L.HOTPLUG,
    Step.DETACH: L.HOTPLUG,
    Step.SAVE_DISK: L.LCM_INIT,  # never while ACTIVE: only on a STOPPED VM
    Step.SAVE_MIGRATE: L.SAVE_MIGRATE,
    Step.PROLOG_MIGRATE: L.PROLOG_MIGRATE,
    Step.MIGRATE: L.MIGRATE,
    Step.RECLAIM: None,  # whatever the VM does now: it is about a placement it left
    Step.UPDATE_SG: L.RUNNING,
}
# The steps that act on the host a VM is leaving (the placement before the last one)
SOURCE_STEPS = frozenset({Step.SAVE_MIGRATE, Step.MIGRATE})
MIGRATING = frozenset({LcmState.SAVE_MIGRATE, LcmState.MIGRATE})
DISK_STEPS = frozenset({Step.ATTACH, Step.DETACH, Step.SAVE_DISK})


def step_is_due(step: Step, state: int, lcm: int) -> bool:
    """Whether a VM in (state, lcm) still waits for `step`."""
    if step in DISK_STEPS and state == VmState.STOPPED:
        return True
    expected = STEP_LCM[step]
    return expected is None or (state == VmState.ACTIVE and lcm == expected)


def state_name(state: int, lcm: int) -> str:
    """`ACTIVE/RUNNING` for active VMs, `PENDING` otherwise."""
    vm_state = VmState(state)
    if vm_state is VmState.ACTIVE:
        return f"ACTIVE/{LcmState(lcm).name}"
    return vm_state.name


def short_state(state: int, lcm: int) -> str:
    vm_state = VmState(state)
    if vm_state is VmState.ACTIVE:
        return SHORT_LCM[LcmState(lcm)]
    return SHORT_STATE[vm_state]


def transition(state: int, lcm: int, event: str) -> Transition:
    """The transition for `event` in (state, lcm); InvalidState if there is none."""
    found = TABLE.get((VmState(state), LcmState(lcm), event))
    if found is None:
        raise InvalidState(state_name(state, lcm), event)
    return found


def holds_host(state: int) -> bool:
    """Whether a VM in this state keeps its host's capacity reserved."""
    return state in (VmState.ACTIVE, VmState.SUSPENDED)


def step_event(step: Step, ok: bool) -> str:
    return success(step) if ok else failure(step)
