"""The job lifecycle as pure rules, without a database: what the store asks before each write."""

from __future__ import annotations

import itertools

import pytest

from dicom_node.job_states import (
    ALLOWED_TRANSITIONS,
    TERMINAL_STATES,
    IllegalTransitionError,
    JobState,
    check_transition,
    recovery_target,
)


@pytest.mark.parametrize(
    ("current", "wanted"), list(itertools.product(JobState, JobState)), ids=str
)
def test_check_transition_follows_the_table(current: JobState, wanted: JobState) -> None:
    if wanted in ALLOWED_TRANSITIONS[current]:
        check_transition(1, current, wanted)
    else:
        with pytest.raises(IllegalTransitionError) as info:
            check_transition(1, current, wanted)
        assert (info.value.current, info.value.wanted) == (current, wanted)


def test_only_from_narrows_the_sources_and_names_them() -> None:
    check_transition(7, JobState.RECEIVED, JobState.QUEUED, only_from=JobState.RECEIVED)
    # RUNNING -> QUEUED is in the table (recovery) but not a way to queue a job.
    with pytest.raises(
        IllegalTransitionError, match=r"job 7 is RUNNING: .* needs a job in RECEIVED"
    ):
        check_transition(7, JobState.RUNNING, JobState.QUEUED, only_from=JobState.RECEIVED)


def test_terminal_states_are_left_only_by_an_operators_resend() -> None:
    # DONE and FAILED may go back to SENDING ('jobs resend'); nothing else leaves a terminal
    # state, and the node's own sending path (RUNNING -> SENDING) cannot reach them.
    assert {state: ALLOWED_TRANSITIONS[state] for state in TERMINAL_STATES} == {
        JobState.DONE: {JobState.SENDING},
        JobState.FAILED: {JobState.SENDING},
        JobState.SKIPPED: set(),
    }
    assert set(ALLOWED_TRANSITIONS) == set(JobState)
    resend = frozenset({JobState.DONE, JobState.FAILED})
    check_transition(3, JobState.FAILED, JobState.SENDING, only_from=resend)
    with pytest.raises(IllegalTransitionError, match="needs a job in RUNNING"):
        check_transition(3, JobState.DONE, JobState.SENDING, only_from=JobState.RUNNING)


def test_recovery_requeues_until_the_run_limit_then_fails() -> None:
    assert recovery_target(1, 3) == (JobState.QUEUED, None)
    assert recovery_target(2, 3) == (JobState.QUEUED, None)
    state, reason = recovery_target(3, 3)
    assert state is JobState.FAILED
    assert reason is not None and "interrupted 3 times while RUNNING" in reason
    with pytest.raises(ValueError, match="max_runs must be >= 1"):
        recovery_target(1, 0)
