"""GreetingCall: the public number's first flow - answer, greet in Russian, take one digit.

States (one call, one object, its whole life readable here):

    RINGING --answer--> GREETING --playback finished--> WAITING_DIGIT --digit/timeout--> CLOSING
       any state --caller hangs up / channel gone--> ENDED

A key pressed during the greeting stops it (barge-in) and counts. Keys that mean nothing here
(``*``, ``#``) are recorded in ``digits`` but do not end the wait. The digit timeout starts when
the greeting ends, so a long greeting never eats the caller's time to answer.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid

from ivr.ari import AriClient, AriError, AriEvent, AriNotFound, AriUnavailable, CallSession
from ivr.ari.events import CHANNEL_GONE, CHANNEL_RECOVERED
from ivr.logs import kv

from .journal import CallJournal
from .record import (
    RESULT_CALLER_HANGUP, RESULT_DIGIT, RESULT_FAILED, RESULT_INVALID_INPUT, RESULT_NO_INPUT, CallRecord, utcnow,
)

log = logging.getLogger("ivr.calls.greeting")

ACCEPTED_DIGITS = frozenset("0123456789")
_HANGUP_EVENTS = frozenset({"ChannelHangupRequest", "StasisEnd", "ChannelDestroyed", CHANNEL_GONE})


class State(enum.Enum):
    RINGING = "ringing"
    GREETING = "greeting"
    WAITING_DIGIT = "waiting_digit"
    CLOSING = "closing"
    ENDED = "ended"


class GreetingCall:
    FLOW = "greeting"

    def __init__(
        self,
        ari: AriClient,
        journal: CallJournal,
        session: CallSession,
        *,
        greeting_sounds: tuple[str, ...],
        language: str,
        digit_timeout: float,
        thanks_sound: str = "auth-thankyou",
    ):
        self.ari = ari
        self.journal = journal
        self.session = session
        self.greeting_sounds = greeting_sounds
        self.language = language
        self.digit_timeout = digit_timeout
        self.thanks_sound = thanks_sound
        self.state = State.RINGING
        self.record: CallRecord | None = None
        self._playback_id: str | None = None

    @property
    def channel_id(self) -> str:
        return self.session.channel_id

    async def run(self, first_event: AriEvent) -> None:
        channel = first_event.channel
        assert channel is not None
        self.record = CallRecord.from_stasis_start(first_event, self.FLOW)
        recovered = first_event.type == CHANNEL_RECOVERED
        log.info(
            "event=call_started from=%s to=%s name=%s recovered=%s",
            kv(self.record.from_number), kv(self.record.to_number), kv(self.record.caller_name), recovered,
        )
        self.journal.record(self.record)
        try:
            await self._converse(already_up=recovered and channel.state == "Up")
        except (AriUnavailable, AriError) as exc:
            # Asterisk refused or vanished mid-call: record it, never leave the row open.
            if self.record.result is None:
                self.record.result = RESULT_FAILED
            self.record.add_note(f"ari error: {str(exc)[:200]}")
            log.warning("event=call_failed reason=%s", kv(str(exc)[:200]))
            await self._hangup_quietly()
        finally:
            self._finish()

    async def _converse(self, *, already_up: bool) -> None:
        assert self.record is not None
        if not already_up:
            try:
                await self.ari.answer(self.channel_id)
            except AriNotFound:
                self._caller_gone(None)
                return
        self.record.answered_at = utcnow()
        log.info("event=answered")

        self.state = State.GREETING
        self._playback_id = f"greet-{uuid.uuid4().hex[:12]}"
        try:
            await self.ari.play(
                self.channel_id, [f"sound:{s}" for s in self.greeting_sounds],
                lang=self.language, playback_id=self._playback_id,
            )
        except AriNotFound:
            self._caller_gone(None)
            return
        log.info("event=greeting_started sounds=%s lang=%s", kv(",".join(self.greeting_sounds)), self.language)

        digit = await self._wait_for_digit()
        if self.state is State.ENDED:
            return
        self.state = State.CLOSING
        if digit is None:
            self.record.result = RESULT_INVALID_INPUT if self.record.digits else RESULT_NO_INPUT
            log.info("event=no_digit result=%s timeout=%.1fs", self.record.result, self.digit_timeout)
        else:
            self.record.result = RESULT_DIGIT
            log.info("event=digit_accepted digit=%s", digit)
            await self._play_and_wait(self.thanks_sound, limit=5.0)
            if self.state is State.ENDED:
                return
        self.record.hangup_by = "ivr"
        await self._hangup_quietly()

    async def _wait_for_digit(self) -> str | None:
        """Return the accepted digit, or None on timeout; sets ENDED if the caller left."""
        assert self.record is not None
        deadline: float | None = None  # no deadline while the greeting plays
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            event = await self.session.next_event(timeout=timeout)
            if event is None:
                return None
            if event.type in _HANGUP_EVENTS:
                self._caller_gone(event)
                return None
            if event.type == "PlaybackFinished" and event.playback_id == self._playback_id:
                if self.state is State.GREETING:
                    self.state = State.WAITING_DIGIT
                    deadline = time.monotonic() + self.digit_timeout
                    log.info("event=greeting_finished state=%s waiting_for_digit=%.1fs",
                             (event.data.get("playback") or {}).get("state", "?"), self.digit_timeout)
                continue
            if event.type == "ChannelDtmfReceived":
                digit = event.digit
                self.record.digits += digit if len(digit) == 1 else "?"
                if digit in ACCEPTED_DIGITS:
                    if self.state is State.GREETING:
                        await self._stop_greeting()
                    return digit
                log.info("event=dtmf_ignored digit=%s", kv(digit))

    async def _stop_greeting(self) -> None:
        if self._playback_id:
            try:
                await self.ari.stop_playback(self._playback_id)
                log.info("event=greeting_barged_in")
            except AriNotFound:
                pass  # it finished on its own a moment ago

    async def _play_and_wait(self, sound: str, *, limit: float) -> None:
        playback_id = f"ack-{uuid.uuid4().hex[:12]}"
        try:
            await self.ari.play(self.channel_id, f"sound:{sound}", lang=self.language, playback_id=playback_id)
        except AriNotFound:
            self._caller_gone(None)
            return
        deadline = time.monotonic() + limit
        while (remaining := deadline - time.monotonic()) > 0:
            event = await self.session.next_event(timeout=remaining)
            if event is None:
                return
            if event.type in _HANGUP_EVENTS:
                self._caller_gone(event)
                return
            if event.type == "PlaybackFinished" and event.playback_id == playback_id:
                return
            if event.type == "ChannelDtmfReceived" and self.record is not None:
                self.record.digits += event.digit if len(event.digit) == 1 else "?"

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
        if event is not None and event.type == CHANNEL_GONE:
            self.record.add_note("hangup noticed after event stream reconnect")
        self.record.add_note(f"caller hung up during {during}")
        self.state = State.ENDED
        log.info("event=caller_hangup during=%s cause=%s", during, self.record.hangup_cause)

    async def _hangup_quietly(self) -> None:
        try:
            await self.ari.hangup(self.channel_id)
        except AriNotFound:
            pass  # already gone: that is what we wanted
        except (AriError, AriUnavailable) as exc:
            log.warning("event=hangup_failed reason=%s", kv(str(exc)[:200]))
            return
        self.state = State.ENDED

    def _finish(self) -> None:
        assert self.record is not None
        self.state = State.ENDED
        self.record.ended_at = utcnow()
        self.journal.record(self.record)
        log.info(
            "event=call_ended result=%s digits=%s hangup_by=%s",
            self.record.result, kv(self.record.digits or "-"), self.record.hangup_by,
        )

