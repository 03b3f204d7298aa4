"""InboundCall: a call to the public number, from caller ID to an operator (or a callback).

States (one call, one object, its whole life readable here):

    LOOKUP --facts--> [MENU --digit--> LOOKUP again] --decision--> CLOSED (after hours: message,
    callback request) | RINGING (the escalation ladder: personal manager, department, fallback)
    --operator answers--> CONNECTED --either side hangs up--> ENDED
    RINGING --ladder exhausted--> CALLBACK (message, callback request) --> ENDED
    any state --caller hangs up--> ENDED

The caller is answered at once and hears a ringing tone while operators are rung (and the
«all busy, please hold» message once when nobody is free). Each ring of an operator is an
attempt row (the decision trail); a personal manager who lets the reaction standard pass gets a
violation row; an operator who does not pick up is auto-paused by the policy. The database
failing at any point never drops the call: routing fails open to the default department and the
distribution keeps using the last operator list it read.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ivr.ari import AriClient, AriError, AriEvent, AriNotFound, AriUnavailable, CallSession
from ivr.ari.events import CHANNEL_GONE, CHANNEL_RECOVERED
from ivr.calls.journal import CallJournal
from ivr.calls.record import (
    RESULT_AFTER_HOURS, RESULT_ANSWERED, RESULT_CALLBACK, RESULT_CALLER_HANGUP, RESULT_FAILED, RESULT_TRANSFERRED,
    CallRecord, utcnow,
)
from ivr.logs import kv
from routing.facts import CallerFacts, RingStep, RouteDecision, TopicMenu

from . import prompts
from .store import StoreUnavailable

log = logging.getLogger("ivr.inbound.call")

_CALLER_GONE_EVENTS = frozenset({"ChannelHangupRequest", "StasisEnd", "ChannelDestroyed", CHANNEL_GONE})

# Hang-up causes of an operator's leg that did not answer (Q.850).
CAUSE_BUSY = 17
CAUSE_NO_ANSWER = (18, 19)
CAUSE_REJECTED = 21

# Transfer from the operator's keypad during a call: *2, the colleague's extension, # (keys more
# than this many seconds apart start over); the colleague is rung this long.
TRANSFER_KEY_TIMEOUT = 5.0
TRANSFER_RING_SECONDS = 20


class State(enum.Enum):
    LOOKUP = "lookup"
    MENU = "menu"
    CLOSED = "closed"
    RINGING = "ringing"
    CONNECTED = "connected"
    CALLBACK = "callback"
    ENDED = "ended"


class CallerGone(Exception):
    """The caller hung up; unwinds the flow from wherever it waits."""

    def __init__(self, event: AriEvent | None):
        self.event = event


class InboundCall:
    FLOW = "inbound"

    def __init__(self, services, session: CallSession):
        # ``services`` is the InboundPlugin: settings, ari, journal, store, board, rules access.
        self.svc = services
        self.ari: AriClient = services.ari
        self.journal: CallJournal = services.journal
        self.session = session
        self.state = State.LOOKUP
        self.record: CallRecord | None = None
        self.facts: CallerFacts | None = None
        self.decision: RouteDecision | None = None
        self.rung: set[str] = set()          # extensions already offered this call
        self._ringback_id: str | None = None
        self._started = time.monotonic()
        self._busy_announced = False
        self._transferred = False         # moved away by the phone (SIP REFER)
        self._leg: _Leg | None = None      # the operator's leg in the bridge now

    @property
    def channel_id(self) -> str:
        return self.session.channel_id

    @property
    def call_uid(self) -> str:
        return self.session.channel_id

    # --- life --------------------------------------------------------------------------
    async def run(self, first_event: AriEvent) -> None:
        channel = first_event.channel
        assert channel is not None
        self.record = CallRecord.from_stasis_start(first_event, self.FLOW)
        recovered = first_event.type == CHANNEL_RECOVERED
        log.info("event=call_started from=%s e164=%s to=%s recovered=%s", kv(self.record.from_number),
                 self.record.from_e164 or "-", kv(self.record.to_number), recovered)
        self.journal.record(self.record)
        try:
            if not (recovered and channel.state == "Up"):
                await self.ari.answer(self.channel_id)
            self.record.answered_at = utcnow()
            await self._route()
        except CallerGone as gone:
            self._caller_gone(gone.event)
        except AriNotFound:
            self._caller_gone(None)
        except (AriUnavailable, AriError) as exc:
            if self.record.result is None:
                self.record.result = RESULT_FAILED
            self.record.add_note(f"ari error: {str(exc)[:200]}")
            log.warning("event=call_failed reason=%s", kv(str(exc)[:200]))
            await self._hangup(self.channel_id)
        finally:
            self._finish()

    async def _route(self) -> None:
        assert self.record is not None
        rules = await self.svc.current_ruleset()
        self.facts = await self._lookup(rules)
        decision = rules.decide(self.facts, utcnow())
        if decision.menu is not None:
            self.state = State.MENU
            topic = await self._ask_topic(decision.menu)
            self.facts = self.facts.with_topic(topic)
            self.record.topic = topic
            decision = rules.decide(self.facts, utcnow())
        self.decision = decision
        self.record.rule = decision.rule[:80]
        self.record.department_code = decision.department
        self.record.degraded = decision.degraded or self.facts.degraded
        log.info("event=route_decided rule=%s department=%s steps=%s closed=%s degraded=%s trail=%s",
                 decision.rule, decision.department, len(decision.steps), decision.closed, self.record.degraded,
                 kv(" | ".join(decision.trail)[:400]))
        self.journal.record(self.record)
        if decision.closed:
            self.state = State.CLOSED
            await self._after_hours(decision)
            return
        self.state = State.RINGING
        await self._start_ringback()
        for step in decision.steps:
            if await self._run_step(step, rules):
                return
        self.state = State.CALLBACK
        await self._callback("escalation_exhausted" if self.rung else "all_busy")

    # --- lookup ----------------------------------------------------------------------------
    async def _lookup(self, rules) -> CallerFacts:
        assert self.record is not None
        e164 = self.record.from_e164
        settings = rules.settings
        try:
            facts = await self.svc.store.caller_facts(
                e164, active_sales_department=settings.active_sales_department,
                first_deal_threshold=settings.first_deal_threshold)
        except StoreUnavailable as exc:
            log.warning("event=lookup_degraded reason=%s", kv(str(exc)))
            self.record.add_note("caller lookup failed: routed without the client store")
            return CallerFacts(e164=e164, degraded=True)
        if facts.client_id is None and e164:
            # An unknown number gets a client card (potential client, this number).
            try:
                client_id = await self.svc.store.create_potential_client(e164, self.record.caller_name)
                log.info("event=client_card_created client=%s", client_id)
                self.record.client_id = client_id
            except StoreUnavailable as exc:
                log.warning("event=client_card_failed reason=%s", kv(str(exc)))
        else:
            self.record.client_id = facts.client_id
        log.info("event=caller_known known=%s client=%s segment=%s deals=%s assigned=%s active_sales=%s",
                 facts.known, facts.client_id, facts.segment, facts.deals_count, facts.assigned_operator,
                 facts.active_sales_manager)
        return facts

    async def _ask_topic(self, menu: TopicMenu) -> str | None:
        assert self.record is not None
        playback_id = f"menu-{uuid.uuid4().hex[:12]}"
        await self.ari.play(self.channel_id, [f"sound:{s}" for s in menu.prompt], lang=self.svc.language,
                            playback_id=playback_id)
        deadline: float | None = None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            event = await self._next(timeout)
            if event is None:
                log.info("event=menu_no_input default=%s", menu.default_topic)
                return menu.default_topic
            if event.type == "PlaybackFinished" and event.playback_id == playback_id:
                deadline = time.monotonic() + menu.timeout
            elif event.type == "ChannelDtmfReceived" and event.channel_id == self.channel_id:
                digit = event.digit if len(event.digit) == 1 else "?"
                self.record.digits += digit
                topic = menu.topic_for(digit)
                if any(o.digit == digit for o in menu.options):
                    await self._stop_playback(playback_id)
                    log.info("event=menu_choice digit=%s topic=%s", digit, topic)
                    return topic
                log.info("event=menu_invalid_digit digit=%s", kv(digit))

    # --- closed / callback -------------------------------------------------------------------
    async def _after_hours(self, decision: RouteDecision) -> None:
        assert self.record is not None
        self.record.result = RESULT_AFTER_HOURS
        await self._request_callback("after_hours")
        log.info("event=after_hours department=%s reopens=%s", decision.department, decision.reopens_at)
        await self._play_and_wait(prompts.AFTER_HOURS, limit=15)
        self.record.hangup_by = "ivr"
        await self._hangup(self.channel_id)

    async def _callback(self, reason: str) -> None:
        assert self.record is not None
        await self._stop_ringback()
        self.record.result = RESULT_CALLBACK
        await self._request_callback(reason)
        log.info("event=nobody_answered reason=%s rung=%s", reason, ",".join(sorted(self.rung)) or "-")
        await self._play_and_wait(prompts.NOBODY_ANSWERED, limit=15)
        self.record.hangup_by = "ivr"
        await self._hangup(self.channel_id)

    async def _request_callback(self, reason: str) -> None:
        assert self.record is not None
        try:
            request_id = await self.svc.store.request_callback(
                e164=self.record.from_e164, raw_number=self.record.from_number, client_id=self.record.client_id,
                call_uid=self.call_uid, department=self.record.department_code, reason=reason)
            self.record.add_note(f"callback request {request_id} ({reason})")
            log.info("event=callback_requested id=%s reason=%s", request_id, reason)
        except StoreUnavailable as exc:
            # Nothing is lost: the call row (spooled if need be) carries the number and the reason.
            self.record.add_note(f"callback request not stored ({reason}): {exc}")
            log.warning("event=callback_request_failed reason=%s", kv(str(exc)))

    # --- ringing -----------------------------------------------------------------------------
    async def _run_step(self, step: RingStep, rules) -> bool:
        """Ring this step's operator(s); True when the call was answered (and is now over)."""
        dept = rules.departments.get(step.department)
        ring_timeout = float(getattr(dept, "ring_timeout", 15) or 15)
        strategy = getattr(dept, "strategy", "longest_idle")
        log.info("event=step_started kind=%s department=%s operator=%s timeout=%.0f", step.kind, step.department,
                 step.operator or "-", step.timeout)
        if step.operator:
            if step.operator in self.rung:
                return False
            view = await self._personal_operator(step)
            if view is None:
                return False
            self.svc.board.reserve(view.extension, self.call_uid)
            return await self._ring(view, step, min(step.timeout, 600), dept)
        deadline = time.monotonic() + step.timeout
        while (remaining := deadline - time.monotonic()) > 0.5:
            view = await self._claim(step.department, strategy, remaining)
            if view is None:
                return False
            if await self._ring(view, step, min(ring_timeout, max(remaining, 1.0)), dept):
                return True
        return False

    async def _personal_operator(self, step: RingStep):
        """The assigned / active-sales manager's view if he can be rung now, else None."""
        assert step.operator is not None
        try:
            views = self.svc.board.overlay(await self.svc.board.views(step.department))
        except Exception:
            views = []
        view = next((v for v in views if v.extension == step.operator), None)
        if view is None:
            # Not in that department's list: look him up by extension.
            view = await self.svc.operator_view(step.operator)
        if view is None:
            log.info("event=personal_operator_unknown operator=%s", step.operator)
            return None
        now = utcnow()
        if view.status != "available" or view.busy or (view.wrapup_until and view.wrapup_until > now):
            log.info("event=personal_operator_unavailable operator=%s status=%s busy=%s", view.extension,
                     view.status, view.busy)
            return None
        return view

    async def _claim(self, department: str, strategy: str, wait: float):
        # A tight loop reading events is not needed here: the caller's hang-up is checked
        # between claims, and the claim itself waits at most ``wait`` seconds.
        async def announce_all_busy():
            if not self._busy_announced:
                self._busy_announced = True
                log.info("event=all_busy department=%s waiting=%d", department, self.svc.board.waiting(department))
                await self._stop_ringback()
                await self._play_and_wait(prompts.ALL_BUSY, limit=10)
                await self._start_ringback()
        # Wait in short slices so a caller who hangs up while everyone is busy is noticed at
        # once; his place in the line is kept by ``since`` (his arrival time).
        deadline = time.monotonic() + wait
        while True:
            self._check_caller()
            slice_ = min(max(deadline - time.monotonic(), 0.0), 1.0)
            view = await self.svc.board.claim(department, self.call_uid, strategy=strategy, exclude=self.rung,
                                              wait=slice_, on_first_wait=announce_all_busy, since=self._started)
            if view is not None and self.session.is_ended(self.channel_id):
                await self.svc.board.ring_ended(view.extension, self.call_uid, answered=False)
                raise CallerGone(None)
            if view is not None or time.monotonic() >= deadline:
                return view

    def _check_caller(self) -> None:
        """Raise CallerGone if a hang-up is waiting in the mailbox (events read later stay queued)."""
        if self.session.is_ended(self.channel_id):
            raise CallerGone(None)

    async def _ring(self, view, step: RingStep, timeout: float, dept) -> bool:
        assert self.record is not None and self.facts is not None
        ext = view.extension
        self.rung.add(ext)
        leg_id = f"op-{uuid.uuid4().hex[:20]}"
        started = utcnow()
        t0 = time.monotonic()
        attempt_id = await self._attempt_start(view, step, started)
        self.session.watch(leg_id)
        outcome, cause = "failed", None
        log.info("event=operator_ringing operator=%s step=%s timeout=%.0f", ext, step.kind, timeout)
        try:
            try:
                await self.ari.originate(f"PJSIP/{ext}", app=self.svc.app, app_args="operator_leg",
                                         channel_id=leg_id, caller_id=self._client_card(),
                                         timeout=int(timeout) + 5)
            except AriError as exc:
                log.warning("event=operator_originate_failed operator=%s reason=%s", ext, kv(str(exc)[:200]))
                outcome = "failed"
                return False
            outcome, cause = await self._wait_operator(leg_id, timeout)
        except CallerGone:
            outcome = "caller_hung_up"
            await self._hangup(leg_id)
            raise
        finally:
            rang = time.monotonic() - t0
            answered = outcome == "answered"
            await self.svc.board.ring_ended(ext, self.call_uid, answered=answered)
            if not answered:
                await self._attempt_finish(attempt_id, outcome=outcome, cause=cause)
                await self.svc.after_miss(view, outcome, rang, self.call_uid, step=step,
                                          reaction_standard=step.reaction_standard and outcome != "caller_hung_up")
            log.info("event=operator_ring_result operator=%s outcome=%s cause=%s rang=%.1fs", ext, outcome, cause,
                     rang)
        if outcome != "answered":
            return False
        await self._connected(view, leg_id, attempt_id, dept)
        return True

    def _client_card(self) -> str:
        """Caller ID shown on the operator's phone: client name + segment, then the number."""
        assert self.record is not None and self.facts is not None
        number = self.record.from_e164 or "anonymous"
        number = number.lstrip("+") if number != "anonymous" else number
        parts = []
        if self.facts.full_name:
            parts.append(self.facts.full_name)
        if self.facts.segment:
            parts.append(f"({SEGMENT_LABELS.get(self.facts.segment, self.facts.segment)})")
        if not parts:
            parts.append("Новый клиент" if not self.facts.degraded else "Клиент")
        name = " ".join(parts).replace('"', "'")[:60]
        return f'"{name}" <{number}>'

    async def _wait_operator(self, leg_id: str, timeout: float) -> tuple[str, int | None]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await self._hangup(leg_id)
                return "no_answer", None
            event = await self._next(remaining)
            if event is None:
                continue
            if event.channel_id != leg_id:
                continue
            if event.type == "StasisStart":
                return "answered", None
            if event.type == "ChannelDestroyed":
                cause = event.cause
                if cause == CAUSE_BUSY:
                    return "busy", cause
                if cause == CAUSE_REJECTED:
                    return "rejected", cause
                if cause in CAUSE_NO_ANSWER:
                    return "no_answer", cause
                return "failed", cause

    # --- connected ---------------------------------------------------------------------------
    async def _connected(self, view, leg_id: str, attempt_id: int | None, dept) -> None:
        assert self.record is not None
        self.state = State.CONNECTED
        answered_at = utcnow()
        await self._stop_ringback()
        # dtmf_events: keeps the two legs out of native RTP bridging so the operator's keys reach
        # the controller as ChannelDtmfReceived (the *2 transfer); docs/decisions.md.
        bridge_id = await self.ari.create_bridge("mixing,dtmf_events", name=f"call-{self.call_uid[:40]}")
        self.record.result = RESULT_ANSWERED
        self.record.answered_by_operator_id = view.id
        self.record.wait_seconds = round(time.monotonic() - self._started, 2)
        self.journal.record(self.record)
        t0 = time.monotonic()
        self._leg = _Leg(view, leg_id, attempt_id, answered_at, t0)
        log.info("event=connected operator=%s wait=%.1fs", view.extension, self.record.wait_seconds)
        try:
            await self.ari.add_to_bridge(bridge_id, [self.channel_id, leg_id])
            await self._talk(bridge_id, dept)
        finally:
            talk = round(time.monotonic() - t0, 2)
            self.record.talk_seconds = talk
            await self._destroy_bridge(bridge_id)
            leg = self._leg
            if leg is not None:  # None: the operator left during a transfer nobody took
                if not self._transferred:
                    await self._hangup(leg.channel_id)
                await self._leg_done(leg, dept)
            await self.svc.after_answer(view, self.record, answered_at)
            if leg is not None and leg.view is not view:
                await self.svc.after_answer(leg.view, self.record, leg.answered_at)

    async def _leg_done(self, leg: "_Leg", dept) -> None:
        """An operator's part of the call is over: wrap-up, attempt with his talk time."""
        await self.svc.board.call_ended(leg.view.extension, self.call_uid,
                                        wrapup_seconds=float(getattr(dept, "wrapup_seconds", 10) or 0))
        await self._attempt_finish(leg.attempt_id, outcome="answered", answered_at=leg.answered_at,
                                   talk=round(time.monotonic() - leg.t0, 2))

    async def _talk(self, bridge_id: str, dept) -> None:
        assert self.record is not None
        keys = ""  # what the operator pressed towards a transfer: "*", "*2", "*2301", "*2301#"
        while True:
            event = await self.session.next_event(TRANSFER_KEY_TIMEOUT if keys else None)
            if event is None:
                if keys:
                    log.info("event=transfer_keys_abandoned keys=%s", kv(keys))
                    keys = ""
                continue
            if event.type in ("BridgeBlindTransfer", "BridgeAttendedTransfer"):
                self._transferred = True
                self.record.result = RESULT_TRANSFERRED
                self.record.add_note(f"transferred by the operator ({event.type})")
                log.info("event=transferred kind=%s", event.type)
                continue
            assert self._leg is not None
            if event.type == "ChannelDtmfReceived" and event.channel_id == self._leg.channel_id:
                keys = transfer_keys(keys, event.digit)
                if keys.endswith("#"):
                    target, keys = keys[2:-1], ""
                    if await self._transfer(bridge_id, target, dept):
                        return
                continue
            if event.channel_id == self._leg.channel_id and event.type in ("StasisEnd", "ChannelDestroyed",
                                                                           CHANNEL_GONE):
                if not self._transferred:
                    self.record.hangup_by = "operator"
                    log.info("event=operator_hung_up")
                    await self._hangup(self.channel_id)
                return
            if event.channel_id == self.channel_id and event.type in _CALLER_GONE_EVENTS:
                self.record.hangup_by = self.record.hangup_by or "caller"
                if event.cause is not None:
                    self.record.hangup_cause = event.cause
                log.info("event=caller_hung_up state=connected")
                return

    # --- transfer (*2 + extension + # pressed by the operator during the call) -------------
    async def _transfer(self, bridge_id: str, target: str, dept) -> bool:
        """Ring colleague ``target`` while the caller stays with the operator; when he answers he
        takes the operator's place in the bridge. True when the call is over."""
        assert self.record is not None and self._leg is not None
        current = self._leg
        source = current.view.extension
        log.info("event=transfer_requested operator=%s target=%s", source, kv(target))
        row = None
        if target.isdigit() and 2 <= len(target) <= 8 and target != source:
            try:
                row = await self.svc.store.operator(target)
            except StoreUnavailable as exc:
                log.warning("event=transfer_lookup_failed reason=%s", kv(str(exc)))
        if row is None:
            await self._tell_operator(prompts.TRANSFER_INVALID)
            return False
        if self.svc.board.state(target).busy() or await self._phone_busy(target):
            log.info("event=transfer_target_busy target=%s", target)
            await self._tell_operator(prompts.TRANSFER_BUSY)
            return False
        self.svc.board.reserve(target, self.call_uid)
        started = utcnow()
        attempt_id = await self._attempt_start(row, RingStep(kind="transfer", department=row.department,
                                                             timeout=TRANSFER_RING_SECONDS), started)
        leg_id = f"tr-{uuid.uuid4().hex[:20]}"
        self.session.watch(leg_id)
        outcome, cause, source_gone = "failed", None, False
        try:
            try:
                await self.ari.originate(f"PJSIP/{target}", app=self.svc.app, app_args="operator_leg",
                                         channel_id=leg_id, caller_id=self._client_card(),
                                         timeout=TRANSFER_RING_SECONDS + 5)
            except AriError as exc:
                log.warning("event=transfer_originate_failed target=%s reason=%s", target, kv(str(exc)[:200]))
            else:
                outcome, cause, source_gone = await self._wait_transfer(leg_id, current.channel_id)
        except CallerGone:
            outcome = "caller_hung_up"
            await self._hangup(leg_id)
            raise
        finally:
            await self.svc.board.ring_ended(target, self.call_uid, answered=outcome == "answered")
            if outcome != "answered":
                await self._attempt_finish(attempt_id, outcome=outcome, cause=cause)
            log.info("event=transfer_ring_result target=%s outcome=%s cause=%s", target, outcome, cause)
        if outcome == "answered":
            await self.ari.add_to_bridge(bridge_id, [leg_id])
            if not source_gone:
                await self._hangup(current.channel_id)
            self._leg = _Leg(row, leg_id, attempt_id, utcnow(), time.monotonic())
            await self._leg_done(current, dept)
            self.record.result = RESULT_TRANSFERRED
            self.record.add_note(f"transferred by {source} to {target} (*2)")
            self.journal.record(self.record)
            log.info("event=transferred kind=dtmf from=%s to=%s", source, target)
            return False
        if not source_gone:
            await self._tell_operator(prompts.TRANSFER_NOT_ANSWERED)
            return False
        # The operator left after pressing the code and the colleague did not answer: the caller
        # is alone - a callback request and the goodbye message, as when nobody answers.
        self.record.hangup_by = "operator"
        await self._leg_done(current, dept)
        self._leg = None
        self.record.result = RESULT_CALLBACK
        await self._request_callback("transfer_not_answered")
        await self._play_and_wait(prompts.NOBODY_ANSWERED, limit=15)
        await self._hangup(self.channel_id)
        return True

    async def _wait_transfer(self, leg_id: str, source_leg: str) -> tuple[str, int | None, bool]:
        deadline = time.monotonic() + TRANSFER_RING_SECONDS
        source_gone = False
        while (remaining := deadline - time.monotonic()) > 0:
            event = await self._next(remaining)
            if event is None:
                break
            if event.channel_id == source_leg and event.type in ("StasisEnd", "ChannelDestroyed", CHANNEL_GONE):
                source_gone = True  # a blind transfer: he pressed the code and hung up
                continue
            if event.channel_id != leg_id:
                continue
            if event.type == "StasisStart":
                return "answered", None, source_gone
            if event.type == "ChannelDestroyed":
                cause = event.cause
                return ("busy" if cause == CAUSE_BUSY else "rejected" if cause == CAUSE_REJECTED
                        else "no_answer" if cause in CAUSE_NO_ANSWER else "failed"), cause, source_gone
        await self._hangup(leg_id)
        return "no_answer", None, source_gone

    async def _phone_busy(self, extension: str) -> bool:
        try:
            return await self.svc._phone_busy(extension)
        except (AriError, AriUnavailable):
            return False

    async def _tell_operator(self, sounds: tuple[str, ...]) -> None:
        """A short message to the operator's leg only (it stays in the bridge with the caller)."""
        if self._leg is None:
            return
        try:
            await self.ari.play(self._leg.channel_id, prompts.media(sounds), lang=self.svc.language,
                                playback_id=f"tr-{uuid.uuid4().hex[:12]}")
        except (AriNotFound, AriError, AriUnavailable):
            pass

    # --- helpers -----------------------------------------------------------------------------
    async def _next(self, timeout: float | None) -> AriEvent | None:
        """The next event; raises CallerGone when it says the caller left."""
        event = await self.session.next_event(timeout)
        if event is not None and event.channel_id == self.channel_id and event.type in _CALLER_GONE_EVENTS:
            raise CallerGone(event)
        return event

    async def _start_ringback(self) -> None:
        self._ringback_id = f"rb-{uuid.uuid4().hex[:12]}"
        try:
            await self.ari.play(self.channel_id, "tone:ring;tonezone=ru", playback_id=self._ringback_id)
        except AriNotFound:
            raise CallerGone(None) from None
        except AriError as exc:
            log.warning("event=ringback_failed reason=%s", kv(str(exc)[:120]))
            self._ringback_id = None

    async def _stop_ringback(self) -> None:
        if self._ringback_id:
            await self._stop_playback(self._ringback_id)
            self._ringback_id = None

    async def _stop_playback(self, playback_id: str) -> None:
        try:
            await self.ari.stop_playback(playback_id)
        except (AriNotFound, AriError, AriUnavailable):
            pass

    async def _play_and_wait(self, sounds: tuple[str, ...], *, limit: float) -> None:
        playback_id = f"msg-{uuid.uuid4().hex[:12]}"
        try:
            await self.ari.play(self.channel_id, prompts.media(sounds), lang=self.svc.language,
                                playback_id=playback_id)
        except AriNotFound:
            raise CallerGone(None) from None
        deadline = time.monotonic() + limit
        while (remaining := deadline - time.monotonic()) > 0:
            event = await self._next(remaining)
            if event is None:
                return
            if event.type == "PlaybackFinished" and event.playback_id == playback_id:
                return

    async def _hangup(self, channel_id: str) -> None:
        try:
            await self.ari.hangup(channel_id)
        except (AriNotFound, AriError, AriUnavailable):
            pass

    async def _destroy_bridge(self, bridge_id: str) -> None:
        try:
            await self.ari.destroy_bridge(bridge_id)
        except (AriNotFound, AriError, AriUnavailable):
            pass

    async def _attempt_start(self, view, step: RingStep, started: datetime) -> int | None:
        try:
            return await self.svc.store.start_attempt(
                call_uid=self.call_uid, operator_id=view.id, extension=view.extension, step=step.kind,
                department=step.department, started_at=started)
        except StoreUnavailable as exc:
            log.warning("event=attempt_not_stored reason=%s", kv(str(exc)))
            return None

    async def _attempt_finish(self, attempt_id: int | None, *, outcome: str, cause: int | None = None,
                              answered_at: datetime | None = None, talk: float | None = None) -> None:
        if attempt_id is None:
            return
        try:
            await self.svc.store.finish_attempt(attempt_id, outcome=outcome, hangup_cause=cause,
                                                answered_at=answered_at, talk_seconds=talk)
        except StoreUnavailable as exc:
            log.warning("event=attempt_not_stored reason=%s", kv(str(exc)))

    def _caller_gone(self, event: AriEvent | None) -> None:
        assert self.record is not None
        if self.state is State.ENDED:
            return
        during = self.state.value
        if self.record.result is None:
            self.record.result = RESULT_CALLER_HANGUP
        self.record.hangup_by = self.record.hangup_by or "caller"
        if event is not None and event.cause is not None:
            self.record.hangup_cause = event.cause
        self.record.add_note(f"caller hung up during {during}")
        log.info("event=caller_hangup during=%s", during)

    def _finish(self) -> None:
        assert self.record is not None
        self.state = State.ENDED
        self.record.ended_at = utcnow()
        if self.record.wait_seconds is None and self.record.result != RESULT_ANSWERED:
            self.record.wait_seconds = round(time.monotonic() - self._started, 2)
        self.journal.record(self.record)
        log.info("event=call_ended result=%s rule=%s department=%s answered_by=%s wait=%s talk=%s",
                 self.record.result, self.record.rule, self.record.department_code,
                 self.record.answered_by_operator_id, self.record.wait_seconds, self.record.talk_seconds)


SEGMENT_LABELS = {"retail": "розница", "small_wholesale": "мелкий опт", "wholesale": "опт",
                  "large_wholesale": "крупный опт"}


@dataclass
class _Leg:
    """An operator's leg of a connected call (the first one, or the colleague after *2)."""

    view: Any                 # OperatorView, or an operator row (id, extension, department)
    channel_id: str
    attempt_id: int | None
    answered_at: datetime
    t0: float


def transfer_keys(keys: str, digit: str) -> str:
    """The operator's keys towards a transfer so far: ``*`` -> ``*2`` -> ``*2`` + digits -> ``#``
    ends it. Anything else starts over (so ordinary keys during the call do nothing)."""
    if digit == "*":
        return "*"
    if keys == "*":
        return "*2" if digit == "2" else ""
    if keys.startswith("*2") and not keys.endswith("#"):
        if digit.isdigit() and len(keys) < 10:
            return keys + digit
        if digit == "#" and len(keys) > 2:
            return keys + "#"
    return ""
