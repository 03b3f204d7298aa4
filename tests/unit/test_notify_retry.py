"""Retry policy: schedule by outcome, barrier, deadline, client's action, policy file errors."""

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from ivr.notify.retry import (DEFAULT_POLICY_FILE, NextWorkingDay, PolicyError, RetryPolicy,
                              load_policies, next_attempt, parse_policies, parse_schedule)
from ivr.notify.window import CallWindow

UTC = timezone.utc
MSK = ZoneInfo("Europe/Moscow")
EKB = ZoneInfo("Asia/Yekaterinburg")
KGD = ZoneInfo("Europe/Kaliningrad")
P = RetryPolicy()


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def msk(*args) -> datetime:
    return datetime(*args, tzinfo=MSK)


@pytest.mark.parametrize("outcome,expected", [
    ("busy", msk(2026, 11, 24, 12, 15)),
    ("no_answer", msk(2026, 11, 24, 14, 0)),
    ("congestion", msk(2026, 11, 24, 12, 10)),
    ("failure", msk(2026, 11, 24, 12, 30)),
    ("hangup_during_prompt", msk(2026, 11, 24, 13, 0)),
    ("no_action", msk(2026, 11, 25, 10, 0)),       # next working day 10:00
])
def test_delay_by_outcome(outcome, expected):
    d = next_attempt(P, outcome, 1, msk(2026, 11, 24, 12, 0), MSK)
    assert (d.kind, d.at, d.result) == ("retry", expected, None)
    assert d.at.tzinfo == UTC
    assert outcome in d.reason


def test_friday_1850_busy_goes_to_monday_10():
    # +15 min = 19:05, past the 19:00 end -> next working day's start.
    d = next_attempt(P, "busy", 1, msk(2026, 11, 27, 18, 50), MSK)
    assert d.at == msk(2026, 11, 30, 10, 0)
    assert "moved into the call window" in d.reason


def test_busy_at_1840_stays_same_day():
    assert next_attempt(P, "busy", 1, msk(2026, 11, 24, 18, 40), MSK).at == msk(2026, 11, 24, 18, 55)


def test_no_answer_late_moves_to_next_morning():
    assert next_attempt(P, "no_answer", 2, msk(2026, 11, 24, 17, 30), MSK).at \
        == msk(2026, 11, 25, 10, 0)


def test_no_action_is_local_to_client():
    # Same UTC instant, Tuesday: Yekaterinburg client -> Wednesday 10:00 Ekb = 05:00 UTC.
    now = utc(2026, 11, 24, 9, 0)
    assert next_attempt(P, "no_action", 1, now, EKB).at == utc(2026, 11, 25, 5, 0)
    assert next_attempt(P, "no_action", 1, now, MSK).at == utc(2026, 11, 25, 7, 0)
    assert next_attempt(P, "no_action", 1, now, KGD).at == utc(2026, 11, 25, 8, 0)


def test_no_action_on_friday_goes_to_monday():
    assert next_attempt(P, "no_action", 1, msk(2026, 11, 27, 11, 0), MSK).at \
        == msk(2026, 11, 30, 10, 0)


def test_new_year_holidays_skipped():
    d = next_attempt(P, "no_answer", 1, msk(2026, 12, 30, 18, 0), MSK)
    assert d.at == msk(2027, 1, 11, 10, 0)


def test_transferred_working_saturday_used():
    assert next_attempt(P, "no_action", 1, msk(2027, 2, 19, 12, 0), MSK).at \
        == msk(2027, 2, 20, 10, 0)


@pytest.mark.parametrize("action", ["confirmed", "not_received"])
def test_client_action_is_final(action):
    d = next_attempt(P, action, 1, msk(2026, 11, 24, 12, 0), MSK)
    assert (d.kind, d.at, d.result) == ("final", None, action)


def test_client_action_wins_over_barrier_and_deadline():
    d = next_attempt(P, "confirmed", 9, msk(2026, 11, 24, 12, 0), MSK,
                     deadline=msk(2026, 11, 1, 0, 0))
    assert d.result == "confirmed"


def test_barrier_reached_is_exhausted():
    d = next_attempt(P, "no_answer", 5, msk(2026, 11, 24, 12, 0), MSK)
    assert (d.kind, d.at, d.result) == ("final", None, "exhausted")
    assert "5 of 5" in d.reason
    assert next_attempt(P, "no_answer", 4, msk(2026, 11, 24, 12, 0), MSK).kind == "retry"


def test_deadline_is_expired():
    # Next slot Monday 10:00, deadline Saturday.
    d = next_attempt(P, "busy", 1, msk(2026, 11, 27, 18, 50), MSK, deadline=msk(2026, 11, 28, 23, 0))
    assert (d.kind, d.result) == ("final", "expired")


def test_slot_exactly_at_deadline_is_allowed():
    d = next_attempt(P, "busy", 1, msk(2026, 11, 24, 12, 0), MSK, deadline=msk(2026, 11, 24, 12, 15))
    assert d.kind == "retry"


def test_unknown_outcome_is_an_error():
    with pytest.raises(ValueError, match="unknown outcome"):
        next_attempt(P, "exploded", 1, msk(2026, 11, 24, 12, 0), MSK)


def test_naive_time_rejected():
    with pytest.raises(ValueError):
        next_attempt(P, "busy", 1, datetime(2026, 11, 24, 12, 0), MSK)


def test_explicit_window_overrides_policy_window():
    late = CallWindow(start=time(9), end=time(21), working_days_only=False)
    d = next_attempt(P, "busy", 1, msk(2026, 11, 27, 18, 50), MSK, window=late)
    assert d.at == msk(2026, 11, 27, 19, 5)


def test_berlin_summer():
    ber = ZoneInfo("Europe/Berlin")
    d = next_attempt(P, "no_answer", 1, datetime(2026, 7, 14, 17, 30, tzinfo=ber), ber)
    assert d.at == utc(2026, 7, 15, 8, 0)  # 10:00 CEST


@pytest.mark.parametrize("text,expected", [
    ("15m", timedelta(minutes=15)),
    ("2h", timedelta(hours=2)),
    ("1h30m", timedelta(minutes=90)),
    ("90s", timedelta(seconds=90)),
    (45, timedelta(minutes=45)),
    ("next_working_day 10:00", NextWorkingDay(time(10))),
    ("next_working_day_11:30", NextWorkingDay(time(11, 30))),
    ("next_working_day", NextWorkingDay(time(10))),
])
def test_parse_schedule(text, expected):
    assert parse_schedule(text) == expected


@pytest.mark.parametrize("text", ["soon", "", "0m", 0, -5, True, "next_working_day 25:00"])
def test_parse_schedule_rejects(text):
    with pytest.raises(ValueError):
        parse_schedule(text)


def test_shipped_policy_file_loads():
    policies = load_policies()
    assert DEFAULT_POLICY_FILE.exists()
    assert policies.default == RetryPolicy()
    confirm = policies.for_template("contract_confirm")
    assert confirm.barrier == 3 and confirm.delays["no_answer"] == timedelta(hours=1)
    assert confirm.delays["busy"] == timedelta(minutes=15)      # inherited
    assert policies.for_template("unknown_template") is policies.default


def test_template_override_merges_window_and_no_action():
    policies = parse_policies(
        "defaults:\n"
        "  barrier: 4\n"
        "  window: {start: '09:00', end: '20:00'}\n"
        "templates:\n"
        "  goods_arrived:\n"
        "    delays:\n"
        "      no_action: next_working_day 12:00\n"
        "    window:\n"
        "      end: 18:00\n")
    p = policies.for_template("goods_arrived")
    assert p.barrier == 4
    assert p.window == CallWindow(start=time(9), end=time(18))
    assert p.no_action == NextWorkingDay(time(12))
    assert policies.default.window.end == time(20)


@pytest.mark.parametrize("text,message", [
    ("defaults:\n  barrier: 0\n", "defaults.barrier: line 2"),
    ("defaults:\n  barrier: yes\n", "defaults.barrier: line 2"),
    ("defaults:\n  delays:\n    busy: soon\n", "defaults.delays.busy: line 3"),
    ("defaults:\n  delays:\n    bussy: 5m\n", "defaults.delays.bussy: line 3: unknown outcome"),
    ("defaults:\n  colour: red\n", "defaults.colour: line 2: unknown key"),
    ("templates:\n  a:\n    window:\n      start: '25:00'\n", "templates.a.window.start: line 4"),
    ("templates:\n  a:\n    window:\n      holidays: US\n", "templates.a.window.holidays: line 4"),
    ("defaults:\n  window:\n    start: '19:00'\n    end: '10:00'\n", "defaults.window: line 2"),
    ("defaults:\n  barrier: 2\n  barrier: 3\n", "defaults.barrier: line 3: duplicate key"),
    ("extra: 1\n", "extra: line 1: unknown key"),
    ("defaults: [\n", "not valid YAML"),
])
def test_policy_errors_name_key_and_line(text, message):
    with pytest.raises(PolicyError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_policies(text)


def test_missing_explicit_policy_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_policies(tmp_path / "absent.yaml")


def test_tts_engine_per_template():
    from ivr.notify.retry import PolicyError, parse_policies

    policies = parse_policies("defaults: {}\ntemplates:\n  fancy:\n    tts_engine: silero\n")
    assert policies.for_template("fancy").tts_engine == "silero"
    assert policies.for_template("other").tts_engine == "festival"
    with pytest.raises(PolicyError, match="tts_engine"):
        parse_policies("defaults:\n  tts_engine: rhvoice\n")


async def test_dialer_speaks_with_the_templates_engine(tmp_path):
    from ivr.notify.dialer import Dialer
    from ivr.notify.retry import parse_policies
    from ivr.speech.cache import PromptCache
    from ivr.speech.tts import EspeakEngine, FestivalEngine, Synthesizer

    cache = PromptCache(tmp_path, 50 * 1024 * 1024)
    festival = Synthesizer([FestivalEngine()], cache)
    other = Synthesizer([EspeakEngine()], cache)   # stands in for a second configured voice
    dialer = Dialer(engine=None, ari=None, dispatcher=None, app="t", synthesizer=festival,
                    policies=parse_policies("defaults: {}\ntemplates:\n  fancy:\n    tts_engine: silero\n"),
                    worker="t", trunk="carrier", caller_id="x", language="ru", synthesizers={"silero": other})
    assert (await dialer._speak("Добрый день.", "fancy")).engine == "espeak-ng"
    assert (await dialer._speak("Добрый день.", "plain")).engine == "festival"
    assert (await dialer._speak("Добрый день.")).engine == "festival"
