#!/usr/bin/env python3
"""Benchmark (issue 5): intent accuracy on a round trip, text -> voice -> ASR -> understanding.

The set: the project's own answer phrases (tests/unit/data/utterances.tsv, the rows at the
default reference Monday 2026-11-23 11:00 Moscow, written in words: Festival reads digits and
deliberate misspellings poorly, so rows with digits and the "Whisper-style misspelling" rows are
left out) plus the dialog's own examples (ivr/notify/speech_dialog.py and the e2e answers).

Each phrase is synthesised with Festival (``text2wave -F 8000``, voice msu_ru_nsh_clunits),
passed through a telephone channel (300-3400 Hz band-pass with sox unless --no-bandpass, then
G.711 mu-law encode/decode as Asterisk sends it), in two conditions: clean, and with white noise
at --snr dB (20) relative to the speech's power (the RMS of the 20 ms frames within 35 dB of the
loudest one, i.e. the silence Festival puts around the words does not dilute it). Then, as the
robot does it: silero-vad cuts the utterance (``VadSegmenter`` settings: end of speech after
500 ms of silence, 200 ms padding) and ``WhisperEngine()`` with the robot's defaults (base,
int8, beam 5, temperature 0, no prompt, ru) transcribes it; ``understand(text, now=Monday
2026-11-23 11:00, tz=Europe/Moscow)`` gives the intent, compared with the expected intent and,
for reschedule rows, the expected resolved local time.

Reported: accuracy (target >= 95 %), affirm/deny flips (target 0; ``Confusion.flips``: affirm
taken as deny/reschedule or the reverse), the confusion table, every error with its transcript,
wrong resolved times, and the ASR real-time factor (p50/p90) and time per answer.

Synthesised WAVs are cached in $TMPDIR/ivr-bench-intents (keyed by the text). The exit code is
non-zero only when something crashes, not when the target is missed.

Usage: scripts/bench_intents.py [--snr 20] [--no-bandpass] [--no-vad] [--limit N] [--beam N]
                                [--json OUT] [--markdown OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ivr.speech.understand import INTENTS, confusion, understand  # noqa: E402

TSV = ROOT / "tests" / "unit" / "data" / "utterances.tsv"
MOSCOW = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 11, 23, 11, 0, tzinfo=MOSCOW)        # the TSV's default reference (a Monday)
RATE = 8000
VOICE = "(voice_msu_ru_nsh_clunits)"
CACHE = Path(tempfile.gettempdir()) / "ivr-bench-intents"
CLASSES = ("affirm", "deny", "reschedule", "repeat", "operator")
# rows of the TSV that spell Whisper's mistakes on purpose (misspellings, split words): not what
# a person says, and Festival would read the misspelling
SKIP_SECTIONS = ("ASR split words",)
MISSPELT = {"удобна", "давайти", "харашо", "канешно", "подходид", "неудбно", "неудобна", "повтарите",
            "аператор", "в понедельнек утром", "зафтра", "неуд обно", "после завтра"}

# the dialog's own examples (ivr/notify/speech_dialog.py docstring, tests/e2e/test_speech_dialog.py)
DIALOG_EXAMPLES = [
    ("Да.", "affirm", None), ("Удобно.", "affirm", None), ("Давайте.", "affirm", None),
    ("Нет.", "deny", None), ("Неудобно.", "deny", None),
    ("Нет, лучше в понедельник утром.", "reschedule", "2026-11-30 10:00"),
    ("В понедельник утром.", "reschedule", "2026-11-30 10:00"),
    ("Повторите.", "repeat", None), ("Оператор.", "operator", None), ("Менеджер.", "operator", None),
]


@dataclass
class Item:
    text: str
    intent: str
    when: str | None          # expected local time "YYYY-MM-DD HH:MM" (Moscow) or None
    source: str


@dataclass
class Trial:
    text: str
    condition: str
    expected: str
    expected_when: str | None
    transcript: str
    got: str
    got_when: str | None
    audio_s: float
    asr_ms: float
    rtf: float
    vad_cut: bool
    reason: str

    @property
    def intent_ok(self) -> bool:
        return self.expected == self.got

    @property
    def when_ok(self) -> bool | None:
        if self.expected_when is None or self.got != "reschedule":
            return None
        return self.expected_when == self.got_when


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


# --- the set ----------------------------------------------------------------------------------

def load_set(limit: int | None) -> list[Item]:
    items: list[Item] = []
    section = ""
    for line in TSV.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            section = line
            continue
        cols = line.split("\t")
        if len(cols) < 3 or cols[1] == "intent":
            continue
        text, intent, when = cols[0].strip(), cols[1].strip(), cols[2].strip()
        tz = cols[3].strip() if len(cols) > 3 else ""
        now = cols[4].strip() if len(cols) > 4 else ""
        if (not text or intent not in CLASSES or tz or now or any(c.isdigit() for c in text)
                or text.lower().rstrip(".!?") in MISSPELT or any(s in section for s in SKIP_SECTIONS)):
            continue
        items.append(Item(text, intent, None if when in ("", "-") else when, "utterances.tsv"))
    items += [Item(t, i, w, "dialog") for t, i, w in DIALOG_EXAMPLES]
    seen: set[str] = set()
    unique = []
    for it in items:                      # the same words differently punctuated sound the same
        key = it.text.lower().strip(" .!?").replace("ё", "е")
        if key not in seen:
            seen.add(key)
            unique.append(it)
    if limit:                             # round-robin over the classes so every class stays in
        by: dict[str, list[Item]] = {c: [x for x in unique if x.intent == c] for c in CLASSES}
        unique, i = [], 0
        while len(unique) < limit and any(by.values()):
            c = CLASSES[i % len(CLASSES)]
            if by[c]:
                unique.append(by[c].pop(0))
            i += 1
    return unique


# --- audio --------------------------------------------------------------------------------------

def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        if w.getframerate() != RATE or w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise RuntimeError(f"{path}: expected 8 kHz 16-bit mono")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)


def write_wav(path: Path, x: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes())


def synthesize(text: str, bandpass: bool) -> Path:
    """Festival at 8 kHz (cached), then the 300-3400 Hz band-pass (cached too)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1(f"{VOICE}|{text}".encode()).hexdigest()[:16]
    wav = CACHE / f"{key}.wav"
    if not wav.exists():
        src = CACHE / f"{key}.txt"
        src.write_text(text, encoding="utf-8")
        tmp = CACHE / f"{key}.part.wav"
        subprocess.run(["text2wave", "-F", str(RATE), "-eval", VOICE, str(src), "-o", str(tmp)],
                       check=True, timeout=120, capture_output=True)
        tmp.rename(wav)
    if not bandpass:
        return wav
    bp = CACHE / f"{key}.bp.wav"
    if not bp.exists():
        tmp = CACHE / f"{key}.bp.part.wav"
        subprocess.run(["sox", str(wav), str(tmp), "sinc", "300-3400"], check=True, timeout=60, capture_output=True)
        tmp.rename(bp)
    return bp


def speech_power(x: np.ndarray) -> float:
    """Mean power of the 20 ms frames within 35 dB of the loudest frame (the words, not the
    silence around them)."""
    n = len(x) // 160
    frames = x[:n * 160].reshape(n, 160)
    p = (frames ** 2).mean(axis=1)
    active = p[p >= p.max() * 10 ** (-35 / 10)]
    return float(active.mean())


def add_noise(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, 1.0, x.size)
    noise *= np.sqrt(speech_power(x) / 10 ** (snr_db / 10)) / np.sqrt(np.mean(noise ** 2))
    return x + noise


def _ulaw_tables() -> tuple[np.ndarray, np.ndarray]:
    # G.711 mu-law: decode table for the 256 codes; encode by the standard segment algorithm
    codes = np.arange(256)
    b = ~codes & 0xFF
    mag = ((((b & 0x0F) << 3) + 0x84) << ((b >> 4) & 7)) - 0x84
    dec = np.where(b & 0x80, -mag, mag).astype(np.float64)
    return codes, dec


_, ULAW_DEC = _ulaw_tables()


def ulaw_roundtrip(x: np.ndarray) -> np.ndarray:
    """What Asterisk's PCMU leg does to the audio (encode, decode)."""
    s = np.clip(np.round(x), -32768, 32767).astype(np.int64)
    sign = np.where(s < 0, 0x80, 0)
    mag = np.minimum(np.abs(s), 32635) + 0x84
    exp = np.floor(np.log2(mag)).astype(np.int64) - 7
    exp = np.clip(exp, 0, 7)
    mant = (mag >> (exp + 3)) & 0x0F
    code = ~(sign | (exp << 4) | mant) & 0xFF
    return ULAW_DEC[code]


def vad_cut(x: np.ndarray):
    """The utterance as the robot's segmenter cuts it (ivr.notify.speech_dialog.VadSegmenter:
    threshold 0.5, 500 ms end silence, 200 ms padding), 20 ms frames, 1 s of silence after."""
    from ivr.speech.vad import EndOfSpeechDetector, SpeechEnded

    det = EndOfSpeechDetector(RATE, threshold=0.5, end_silence_ms=500, no_speech_timeout_s=None, max_utterance_s=10.0)
    pcm = np.clip(np.round(np.concatenate([x, np.zeros(RATE)])), -32768, 32767).astype("<i2").tobytes()
    for i in range(0, len(pcm), 320):
        for ev in det.feed(pcm[i:i + 320]):
            if isinstance(ev, SpeechEnded):
                return ev.utterance.pcm
    return None


# --- the run ------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snr", type=float, default=20.0, help="noisy condition: SNR in dB over the speech")
    ap.add_argument("--no-bandpass", action="store_true", help="skip the 300-3400 Hz band-pass (sox)")
    ap.add_argument("--no-vad", action="store_true", help="give Whisper the whole file, not the VAD cut")
    ap.add_argument("--limit", type=int, help="at most N phrases (round-robin over the classes)")
    ap.add_argument("--beam", type=int, default=None,
                    help="Whisper beam size instead of the robot's (5): what a greedy decode (1) changes")
    ap.add_argument("--json", type=Path, help="write every trial and the summary here")
    ap.add_argument("--markdown", type=Path, help="write the report (markdown) here")
    args = ap.parse_args()

    for tool in ("text2wave",) + (() if args.no_bandpass else ("sox",)):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    load0 = os.getloadavg()
    started = datetime.now().astimezone()
    items = load_set(args.limit)
    counts = {c: sum(1 for i in items if i.intent == c) for c in CLASSES}
    log(f"load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} on {os.cpu_count()} cores; "
        f"{len(items)} phrases {counts}; cache {CACHE}")

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        wavs = list(ex.map(lambda it: synthesize(it.text, not args.no_bandpass), items))
    log(f"synthesised (or found in the cache) in {time.monotonic() - t0:.1f} s")

    from ivr.speech.asr import WhisperEngine

    engine = WhisperEngine()            # as ivr/notify/service.py configures it
    if args.beam:
        engine.beam_size = args.beam
    engine.load()
    log(f"Whisper loaded in {engine.load_s:.2f} s from {engine.model_dir} (beam {engine.beam_size}, "
        f"{engine.compute_type}, cpu_threads {engine.cpu_threads or 'auto'})")
    engine.recognize(b"\x00\x00" * RATE, RATE)          # warm-up, not counted

    conditions = [("clean", None), (f"noise {args.snr:g} dB", args.snr)]
    trials: list[Trial] = []
    t_asr = time.monotonic()
    for n, (it, wav) in enumerate(zip(items, wavs)):
        base = read_wav(wav)
        for cname, snr in conditions:
            x = base if snr is None else add_noise(base, snr, seed=n)
            x = ulaw_roundtrip(x)
            pcm = None if args.no_vad else vad_cut(x)
            cut = pcm is not None
            if pcm is None:
                pcm = np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()
            tr = engine.recognize(pcm, RATE)
            u = understand(tr.text, now=NOW, tz=MOSCOW)
            got_when = u.when.astimezone(MOSCOW).strftime("%Y-%m-%d %H:%M") if u.when else None
            t = Trial(it.text, cname, it.intent, it.when, tr.text, u.intent, got_when, tr.duration_s,
                      tr.elapsed_s * 1000, tr.rtf, cut, u.reason)
            trials.append(t)
            mark = "ok " if t.intent_ok and t.when_ok is not False else "ERR"
            print(f"  {mark} [{cname:>11}] {it.text!r:42} -> {tr.text!r:42} {u.intent}"
                  f"{' ' + got_when if got_when else ''}  ({tr.elapsed_s * 1000:.0f} ms, RTF {tr.rtf:.2f})", flush=True)
    asr_wall = time.monotonic() - t_asr
    load1 = os.getloadavg()

    # --- report ---
    out: list[str] = []
    cmd = "scripts/bench_intents.py " + " ".join(sys.argv[1:])
    out.append(f"Command: `.cache/venv/bin/python {cmd.strip()}`  ")
    out.append(f"Run {started:%Y-%m-%d %H:%M %Z}, load average {load0[0]:.2f} at the start, {load1[0]:.2f} at the end "
               f"({os.cpu_count()} cores); {len(items)} phrases x {len(conditions)} conditions = {len(trials)} "
               f"recognitions in {asr_wall:.0f} s; band-pass {'off' if args.no_bandpass else '300-3400 Hz'}, "
               f"mu-law, VAD cut {'off' if args.no_vad else 'on'}, Whisper beam {engine.beam_size}.")
    out.append("")
    summary: dict[str, dict] = {}
    for cname, _ in conditions + [("all", None)]:
        ts = [t for t in trials if cname == "all" or t.condition == cname]
        conf = confusion((t.expected, t.got) for t in ts)
        when_checked = [t for t in ts if t.when_ok is not None]
        when_bad = [t for t in when_checked if not t.when_ok]
        strict = sum(1 for t in ts if t.intent_ok and t.when_ok is not False)
        rtf = [t.rtf for t in ts]
        ms = [t.asr_ms for t in ts]
        summary[cname] = {
            "trials": len(ts), "accuracy": round(conf.accuracy, 4), "correct": conf.correct, "flips": conf.flips,
            "intent_and_time_accuracy": round(strict / len(ts), 4) if ts else None,
            "times_checked": len(when_checked), "times_wrong": len(when_bad),
            "rtf_p50": round(percentile(rtf, .5), 3), "rtf_p90": round(percentile(rtf, .9), 3),
            "asr_ms_p50": round(percentile(ms, .5)), "asr_ms_p90": round(percentile(ms, .9)),
            "audio_s_p50": round(percentile([t.audio_s for t in ts], .5), 2),
            "per_class": {c: {"n": sum(1 for t in ts if t.expected == c),
                              "correct": sum(1 for t in ts if t.expected == c and t.intent_ok)} for c in CLASSES},
        }
        s = summary[cname]
        out.append(f"**{cname}**: intent accuracy **{conf.accuracy:.1%}** ({conf.correct}/{conf.total}), "
                   f"affirm/deny flips **{conf.flips}**; intent and resolved time both right {strict}/{len(ts)} "
                   f"({s['times_wrong']} of {s['times_checked']} reschedule times wrong); ASR RTF p50 {s['rtf_p50']}, "
                   f"p90 {s['rtf_p90']}; time per answer p50 {s['asr_ms_p50']} ms, p90 {s['asr_ms_p90']} ms "
                   f"(audio p50 {s['audio_s_p50']} s).")
        out.append("")
        out.append(conf.to_markdown())
        out.append("")
        pc = " · ".join(f"{c} {v['correct']}/{v['n']}" for c, v in s["per_class"].items())
        out.append(f"Per class: {pc}")
        out.append("")
    errors = [t for t in trials if not t.intent_ok or t.when_ok is False]
    out.append(f"Errors ({len(errors)}), by expected class:")
    out.append("")
    out.append("| expected | condition | said | transcript | got | time expected / got |")
    out.append("|---|---|---|---|---|---|")
    for t in sorted(errors, key=lambda t: (INTENTS.index(t.expected), t.text, t.condition)):
        tw = f"{t.expected_when or '-'} / {t.got_when or '-'}" if (t.expected_when or t.got_when) else ""
        out.append(f"| {t.expected} | {t.condition} | {t.text} | {t.transcript or '(empty)'} | "
                   f"{t.got}{' (time)' if t.intent_ok else ''} | {tw} |")
    report = "\n".join(out)
    print()
    print(report)
    if args.markdown:
        args.markdown.write_text(report + "\n", encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps({
            "date": started.isoformat(timespec="seconds"), "load_average_start": load0, "load_average_end": load1,
            "command": cmd, "summary": summary,
            "trials": [asdict(t) | {"intent_ok": t.intent_ok, "when_ok": t.when_ok} for t in trials],
        }, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
