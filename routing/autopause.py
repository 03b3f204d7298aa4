"""Auto-pause: an operator who lets calls pass is paused, so callers stop waiting on his phone.

Pure: the controller keeps one ``MissCounter`` per operator, feeds every ring result to
``AutoPausePolicy.on_ring_result`` and, on a decision, sets the operator paused with
``decision.reason`` (models.operators.set_status, cause "auto"). He comes back by the feature
code or ``ivr operator rejoin``.

What counts (docs/operators.md):
- a miss: ``no_answer`` after ringing at least ``ring_seconds`` (he had the full time), or
  ``rejected`` (he declined the call);
- a reset: ``answered``;
- neutral: ``busy``, ``failed``, ``caller_hung_up``, ``cancelled`` and a ``no_answer`` cut short
  (the step's time ran out first) - not his fault, not his answer either.

The pause reason is stored in Russian (the operators and supervisors read it): «не ответил в
14:05», «отклонил вызов в 14:05», «не ответил на 3 вызова подряд, последний в 14:05».
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

MISS_OUTCOMES = ("no_answer", "rejected")
# A ring ended by the timer may stop a moment before ring_seconds (timers, signalling).
RING_TOLERANCE_SECONDS = 0.5


@dataclass
class MissCounter:
    """Consecutive misses of one operator (reset by an answer and by an auto-pause)."""

    misses: int = 0
    last_miss_at: datetime | None = None
    last_outcome: str | None = None


@dataclass(frozen=True)
class AutoPauseDecision:
    reason: str            # stored as the pause reason (Russian)
    misses: int            # consecutive misses that led to it
    at: datetime
    outcome: str           # the outcome of the last miss


@dataclass(frozen=True)
class AutoPausePolicy:
    misses: int = 1                 # consecutive misses before the pause; 0 disables auto-pause
    ring_seconds: float = 15        # a no_answer counts only after ringing this long
    timezone: str = "Europe/Moscow"  # for HH:MM in the reason

    def __post_init__(self) -> None:
        if self.misses < 0:
            raise ValueError("misses must be 0 (off) or more")
        if self.ring_seconds < 0:
            raise ValueError("ring_seconds must not be negative")

    def is_miss(self, outcome: str, rang_seconds: float) -> bool:
        if outcome == "rejected":
            return True
        return outcome == "no_answer" and rang_seconds + RING_TOLERANCE_SECONDS >= self.ring_seconds

    def on_ring_result(self, state: MissCounter, outcome: str, rang_seconds: float,
                       now: datetime) -> AutoPauseDecision | None:
        """Update ``state`` with one ring result; a decision when he is to be paused now."""
        if outcome == "answered":
            state.misses = 0
            state.last_outcome = outcome
            return None
        if not self.is_miss(outcome, rang_seconds):
            return None
        state.misses += 1
        state.last_miss_at = now
        state.last_outcome = outcome
        if self.misses == 0 or state.misses < self.misses:
            return None
        decision = AutoPauseDecision(reason=self.reason(state.misses, outcome, now), misses=state.misses,
                                     at=now, outcome=outcome)
        state.misses = 0  # counted afresh after he rejoins
        return decision

    def reason(self, misses: int, outcome: str, now: datetime) -> str:
        local = now.astimezone(ZoneInfo(self.timezone)) if now.tzinfo is not None else now
        hhmm = f"{local:%H:%M}"
        if misses <= 1:
            return f"отклонил вызов в {hhmm}" if outcome == "rejected" else f"не ответил в {hhmm}"
        return f"не ответил на {misses} {_calls_word(misses)} подряд, последний в {hhmm}"


def _calls_word(n: int) -> str:
    if n % 10 == 1 and n % 100 != 11:
        return "вызов"
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return "вызова"
    return "вызовов"


def on_ring_result(policy: AutoPausePolicy, state: MissCounter, outcome: str, rang_seconds: float,
                   now: datetime) -> AutoPauseDecision | None:
    """Function form of ``AutoPausePolicy.on_ring_result``."""
    return policy.on_ring_result(state, outcome, rang_seconds, now)
