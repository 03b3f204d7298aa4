"""Campaign progress: the robot's notification jobs per template and day, a chart over time, and
one job's whole attempt history with prompts, transcripts and the recorded answers (issue 7,
item 4).

* ``/campaigns?template=&day=YYYY-MM-DD&days=14``: per template and day (the job's creation day
  in ``CAMPAIGN_TZ``) - pending, in progress, confirmed, not received, exhausted, callback,
  handed over, other finals, SMS sent / delivered; an inline SVG of the results reached per
  hour (one day chosen) or per day (a range), drawn on the server; the latest jobs.
* ``/campaigns/job/<id>``: the job, its attempts (prompt text, cause, keys) and, for spoken
  answers, each utterance's transcript, intent and an ``<audio>`` player.
* ``/campaigns/utterance/<id>/audio``: the utterance's WAV - only a file inside the utterances
  folder (``<state_dir>/utterances``, where the dialer writes them); anything else is 404.

Read-only, parameterised SQL (text() with bound values only).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from aiohttp import web
from markupsafe import Markup
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from .wallboard import engine_of, render, require_page

CAMPAIGN_TZ = ZoneInfo("Europe/Moscow")
MAX_DAYS = 92

UTTERANCES_DIR = web.AppKey("ivr_utterances_dir", Path)

# Columns of the table: key, heading, the job statuses counted in it.
STATUS_COLUMNS = (
    ("pending", "в очереди", ("pending", "scheduled")),
    ("in_progress", "в работе", ("dialing", "sent")),
    ("confirmed", "подтвердили", ("confirmed",)),
    ("not_received", "не получили", ("not_received",)),
    ("exhausted", "исчерпано", ("exhausted",)),
    ("callback", "перезвонить", ("callback",)),
    ("handed_over", "передано менеджеру", ("handed_over",)),
    ("other", "прочее", ("delivered", "no_action", "expired", "cancelled", "failed")),
)
# Chart series: results reached, stacked bottom to top.
SERIES = (
    ("confirmed", "подтвердили", "#2e7d32"),
    ("delivered", "SMS доставлено", "#66bb6a"),
    ("not_received", "не получили", "#c62828"),
    ("callback", "перезвонить", "#1565c0"),
    ("handed_over", "передано менеджеру", "#6a1b9a"),
    ("exhausted", "исчерпано", "#ef6c00"),
    ("other", "прочее", "#9e9e9e"),
)

_COUNTS = text("""
SELECT j.template, CAST(j.created_at AT TIME ZONE :tz AS date) AS day, count(*) AS total,
       count(*) FILTER (WHERE j.status IN ('pending', 'scheduled')) AS pending,
       count(*) FILTER (WHERE j.status IN ('dialing', 'sent')) AS in_progress,
       count(*) FILTER (WHERE j.status = 'confirmed') AS confirmed,
       count(*) FILTER (WHERE j.status = 'not_received') AS not_received,
       count(*) FILTER (WHERE j.status = 'exhausted') AS exhausted,
       count(*) FILTER (WHERE j.status = 'callback') AS callback,
       count(*) FILTER (WHERE j.status = 'handed_over') AS handed_over,
       count(*) FILTER (WHERE j.status IN ('delivered', 'no_action', 'expired', 'cancelled', 'failed')) AS other,
       count(*) FILTER (WHERE s.sent > 0) AS sms_sent,
       count(*) FILTER (WHERE s.delivered > 0 OR j.status = 'delivered') AS sms_delivered
FROM notification_jobs j
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE a.state IN ('sent', 'done')) AS sent, count(a.delivered_at) AS delivered
    FROM notification_attempts a WHERE a.job_id = j.id AND a.channel = 'sms'
) s ON true
WHERE j.created_at >= :since AND j.created_at < :until
  AND (CAST(:template AS text) IS NULL OR j.template = CAST(:template AS text))
GROUP BY 1, 2
ORDER BY 2 DESC, 1
""")

_CHART = text("""
SELECT date_trunc(CAST(:unit AS text), j.updated_at AT TIME ZONE :tz) AS bucket, j.result, count(*) AS n
FROM notification_jobs j
WHERE j.result IS NOT NULL AND j.updated_at >= :since AND j.updated_at < :until
  AND (CAST(:template AS text) IS NULL OR j.template = CAST(:template AS text))
GROUP BY 1, 2
""")

_JOBS = text("""
SELECT j.id, j.external_id, j.e164, j.template, j.status, j.result, j.attempts_made, j.max_attempts,
       j.created_at, j.updated_at, c.full_name
FROM notification_jobs j JOIN clients c ON c.id = j.client_id
WHERE j.created_at >= :since AND j.created_at < :until
  AND (CAST(:template AS text) IS NULL OR j.template = CAST(:template AS text))
ORDER BY j.id DESC LIMIT :limit
""")

_TEMPLATES = text("SELECT DISTINCT template FROM notification_jobs ORDER BY template")

_JOB = text("""
SELECT j.*, c.full_name, c.address_name
FROM notification_jobs j JOIN clients c ON c.id = j.client_id WHERE j.id = :id
""")
_ATTEMPTS = text("""
SELECT a.id, a.attempt_no, a.channel, a.state, a.started_at, a.answered_at, a.ended_at, a.cause, a.hangup_cause,
       a.digits, a.prompt_text, a.sms_message_id, a.delivered_at
FROM notification_attempts a WHERE a.job_id = :id ORDER BY a.attempt_no
""")
_UTTERANCES = text("""
SELECT u.id, u.attempt_id, u.seq, u.step, u.at, u.duration_s, u.transcript, u.intent, u.resolved_at, u.asr_ms,
       u.engine, u.audio_path IS NOT NULL AS has_audio
FROM utterances u JOIN notification_attempts a ON a.id = u.attempt_id
WHERE a.job_id = :id ORDER BY a.attempt_no, u.seq
""")
_AUDIO = text("SELECT audio_path FROM utterances WHERE id = :id")


# --- queries -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Range:
    since: datetime
    until: datetime
    unit: str                 # hour (one day) / day
    buckets: list[datetime]   # local, naive: the chart's x axis


def day_range(day: date | None, days: int, today: date, tz: ZoneInfo = CAMPAIGN_TZ) -> Range:
    """One local day by the hour, or the ``days`` days up to ``today`` by the day."""
    if day is not None:
        start = datetime(day.year, day.month, day.day)
        buckets = [start + timedelta(hours=h) for h in range(24)]
        return Range(start.replace(tzinfo=tz), (start + timedelta(days=1)).replace(tzinfo=tz), "hour", buckets)
    days = max(1, min(days, MAX_DAYS))
    first = datetime(today.year, today.month, today.day) - timedelta(days=days - 1)
    buckets = [first + timedelta(days=i) for i in range(days)]
    return Range(first.replace(tzinfo=tz), (buckets[-1] + timedelta(days=1)).replace(tzinfo=tz), "day", buckets)


async def campaign_counts(conn: AsyncConnection, rng: Range, template: str | None = None,
                          tz: ZoneInfo = CAMPAIGN_TZ) -> list[dict]:
    """Rows per (template, day) of job creation: total and the count per column of the table."""
    rows = await conn.execute(_COUNTS, {"tz": tz.key, "since": rng.since, "until": rng.until,
                                        "template": template})
    return [dict(r._mapping) for r in rows]


async def campaign_chart(conn: AsyncConnection, rng: Range, template: str | None = None,
                         tz: ZoneInfo = CAMPAIGN_TZ) -> dict[datetime, dict[str, int]]:
    """Results reached per bucket: {bucket: {series key: n}} for every bucket of the range."""
    out: dict[datetime, dict[str, int]] = {b: {} for b in rng.buckets}
    known = {k for k, _l, _c in SERIES}
    rows = await conn.execute(_CHART, {"unit": rng.unit, "tz": tz.key, "since": rng.since, "until": rng.until,
                                       "template": template})
    for r in rows:
        key = r.result if r.result in known else "other"
        slot = out.setdefault(r.bucket, {})
        slot[key] = slot.get(key, 0) + int(r.n)
    return out


async def job_history(conn: AsyncConnection, job_id: int) -> dict | None:
    job = (await conn.execute(_JOB, {"id": job_id})).mappings().first()
    if job is None:
        return None
    attempts = [dict(r) for r in (await conn.execute(_ATTEMPTS, {"id": job_id})).mappings()]
    utterances = [dict(r) for r in (await conn.execute(_UTTERANCES, {"id": job_id})).mappings()]
    for a in attempts:
        a["utterances"] = [u for u in utterances if u["attempt_id"] == a["id"]]
    return {"job": dict(job), "attempts": attempts}


# --- the chart ---------------------------------------------------------------------------------
def stacked_bars_svg(values: dict[datetime, dict[str, int]], unit: str, *, width: int = 960,
                     height: int = 280) -> str:
    """An inline SVG of stacked bars (one per bucket, ``SERIES`` stacked), axis, legend."""
    left, right, top, bottom = 44, 10, 12, 58
    buckets = sorted(values)
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([sum(v.values()) for v in values.values()] + [0])
    step = _nice_step(peak)
    ymax = max(step * ((peak + step - 1) // step), step)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="campaign-chart" role="img" '
           f'viewBox="0 0 {width} {height}" width="100%" aria-label="результаты по времени">']
    for tick in range(0, ymax + 1, step):
        y = top + plot_h - plot_h * tick / ymax
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{tick}</text>')
    n = max(len(buckets), 1)
    slot = plot_w / n
    bar = max(slot * 0.7, 1.0)
    for i, b in enumerate(buckets):
        x = left + i * slot + (slot - bar) / 2
        y = top + plot_h
        label = f"{b:%H}" if unit == "hour" else f"{b:%d.%m}"
        for key, name, color in SERIES:
            count = values[b].get(key, 0)
            if not count:
                continue
            h = plot_h * count / ymax
            y -= h
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{color}" '
                       f'data-series="{key}"><title>{html.escape(label)} {html.escape(name)}: {count}</title></rect>')
        if n <= 31 or i % max(n // 16, 1) == 0:
            out.append(f'<text x="{x + bar / 2:.1f}" y="{top + plot_h + 14}" text-anchor="middle" '
                       f'font-size="11">{html.escape(label)}</text>')
    lx = left
    for key, name, color in SERIES:
        out.append(f'<rect x="{lx}" y="{height - 22}" width="12" height="12" fill="{color}"/>'
                   f'<text x="{lx + 16}" y="{height - 12}" font-size="12">{html.escape(name)}</text>')
        lx += 22 + 8 * len(name)
    out.append("</svg>")
    return "".join(out)


def _nice_step(peak: int) -> int:
    for step in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000):
        if peak / step <= 6:
            return step
    return 10 ** len(str(peak))


# --- handlers ----------------------------------------------------------------------------------
def _parse_day(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise web.HTTPBadRequest(text="day: expected YYYY-MM-DD") from None


async def campaigns_page(request: web.Request) -> web.Response:
    require_page(request, "campaigns")
    q = request.query
    template = (q.get("template") or "").strip()[:100] or None
    day = _parse_day(q.get("day"))
    try:
        days = int(q.get("days") or 14)
    except ValueError:
        raise web.HTTPBadRequest(text="days: a number") from None
    today = datetime.now(CAMPAIGN_TZ).date()
    rng = day_range(day, days, today)
    async with engine_of(request.app).connect() as conn:
        counts = await campaign_counts(conn, rng, template)
        chart = await campaign_chart(conn, rng, template)
        jobs = [dict(r) for r in (await conn.execute(_JOBS, {"since": rng.since, "until": rng.until,
                                                             "template": template, "limit": 50})).mappings()]
        templates = list((await conn.execute(_TEMPLATES)).scalars())
    totals = {k: sum(r[k] for r in counts) for k in
              ("total", *(c[0] for c in STATUS_COLUMNS), "sms_sent", "sms_delivered")}
    return render(request, "campaigns.html", {
        "counts": counts, "totals": totals, "columns": STATUS_COLUMNS, "jobs": jobs, "templates": templates,
        "template": template, "day": day.isoformat() if day else "", "days": len(rng.buckets) if day is None else 1,
        "unit": rng.unit, "chart": Markup(stacked_bars_svg(chart, rng.unit)), "tz": CAMPAIGN_TZ,
    })


async def job_page(request: web.Request) -> web.Response:
    require_page(request, "campaigns")
    job_id = int(request.match_info["job_id"])
    async with engine_of(request.app).connect() as conn:
        history = await job_history(conn, job_id)
    if history is None:
        raise web.HTTPNotFound(text="no such job")
    return render(request, "campaigns_job.html", {**history, "tz": CAMPAIGN_TZ})


def utterances_dir(app: web.Application) -> Path:
    """Where the dialer writes utterance audio: the configured folder, else
    ``<settings.state_dir>/utterances`` (ivr/notify/service.py), else the default state folder."""
    if UTTERANCES_DIR in app:
        return app[UTTERANCES_DIR]
    settings = None
    try:
        from ivr.web.app import SETTINGS
        settings = app.get(SETTINGS)
    except ImportError:
        pass
    if settings is not None and getattr(settings, "state_dir", None):
        return Path(settings.state_dir) / "utterances"
    from ivr.config import PROJECT_ROOT
    return PROJECT_ROOT / "var" / "utterances"


def safe_audio_file(base: Path, stored: str | None) -> Path | None:
    """The file ``stored`` names if it is a regular file inside ``base`` (symlinks and ``..``
    resolved first), else None."""
    if not stored or "\x00" in stored:
        return None
    root = base.resolve()
    path = Path(stored)
    if not path.is_absolute():
        path = root / path
    try:
        path = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


async def utterance_audio(request: web.Request) -> web.StreamResponse:
    require_page(request, "campaigns")
    utterance_id = int(request.match_info["utterance_id"])
    async with engine_of(request.app).connect() as conn:
        stored = (await conn.execute(_AUDIO, {"id": utterance_id})).scalar_one_or_none()
    path = safe_audio_file(utterances_dir(request.app), stored)
    if path is None:
        raise web.HTTPNotFound(text="no audio")
    return web.FileResponse(path, headers={"Content-Type": "audio/wav", "Cache-Control": "private, max-age=3600",
                                           "X-Content-Type-Options": "nosniff"})


def setup_campaigns(app: web.Application, *, audio_dir: Path | None = None) -> None:
    """Routes /campaigns, /campaigns/job/<id>, /campaigns/utterance/<id>/audio. ``audio_dir``:
    the utterances folder (default: from the app's settings)."""
    if audio_dir is not None:
        app[UTTERANCES_DIR] = Path(audio_dir)
    app.router.add_get("/campaigns", campaigns_page)
    app.router.add_get(r"/campaigns/job/{job_id:\d{1,18}}", job_page)
    app.router.add_get(r"/campaigns/utterance/{utterance_id:\d{1,18}}/audio", utterance_audio)
