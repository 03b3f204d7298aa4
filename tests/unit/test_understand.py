"""Understanding Russian answers: the utterance table, negation, numerals, the confusion helper."""

from __future__ import annotations

import csv
from datetime import datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ivr.notify.window import CallWindow
from ivr.speech import timeexpr
from ivr.speech.understand import INTENTS, confusion, correct, understand

MSK = ZoneInfo("Europe/Moscow")
W = CallWindow()
REF = datetime(2026, 11, 23, 11, 0, tzinfo=MSK)  # a Monday, inside the window
TABLE = Path(__file__).parent / "data" / "utterances.tsv"


def _rows() -> list:
    rows = []
    with TABLE.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.startswith("#") or not line.strip("\n"):
                continue
            cols = line.rstrip("\n").split("\t") + ["", "", ""]
            text, intent, when, tz, now = (c.strip() for c in cols[:5])
            rows.append(pytest.param(text, intent, when, tz, now, id=f"{n}:{text or '<empty>'}"))
    return rows


ROWS = _rows()


def test_table_is_big_enough_and_valid():
    assert len(ROWS) >= 150
    intents = {r.values[1] for r in ROWS}
    assert intents <= set(INTENTS)
    assert intents == set(INTENTS)  # every intent has examples


@pytest.mark.parametrize("text,intent,when,tz,now", ROWS)
def test_utterance_table(text, intent, when, tz, now):
    zone = ZoneInfo(tz) if tz else MSK
    ref = datetime.fromisoformat(now).replace(tzinfo=zone) if now else REF
    u = understand(text, now=ref, tz=zone, window=W)
    got_when = u.when.strftime("%Y-%m-%d %H:%M") if u.when else "-"
    assert (u.intent, got_when) == (intent, when), u.reason
    if u.when is not None:
        assert u.when.tzinfo is not None
        assert u.when.utcoffset() == u.when.astimezone(zone).utcoffset()
        assert W.is_open(u.when, zone), "a resolved time is always inside the call window"
        assert u.when > ref


# --- negation never becomes affirm -----------------------------------------------------------

NEGATIVE = [
    "неудобно", "не удобно", "Не удобно.", "не надо", "не сейчас", "нет, лучше завтра", "не могу",
    "занят", "да нет", "да, но не сейчас", "нет да", "удобно? нет", "нет, не удобно", "не очень удобно",
    "не совсем удобно", "неудобна", "не удобна", "неудобно мне", "мне неудобно", "нехорошо",
    "не хорошо", "не давайте", "не подходит", "не, не надо", "не-не", "нет-нет", "неа", "нее",
    "ни в коем случае", "не конечно", "удобно, но не сегодня", "да не сейчас", "неуд обно",
    "не удобно, давайте позже", "сейчас неудобно", "к сожалению, не могу",
]


@pytest.mark.parametrize("text", NEGATIVE)
def test_negation_never_affirms(text):
    u = understand(text, now=REF, tz=MSK, window=W)
    assert u.intent != "affirm", u.reason


@pytest.mark.parametrize("text,expected", [
    ("нет, лучше завтра", "reschedule"),
    ("не удобно, лучше после обеда", "reschedule"),
    ("не завтра", "deny"),
    ("завтра не могу", "deny"),
    ("да нет", "deny"),
    ("не против", "affirm"),         # a fixed phrase: "not against" = yes
    ("почему бы и нет", "affirm"),
    ("не расслышал", "repeat"),      # a negation that asks to repeat
    ("не надо оператора", "deny"),   # a negated operator is not a request for one
])
def test_negation_choices(text, expected):
    assert understand(text, now=REF, tz=MSK, window=W).intent == expected


def test_fuzzy_never_crosses_negation():
    # "неудобно" is closer to nothing affirmative; "удобна" corrects to "удобно" but
    # a "не..." word only ever corrects to another "не..." word
    assert correct("неудбно")[0] == "неудобно"
    assert correct("удобна")[0] in ("удобна", "удобно")
    for typo in ("неудобна", "неудобн", "неудобнo", "неудобо", "не удобно"):
        for word in typo.split():
            fixed, _ = correct(word)
            assert fixed.startswith("не") == word.startswith("не")


def test_deny_with_time_is_reschedule_with_the_rejected_time_logged():
    u = understand("не сегодня, а завтра", now=REF, tz=MSK, window=W)
    assert u.intent == "reschedule"
    assert u.when == datetime(2026, 11, 24, 10, tzinfo=MSK)
    assert "сегодня" in u.reason


# --- numerals --------------------------------------------------------------------------------

@pytest.mark.parametrize("text,tokens", [
    ("пятнадцать тридцать", ["15", "30"]),
    ("двадцать четвертого", ["24-го"]),
    ("двадцать четвёртого", ["24-го"]),
    ("Двадцать четыре", ["24"]),
    ("тридцать первого", ["31-го"]),
    ("третьего декабря", ["3-го", "декабря"]),
    ("в 15:30", ["в", "15:30"]),
    ("в 15.30", ["в", "15:30"]),
    ("24-е", ["24-го"]),
    ("24-го", ["24-го"]),
    ("в десять", ["в", "10"]),
    ("сорок пять", ["45"]),
    ("пятьдесят", ["50"]),
    ("девятнадцать ноль ноль", ["19", "0", "0"]),
    ("полдесятого", ["пол", "10-го"]),
    ("Да, удобно!", ["да", "|", "удобно", "|"]),
    ("Ёлки", ["елки"]),
])
def test_canonical_numerals(text, tokens):
    assert timeexpr.canonical(text) == tokens


@pytest.mark.parametrize("h,mod,part,expected", [
    (3, None, None, 15), (7, None, None, 19), (8, None, None, 8), (12, None, None, 12),
    (1, None, None, 13), (15, None, None, 15), (9, "утра", None, 9), (3, "дня", None, 15),
    (7, "вечера", None, 19), (9, None, "evening", 21), (9, None, "morning", 9), (2, None, "lunch", 14),
    (12, "ночи", None, 0), (25, None, None, None),
])
def test_hour24(h, mod, part, expected):
    assert timeexpr.hour24(h, mod, part) == expected


@pytest.mark.parametrize("text,clock", [
    ("в десять", (10, 0)), ("в 10", (10, 0)), ("10 часов", (10, 0)), ("в три", (15, 0)),
    ("в 15:30", (15, 30)), ("пятнадцать тридцать", (15, 30)), ("полдесятого", (9, 30)),
    ("в половине третьего", (14, 30)), ("без четверти три", (14, 45)), ("без десяти пять", (16, 50)),
    ("в час дня", (13, 0)), ("в полдень", (12, 0)), ("в семь вечера", (19, 0)), ("в 9 утра", (9, 0)),
    ("в два часа тридцать минут", (14, 30)), ("вечером в восемь", (20, 0)), ("утром в девять", (9, 0)),
])
def test_clock_from_words_and_digits(text, clock):
    assert timeexpr.find(timeexpr.canonical(text)).clock == clock


def test_reference_is_injected_not_read():
    # the same words resolve differently for another "now"
    a = understand("завтра", now=REF, tz=MSK, window=W).when
    b = understand("завтра", now=datetime(2026, 11, 24, 11, tzinfo=MSK), tz=MSK, window=W).when
    assert (a.date().isoformat(), b.date().isoformat()) == ("2026-11-24", "2026-11-25")
    with pytest.raises(ValueError):
        understand("завтра", now=datetime(2026, 11, 23, 11), tz=MSK, window=W)


def test_other_window_and_part_of_day_defaults():
    early = CallWindow(start=time(8), end=time(20))
    u = understand("завтра утром", now=REF, tz=MSK, window=early)
    assert u.when == datetime(2026, 11, 24, 9, tzinfo=MSK)          # morning slot start
    u = understand("в семь вечера", now=REF, tz=MSK, window=early)
    assert u.when == datetime(2026, 11, 23, 19, tzinfo=MSK)


def test_result_fields_for_logs():
    u = understand("Давайте в пятницу в 15:30", now=REF, tz=MSK, window=W)
    assert u.intent == "reschedule" and u.span == "в пятницу в 15:30"
    assert 0 < u.confidence <= 1 and "2026-11-27 15:30" in u.reason
    fuzzy = understand("давайти", now=REF, tz=MSK, window=W)
    assert fuzzy.intent == "affirm" and fuzzy.confidence < u.confidence and "fuzzy" in fuzzy.reason
    assert understand("", now=REF, tz=MSK, window=W).confidence == 0.0


# --- confusion table -------------------------------------------------------------------------

def test_confusion_helper():
    c = confusion([("affirm", "affirm"), ("affirm", "deny"), ("deny", "deny"), ("deny", "affirm"),
                   ("reschedule", "reschedule"), ("repeat", "unknown"), ("reschedule", "affirm")])
    assert c.total == 7 and c.correct == 3
    assert c.accuracy == pytest.approx(3 / 7)
    assert c.flips == 3
    md = c.to_markdown()
    assert md.splitlines()[0].startswith("| expected \\ got | affirm | deny | reschedule | repeat")
    assert "| affirm | 1 | 1 | 0 | 0 | 0 |" in md
    assert confusion([]).accuracy == 0.0


def test_confusion_on_the_table_is_perfect():
    pairs = []
    for p in ROWS:
        text, intent, _, tz, now = p.values
        zone = ZoneInfo(tz) if tz else MSK
        ref = datetime.fromisoformat(now).replace(tzinfo=zone) if now else REF
        pairs.append((intent, understand(text, now=ref, tz=zone, window=W).intent))
    c = confusion(pairs)
    assert c.flips == 0 and c.accuracy == 1.0, c.to_markdown()


@pytest.mark.parametrize("text", [
    "через 999999999999 минут", "минут через 99999999999", "99 числа", "31 февраля", "в 99", "в 25:70",
    "30 февраля в 3", "через 0 часов", "🙂🙂", "\u200bда\u200b", "----", "|", "24-го-го", "пол 1-го",
    "без 99 3", "в 0", "None", "ё" * 500, "да " * 300, "через " * 50,
])
def test_odd_input_never_raises(text):
    u = understand(text, now=REF, tz=MSK, window=W)
    assert u.intent in INTENTS
    if u.when is not None:
        assert W.is_open(u.when, MSK)
