"""CallJournal: every call lands in the calls table, even when the database is down.

A call flow hands over a snapshot and moves on; it never waits for Postgres. One writer task
upserts snapshots in order. When a write fails (after two quick retries) the journal marks the
database down and appends snapshots to a spool file (JSON lines) instead; a replayer retries
the spool every few seconds and, once the database answers, writes the spool in order and
truncates it. Nothing is lost while the disk works; each spooled record is logged with its
call id so an operator can see exactly what waits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from pathlib import Path

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from models.tables import Call

from .record import CallRecord

log = logging.getLogger("ivr.calls.journal")

_DB_ERRORS = (OperationalError, DBAPIError, OSError, TimeoutError)


def _build_upsert():
    """INSERT ... ON CONFLICT (call_uid) DO UPDATE of every column a CallRecord carries; built
    once (rebuilding it per call was a measurable share of the controller's CPU)."""
    columns = [f.name for f in dataclasses.fields(CallRecord)]
    stmt = insert(Call)
    return stmt.on_conflict_do_update(index_elements=[Call.call_uid],
                                      set_={c: stmt.excluded[c] for c in columns if c != "call_uid"})


_UPSERT = _build_upsert()


class CallJournal:
    MAX_BATCH = 200

    def __init__(
        self,
        engine: AsyncEngine,
        spool_path: Path,
        *,
        quick_retries: tuple[float, ...] = (0.2, 0.5),
        replay_interval: float = 5.0,
        write_timeout: float = 5.0,
    ):
        self.engine = engine
        self.spool_path = spool_path
        self.quick_retries = quick_retries
        self.replay_interval = replay_interval
        self.write_timeout = write_timeout
        self._queue: asyncio.Queue[CallRecord] = asyncio.Queue()
        self.database_up = True
        self.written = 0
        self.spooled = 0

    def record(self, record: CallRecord) -> None:
        """Queue a snapshot of ``record``; returns at once."""
        self._queue.put_nowait(CallRecord.from_json(record.to_json()))

    async def run(self) -> None:
        replayer = asyncio.create_task(self._replay_loop())
        try:
            while True:
                batch = [await self._queue.get()]
                # Under load several snapshots wait: take them all and keep only each call's
                # latest (it holds everything the earlier ones did), written in one transaction.
                while len(batch) < self.MAX_BATCH and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                try:
                    await self._handle_batch(list({r.call_uid: r for r in batch}.values()))
                finally:
                    for _ in batch:
                        self._queue.task_done()
        finally:
            replayer.cancel()

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued snapshot is written or spooled."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
            return True
        except TimeoutError:
            return False

    @property
    def spool_pending(self) -> bool:
        return self.spool_path.exists() and self.spool_path.stat().st_size > 0

    async def _handle_batch(self, records: list[CallRecord]) -> None:
        # Keep order: while older snapshots wait in the spool, newer ones queue behind them.
        if not self.database_up or self.spool_pending:
            for record in records:
                self._spool(record, reason="database down" if not self.database_up else "spool not yet replayed")
            return
        delays = (0.0, *self.quick_retries)
        last_error: BaseException | None = None
        for delay in delays:
            if delay:
                await asyncio.sleep(delay)
            try:
                await self._upsert_many(records)
                self.written += len(records)
                return
            except _DB_ERRORS as exc:
                last_error = exc
        self._mark_down(last_error)
        for record in records:
            self._spool(record, reason="write failed")

    async def _upsert(self, record: CallRecord) -> None:
        await self._upsert_many([record])

    async def _upsert_many(self, records: list[CallRecord]) -> None:
        async with asyncio.timeout(self.write_timeout):
            async with self.engine.begin() as conn:
                await conn.execute(_UPSERT, [r.as_row() for r in records])

    def _spool(self, record: CallRecord, *, reason: str) -> None:
        self.spool_path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record.to_json(), ensure_ascii=False)
        with open(self.spool_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.spooled += 1
        log.warning(
            "event=call_record_spooled call_uid=%s result=%s reason=%r spool=%s",
            record.call_uid, record.result, reason, self.spool_path,
        )

    def _mark_down(self, error: BaseException | None) -> None:
        if self.database_up:
            reason = str(getattr(error, "orig", None) or error or "unknown").strip().splitlines()[0][:200]
            log.error("event=database_down reason=%r action=spooling_call_records", reason)
        self.database_up = False

    async def _replay_loop(self) -> None:
        while True:
            await asyncio.sleep(self.replay_interval)
            if self.spool_pending or not self.database_up:
                await self.replay_spool()

    async def replay_spool(self) -> int:
        """Write spooled snapshots in order; returns how many were written."""
        if not self.spool_pending:
            try:
                async with self.engine.connect():
                    pass
            except _DB_ERRORS:
                return 0
            if not self.database_up:
                log.info("event=database_up")
            self.database_up = True
            return 0
        lines = self.spool_path.read_text(encoding="utf-8").splitlines()
        written = 0
        for index, line in enumerate(lines):
            try:
                record = CallRecord.from_json(json.loads(line))
            except (ValueError, TypeError, KeyError) as exc:
                log.error("event=spool_line_unreadable line=%d reason=%r", index + 1, str(exc)[:200])
                continue
            try:
                await self._upsert(record)
            except _DB_ERRORS:
                # Still down: keep the unwritten tail for the next attempt.
                self._rewrite_spool(lines[index:], replaced=len(lines))
                return written
            written += 1
        self._rewrite_spool([], replaced=len(lines))
        if not self.database_up:
            log.info("event=database_up replayed=%d", written)
        self.database_up = True
        self.written += written
        return written

    def _rewrite_spool(self, lines: list[str], *, replaced: int) -> None:
        # The writer may have appended while we were replaying (we awaited the database):
        # keep whatever came after the ``replaced`` lines we read.
        current = self.spool_path.read_text(encoding="utf-8").splitlines()
        lines = lines + current[replaced:]
        tmp = self.spool_path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        tmp.replace(self.spool_path)
