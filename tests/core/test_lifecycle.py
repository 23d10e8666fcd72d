"""Every (state, event) pair against OpenNebula 3.4's documented behaviour.

The expectations below are written from the reference (§6), independently of the
table in core/lifecycle.py, so a wrong row shows up as a mismatch."""

from __future__ import annotations

import itertools

import pytest

from core.errors import InvalidState
from core.lifecycle import (
    TABLE,
    USER_ACTIONS,
    Event,
    LcmState,
    Step,
    VmState,
    holds_host,
    state_name,
    step_event,
    transition,
)

V, L, E, S = VmState, LcmState, Event, Step
I = L.LCM_INIT
ACTIVE_LCM = [lcm for lcm in LcmState if lcm is not I]
ALL_STATES = [(s, I) for s in VmState if s is not V.ACTIVE] + [(V.ACTIVE, lcm) for lcm in ACTIVE_LCM]

# user action -> the states it is legal in, with the expected result
EXPECTED_USER = {
    E.HOLD: {(V.PENDING, I): (V.HOLD, I, None)},
    E.RELEASE: {(V.HOLD, I): (V.PENDING, I, None)},
    E.SHUTDOWN: {(V.ACTIVE, L.RUNNING): (V.ACTIVE, L.SHUTDOWN, S.SHUTDOWN)},
    E.CANCEL: {
        (V.ACTIVE, L.RUNNING): (V.ACTIVE, L.CANCEL, S.CANCEL),
        (V.ACTIVE, L.UNKNOWN): (V.ACTIVE, L.CANCEL, S.CANCEL),
    },
    E.STOP: {(V.ACTIVE, L.RUNNING): (V.ACTIVE, L.SAVE_STOP, S.SAVE_STOP)},
    E.SUSPEND: {(V.ACTIVE, L.RUNNING): (V.ACTIVE, L.SAVE_SUSPEND, S.SAVE_SUSPEND)},
    E.RESUME: {
        (V.STOPPED, I): (V.PENDING, I, None),
        (V.SUSPENDED, I): (V.ACTIVE, L.BOOT, S.RESTORE),
    },
    E.RESTART: {
        (V.ACTIVE, L.BOOT): (V.ACTIVE, L.BOOT, S.BOOT),
        (V.ACTIVE, L.UNKNOWN): (V.ACTIVE, L.BOOT, S.BOOT),
    },
    E.REBOOT: {(V.ACTIVE, L.RUNNING): (V.ACTIVE, L.RUNNING, S.REBOOT)},
    # disk hotplug (OpenNebula 3.6+); a stopped VM's disks change without a transition
    E.ATTACH: {(V.ACTIVE, L.RUNNING): (V.ACTIVE, L.HOTPLUG, S.ATTACH)},
    E.DETACH: {(V.ACTIVE, L.RUNNING): (V.ACTIVE, L.HOTPLUG, S.DETACH)},
    # migrate (oneadmin): cold through SAVE_MIGRATE, live through MIGRATE
    E.MIGRATE: {(V.ACTIVE, L.RUNNING): (V.ACTIVE, L.SAVE_MIGRATE, S.SAVE_MIGRATE)},
    E.LIVE_MIGRATE: {(V.ACTIVE, L.RUNNING): (V.ACTIVE, L.MIGRATE, S.MIGRATE)},
    E.FINALIZE: {
        **{(s, I): (V.DONE, I, None) for s in (V.INIT, V.PENDING, V.HOLD)},
        **{(s, I): (V.DONE, I, S.CLEANUP) for s in (V.STOPPED, V.SUSPENDED, V.FAILED)},
        **{(V.ACTIVE, lcm): (V.DONE, I, S.CLEANUP) for lcm in ACTIVE_LCM if lcm is not L.CLEANUP},
        (V.ACTIVE, L.CLEANUP): (V.DONE, I, None),
    },
    E.RESUBMIT: {
        (V.HOLD, I): (V.PENDING, I, None),
        (V.STOPPED, I): (V.PENDING, I, None),
        (V.FAILED, I): (V.PENDING, I, S.CLEANUP),
        **{(V.ACTIVE, lcm): (V.ACTIVE, L.CLEANUP, S.CLEANUP)
           for lcm in ACTIVE_LCM if lcm is not L.CLEANUP},
    },
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(ALL_STATES, sorted(USER_ACTIONS))))
def test_user_action(state: tuple[VmState, LcmState], event: Event) -> None:
    expected = EXPECTED_USER[event].get(state)
    if expected is None:
        with pytest.raises(InvalidState) as err:
            transition(state[0], state[1], event)
        assert state_name(*state) in str(err.value)
        assert event.value in str(err.value)
    else:
        move = transition(state[0], state[1], event)
        assert (move.state, move.lcm, move.step) == expected


# the deploy, shutdown, stop, suspend, cancel flows of reference §6, step by step
FLOWS = {
    "deploy": [(V.PENDING, I, E.DEPLOY), (V.ACTIVE, L.PROLOG, step_event(S.PROLOG, True)),
               (V.ACTIVE, L.BOOT, step_event(S.BOOT, True)), (V.ACTIVE, L.RUNNING, None)],
    "shutdown": [(V.ACTIVE, L.RUNNING, E.SHUTDOWN), (V.ACTIVE, L.SHUTDOWN, step_event(S.SHUTDOWN, True)),
                 (V.ACTIVE, L.EPILOG, step_event(S.EPILOG, True)), (V.DONE, I, None)],
    "cancel": [(V.ACTIVE, L.RUNNING, E.CANCEL), (V.ACTIVE, L.CANCEL, step_event(S.CANCEL, True)),
               (V.ACTIVE, L.EPILOG, step_event(S.EPILOG, True)), (V.DONE, I, None)],
    "stop": [(V.ACTIVE, L.RUNNING, E.STOP), (V.ACTIVE, L.SAVE_STOP, step_event(S.SAVE_STOP, True)),
             (V.ACTIVE, L.EPILOG_STOP, step_event(S.EPILOG_STOP, True)), (V.STOPPED, I, E.RESUME),
             (V.PENDING, I, E.DEPLOY_RESUME),
             (V.ACTIVE, L.PROLOG_RESUME, step_event(S.PROLOG_RESUME, True)),
             (V.ACTIVE, L.BOOT, step_event(S.RESTORE, True)), (V.ACTIVE, L.RUNNING, None)],
    "suspend": [(V.ACTIVE, L.RUNNING, E.SUSPEND),
                (V.ACTIVE, L.SAVE_SUSPEND, step_event(S.SAVE_SUSPEND, True)),
                (V.SUSPENDED, I, E.RESUME), (V.ACTIVE, L.BOOT, step_event(S.RESTORE, True)),
                (V.ACTIVE, L.RUNNING, None)],
    "migrate": [(V.ACTIVE, L.RUNNING, E.MIGRATE),
                (V.ACTIVE, L.SAVE_MIGRATE, step_event(S.SAVE_MIGRATE, True)),
                (V.ACTIVE, L.PROLOG_MIGRATE, step_event(S.PROLOG_MIGRATE, True)),
                (V.ACTIVE, L.BOOT, step_event(S.RESTORE, True)), (V.ACTIVE, L.RUNNING, None)],
    "live migrate": [(V.ACTIVE, L.RUNNING, E.LIVE_MIGRATE),
                     (V.ACTIVE, L.MIGRATE, step_event(S.MIGRATE, True)),
                     (V.ACTIVE, L.RUNNING, None)],
    "resubmit": [(V.ACTIVE, L.RUNNING, E.RESUBMIT), (V.ACTIVE, L.CLEANUP, step_event(S.CLEANUP, True)),
                 (V.PENDING, I, None)],
}


@pytest.mark.parametrize("flow", sorted(FLOWS))
def test_documented_flows(flow: str) -> None:
    steps = FLOWS[flow]
    for (state, lcm, event), (nstate, nlcm, _) in itertools.pairwise(steps):
        assert event is not None
        move = transition(state, lcm, event)
        assert (move.state, move.lcm) == (nstate, nlcm), (flow, state, lcm, event)


FAILURES = {
    (L.PROLOG, S.PROLOG): (V.FAILED, I),
    (L.PROLOG_RESUME, S.PROLOG_RESUME): (V.FAILED, I),
    (L.BOOT, S.BOOT): (V.FAILED, I),
    (L.BOOT, S.RESTORE): (V.FAILED, I),
    (L.EPILOG, S.EPILOG): (V.FAILED, I),
    (L.EPILOG_STOP, S.EPILOG_STOP): (V.FAILED, I),
    (L.SHUTDOWN, S.SHUTDOWN): (V.ACTIVE, L.RUNNING),
    (L.CANCEL, S.CANCEL): (V.ACTIVE, L.RUNNING),
    (L.SAVE_STOP, S.SAVE_STOP): (V.ACTIVE, L.RUNNING),
    (L.SAVE_SUSPEND, S.SAVE_SUSPEND): (V.ACTIVE, L.RUNNING),
    (L.RUNNING, S.REBOOT): (V.ACTIVE, L.RUNNING),
    (L.CLEANUP, S.CLEANUP): (V.PENDING, I),
    (L.HOTPLUG, S.ATTACH): (V.ACTIVE, L.RUNNING),
    (L.HOTPLUG, S.DETACH): (V.ACTIVE, L.RUNNING),
    # a migration that fails before the guest left its host leaves it running there
    (L.SAVE_MIGRATE, S.SAVE_MIGRATE): (V.ACTIVE, L.RUNNING),
    (L.MIGRATE, S.MIGRATE): (V.ACTIVE, L.RUNNING),
    (L.PROLOG_MIGRATE, S.PROLOG_MIGRATE): (V.FAILED, I),
}


@pytest.mark.parametrize(("lcm", "step"), list(FAILURES))
def test_driver_failures(lcm: LcmState, step: Step) -> None:
    move = transition(V.ACTIVE, lcm, step_event(step, False))
    assert (move.state, move.lcm) == FAILURES[(lcm, step)]
    assert move.step is None


@pytest.mark.parametrize("state", ALL_STATES)
@pytest.mark.parametrize("step", list(Step))
def test_driver_outcomes_only_where_expected(state: tuple[VmState, LcmState], step: Step) -> None:
    """An outcome arriving in any other state is refused (the dispatcher then ignores it)."""
    for ok in (True, False):
        event = step_event(step, ok)
        legal = (state[0] is V.ACTIVE and (state[1], step) in FAILURES)
        if legal:
            transition(state[0], state[1], event)
        else:
            with pytest.raises(InvalidState):
                transition(state[0], state[1], event)


POLL = {
    (L.RUNNING, E.POLL_MISSING): (V.ACTIVE, L.UNKNOWN),
    (L.UNKNOWN, E.POLL_RUNNING): (V.ACTIVE, L.RUNNING),
    (L.RUNNING, E.POLL_SUSPENDED): (V.SUSPENDED, I),
    (L.UNKNOWN, E.POLL_SUSPENDED): (V.SUSPENDED, I),
    (L.RUNNING, E.POLL_ERROR): (V.FAILED, I),
    (L.UNKNOWN, E.POLL_ERROR): (V.FAILED, I),
}


@pytest.mark.parametrize("state", ALL_STATES)
@pytest.mark.parametrize("event", [E.POLL_RUNNING, E.POLL_SUSPENDED, E.POLL_ERROR, E.POLL_MISSING])
def test_poll_acted_on_only_in_running_or_unknown(state: tuple[VmState, LcmState], event: Event) -> None:
    expected = POLL.get((state[1], event)) if state[0] is V.ACTIVE else None
    if expected is None:
        with pytest.raises(InvalidState):
            transition(state[0], state[1], event)
    else:
        move = transition(state[0], state[1], event)
        assert (move.state, move.lcm) == expected


def test_numbers_are_opennebulas() -> None:
    assert [s.value for s in VmState] == list(range(8))
    assert LcmState.RUNNING == 3 and LcmState.EPILOG == 11 and LcmState.UNKNOWN == 16
    assert LcmState.CLEANUP == 15 and LcmState.FAILURE == 14
    assert LcmState.HOTPLUG == 17  # 3.6's number


def test_table_has_no_row_outside_the_expectations() -> None:
    """Every row of the table is accounted for by one of the expectation sets above."""
    for (state, lcm, event) in TABLE:
        if event in USER_ACTIONS:
            assert (state, lcm) in EXPECTED_USER[Event(event)]
        elif event in (E.DEPLOY, E.DEPLOY_RESUME):
            assert (state, lcm) == (V.PENDING, I)
        elif event.startswith("poll_"):
            assert (lcm, event) in POLL
        else:
            step_name, _, _ = event.rpartition("_")
            assert (lcm, Step(step_name)) in FAILURES


def test_capacity_is_held_while_active_or_suspended() -> None:
    assert [s for s in VmState if holds_host(s)] == [V.ACTIVE, V.SUSPENDED]


def test_every_step_is_due_exactly_in_the_state_its_transition_leads_to() -> None:
    """Each row that queues a step lands in the state where that step counts as due."""
    from core.lifecycle import step_is_due

    for (_state, _lcm, _event), move in TABLE.items():
        if move.step is not None:
            assert step_is_due(move.step, move.state, move.lcm), (move, _event)


def test_disk_steps_run_on_stopped_vms_and_in_hotplug_only() -> None:
    from core.lifecycle import step_is_due

    for step in (S.ATTACH, S.DETACH, S.SAVE_DISK):
        assert step_is_due(step, V.STOPPED, I)
        assert not step_is_due(step, V.PENDING, I)
        assert not step_is_due(step, V.DONE, I)
        assert not step_is_due(step, V.ACTIVE, L.RUNNING)
    assert step_is_due(S.ATTACH, V.ACTIVE, L.HOTPLUG)
    assert step_is_due(S.DETACH, V.ACTIVE, L.HOTPLUG)
    assert not step_is_due(S.SAVE_DISK, V.ACTIVE, L.HOTPLUG)
