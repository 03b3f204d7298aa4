"""What the robot did: notification jobs as a table with per-status counts, and a CSV export of
every attempt (``ivr notify status``, ``ivr notify attempts``; see docs/notifications.md).

    jobs = await job_lines(conn, JobFilter(statuses=("scheduled",), template="documents_sent"))
    counts = await status_counts(conn, JobFilter())
    n = await write_attempts_csv(conn, JobFilter(since=...), out)    # out: a text stream

Read-only; the SQL is built with SQLAlchemy Core (every value a bound parameter). Times are
shown in the client's local time (zone from his card, else his number; ivr.notify.window), which
is the time the call window and the retry policy use.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from typing import IO
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from ivr.notify.jobs import STATES
from ivr.notify.window import client_timezone
from models.tables import Client, NotificationAttempt, NotificationJob

CSV_COLUMNS = ("job_id", "external_id", "phone", "template", "job_status", "result", "attempt_no", "channel",
               "started_at", "answered_at", "ended_at", "cause", "hangup_cause", "digits", "prompt_text")
# Free-text cells a spreadsheet would read as a formula get a leading apostrophe (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_FREE_TEXT = {"external_id", "template", "cause", "digits", "prompt_text"}


@dataclass(frozen=True)
class JobFilter:
    statuses: tuple[str, ...] = ()
    template: str | None = None
    since: datetime | None = None          # jobs created at or after
    job_id: int | None = None

    def __post_init__(self) -> None:
        unknown = [s for s in self.statuses if s not in STATES]
        if unknown:
            raise ValueError(f"unknown status {unknown[0]!r}; one of {', '.join(STATES)}")
        if self.since is not None and self.since.tzinfo is None:
            raise ValueError("since needs a time zone")

    def where(self):
        job = NotificationJob.__table__.c
        clauses = []
        if self.statuses:
            clauses.append(job.status.in_(list(self.statuses)))
        if self.template:
            clauses.append(job.template == self.template)
        if self.since is not None:
            clauses.append(job.created_at >= self.since)
        if self.job_id is not None:
            clauses.append(job.id == self.job_id)
        return and_(true(), *clauses)


@dataclass(frozen=True)
class JobLine:
    id: int
    external_id: str | None
    e164: str
    template: str
    status: str
    result: str | None
    attempts_made: int
    max_attempts: int
    next_attempt_at: datetime | None
    last_cause: str | None
    created_at: datetime
    tz: ZoneInfo

    @property
    def next_local(self) -> str:
        if self.next_attempt_at is None:
            return "-"
        return f"{self.next_attempt_at.astimezone(self.tz):%Y-%m-%d %H:%M} {self.tz.key}"


async def job_lines(conn: AsyncConnection, flt: JobFilter, *, limit: int = 50) -> list[JobLine]:
    """Jobs matching ``flt``, newest first, with the cause of each one's latest attempt."""
    job = NotificationJob.__table__.c
    att = NotificationAttempt.__table__.c
    last_cause = (select(att.cause).where(att.job_id == job.id).order_by(att.attempt_no.desc()).limit(1)
                  .scalar_subquery())
    stmt = (select(job.id, job.external_id, job.e164, job.template, job.status, job.result, job.attempts_made,
                   job.max_attempts, job.next_attempt_at, job.created_at, last_cause.label("last_cause"),
                   Client.__table__.c.timezone.label("client_tz"))
            .join(Client.__table__, Client.__table__.c.id == job.client_id)
            .where(flt.where()).order_by(job.id.desc()).limit(limit))
    out = []
    for r in (await conn.execute(stmt)).mappings():
        out.append(JobLine(id=r["id"], external_id=r["external_id"], e164=r["e164"], template=r["template"],
                           status=r["status"], result=r["result"], attempts_made=r["attempts_made"],
                           max_attempts=r["max_attempts"], next_attempt_at=r["next_attempt_at"],
                           last_cause=r["last_cause"], created_at=r["created_at"],
                           tz=client_timezone(r["client_tz"], r["e164"])))
    return out


async def status_counts(conn: AsyncConnection, flt: JobFilter) -> dict[str, int]:
    """Number of jobs matching ``flt`` per status, in the state machine's order."""
    job = NotificationJob.__table__.c
    rows = (await conn.execute(select(job.status, func.count()).where(flt.where()).group_by(job.status))).all()
    found = dict(rows)
    return {s: found[s] for s in STATES if s in found}


async def job_attempt_lines(conn: AsyncConnection, job_id: int) -> tuple[JobLine | None, list[dict]]:
    """One job (None if unknown) and its attempts, oldest first."""
    lines = await job_lines(conn, JobFilter(job_id=job_id), limit=1)
    if not lines:
        return None, []
    att = NotificationAttempt.__table__
    rows = (await conn.execute(select(att).where(att.c.job_id == job_id).order_by(att.c.attempt_no))).mappings()
    return lines[0], [dict(r) for r in rows]


def _safe(column: str, value) -> str:
    if value is None:
        return ""
    text = str(value)
    if column in _FREE_TEXT and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def _local(value: datetime | None, tz: ZoneInfo) -> str | None:
    return value.astimezone(tz).isoformat(timespec="seconds") if value is not None else None


async def write_attempts_csv(conn: AsyncConnection, flt: JobFilter, out: IO[str]) -> int:
    """Write the jobs matching ``flt`` with their attempts to ``out`` as CSV (header first; one
    row per attempt, a job not attempted yet as one row with empty attempt columns), oldest job
    first. Times are ISO 8601 in the client's local time, with the offset. Returns data rows."""
    job = NotificationJob.__table__.c
    att = NotificationAttempt.__table__.c
    stmt = (select(job.id.label("job_id"), job.external_id, job.e164.label("phone"), job.template,
                   job.status.label("job_status"), job.result, att.attempt_no, att.channel, att.started_at,
                   att.answered_at, att.ended_at, att.cause, att.hangup_cause, att.digits, att.prompt_text,
                   Client.__table__.c.timezone.label("client_tz"))
            .select_from(NotificationJob.__table__
                         .join(Client.__table__, Client.__table__.c.id == job.client_id)
                         .outerjoin(NotificationAttempt.__table__, att.job_id == job.id))
            .where(flt.where()).order_by(job.id, att.attempt_no))
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    n = 0
    result = await conn.stream(stmt)
    async for r in result.mappings():
        tz = client_timezone(r["client_tz"], r["phone"])
        values = dict(r)
        for name in ("started_at", "answered_at", "ended_at"):
            values[name] = _local(values[name], tz)
        writer.writerow([_safe(c, values[c]) for c in CSV_COLUMNS])
        n += 1
    return n


def _cell(value, width: int) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value if value is not None else "-"))
    return text if len(text) <= width else text[: width - 1] + "…"


_TABLE = (("id", 7, ">"), ("external id", 16, "<"), ("phone", 16, "<"), ("template", 18, "<"),
          ("status", 12, "<"), ("result", 12, "<"), ("tries", 5, ">"), ("next attempt (client)", 36, "<"),
          ("last cause", 24, "<"))


def format_table(lines: list[JobLine]) -> str:
    def row(values) -> str:
        return "  ".join(f"{_cell(v, w):{align}{w}}" for v, (_, w, align) in zip(values, _TABLE)).rstrip()

    out = [row([name for name, _, _ in _TABLE])]
    for j in lines:
        out.append(row([j.id, j.external_id, j.e164, j.template, j.status, j.result,
                        f"{j.attempts_made}/{j.max_attempts}", j.next_local, j.last_cause]))
    return "\n".join(out)


def format_counts(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    parts = [f"{status} {n}" for status, n in counts.items()]
    return "  ".join(parts + [f"total {total}"])


def format_attempts(job: JobLine, attempts: list[dict]) -> str:
    head = (f"job {job.id} {job.external_id or ''} {job.e164} {job.template}: {job.status}"
            f" (result {job.result or '-'}), {job.attempts_made}/{job.max_attempts} attempts,"
            f" next {job.next_local}")
    lines = [_cell(head, 300)]
    if not attempts:
        lines.append("  no attempts yet")

    def t(value):
        return value.astimezone(job.tz).strftime("%Y-%m-%d %H:%M:%S") if value else "-"

    for a in attempts:
        lines.append(f"  #{a['attempt_no']} {a['channel']:<4} {a['state']:<8} started {t(a['started_at'])}"
                     f"  answered {t(a['answered_at'])}  ended {t(a['ended_at'])}"
                     f"  cause {_cell(a['cause'], 40)}  hangup {_cell(a['hangup_cause'], 4)}"
                     f"  digits {_cell(a['digits'], 16)}"
                     + (f"  delivered {t(a['delivered_at'])}" if a.get("delivered_at") else ""))
        if a.get("prompt_text"):
            lines.append(f"      prompt: {_cell(a['prompt_text'], 200)}")
    lines.append(f"  (times in {job.tz.key})")
    return "\n".join(lines)
