"""CallLastCaller: an operator dials *69 to call back the last customer he answered (or was rung
for).

    operator dials *69 -> his operator row (the authenticated endpoint, never a caller ID)
    -> the newest routed inbound call he was rung for, from the database (calls + call_attempts)
    -> none: «извините, не могу перезвонить неопознанному абоненту», hung up
    -> found: he hears «вызов» + the number's digits while the number rings through the outbound
       trunk (PJSIP/<number>@<outbound trunk>, the company's public number as caller ID), then a
       ringing tone -> the customer answers: both in a mixing bridge; either hangs up: the other
       is hung up -> not answered: «извините, номер не отвечает».

Security: the number dialled is the one stored for that call (E.164, checked again here); the
operator's phone sends nothing but ``*69``, so the trunk cannot be reached with a number of
his choosing. The call is recorded as an outbound ``calls`` row (flow ``operator_callback``,
the operator in ``answered_by_operator_id``) and, when the number belongs to a client, an
outbound contact in his history.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from ivr.ari import AriError, AriNotFound, AriUnavailable, CallSession
from ivr.calls.record import RESULT_ANSWERED, RESULT_FAILED, CallRecord, utcnow
from ivr.logs import kv
from models.tables import CallDirection

from . import prompts
from .call import CAUSE_BUSY, CAUSE_NO_ANSWER, CAUSE_REJECTED
from .store import StoreUnavailable

log = logging.getLogger("ivr.inbound.callback")

FLOW = "operator_callback"
RING_SECONDS = 40
_E164_RE = re.compile(r"\+[1-9][0-9]{6,14}")
_GONE = ("StasisEnd", "ChannelDestroyed", "ChannelHangupRequest")


class CallLastCaller:
    def __init__(self, services, session: CallSession):
        self.svc = services
        self.ari = services.ari
        self.session = session
        self.record: CallRecord | None = None
        self.far_id = f"cb-{uuid.uuid4().hex[:20]}"
        self._playback_id: str | None = None

    @property
    def operator_channel(self) -> str:
        return self.session.channel_id

    async def run(self, extension: str) -> None:
        try:
            row = await self.svc.store.operator(extension)
            if row is None:
                await self.svc.play_then_hangup(self.session, prompts.NOT_AN_OPERATOR)
                return
            last = await self.svc.store.last_caller(row.id)
        except StoreUnavailable as exc:
            log.warning("event=callback_last_failed operator=%s reason=%s", extension, kv(str(exc)))
            await self.svc.play_then_hangup(self.session, prompts.TECHNICAL_PROBLEM)
            return
        number = last.from_e164 if last is not None else None
        if not number or not _E164_RE.fullmatch(number):
            log.info("event=callback_last_none operator=%s", extension)
            await self.svc.play_then_hangup(self.session, prompts.CALLBACK_NO_NUMBER)
            return
        log.info("event=callback_last operator=%s of_call=%s to=%s", extension, last.call_uid, number)
        await self._call(row, number, last)

    async def _call(self, operator, number: str, last) -> None:
        settings = self.svc.settings
        public = settings.public_number.lstrip("+")
        self.record = record = CallRecord(
            call_uid=self.far_id, direction=CallDirection.outbound, from_number=public, to_number=number,
            flow=FLOW, client_id=last.client_id, channel_name=f"PJSIP/{number.lstrip('+')}@{settings.outbound_trunk}")
        record.add_note(f"operator {operator.extension} called back the caller of {last.call_uid}")
        self.svc.journal.record(record)
        self.session.watch(self.far_id)
        t0 = time.monotonic()
        try:
            await self._play(prompts.media(prompts.CALLBACK_CALLING, number.lstrip("+")))
            try:
                await self.ari.originate(record.channel_name, app=self.svc.app, app_args="operator_leg",
                                         channel_id=self.far_id, caller_id=f'"{_company(settings)}" <{public}>',
                                         timeout=RING_SECONDS)
            except AriError as exc:
                log.warning("event=callback_originate_failed reason=%s", kv(str(exc)[:200]))
                record.result = RESULT_FAILED
                record.add_note(f"originate failed: {str(exc)[:120]}")
                await self._finish_with(prompts.TECHNICAL_PROBLEM)
                return
            outcome, cause = await self._wait_answer()
            log.info("event=callback_ring_result operator=%s outcome=%s cause=%s rang=%.1fs", operator.extension,
                     outcome, cause, time.monotonic() - t0)
            if outcome == "operator_hung_up":
                record.result = "cancelled"
                record.hangup_by = "operator"
                return
            if outcome != "answered":
                record.result = outcome
                record.hangup_cause = cause
                await self._finish_with(prompts.CALLBACK_NOT_ANSWERED)
                return
            await self._connected(operator)
        except (AriNotFound, AriUnavailable):
            await self._hangup(self.far_id)
        finally:
            record.ended_at = utcnow()
            if record.result is None:
                record.result = RESULT_FAILED
            self.svc.journal.record(record)
            log.info("event=callback_ended operator=%s result=%s talk=%s", operator.extension, record.result,
                     record.talk_seconds)

    async def _wait_answer(self) -> tuple[str, int | None]:
        deadline = time.monotonic() + RING_SECONDS + 5
        while (remaining := deadline - time.monotonic()) > 0:
            event = await self.session.next_event(remaining)
            if event is None:
                break
            if event.channel_id == self.operator_channel and event.type in _GONE:
                await self._hangup(self.far_id)
                return "operator_hung_up", None
            if event.type == "PlaybackFinished" and event.playback_id == self._playback_id:
                # The number was read out; a ringing tone until the customer answers.
                self._playback_id = None
                await self._play("tone:ring;tonezone=ru")
                continue
            if event.channel_id != self.far_id:
                continue
            if event.type == "StasisStart":
                return "answered", None
            if event.type == "ChannelDestroyed":
                cause = event.cause
                return ("busy" if cause == CAUSE_BUSY else "rejected" if cause == CAUSE_REJECTED
                        else "no_answer" if cause in CAUSE_NO_ANSWER else "failed"), cause
        await self._hangup(self.far_id)
        return "no_answer", None

    async def _connected(self, operator) -> None:
        record = self.record
        assert record is not None
        await self._stop_playback()
        record.answered_at = utcnow()
        record.result = RESULT_ANSWERED
        record.answered_by_operator_id = operator.id
        self.svc.journal.record(record)
        bridge_id = await self.ari.create_bridge("mixing", name=f"callback-{self.far_id}")
        t0 = time.monotonic()
        log.info("event=callback_connected operator=%s", operator.extension)
        try:
            await self.ari.add_to_bridge(bridge_id, [self.operator_channel, self.far_id])
            while True:
                event = await self.session.next_event()
                if event is None or event.type not in ("StasisEnd", "ChannelDestroyed"):
                    continue
                if event.channel_id == self.far_id:
                    record.hangup_by = "callee"
                    await self._hangup(self.operator_channel)
                    break
                if event.channel_id == self.operator_channel:
                    record.hangup_by = "operator"
                    await self._hangup(self.far_id)
                    break
        finally:
            record.talk_seconds = round(time.monotonic() - t0, 2)
            try:
                await self.ari.destroy_bridge(bridge_id)
            except (AriNotFound, AriError, AriUnavailable):
                pass
            if record.client_id is not None:
                try:
                    await self.svc.store.record_contact(client_id=record.client_id, operator_id=operator.id,
                                                        at=record.answered_at, call_uid=self.far_id,
                                                        result="called_back", direction=CallDirection.outbound)
                except StoreUnavailable as exc:
                    log.warning("event=contact_not_stored reason=%s", kv(str(exc)))

    async def _finish_with(self, sounds) -> None:
        await self._stop_playback()
        await self.svc.play_then_hangup(self.session, sounds)

    async def _play(self, media) -> None:
        self._playback_id = f"cbp-{uuid.uuid4().hex[:12]}"
        await self.ari.play(self.operator_channel, media, lang=self.svc.language, playback_id=self._playback_id)

    async def _stop_playback(self) -> None:
        if self._playback_id:
            try:
                await self.ari.stop_playback(self._playback_id)
            except (AriNotFound, AriError, AriUnavailable):
                pass
            self._playback_id = None

    async def _hangup(self, channel_id: str) -> None:
        try:
            await self.ari.hangup(channel_id)
        except (AriNotFound, AriError, AriUnavailable):
            pass


def _company(settings) -> str:
    name = str(getattr(settings, "company_name", "") or "").replace('"', "'").replace("\n", " ")
    return name[:40] or "Компания"
