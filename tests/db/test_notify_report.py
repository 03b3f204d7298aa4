"""``ivr notify status`` and ``ivr notify attempts`` (ivr/notify/report.py) through the real CLI
(click's CliRunner) against the real Postgres: the table, per-status counts, filters, times in
the client's local zone, the CSV export (one row per attempt, UTF-8, header, spreadsheet-formula
cells neutralised), unknown jobs, bad options, hostile filter values.

The module works in its own database (``<IVR_TEST_DB>_report``) filled once with known jobs, so
the counts are exact."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from ivr.cli import main
from ivr.notify.report import CSV_COLUMNS
from models.db import make_engine
from models.migrate import upgrade
from tests.conftest import TEST_DB, drop_database, recreate_database

pytestmark = pytest.mark.db

UTC = timezone.utc
PROMPT = "Пётр Николаевич, здравствуйте. Компания «Эни». Нажмите 1."


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture(scope="module")
def db(pg_server_url):
    """The database URL and the ids of the jobs put in it."""
    name = f"{TEST_DB}_report"
    url = recreate_database(pg_server_url, name)
    upgrade(url)
    engine = make_engine(url)
    ids: dict[str, int] = {}
    with engine.begin() as conn:
        def client(full_name, tz=None):
            return conn.execute(text("INSERT INTO clients (full_name, timezone) VALUES (:n, :tz) RETURNING id"),
                                {"n": full_name, "tz": tz}).scalar()

        def job(key, client_id, e164, template, status, result, made, created, next_at=None, external=None):
            ids[key] = conn.execute(text(
                "INSERT INTO notification_jobs (client_id, e164, template, status, result, attempts_made, "
                "max_attempts, created_at, earliest_at, next_attempt_at, external_id, prompt_text) "
                "VALUES (:c, :e, :t, :s, :r, :m, 5, :cr, :cr, :n, :x, :p) RETURNING id"),
                {"c": client_id, "e": e164, "t": template, "s": status, "r": result, "m": made, "cr": created,
                 "n": next_at, "x": external, "p": PROMPT}).scalar()

        def attempt(key, no, state, cause, started, answered=None, ended=None, hangup=None, digits=None,
                    channel="call"):
            conn.execute(text(
                "INSERT INTO notification_attempts (job_id, attempt_no, channel, state, started_at, answered_at, "
                "ended_at, cause, hangup_cause, digits, prompt_text) "
                "VALUES (:j, :no, :ch, :st, :s, :a, :e, :c, :h, :d, :p)"),
                {"j": ids[key], "no": no, "ch": channel, "st": state, "s": started, "a": answered, "e": ended,
                 "c": cause, "h": hangup, "d": digits, "p": PROMPT})

        moscow = client("Иванов Пётр Николаевич")
        ekb = client("Сидоров Иван", "Asia/Yekaterinburg")
        job("confirmed", moscow, "+79161112233", "documents_sent", "confirmed", "confirmed", 2, at(2026, 11, 30, 7),
            external="crm-1")
        attempt("confirmed", 1, "failed", "busy (17)", at(2026, 11, 30, 9), ended=at(2026, 11, 30, 9, 0, 20),
                hangup=17)
        attempt("confirmed", 2, "done", "confirmed", at(2026, 11, 30, 9, 15), at(2026, 11, 30, 9, 15, 10),
                at(2026, 11, 30, 9, 15, 40), 16, "1")
        job("scheduled", ekb, "+73432123456", "goods_arrived", "scheduled", None, 1, at(2026, 11, 30, 8),
            next_at=at(2026, 12, 1, 5), external="crm-2")
        attempt("scheduled", 1, "failed", "no_answer (19)", at(2026, 11, 30, 8, 30), ended=at(2026, 11, 30, 8, 31),
                hangup=19)
        job("pending", moscow, "+79161112233", "documents_sent", "pending", None, 0, at(2026, 11, 30, 9),
            next_at=at(2026, 11, 30, 9), external="=HYPERLINK(\"http://evil\")")
        job("old", moscow, "+79161112233", "contract_confirm", "not_received", "not_received", 1, at(2020, 3, 2, 9),
            external="crm-old")
        attempt("old", 1, "done", "not_received", at(2020, 3, 2, 10), at(2020, 3, 2, 10, 0, 5),
                at(2020, 3, 2, 10, 0, 30), 16, "2")
    engine.dispose()
    yield url, ids
    drop_database(pg_server_url, name)


def run(url: str, *args: str):
    return CliRunner().invoke(main, ["notify", *args, "--database-url", url], catch_exceptions=False)


def table_ids(output: str) -> list[int]:
    return [int(line.split()[0]) for line in output.splitlines()[1:] if line.strip() and line.split()[0].isdigit()]


def test_status_table_lists_jobs_newest_first_with_counts(db):
    url, ids = db
    result = run(url, "status")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["id", "external", "id", "phone"]
    assert table_ids(result.output) == sorted(ids.values(), reverse=True)
    assert lines[-1] == "pending 1  scheduled 1  confirmed 1  not_received 1  total 4"
    confirmed = next(line for line in lines if line.lstrip().startswith(str(ids["confirmed"]) + " "))
    assert "crm-1" in confirmed and "+79161112233" in confirmed and "2/5" in confirmed
    assert "confirmed" in confirmed and confirmed.rstrip().endswith("confirmed")   # last cause
    # next attempt in the client's own zone: 05:00 UTC is 10:00 in Yekaterinburg
    scheduled = next(line for line in lines if line.lstrip().startswith(str(ids["scheduled"]) + " "))
    assert "2026-12-01 10:00 Asia/Yekaterinburg" in scheduled and "no_answer (19)" in scheduled
    pending = next(line for line in lines if line.lstrip().startswith(str(ids["pending"]) + " "))
    assert "2026-11-30 12:00 Europe/Moscow" in pending


def test_status_filters(db):
    url, ids = db
    result = run(url, "status", "--status", "scheduled", "--status", "pending")
    assert result.exit_code == 0, result.output
    assert sorted(table_ids(result.output)) == sorted([ids["scheduled"], ids["pending"]])
    assert result.output.splitlines()[-1] == "pending 1  scheduled 1  total 2"

    result = run(url, "status", "--template", "documents_sent")
    assert sorted(table_ids(result.output)) == sorted([ids["confirmed"], ids["pending"]])

    result = run(url, "status", "--since", "2026-01-01")
    assert ids["old"] not in table_ids(result.output) and len(table_ids(result.output)) == 3
    result = run(url, "status", "--since", "2026-11-30T08:00:00+00:00")
    assert sorted(table_ids(result.output)) == sorted([ids["scheduled"], ids["pending"]])

    result = run(url, "status", "--status", "expired")
    assert (result.exit_code, result.output.strip()) == (0, "no jobs")


def test_status_limit_says_what_is_hidden(db):
    url, ids = db
    result = run(url, "status", "--limit", "2")
    assert result.exit_code == 0, result.output
    assert len(table_ids(result.output)) == 2
    assert "showing the newest 2 of 4" in result.output
    assert result.output.splitlines()[-1].endswith("total 4")


def test_hostile_filter_values_are_just_values(db):
    url, _ = db
    result = run(url, "status", "--template", "x' OR '1'='1")
    assert (result.exit_code, result.output.strip()) == (0, "no jobs")
    result = run(url, "status", "--template", "documents_sent'; DROP TABLE notification_jobs; --")
    assert (result.exit_code, result.output.strip()) == (0, "no jobs")
    assert run(url, "status").exit_code == 0


def test_bad_options_are_usage_errors(db):
    url, _ = db
    result = run(url, "status", "--status", "bogus")
    assert result.exit_code == 2 and "unknown status 'bogus'" in result.output
    result = run(url, "status", "--since", "yesterday")
    assert result.exit_code == 2 and "--since" in result.output


def test_csv_export_to_file_one_row_per_attempt(db, tmp_path):
    url, ids = db
    target = tmp_path / "jobs.csv"
    result = CliRunner().invoke(main, ["notify", "status", "--csv", str(target), "--database-url", url],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    raw = target.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    data = raw.decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(data, newline="")))
    assert list(csv.reader(io.StringIO(data)))[0] == list(CSV_COLUMNS)
    # oldest job first; 2 + 1 + 1 (pending: no attempt yet) + 1
    assert [(int(r["job_id"]), r["attempt_no"]) for r in rows] == [
        (ids["confirmed"], "1"), (ids["confirmed"], "2"), (ids["scheduled"], "1"), (ids["pending"], ""),
        (ids["old"], "1")]
    busy, pressed = rows[0], rows[1]
    assert (busy["cause"], busy["hangup_cause"], busy["answered_at"], busy["channel"]) == (
        "busy (17)", "17", "", "call")
    assert (pressed["digits"], pressed["job_status"], pressed["result"], pressed["external_id"]) == (
        "1", "confirmed", "confirmed", "crm-1")
    assert pressed["started_at"] == "2026-11-30T12:15:00+03:00"       # the client's local time
    assert pressed["ended_at"] == "2026-11-30T12:15:40+03:00"
    assert pressed["prompt_text"] == PROMPT
    assert rows[2]["started_at"] == "2026-11-30T13:30:00+05:00"       # Yekaterinburg
    assert rows[3]["external_id"] == "'=HYPERLINK(\"http://evil\")"   # no formula in a spreadsheet
    assert rows[0]["phone"] == "+79161112233"                         # phones keep their plus
    assert "5 rows written" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["jobs.csv"]       # no temporary file left


def test_csv_export_to_stdout_with_filters(db):
    url, ids = db
    result = CliRunner().invoke(main, ["notify", "status", "--status", "not_received", "--csv", "-",
                                       "--database-url", url], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert len(rows) == 1
    assert (int(rows[0]["job_id"]), rows[0]["digits"], rows[0]["template"]) == (ids["old"], "2", "contract_confirm")


def test_csv_export_of_nothing_is_just_the_header(db):
    url, _ = db
    result = run(url, "status", "--status", "expired", "--csv", "-")
    assert result.exit_code == 0
    assert result.output.strip() == ",".join(CSV_COLUMNS)


def test_attempts_of_a_job(db):
    url, ids = db
    result = run(url, "attempts", str(ids["confirmed"]))
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"job {ids['confirmed']} crm-1 +79161112233 documents_sent: confirmed (result confirmed)" in out
    assert "#1 call failed" in out and "cause busy (17)" in out and "hangup 17" in out
    assert "#2 call done" in out and "started 2026-11-30 12:15:00" in out and "digits 1" in out
    assert "prompt: Пётр Николаевич" in out and "(times in Europe/Moscow)" in out

    result = run(url, "attempts", str(ids["pending"]))
    assert result.exit_code == 0 and "no attempts yet" in result.output


def test_attempts_of_an_unknown_job(db):
    url, _ = db
    result = run(url, "attempts", "987654321")
    assert result.exit_code == 1 and "notification job 987654321 not found" in result.output


def test_database_unreachable_is_exit_1():
    result = CliRunner().invoke(main, ["notify", "status", "--database-url",
                                       "postgresql://ivr:s3cret@127.0.0.1:1/ivr"])
    assert result.exit_code == 1
    assert "s3cret" not in result.output


def test_do_not_call_list_from_the_cli(db):
    url, _ = db
    added = run(url, "dnc", "add", "8 (916) 555-44-33", "--reason", "просил не звонить")
    assert added.exit_code == 0 and "+79165554433 is on the do-not-call list" in added.output
    listed = run(url, "dnc", "list")
    assert "+79165554433" in listed.output and "просил не звонить" in listed.output
    bad = CliRunner().invoke(main, ["notify", "dnc", "add", "12", "--database-url", url])
    assert bad.exit_code == 2 and "phone:" in bad.output
    assert run(url, "dnc", "remove", "+7 916 555 44 33").exit_code == 0
    gone = CliRunner().invoke(main, ["notify", "dnc", "remove", "+79165554433", "--database-url", url])
    assert gone.exit_code == 1 and "not on the do-not-call list" in gone.output
