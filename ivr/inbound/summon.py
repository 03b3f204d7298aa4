"""SummonCall: a retail consultant dials *77 to call a current-sales manager to the sales floor.

    consultant dials *77 -> pick a free manager by the department's workload strategy -> ring him
    -> he answers: he hears which floor phone (the consultant's extension) is waiting for him
    -> the consultant hears the coming manager's extension -> both hung up
    -> the manager confirms arrival with *78 within N minutes, else: a reaction-standard
       violation and the consultant is called back with «извините, номер не отвечает»
       (he serves the client himself).
    no manager free (or none answers): the consultant is told at once.

Names are spoken as extensions for now (the Russian prompt set has no names); the TTS adapter of
the outbound issue will speak them (docs/decisions.md).
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta

from ivr.ari import AriError, AriEvent, AriNotFound, AriUnavailable, CallSession
from ivr.calls.record import utcnow
from ivr.logs import kv
from routing.facts import RingStep

from . import prompts
from .call import CAUSE_BUSY, CAUSE_REJECTED
from .store import StoreUnavailable

log = logging.getLogger("ivr.inbound.summon")


class SummonCall:
    def __init__(self, services, session: CallSession):
        self.svc = services
        self.ari = services.ari
        self.session = session
        self.tried: set[str] = set()

    async def run(self, first_event: AriEvent) -> None:
        from .plugin import operator_extension

        channel = first_event.channel
        consultant = operator_extension(channel.name if channel else "")
        try:
            await self.ari.answer(self.session.channel_id)
            if consultant is None:
                await self.svc.play_then_hangup(self.session, prompts.NOT_AN_OPERATOR)
                return
            await self._summon(consultant)
        except StoreUnavailable as exc:
            log.warning("event=summon_failed reason=%s", kv(str(exc)))
            await self.svc.play_then_hangup(self.session, prompts.TECHNICAL_PROBLEM)
        except (AriNotFound, AriUnavailable):
            pass

    async def _summon(self, consultant: str) -> None:
        rules = await self.svc.current_ruleset()
        cfg = getattr(rules.settings, "summon", None)
        department = _get(cfg, "department", "current_sales")
        confirm_seconds = float(_get(cfg, "confirm_minutes", 4)) * 60
        dept = rules.departments.get(department)
        ring_timeout = float(getattr(dept, "ring_timeout", 15) or 15)
        strategy = getattr(dept, "strategy", "longest_idle")
        consultant_row = await self.svc.store.operator(consultant)
        summon_id = await self.svc.store.start_summon(
            call_uid=self.session.channel_id, consultant_id=consultant_row.id if consultant_row else None,
            started_at=utcnow())
        log.info("event=summon_started summon=%s consultant=%s department=%s", summon_id, consultant, department)
        step = RingStep(kind="summon", department=department, timeout=ring_timeout)
        while True:
            manager = await self.svc.board.claim(department, self.session.channel_id, strategy=strategy,
                                                 exclude=self.tried, wait=0)
            if manager is None:
                await self.svc.store.update_summon(summon_id, outcome="no_manager")
                log.info("event=summon_no_manager summon=%s tried=%s", summon_id, ",".join(sorted(self.tried)) or "-")
                await self.svc.play_then_hangup(self.session, prompts.SUMMON_NO_MANAGER)
                return
            self.tried.add(manager.extension)
            if await self._ring_manager(manager, consultant, step, ring_timeout, summon_id):
                deadline = utcnow() + timedelta(seconds=confirm_seconds)
                await self.svc.store.update_summon(summon_id, manager_id=manager.id, deadline_at=deadline)
                self.svc.watch_summon(summon_id, consultant, confirm_seconds)
                log.info("event=summon_accepted summon=%s manager=%s confirm_within=%.0fs", summon_id,
                         manager.extension, confirm_seconds)
                await self.svc.play_then_hangup(self.session, prompts.SUMMON_TO_CONSULTANT, digits=manager.extension)
                return

    async def _ring_manager(self, manager, consultant: str, step: RingStep, timeout: float, summon_id: int) -> bool:
        leg_id = f"sm-{uuid.uuid4().hex[:20]}"
        self.session.watch(leg_id)
        t0 = time.monotonic()
        started = utcnow()
        attempt_id = None
        try:
            attempt_id = await self.svc.store.start_attempt(
                call_uid=self.session.channel_id, operator_id=manager.id, extension=manager.extension, step="summon",
                department=step.department, started_at=started)
        except StoreUnavailable:
            pass
        outcome, cause = "failed", None
        try:
            await self.ari.originate(f"PJSIP/{manager.extension}", app=self.svc.app, app_args="operator_leg",
                                     channel_id=leg_id, caller_id=f'"Вызов в зал" <{consultant}>',
                                     timeout=int(timeout) + 5)
            outcome, cause = await self._wait(leg_id, timeout)
            if outcome == "answered":
                await self._tell_manager(leg_id, consultant)
        except AriError as exc:
            log.warning("event=summon_ring_failed manager=%s reason=%s", manager.extension, kv(str(exc)[:160]))
        finally:
            rang = time.monotonic() - t0
            await self.svc.board.ring_ended(manager.extension, self.session.channel_id, answered=False)
            if attempt_id is not None:
                try:
                    await self.svc.store.finish_attempt(attempt_id, outcome=outcome, hangup_cause=cause,
                                                        answered_at=started if outcome == "answered" else None)
                except StoreUnavailable:
                    pass
            if outcome != "answered":
                await self.svc.after_miss(manager, outcome, rang, self.session.channel_id, step=step,
                                          reaction_standard=False)
        return outcome == "answered"

    async def _wait(self, leg_id: str, timeout: float) -> tuple[str, int | None]:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            event = await self.session.next_event(remaining)
            if event is None:
                break
            if event.channel_id == self.session.channel_id and event.type in ("StasisEnd", "ChannelDestroyed"):
                await self._hangup(leg_id)
                return "caller_hung_up", None
            if event.channel_id != leg_id:
                continue
            if event.type == "StasisStart":
                return "answered", None
            if event.type == "ChannelDestroyed":
                cause = event.cause
                return ("busy" if cause == CAUSE_BUSY else "rejected" if cause == CAUSE_REJECTED
                        else "no_answer" if cause in (18, 19) else "failed"), cause
        await self._hangup(leg_id)
        return "no_answer", None

    async def _tell_manager(self, leg_id: str, consultant: str) -> None:
        playback_id = f"sm-{uuid.uuid4().hex[:12]}"
        await self.ari.play(leg_id, prompts.media(prompts.SUMMON_TO_MANAGER, consultant), lang=self.svc.language,
                            playback_id=playback_id)
        deadline = time.monotonic() + 15
        while (remaining := deadline - time.monotonic()) > 0:
            event = await self.session.next_event(remaining)
            if event is None or (event.type == "PlaybackFinished" and event.playback_id == playback_id):
                break
            if event.channel_id == leg_id and event.type in ("StasisEnd", "ChannelDestroyed"):
                return
        await self._hangup(leg_id)

    async def _hangup(self, channel_id: str) -> None:
        try:
            await self.ari.hangup(channel_id)
        except (AriNotFound, AriError, AriUnavailable):
            pass


def _get(cfg, name: str, default):
    if cfg is None:
        return default
    if isinstance(cfg, dict):
        return cfg.get(name, default)
    return getattr(cfg, name, default)
