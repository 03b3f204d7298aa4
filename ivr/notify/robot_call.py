"""RobotCall: one outbound confirmation call, from the originate to the client's answer.

    DIALING --StasisStart (he answered)--> PROMPT --prompt ends--> WAITING
    DIALING --ChannelDestroyed--> ENDED (busy / no answer / congestion / failure, by Q.850 cause)
    PROMPT / WAITING --1--> THANKS (confirmed)   --2--> THANKS (not received)
    PROMPT / WAITING --other key, or no key within digit_timeout--> PROMPT again (once),
                                                                    then GOODBYE (no action)
    any state after the answer --he hangs up before choosing--> ENDED (hangup during prompt)

The prompt was rendered before the dial (ivr/notify/dialer.py), so the first thing done on
StasisStart is the play request: nothing (no database, no synthesis) stands between his
"hello" and our first word. A key pressed while the prompt plays stops it (barge-in) and counts.
The conversation never lasts longer than ``total_timeout`` after the answer. The flow returns an
AttemptResult; recording it is the dialer's job.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable
from datetime import datetime, timezone

from ivr.ari import AriClient, AriError, AriEvent, AriNotFound, AriUnavailable, CallSession
from ivr.ari.events import CHANNEL_GONE, CHANNEL_RECOVERED
from ivr.notify.outcomes import AttemptResult, outcome_of_unanswered
from ivr.speech.tts import PromptAudio

log = logging.getLogger("ivr.notify.call")

CONFIRM_DIGIT = "1"
NOT_RECEIVED_DIGIT = "2"
_HANGUP_EVENTS = frozenset({"ChannelHangupRequest", "StasisEnd", "ChannelDestroyed", CHANNEL_GONE})


class State(enum.Enum):
    DIALING = "dialing"
    PROMPT = "prompt"
    WAITING = "waiting"
    CLOSING = "closing"
    ENDED = "ended"


@dataclass(frozen=True)
class RobotTimings:
    ring_timeout: int = 30          # the originate's timeout: his phone rings this long
    digit_timeout: float = 6.0      # after the prompt ends, how long we wait for a key
    total_timeout: float = 120.0    # after the answer, the call never lasts longer
    repeats: int = 1                # the prompt is repeated this many times before "no action"
    closing_limit: float = 15.0     # the thank-you / goodbye phrase is cut after this


@dataclass(frozen=True)
class RobotPrompts:
    """Rendered before the dial (cache paths as Asterisk media names)."""
    main: PromptAudio
    confirmed: PromptAudio
    not_received: PromptAudio
    no_action: PromptAudio
    text: str                       # the main prompt's text, stored with the attempt


@dataclass
class CallTrace:
    """Times of the call (monotonic seconds) for the log and the benchmark."""
    answered: float | None = None   # StasisStart received
    play_sent: float | None = None  # the play request returned
    playing: float | None = None    # PlaybackStarted received
    events: list[str] = field(default_factory=list)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class RobotCall:
    def __init__(self, ari: AriClient, session: CallSession, prompts: RobotPrompts, timings: RobotTimings,
                 *, language: str, clock: Callable[[], datetime] = _utcnow):
        self.ari = ari
        self.session = session
        self.prompts = prompts
        self.timings = timings
        self.language = language
        self.clock = clock          # wall clock of the records (injected: tests, the demo)
        self.state = State.DIALING
        self.digits = ""
        self.answered_at: datetime | None = None
        self.trace = CallTrace()
        self._playback_id: str | None = None
        self._hangup_cause: int | None = None

    @property
    def channel_id(self) -> str:
        return self.session.channel_id

    # --- before the answer -----------------------------------------------------------------

    async def wait_for_answer(self) -> AttemptResult | None:
        """After the originate: None when he answered (then ``converse``), else the result."""
        deadline = time.monotonic() + self.timings.ring_timeout + 30  # Asterisk ends it first
        hangup_request_cause = None
        while (remaining := deadline - time.monotonic()) > 0:
            event = await self.session.next_event(timeout=remaining)
            if event is None:
                break
            self.trace.events.append(event.type)
            if event.type == "StasisStart":
                self.trace.answered = time.monotonic()
                self.answered_at = self.clock()
                return None
            if event.type == "ChannelHangupRequest" and event.cause is not None:
                hangup_request_cause = event.cause
            if event.type in ("ChannelDestroyed", CHANNEL_GONE):
                cause = event.cause if event.cause is not None else hangup_request_cause
                return self._unanswered(cause, event.cause_txt)
        log.warning("event=no_answer_event channel=%s action=hangup", self.channel_id)
        await self._hangup_quietly()
        return self._unanswered(None, "no event from Asterisk before the ring timeout")

    def _unanswered(self, cause: int | None, text: str = "") -> AttemptResult:
        self.state = State.ENDED
        outcome = outcome_of_unanswered(cause)
        label = f"{outcome} ({cause})" if cause is not None else outcome
        log.info("event=call_unanswered outcome=%s cause=%s text=%r", outcome, cause, text[:60])
        return AttemptResult(outcome=outcome, cause=label, ended_at=self.clock(), hangup_cause=cause)

    # --- after the answer ------------------------------------------------------------------

    async def converse(self, *, recovered: bool = False) -> AttemptResult:
        """He is on the line: prompt, keys, thank-you, hang up. Returns how it ended."""
        if self.answered_at is None:  # adopted after a restart: answered earlier, time unknown
            self.answered_at = self.clock()
            self.trace.answered = time.monotonic()
        try:
            outcome = await self._dialog()
        except (AriUnavailable, AriError) as exc:
            log.warning("event=robot_call_ari_error reason=%r", str(exc)[:200])
            outcome = "no_action" if self.digits else "hangup_during_prompt"
            await self._hangup_quietly()
            return self._result(outcome, f"ari error: {str(exc)[:25]}")
        return self._result(outcome, outcome if not recovered else f"{outcome} (adopted)")

    def _result(self, outcome: str, cause: str) -> AttemptResult:
        self.state = State.ENDED
        return AttemptResult(outcome=outcome, cause=cause, ended_at=self.clock(), hangup_cause=self._hangup_cause,
                             digits=self.digits or None, answered_at=self.answered_at,
                             prompt_text=self.prompts.text)

    async def _dialog(self) -> str:
        total_deadline = time.monotonic() + self.timings.total_timeout
        plays_left = 1 + self.timings.repeats
        decision: str | None = None
        while decision is None:
            if plays_left == 0:
                decision = "no_action"
                break
            plays_left -= 1
            if not await self._play_main():
                return "hangup_during_prompt"
            key = await self._wait_for_key(total_deadline)
            if key == "hangup":
                return "hangup_during_prompt"
            if key == CONFIRM_DIGIT:
                decision = "confirmed"
            elif key == NOT_RECEIVED_DIGIT:
                decision = "not_received"
            elif key == "total_timeout":
                decision = "no_action"
            # other key or no key: the loop plays the prompt again while plays are left
            log.info("event=robot_key key=%s decision=%s plays_left=%d", key, decision, plays_left)
        self.state = State.CLOSING
        closing = {"confirmed": self.prompts.confirmed, "not_received": self.prompts.not_received,
                   "no_action": self.prompts.no_action}[decision]
        await self._play_closing(closing)
        await self._hangup_quietly()
        return decision

    async def _play_main(self) -> bool:
        self.state = State.PROMPT
        self._playback_id = f"robot-{uuid.uuid4().hex[:12]}"
        try:
            await self.ari.play(self.channel_id, self.prompts.main.sound, lang=self.language,
                                playback_id=self._playback_id)
        except AriNotFound:
            return False
        if self.trace.play_sent is None:
            self.trace.play_sent = time.monotonic()
            log.info("event=prompt_started answer_to_play_ms=%.1f sound=%s",
                     (self.trace.play_sent - (self.trace.answered or self.trace.play_sent)) * 1000,
                     self.prompts.main.sound)
        return True

    async def _wait_for_key(self, total_deadline: float) -> str:
        """A digit, or "no_key" (digit timeout), "total_timeout", "hangup"."""
        digit_deadline: float | None = None   # no digit timeout while the prompt plays
        while True:
            now = time.monotonic()
            deadline = total_deadline if digit_deadline is None else min(digit_deadline, total_deadline)
            event = await self.session.next_event(timeout=max(0.0, deadline - now))
            if event is None:
                if time.monotonic() >= total_deadline:
                    await self._stop_prompt()
                    return "total_timeout"
                return "no_key"
            self.trace.events.append(event.type)
            if event.type in _HANGUP_EVENTS:
                if event.cause is not None:
                    self._hangup_cause = event.cause
                return "hangup"
            if event.type == "PlaybackStarted" and event.playback_id == self._playback_id:
                if self.trace.playing is None:
                    self.trace.playing = time.monotonic()
                continue
            if event.type == "PlaybackFinished" and event.playback_id == self._playback_id:
                state = (event.data.get("playback") or {}).get("state", "?")
                if state == "failed":  # the file (or URL) could not be played: say so loudly
                    log.error("event=prompt_failed sound=%s", self.prompts.main.sound)
                if self.state is State.PROMPT:
                    self.state = State.WAITING
                    digit_deadline = time.monotonic() + self.timings.digit_timeout
                continue
            if event.type == "ChannelDtmfReceived":
                digit = event.digit
                self.digits = (self.digits + (digit if len(digit) == 1 else "?"))[-64:]
                if self.state is State.PROMPT:
                    await self._stop_prompt()
                return digit if digit in (CONFIRM_DIGIT, NOT_RECEIVED_DIGIT) else f"other:{digit[:1]}"

    async def _stop_prompt(self) -> None:
        if self._playback_id and self.state is State.PROMPT:
            self.state = State.WAITING
            try:
                await self.ari.stop_playback(self._playback_id)
            except (AriNotFound, AriError):
                pass  # it finished on its own a moment ago

    async def _play_closing(self, audio: PromptAudio) -> None:
        playback_id = f"robot-bye-{uuid.uuid4().hex[:10]}"
        try:
            await self.ari.play(self.channel_id, audio.sound, lang=self.language, playback_id=playback_id)
        except AriNotFound:
            return
        deadline = time.monotonic() + self.timings.closing_limit
        while (remaining := deadline - time.monotonic()) > 0:
            event = await self.session.next_event(timeout=remaining)
            if event is None or event.type in _HANGUP_EVENTS:
                return
            if event.type == "PlaybackFinished" and event.playback_id == playback_id:
                return
            if event.type == "ChannelDtmfReceived":
                self.digits = (self.digits + event.digit[:1])[-64:]

    async def _hangup_quietly(self) -> None:
        if self.session.is_ended():
            return
        try:
            await self.ari.hangup(self.channel_id)
        except (AriNotFound, AriError, AriUnavailable):
            pass


def is_recovered(event: AriEvent) -> bool:
    return event.type == CHANNEL_RECOVERED
