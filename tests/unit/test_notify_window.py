"""The client's call window: time zone from card or phone, working days, Russian holidays."""

from datetime import datetime, time, timezone
from zoneinfo import ZoneInfo

import pytest

from ivr.notify.window import CallWindow, client_timezone, phone_timezone

UTC = timezone.utc
MSK = ZoneInfo("Europe/Moscow")
EKB = ZoneInfo("Asia/Yekaterinburg")
KGD = ZoneInfo("Europe/Kaliningrad")
BER = ZoneInfo("Europe/Berlin")
W = CallWindow()


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- time zone of a client -------------------------------------------------------------------

@pytest.mark.parametrize("e164,zone", [
    ("+73432123456", "Asia/Yekaterinburg"),   # Yekaterinburg landline
    ("+73832123456", "Asia/Novosibirsk"),     # Novosibirsk landline
    ("+74012123456", "Europe/Kaliningrad"),   # libphonenumber says Europe/Bucharest: corrected
    ("+74951234567", "Europe/Moscow"),
    ("+74232123456", "Asia/Vladivostok"),
    ("+79161234567", "Europe/Moscow"),        # mobile: every RU zone listed -> capital
    ("+77011234567", "Asia/Almaty"),          # Kazakh mobile shares +7: its own capital
    ("+4930123456", "Europe/Berlin"),
])
def test_zone_from_phone(e164, zone):
    assert client_timezone(None, e164) == ZoneInfo(zone)


@pytest.mark.parametrize("e164", ["+70000000000", "garbage", "", "+999"])
def test_unknown_number_falls_back_to_moscow(e164):
    assert phone_timezone(e164) is None
    assert client_timezone(None, e164) == MSK


def test_card_zone_wins_over_phone():
    assert client_timezone("Asia/Omsk", "+73432123456") == ZoneInfo("Asia/Omsk")


@pytest.mark.parametrize("card", ["Mars/Base", "", "   ", "../etc/passwd", "UTC+3"])
def test_invalid_card_zone_falls_back_to_phone(card):
    assert client_timezone(card, "+73432123456") == EKB


# --- is_open ---------------------------------------------------------------------------------

def test_same_utc_instant_three_clients():
    # Tuesday 2026-11-24 07:30 UTC: Kaliningrad 09:30 (closed), Moscow 10:30, Yekaterinburg 12:30.
    now = utc(2026, 11, 24, 7, 30)
    assert not W.is_open(now, KGD)
    assert W.is_open(now, MSK)
    assert W.is_open(now, EKB)
    # 14:30 UTC: Yekaterinburg 19:30 (closed), Moscow 17:30, Kaliningrad 16:30.
    later = utc(2026, 11, 24, 14, 30)
    assert not W.is_open(later, EKB)
    assert W.is_open(later, MSK) and W.is_open(later, KGD)


def test_same_utc_instant_next_open_differs_per_zone():
    now = utc(2026, 11, 24, 4, 0)   # Tuesday: Ekb 09:00, Msk 07:00, Kgd 06:00
    assert W.next_open(now, EKB) == utc(2026, 11, 24, 5, 0)
    assert W.next_open(now, MSK) == utc(2026, 11, 24, 7, 0)
    assert W.next_open(now, KGD) == utc(2026, 11, 24, 8, 0)


@pytest.mark.parametrize("local,expected", [
    (datetime(2026, 11, 24, 9, 59, 59), False),
    (datetime(2026, 11, 24, 10, 0), True),
    (datetime(2026, 11, 24, 18, 59, 59), True),
    (datetime(2026, 11, 24, 19, 0), False),     # end is exclusive
    (datetime(2026, 11, 28, 12, 0), False),     # Saturday
    (datetime(2026, 11, 29, 12, 0), False),     # Sunday
    (datetime(2027, 1, 5, 12, 0), False),       # New Year holidays
    (datetime(2027, 2, 22, 12, 0), False),      # transferred day off (from Saturday 2027-02-20)
    (datetime(2027, 2, 20, 12, 0), True),       # transferred working Saturday
    (datetime(2026, 12, 31, 12, 0), False),     # 2026-12-31 is a day off (moved from 01-04)
])
def test_is_open_moscow(local, expected):
    assert W.is_open(local.replace(tzinfo=MSK), MSK) is expected


def test_naive_now_is_rejected():
    with pytest.raises(ValueError):
        W.is_open(datetime(2026, 11, 24, 12, 0), MSK)


def test_every_day_window_and_holidays_off():
    daily = CallWindow(working_days_only=False, holidays=None)
    assert daily.is_open(datetime(2026, 11, 29, 12, 0, tzinfo=MSK), MSK)   # Sunday
    assert daily.is_open(datetime(2027, 1, 5, 12, 0, tzinfo=MSK), MSK)     # holiday ignored
    no_holidays = CallWindow(holidays=None)
    assert no_holidays.is_open(datetime(2027, 1, 5, 12, 0, tzinfo=MSK), MSK)
    assert not no_holidays.is_open(datetime(2027, 2, 20, 12, 0, tzinfo=MSK), MSK)  # plain Saturday


@pytest.mark.parametrize("kwargs", [
    dict(start=time(19), end=time(10)),
    dict(start=time(10), end=time(10)),
    dict(start=time(10, 0, 30)),
    dict(holidays="US"),
])
def test_bad_window_rejected(kwargs):
    with pytest.raises(ValueError):
        CallWindow(**kwargs)


# --- next_open / clamp -----------------------------------------------------------------------

def test_next_open_is_now_when_open_and_utc_aware():
    now = datetime(2026, 11, 24, 12, 0, tzinfo=MSK)
    got = W.next_open(now, MSK)
    assert got == now and got.tzinfo == UTC


def test_new_year_holidays_skipped():
    # Wednesday 2026-12-30 20:00 Moscow -> 31st is a day off, 1..8 January holidays,
    # 9..10 a weekend -> Monday 2027-01-11 10:00.
    assert W.next_open(datetime(2026, 12, 30, 20, 0, tzinfo=MSK), MSK) == utc(2027, 1, 11, 7, 0)
    assert W.clamp(datetime(2027, 1, 1, 12, 0, tzinfo=MSK), MSK) == utc(2027, 1, 11, 7, 0)


def test_transferred_day_off_and_working_saturday():
    # Friday 2027-02-19 after hours -> the working Saturday 2027-02-20.
    assert W.clamp(datetime(2027, 2, 19, 19, 30, tzinfo=MSK), MSK) == utc(2027, 2, 20, 7, 0)
    # Saturday after hours -> Sunday off, 22nd transferred off, 23rd holiday -> Wednesday 24th.
    assert W.clamp(datetime(2027, 2, 20, 19, 0, tzinfo=MSK), MSK) == utc(2027, 2, 24, 7, 0)


def test_clamp_before_start_same_day():
    assert W.clamp(datetime(2026, 11, 24, 8, 15, tzinfo=EKB), EKB) == utc(2026, 11, 24, 5, 0)


def test_clamp_inside_unchanged():
    when = datetime(2026, 11, 24, 15, 42, tzinfo=KGD)
    assert W.clamp(when, KGD) == when


def test_clamp_after_end_friday_goes_to_monday():
    assert W.clamp(datetime(2026, 11, 27, 19, 5, tzinfo=MSK), MSK) == utc(2026, 11, 30, 7, 0)


def test_kaliningrad_in_summer_is_utc_plus_2_not_bucharest():
    # July: Bucharest is UTC+3 (DST), Kaliningrad UTC+2. 10:00 Kaliningrad = 08:00 UTC.
    tz = client_timezone(None, "+74012123456")
    assert W.next_open(utc(2026, 7, 14, 6, 0), tz) == utc(2026, 7, 14, 8, 0)


def test_berlin_summer_dst():
    # Berlin in July is UTC+2: 10:00 local = 08:00 UTC; German holidays are not applied here,
    # only the RU calendar.
    assert W.next_open(utc(2026, 7, 14, 5, 0), BER) == utc(2026, 7, 14, 8, 0)
    assert W.is_open(utc(2026, 7, 14, 16, 59), BER)
    assert not W.is_open(utc(2026, 7, 14, 17, 0), BER)
    # Winter: UTC+1.
    assert W.next_open(utc(2026, 11, 24, 5, 0), BER) == utc(2026, 11, 24, 9, 0)


def test_berlin_across_dst_change():
    # Saturday 2027-03-27 -> Monday 2027-03-29 (DST began on Sunday 28th): 10:00 CEST = 08:00 UTC.
    assert W.next_open(utc(2027, 3, 27, 12, 0), BER) == utc(2027, 3, 29, 8, 0)


def test_next_working_day_at():
    # Friday 12:00 Moscow -> Monday 10:00; 09:00 requested is clamped to the 10:00 start.
    fri = datetime(2026, 11, 27, 12, 0, tzinfo=MSK)
    assert W.next_working_day_at(fri, MSK, time(10)) == utc(2026, 11, 30, 7, 0)
    assert W.next_working_day_at(fri, MSK, time(9)) == utc(2026, 11, 30, 7, 0)
    assert W.next_working_day_at(fri, MSK, time(11, 30)) == utc(2026, 11, 30, 8, 30)
    # Wednesday 2026-12-30 -> Monday 2027-01-11.
    assert W.next_working_day_at(datetime(2026, 12, 30, 11, 0, tzinfo=MSK), MSK, time(10)) \
        == utc(2027, 1, 11, 7, 0)
