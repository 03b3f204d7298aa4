"""The "when is it convenient?" dialog: a robot call that understands spoken answers.

    ASK       «…Удобно будет, если мы перезвоним вам завтра, двадцать четвёртого, в десять часов?»
      да / удобно / давайте / 1 ........................ AGREED: «Спасибо! Перезвоним …» -> callback
      нет / неудобно / 2 ................................. ASK_TIME
      a time ("нет, лучше в понедельник утром") .......... CONFIRM: «Хорошо, перезвоним …» -> callback
      повторите .......................................... ASK again
      оператор / менеджер ................................ HANDED: «Ваш менеджер свяжется…» -> handed_over
      unclear / silence .................................. ASK again; the second time -> MENU
    ASK_TIME  «Когда вам удобнее?»
      a time ............................................. CONFIRM -> callback
      1 (the proposed time) .............................. AGREED
      2 / 0 / unclear twice .............................. MENU (2 / 0: HANDED)
    MENU      «Если вам удобно …, нажмите 1. Если нужно другое время, нажмите 2.» (keys only)
      1 -> AGREED; 2 -> HANDED; nothing -> HANDED (a task: "the answer stayed unclear")

Keys work at every step. Speech over a prompt stops it (barge-in). Each utterance's audio and
transcript are stored with the attempt. The confirmation sentence with the client's own time is
synthesised during the call (a short «Хорошо.» plays at once while it renders); every other
phrase was rendered before the dial.

The audio comes from ivr/speech/listen.py (snoop + externalMedia); end of speech from the VAD
(ivr/speech/vad.py); text from the ASR pool (ivr/speech/asr.py); the meaning from
ivr/speech/understand.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import wave
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Awaitable, Callable, Protocol
from zoneinfo import ZoneInfo

from ivr.ari import AriClient, AriError, AriEvent, AriNotFound, AriUnavailable, CallSession
from ivr.ari.events import CHANNEL_GONE
from ivr.notify.outcomes import AttemptResult
from ivr.notify.window import CallWindow
from ivr.speech.listen import SAMPLE_RATE, CallAudio
from ivr.speech.tts import PromptAudio
from ivr.speech.understand import Understanding, understand

log = logging.getLogger("ivr.notify.dialog")

SPEECH_STARTED = "IvrSpeechStarted"
UTTERANCE = "IvrUtterance"
_HANGUP_EVENTS = frozenset({"ChannelHangupRequest", "StasisEnd", "ChannelDestroyed", CHANNEL_GONE})
# What a grammar-restricted recogniser (Vosk) may hear in this dialog; "[unk]" for anything else.
DIALOG_GRAMMAR = [
    "да", "нет", "удобно", "неудобно", "не удобно", "давайте", "хорошо", "конечно", "можно", "не надо",
    "не сейчас", "повторите", "ещё раз", "оператор", "менеджер", "сегодня", "завтра", "послезавтра",
    "в понедельник", "во вторник", "в среду", "в четверг", "в пятницу", "утром", "днём", "после обеда",
    "вечером", "через час", "через два часа", "в десять", "в одиннадцать", "в двенадцать", "в час", "в два",
    "в три", "в четыре", "в пять", "в шесть", "часов", "тридцать", "на следующей неделе", "[unk]",
]
_WEEKDAYS = ("в понедельник", "во вторник", "в среду", "в четверг", "в пятницу", "в субботу", "в воскресенье")


def say_when(when: datetime, now: datetime) -> str:
    """Written Russian for a callback time, ready for normalize_for_speech:
    «завтра, 24.11, в 10:00» -> «завтра, двадцать четвёртого ноября, в десять часов»."""
    days = (when.date() - now.astimezone(when.tzinfo).date()).days
    day = {0: "сегодня", 1: "завтра", 2: "послезавтра"}.get(days)
    if day is None and 0 < days < 7:
        day = _WEEKDAYS[when.weekday()]
    clock = f"в {when:%H:%M}" if when.minute else f"в {when.hour}:00"
    return f"{day + ', ' if day else ''}{when:%d.%m}, {clock}"


class Segmenter(Protocol):
    """End-of-speech detection over a stream of 20 ms slin16 frames (ivr/speech/vad.py)."""

    def feed(self, frame: bytes) -> list[tuple[str, bytes | None]]:
        """("start", None) when speech begins; ("end", pcm of the utterance) when it ends."""
        ...

    def reset(self) -> None: ...


class Recognizer(Protocol):
    async def transcribe(self, pcm: bytes, sample_rate: int): ...   # -> object with .text, .engine


@dataclass(frozen=True)
class DialogTimings:
    no_speech_s: float = 5.0          # after a question ends, how long we wait for him to speak
    total_s: float = 150.0            # the dialog never lasts longer
    unclear_before_menu: int = 2


@dataclass(frozen=True)
class DialogPhrases:
    """Rendered before the dial."""
    question: PromptAudio       # the template's text + «Удобно будет, если мы перезвоним вам <proposed>?»
    ask_time: PromptAudio       # «Когда вам удобнее?»
    menu: PromptAudio           # «Если вам удобно <proposed>, нажмите 1. Если нужно другое время, нажмите 2.»
    agreed: PromptAudio         # «Спасибо! Перезвоним вам <proposed>. До свидания.»
    handed: PromptAudio         # «Хорошо. Ваш менеджер свяжется с вами. До свидания.»
    sorry: PromptAudio          # «Извините, я не расслышал.»
    ok: PromptAudio             # «Хорошо.» (while the confirmation renders)
    ack: PromptAudio            # «Так.» the moment he stops speaking (while the ASR works)
    text: str                   # the question's written text (stored with the attempt)
    proposed: datetime          # the proposed callback time (client's local time)


@dataclass
class Heard:
    kind: str                               # key / speech / silence / timeout
    key: str = ""
    understanding: Understanding | None = None
    end_of_speech: float | None = None      # monotonic time the VAD said he stopped


@dataclass
class DialogTrace:
    latencies_ms: list[float] = field(default_factory=list)   # end of speech -> our next audio
    asr_ms: list[float] = field(default_factory=list)
    utterances: int = 0


class SpeechDialog:
    def __init__(self, ari: AriClient, session: CallSession, audio: CallAudio, segmenter: Segmenter,
                 recognizer: Recognizer, phrases: DialogPhrases, *, language: str, tz: ZoneInfo,
                 window: CallWindow, clock: Callable[[], datetime], speak: Callable[[str], Awaitable[PromptAudio]],
                 record_utterance: Callable[..., Awaitable[None]], audio_dir: Path | None,
                 timings: DialogTimings = DialogTimings(), answered_at: datetime | None = None):
        self.ari = ari
        self.session = session
        self.audio = audio
        self.segmenter = segmenter
        self.recognizer = recognizer
        self.phrases = phrases
        self.language = language
        self.tz = tz
        self.window = window
        self.clock = clock
        self.speak = speak                      # renders a runtime sentence (TTS, cached)
        self.record_utterance = record_utterance
        self.audio_dir = audio_dir
        self.timings = timings
        self.answered_at = answered_at
        self.trace = DialogTrace()
        self.digits = ""
        self.hangup_cause: int | None = None
        self._playback: str | None = None
        self._playing = False
        self._pump: asyncio.Task | None = None
        self._seq = 0
        self._step = "ask"
        self._pending_eos: float | None = None  # end of speech waiting for our next audio
        self._stashed: list[AriEvent] = []      # an utterance heard while a phrase played
        self._acked = False                     # «Так.» played for the last utterance

    # --- the speech pump: frames -> VAD -> synthetic events in the call's mailbox ----------------

    async def _pump_audio(self) -> None:
        while True:
            frame = await self.audio.next_frame(timeout=5.0)
            if frame is None:
                continue
            for kind, pcm in self.segmenter.feed(frame):
                if kind == "start":
                    self.session.deliver(AriEvent.synthetic(SPEECH_STARTED, {"id": self.session.channel_id}))
                elif kind == "end":
                    self.session.deliver(AriEvent.synthetic(
                        UTTERANCE, {"id": self.session.channel_id}, pcm=pcm or b"", eos=time.monotonic()))

    # --- the dialog ----------------------------------------------------------------------------

    async def run(self) -> AttemptResult:
        self._pump = asyncio.create_task(self._pump_audio(), name=f"pump-{self.session.channel_id}")
        try:
            return await asyncio.wait_for(self._dialog(), self.timings.total_s)
        except _Gone:
            return self._result("hangup_during_prompt", "hangup during the dialog")
        except asyncio.TimeoutError:
            await self._hangup()
            return self._result("handed_over", "dialog too long", task=("unclear_answer",
                                "разговор с роботом не закончился за отведённое время"))
        finally:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)

    async def _dialog(self) -> AttemptResult:
        p = self.phrases
        unclear = 0
        prompt = p.question
        step = "ask"
        while True:
            heard = await self._ask(prompt, step)
            u = heard.understanding
            intent = (u.intent if u else None)
            if heard.kind == "key":
                intent = {"1": "affirm", "2": "deny", "0": "operator"}.get(heard.key, "unknown")
                if step == "ask_time" and heard.key == "2":
                    intent = "operator"  # "another time" again: let the manager agree it
            if intent == "reschedule" and u is not None and u.when is not None:
                return await self._confirm(u.when, heard)
            if intent == "affirm":
                if step == "ask_time" and heard.kind == "speech":
                    intent = "unknown"   # «да» to «когда вам удобнее?» says no time
                else:
                    return await self._close(p.agreed, heard, self._result(
                        "callback", "agreed to the proposed time", callback_at=p.proposed))
            if intent == "operator":
                return await self._close(p.handed, heard, self._result(
                    "handed_over", "asked for a person", task=("operator_requested",
                                                              "клиент попросил соединить с менеджером")))
            if intent == "deny" and step == "ask":
                step, prompt, unclear = "ask_time", p.ask_time, 0
                continue
            if intent == "repeat":
                continue
            unclear += 1
            if unclear >= self.timings.unclear_before_menu:
                return await self._menu(heard)
            prompt = p.ask_time if step == "ask_time" else p.question
            self._pending_eos = None
            await self._play_and_wait(p.sorry, heard)

    async def _menu(self, heard: Heard) -> AttemptResult:
        p = self.phrases
        for _ in range(2):
            menu = await self._ask(p.menu, "menu", keys_only=True)
            if menu.kind == "key" and menu.key == "1":
                return await self._close(p.agreed, menu, self._result(
                    "callback", "agreed to the proposed time (menu)", callback_at=p.proposed))
            if menu.kind == "key" and menu.key in ("2", "0"):
                return await self._close(p.handed, menu, self._result(
                    "handed_over", "wants another time (menu)",
                    task=("choose_time", "клиенту неудобно предложенное время: договориться о звонке")))
        return await self._close(p.handed, heard, self._result(
            "handed_over", "answer stayed unclear",
            task=("unclear_answer", "робот не понял ответ клиента о времени звонка (см. записи)")))

    async def _confirm(self, when: datetime, heard: Heard) -> AttemptResult:
        local = when.astimezone(self.tz)
        if not self._acked:
            await self._play(self.phrases.ok, heard)      # our next audio at once
        sentence = f"Хорошо, перезвоним {say_when(local, self.clock())}. До свидания."
        audio = await self.speak(sentence)
        return await self._close(audio, None, self._result("callback", f"asked for {local:%d.%m %H:%M}",
                                                           callback_at=when), wait_current=True)

    # --- one question -----------------------------------------------------------------------------

    async def _ask(self, prompt: PromptAudio, step: str, *, keys_only: bool = False) -> Heard:
        # No drain/reset here: the snoop hears only him (never our prompt), and a client who
        # speaks right after his "нет", before "Когда вам удобнее?" starts, must be heard.
        self._step = step
        self._acked = False
        deadline: float | None = None      # no-speech timeout starts when the prompt ends
        if self._stashed:                  # he already answered (over the last phrase)
            deadline = time.monotonic() + self.timings.no_speech_s
        else:
            await self._play(prompt, None)
        speaking = False
        while True:
            timeout = None if deadline is None or speaking else max(0.0, deadline - time.monotonic())
            event = self._stashed.pop(0) if self._stashed else await self.session.next_event(timeout=timeout)
            if event is None:
                return Heard("silence")
            if event.type in _HANGUP_EVENTS:
                if event.cause is not None:
                    self.hangup_cause = event.cause
                raise _Gone()
            if event.type == "PlaybackFinished" and event.playback_id == self._playback:
                self._playing = False
                deadline = time.monotonic() + self.timings.no_speech_s
                continue
            if event.type == "ChannelDtmfReceived":
                self.digits = (self.digits + event.digit[:1])[-64:]
                await self._stop()
                return Heard("key", key=event.digit[:1], end_of_speech=time.monotonic())
            if keys_only:
                continue
            if event.type == SPEECH_STARTED:
                speaking = True
                await self._stop()            # barge-in
                continue
            if event.type == UTTERANCE:
                speaking = False
                pcm = event.data.get("pcm") or b""
                eos = event.data.get("eos") or time.monotonic()
                if len(pcm) >= SAMPLE_RATE * 2 * 0.25:
                    # he hears at once that he was heard; recognition takes a second or two
                    self._pending_eos = eos
                    await self._play(self.phrases.ack, None)
                    self._acked = True
                heard = await self._recognise(pcm, eos, step)
                if heard.understanding is None or (heard.understanding.intent == "unknown"
                                                   and len(pcm) < SAMPLE_RATE * 2 * 0.25):
                    # a click or a cough: keep listening
                    deadline = time.monotonic() + self.timings.no_speech_s
                    continue
                return heard

    async def _recognise(self, pcm: bytes, eos: float, step: str) -> Heard:
        self._seq += 1
        seq = self._seq
        started = time.monotonic()
        text, engine = "", "?"
        try:
            if self.recognizer is None:
                raise RuntimeError("no recogniser configured")
            transcript = await self.recognizer.transcribe(pcm, SAMPLE_RATE)
            text, engine = transcript.text, getattr(transcript, "engine", "?")
        except Exception as exc:  # overloaded pool, model error: treated as not understood
            log.warning("event=asr_failed reason=%r", str(exc)[:200])
        asr_ms = (time.monotonic() - started) * 1000
        self.trace.asr_ms.append(asr_ms)
        self.trace.utterances += 1
        u = understand(text, now=self.clock(), tz=self.tz, window=self.window)
        log.info("event=utterance seq=%d step=%s seconds=%.2f asr_ms=%.0f text=%r intent=%s when=%s",
                 seq, step, len(pcm) / (2 * SAMPLE_RATE), asr_ms, text[:120], u.intent,
                 u.when.isoformat() if u.when else "-")
        path = self._save_audio(pcm, seq)
        try:
            await self.record_utterance(seq=seq, step=step, at=self.clock(), duration_s=len(pcm) / (2 * SAMPLE_RATE),
                                        audio_path=str(path) if path else None, transcript=text, intent=u.intent,
                                        resolved_at=u.when, asr_ms=int(asr_ms), engine=engine)
        except Exception as exc:  # the dialog goes on without the review record
            log.warning("event=utterance_not_recorded reason=%r", str(exc)[:200])
        if not self._acked:
            self._pending_eos = eos
        return Heard("speech", understanding=u, end_of_speech=None if self._acked else eos)

    def _save_audio(self, pcm: bytes, seq: int) -> Path | None:
        if self.audio_dir is None or not pcm:
            return None
        self.audio_dir.mkdir(parents=True, exist_ok=True)
        path = self.audio_dir / f"{self.session.channel_id}-{seq}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(pcm)
        return path

    # --- audio out ----------------------------------------------------------------------------------

    async def _play(self, audio: PromptAudio, heard: Heard | None) -> None:
        await self._stop()
        self._playback = f"dlg-{uuid.uuid4().hex[:12]}"
        try:
            await self.ari.play(self.session.channel_id, audio.sound, lang=self.language, playback_id=self._playback)
        except AriNotFound:
            raise _Gone() from None
        self._playing = True
        eos = heard.end_of_speech if heard is not None and heard.end_of_speech else self._pending_eos
        if eos is not None:
            self.trace.latencies_ms.append((time.monotonic() - eos) * 1000)
            log.info("event=reply_started after_speech_ms=%.0f", (time.monotonic() - eos) * 1000)
            self._pending_eos = None

    async def _stop(self) -> None:
        if self._playing and self._playback:
            self._playing = False
            try:
                await self.ari.stop_playback(self._playback)
            except (AriNotFound, AriError):
                pass

    async def _play_and_wait(self, audio: PromptAudio, heard: Heard | None, limit: float = 15.0) -> None:
        await self._play(audio, heard)
        await self._wait_playback(limit)

    async def _wait_playback(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while self._playing and (remaining := deadline - time.monotonic()) > 0:
            event = await self.session.next_event(timeout=remaining)
            if event is None:
                return
            if event.type in _HANGUP_EVENTS:
                raise _Gone()
            if event.type == "PlaybackFinished" and event.playback_id == self._playback:
                self._playing = False
            elif event.type == "ChannelDtmfReceived":
                self.digits = (self.digits + event.digit[:1])[-64:]
            elif event.type == SPEECH_STARTED:
                await self._stop()               # he talks over "извините": let him
            elif event.type == UTTERANCE:
                self._stashed.append(event)      # the next question hears it
                return

    async def _close(self, audio: PromptAudio, heard: Heard | None, result: AttemptResult,
                     wait_current: bool = False) -> AttemptResult:
        """Say the last phrase (after «Хорошо.» when ``wait_current``), hang up, return the result.
        He may hang up during it: the result stands."""
        try:
            if wait_current:
                await self._wait_playback(5.0)
            await self._play_and_wait(audio, heard)
        except _Gone:
            return result
        await self._hangup()
        return result

    async def _hangup(self) -> None:
        if self.session.is_ended():
            return
        try:
            await self.ari.hangup(self.session.channel_id)
        except (AriNotFound, AriError, AriUnavailable):
            pass

    def _result(self, outcome: str, cause: str, *, callback_at: datetime | None = None,
                task: tuple[str, str] | None = None) -> AttemptResult:
        return AttemptResult(outcome=outcome, cause=cause[:40], ended_at=self.clock(), hangup_cause=self.hangup_cause,
                             digits=self.digits or None, prompt_text=self.phrases.text, callback_at=callback_at,
                             task=task, answered_at=self.answered_at)


class _Gone(Exception):
    """The client hung up."""


class VadSegmenter:
    """The dialog's Segmenter over silero-vad (ivr/speech/vad.py): speech start / end after
    ``end_silence_ms`` of silence, utterances cut at ``max_utterance_s``; re-armed after each."""

    def __init__(self, *, end_silence_ms: int = 500, max_utterance_s: float = 10.0, threshold: float = 0.5):
        from ivr.speech.vad import EndOfSpeechDetector

        self.detector = EndOfSpeechDetector(SAMPLE_RATE, threshold=threshold, end_silence_ms=end_silence_ms,
                                            no_speech_timeout_s=None, max_utterance_s=max_utterance_s)

    def feed(self, frame: bytes) -> list[tuple[str, bytes | None]]:
        from ivr.speech.vad import SpeechEnded, SpeechStarted

        out: list[tuple[str, bytes | None]] = []
        for event in self.detector.feed(frame):
            if isinstance(event, SpeechStarted):
                out.append(("start", None))
            elif isinstance(event, SpeechEnded):
                out.append(("end", event.utterance.pcm))
                self.detector.reset()
        return out

    def reset(self) -> None:
        self.detector.reset()


class NullSegmenter:
    """No speech detection (ASR/VAD not installed, or the audio path failed): the dialog then
    hears only keys and reaches its key menu after the silences."""

    def feed(self, frame: bytes) -> list[tuple[str, bytes | None]]:
        return []

    def reset(self) -> None:
        pass


class SilentAudio:
    """Stands in for CallAudio when the audio path could not be set up."""

    async def start(self) -> None:
        pass

    async def next_frame(self, timeout: float) -> bytes | None:
        await asyncio.sleep(timeout)
        return None

    def drain(self) -> int:
        return 0

    async def close(self) -> None:
        pass


@dataclass
class SpeechKit:
    """What a dialer needs to listen: the ASR (a shared worker pool), a VAD per call, where
    utterance audio is kept for review, the address Asterisk sends the caller's RTP to."""
    recognizer: Recognizer | None
    segmenter_factory: Callable[[], Segmenter]
    audio_dir: Path | None
    bind_host: str = "127.0.0.1"
    timings: DialogTimings = field(default_factory=DialogTimings)
    retention_days: int = 30        # utterance audio and rows older than this are deleted

    def segmenter(self) -> Segmenter:
        return self.segmenter_factory()

    @classmethod
    def keys_only(cls) -> "SpeechKit":
        return cls(recognizer=None, segmenter_factory=NullSegmenter, audio_dir=None)


def proposed_slot(now: datetime, tz: ZoneInfo, window: CallWindow, hour: int = 10) -> datetime:
    """The callback time the robot proposes: the next working day at ``hour`` local, in the window."""
    from datetime import time as dtime
    return window.next_working_day_at(now, tz, dtime(hour)).astimezone(tz)


__all__ = ["DialogPhrases", "DialogTimings", "NullSegmenter", "VadSegmenter", "SilentAudio", "SpeechDialog", "SpeechKit",
           "proposed_slot", "say_when"]
