"""Wiring of the inbound capability: routing of the public number, operators' feature codes and
the summon-a-manager service, over one store adapter and one operator board.

Use cases handled here (one method each, like wazo-agentd's handlers):
- an operator missed a ring -> auto-pause policy, reaction-standard violation;
- an operator answered -> contact history, miss counter reset;
- feature codes from an operator's phone: *45 pause/rejoin, *44 log in/out, *78 arrived;
- *69 call the last caller back through the trunk (CallLastCaller, ivr/inbound/callback.py);
- *2 + extension + # during a customer call: transfer (InboundCall, ivr/inbound/call.py);
- *77 summon a current-sales manager to the sales floor (SummonCall);
- the summon deadline passed -> violation and the consultant is told by a call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from ivr.ari import AriClient, AriError, AriEvent, AriNotFound, AriUnavailable, CallSession
from ivr.calls.journal import CallJournal
from ivr.calls.record import CallRecord, utcnow
from ivr.config import PROJECT_ROOT, Settings
from ivr.logs import kv
from models.tables import OperatorStatus
from routing.autopause import AutoPausePolicy, MissCounter
from routing.distribution import OperatorView

from . import prompts
from .board import OperatorBoard
from .call import InboundCall
from .store import InboundStore, StoreUnavailable, day_start

log = logging.getLogger("ivr.inbound")

DEFAULT_RULES_FILE = PROJECT_ROOT / "routing" / "rules.yaml"


class InboundPlugin:
    def __init__(self, settings: Settings, ari: AriClient, journal: CallJournal, store: InboundStore,
                 *, rules_file: Path = DEFAULT_RULES_FILE):
        self.settings = settings
        self.ari = ari
        self.journal = journal
        self.store = store
        self.app = settings.ari_app
        self.language = settings.sound_language
        self.rules_file = rules_file
        self.board = OperatorBoard(self._load_views, self._phone_busy)
        self._ruleset = None
        self._ruleset_version: int | None = None
        self._ruleset_checked = 0.0
        self._misses: dict[str, MissCounter] = {}
        self._summon_timers: dict[int, asyncio.Task] = {}

    # --- rules -----------------------------------------------------------------------------
    async def current_ruleset(self):
        """The active ruleset from the database (re-read when a new version is applied, checked at
        most once a second); the shipped routing/rules.yaml when none was applied or the database
        is down and nothing was read yet."""
        now = time.monotonic()
        if self._ruleset is not None and now - self._ruleset_checked < 1.0:
            return self._ruleset
        self._ruleset_checked = now
        try:
            version = await self.store.ruleset_version()
            if version is not None and version != self._ruleset_version:
                loaded = await self.store.load_ruleset()
                if loaded is not None:
                    self._ruleset_version, self._ruleset = loaded
                    self.board.forget_views()
                    log.info("event=ruleset_loaded version=%s", self._ruleset_version)
        except StoreUnavailable as exc:
            log.warning("event=ruleset_unavailable reason=%s", kv(str(exc)))
        if self._ruleset is None:
            from routing.loader import load

            self._ruleset, _ = load(self.rules_file)
            log.info("event=ruleset_from_file path=%s", self.rules_file)
        return self._ruleset

    # --- operators ---------------------------------------------------------------------------
    async def _load_views(self, department: str) -> list[OperatorView]:
        tz = "Europe/Moscow"
        if self._ruleset is not None and department in self._ruleset.departments:
            tz = self._ruleset.departments[department].timezone
        return await self.store.department_views(department, day_start(utcnow(), tz))

    async def _phone_busy(self, extension: str) -> bool:
        """Real workload: the phone has a channel we did not place (an internal call) or is
        unreachable. Asked from Asterisk just before ringing."""
        data = await self.ari.request("GET", f"/endpoints/PJSIP/{extension}")
        return bool(data.get("channel_ids")) or data.get("state") == "offline"

    async def operator_view(self, extension: str) -> OperatorView | None:
        try:
            row = await self.store.operator(extension)
        except StoreUnavailable:
            return None
        if row is None or not row.department:
            return None
        try:
            views = self.board.overlay(await self.board.views(row.department))
        except Exception:
            return None
        return next((v for v in views if v.extension == extension), None)

    async def after_miss(self, view: OperatorView, outcome: str, rang: float, call_uid: str, *, step,
                         reaction_standard: bool) -> None:
        """An operator was rung and did not take the call."""
        if outcome == "caller_hung_up":
            return
        if reaction_standard:
            standard = float(step.timeout)
            try:
                await self.store.record_violation(view.id, call_uid, "reaction", standard, round(rang, 2),
                                                  note=f"{step.kind} manager did not answer within {standard:.0f}s")
                log.info("event=violation kind=reaction operator=%s standard=%.0f delay=%.1f", view.extension,
                         standard, rang)
            except StoreUnavailable as exc:
                log.warning("event=violation_not_stored operator=%s reason=%s", view.extension, kv(str(exc)))
        if outcome == "failed":
            return  # the phone could not be reached at all: not the operator's miss
        rules = self._ruleset
        policy = AutoPausePolicy(**_autopause_settings(rules))
        counter = self._misses.setdefault(view.extension, MissCounter())
        decision = policy.on_ring_result(counter, outcome, rang, utcnow())
        try:
            await self.store.record_operator_event(view.id, "ring_no_answer" if outcome == "no_answer"
                                                   else f"ring_{outcome}", reason=f"{rang:.0f}s",
                                                   cause="auto", call_uid=call_uid)
        except StoreUnavailable:
            pass
        if decision is None:
            return
        try:
            await self.store.set_status(view.extension, OperatorStatus.paused, reason=decision.reason,
                                        cause="auto", call_uid=call_uid)
            self.board.forget_views(view.department)
            log.info("event=auto_paused operator=%s reason=%s", view.extension, kv(decision.reason))
        except StoreUnavailable as exc:
            log.warning("event=auto_pause_not_stored operator=%s reason=%s", view.extension, kv(str(exc)))

    async def after_answer(self, view: OperatorView, record: CallRecord, answered_at) -> None:
        counter = self._misses.get(view.extension)
        if counter is not None:
            AutoPausePolicy(**_autopause_settings(self._ruleset)).on_ring_result(counter, "answered", 0.0, utcnow())
        if record.client_id is not None:
            try:
                await self.store.record_contact(client_id=record.client_id, operator_id=view.id, at=answered_at,
                                                call_uid=record.call_uid, result=record.result or "answered")
            except StoreUnavailable as exc:
                log.warning("event=contact_not_stored reason=%s", kv(str(exc)))

    # --- flows -------------------------------------------------------------------------------
    async def inbound(self, session: CallSession, first_event: AriEvent) -> None:
        await InboundCall(self, session).run(first_event)

    async def feature(self, session: CallSession, first_event: AriEvent) -> None:
        """A feature code from an operator's phone; the operator is his authenticated endpoint."""
        action = first_event.args[1] if len(first_event.args) > 1 else ""
        channel = first_event.channel
        extension = operator_extension(channel.name if channel else "")
        log.info("event=feature_code action=%s operator=%s", kv(action), extension or "-")
        sounds = prompts.NOT_AN_OPERATOR
        try:
            await self.ari.answer(session.channel_id)
            if extension and action == "callback_last":
                from .callback import CallLastCaller

                await CallLastCaller(self, session).run(extension)
                return
            if extension:
                sounds = await self._feature_action(action, extension)
        except StoreUnavailable as exc:
            log.warning("event=feature_failed action=%s reason=%s", kv(action), kv(str(exc)))
            sounds = prompts.TECHNICAL_PROBLEM
        except (AriNotFound, AriUnavailable):
            return
        await self.play_then_hangup(session, sounds)

    async def _feature_action(self, action: str, extension: str) -> tuple[str, ...]:
        row = await self.store.operator(extension)
        if row is None:
            return prompts.NOT_AN_OPERATOR
        if action == "pause_toggle":
            change = await self.store.toggle_pause(extension, cause="feature_code")
            paused = _status_of(change) == OperatorStatus.paused
            self.board.forget_views()
            await self.board.notify()
            log.info("event=operator_%s operator=%s cause=feature_code", "paused" if paused else "rejoined",
                     extension)
            return prompts.PAUSED if paused else prompts.REJOINED
        if action == "login_toggle":
            new = OperatorStatus.available if row.status == OperatorStatus.logged_out else OperatorStatus.logged_out
            await self.store.set_status(extension, new, reason=None, cause="feature_code")
            self.board.forget_views()
            await self.board.notify()
            return prompts.LOGGED_IN if new == OperatorStatus.available else prompts.LOGGED_OUT
        if action == "summon_arrived":
            summon_id = await self.store.confirm_summon(row.id, utcnow())
            if summon_id is None:
                return prompts.NOT_AN_OPERATOR
            timer = self._summon_timers.pop(summon_id, None)
            if timer:
                timer.cancel()
            log.info("event=summon_confirmed summon=%s manager=%s", summon_id, extension)
            return prompts.CONFIRMED
        if action == "transfer_help":
            # *2 is pressed during a customer call (InboundCall); dialled on its own it does nothing.
            return prompts.TRANSFER_INVALID
        return prompts.NOT_AN_OPERATOR

    async def summon(self, session: CallSession, first_event: AriEvent) -> None:
        from .summon import SummonCall

        await SummonCall(self, session).run(first_event)

    async def notice(self, session: CallSession, first_event: AriEvent) -> None:
        """A call we placed to tell someone something (the consultant whose manager did not come)."""
        kind = first_event.args[1] if len(first_event.args) > 1 else ""
        sounds = prompts.SUMMON_MISSED if kind == "summon_missed" else prompts.NOT_AN_OPERATOR
        await asyncio.sleep(0.5)  # let the phone's audio path settle after answering
        await self.play_then_hangup(session, sounds)

    async def play_then_hangup(self, session: CallSession, sounds: tuple[str, ...] | list[str],
                               *, digits: str | None = None, limit: float = 20) -> None:
        media = prompts.media(tuple(sounds), digits)
        playback_id = f"fc-{session.channel_id[-12:]}-{int(time.monotonic() * 1000)}"
        try:
            await self.ari.play(session.channel_id, media, lang=self.language, playback_id=playback_id)
            deadline = time.monotonic() + limit
            while (remaining := deadline - time.monotonic()) > 0:
                event = await session.next_event(remaining)
                if event is None or event.type in ("StasisEnd", "ChannelDestroyed", "ChannelHangupRequest"):
                    return
                if event.type == "PlaybackFinished" and event.playback_id == playback_id:
                    break
            await self.ari.hangup(session.channel_id)
        except (AriNotFound, AriError, AriUnavailable):
            pass

    # --- summon deadline -------------------------------------------------------------------
    def watch_summon(self, summon_id: int, consultant_ext: str | None, seconds: float) -> None:
        self._summon_timers[summon_id] = asyncio.create_task(
            self._summon_deadline(summon_id, consultant_ext, seconds), name=f"summon-{summon_id}")

    async def _summon_deadline(self, summon_id: int, consultant_ext: str | None, seconds: float) -> None:
        try:
            await asyncio.sleep(seconds)
            missed = await self.store.miss_summon(summon_id, standard=seconds)
            if missed is None:
                return
            log.info("event=summon_missed summon=%s manager_id=%s violation=recorded", summon_id, missed[0])
            if consultant_ext:
                await self.ari.originate(f"PJSIP/{consultant_ext}", app=self.app, app_args="notice,summon_missed",
                                         caller_id='"Вызов менеджера" <*77>', timeout=30)
        except asyncio.CancelledError:
            raise
        except (StoreUnavailable, AriError, AriUnavailable) as exc:
            log.warning("event=summon_deadline_failed summon=%s reason=%s", summon_id, kv(str(exc)))
        finally:
            self._summon_timers.pop(summon_id, None)

    async def resume_summons(self) -> None:
        """After a restart: pending summons get their deadline timers back (overdue ones fire now)."""
        try:
            pending = await self.store.pending_summons()
        except StoreUnavailable:
            return
        for row in pending:
            if row.id not in self._summon_timers:
                left = max(0.0, (row.deadline_at - utcnow()).total_seconds())
                self.watch_summon(row.id, None, left)

    async def close(self) -> None:
        for task in list(self._summon_timers.values()):
            task.cancel()


def operator_extension(channel_name: str) -> str | None:
    """``PJSIP/201-0000000a`` -> ``201``: the authenticated endpoint, not the spoofable caller ID."""
    if not channel_name.startswith("PJSIP/"):
        return None
    endpoint = channel_name[len("PJSIP/"):].rsplit("-", 1)[0]
    return endpoint if endpoint.isdigit() and 2 <= len(endpoint) <= 8 else None


def _status_of(change) -> OperatorStatus | None:
    status = getattr(change, "status", None) or getattr(change, "new_status", None)
    return OperatorStatus(status) if status is not None else None


def _autopause_settings(rules) -> dict:
    ap = getattr(getattr(rules, "settings", None), "autopause", None)
    if ap is None:
        return {}
    if isinstance(ap, dict):
        return {"misses": int(ap.get("misses", 1)), "ring_seconds": float(ap.get("ring_seconds", 15))}
    return {"misses": int(getattr(ap, "misses", 1)), "ring_seconds": float(getattr(ap, "ring_seconds", 15))}

