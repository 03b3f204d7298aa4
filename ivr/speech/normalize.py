"""Normalisation of written Russian for speech synthesis.

``normalize_for_speech(text)`` turns what a manager or a template writes ("07.02", "1 234,50 руб.",
"ООО", "№ 123", "+7 (495) 123-45-67") into words a TTS engine (Festival + festvox-ru, espeak-ng)
reads correctly. The function is pure (no I/O), never raises, and is idempotent: its output has no
digits and none of the abbreviations it expands, so normalising it again changes nothing.

Decisions (see docs/templates.md for the admin-facing description):

* Dates "07.02", "07.02.2027", "7.2.27", "7 февраля", "7 февраля 2027 г." -> "седьмого февраля"
  (+ " две тысячи двадцать седьмого года" when a year is written). With ``today`` given, a year equal
  to ``today.year`` is not read (people do not say the current year); a two-digit year is 20YY.
  A "DD.MM" pair is always a date, never a decimal (7.02 -> "седьмого февраля").
* Times "10:30" -> "десять часов тридцать минут", "10:00" -> "десять часов", "9:05" ->
  "девять часов пять минут" (always the long form, hours and minutes named).
* Amounts "1 234,50 руб.", "1234.50 ₽", "15 р.", "10 руб. 05 коп." -> "тысяча двести тридцать четыре
  рубля пятьдесят копеек"; zero kopecks are not read; 1000 -> "тысяча", 1 000 000 -> "один миллион".
* Numbers before рубль/копейка/штука/документ/день/час/минута/процент (and "шт.", "мин.") take the
  right gender (одна копейка, две штуки) and the noun is put into the form agreeing with the number
  (1 рубль, 2 рубля, 5 рублей; 21 документ, 22 документа). Only the nominative is produced: "до 3
  часов" becomes "до три часа" -- case from prepositions is out of scope; write "до трёх часов".
* Other integers are read as masculine cardinals ("нажмите 1" -> "нажмите один"); decimals as
  "три целых четырнадцать сотых"; "15%" -> "пятнадцать процентов"; "№ 123" -> "номер сто двадцать три".
* Phone numbers are read in groups separated by commas (pauses): "+7 (495) 123-45-67" -> "плюс семь,
  четыреста девяносто пять, сто двадцать три, сорок пять, шестьдесят семь"; a group with leading
  zeros reads them ("05" -> "ноль пять").
* Abbreviations: ООО -> "о-о-о", ЗАО -> "зэ-а-о", ПАО -> "пэ-а-о", АО -> "а-о", ИП -> "и-пэ",
  НДС -> "эн-дэ-эс", г. -> "город" (after a year: "года"), ул. -> "улица", д. -> "дом",
  т.е. -> "то есть", т.к. -> "так как", руб. -> "рублей", коп. -> "копеек", тел. -> "телефон",
  шт. -> "штук", мин. -> "минут", тыс. -> "тысяч".
* «Ёлочки», “lapki” and straight quotes are dropped; a dash between words ("—", "–", " - ") becomes
  a comma (a pause).
* E-mails: "info@any.ru" -> "info собака any точка ru"; URLs are reduced to their host:
  "https://www.any.ru/docs?x=1" -> "any точка ru" (the path cannot be dictated over the phone).
* Control and zero-width characters are removed; whitespace is collapsed.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from typing import Callable

__all__ = ["normalize_for_speech", "number_to_words", "ordinal_genitive", "plural_form"]

# --------------------------------------------------------------------------------------------------
# numbers

_UNITS_M = ["ноль", "один", "два", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять"]
_UNITS_F = ["ноль", "одна", "две", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять"]
_TEENS = ["десять", "одиннадцать", "двенадцать", "тринадцать", "четырнадцать", "пятнадцать",
          "шестнадцать", "семнадцать", "восемнадцать", "девятнадцать"]
_TENS = ["", "", "двадцать", "тридцать", "сорок", "пятьдесят", "шестьдесят", "семьдесят",
         "восемьдесят", "девяносто"]
_HUNDREDS = ["", "сто", "двести", "триста", "четыреста", "пятьсот", "шестьсот", "семьсот",
             "восемьсот", "девятьсот"]
# (one, few, many, gender) for thousands, millions, billions
_SCALES = [
    ("тысяча", "тысячи", "тысяч", "f"),
    ("миллион", "миллиона", "миллионов", "m"),
    ("миллиард", "миллиарда", "миллиардов", "m"),
]

_ORD_UNITS = ["", "первого", "второго", "третьего", "четвёртого", "пятого", "шестого", "седьмого",
              "восьмого", "девятого"]
_ORD_TEENS = ["десятого", "одиннадцатого", "двенадцатого", "тринадцатого", "четырнадцатого",
              "пятнадцатого", "шестнадцатого", "семнадцатого", "восемнадцатого", "девятнадцатого"]
_ORD_TENS = ["", "", "двадцатого", "тридцатого", "сорокового", "пятидесятого", "шестидесятого",
             "семидесятого", "восьмидесятого", "девяностого"]
_ORD_HUNDREDS = ["", "сотого", "двухсотого", "трёхсотого", "четырёхсотого", "пятисотого",
                 "шестисотого", "семисотого", "восьмисотого", "девятисотого"]
_ORD_THOUSANDS = {1: "тысячного", 2: "двухтысячного", 3: "трёхтысячного"}

_MONTHS_GEN = ["января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа",
               "сентября", "октября", "ноября", "декабря"]


def plural_form(n: int, one: str, few: str, many: str) -> str:
    """The noun form agreeing with the integer ``n``: 1 рубль, 2 рубля, 5 рублей, 11 рублей, 21 рубль."""
    n = abs(n)
    if 11 <= n % 100 <= 14:
        return many
    if n % 10 == 1:
        return one
    if 2 <= n % 10 <= 4:
        return few
    return many


def _under_thousand(n: int, gender: str) -> list[str]:
    words: list[str] = []
    h, rest = divmod(n, 100)
    if h:
        words.append(_HUNDREDS[h])
    if 10 <= rest < 20:
        words.append(_TEENS[rest - 10])
    else:
        t, u = divmod(rest, 10)
        if t:
            words.append(_TENS[t])
        if u:
            words.append((_UNITS_F if gender == "f" else _UNITS_M)[u] if gender != "n" or u != 1 else "одно")
    return words


def number_to_words(n: int, gender: str = "m") -> str:
    """Cardinal number in the nominative: gender "m" (один), "f" (одна, две) or "n" (одно).

    A leading single thousand is read "тысяча" (not "одна тысяча"); numbers of a trillion and more
    are read digit by digit."""
    if n < 0:
        return "минус " + number_to_words(-n, gender)
    if n == 0:
        return "ноль"
    if n >= 10**12:
        return " ".join(_UNITS_M[int(d)] for d in str(n))
    words: list[str] = []
    groups = []
    while n:
        n, g = divmod(n, 1000)
        groups.append(g)
    for idx in range(len(groups) - 1, 0, -1):
        g = groups[idx]
        if not g:
            continue
        one, few, many, g_gender = _SCALES[idx - 1]
        if idx == 1 and g == 1:
            words.append(one)
            continue
        words.extend(_under_thousand(g, g_gender))
        words.append(plural_form(g, one, few, many))
    if groups[0]:
        words.extend(_under_thousand(groups[0], gender))
    return " ".join(words)


def _ordinal_genitive_under_thousand(n: int) -> list[str]:
    """Words of 1..999 with the last one as a masculine genitive ordinal (двадцать седьмого)."""
    h, rest = divmod(n, 100)
    if rest == 0:
        return [_ORD_HUNDREDS[h]]
    words = [_HUNDREDS[h]] if h else []
    if 10 <= rest < 20:
        words.append(_ORD_TEENS[rest - 10])
    else:
        t, u = divmod(rest, 10)
        if u == 0:
            words.append(_ORD_TENS[t])
        else:
            if t:
                words.append(_TENS[t])
            words.append(_ORD_UNITS[u])
    return words


def ordinal_genitive(n: int) -> str:
    """Masculine/neuter genitive ordinal: 7 -> "седьмого", 2027 -> "две тысячи двадцать седьмого",
    2000 -> "двухтысячного". Supports 1..9999; other numbers fall back to the cardinal."""
    if not 1 <= n <= 9999:
        return number_to_words(n)
    th, rest = divmod(n, 1000)
    if rest == 0:
        return _ORD_THOUSANDS.get(th) or (number_to_words(th, "f") + " тысячного")
    prefix = number_to_words(th * 1000).split() if th else []
    return " ".join(prefix + _ordinal_genitive_under_thousand(rest))


# --------------------------------------------------------------------------------------------------
# nouns counted by numbers

# key -> (one, few, many, gender)
_NOUNS: dict[str, tuple[str, str, str, str]] = {
    "рубль": ("рубль", "рубля", "рублей", "m"),
    "копейка": ("копейка", "копейки", "копеек", "f"),
    "штука": ("штука", "штуки", "штук", "f"),
    "документ": ("документ", "документа", "документов", "m"),
    "день": ("день", "дня", "дней", "m"),
    "час": ("час", "часа", "часов", "m"),
    "минута": ("минута", "минуты", "минут", "f"),
    "процент": ("процент", "процента", "процентов", "m"),
}
# written forms (lower case) -> noun key; the nominative/genitive forms a counted noun takes
_NOUN_FORMS: dict[str, str] = {}
for _key, (_one, _few, _many, _g) in _NOUNS.items():
    for _form in (_one, _few, _many):
        _NOUN_FORMS[_form] = _key
_NOUN_FORMS.update({"руб.": "рубль", "руб": "рубль", "р.": "рубль", "₽": "рубль", "коп.": "копейка",
                    "коп": "копейка", "шт.": "штука", "шт": "штука", "мин.": "минута", "%": "процент",
                    "дн.": "день", "ч.": "час"})


def _counted(n: int, key: str) -> str:
    one, few, many, gender = _NOUNS[key]
    return f"{number_to_words(n, gender)} {plural_form(n, one, few, many)}"


def _decimal_words(int_part: str, frac_part: str) -> str:
    """3,14 -> "три целых четырнадцать сотых"; up to three decimals, more are read digit by digit."""
    i = int(int_part)
    frac_part = frac_part.rstrip("0") or "0"
    if frac_part == "0":
        return number_to_words(i)
    whole = f"{number_to_words(i, 'f')} {plural_form(i, 'целая', 'целых', 'целых')}"
    if len(frac_part) > 3:
        return whole + " " + " ".join(_UNITS_M[int(d)] for d in frac_part)
    f = int(frac_part)
    names = {1: ("десятая", "десятых"), 2: ("сотая", "сотых"), 3: ("тысячная", "тысячных")}[len(frac_part)]
    return f"{whole} {number_to_words(f, 'f')} {plural_form(f, names[0], names[1], names[1])}"


def _digit_group(group: str) -> str:
    """A phone group: "495" -> "четыреста девяносто пять", "05" -> "ноль пять", "00" -> "ноль ноль"."""
    zeros = len(group) - len(group.lstrip("0"))
    rest = group[zeros:]
    words = ["ноль"] * zeros
    if rest:
        words.append(number_to_words(int(rest)))
    return " ".join(words)


# --------------------------------------------------------------------------------------------------
# the passes

_SENTENCE_AFTER = re.compile(r"\s*$|\s+[\"«„“]?[A-ZА-ЯЁ]")


def _keep_stop(m: re.Match, spoken: str) -> str:
    """An abbreviation's dot that also ends the sentence ("... 100 руб. Спасибо") stays as a full stop."""
    if m.group(0).endswith(".") and _SENTENCE_AFTER.match(m.string, m.end()):
        return spoken + "."
    return spoken


_SP = r"[ \u00a0\u202f\u2009]"  # spaces allowed inside a written number
_INT = rf"(?:\d{{1,3}}(?:{_SP}\d{{3}})+|\d+)"
_ZERO_WIDTH = {"\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"}


def _clean_chars(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    out = []
    for ch in text:
        if ch in _ZERO_WIDTH:
            continue
        cat = unicodedata.category(ch)
        if ch in "\n\t\r" or ch in "\u2028\u2029":
            out.append(" ")
        elif cat in ("Cc", "Cf", "Cs", "Co", "Cn"):
            continue
        elif cat == "Zs":
            out.append(ch if ch in "\u00a0\u202f\u2009" else " ")
        else:
            out.append(ch)
    return "".join(out)


_EMAIL = re.compile(r"\b([\w.+-]+)@([\w-]+(?:\.[\w-]+)+)\b")
_URL = re.compile(r"\b(?:https?://|www\.)([^\s/?#«»\"']+)[^\s«»\"']*", re.IGNORECASE)


def _dotted(s: str) -> str:
    return " точка ".join(p for p in s.split(".") if p)


def _urls_and_emails(text: str) -> str:
    text = _EMAIL.sub(lambda m: f"{_dotted(m.group(1))} собака {_dotted(m.group(2))}", text)

    def url(m: re.Match) -> str:
        host = m.group(1).split("@")[-1].split(":")[0].rstrip(".,;")
        if host.lower().startswith("www."):
            host = host[4:]
        trail = m.group(0)[-1] if m.group(0)[-1] in ".,;!?)" else ""
        return _dotted(host) + trail
    return _URL.sub(url, text)


_PHONE = re.compile(
    r"(?<![\w+])(\+7|8)[ \u00a0-]*\(?(\d{3})\)?[ \u00a0-]*(\d{3})[ \u00a0-]*(\d{2})[ \u00a0-]*(\d{2})(?!\d)")
_LOCAL_PHONE = re.compile(r"(?<![\d\w])(\d{3})-(\d{2})-(\d{2})(?![\d\w])")


def _phones(text: str) -> str:
    def full(m: re.Match) -> str:
        head = "плюс семь" if m.group(1) == "+7" else "восемь"
        return ", ".join([head] + [_digit_group(g) for g in m.groups()[1:]])
    text = _PHONE.sub(full, text)
    return _LOCAL_PHONE.sub(lambda m: ", ".join(_digit_group(g) for g in m.groups()), text)


_YEAR_TAIL = r"(?:\s*(?:г\.|гг\.|года|год)(?![\w]))?"
_NUM_DATE = re.compile(rf"(?<![\d.,])(\d{{1,2}})\.(\d{{1,2}})(?:\.(\d{{4}}|\d{{2}}))?(?![\d]|[.,]\d){_YEAR_TAIL}")
_WORD_DATE = re.compile(
    rf"(?<![\d.,])(\d{{1,2}})(?:-?(?:го|е|ое))?\s+({'|'.join(_MONTHS_GEN)})(?:\s+(\d{{4}})(?!\d){_YEAR_TAIL})?",
    re.IGNORECASE)
_ISO_DATE = re.compile(rf"(?<![\d.,-])(\d{{4}})-(\d{{2}})-(\d{{2}})(?![\d]|[.,]\d|:){_YEAR_TAIL}")
_YEAR_ONLY = re.compile(r"(?<![\d.,])(\d{4})\s*(?:г\.|года)(?!\w)")


def _date_words(day: int, month: int, year: int | None, today: date | None) -> str:
    words = f"{ordinal_genitive(day)} {_MONTHS_GEN[month - 1]}"
    if year is not None and not (today is not None and today.year == year):
        words += f" {ordinal_genitive(year)} года"
    return words


def _year(raw: str | None, today: date | None) -> int | None:
    if raw is None:
        return None
    y = int(raw)
    if len(raw) == 2:
        century = (today.year // 100 * 100) if today else 2000
        y += century
    return y


def _dates(text: str, today: date | None) -> str:
    def numeric(m: re.Match) -> str:
        d, mo = int(m.group(1)), int(m.group(2))
        if not (1 <= d <= 31 and 1 <= mo <= 12):
            return m.group(0)
        return _keep_stop(m, _date_words(d, mo, _year(m.group(3), today), today))

    def worded(m: re.Match) -> str:
        d = int(m.group(1))
        if not 1 <= d <= 31:
            return m.group(0)
        mo = _MONTHS_GEN.index(m.group(2).lower()) + 1
        month_word = m.group(2)
        out = _date_words(d, mo, _year(m.group(3), today), today)
        if month_word.lower() != month_word:
            out = out.replace(_MONTHS_GEN[mo - 1], month_word, 1)
        return _keep_stop(m, out)

    def iso(m: re.Match) -> str:
        y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if not (1 <= d <= 31 and 1 <= mo <= 12):
            return m.group(0)
        return _keep_stop(m, _date_words(d, mo, y, today))

    text = re.sub(r"(?<=\d{4}-\d{2}-\d{2})T(?=\d{1,2}:\d{2})", " ", text)  # ISO date-time
    text = _ISO_DATE.sub(iso, text)
    text = _NUM_DATE.sub(numeric, text)
    text = _WORD_DATE.sub(worded, text)
    return _YEAR_ONLY.sub(lambda m: _keep_stop(m, f"{ordinal_genitive(int(m.group(1)))} года"), text)


_TIME = re.compile(r"(?<![\d:.,])([01]?\d|2[0-3]):([0-5]\d)(?::[0-5]\d(?:\.\d+)?)?(?![\d:])")  # seconds not read


def _times(text: str) -> str:
    def sub(m: re.Match) -> str:
        h, mi = int(m.group(1)), int(m.group(2))
        out = _counted(h, "час")
        if mi:
            out += " " + _counted(mi, "минута")
        return out
    return _TIME.sub(sub, text)


_RUB_WORD = r"(?:руб(?:\.|(?![\w]))|рубл[а-яё]*|р\.(?!\w)|₽)"
_KOP_WORD = r"(?:коп(?:\.|(?![\w]))|копе[а-яё]*)"
_AMOUNT = re.compile(
    rf"(?<![\d.,])({_INT})(?:[.,](\d{{1,2}}))?(?![\d])\s*{_RUB_WORD}(?:\s*(\d{{1,2}})\s*{_KOP_WORD})?",
    re.IGNORECASE)
_KOP_ONLY = re.compile(rf"(?<![\d.,])(\d{{1,2}})\s*{_KOP_WORD}", re.IGNORECASE)


def _to_int(s: str) -> int:
    return int(re.sub(r"\D", "", s))


def _amounts(text: str) -> str:
    def sub(m: re.Match) -> str:
        rub = _to_int(m.group(1))
        kop_raw = m.group(2) or m.group(3)
        if m.group(2) and len(m.group(2)) == 1:  # "12,5 руб." = 12 руб. 50 коп.
            kop_raw = m.group(2) + "0"
        kop = int(kop_raw) if kop_raw else 0
        out = _counted(rub, "рубль")
        if kop:
            out += " " + _counted(kop, "копейка")
        return _keep_stop(m, out)
    text = _AMOUNT.sub(sub, text)
    return _KOP_ONLY.sub(lambda m: _keep_stop(m, _counted(int(m.group(1)), "копейка")), text)


_PERCENT = re.compile(rf"(?<![\d.,])({_INT})(?:[.,](\d+))?\s*%")


def _percents(text: str) -> str:
    def sub(m: re.Match) -> str:
        if m.group(2):
            return _decimal_words(str(_to_int(m.group(1))), m.group(2)) + " процента"
        return _counted(_to_int(m.group(1)), "процент")
    return _PERCENT.sub(sub, text)


_NUMERO = re.compile(r"№\s*")


def _numero(text: str) -> str:
    return _NUMERO.sub("номер ", text)


_COUNTED_FORMS = sorted(_NOUN_FORMS, key=len, reverse=True)
_COUNTED = re.compile(
    rf"(?<![\d.,])({_INT})\s+({'|'.join(re.escape(f) for f in _COUNTED_FORMS if f[-1].isalpha())})(?![\w])",
    re.IGNORECASE)
_COUNTED_ABBR = re.compile(
    rf"(?<![\d.,])({_INT})\s*({'|'.join(re.escape(f) for f in _COUNTED_FORMS if f.endswith('.'))})",
    re.IGNORECASE)


def _counted_nouns(text: str) -> str:
    def sub(m: re.Match) -> str:
        n = _to_int(m.group(1))
        word = m.group(2)
        key = _NOUN_FORMS[word.lower()]
        out = _counted(n, key)
        if word[:1].isupper():  # keep the writer's capital letter on the noun
            num, noun = out.rsplit(" ", 1)
            out = f"{num} {noun[:1].upper()}{noun[1:]}"
        return _keep_stop(m, out)
    text = _COUNTED_ABBR.sub(sub, text)
    return _COUNTED.sub(sub, text)


_DECIMAL = re.compile(r"(?<![\d.,])(\d+)[.,](\d+)(?![\d]|[.,]\d)")
_MINUS = re.compile(r"(?:(?<=\s)|^)[-\u2212](?=\d)")
_INTEGER = re.compile(rf"{_INT}(?!\d)")


def _numbers(text: str) -> str:
    text = _MINUS.sub("минус ", text)
    text = _DECIMAL.sub(lambda m: _decimal_words(m.group(1), m.group(2)), text)
    text = re.sub(r"(?<=\d)\s*/\s*(?=\d)", " дробь ", text)  # 123/26 -> "сто двадцать три дробь двадцать шесть"
    text = re.sub(r"(?<=\d)-(?=\d)", " ", text)        # 123-45 -> two numbers
    text = re.sub(r"(?<=[^\W\d_])-(?=\d)", " ", text)  # А-123 -> А 123
    text = re.sub(r"(?<=\d)-(?=[^\W\d_])", " ", text)  # 5-й -> 5 й (best effort)
    return _INTEGER.sub(lambda m: " " + number_to_words(_to_int(m.group(0))) + " ", text)


# (pattern, replacement); lower-case ones are case-sensitive so initials ("Д.") stay untouched
_ABBREVIATIONS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"(?<!\w)т\.\s*е\.", re.IGNORECASE), "то есть"),
    (re.compile(r"(?<!\w)т\.\s*к\.", re.IGNORECASE), "так как"),
    (re.compile(r"(?<!\w)ООО(?!\w)"), "о-о-о"),
    (re.compile(r"(?<!\w)ЗАО(?!\w)"), "зэ-а-о"),
    (re.compile(r"(?<!\w)ПАО(?!\w)"), "пэ-а-о"),
    (re.compile(r"(?<!\w)ОАО(?!\w)"), "о-а-о"),
    (re.compile(r"(?<!\w)АО(?!\w)"), "а-о"),
    (re.compile(r"(?<!\w)ИП(?!\w)"), "и-пэ"),
    (re.compile(r"(?<!\w)НДС(?!\w)"), "эн-дэ-эс"),
    (re.compile(r"(?<!\w)ул\.", re.IGNORECASE), "улица"),
    (re.compile(r"(?<!\w)г\."), "город"),
    (re.compile(r"(?<!\w)д\."), "дом"),
    (re.compile(r"(?<!\w)тел\.", re.IGNORECASE), "телефон"),
    (re.compile(r"(?<!\w)руб\."), "рублей"),
    (re.compile(r"(?<!\w)коп\."), "копеек"),
    (re.compile(r"(?<!\w)шт\."), "штук"),
    (re.compile(r"(?<!\w)мин\."), "минут"),
    (re.compile(r"(?<!\w)тыс\."), "тысяч"),
]


_WORD_END_ABBR = {"рублей", "копеек", "штук", "минут", "тысяч"}


def _abbreviations(text: str) -> str:
    for pattern, spoken in _ABBREVIATIONS:
        def sub(m: re.Match, spoken: str = spoken) -> str:
            # a capital abbreviation at a sentence start keeps a capital letter
            written = m.group(0)
            if written[:1].isupper() and not written.isupper() and spoken[:1].islower():
                spoken = spoken[:1].upper() + spoken[1:]
            return _keep_stop(m, spoken) if spoken in _WORD_END_ABBR else spoken
        text = pattern.sub(sub, text)
    return text


_QUOTES = re.compile(r"[«»“”„‟\"]|(?<!\w)'|'(?!\w)")
_DASH = re.compile(r"\s*[—–‒―]\s*|\s+-+\s+|(?<=\w)-{2,}(?=\w)")


def _punctuation(text: str) -> str:
    text = _QUOTES.sub("", text)
    text = _DASH.sub(", ", text)
    text = re.sub(r"[\u00a0\u202f\u2009]", " ", text)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.!?;:])", r"\1", text)
    text = re.sub(r"\(\s+", "(", text)
    text = re.sub(r"\s+\)", ")", text)
    text = re.sub(r",(\s*,)+", ",", text)              # ", ," -> ","
    text = re.sub(r",\s*([.!?;:])", r"\1", text)        # ", ." -> "."
    text = re.sub(r"([.!?;:])\s*,", r"\1", text)        # ". ," -> "."
    text = re.sub(r"^[\s,;:]+", "", text)
    text = re.sub(r",(?=\S)", ", ", text)
    text = re.sub(r"(?<=[^\d\W]),(?=\d)", ", ", text)
    return text.strip()


_MARK = "\ue000"  # private use; _clean_chars removes any from the input


def _mark_sentence_starts(text: str) -> str:
    """Marks sentences that begin with a digit, "№" or "+" so the words replacing them get a capital."""
    def sub(m: re.Match) -> str:
        before = m.group(1)
        if before.startswith("."):
            word = re.search(r"(\w*)$", m.string[: m.start()]).group(1).lower()
            if word in _DOT_ABBREVIATIONS:  # "д. 5", "руб. 01 коп.": not a sentence end
                return before
        return before + _MARK
    return re.sub(r"(^\s*|[.!?]\s+)(?=[\d№+])", sub, text)


_DOT_ABBREVIATIONS = {"д", "г", "ул", "руб", "коп", "тел", "шт", "мин", "тыс", "р", "е", "к", "ч", "дн", "стр", "пр", "кв"}


def _capitalise_marked(text: str) -> str:
    text = re.sub(_MARK + r"\s*([^\W\d_])", lambda m: m.group(1).upper(), text)
    return text.replace(_MARK, "")


def normalize_for_speech(text: str, *, today: date | None = None) -> str:
    """Written Russian -> words for TTS. Pure, never raises, idempotent (see the module docstring)."""
    if text is None:
        return ""
    if not isinstance(text, str):
        try:
            text = str(text)
        except Exception:
            return ""
    passes: list[Callable[[str], str]] = [
        _clean_chars,
        _mark_sentence_starts,
        _urls_and_emails,
        _phones,
        lambda t: _dates(t, today),
        _times,
        _amounts,
        _percents,
        _numero,
        _counted_nouns,
        _numbers,
        _abbreviations,
        _punctuation,
        _capitalise_marked,
    ]
    for step in passes:
        try:
            text = step(text)
        except Exception:  # best effort: a pass that fails on odd input is skipped, never raised
            continue
    if re.search(r"\d", text):  # anything a pass missed is read digit by digit
        text = re.sub(r"\d", lambda m: f" {_UNITS_M[int(m.group(0))]} ", text)
        text = _punctuation(text)
    return text.replace(_MARK, "")
