"""OperatorBoard: who may be offered a call right now, and which waiting call gets him.

The database holds what operators chose (available / paused / logged out) and the day's
statistics (calls, talk time, last offer); the board adds what only the controller knows live:
who is ringing or talking on one of our calls, who is in wrap-up, and - asked from Asterisk just
before ringing - whose phone is busy with a call we did not place (an internal call).

Waiting calls are served first come, first served per department: a call may take an operator
only if no call that has waited longer could take him. Claiming is synchronous between awaits,
so two calls can never ring the same operator at once (ring-in-use off).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Awaitable, Callable, Collection

from ivr.calls.record import utcnow
from routing.distribution import OperatorView, rank_operators

log = logging.getLogger("ivr.inbound.board")

ViewsLoader = Callable[[str], Awaitable[list[OperatorView]]]
BusyProbe = Callable[[str], Awaitable[bool]]


@dataclass
class LiveState:
    ringing_for: str | None = None      # call uid
    talking_in: str | None = None       # call uid
    wrapup_until: datetime | None = None
    last_offer_at: datetime | None = None
    last_call_end_at: datetime | None = None
    probe_busy_until: float = 0.0       # monotonic: phone found busy by Asterisk (internal call)

    def busy(self) -> bool:
        return bool(self.ringing_for or self.talking_in) or time.monotonic() < self.probe_busy_until


@dataclass
class _Waiter:
    call_uid: str
    exclude: frozenset[str]
    since: float = field(default_factory=time.monotonic)


class OperatorBoard:
    VIEWS_TTL = 0.5  # seconds a department's operator list from the database is reused

    def __init__(self, load_views: ViewsLoader, phone_busy: BusyProbe | None = None):
        self._load_views = load_views
        self._phone_busy = phone_busy
        self.live: dict[str, LiveState] = {}
        self._waiters: dict[str, list[_Waiter]] = {}
        self._views: dict[str, tuple[float, list[OperatorView]]] = {}
        self._reloading: dict[str, asyncio.Lock] = {}
        self._changed = asyncio.Condition()
        # Bumped on every live change; the overlay of a department's list is cached against it.
        self._live_version = 0
        self._overlays: dict[str, tuple[int, int, list[OperatorView]]] = {}

    # --- live state ----------------------------------------------------------------------
    def state(self, extension: str) -> LiveState:
        return self.live.setdefault(extension, LiveState())

    async def notify(self) -> None:
        """Something changed (an operator freed, rejoined, ...): waiting calls look again."""
        self._live_version += 1
        async with self._changed:
            self._changed.notify_all()

    def forget_views(self, department: str | None = None) -> None:
        if department is None:
            self._views.clear()
        else:
            self._views.pop(department, None)

    def reserve(self, extension: str, call_uid: str) -> None:
        self._live_version += 1
        st = self.state(extension)
        st.ringing_for = call_uid
        st.last_offer_at = utcnow()

    async def ring_ended(self, extension: str, call_uid: str, *, answered: bool) -> None:
        st = self.state(extension)
        if st.ringing_for == call_uid:
            st.ringing_for = None
        if answered:
            st.talking_in = call_uid
        await self.notify()

    async def call_ended(self, extension: str, call_uid: str, *, wrapup_seconds: float) -> None:
        st = self.state(extension)
        if st.talking_in == call_uid:
            st.talking_in = None
        now = utcnow()
        st.last_call_end_at = now
        st.wrapup_until = now + timedelta(seconds=wrapup_seconds)
        log.info("event=wrapup operator=%s seconds=%s", extension, wrapup_seconds)
        # Wake waiting calls when the wrap-up is over.
        asyncio.get_running_loop().call_later(wrapup_seconds + 0.05, lambda: asyncio.ensure_future(self.notify()))
        await self.notify()

    def overlay(self, views: list[OperatorView]) -> list[OperatorView]:
        """The database's views with the live state of this controller laid over them (a view is
        copied only where the live state says more than the database row)."""
        out = []
        for v in views:
            st = self.live.get(v.extension)
            if st is None or not (st.busy() or _newer(st.wrapup_until, v.wrapup_until)
                                  or _newer(st.last_offer_at, v.last_offer_at)
                                  or _newer(st.last_call_end_at, v.last_call_end_at)):
                out.append(v)
                continue
            out.append(dataclasses.replace(
                v,
                busy=v.busy or st.busy(),
                wrapup_until=_latest(v.wrapup_until, st.wrapup_until),
                last_offer_at=_latest(v.last_offer_at, st.last_offer_at),
                last_call_end_at=_latest(v.last_call_end_at, st.last_call_end_at),
            ))
        return out

    async def views(self, department: str) -> list[OperatorView]:
        cached = self._views.get(department)
        if cached and time.monotonic() - cached[0] < self.VIEWS_TTL:
            return cached[1]
        # One reload per department at a time: the other waiting calls use its result.
        lock = self._reloading.setdefault(department, asyncio.Lock())
        async with lock:
            cached = self._views.get(department)
            if cached and time.monotonic() - cached[0] < self.VIEWS_TTL:
                return cached[1]
            try:
                fresh = await self._load_views(department)
            except Exception as exc:  # the database is down: keep distributing over the last list
                if cached:
                    log.warning("event=operators_from_cache department=%s reason=%s", department, str(exc)[:120])
                    return cached[1]
                raise
            self._views[department] = (time.monotonic(), fresh)
            return fresh

    def live_views(self, department: str, views: list[OperatorView]) -> list[OperatorView]:
        """``overlay`` cached until the list or the live state changes."""
        cached = self._overlays.get(department)
        if cached and cached[0] == id(views) and cached[1] == self._live_version:
            return cached[2]
        out = self.overlay(views)
        self._overlays[department] = (id(views), self._live_version, out)
        return out

    # --- claiming ------------------------------------------------------------------------
    async def claim(self, department: str, call_uid: str, *, strategy: str, exclude: Collection[str] = (),
                    wait: float = 0.0, on_first_wait: Callable[[], Awaitable[None]] | None = None,
                    since: float | None = None) -> OperatorView | None:
        """Reserve the best free operator of ``department`` for ``call_uid``; wait up to ``wait``
        seconds (first come, first served by ``since``, the call's arrival on the monotonic
        clock) when nobody is free. None when nobody became free in time."""
        waiter = _Waiter(call_uid, frozenset(exclude), since if since is not None else time.monotonic())
        queue = self._waiters.setdefault(department, [])
        queue.append(waiter)
        deadline = time.monotonic() + wait
        announced = False
        try:
            while True:
                try:
                    views = self.live_views(department, await self.views(department))
                except Exception as exc:
                    log.warning("event=no_operator_list department=%s reason=%s", department, str(exc)[:120])
                    views = []
                # Rank once; earlier waiters take their pick first (first come, first served).
                ranked = rank_operators(views, strategy, utcnow())
                taken: set[str] = set()
                pick = None
                for w in sorted(queue, key=lambda w: w.since):
                    candidate = next((v for v in ranked if v.extension not in taken
                                      and v.extension not in w.exclude), None)
                    if w is waiter:
                        pick = candidate
                        break
                    if candidate is not None:
                        taken.add(candidate.extension)
                if pick is not None:
                    self.reserve(pick.extension, call_uid)
                    if self._phone_busy is not None and await self._busy_quietly(pick.extension):
                        st = self.state(pick.extension)
                        st.ringing_for = None
                        st.probe_busy_until = time.monotonic() + 3.0
                        self._live_version += 1
                        asyncio.get_running_loop().call_later(3.05, lambda: asyncio.ensure_future(self.notify()))
                        log.info("event=operator_phone_busy operator=%s", pick.extension)
                        continue
                    return pick
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                if not announced and on_first_wait is not None:
                    announced = True
                    await on_first_wait()
                    continue
                async with self._changed:
                    try:
                        await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 1.0))
                    except TimeoutError:
                        pass
        finally:
            queue.remove(waiter)

    async def _busy_quietly(self, extension: str) -> bool:
        assert self._phone_busy is not None
        try:
            return await self._phone_busy(extension)
        except Exception as exc:
            log.warning("event=phone_state_unknown operator=%s reason=%s", extension, str(exc)[:120])
            return False

    def waiting(self, department: str) -> int:
        return len(self._waiters.get(department, ()))


def _newer(live: datetime | None, stored: datetime | None) -> bool:
    return live is not None and (stored is None or live > stored)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
