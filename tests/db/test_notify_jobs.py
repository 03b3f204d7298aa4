"""Notification jobs against the real Postgres: migration round trip, creation (idempotent, also
under concurrency), each validation error naming its field, the do-not-call list, client cards
for unknown numbers, cancelling."""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from ivr.notify.jobs import InvalidTransition
from ivr.notify.templates import TemplateStore
from models.db import make_async_engine
from models.migrate import current_tables, downgrade, upgrade
from models.notifications import (
    JobRequest, JobValidationError, JobValidationErrors, add_do_not_call, apply_event, cancel_job, create_job,
    get_job, list_jobs,
)
from models.tables import Client, ClientPhone, NotificationJob

pytestmark = pytest.mark.db

TEMPLATE = "{{ address_name }}, здравствуйте. {{ sent_date }} мы отправили вам {{ documents }}. Нажмите 1."
VARS = {"sent_date": "07.02", "documents": "документы за декабрь"}
# for numbers with no client card yet (a potential client has no address_name)
NAMED = {**VARS, "address_name": "Пётр Николаевич"}


@pytest.fixture
def templates(tmp_path):
    (tmp_path / "docs_sent.txt.j2").write_text(TEMPLATE, encoding="utf-8")
    return TemplateStore(tmp_path, company_name="Эни")


def unique_phone() -> tuple[str, str]:
    digits = "916" + str(secrets.randbelow(10**7)).zfill(7)
    return f"8 ({digits[:3]}) {digits[3:6]}-{digits[6:8]}-{digits[8:]}", "+7" + digits


async def create(database_url, templates, **fields):
    engine = make_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            return await create_job(conn, JobRequest(**fields), templates=templates)
    finally:
        await engine.dispose()


async def expect_error(database_url, templates, field, **fields):
    with pytest.raises(JobValidationError) as err:
        await create(database_url, templates, **fields)
    assert err.value.field == field, str(err.value)
    return err.value


def test_migration_round_trip(pg_server_url):
    # Its own database: downgrading past 0004 re-adds the old CHECKs, which rows other tests
    # wrote (SMS jobs in state 'sent') would rightly violate.
    from tests.conftest import TEST_DB, drop_database, recreate_database
    database_url = recreate_database(pg_server_url, f"{TEST_DB}_migrations")
    upgrade(database_url)
    downgrade(database_url, "0003")
    assert "webhook_deliveries" not in current_tables(database_url)
    downgrade(database_url, "0002")
    assert "notification_jobs" not in current_tables(database_url)
    upgrade(database_url)
    assert {"notification_jobs", "notification_attempts", "do_not_call", "webhook_deliveries",
            "manager_tasks"} <= set(current_tables(database_url))
    drop_database(pg_server_url, f"{TEST_DB}_migrations")


async def test_create_for_unknown_number_makes_a_potential_client(database_url, templates):
    raw, e164 = unique_phone()
    err = await expect_error(database_url, templates, "variables.address_name", phone=raw, template="docs_sent",
                             variables=VARS)
    assert "has no address_name" in err.message
    job, created = await create(database_url, templates, phone=raw, template="docs_sent",
                                variables={**VARS, "address_name": "Пётр Николаевич"})
    assert created and job.status == "pending" and job.e164 == e164 and job.attempts_made == 0
    assert job.max_attempts == 5 and job.channel == "preference" and job.next_attempt_at == job.earliest_at
    assert "07.02 мы отправили вам документы за декабрь" in job.prompt_text
    engine = make_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            owner = (await conn.execute(select(ClientPhone.client_id).where(ClientPhone.e164 == e164))).scalar()
            stage = (await conn.execute(select(Client.stage).where(Client.id == owner))).scalar()
    finally:
        await engine.dispose()
    assert owner == job.client_id and stage == "potential"


async def test_create_by_client_id_uses_his_phone_and_name(database_url, templates):
    _, e164 = unique_phone()
    engine = make_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            client_id = (await conn.execute(Client.__table__.insert().values(
                full_name="Петров Пётр Николаевич", address_name="Пётр Николаевич").returning(Client.id))).scalar()
            await conn.execute(ClientPhone.__table__.insert().values(client_id=client_id, e164=e164))
    finally:
        await engine.dispose()
    job, created = await create(database_url, templates, client_id=client_id, template="docs_sent",
                                variables=VARS, channel="call")
    assert created and job.client_id == client_id and job.e164 == e164 and job.channel == "call"
    assert job.prompt_text.startswith("Пётр Николаевич, здравствуйте.")


async def test_same_external_id_returns_the_first_job(database_url, templates):
    raw, _ = unique_phone()
    ext = "crm-" + secrets.token_hex(6)
    first, created = await create(database_url, templates, phone=raw, template="docs_sent", variables=NAMED,
                                  external_id=ext)
    again, created_again = await create(database_url, templates, phone=raw, template="docs_sent",
                                        variables={"sent_date": "08.02", "documents": "другое"}, external_id=ext)
    assert created and not created_again and again.id == first.id and again.prompt_text == first.prompt_text


async def test_concurrent_creation_with_one_external_id_makes_one_job(database_url, templates):
    raw, _ = unique_phone()
    ext = "crm-" + secrets.token_hex(6)
    results = await asyncio.gather(*[
        create(database_url, templates, phone=raw, template="docs_sent", variables=NAMED, external_id=ext)
        for _ in range(8)])
    assert len({job.id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    engine = make_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            count = (await conn.execute(select(func.count()).select_from(NotificationJob)
                                        .where(NotificationJob.external_id == ext))).scalar()
    finally:
        await engine.dispose()
    assert count == 1


@pytest.mark.parametrize("field,fields", [
    ("phone", dict(phone="12")),
    ("phone", dict()),
    ("client_id", dict(client_id=2_000_000_000)),
    ("template", dict(template="no_such_template")),
    ("variables.sent_date", dict(variables={"documents": "x"})),
    ("variables.documents", dict(variables={"sent_date": "07.02", "documents": None})),
    ("channel", dict(channel="pigeon")),
    ("max_attempts", dict(max_attempts=0)),
    ("deadline_at", dict(earliest_at=datetime(2030, 1, 2, tzinfo=timezone.utc),
                         deadline_at=datetime(2030, 1, 1, tzinfo=timezone.utc))),
    ("deadline_at", dict(deadline_at=datetime.now(timezone.utc) - timedelta(hours=1))),
    ("external_id", dict(external_id="x" * 200)),
])
async def test_validation_errors_name_the_field(database_url, templates, field, fields):
    request = dict(phone=unique_phone()[0], template="docs_sent", variables=NAMED)
    if "client_id" in fields:
        request.pop("phone")
    if field == "phone" and not fields:
        request.pop("phone")
    request.update(fields)
    await expect_error(database_url, templates, field, **request)


async def test_do_not_call_number_refused(database_url, templates):
    raw, e164 = unique_phone()
    engine = make_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await add_do_not_call(conn, raw, "asked not to be called")
    finally:
        await engine.dispose()
    err = await expect_error(database_url, templates, "phone", phone=raw, template="docs_sent", variables=NAMED)
    assert "do-not-call" in err.message and e164 in err.message and "asked not to be called" in err.message


async def test_cancel_list_and_forbidden_transition(database_url, templates):
    job, _ = await create(database_url, templates, phone=unique_phone()[0], template="docs_sent", variables=NAMED)
    engine = make_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            cancelled = await cancel_job(conn, job.id)
        assert cancelled.status == "cancelled" and cancelled.result == "cancelled"
        assert cancelled.next_attempt_at is None
        async with engine.begin() as conn:
            with pytest.raises(InvalidTransition, match="is final"):
                await apply_event(conn, job.id, "claim")
        async with engine.connect() as conn:
            assert (await get_job(conn, job.id)).status == "cancelled"
            listed = await list_jobs(conn, status="cancelled", limit=1000)
            assert job.id in {j.id for j in listed}
            with pytest.raises(JobValidationError) as err:
                await list_jobs(conn, status="nope")
            assert err.value.field == "status"
    finally:
        await engine.dispose()


def test_request_from_json_reports_every_bad_field():
    with pytest.raises(JobValidationErrors) as err:
        JobRequest.from_json({"phone": 79161234567, "variables": [], "earliest_at": "tomorrow",
                              "max_attempts": "5", "colour": "red"})
    fields = {e.field for e in err.value.errors}
    assert fields == {"phone", "variables", "earliest_at", "max_attempts", "colour", "template"}
    request = JobRequest.from_json({"phone": "+79161234567", "template": "t", "deadline_at": "2030-01-01T10:00:00Z"})
    assert request.deadline_at == datetime(2030, 1, 1, 10, tzinfo=timezone.utc)


def test_cli_create_show_list_cancel(database_url, tmp_path):
    from click.testing import CliRunner

    from ivr.cli import main

    (tmp_path / "docs_sent.txt.j2").write_text(TEMPLATE, encoding="utf-8")
    runner = CliRunner()
    raw, e164 = unique_phone()
    ext = "cli-" + secrets.token_hex(6)
    args = ["notify", "create", "--database-url", database_url, "--templates", str(tmp_path), "--phone", raw,
            "--template", "docs_sent", "--var", "sent_date=07.02", "--var", "documents=документы",
            "--var", "address_name=Пётр Николаевич", "--external-id", ext, "--channel", "sms"]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    assert first.output.startswith("created: job ") and e164 in first.output
    job_id = int(first.output.split()[2])
    again = runner.invoke(main, args)
    assert again.exit_code == 0 and again.output.startswith(f"already exists: job {job_id}")

    missing = runner.invoke(main, ["notify", "create", "--database-url", database_url, "--templates", str(tmp_path),
                                   "--phone", raw, "--template", "docs_sent", "--var", "documents=x"])
    assert missing.exit_code == 2 and "variables.sent_date" in missing.output

    shown = runner.invoke(main, ["notify", "show", str(job_id), "--database-url", database_url])
    assert shown.exit_code == 0 and "pending" in shown.output and "attempts: 0" in shown.output
    listed = runner.invoke(main, ["notify", "list", "--status", "pending", "--limit", "1000",
                                  "--database-url", database_url])
    assert listed.exit_code == 0 and ext in listed.output
    cancelled = runner.invoke(main, ["notify", "cancel", str(job_id), "--database-url", database_url])
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.output
    twice = runner.invoke(main, ["notify", "cancel", str(job_id), "--database-url", database_url])
    assert twice.exit_code == 1 and "is final" in twice.output


async def test_barrier_defaults_to_the_templates_retry_policy(database_url, templates):
    from ivr.notify.retry import parse_policies

    policies = parse_policies("defaults:\n  barrier: 5\ntemplates:\n  docs_sent:\n    barrier: 3\n")
    engine = make_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            by_policy, _ = await create_job(conn, JobRequest(template="docs_sent", variables=NAMED,
                                                             phone=unique_phone()[0]),
                                            templates=templates, policies=policies)
            explicit, _ = await create_job(conn, JobRequest(template="docs_sent", variables=NAMED,
                                                            phone=unique_phone()[0], max_attempts=7),
                                           templates=templates, policies=policies)
    finally:
        await engine.dispose()
    assert (by_policy.max_attempts, explicit.max_attempts) == (3, 7)
