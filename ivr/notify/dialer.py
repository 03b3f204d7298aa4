"""The dialer: claims due notification jobs and works them, within limits, safely.

Each tick (every ``poll_s``):

1. **claim** up to the free channel count of due jobs (``claim_due_jobs``: ``FOR UPDATE SKIP
   LOCKED``, attempt row in the same statement), and in the same transaction check each one:
   * the number is on the do-not-call list -> the job fails (``do_not_call``), no attempt kept;
   * the client's local call window is closed -> the job goes back, due when it opens;
   * the client was contacted less than ``client_interval`` ago (any job), or another job of
     his is in this batch -> the job goes back, due when the interval has passed;
   * the call attempts get their channel id ``robot-<attempt id>`` (ours, before the originate).
   A job put back loses the attempt row it got in this transaction: nothing was tried.
   Then **commit** - the attempt exists before any originate.
2. **originate** the calls at no more than ``cps`` per second over ARI through the configured
   PJSIP trunk with the company's caller ID; the prompt is rendered (or found in the cache)
   *before* the originate. SMS jobs go to the SMS channel.
3. each call runs as a RobotCall in its own task; its result is recorded by ``finish_attempt``
   (retried while the database is down, so a result is never dropped while we live).

Crash safety: a dialer killed at any point leaves at most attempts in ``dialing``. On start it
reconciles its own (``claimed_by`` = its worker name) against Asterisk's live channels: a call
still up is adopted by the ARI dispatcher (same app name) and finished; the rest are failed
with ``dialer_crashed`` and their jobs rescheduled (attempt n+1, never n again). Attempts of a
worker that never came back are swept the same way once they are older than any call can be.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ivr.ari import AriClient, AriError, AriEvent, AriUnavailable, CallDispatcher, CallSession
from ivr.logs import bind_call_id
from ivr.notify.claim import ClaimedJob, claim_due_jobs, release_stale
from ivr.notify.jobs import transition
from ivr.notify.outcomes import AttemptResult, finish_attempt
from ivr.notify.retry import PolicySet
from ivr.notify.robot_call import RobotCall, RobotPrompts, RobotTimings, is_recovered
from ivr.notify.speech_dialog import (
    DialogPhrases, SilentAudio, SpeechDialog, SpeechKit, proposed_slot, say_when,
)
from ivr.notify.window import client_timezone
from ivr.speech.listen import CallAudio
from ivr.speech.normalize import normalize_for_speech
from ivr.speech.tts import Synthesizer, TtsError

log = logging.getLogger("ivr.notify.dialer")

CHANNEL_PREFIX = "robot-"
CLOSING_TEXTS = {
    "confirmed": "Спасибо! До свидания.",
    "not_received": "Спасибо. Ваш менеджер свяжется с вами. До свидания.",
    "no_action": "Мы перезвоним вам позже. До свидания.",
}
PUT_BACK = transition("dialing", "release")
FAILED = transition("dialing", "fail")


@dataclass(frozen=True)
class DialerLimits:
    max_channels: int = 10
    cps: float = 5.0
    client_interval_s: float = 600.0
    poll_s: float = 0.5
    sms_batch: int = 20


def channel_id_of(attempt_id: int) -> str:
    return f"{CHANNEL_PREFIX}{attempt_id}"


def attempt_id_of(channel_id: str) -> int | None:
    if channel_id.startswith(CHANNEL_PREFIX) and channel_id[len(CHANNEL_PREFIX):].isdigit():
        return int(channel_id[len(CHANNEL_PREFIX):])
    return None


_CHECK_FACTS = text("""
SELECT c.id AS client_id, c.timezone,
       (SELECT max(a.started_at) FROM notification_attempts a JOIN notification_jobs j ON j.id = a.job_id
        WHERE j.client_id = c.id AND NOT (a.id = ANY(CAST(:attempt_ids AS bigint[])))) AS last_contact
FROM clients c WHERE c.id = ANY(CAST(:client_ids AS int[]))
""")
_DNC = text("SELECT e164 FROM do_not_call WHERE e164 = ANY(CAST(:phones AS text[]))")
_PUT_BACK = text("""
WITH gone AS (DELETE FROM notification_attempts WHERE id = :attempt_id RETURNING job_id)
UPDATE notification_jobs SET status = :status, attempts_made = attempts_made - 1, next_attempt_at = :at,
       claimed_by = NULL, claimed_at = NULL, updated_at = now()
WHERE id = (SELECT job_id FROM gone)
""")
_FAIL_DNC = text("""
WITH gone AS (DELETE FROM notification_attempts WHERE id = :attempt_id RETURNING job_id),
     job AS (
       UPDATE notification_jobs SET status = :status, result = 'failed', attempts_made = attempts_made - 1,
              next_attempt_at = NULL, claimed_by = NULL, claimed_at = NULL, updated_at = now()
       WHERE id = (SELECT job_id FROM gone)
       RETURNING id, external_id, e164, template)
INSERT INTO webhook_deliveries (job_id, event, payload)
SELECT id, 'job.final', jsonb_build_object('event', 'job.final', 'job_id', id, 'external_id', external_id,
       'status', 'failed', 'result', 'failed', 'reason', 'do_not_call', 'phone', e164, 'template', template)
FROM job ON CONFLICT (job_id, event) DO NOTHING
""")
_SET_CHANNEL_IDS = text("""
UPDATE notification_attempts SET channel_id = 'robot-' || id WHERE id = ANY(CAST(:ids AS bigint[]))
""")
_EXPIRE = text("""
WITH expired AS (
  UPDATE notification_jobs SET status = 'expired', result = 'expired', next_attempt_at = NULL, updated_at = :now
  WHERE status IN ('pending', 'scheduled', 'no_action') AND deadline_at IS NOT NULL AND deadline_at <= :now
  RETURNING id, external_id, e164, template, attempts_made)
INSERT INTO webhook_deliveries (job_id, event, payload, next_try_at)
SELECT id, 'job.final', jsonb_build_object('event', 'job.final', 'job_id', id, 'external_id', external_id,
       'status', 'expired', 'result', 'expired', 'phone', e164, 'template', template,
       'attempts_made', attempts_made, 'at', CAST(:now_text AS text)), :now
FROM expired ON CONFLICT (job_id, event) DO NOTHING
RETURNING job_id
""")
_ATTEMPT_FOR_ADOPTION = text("""
SELECT a.id AS attempt_id, a.state, j.status, j.attempts_made, a.attempt_no, j.prompt_text, j.claimed_by,
       j.template, j.e164, c.timezone AS client_tz
FROM notification_attempts a JOIN notification_jobs j ON j.id = a.job_id JOIN clients c ON c.id = j.client_id
WHERE a.id = :id
""")
_UTTERANCE = text("""
INSERT INTO utterances (attempt_id, seq, step, at, duration_s, audio_path, transcript, intent, resolved_at,
                        asr_ms, engine)
VALUES (:attempt_id, :seq, :step, :at, :duration_s, :audio_path, :transcript, :intent, :resolved_at, :asr_ms,
        :engine)
ON CONFLICT (attempt_id, seq) DO NOTHING
""")
_OLD_UTTERANCES = text("""
DELETE FROM utterances WHERE at < :cutoff RETURNING audio_path
""")
_UPCOMING_PROMPTS = text("""
SELECT DISTINCT j.prompt_text, j.template, j.e164, c.timezone
FROM notification_jobs j JOIN clients c ON c.id = j.client_id
WHERE j.status IN ('pending', 'scheduled') AND j.next_attempt_at <= :until AND j.prompt_text IS NOT NULL
LIMIT :limit
""")


def _log_crash(task: asyncio.Task) -> None:
    """A call task that died of a bug: logged with its traceback (the attempt stays 'dialing'
    and is reconciled by the sweep), never a silent "exception was never retrieved"."""
    if not task.cancelled() and task.exception() is not None:
        log.error("event=attempt_task_crashed task=%s", task.get_name(), exc_info=task.exception())


class Dialer:
    def __init__(self, *, engine: AsyncEngine, ari: AriClient, dispatcher: CallDispatcher, app: str,
                 synthesizer: Synthesizer, policies: PolicySet, worker: str, trunk: str, caller_id: str,
                 language: str, limits: DialerLimits = DialerLimits(), timings: RobotTimings = RobotTimings(),
                 sms=None, clock: Callable[[], datetime] | None = None, speech: "SpeechKit | None" = None,
                 synthesizers: dict[str, Synthesizer] | None = None):
        self.engine = engine
        self.ari = ari
        self.dispatcher = dispatcher
        self.app = app
        self.synthesizer = synthesizer
        # engine name -> Synthesizer for templates that ask for another voice (policy tts_engine)
        self.synthesizers: dict[str, Synthesizer] = dict(synthesizers or {})
        self.policies = policies
        self.worker = worker
        self.trunk = trunk
        self.caller_id = caller_id
        self.language = language
        self.limits = limits
        self.timings = timings
        self.sms = sms                      # ivr.notify.sms_channel.SmsChannel or None
        self.speech = speech                # ASR + VAD for the spoken dialog (None: keys only)
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self._calls: set[asyncio.Task] = set()
        self._sms_tasks: set[asyncio.Task] = set()
        self._next_originate = 0.0
        self._closing: dict[str, object] = {}
        self._tz: dict[int, ZoneInfo] = {}      # attempt id -> the client's timezone (from the check)
        self._stop = asyncio.Event()
        self._prerender: asyncio.Task | None = None
        self.placed = 0
        self.finished = 0

    # --- public ------------------------------------------------------------------------------

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    async def prepare(self) -> None:
        """Render the fixed phrases; before the ARI stream starts (an adopted call needs them)."""
        for key, phrase in CLOSING_TEXTS.items():
            self._closing[key] = await self._speak(phrase)

    async def start(self) -> None:
        """Reconcile what a previous run of this worker left."""
        if not self._closing:
            await self.prepare()
        await self.reconcile(own_only=True)

    async def run(self) -> None:
        await self.start()
        last_sweep = 0.0
        last_prerender = 0.0
        log.info("event=dialer_started worker=%s app=%s trunk=%s max_channels=%d cps=%.1f", self.worker,
                 self.app, self.trunk, self.limits.max_channels, self.limits.cps)
        while not self._stop.is_set():
            try:
                await self.tick()
                mono = time.monotonic()
                if mono - last_sweep > 60:
                    last_sweep = mono
                    await self.sweep()
                if mono - last_prerender > 10 and (self._prerender is None or self._prerender.done()):
                    last_prerender = mono
                    # in the background: rendering many new prompts must never hold up claiming
                    self._prerender = asyncio.create_task(self._prerender_quietly(), name="prerender")
            except (OSError, asyncio.TimeoutError) as exc:
                log.warning("event=dialer_tick_failed reason=%r", str(exc)[:200])
            except Exception as exc:  # database errors: keep going, calls in flight continue
                if type(exc).__module__.startswith(("sqlalchemy", "psycopg")):
                    log.warning("event=dialer_tick_failed reason=%r", str(exc).splitlines()[0][:200])
                else:
                    raise
            try:
                await asyncio.wait_for(self._stop.wait(), self.limits.poll_s)
            except asyncio.TimeoutError:
                pass

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; let calls in flight finish (up to ``timeout``)."""
        self._stop.set()
        if self._prerender is not None:
            self._prerender.cancel()
        tasks = list(self._calls | self._sms_tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    # --- one tick ------------------------------------------------------------------------------

    async def tick(self) -> int:
        """Claim and start what is due; returns the number of jobs started."""
        free = self.limits.max_channels - len(self._calls)
        if free <= 0:
            return 0
        now = self.clock()
        async with self.engine.begin() as conn:
            claimed = await claim_due_jobs(conn, worker=self.worker, now=now, limit=free)
            if not claimed:
                return 0
            workable = await self._check(conn, claimed, now)
        started = 0
        for job in workable:
            if job.channel == "sms":
                task = asyncio.create_task(self._sms_attempt(job), name=f"sms-{job.attempt_id}")
                self._sms_tasks.add(task)
                task.add_done_callback(self._sms_tasks.discard)
                task.add_done_callback(_log_crash)
            else:
                await self._pace()
                task = asyncio.create_task(self._call_attempt(job), name=f"call-{job.attempt_id}")
                self._calls.add(task)
                task.add_done_callback(self._calls.discard)
                task.add_done_callback(_log_crash)
            started += 1
        return started

    async def _check(self, conn: AsyncConnection, claimed: list[ClaimedJob], now: datetime) -> list[ClaimedJob]:
        facts = {r.client_id: r for r in (await conn.execute(_CHECK_FACTS, {
            "client_ids": sorted({j.client_id for j in claimed}),
            "attempt_ids": [j.attempt_id for j in claimed]})).all()}
        dnc = {r.e164 for r in (await conn.execute(_DNC, {"phones": sorted({j.e164 for j in claimed})})).all()}
        workable: list[ClaimedJob] = []
        seen_clients: set[int] = set()
        interval = timedelta(seconds=self.limits.client_interval_s)
        for job in claimed:
            fact = facts.get(job.client_id)
            tz = client_timezone(fact.timezone if fact else None, job.e164)
            self._tz[job.attempt_id] = tz
            window = self.policies.for_template(job.template).window
            if job.e164 in dnc:
                await conn.execute(_FAIL_DNC, {"attempt_id": job.attempt_id, "status": FAILED})
                log.info("event=job_refused job_id=%s reason=do_not_call", job.job_id)
                continue
            if job.channel == "sms" and self.sms is None:
                await self._put_back(conn, job, now + timedelta(minutes=10), "no SMS channel configured")
                continue
            if not window.is_open(now, tz):
                await self._put_back(conn, job, window.next_open(now, tz), f"call window closed ({tz.key})")
                continue
            last = fact.last_contact if fact else None
            if job.client_id in seen_clients or (last is not None and now - last < interval):
                at = max(now, (last or now) + interval)
                await self._put_back(conn, job, window.clamp(at, tz), "client contacted recently")
                continue
            seen_clients.add(job.client_id)
            workable.append(job)
        calls = [j.attempt_id for j in workable if j.channel == "call"]
        if calls:
            await conn.execute(_SET_CHANNEL_IDS, {"ids": calls})
        return workable

    async def _put_back(self, conn: AsyncConnection, job: ClaimedJob, at: datetime, reason: str) -> None:
        await conn.execute(_PUT_BACK, {"attempt_id": job.attempt_id, "status": PUT_BACK, "at": at})
        log.info("event=job_deferred job_id=%s until=%s reason=%r", job.job_id, at.isoformat(), reason)

    async def _pace(self) -> None:
        """At most ``cps`` originates per second (this dialer)."""
        now = time.monotonic()
        wait = self._next_originate - now
        if wait > 0:
            await asyncio.sleep(wait)
        self._next_originate = max(now, self._next_originate) + 1.0 / self.limits.cps

    # --- calls ---------------------------------------------------------------------------------

    async def _speak(self, written: str, template: str | None = None):
        """The written prompt, normalised for speech (dates, numbers, «№»), rendered/cached by the
        template's TTS engine (policy ``tts_engine``; Festival when that engine is not set up)."""
        synthesizer = self.synthesizer
        if template is not None:
            synthesizer = self.synthesizers.get(self.policies.for_template(template).tts_engine, synthesizer)
        return await synthesizer.prompt(normalize_for_speech(written))

    async def _prompts(self, text_: str, template: str | None = None) -> RobotPrompts:
        main = await self._speak(text_, template)
        return RobotPrompts(main=main, text=text_, **self._closing)  # type: ignore[arg-type]

    async def _call_attempt(self, job: ClaimedJob) -> None:
        channel_id = channel_id_of(job.attempt_id)
        bind_call_id(channel_id)  # every log line of this call carries its channel id
        result: AttemptResult | None = None
        session: CallSession | None = None
        try:
            try:
                prompts = await self._prompts(job.prompt_text or "", job.template)
                dialog = None   # the spoken dialog's phrases, rendered before the dial too
                if self.policies.for_template(job.template).dialog == "callback":
                    dialog = await self._dialog_phrases(job.prompt_text or "", self._tz.get(job.attempt_id),
                                                        job.template)
            except (TtsError, ValueError) as exc:
                log.error("event=prompt_render_failed job_id=%s reason=%r", job.job_id, str(exc)[:200])
                result = AttemptResult("failure", "tts_failed", self.clock())
                return
            session = self.dispatcher.open_session(channel_id)
            call = RobotCall(self.ari, session, prompts, self.timings, language=self.language, clock=self.clock)
            try:
                await self.ari.originate(
                    f"PJSIP/{job.e164.lstrip('+')}@{self.trunk}", app=self.app,
                    app_args=f"robot,{job.attempt_id}", channel_id=channel_id,
                    caller_id=self.caller_id, timeout=self.timings.ring_timeout,
                    variables={"IVR_JOB": str(job.job_id), "IVR_ATTEMPT": str(job.attempt_id)})
            except AriUnavailable as exc:
                result = AttemptResult("congestion", "asterisk_unavailable", self.clock())
                log.warning("event=originate_failed job_id=%s reason=%r", job.job_id, str(exc)[:200])
                return
            except AriError as exc:
                result = AttemptResult("failure", f"originate_refused {getattr(exc, 'status', '')}".strip(),
                                       self.clock())
                log.warning("event=originate_refused job_id=%s reason=%r", job.job_id, str(exc)[:200])
                return
            self.placed += 1
            log.info("event=call_placed job_id=%s attempt=%s/%s channel=%s", job.job_id, job.attempt_no,
                     job.max_attempts, channel_id)
            result = await call.wait_for_answer()
            if result is None:
                result = await (self._speech_dialog(session, job.attempt_id, job.template, dialog, job.e164,
                                                    answered_at=call.answered_at)
                                if dialog is not None else call.converse())
        finally:
            self._tz.pop(job.attempt_id, None)
            if session is not None:
                self.dispatcher.close_session(session)
            if result is not None:
                await self.record(job.attempt_id, result)

    async def _dialog_phrases(self, lead: str, tz: ZoneInfo | None, template: str) -> DialogPhrases:
        """Every phrase of the spoken dialog but the confirmation of his own time, rendered now
        (before the dial), with the callback time the robot proposes."""
        now = self.clock()
        tz = tz or client_timezone(None, "")
        window = self.policies.for_template(template).window
        proposed = proposed_slot(now, tz, window)
        when = say_when(proposed, now)
        question = f"{lead.strip()} Удобно будет, если мы перезвоним вам {when}?".strip()
        texts = {
            "question": question,
            "ask_time": "Когда вам удобнее?",
            "menu": f"Если вам удобно, чтобы мы перезвонили {when}, нажмите 1. Если нужно другое время, нажмите 2.",
            "agreed": f"Спасибо! Перезвоним вам {when}. До свидания.",
            "handed": "Хорошо. Ваш менеджер свяжется с вами. До свидания.",
            "sorry": "Извините, я вас не расслышала.",
            "ok": "Хорошо.",
            "ack": "Так.",
        }
        audio = {key: await self._speak(value, template) for key, value in texts.items()}
        return DialogPhrases(text=question, proposed=proposed, **audio)  # type: ignore[arg-type]

    async def _speech_dialog(self, session: CallSession, attempt_id: int, template: str, phrases: DialogPhrases,
                             e164: str, tz: ZoneInfo | None = None,
                             answered_at: datetime | None = None) -> AttemptResult:
        tz = tz or self._tz.get(attempt_id) or client_timezone(None, e164)
        window = self.policies.for_template(template).window

        async def record_utterance(**fields) -> None:
            async with self.engine.begin() as conn:
                await conn.execute(_UTTERANCE, {"attempt_id": attempt_id, **fields})

        kit = self.speech
        if kit is None:
            log.warning("event=speech_unavailable action=keys_only_menu")
            kit = SpeechKit.keys_only()
        audio = CallAudio(self.ari, session, self.app, bind_host=kit.bind_host)
        try:
            await audio.start()
        except (AriError, AriUnavailable) as exc:
            log.warning("event=listen_failed reason=%r action=keys_only", str(exc)[:200])
            audio = SilentAudio()
            kit = SpeechKit.keys_only()
        dialog = SpeechDialog(self.ari, session, audio, kit.segmenter(), kit.recognizer, phrases,
                              language=self.language, tz=tz, window=window, clock=self.clock,
                              speak=lambda text_: self._speak(text_, template),
                              record_utterance=record_utterance, audio_dir=kit.audio_dir, timings=kit.timings,
                              answered_at=answered_at or self.clock())
        try:
            return await dialog.run()
        finally:
            await audio.close()
            if dialog.trace.latencies_ms:
                log.info("event=dialog_done utterances=%d reply_ms=%s asr_ms=%s", dialog.trace.utterances,
                         ",".join(f"{v:.0f}" for v in dialog.trace.latencies_ms),
                         ",".join(f"{v:.0f}" for v in dialog.trace.asr_ms))

    async def adopt(self, session: CallSession, first_event: AriEvent) -> None:
        """Flow for a channel of ours the dispatcher found without a task: answered after this
        dialer restarted (StasisStart) or left up by the previous run (recovered)."""
        args = first_event.args
        attempt_id = int(args[1]) if len(args) > 1 and args[0] == "robot" and args[1].isdigit() else None
        row = None
        if attempt_id is not None:
            async with self.engine.connect() as conn:
                row = (await conn.execute(_ATTEMPT_FOR_ADOPTION, {"id": attempt_id})).first()
        if row is None or row.state != "dialing" or row.status != "dialing" or row.attempts_made != row.attempt_no:
            log.warning("event=orphan_channel_hung_up channel=%s attempt=%s", session.channel_id, attempt_id)
            try:
                await self.ari.hangup(session.channel_id)
            except (AriError, AriUnavailable):
                pass
            return
        log.info("event=call_adopted attempt=%s recovered=%s", attempt_id, is_recovered(first_event))
        if self.policies.for_template(row.template).dialog == "callback":
            tz = client_timezone(row.client_tz, row.e164)
            dialog = await self._dialog_phrases(row.prompt_text or "", tz, row.template)
            result = await self._speech_dialog(session, attempt_id, row.template, dialog, row.e164, tz=tz)
        else:
            prompts = await self._prompts(row.prompt_text or "", row.template)
            call = RobotCall(self.ari, session, prompts, self.timings, language=self.language, clock=self.clock)
            result = await call.converse(recovered=True)
        await self.record(attempt_id, result)

    async def record(self, attempt_id: int, result: AttemptResult) -> None:
        """finish_attempt, retried with backoff while the database is unreachable."""
        delay = 0.5
        while True:
            try:
                async with self.engine.begin() as conn:
                    done = await finish_attempt(conn, attempt_id, result, policies=self.policies, now=self.clock())
                self.finished += 1
                log.info("event=attempt_recorded attempt=%s outcome=%s job_status=%s", attempt_id,
                         result.outcome, done.status)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not type(exc).__module__.startswith(("sqlalchemy", "psycopg")) and not isinstance(exc, OSError):
                    raise
                log.warning("event=record_retry attempt=%s in=%.1fs reason=%r", attempt_id, delay,
                            str(exc).splitlines()[0][:160])
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _sms_attempt(self, job: ClaimedJob) -> None:
        assert self.sms is not None
        try:
            await self.sms.deliver(job)
        except Exception:
            log.exception("event=sms_attempt_crashed job_id=%s", job.job_id)

    # --- housekeeping ----------------------------------------------------------------------------

    async def reconcile(self, *, own_only: bool) -> int:
        """Fail attempts left ``dialing`` whose channel Asterisk no longer has."""
        try:
            live = {c.id for c in await self.ari.channels()}
        except (AriUnavailable, AriError) as exc:
            log.warning("event=reconcile_skipped reason=%r", str(exc)[:200])
            return 0
        now = self.clock()
        if own_only:
            older_than = now
        else:
            # nobody's call lasts longer than this: its dialer is gone
            older_than = now - timedelta(seconds=self.timings.ring_timeout + self.timings.total_timeout + 300)
        async with self.engine.begin() as conn:
            released = await release_stale(conn, older_than=older_than, live_channel_ids=live,
                                           now=now, claimed_by=self.worker if own_only else None)
        if released:
            log.info("event=stale_attempts_released count=%d own_only=%s", released, own_only)
        return released

    async def sweep(self) -> None:
        now = self.clock()
        async with self.engine.begin() as conn:
            expired = (await conn.execute(_EXPIRE, {"now": now, "now_text": now.isoformat()})).all()
        if expired:
            log.info("event=jobs_expired count=%d", len(expired))
        await self.reconcile(own_only=False)
        if self.speech is not None:
            await self.forget_old_utterances(self.speech.retention_days)

    async def forget_old_utterances(self, days: int) -> int:
        """Retention: utterance audio and rows older than ``days`` are deleted (files first
        listed from the rows, so a file is never orphaned by a crash between the two)."""
        cutoff = self.clock() - timedelta(days=days)
        async with self.engine.begin() as conn:
            paths = [r[0] for r in (await conn.execute(_OLD_UTTERANCES, {"cutoff": cutoff})).all()]
        for path in paths:
            if path:
                try:
                    Path(path).unlink(missing_ok=True)
                except OSError as exc:
                    log.warning("event=utterance_audio_not_deleted path=%s reason=%r", path, str(exc)[:100])
        if paths:
            log.info("event=utterances_forgotten count=%d older_than_days=%d", len(paths), days)
        return len(paths)

    async def _prerender_quietly(self) -> None:
        try:
            await self.prerender_upcoming()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # database down etc.: the next round retries
            log.warning("event=prerender_failed reason=%r", str(exc)[:160])

    async def prerender_upcoming(self, horizon_s: float = 300, limit: int = 200) -> int:
        """Render the prompts of jobs due in the next minutes, so the dial never waits for TTS."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_UPCOMING_PROMPTS, {
                "until": self.clock() + timedelta(seconds=horizon_s), "limit": limit})).all()
        rendered = 0
        for prompt, template, e164, card_tz in rows:
            try:
                audio = await self._speak(prompt, template)
                rendered += not audio.cached
                if self.policies.for_template(template).dialog == "callback":
                    await self._dialog_phrases(prompt, client_timezone(card_tz, e164), template)
            except (TtsError, ValueError) as exc:
                log.warning("event=prerender_failed reason=%r", str(exc)[:160])
        return rendered
