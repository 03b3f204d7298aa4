"""The client's local call window: when the outbound robot may ring him.

    tz = client_timezone(card.timezone, "+73432123456")       # ZoneInfo("Asia/Yekaterinburg")
    window = CallWindow()                                     # 10:00-19:00, working days, RU holidays
    window.is_open(now, tz)                                   # now: timezone-aware, any zone
    window.next_open(now, tz)                                 # UTC-aware; ``now`` itself if open
    window.clamp(candidate, tz)                               # UTC-aware; moved into the window

Pure: no clock is read here, the caller passes ``now``. The calendar (weekends, Russian public
holidays, transferred days off, transferred working Saturdays) is the one routing/hours.py uses
for departments; a window is turned into an hours spec and handed to that module.

Time zone of a client, first that works:
1. the IANA zone on his card (``"Asia/Yekaterinburg"``); an unknown or malformed name is ignored;
2. the phone number's zone from libphonenumber (geographic numbers are exact: +7 343 ->
   Asia/Yekaterinburg, +7 383 -> Asia/Novosibirsk). Two corrections on top of the library:
   - a Russian number the library maps to ``Europe/Bucharest`` (the Kaliningrad code 4012 and
     the rest of the oblast) is Europe/Kaliningrad: same UTC+2 in winter, but Bucharest moves
     its clocks in summer and Kaliningrad does not - exactly the "wrong GMT offset" that makes
     a robot call at the wrong hour;
   - a mobile number (+7 9xx) is not tied to a region, so the library lists every zone of the
     country. Then we take the country's capital zone (RU: Europe/Moscow, KZ: Asia/Almaty),
     else Europe/Moscow if listed, else the alphabetically first zone - deterministic, and
     the card's zone is how an operator fixes a client who lives elsewhere;
3. Europe/Moscow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_tz

from routing import hours

__all__ = ["DEFAULT_TZ", "CallWindow", "client_timezone"]

DEFAULT_TZ = ZoneInfo("Europe/Moscow")
# Country -> the zone used when a number of that country maps to several zones (mobiles).
_CAPITAL = {"RU": "Europe/Moscow", "KZ": "Asia/Almaty"}
# libphonenumber data quirks: (region, zone it reports) -> the zone that is right for it.
_FIX = {("RU", "Europe/Bucharest"): "Europe/Kaliningrad"}


def _zone(name: str | None) -> ZoneInfo | None:
    if not name or not isinstance(name, str):
        return None
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def phone_timezone(e164: str) -> ZoneInfo | None:
    """The zone of a phone number per the rules above; None when the number tells nothing."""
    try:
        number = phonenumbers.parse(e164, "RU")
    except phonenumbers.NumberParseException:
        return None
    region = phonenumbers.region_code_for_number(number)
    names = [n for n in phone_tz.time_zones_for_number(number) if n != phone_tz.UNKNOWN_TIMEZONE]
    names = sorted({_FIX.get((region, n), n) for n in names})
    if not names:
        return None
    if len(names) == 1:
        return _zone(names[0])
    for preferred in (_CAPITAL.get(region or ""), DEFAULT_TZ.key):
        if preferred in names:
            return _zone(preferred)
    return _zone(names[0])


def client_timezone(card_tz: str | None, e164: str) -> ZoneInfo:
    """The card's IANA zone if valid, else the phone number's zone, else Europe/Moscow."""
    return _zone(card_tz) or phone_timezone(e164) or DEFAULT_TZ


def _minutes(value: time) -> int:
    if value.second or value.microsecond:
        raise ValueError(f"call window times are whole minutes, got {value.isoformat()}")
    return value.hour * 60 + value.minute


@dataclass(frozen=True)
class _Spec:
    """A CallWindow in one zone, shaped as routing.hours.HoursSpec."""
    timezone: str
    hours: tuple[hours.Ranges, ...]
    holidays: str | None
    closed_dates: tuple[str, ...] = ()
    open_dates: tuple[tuple[str, hours.Ranges], ...] = ()


@dataclass(frozen=True)
class CallWindow:
    """Daily ``start``-``end`` (end exclusive) in the client's zone.

    ``working_days_only``: Monday-Friday only (a transferred working Saturday counts as a working
    day when ``holidays="RU"``); ``holidays="RU"``: Russian public holidays and transferred days
    off are closed; ``None`` switches holidays off.
    """
    start: time = time(10)
    end: time = time(19)
    working_days_only: bool = True
    holidays: str | None = "RU"
    _ranges: tuple[hours.Ranges, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        start, end = _minutes(self.start), _minutes(self.end)
        if end <= start:
            raise ValueError(f"call window end {self.end:%H:%M} must be after start {self.start:%H:%M}")
        if self.holidays not in (None, "RU"):
            raise ValueError(f"unknown holiday calendar {self.holidays!r}: expected RU or none")
        day = ((start, end),)
        weekly = (day,) * 5 + (((), ()) if self.working_days_only else (day,) * 2)
        object.__setattr__(self, "_ranges", weekly)

    def _spec(self, tz: ZoneInfo) -> _Spec:
        return _Spec(timezone=tz.key, hours=self._ranges, holidays=self.holidays)

    def is_working_day(self, day: date, tz: ZoneInfo) -> bool:
        """Whether the window opens at all on the local date ``day``."""
        return bool(hours.ranges_on(self._spec(tz), day))

    def is_open(self, now: datetime, tz: ZoneInfo) -> bool:
        return hours.is_open(self._spec(tz), now)

    def next_open(self, now: datetime, tz: ZoneInfo) -> datetime:
        """The first moment at or after ``now`` inside the window (``now`` if open), UTC-aware."""
        found = hours.next_opening(self._spec(tz), now)
        if found is None:  # cannot happen with a weekly window; kept explicit
            raise ValueError("the call window never opens")
        return found.astimezone(timezone.utc)

    def clamp(self, candidate: datetime, tz: ZoneInfo) -> datetime:
        """``candidate`` if inside the window; before the start on a working day -> that day's
        start; after the end or on a day off -> the next working day's start. UTC-aware."""
        return self.next_open(candidate, tz)

    def next_working_day_at(self, now: datetime, tz: ZoneInfo, at: time) -> datetime:
        """``at`` local time on the first working day after ``now``'s local date, clamped into
        the window (so 09:00 with a 10:00 start gives 10:00). UTC-aware."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        day = now.astimezone(tz).date() + timedelta(days=1)
        for _ in range(hours.HORIZON_DAYS):
            if self.is_working_day(day, tz):
                return self.clamp(datetime.combine(day, at, tzinfo=tz), tz)
            day += timedelta(days=1)
        raise ValueError("the call window never opens")
