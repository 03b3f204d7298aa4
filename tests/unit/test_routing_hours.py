"""Business hours: weekly ranges in the department's zone, Russian holidays, explicit dates."""

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from routing import hours
from routing.rules import DepartmentSpec

MSK = ZoneInfo("Europe/Moscow")
EKB = ZoneInfo("Asia/Yekaterinburg")
WEEKDAYS_AND_SATURDAY = (((540, 1140),),) * 5 + (((600, 960),), ())


def spec(**kw) -> DepartmentSpec:
    values = dict(code="sales", name="Продажи", hours=WEEKDAYS_AND_SATURDAY)
    values.update(kw)
    return DepartmentSpec(**values)


@pytest.mark.parametrize("when,expected", [
    (datetime(2026, 11, 24, 8, 59, tzinfo=MSK), False),
    (datetime(2026, 11, 24, 9, 0, tzinfo=MSK), True),
    (datetime(2026, 11, 24, 18, 59, 59, tzinfo=MSK), True),
    (datetime(2026, 11, 24, 19, 0, tzinfo=MSK), False),
    (datetime(2026, 11, 28, 10, 30, tzinfo=MSK), True),     # Saturday 10-16
    (datetime(2026, 11, 28, 16, 0, tzinfo=MSK), False),
    (datetime(2026, 11, 29, 12, 0, tzinfo=MSK), False),     # Sunday: not listed, closed
    (datetime(2026, 11, 24, 6, 0, tzinfo=timezone.utc), True),  # 09:00 Moscow
])
def test_weekly_hours(when, expected):
    assert hours.is_open(spec(), when) is expected


def test_russian_holidays_are_closed_and_can_be_switched_off():
    christmas = datetime(2027, 1, 7, 12, 0, tzinfo=MSK)  # Thursday
    assert not hours.is_open(spec(), christmas)
    assert hours.is_open(spec(holidays=None), christmas)
    # A transferred day off: Monday 2027-02-22 (moved from Saturday 2027-02-20).
    assert not hours.is_open(spec(), datetime(2027, 2, 22, 12, 0, tzinfo=MSK))


def test_transferred_working_saturday_works_fridays_hours():
    saturday = datetime(2027, 2, 20, 17, 0, tzinfo=MSK)   # working day in Russia; Friday hours 9-19
    assert hours.is_open(spec(), saturday)
    assert not hours.is_open(spec(holidays=None), saturday)  # ordinary Saturday hours end at 16:00


def test_explicit_closed_and_open_dates_override_everything():
    assert not hours.is_open(spec(closed_dates=("2026-11-24",)), datetime(2026, 11, 24, 12, 0, tzinfo=MSK))
    special = spec(open_dates=(("2027-01-07", ((600, 840),)),))
    assert hours.is_open(special, datetime(2027, 1, 7, 12, 0, tzinfo=MSK))
    assert not hours.is_open(special, datetime(2027, 1, 7, 14, 0, tzinfo=MSK))


def test_next_opening_across_the_new_year_holidays():
    # Thursday 2026-12-31 is a transferred day off; Jan 1-8 holidays; Saturday Jan 9 opens 10:00.
    opening = hours.next_opening(spec(), datetime(2026, 12, 30, 19, 5, tzinfo=MSK))
    assert opening == datetime(2027, 1, 9, 10, 0, tzinfo=MSK)
    assert opening.isoformat() == "2027-01-09T10:00:00+03:00"


def test_next_opening_across_a_holiday_weekend():
    # Friday 2027-11-05 is a transferred day off after Unity Day (Thursday): the weekend runs
    # Thursday-Sunday for a mon-fri department; it opens Monday 09:00.
    mon_fri = spec(hours=(((540, 1140),),) * 5 + ((), ()))
    assert hours.next_opening(mon_fri, datetime(2027, 11, 3, 20, 0, tzinfo=MSK)) == \
        datetime(2027, 11, 8, 9, 0, tzinfo=MSK)


def test_next_opening_is_now_when_open_and_later_today_before_opening():
    now = datetime(2026, 11, 24, 12, 0, tzinfo=MSK)
    assert hours.next_opening(spec(), now) == now
    assert hours.next_opening(spec(), datetime(2026, 11, 24, 7, 0, tzinfo=MSK)) == \
        datetime(2026, 11, 24, 9, 0, tzinfo=MSK)


def test_next_opening_in_the_departments_zone():
    ekb = spec(timezone="Asia/Yekaterinburg")
    # 17:30 Moscow = 19:30 Yekaterinburg: closed there, opens 09:00 local (07:00 Moscow).
    opening = hours.next_opening(ekb, datetime(2026, 11, 24, 17, 30, tzinfo=MSK))
    assert opening == datetime(2026, 11, 25, 9, 0, tzinfo=EKB)
    assert opening.utcoffset().total_seconds() == 5 * 3600
    assert hours.is_open(spec(), datetime(2026, 11, 24, 17, 30, tzinfo=MSK))
    assert not hours.is_open(ekb, datetime(2026, 11, 24, 17, 30, tzinfo=MSK))


def test_never_open_department_has_no_next_opening():
    assert hours.next_opening(spec(hours=((),) * 7), datetime(2026, 11, 24, 12, 0, tzinfo=MSK)) is None


def test_no_hours_means_around_the_clock_except_holidays():
    always = spec(hours=None)
    assert hours.is_open(always, datetime(2026, 11, 29, 3, 0, tzinfo=MSK))
    assert not hours.is_open(always, datetime(2027, 1, 1, 3, 0, tzinfo=MSK))


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        hours.is_open(spec(), datetime(2026, 11, 24, 12, 0))


@pytest.mark.parametrize("text,expected", [
    ("09:00-19:00", ((540, 1140),)),
    ("00:00-24:00", ((0, 1440),)),
    ("13:00-18:00, 09:00-12:00", ((540, 720), (780, 1080))),
    ("closed", ()),
])
def test_parse_ranges(text, expected):
    assert hours.parse_ranges(text) == expected


@pytest.mark.parametrize("text,message", [
    ("22:00-06:00", "overnight ranges are not supported"),
    ("9-19", "expected HH:MM-HH:MM"),
    ("25:00-26:00", "no such time"),
    ("09:00-12:00,11:00-13:00", "overlap"),
])
def test_parse_ranges_rejects(text, message):
    with pytest.raises(ValueError, match=message):
        hours.parse_ranges(text)


def test_day_keys():
    assert hours.parse_day_key("mon-fri") == [0, 1, 2, 3, 4]
    assert hours.parse_day_key("sat") == [5]
    assert hours.parse_day_key("sat,sun") == [5, 6]
    assert hours.parse_day_key("daily") == list(range(7))
    with pytest.raises(ValueError):
        hours.parse_day_key("fri-mon")
    with pytest.raises(ValueError):
        hours.parse_day_key("monday")
