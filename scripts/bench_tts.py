#!/usr/bin/env python3
"""Benchmark (issue 4): TTS real-time factor (Festival, espeak-ng) and prompt-cache hit latency.

Texts: five short Russian sentences (the set of docs/tts.md's first measurement) and the robot's
real confirmation prompt (template ``documents_sent`` rendered and normalised for speech, as the
dialer speaks it; ~15 s of audio). Every synthesis is one engine process, as in production (the
process start and, for Festival, the voice load are included). Per engine and text group the
script repeats --rounds times and reports the median; RTF = wall time / audio duration.

Then ``Synthesizer.prompt`` (the product's path: normalise, cache lookup, PromptAudio) on a cache
hit, --hits times, and ``prepare()`` of the five sentences with 2 workers on an empty cache.

Also the leading silence of each engine's output (ms before the first sample above 1000): the
client hears it as a pause after the first audio packet.

Usage: scripts/bench_tts.py [--rounds 3] [--hits 5000] [--json OUT]
Writes only to a temporary folder (removed at the end).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ivr.notify.templates import TemplateStore, default_folder  # noqa: E402
from ivr.speech.cache import PromptCache  # noqa: E402
from ivr.speech.tts import EspeakEngine, FestivalEngine, Synthesizer  # noqa: E402

RATE = 8000
SENTENCES = [
    "Здравствуйте! Это торговый дом. Вам сейчас удобно говорить?",
    "Мы звоним по вашему заказу номер двадцать три.",
    "Если вам удобно, скажите да, если нет, скажите нет.",
    "Соединяю вас с менеджером, пожалуйста, оставайтесь на линии.",
    "Спасибо за ответ. Всего доброго, до свидания!",
]
VARS = {"sent_date": "07.02", "sent_how": "заказным письмом", "documents": "бухгалтерские документы за декабрь"}


def robot_prompt() -> str:
    store = TemplateStore(default_folder(), company_name="Эни")
    return store.render("documents_sent", {"address_name": "Пётр Николаевич"}, VARS).speech_text


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def leading_silence_ms(pcm: bytes, level: int = 1000) -> float | None:
    """Milliseconds before the first sample above ``level`` (what the client hears as a pause)."""
    samples = array.array("h")
    samples.frombytes(pcm[:len(pcm) - len(pcm) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    onset = next((i for i, x in enumerate(samples) if abs(x) > level), None)
    return None if onset is None else round(onset * 1000 / RATE, 1)


async def synth_group(engine, texts: list[str]) -> tuple[float, float]:
    """(audio seconds, wall seconds) of synthesizing texts one process each, sequentially."""
    audio = wall = 0.0
    for text in texts:
        t = time.perf_counter()
        pcm = await engine.synthesize(text, RATE)
        wall += time.perf_counter() - t
        audio += len(pcm) / (2 * RATE)
    return audio, wall


async def main(args) -> dict:
    prompt = robot_prompt()
    groups = {"5 sentences": SENTENCES, "robot prompt": [prompt]}
    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "load_average_start": round(os.getloadavg()[0], 2), "rounds": args.rounds,
                    "robot_prompt_chars": len(prompt), "engines": {}}
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; robot prompt: {prompt!r}")
    for engine in (FestivalEngine(), EspeakEngine()):
        await engine.synthesize(SENTENCES[0], RATE)          # warm the page cache (binaries, voice)
        per = {}
        for name, texts in groups.items():
            runs = [await synth_group(engine, texts) for _ in range(args.rounds)]
            audio = runs[0][0]
            walls = [w for _, w in runs]
            med = statistics.median(walls)
            per[name] = {"texts": len(texts), "audio_s": round(audio, 2), "wall_s_median": round(med, 3),
                         "wall_s_all": [round(w, 3) for w in walls], "rtf_median": round(med / audio, 4),
                         "ms_per_text": round(med / len(texts) * 1000, 1)}
            print(f"{engine.name:9} {name:13}: {audio:5.1f} s of audio, wall median {med:.3f} s "
                  f"(runs {', '.join(f'{w:.3f}' for w in walls)}), RTF {med / audio:.4f}, "
                  f"{med / len(texts) * 1000:.0f} ms per text")
        silences = [leading_silence_ms(await engine.synthesize(t, RATE)) for t in [prompt, *SENTENCES]]
        per["leading_silence_ms"] = {"robot prompt": silences[0], "5 sentences": silences[1:]}
        print(f"{engine.name:9} leading silence before the first word: robot prompt {silences[0]} ms, "
              f"5 sentences {silences[1:]} ms")
        result["engines"][engine.name] = per

    folder = Path(tempfile.mkdtemp(prefix="bench-tts-"))
    try:
        syn = Synthesizer([FestivalEngine(), EspeakEngine()], PromptCache(folder, 10**9), RATE, max_workers=2)
        t = time.perf_counter()
        await syn.prepare(SENTENCES)
        prep = time.perf_counter() - t
        print(f"prepare(5 sentences, 2 workers, Festival, empty cache): {prep:.2f} s")
        await syn.prompt(prompt)
        lat = []
        for _ in range(args.hits):
            t = time.perf_counter()
            audio = await syn.prompt(prompt)
            lat.append(time.perf_counter() - t)
        assert audio.cached and syn.syntheses == len(SENTENCES) + 1, "a hit must not synthesize"
        hit = {"n": args.hits, "p50_us": round(pct(lat, .5) * 1e6, 1), "p99_us": round(pct(lat, .99) * 1e6, 1),
               "max_us": round(max(lat) * 1e6, 1)}
        print(f"cache hit (Synthesizer.prompt, {args.hits} calls): p50 {hit['p50_us']:.0f} us, "
              f"p99 {hit['p99_us']:.0f} us, max {hit['max_us']:.0f} us")
        result["prepare_5_sentences_s"] = round(prep, 2)
        result["cache_hit"] = hit
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result["load_average_end"] = round(os.getloadavg()[0], 2)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hits", type=int, default=5000)
    parser.add_argument("--json", type=Path)
    a = parser.parse_args()
    res = asyncio.run(main(a))
    print(json.dumps(res, ensure_ascii=False, sort_keys=True))
    if a.json:
        a.json.write_text(json.dumps(res, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
