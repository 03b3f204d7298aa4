"""Business hours of a department: weekly ranges in its own time zone, Russian public holidays,
explicit extra closed and open dates.

The weekly table is ``hours[weekday]`` (0 = Monday) -> tuple of ``(start, end)`` minutes since
local midnight, ``start < end <= 1440``. Overnight ranges (``22:00-06:00``) are rejected by the
parser: write them as two ranges on two days (``mon: "22:00-24:00"``, ``tue: "00:00-06:00"``).

Which day's ranges apply on a date, first match wins:
1. ``closed_dates`` of the department: closed all day;
2. ``open_dates``: the ranges given for that date;
3. with ``holidays: RU``: a Russian public holiday or transferred day off (holidays.Russia)
   is closed; a transferred working Saturday/Sunday (e.g. 2027-02-20) uses Friday's ranges;
4. the weekly table.

A department without ``hours`` is open around the clock (holidays still apply when set).
Pure functions over the spec; ``now`` must be timezone-aware.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo

import holidays

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS = tuple(((0, 1440),) for _ in DAYS)
Ranges = tuple[tuple[int, int], ...]
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
# How far ahead next_opening looks before giving up (a department closed for good).
HORIZON_DAYS = 400


class HoursSpec(Protocol):
    timezone: str
    hours: tuple[Ranges, ...] | None
    holidays: str | None
    closed_dates: tuple[str, ...]
    open_dates: tuple[tuple[str, Ranges], ...]


def parse_range(text: str) -> tuple[int, int]:
    """``"09:00-19:00"`` -> ``(540, 1140)``; ValueError with the reason otherwise."""
    match = _RANGE.match(text)
    if not match:
        raise ValueError(f"bad time range {text!r}: expected HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        raise ValueError(f"bad time range {text!r}: no such time of day")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if end <= start:
        raise ValueError(f"bad time range {text!r}: the end must be after the start "
                         "(overnight ranges are not supported: split them at 24:00)")
    return start, end


def parse_ranges(value: str | list[str]) -> Ranges:
    """``"closed"``, one range, a comma-separated string or a list of ranges, sorted; overlaps
    are a ValueError."""
    items = value if isinstance(value, list) else [value]
    ranges: list[tuple[int, int]] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"bad time range {item!r}: expected a string like \"09:00-19:00\"")
        if item.strip() == "closed":
            if len(items) > 1:
                raise ValueError("\"closed\" cannot be combined with time ranges")
            return ()
        for part in item.split(","):
            ranges.append(parse_range(part))
    ranges.sort()
    for (_, end), (start, _) in zip(ranges, ranges[1:]):
        if start < end:
            raise ValueError("time ranges overlap")
    return tuple(ranges)


def parse_day_key(key: str) -> list[int]:
    """``"mon-fri"`` -> [0..4]; ``"sat"`` -> [5]; ``"sat,sun"`` -> [5, 6]; ``"daily"`` -> all."""
    days: list[int] = []
    for part in key.replace(" ", "").split(","):
        if part == "daily":
            days.extend(range(7))
            continue
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"bad day {part!r}: expected mon..sun, a range like mon-fri, or daily")
        a, b = DAYS.index(first), DAYS.index(last or first)
        if b < a:
            raise ValueError(f"bad day range {part!r}: must run forwards (mon-fri, not fri-mon)")
        days.extend(range(a, b + 1))
    return days


def format_ranges(ranges: Ranges) -> str:
    if not ranges:
        return "closed"
    return ",".join(f"{s // 60:02d}:{s % 60:02d}-{e // 60:02d}:{e % 60:02d}" for s, e in ranges)


@lru_cache(maxsize=16)
def _russia(year: int) -> holidays.HolidayBase:
    return holidays.Russia(years=year)


def ranges_on(spec: HoursSpec, day: date) -> Ranges:
    """The opening ranges of ``spec`` on the local date ``day``."""
    iso = day.isoformat()
    if iso in spec.closed_dates:
        return ()
    for open_day, ranges in spec.open_dates:
        if open_day == iso:
            return ranges
    weekly = spec.hours or ALWAYS
    if spec.holidays == "RU":
        calendar = _russia(day.year)
        if day in calendar:
            return ()
        if day in getattr(calendar, "weekend_workdays", ()):
            return weekly[4]  # a transferred working Saturday/Sunday works Friday's hours
    return weekly[day.weekday()]


def _local(spec: HoursSpec, now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(ZoneInfo(spec.timezone))


def is_open(spec: HoursSpec, now: datetime) -> bool:
    local = _local(spec, now)
    minute = local.hour * 60 + local.minute + local.second / 60
    return any(start <= minute < end for start, end in ranges_on(spec, local.date()))


def next_opening(spec: HoursSpec, now: datetime) -> datetime | None:
    """The first moment at or after ``now`` when ``spec`` is open (``now`` itself if open), in
    the department's time zone; None if it does not open within HORIZON_DAYS."""
    local = _local(spec, now)
    if is_open(spec, now):
        return local
    zone = ZoneInfo(spec.timezone)
    for offset in range(HORIZON_DAYS + 1):
        day = local.date() + timedelta(days=offset)
        for start, _end in ranges_on(spec, day):
            if start >= 1440:
                continue
            candidate = datetime.combine(day, time(start // 60, start % 60), tzinfo=zone)
            if candidate > local:
                return candidate
    return None
