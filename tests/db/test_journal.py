"""The call journal against the real Postgres: upsert, and nothing lost while it is down."""

import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from ivr.calls.journal import CallJournal
from ivr.calls.record import CallRecord, utcnow
from models.db import make_async_engine
from models.tables import Call
from tests.conftest import drop_database, recreate_database
from models.migrate import upgrade

pytestmark = pytest.mark.db


def a_record(**changes):
    record = CallRecord.inbound(f"test-{uuid.uuid4().hex[:10]}", caller_number="8 (916) 123-45-67",
                                caller_name="Пётр", to_number="74951234567", channel_name="PJSIP/carrier-1",
                                flow="greeting")
    for key, value in changes.items():
        setattr(record, key, value)
    return record


async def fetch(engine, uid):
    async with AsyncSession(engine) as session:
        return await session.scalar(select(Call).where(Call.call_uid == uid))


async def test_start_then_end_is_one_row(database_url, tmp_path):
    engine = make_async_engine(database_url)
    journal = CallJournal(engine, tmp_path / "spool.jsonl")
    runner = __import__("asyncio").create_task(journal.run())
    record = a_record()
    journal.record(record)
    record.answered_at = utcnow()
    record.digits, record.result, record.ended_at = "1", "digit", utcnow()
    journal.record(record)
    assert await journal.flush(5)
    row = await fetch(engine, record.call_uid)
    assert (row.result, row.digits, row.from_e164, row.caller_name) == ("digit", "1", "+79161234567", "Пётр")
    assert row.ended_at is not None and row.direction.value == "inbound"
    async with engine.connect() as conn:
        count = await conn.scalar(text("SELECT count(*) FROM calls WHERE call_uid = :u"), {"u": record.call_uid})
    assert count == 1
    runner.cancel()
    await engine.dispose()


async def test_records_survive_a_dead_database_and_are_replayed_in_order(pg_server_url, tmp_path):
    import asyncio

    name = f"ivr_test_down_{uuid.uuid4().hex[:6]}"
    drop_database(pg_server_url, name)
    url = recreate_database(pg_server_url, name).rsplit("/", 1)[0] + f"/{name}"
    drop_database(pg_server_url, name)  # the database is gone: every write fails
    engine = make_async_engine(url)
    spool = tmp_path / "spool.jsonl"
    journal = CallJournal(engine, spool, quick_retries=(0.05,), replay_interval=3600)
    runner = asyncio.create_task(journal.run())
    record = a_record()
    journal.record(record)  # start snapshot
    assert await journal.flush(10)
    record.result, record.digits, record.ended_at = "digit", "5", utcnow()
    journal.record(record)  # end snapshot
    assert await journal.flush(10)
    lines = [json.loads(line) for line in spool.read_text().splitlines()]
    assert [line["result"] for line in lines] == [None, "digit"]
    assert journal.database_up is False

    # The database comes back: replay writes the spool in order, the final state wins.
    recreate_database(pg_server_url, name)
    upgrade(url)
    await engine.dispose()
    written = await journal.replay_spool()
    assert written == 2 and journal.database_up is True
    assert spool.read_text() == ""
    row = await fetch(engine, record.call_uid)
    assert (row.result, row.digits) == ("digit", "5")
    runner.cancel()
    await engine.dispose()
    drop_database(pg_server_url, name)


async def test_unreadable_spool_line_is_reported_and_skipped(database_url, tmp_path, caplog):
    engine = make_async_engine(database_url)
    spool = tmp_path / "spool.jsonl"
    good = a_record(result="no_input")
    spool.write_text("{not json\n" + json.dumps(good.to_json()) + "\n")
    journal = CallJournal(engine, spool)
    assert await journal.replay_spool() == 1
    assert "event=spool_line_unreadable line=1" in caplog.text
    assert (await fetch(engine, good.call_uid)).result == "no_input"
    await engine.dispose()


async def test_snapshots_waiting_together_are_coalesced_per_call_and_written_at_once(database_url):
    """Under load the writer takes every waiting snapshot, keeps each call's latest and writes
    them in one transaction: the rows end in their final state."""
    import asyncio

    engine = make_async_engine(database_url)
    journal = CallJournal(engine, Path("/nonexistent/never-used.jsonl"))
    records = [a_record() for _ in range(30)]
    for record in records:
        journal.record(record)  # start snapshots
        record.result, record.digits, record.ended_at = "digit", "7", utcnow()
        journal.record(record)  # end snapshots, queued behind
    runner = asyncio.create_task(journal.run())
    assert await journal.flush(10)
    assert journal.written == 30  # 60 snapshots, 30 rows written
    for record in records:
        row = await fetch(engine, record.call_uid)
        assert (row.result, row.digits) == ("digit", "7")
    runner.cancel()
    await engine.dispose()
