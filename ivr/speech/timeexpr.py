"""Russian spoken time expressions -> a moment inside the client's call window.

The other direction of ivr/speech/normalize.py: a transcript ("завтра в три", "в пятницу в 15:30",
"полдесятого", "двадцать четвертого") becomes canonical text with digits (``canonical``), the time
expression in it is found (``find``) and resolved against an injected ``now`` in the client's zone
into a timezone-aware datetime inside a ``CallWindow`` (``resolve``). Pure: no clock, no I/O.

Canonical text: lower case, ё -> е, punctuation removed, clause boundaries (, . ; ! ? —) kept as a
standalone ``|`` token, cardinal numerals in words -> digits ("пятнадцать тридцать" -> "15 30"),
ordinals -> ``N-го`` ("двадцать четвертого" -> "24-го", Whisper's "24-е" -> "24-го"), clock
times "15:30" / "15.30" kept as ``15:30``. See docs/understanding.md for the rules and defaults.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from ivr.notify.window import CallWindow

__all__ = ["LATER_TODAY", "PARTS_OF_DAY", "TIME_VOCABULARY", "TimeExpr", "canonical", "find", "hour24",
           "resolve"]

# --------------------------------------------------------------------------------------------------
# numerals in words

_CARDINALS: dict[int, tuple[str, ...]] = {
    0: ("ноль", "нуль"),
    1: ("один", "одна", "одну", "одного", "одной", "одному"),
    2: ("два", "две", "двух", "двум"),
    3: ("три", "трех", "трем"),
    4: ("четыре", "четырех", "четырем"),
    5: ("пять", "пяти"),
    6: ("шесть", "шести"),
    7: ("семь", "семи"),
    8: ("восемь", "восьми"),
    9: ("девять", "девяти"),
    10: ("десять", "десяти"),
    11: ("одиннадцать", "одиннадцати"),
    12: ("двенадцать", "двенадцати"),
    13: ("тринадцать", "тринадцати"),
    14: ("четырнадцать", "четырнадцати"),
    15: ("пятнадцать", "пятнадцати"),
    16: ("шестнадцать", "шестнадцати"),
    17: ("семнадцать", "семнадцати"),
    18: ("восемнадцать", "восемнадцати"),
    19: ("девятнадцать", "девятнадцати"),
    20: ("двадцать", "двадцати"),
    30: ("тридцать", "тридцати"),
    40: ("сорок", "сорока"),
    50: ("пятьдесят", "пятидесяти"),
}
CARDINAL_WORDS: dict[str, int] = {w: n for n, ws in _CARDINALS.items() for w in ws}

_ORD_STEMS = {
    1: "перв", 2: "втор", 3: "трет", 4: "четверт", 5: "пят", 6: "шест", 7: "седьм", 8: "восьм",
    9: "девят", 10: "десят", 11: "одиннадцат", 12: "двенадцат", 13: "тринадцат", 14: "четырнадцат",
    15: "пятнадцат", 16: "шестнадцат", 17: "семнадцат", 18: "восемнадцат", 19: "девятнадцат",
    20: "двадцат", 30: "тридцат",
}
_ORD_END = r"(?:ого|ое|ый|ой|ом|ому|ьего|ье|ий|ьем|ьему)"
_ORDINAL = re.compile(rf"^({'|'.join(sorted(_ORD_STEMS.values(), key=len, reverse=True))}){_ORD_END}$")
_STEM_VALUE = {s: n for n, s in _ORD_STEMS.items()}


def _ordinal_value(word: str) -> int | None:
    m = _ORDINAL.match(word)
    if not m:
        return None
    n = _STEM_VALUE[m.group(1)]
    if n == 3 and not word.startswith("треть"):  # "третий/третьего/третье" only
        return None if word not in ("третий",) else 3
    return n


_MONTH_RE = (r"(января|февраля|марта|апреля|мая|июня|июля|августа|сентября|октября|ноября|декабря)")
_MONTH_INDEX = {m: i + 1 for i, m in enumerate(
    ("января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа", "сентября", "октября",
     "ноября", "декабря"))}

WEEKDAYS: dict[str, int] = {
    "понедельник": 0, "понедельника": 0, "вторник": 1, "вторника": 1, "среду": 2, "среда": 2,
    "среды": 2, "четверг": 3, "четверга": 3, "пятницу": 4, "пятница": 4, "пятницы": 4,
    "субботу": 5, "суббота": 5, "субботы": 5, "воскресенье": 6, "воскресенья": 6,
}

# Words the time parser knows; understand.py corrects ASR typos towards these (exact forms only).
TIME_VOCABULARY: frozenset[str] = frozenset(
    list(CARDINAL_WORDS) + list(WEEKDAYS) + list(_MONTH_INDEX) + [
        "сегодня", "завтра", "послезавтра", "утром", "вечером", "днем", "обеда", "обед", "полчаса",
        "полтора", "часа", "часов", "минут", "минуты", "через", "следующей", "следующий",
        "следующую", "неделе", "неделю", "числа", "полдень", "половине", "половина", "четверти",
        "первого", "второго", "третьего", "четвертого", "пятого", "шестого", "седьмого",
        "восьмого", "девятого", "десятого", "одиннадцатого", "двенадцатого", "двадцатого",
        "тридцатого", "недели", "неделю", "недель", "начале", "часам", "часу", "час", "минуту",
        "дня", "дней", "день", "утра", "вечера", "ночи", "после", "около", "числа", "часиков",
        "ровно", "пол", "без", "будущей", "следующую", "той", "этой", "эту", "обеденное",
        "вечерком", "утречком", "поутру", "пару", "несколько", "середине", "концу", "ближе",
    ])

# --------------------------------------------------------------------------------------------------
# normalisation


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFC", text or "").lower().replace("ё", "е")
    text = re.sub(r"[\u200b-\u200d\u2060\ufeff\u00ad]", "", text)
    return text


_PHRASES: list[tuple[re.Pattern, str]] = [(re.compile(p), r) for p, r in [
    (r"\bпосле\s+завтра\b", "послезавтра"),
    (r"\bпол\s*-?\s*(?=(?:перв|втор|трет|четверт|пят|шест|седьм|восьм|девят|десят|одиннадцат|двенадцат)\w*\b)", "пол "),
    (r"\bв\s+первой\s+половине\s+дня\b", "впервойполовинедня"),
    (r"\bво\s+второй\s+половине\s+дня\b", "вовторойполовинедня"),
    (r"\bчерез\s+полтора\s+часа\b", "через 90 минут"),
    (r"\bчерез\s+полчаса\b", "через 30 минут"),
    (r"\bчерез\s+пол\s+часа\b", "через 30 минут"),
    (r"\bчерез\s+часик\b", "через час"),
    (r"\bзанят[аы]?\s+до\b", "свободен после"),          # "занят до пяти" = after five
]]


def canonical(text: str) -> list[str]:
    """Tokens of the canonical text (see the module docstring); ``|`` marks a clause boundary."""
    t = _clean(text)
    t = re.sub(r"(?<=\d)\s*[:.]\s*(?=\d{2}\b)", ":", t)                 # 15.30 / 15 : 30 -> 15:30
    t = re.sub(r"\b(\d{1,2})-(\d{2})\b(?!\s*(?:числ|го|е\b))", r"\1:\2", t)  # 15-30 -> 15:30
    t = re.sub(r"\b(\d{1,2})\s*-?\s*(?:го|ого|е|ое|ье|ый|й|ом)\b", r"\1-го", t)  # 24-е / 24го -> 24-го
    t = re.sub(r"(?<=[^\W\d_])-(?=[^\W\d_])", " ", t)                   # да-да, что-то -> two words
    t = re.sub(r"[,.;!?…—–]+|\s-+\s", " | ", t)
    t = re.sub(r"[^\w\s:|-]", " ", t)
    t = re.sub(r"(?<!\d)-|-(?!го)", " ", t)
    for pattern, repl in _PHRASES:
        t = pattern.sub(repl, t)
    tokens = t.split()
    return _numerals(tokens)


def _numerals(tokens: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(tokens):
        w = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if w in CARDINAL_WORDS:
            n = CARDINAL_WORDS[w]
            if n in (20, 30, 40, 50):
                if nxt in CARDINAL_WORDS and 1 <= CARDINAL_WORDS[nxt] <= 9:
                    out.append(str(n + CARDINAL_WORDS[nxt]))
                    i += 2
                    continue
                o = _ordinal_value(nxt)
                if o is not None and 1 <= o <= 9:
                    out.append(f"{n + o}-го")
                    i += 2
                    continue
            out.append(str(n))
            i += 1
            continue
        o = _ordinal_value(w)
        if o is not None:
            out.append(f"{o}-го")
        else:
            out.append(w)
        i += 1
    return out


# --------------------------------------------------------------------------------------------------
# finding a time expression

# part of day -> its default local time (then moved into the window by CallWindow.clamp)
PARTS_OF_DAY: dict[str, time] = {
    "morning": time(9),         # "утром", "с утра": the morning slot 09:00-12:00, window start if later
    "before_lunch": time(11),   # "до обеда", "в первой половине дня"
    "lunch": time(13),          # "в обед", "днем"
    "after_lunch": time(14),    # "после обеда", "во второй половине дня"
    "late_afternoon": time(16),  # "ближе к вечеру"
    "evening": time(17),        # "вечером", "к вечеру"
}
_PART_RE: list[tuple[str, str]] = [
    (r"впервойполовинедня", "before_lunch"),
    (r"вовторойполовинедня", "after_lunch"),
    (r"(?:ближе\s+)?к\s+концу\s+дня|ближе\s+к\s+вечеру|под\s+вечер", "late_afternoon"),
    (r"после\s+обеда|после\s+обед\w*|послеобеда", "after_lunch"),
    (r"до\s+обеда|с\s+утра\s+до\s+обеда", "before_lunch"),
    (r"в\s+обед|в\s+обеденное\s+время|днем|днём|в\s+середине\s+дня", "lunch"),
    (r"с\s+утра|утром|поутру|с\s+утреца|утречком|рано\s+утром", "morning"),
    (r"вечером|к\s+вечеру|вечерком|вечер", "evening"),
]

LATER_TODAY = timedelta(hours=1)  # "сегодня" with no hour: an hour from now


@dataclass
class TimeExpr:
    """What was found in an utterance; ``resolve`` turns it into a datetime."""
    minutes_from_now: int | None = None   # "через два часа" = 120
    days_from_today: int | None = None    # сегодня 0, завтра 1, послезавтра 2, "через 3 дня" 3
    weekday: int | None = None            # 0 = Monday
    week_shift: int = 0                   # 1: "следующий/на следующей неделе"
    next_week: bool = False               # "на следующей неделе" without a weekday
    day_of_month: int | None = None
    month: int | None = None
    clock: tuple[int, int] | None = None  # 24-hour local time
    part: str | None = None               # a PARTS_OF_DAY key
    spans: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.spans

    @property
    def has_day(self) -> bool:
        return (self.days_from_today is not None or self.weekday is not None or self.next_week
                or self.day_of_month is not None)


def hour24(h: int, modifier: str | None = None, part: str | None = None) -> int | None:
    """Spoken hour -> 0..23. Business reading without a hint: 1..7 are afternoon ("в три" = 15);
    "утра" keeps the hour, "дня" adds 12 up to 7, "вечера" adds 12; a part of day from the
    afternoon on makes 1..11 afternoon/evening hours."""
    if not 0 <= h <= 24:
        return None
    if h == 24:
        return 0
    if modifier in ("утра", "ночи"):
        return 0 if h == 12 and modifier == "ночи" else h
    if modifier == "дня":
        return h + 12 if 1 <= h <= 7 else h
    if modifier == "вечера":
        return h + 12 if h < 12 else h
    if part in ("lunch",):
        return h + 12 if 1 <= h <= 7 else h
    if part in ("after_lunch", "late_afternoon", "evening"):
        return h + 12 if 1 <= h <= 11 else h
    if part in ("morning", "before_lunch"):
        return h
    return h + 12 if 1 <= h <= 7 else h


_PREP = r"(?:в|во|к|около|на|после|часов\s+в|часа\s+в|где\s+то\s+в|примерно\s+в|часиков\s+в|ровно\s+в)"
_MOD = r"(утра|дня|вечера|ночи)"
_N = r"(\d{1,2})"


def _take(s: str, m: re.Match) -> str:
    return s[:m.start()] + " " * (m.end() - m.start()) + s[m.end():]


def find(tokens: list[str]) -> TimeExpr:
    """The time expression in canonical tokens (clause marks are ignored)."""
    s = " " + " ".join(t for t in tokens if t != "|") + " "
    ex = TimeExpr()

    def scan(pattern: str, handle) -> None:
        nonlocal s
        for m in list(re.finditer(rf"(?<!\S){pattern}(?!\S)", s)):
            if handle(m) is not False:
                ex.spans.append(" ".join(m.group(0).split()))
                s = _take(s, m)

    # offsets from now
    def offset(m: re.Match) -> bool | None:
        raw, unit = m.group("n"), m.group("unit")
        n = {"пару": 2, "пара": 2, "несколько": 3, None: 1}.get(raw) if not (raw and raw.isdigit()) else int(raw)
        if n is None or not 0 < n <= 600:  # "через 99999 часов" is not a callback time
            return False
        if unit.startswith("мин"):
            ex.minutes_from_now = n
        elif unit.startswith("час"):
            extra = int(m.group("min")) if m.group("min") else 0
            ex.minutes_from_now = n * 60 + extra
        elif unit.startswith("нед"):
            ex.days_from_today = 7 * n
        else:
            ex.days_from_today = n
        return None
    scan(r"через\s+(?:(?P<n>\d+|пару|пара|несколько)\s+)?(?P<unit>минут\w*|час\w*|дн\w*|день|недел\w*)"
         r"(?:\s+(?P<min>\d{1,2})\s+минут\w*)?", offset)
    def offset_after(m: re.Match) -> bool:
        n = int(m.group("n"))
        if not 0 < n <= 600:
            return False
        ex.minutes_from_now = n * (60 if m.group("unit").startswith("час") else 1)
        return True
    scan(r"(?P<unit>минут|часа|часов|час)\s+через\s+(?P<n>\d+)", offset_after)

    # clock times that look like dates: half past, quarter to
    def half(m: re.Match) -> bool:
        h = int(m.group(1)) - 1
        if not 0 <= h <= 23:
            return False
        ex.clock = (h if h else 12, 30)
        ex._mod = m.group(2)  # type: ignore[attr-defined]
        return True
    scan(rf"(?:в\s+)?(?:пол|половин\w*)\s+{_N}-го(?:\s+{_MOD})?", half)

    def quarter_to(m: re.Match) -> bool:
        mins = 15 if m.group(1) == "четверти" else int(m.group(1))
        h = int(m.group(2))
        if not (1 <= mins <= 30 and 1 <= h <= 12):
            return False
        ex.clock = (h - 1 if h > 1 else 12, 60 - mins)
        ex._mod = m.group(3)  # type: ignore[attr-defined]
        return True
    scan(rf"(?:в\s+)?без\s+(четверти|\d{{1,2}})(?:\s+минут\w*)?\s+{_N}(?:\s+{_MOD})?", quarter_to)

    # dates
    def dated(m: re.Match) -> bool:
        d, mo = int(m.group(1)), _MONTH_INDEX[m.group(2)]
        if not 1 <= d <= 31:
            return False
        ex.day_of_month, ex.month = d, mo
        return True
    scan(rf"(?:на\s+)?{_N}(?:-го)?\s+{_MONTH_RE}", dated)

    def dom(m: re.Match) -> bool:
        d = int(m.group(1))
        if not 1 <= d <= 31:
            return False
        ex.day_of_month = d
        return True
    scan(rf"(?:на\s+)?{_N}(?:-го)?\s+числа", dom)
    scan(rf"(?:на\s+)?{_N}-го", dom)

    # days
    days = {"сегодня": 0, "завтра": 1, "послезавтра": 2}
    scan(r"(?:на\s+)?(?:сегодня|послезавтра|завтра)", lambda m: setattr(
        ex, "days_from_today", days[m.group(0).split()[-1]]))

    def weekday(m: re.Match) -> None:
        ex.weekday = WEEKDAYS[m.group("wd")]
        if m.group("which") and m.group("which").startswith(("следующ", "будущ")):
            ex.week_shift = 1
    scan(r"(?:(?:в|во|на|к)\s+)?(?:(?P<which>следующ\w*|будущ\w*|эт\w+|ближайш\w*)\s+)?(?P<wd>"
         + "|".join(sorted(WEEKDAYS, key=len, reverse=True)) + r")", weekday)
    scan(r"(?:на|в)\s+(?:следующей|будущей|той|другой)\s+неделе|(?:на|в)\s+(?:следующую|будущую)\s+неделю"
         r"|в\s+начале\s+(?:следующей\s+)?недели", lambda m: setattr(ex, "next_week", True))

    # parts of day (before clock times: they decide how an hour is read)
    for pattern, name in _PART_RE:
        scan(pattern, lambda m, name=name: setattr(ex, "part", name))

    mod_holder: dict[str, str | None] = {"mod": getattr(ex, "_mod", None)}

    def clock(m: re.Match) -> bool:
        h = int(m.group("h"))
        mi = m.group("m1") or m.group("m2") or m.group("m3")
        mi = int(mi) if mi else 0
        if not (0 <= h <= 24 and 0 <= mi <= 59):
            return False
        if not (m.group("prep") or m.group("m1") or m.group("hrs") or m.group("mod") or m.group("m3")):
            return False
        ex.clock = (h, mi)
        mod_holder["mod"] = m.group("mod")
        return True
    scan(rf"(?:(?P<prep>{_PREP})\s+)?(?P<h>\d{{1,2}})(?::(?P<m1>\d{{2}})|\s+(?P<m2>\d{{2}}))?"
         rf"(?:\s+(?P<hrs>час|часа|часов|часам|часу))?(?:\s+(?P<m3>\d{{1,2}})\s+минут\w*)?(?:\s+(?P<mod>утра|дня|вечера|ночи))?",
         clock)

    def one_oclock(m: re.Match) -> None:
        ex.clock = (1, 0)
        mod_holder["mod"] = m.group(1)
    scan(rf"(?:в|к|около|после)\s+(?:час|часу)(?:\s+{_MOD})?", one_oclock)
    scan(r"(?:в|к|около)?\s*полдень|в\s+12\s+дня", lambda m: setattr(ex, "clock", (12, 0)))
    if ex.clock is None and ex.empty:  # the whole answer is a bare time: "десять", "15 30"
        bare = re.fullmatch(r"\s*(?:ну\s+)?(?:давайте\s+)?(\d{1,2})(?:\s+(\d{2}))?\s*", s)
        if bare and int(bare.group(1)) <= 23 and (not bare.group(2) or int(bare.group(2)) <= 59):
            ex.clock = (int(bare.group(1)), int(bare.group(2) or 0))
            ex.spans.append(bare.group(0).strip())

    if ex.clock is not None:
        h = hour24(ex.clock[0], mod_holder["mod"], ex.part)
        if h is None:
            ex.clock = None
        else:
            ex.clock = (h, ex.clock[1])
    if hasattr(ex, "_mod"):
        del ex._mod  # type: ignore[attr-defined]
    return ex


# --------------------------------------------------------------------------------------------------
# resolving


def _add_month(d: date) -> tuple[int, int]:
    return (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)


def _safe_date(y: int, m: int, d: int) -> date | None:
    try:
        return date(y, m, d)
    except ValueError:
        return None


def resolve(ex: TimeExpr, *, now: datetime, tz: ZoneInfo, window: CallWindow) -> datetime | None:
    """The moment ``ex`` names, moved into ``window`` (client's local time, timezone-aware).

    Rules (docs/understanding.md): "через N минут/часов" = now + N; a day without an hour takes the
    window start (or the part of day's hour); an hour without a day is today, or tomorrow if it
    has passed; a closed day (weekend, holiday) moves to the next working day keeping the hour; the
    result is finally clamped into the window (CallWindow.clamp)."""
    if ex.empty:
        return None
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    local_now = now.astimezone(tz)
    today = local_now.date()
    if ex.minutes_from_now is not None:
        candidate = local_now + timedelta(minutes=ex.minutes_from_now)
        return window.clamp(candidate, tz).astimezone(tz)

    explicit_day = True
    if ex.day_of_month is not None:
        if ex.month is not None:
            day = _safe_date(today.year, ex.month, ex.day_of_month)
            if day is None:
                return None
            if day < today:
                day = _safe_date(today.year + 1, ex.month, ex.day_of_month)
        else:
            day = _safe_date(today.year, today.month, ex.day_of_month)
            if day is None or day < today:
                y, mo = _add_month(today)
                day = _safe_date(y, mo, ex.day_of_month)
        if day is None:
            return None
    elif ex.weekday is not None or ex.next_week:
        monday = today - timedelta(days=today.weekday())
        if ex.next_week or ex.week_shift:
            day = monday + timedelta(days=7 + (ex.weekday or 0))
        else:
            day = monday + timedelta(days=ex.weekday)
            if day <= today:
                day += timedelta(days=7)
    elif ex.days_from_today is not None:
        day = today + timedelta(days=ex.days_from_today)
    else:
        day = today
        explicit_day = False

    if ex.clock is not None:
        at = time(*ex.clock)
    elif ex.part is not None:
        at = PARTS_OF_DAY[ex.part]
    elif day == today:  # "сегодня" alone: later today
        candidate = local_now + LATER_TODAY
        return window.clamp(candidate, tz).astimezone(tz)
    else:
        at = window.start
    candidate = datetime.combine(day, at, tzinfo=tz)
    if candidate <= local_now and (day == today or not explicit_day):
        candidate = datetime.combine(day + timedelta(days=1), at, tzinfo=tz)
    for _ in range(400):  # a closed day moves to the next working day, the hour is kept
        if window.is_working_day(candidate.date(), tz):
            break
        candidate = datetime.combine(candidate.date() + timedelta(days=1), at, tzinfo=tz)
    return window.clamp(candidate, tz).astimezone(tz)




# every literal word of the part-of-day patterns is known too (so fuzzy matching leaves it alone)
TIME_VOCABULARY = TIME_VOCABULARY | frozenset(
    re.findall(r"[а-я]{3,}", " ".join(p for p, _ in _PART_RE)) + ["вечеру", "вечер", "утреца", "обеду"])
