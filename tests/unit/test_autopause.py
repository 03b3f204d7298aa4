"""Auto-pause after N consecutive misses, with a Russian reason that keeps the time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from routing.autopause import AutoPausePolicy, MissCounter, on_ring_result

# 11:05 UTC is 14:05 in Moscow
NOW = datetime(2026, 11, 23, 11, 5, tzinfo=timezone.utc)


def test_default_pauses_after_one_full_ring_without_answer_with_moscow_time_in_the_reason():
    policy, state = AutoPausePolicy(), MissCounter()
    decision = policy.on_ring_result(state, "no_answer", 15.0, NOW)
    assert decision is not None
    assert decision.reason == "не ответил в 14:05"
    assert decision.misses == 1 and decision.outcome == "no_answer" and decision.at == NOW
    assert state.misses == 0  # counted afresh after he rejoins


def test_n_consecutive_misses_and_an_answer_resets():
    policy, state = AutoPausePolicy(misses=3, ring_seconds=15), MissCounter()
    assert policy.on_ring_result(state, "no_answer", 15, NOW) is None
    assert policy.on_ring_result(state, "rejected", 2, NOW) is None
    assert state.misses == 2
    assert policy.on_ring_result(state, "answered", 3, NOW) is None
    assert state.misses == 0
    assert policy.on_ring_result(state, "no_answer", 15, NOW) is None
    assert policy.on_ring_result(state, "no_answer", 16, NOW) is None
    decision = policy.on_ring_result(state, "no_answer", 15, NOW + timedelta(minutes=1))
    assert decision is not None and decision.misses == 3
    assert decision.reason == "не ответил на 3 вызова подряд, последний в 14:06"


@pytest.mark.parametrize("outcome,rang", [("busy", 0), ("failed", 0), ("caller_hung_up", 4), ("cancelled", 10),
                                          ("no_answer", 8)])
def test_not_his_fault_is_neutral(outcome, rang):
    """Phone busy or unreachable, the caller hung up, the step's time ran out before his ring time:
    neither a miss nor an answer."""
    policy, state = AutoPausePolicy(misses=2, ring_seconds=15), MissCounter()
    assert policy.on_ring_result(state, "no_answer", 15, NOW) is None
    assert policy.on_ring_result(state, outcome, rang, NOW) is None
    assert state.misses == 1
    assert policy.on_ring_result(state, "no_answer", 15, NOW) is not None


def test_a_rejected_call_is_a_miss_at_once_and_says_so():
    decision = on_ring_result(AutoPausePolicy(), MissCounter(), "rejected", 1.5, NOW)
    assert decision is not None and decision.reason == "отклонил вызов в 14:05"


def test_timer_jitter_still_counts_as_a_full_ring():
    assert AutoPausePolicy(ring_seconds=15).is_miss("no_answer", 14.8)
    assert not AutoPausePolicy(ring_seconds=15).is_miss("no_answer", 14.0)


def test_zero_disables_and_negative_is_refused():
    state = MissCounter()
    policy = AutoPausePolicy(misses=0)
    assert all(policy.on_ring_result(state, "no_answer", 30, NOW) is None for _ in range(10))
    with pytest.raises(ValueError):
        AutoPausePolicy(misses=-1)


@pytest.mark.parametrize("n,word", [(2, "вызова"), (5, "вызовов"), (11, "вызовов"), (21, "вызов"), (22, "вызова")])
def test_russian_plural(n, word):
    assert AutoPausePolicy().reason(n, "no_answer", NOW) == f"не ответил на {n} {word} подряд, последний в 14:05"
