"""The notification job state machine: every allowed transition, a sample of forbidden ones."""

from __future__ import annotations

import pytest

from ivr.notify.jobs import (
    EVENTS, FINAL_STATES, STATES, TRANSITIONS, InvalidTransition, allowed_events, is_final, transition,
)
from models.tables import NOTIFY_JOB_STATES, NOTIFY_RESULTS

ALLOWED = [
    ("pending", "schedule", "scheduled"),
    ("pending", "claim", "dialing"),
    ("pending", "expire", "expired"),
    ("pending", "cancel", "cancelled"),
    ("pending", "fail", "failed"),
    ("scheduled", "claim", "dialing"),
    ("scheduled", "schedule", "scheduled"),
    ("scheduled", "expire", "expired"),
    ("scheduled", "cancel", "cancelled"),
    ("scheduled", "fail", "failed"),
    ("dialing", "confirmed", "confirmed"),
    ("dialing", "not_received", "not_received"),
    ("dialing", "no_action", "no_action"),
    ("dialing", "retry", "scheduled"),
    ("dialing", "exhaust", "exhausted"),
    ("dialing", "expire", "expired"),
    ("dialing", "fail", "failed"),
    ("dialing", "release", "scheduled"),
    ("dialing", "sent", "sent"),
    ("dialing", "callback", "callback"),
    ("dialing", "hand_over", "handed_over"),
    ("sent", "delivered", "delivered"),
    ("sent", "retry", "scheduled"),
    ("sent", "exhaust", "exhausted"),
    ("sent", "expire", "expired"),
    ("sent", "fail", "failed"),
    ("no_action", "retry", "scheduled"),
    ("no_action", "exhaust", "exhausted"),
    ("no_action", "expire", "expired"),
    ("no_action", "cancel", "cancelled"),
]


@pytest.mark.parametrize("state,event,expected", ALLOWED)
def test_allowed(state, event, expected):
    assert transition(state, event) == expected


def test_table_is_exactly_the_documented_one():
    assert {(s, e): n for s, e, n in ALLOWED} == dict(TRANSITIONS)


@pytest.mark.parametrize("state,event", [
    ("pending", "confirmed"),
    ("scheduled", "not_received"),
    ("dialing", "cancel"),
    ("dialing", "claim"),
    ("no_action", "claim"),
    ("confirmed", "retry"),
    ("cancelled", "schedule"),
    ("expired", "claim"),
    ("exhausted", "retry"),
    ("failed", "release"),
    ("sent", "cancel"),
    ("scheduled", "delivered"),
    ("delivered", "retry"),
])
def test_forbidden(state, event):
    with pytest.raises(InvalidTransition) as err:
        transition(state, event)
    message = str(err.value)
    assert repr(state) in message and repr(event) in message


def test_every_final_state_has_no_way_out():
    for state in FINAL_STATES:
        assert is_final(state)
        assert allowed_events(state) == []
        for event in EVENTS:
            with pytest.raises(InvalidTransition, match="is final"):
                transition(state, event)


def test_unknown_state_and_event_named():
    with pytest.raises(InvalidTransition, match="unknown job state 'ringing'"):
        transition("ringing", "claim")
    with pytest.raises(InvalidTransition, match="unknown event 'explode'"):
        transition("pending", "explode")


def test_forbidden_message_lists_allowed_events():
    with pytest.raises(InvalidTransition, match="allowed: .*claim"):
        transition("scheduled", "confirmed")


def test_vocabulary_matches_the_table_constraints():
    assert set(STATES) == set(NOTIFY_JOB_STATES)
    assert FINAL_STATES <= set(NOTIFY_RESULTS)
    targets = {n for n in TRANSITIONS.values()}
    assert targets <= set(STATES)
