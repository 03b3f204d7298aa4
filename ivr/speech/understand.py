"""What a client's spoken answer means: affirm / deny / reschedule / repeat / operator / unknown.

    u = understand("нет, лучше завтра в три", now=now, tz=ZoneInfo("Europe/Moscow"), window=CallWindow())
    u.intent   # "reschedule"
    u.when     # 2026-11-24 15:00+03:00 (inside the client's call window)
    u.reason   # "deny + time 'завтра в 3' -> reschedule"

Pure: no I/O, no clock (``now`` is injected). Rules in docs/understanding.md, in short:

* the transcript is normalised (ivr.speech.timeexpr.canonical): lower case, ё -> е, punctuation
  dropped (clause boundaries kept), numerals in words -> digits;
* a word not in the vocabulary is corrected to the closest known word (rapidfuzz if installed,
  else difflib, ratio >= 0.82, words of 4+ letters) - but never across negation: a word starting
  with "не"/"ни" is never corrected to a word without it and vice versa ("неудобно" can not turn
  into "удобно");
* precedence: operator > reschedule (a time that is not negated) > repeat > deny > affirm > unknown;
  any deny signal beats affirm ("да нет" = deny, "да, но не завтра" = deny);
* fixed phrases that contain a negation but mean yes ("не против", "без проблем", "почему бы и
  нет") or ask to repeat ("не расслышал", "не понял") are taken before the negation scan.
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable
from zoneinfo import ZoneInfo

from ivr.notify.window import CallWindow
from ivr.speech import timeexpr

try:  # optional: faster and the same scale (0..100) as difflib's ratio * 100
    from rapidfuzz import fuzz as _rf_fuzz  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the venv
    _rf_fuzz = None

__all__ = ["INTENTS", "Understanding", "understand", "normalize", "confusion", "Confusion"]

INTENTS = ("affirm", "deny", "reschedule", "repeat", "operator", "unknown")
FUZZY_MIN = 0.82

# --------------------------------------------------------------------------------------------------
# vocabulary

AFFIRM_WORDS = frozenset("""
да даа дааа ага угу ок окей окэй ok okay yes удобно удобна давайте давай хорошо хорошо конечно конешно
канешно канечно харашо хорошо можно подходит ладно согласен согласна согласны верно правильно пойдет идет
устраивает отлично супер договорились естественно разумеется звоните перезвоните перезванивайте
годится нормально подойдет замечательно прекрасно точно именно
""".split())
DENY_WORDS = frozenset("""
нет неа нету неудобно неудобна некогда нельзя занят занята заняты занятой позже попозже потом
отказываюсь отказ против неохота неинтересно ненадо нифига никак никогда
""".split())
REPEAT_WORDS = frozenset("повторите повторить повтори повторяю повторите-ка прослушал прослушала "
                         "недослышал расслышал расслышала".split())
OPERATOR_STEMS = ("оператор", "менеджер", "специалист", "сотрудник", "консультант", "человек",
                  "диспетчер", "администратор", "соедини", "переключи", "переведите", "позовите")

# fixed phrases matched on the canonical text before anything else: phrase -> intent
PHRASES: list[tuple[str, str]] = sorted([
    ("не против", "affirm"), ("не возражаю", "affirm"), ("без проблем", "affirm"),
    ("нет проблем", "affirm"), ("почему бы и нет", "affirm"), ("почему бы нет", "affirm"),
    ("почему нет", "affirm"), ("само собой", "affirm"), ("а почему бы и нет", "affirm"),
    ("не вопрос", "affirm"), ("все верно", "affirm"), ("да да", "affirm"), ("ну да", "affirm"),
    ("еще бы", "affirm"), ("не откажусь", "affirm"), ("буду ждать", "affirm"), ("жду звонка", "affirm"),
    ("не расслышал", "repeat"), ("не расслышала", "repeat"), ("не слышу", "repeat"),
    ("не слышно", "repeat"), ("плохо слышно", "repeat"), ("вас не слышно", "repeat"),
    ("не понял", "repeat"), ("не поняла", "repeat"), ("не понятно", "repeat"), ("непонятно", "repeat"),
    ("еще раз", "repeat"), ("что вы сказали", "repeat"), ("что что", "repeat"), ("что вы говорите", "repeat"),
    ("я не расслышал", "repeat"), ("не разобрал", "repeat"), ("не разобрала", "repeat"),
    ("можно еще раз", "repeat"), ("что еще раз", "repeat"), ("во сколько", "repeat"), ("как вы сказали", "repeat"),
    ("живой человек", "operator"), ("живым человеком", "operator"), ("с человеком", "operator"),
    ("с оператором", "operator"),
    ("в другой раз", "deny"), ("в другое время", "deny"), ("не сейчас", "deny"), ("не могу", "deny"),
    ("не надо", "deny"), ("не нужно", "deny"), ("не удобно", "deny"), ("не получится", "deny"),
    ("не смогу", "deny"), ("не выйдет", "deny"), ("не подходит", "deny"), ("не устраивает", "deny"),
    ("не звоните", "deny"), ("не хочу", "deny"), ("не буду", "deny"), ("не очень", "deny"),
    ("не совсем", "deny"), ("не знаю", "unknown"), ("ни в коем случае", "deny"), ("не стоит", "deny"),
    ("не получается", "deny"), ("не до того", "deny"), ("не до этого", "deny"),
], key=lambda p: -len(p[0]))

# a clause containing one of these (or any "не"/"ни" word) negates a time in it
_NEG_PREFIXES = ("не", "ни")
# a rejected part of the day -> the part used instead when no hour is named
_OTHER_PART = {"morning": "after_lunch", "before_lunch": "after_lunch", "lunch": "after_lunch",
               "after_lunch": "morning", "late_afternoon": "morning", "evening": "morning"}
_SHORT_REPEAT = frozenset("что чего как а алло ало але что-что".split())

VOCABULARY: frozenset[str] = (AFFIRM_WORDS | DENY_WORDS | REPEAT_WORDS | timeexpr.TIME_VOCABULARY
                              | frozenset(w for p, _ in PHRASES for w in p.split())
                              | frozenset(OPERATOR_STEMS) | frozenset(
                                  ["оператором", "оператора", "оператору", "менеджером", "менеджера",
                                   "человеком", "соедините", "переключите", "пожалуйста", "лучше",
                                   "можете", "вам", "мне", "нам", "давайте", "сегодня", "извините",
                                   "простите", "спасибо", "алло", "сейчас", "здравствуйте", "слушаю",
                                   "говорите", "знаю", "надо", "нужен", "нужна", "звонить", "говорить",
                                   "сказали", "кто", "это", "зачем", "почему", "подождите", "минуту",
                                   "момент", "секунду", "работе", "рулем", "занят", "потом", "перезвоню",
                                   "позвоню", "наберу", "сам", "сама", "сами", "наберите", "позвоните"]))


# --------------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class Understanding:
    intent: str                    # one of INTENTS
    when: datetime | None = None   # reschedule: client's local time, inside the call window
    span: str = ""                 # the words the decision rests on (for logs)
    confidence: float = 0.0        # 0..1, rough: 1 exact words, lower after fuzzy corrections
    reason: str = ""               # one line for the attempt log
    text: str = ""                 # the normalised transcript


def _is_negated_word(w: str) -> bool:
    """"не", "нет", a deny word, "не" glued to an affirm word ("нехорошо") or to the start of one
    (ASR split "неуд обно"); not "неделе"."""
    if w in ("не", "ни", "нет", "неа", "нее") or w in DENY_WORDS:
        return True
    rest = w[2:]
    return w.startswith("не") and len(rest) >= 2 and any(a.startswith(rest) for a in AFFIRM_WORDS)


def _ratio(a: str, b: str) -> float:
    if _rf_fuzz is not None:
        return _rf_fuzz.ratio(a, b) / 100.0
    return difflib.SequenceMatcher(None, a, b).ratio()


def correct(word: str) -> tuple[str, float]:
    """``word`` or the closest vocabulary word (ratio >= FUZZY_MIN), never across negation."""
    if word in VOCABULARY or len(word) < 4 or not word.isalpha():
        return word, 1.0
    neg = word.startswith(_NEG_PREFIXES)
    best, score = word, 0.0
    for cand in VOCABULARY:
        if cand.startswith(_NEG_PREFIXES) != neg or abs(len(cand) - len(word)) > 3:
            continue
        r = _ratio(word, cand)
        if r > score or (r == score and cand < best):
            best, score = cand, r
    if score >= FUZZY_MIN:
        return best, score
    return word, 1.0


def _rejoin(tokens: list[str]) -> list[str]:
    """ASR sometimes splits a word after a short prefix ("по недельнику" for "понедельник",
    "пере звоните"): two tokens whose concatenation is, or corrects to, a vocabulary word while
    the second alone is not one are joined. Never across negation ("не удобно" stays two words:
    the negation guard reads it)."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        a = tokens[i]
        b = tokens[i + 1] if i + 1 < len(tokens) else None
        if (b is not None and a not in ("не", "ни") and len(a) <= 4 and a.isalpha() and b.isalpha()
                and correct(b)[0] not in VOCABULARY):
            joined, _ = correct(a + b)
            if joined in VOCABULARY:
                out.append(a + b)
                i += 2
                continue
        out.append(a)
        i += 1
    return out


def normalize(transcript: str) -> tuple[list[str], float, list[str]]:
    """Canonical tokens (``|`` = clause boundary), the lowest fuzzy ratio used, the corrections."""
    tokens = _rejoin(timeexpr.canonical(transcript or ""))
    out, low, fixes = [], 1.0, []
    for t in tokens:
        c, r = correct(t)
        if c != t:
            fixes.append(f"{t}->{c}")
            low = min(low, r)
        out.append(c)
    return timeexpr._numerals(out), low, fixes


def _find_phrases(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Takes fixed phrases out of ``text`` (space-padded); returns the rest and (phrase, intent)."""
    found = []
    for phrase, intent in PHRASES:
        needle = f" {phrase} "
        while needle in text:
            found.append((phrase, intent))
            text = text.replace(needle, " # ", 1)
    return text, found


_NEGATABLE_TIMES = ("сейчас", "сегодня", "завтра", "послезавтра", "утром", "днем", "вечером")


def _clauses(tokens: list[str]) -> list[list[str]]:
    """Clauses at punctuation and conjunctions, and - because Whisper writes few commas - also
    after a rejection: "в пятницу нет | в четверг", "не сейчас | через полчаса"."""
    out: list[list[str]] = [[]]
    for t in tokens:
        if t == "|" or (t in ("а", "но", "лучше", "или", "давайте", "давай", "только") and out[-1]):
            out.append([] if t == "|" else [t])
        elif t in ("нет", "неа") and out[-1]:
            out[-1].append(t)          # "<time> нет": that time is rejected; what follows is new
            out.append([])
        elif t in _NEGATABLE_TIMES and out[-1] and out[-1][-1] == "не":
            out[-1].append(t)          # "не сейчас": only that word is negated
            out.append([])
        else:
            out[-1].append(t)
    return [c for c in out if c]


def _clause_negated(clause: list[str]) -> bool:
    """Whether a clause with a time in it rejects that time: any negation word except a leading
    "нет" interjection ("нет завтра" proposes tomorrow; "завтра нет"/"не завтра" rejects it)."""
    words = clause[1:] if clause and clause[0] in ("нет", "неа") else clause
    if words and words[0] in ("а", "но", "лучше", "давайте", "давай", "только"):
        words = words[1:]
    return any(_is_negated_word(w) for w in words)


def understand(transcript: str, *, now: datetime, tz: ZoneInfo, window: CallWindow | None = None) -> Understanding:
    """The intent of one answer and, for a time, the moment inside the client's call window."""
    window = window or CallWindow()
    tokens, fuzzy, fixes = normalize(transcript)
    text = " ".join(t for t in tokens if t != "|")
    note = f" (fuzzy {', '.join(fixes)})" if fixes else ""
    base = 0.95 * fuzzy

    def result(intent: str, span: str, reason: str, when: datetime | None = None, conf: float = base):
        return Understanding(intent, when, span, round(conf, 3), reason + note, text)

    if not text.strip():
        return result("unknown", "", "empty transcript", conf=0.0)

    # A lost «не»: over the phone «не удобно» / «не могу» come back as "и удобно" / "а могу". An
    # answer that opens with a lone "и"/"а" before an affirm word is not taken as a yes (a wrong
    # yes books a call he refused; asking again costs one turn).
    first = [t for t in tokens if t != "|"][:2]
    if len(first) == 2 and first[0] in ("и", "а") and (first[1] in AFFIRM_WORDS or first[1] in ("могу", "сейчас")):
        return result("unknown", " ".join(first), f"'{first[0]} {first[1]}': possibly a lost «не», not a yes",
                      conf=0.3)

    padded = f" {text} "
    rest, phrases = _find_phrases(padded)
    phrase_intents = [i for _, i in phrases]
    words = rest.split()

    # operator
    all_words = text.split()
    for i, w in enumerate(all_words):
        if w.startswith(OPERATOR_STEMS) and not {"не", "без"} & set(all_words[max(0, i - 2):i]):
            return result("operator", w, f"asks for a person: '{w}'")
    if "operator" in phrase_intents:
        p = next(p for p, i in phrases if i == "operator")
        return result("operator", p, f"asks for a person: '{p}'")

    # a time: clauses that negate their time are dropped
    kept: list[str] = []
    rejected: list[str] = []
    rejected_part: str | None = None
    for clause in _clauses(tokens):
        ex = timeexpr.find(clause)
        if not ex.empty and _clause_negated(clause):
            rejected.extend(ex.spans)
            rejected_part = ex.part or rejected_part
            continue
        kept.extend(clause)
    ex = timeexpr.find(kept)
    if not ex.empty and ex.clock is None and ex.part is None and rejected_part and ex.minutes_from_now is None:
        ex.part = _OTHER_PART[rejected_part]  # "завтра, только не утром" -> tomorrow afternoon
    deny_words = [w for w in words if _is_negated_word(w)]
    deny_words += [p for p, i in phrases if i == "deny"]
    if rejected:
        deny_words.append("не " + " ".join(rejected))
    if not ex.empty:
        when = timeexpr.resolve(ex, now=now, tz=tz, window=window)
        if when is not None:
            span = " ".join(ex.spans)
            lead = "deny + " if deny_words else ""
            return result("reschedule", span, f"{lead}time '{span}' -> reschedule {when:%Y-%m-%d %H:%M} {tz.key}"
                          + (f" [rejected: {', '.join(rejected)}]" if rejected else ""), when)

    # repeat
    reps = [p for p, i in phrases if i == "repeat"] + [w for w in words if w in REPEAT_WORDS]
    content = [w for w in words if w not in ("#", "пожалуйста", "извините", "простите", "ой", "ну", "э", "эээ", "мм")]
    if not reps and content and len(content) <= 3 and all(w in _SHORT_REPEAT or w in ("вы", "сказали", "там") for w in content):
        reps = content[:1]
    if reps and not (deny_words or [w for w in words if w in AFFIRM_WORDS]):
        return result("repeat", reps[0], f"asks to repeat: '{reps[0]}'")
    if reps and len(content) <= 2:
        return result("repeat", reps[0], f"asks to repeat: '{reps[0]}'")

    if deny_words:
        return result("deny", deny_words[0], f"negation: '{deny_words[0]}'"
                      + (" (beats affirm)" if [w for w in words if w in AFFIRM_WORDS] or "affirm" in phrase_intents else ""))
    if reps:
        return result("repeat", reps[0], f"asks to repeat: '{reps[0]}'")
    aff = [p for p, i in phrases if i == "affirm"] + [w for w in words if w in AFFIRM_WORDS]
    if aff:
        return result("affirm", aff[0], f"agreement: '{aff[0]}'")
    if "unknown" in phrase_intents:
        return result("unknown", "не знаю", "undecided: 'не знаю'", conf=0.5)
    return result("unknown", "", "no known words", conf=0.0)


# --------------------------------------------------------------------------------------------------
# confusion table for benchmarks


@dataclass(frozen=True)
class Confusion:
    counts: dict[tuple[str, str], int]   # (expected, got) -> n

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def correct(self) -> int:
        return sum(n for (e, g), n in self.counts.items() if e == g)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def flips(self) -> int:
        """affirm taken as deny/reschedule or deny/reschedule taken as affirm: the costly errors."""
        neg = ("deny", "reschedule")
        return sum(n for (e, g), n in self.counts.items()
                   if (e == "affirm" and g in neg) or (e in neg and g == "affirm"))

    def labels(self) -> list[str]:
        seen = {x for pair in self.counts for x in pair}
        return [i for i in INTENTS if i in seen] + sorted(seen - set(INTENTS))

    def to_markdown(self) -> str:
        labels = self.labels()
        lines = ["| expected \\ got | " + " | ".join(labels) + " |",
                 "|---|" + "---|" * len(labels)]
        for e in labels:
            lines.append(f"| {e} | " + " | ".join(str(self.counts.get((e, g), 0)) for g in labels) + " |")
        lines.append("")
        lines.append(f"accuracy {self.accuracy:.1%} ({self.correct}/{self.total}), affirm/deny flips: {self.flips}")
        return "\n".join(lines)


def confusion(pairs: Iterable[tuple[str, str]]) -> Confusion:
    """(expected intent, recognised intent) pairs -> counts, accuracy, flips, a markdown table."""
    return Confusion(dict(Counter((str(e), str(g)) for e, g in pairs)))
