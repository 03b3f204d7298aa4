"""Workload distribution: which operator of a department gets the next call.

Pure functions over ``OperatorView`` snapshots (no I/O): models.operators.department_views
builds them from the database (status, today's statistics), the controller lays its live state
over them (ringing / on a call / wrap-up) and calls ``choose_operator``.

Fairness rules that fix the known failures of app_queue-style strategies (docs/operators.md):

- An offer counts even when it is not answered. longest_idle measures idle time from the last
  *offer* as well as the last call end (leastrecent kept ringing an agent who never answered,
  because his "last call" never moved); fewest_calls counts offers, not only answered calls
  (fewestcalls never moved on from an agent who did not answer); least_talk_time charges an
  unanswered offer as one average call of the department.
- Whoever let his latest offer pass (no answer, rejected) goes behind everyone who did not,
  until he answers a call or changes state (rejoin, login); he is still rung when nobody
  else is free, and auto-pause (routing/autopause.py) takes a silent operator out.
- Never offered: paused, logged out, busy (ringing or talking), in wrap-up, or already rung for
  this call (``exclude``: a rejected call does not come back to the one who rejected it).
- Ties end on the extension, so the order is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Collection, Sequence

from routing.facts import STRATEGIES

# least_talk_time: what an unanswered offer costs when nobody of the department has talked yet.
DEFAULT_CALL_SECONDS = 60.0


@dataclass
class OperatorView:
    id: int
    extension: str
    name: str
    department: str
    status: str                            # 'available' | 'paused' | 'logged_out'
    busy: bool = False                     # live: ringing or on a call (set by the controller)
    wrapup_until: datetime | None = None
    last_offer_at: datetime | None = None
    last_call_end_at: datetime | None = None
    calls_today: int = 0                   # answered
    offers_today: int = 0                  # every ring, answered or not
    talk_seconds_today: float = 0.0
    status_since: datetime | None = None

    @property
    def missed_today(self) -> int:
        """Offers he did not answer (no answer, rejected, caller hung up while ringing, ...)."""
        return max(self.offers_today - self.calls_today, 0)

    def idle_since(self) -> datetime | None:
        """The last moment he was given work or changed state; None: never (idle the longest)."""
        moments = [t for t in (self.last_call_end_at, self.last_offer_at, self.status_since) if t is not None]
        return max(moments) if moments else None

    def passed_last_offer(self) -> bool:
        """His latest offer went unanswered: it came after his last call ended and after his
        last state change (a rejoin or login starts him afresh)."""
        if self.last_offer_at is None:
            return False
        later = [t for t in (self.last_call_end_at, self.status_since) if t is not None]
        return not later or self.last_offer_at > max(later)

    def eligible(self, now: datetime) -> bool:
        return (self.status == "available" and not self.busy
                and (self.wrapup_until is None or self.wrapup_until <= now))


def _idle_key(view: OperatorView) -> float:
    since = view.idle_since()
    return float("-inf") if since is None else since.timestamp()


def _average_call_seconds(views: Sequence[OperatorView]) -> float:
    calls = sum(v.calls_today for v in views)
    talk = sum(v.talk_seconds_today for v in views)
    return talk / calls if calls and talk > 0 else DEFAULT_CALL_SECONDS


def _sort_key(strategy: str, everyone: Sequence[OperatorView]) -> Callable[[OperatorView], tuple]:
    if strategy == "longest_idle":
        return lambda v: (_idle_key(v), v.extension)
    if strategy == "fewest_calls":
        # Load = answered calls + unanswered offers: a ring he let pass counts as a call given.
        return lambda v: (v.calls_today + v.missed_today, _idle_key(v), v.extension)
    if strategy == "least_talk_time":
        per_miss = _average_call_seconds(everyone)
        return lambda v: (v.talk_seconds_today + v.missed_today * per_miss, _idle_key(v), v.extension)
    raise ValueError(f"unknown distribution strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")


def rank_operators(candidates: Sequence[OperatorView], strategy: str, now: datetime,
                   exclude: Collection[str] = ()) -> list[OperatorView]:
    """The operators who may be offered the call now, best first."""
    key = _sort_key(strategy, candidates)
    excluded = set(exclude)
    eligible = [v for v in candidates if v.extension not in excluded and v.eligible(now)]
    # Whoever let his latest offer pass goes behind everyone who did not, whatever the strategy.
    return sorted(eligible, key=lambda v: (v.passed_last_offer(), key(v)))


def choose_operator(candidates: Sequence[OperatorView], strategy: str, now: datetime,
                    exclude: Collection[str] = ()) -> OperatorView | None:
    """The best operator to ring now, or None when nobody is free."""
    ranked = rank_operators(candidates, strategy, now, exclude)
    return ranked[0] if ranked else None
