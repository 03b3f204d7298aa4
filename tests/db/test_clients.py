"""The client store against the real Postgres: CSV import, caller facts, potential clients, the
client card and ``ivr client show``."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select, text

from ivr.cli import main
from models.clients import caller_facts, client_card, create_potential_client, record_contact
from models.db import make_async_engine, make_engine
from models.phones import PhoneNumberError
from models.tables import Call, CallDirection, Client, ClientPhone, Contact, Department, Operator
from routing.facts import CallerFacts

pytestmark = pytest.mark.db

TAG = secrets.token_hex(3)


def unique_phone() -> str:
    """(raw Russian format, E.164) of a mobile number no other test uses."""
    digits = "916" + str(secrets.randbelow(10**7)).zfill(7)
    return f"8 ({digits[:3]}) {digits[3:6]}-{digits[6:8]}-{digits[8:]}", "+7" + digits


def unique_extension() -> str:
    return str(10**6 + secrets.randbelow(9 * 10**6))


@dataclass
class Org:
    current: str            # department codes
    active: str
    manager: str            # extensions
    manager_name: str
    active1: str
    active2: str
    outsider: str           # an operator of another department
    ids: dict


@pytest.fixture(scope="module")
def org(database_url) -> Org:
    current, active = f"cs_{TAG}", f"as_{TAG}"
    exts = [unique_extension() for _ in range(4)]
    engine = make_engine(database_url)
    ids: dict = {}
    with engine.begin() as conn:
        dept = {code: conn.execute(insert(Department).values(code=code, name=name).returning(Department.id)).scalar_one()
                for code, name in ((current, "Текущие продажи"), (active, "Активные продажи"))}
        for ext, name, code in ((exts[0], "Ольга Менеджерова", current), (exts[1], "Антон Активный", active),
                                (exts[2], "Борис Активный", active), (exts[3], "Виктор Текущий", current)):
            ids[ext] = conn.execute(insert(Operator).values(name=name, extension=ext, department_id=dept[code])
                                    .returning(Operator.id)).scalar_one()
    engine.dispose()
    return Org(current, active, exts[0], "Ольга Менеджерова", exts[1], exts[2], exts[3], ids)


def run_cli(*args: str):
    return CliRunner().invoke(main, list(args))


def import_csv(database_url: str, tmp_path: Path, body: str, *extra: str, encoding: str = "utf-8", name="c.csv"):
    path = tmp_path / name
    path.write_bytes(body.encode(encoding))
    return run_cli("clients", "import", str(path), "--database-url", database_url, *extra)


def db_scalar(database_url: str, sql: str, **params):
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()
    finally:
        engine.dispose()


async def facts(database_url: str, e164: str | None, org: Org, **kwargs) -> CallerFacts:
    engine = make_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return await caller_facts(conn, e164, active_sales_department=org.active, **kwargs)
    finally:
        await engine.dispose()


async def add_contact(database_url: str, client_id: int, operator_id: int | None, direction: str, days_ago: float,
                      call_uid: str | None = None) -> int:
    engine = make_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            return await record_contact(conn, client_id, operator_id, direction,
                                        datetime.now(timezone.utc) - timedelta(days=days_ago), call_uid, "answered")
    finally:
        await engine.dispose()


def header() -> str:
    return ("external_id;full_name;address_name;company;segment;deals_count;assigned_operator;department;timezone;"
            "notify_channel;phones;last_active_sales_call;last_active_sales_manager\n")


# --- import -------------------------------------------------------------------------------------------
def test_import_creates_then_reimport_updates_without_duplicates(database_url, org, tmp_path):
    raw1, e1 = unique_phone()
    raw2, e2 = unique_phone()
    raw3, e3 = unique_phone()
    x = f"imp-{secrets.token_hex(4)}"
    body = header() + (
        f"{x}-1;Соколов Пётр Николаевич;Пётр Николаевич;ООО «СтройМаркет»;крупный опт;42;{org.manager};"
        f"{org.current};Europe/Moscow;звонок;{raw1}, {raw2};;\n"
        f"{x}-2;Смирнова Ольга;Ольга Игоревна;;опт;0;;{org.current};Asia/Yekaterinburg;смс;{raw3};"
        f"2025-05-14 11:30;{org.active1}\n"
        f"{x}-3;Плохой Менеджер;;;розница;0;{unique_extension()};{org.current};;;{unique_phone()[0]};;\n"
        f"{x}-4;Плохой Телефон;;;розница;0;;;;;8 (916) 12-34;;\n"
    )
    first = import_csv(database_url, tmp_path, body)
    assert first.exit_code == 0, first.output
    assert "created 2, updated 0, skipped 2" in first.output
    assert "line 4: assigned_operator: no operator with extension" in first.output
    assert "line 5: phones: phone number '8 (916) 12-34' is not a valid number" in first.output

    engine = make_engine(database_url)
    with engine.connect() as conn:
        sokolov = conn.execute(select(Client).where(Client.external_id == f"{x}-1")).one()
        assert (sokolov.full_name, sokolov.address_name, sokolov.company, sokolov.segment, sokolov.stage,
                sokolov.deals_count, sokolov.assigned_operator_id, sokolov.notify_channel) == (
            "Соколов Пётр Николаевич", "Пётр Николаевич", "ООО «СтройМаркет»", "large_wholesale", "client", 42,
            org.ids[org.manager], "call")
        assert sorted(conn.execute(select(ClientPhone.e164).where(ClientPhone.client_id == sokolov.id)).scalars()) \
            == sorted([e1, e2])
        smirnova_id = conn.execute(select(Client.id).where(Client.external_id == f"{x}-2")).scalar_one()
        contact = conn.execute(select(Contact).where(Contact.client_id == smirnova_id)).one()
        assert (contact.direction, contact.operator_id) == (CallDirection.outbound, org.ids[org.active1])
        assert contact.at == datetime(2025, 5, 14, 6, 30, tzinfo=timezone.utc)  # 11:30 Yekaterinburg
        assert conn.execute(select(func.count()).select_from(Client)
                            .where(Client.external_id.like(f"{x}-%"))).scalar_one() == 2

    again = import_csv(database_url, tmp_path, body)
    assert again.exit_code == 0, again.output
    assert "created 0, updated 2, skipped 2" in again.output
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Client)
                            .where(Client.external_id.like(f"{x}-%"))).scalar_one() == 2
        assert conn.execute(select(func.count()).select_from(ClientPhone)
                            .where(ClientPhone.e164.in_([e1, e2, e3]))).scalar_one() == 3
        assert conn.execute(select(func.count()).select_from(Contact)
                            .where(Contact.client_id == smirnova_id)).scalar_one() == 1
    engine.dispose()


def test_reimport_changes_fields_moves_a_phone_and_drops_an_unlisted_one(database_url, org, tmp_path):
    raw1, e1 = unique_phone()
    raw2, e2 = unique_phone()
    x = f"mv-{secrets.token_hex(4)}"
    first = import_csv(database_url, tmp_path, header() + (
        f"{x}-a;Иванов Иван;;;опт;1;;;;;{raw1} | {raw2};;\n"
        f"{x}-b;Петров Пётр;;;опт;1;;;;;;;\n"))
    assert "created 2, updated 0, skipped 0" in first.output, first.output
    second = import_csv(database_url, tmp_path, header() + (
        f"{x}-a;Иванов Иван Иванович;;;мелкий опт;2;;;;;{raw1};;\n"
        f"{x}-b;Петров Пётр;;;опт;1;;;;;{raw2};;\n"))
    assert "created 0, updated 2, skipped 0" in second.output, second.output
    assert f"phones: {e2} moved from client '{x}-a' to client '{x}-b'" in second.output
    owner = "SELECT c.external_id FROM client_phones p JOIN clients c ON c.id = p.client_id WHERE p.e164 = :e"
    assert db_scalar(database_url, owner, e=e1) == f"{x}-a"
    assert db_scalar(database_url, owner, e=e2) == f"{x}-b"
    assert db_scalar(database_url, "SELECT full_name || '/' || segment || '/' || deals_count FROM clients "
                                   "WHERE external_id = :x", x=f"{x}-a") == "Иванов Иван Иванович/small_wholesale/2"

    third = import_csv(database_url, tmp_path, header() + f"{x}-a;Иванов Иван Иванович;;;;2;;;;;;;\n")
    assert "updated 1" in third.output
    assert db_scalar(database_url, "SELECT count(*) FROM client_phones WHERE e164 = :e", e=e1) == 0


def test_dry_run_writes_nothing(database_url, org, tmp_path):
    x = f"dry-{secrets.token_hex(4)}"
    result = import_csv(database_url, tmp_path, header() + f"{x};Сухов;;;;0;;;;;{unique_phone()[0]};;\n",
                        "--dry-run")
    assert result.exit_code == 0 and "created 1, updated 0, skipped 0" in result.output
    assert "dry run" in result.output
    assert db_scalar(database_url, "SELECT count(*) FROM clients WHERE external_id = :x", x=x) == 0


def test_cp1251_comma_file_with_russian_header(database_url, org, tmp_path):
    raw, e164 = unique_phone()
    x = f"cp-{secrets.token_hex(4)}"
    body = f'Код клиента,ФИО,Сегмент,Канал,Телефоны\n{x},Фёдорова Наталья,Мелкий опт,СМС,"{raw}, 8 (495) 1{e164[-6:]}"\n'
    result = import_csv(database_url, tmp_path, body, encoding="cp1251")
    assert result.exit_code == 0, result.output
    assert "cp1251, delimiter ','" in result.output and "created 1" in result.output
    assert db_scalar(database_url, "SELECT full_name || '/' || notify_channel FROM clients WHERE external_id = :x",
                     x=x) == "Фёдорова Наталья/sms"


def test_sql_looking_and_hostile_values_are_stored_as_text(database_url, org, tmp_path):
    raw, e164 = unique_phone()
    x = f"sql-{secrets.token_hex(4)}"
    name = "Robert'); DROP TABLE clients;--"
    body = header() + f'{x};"{name}";;"1 OR 1=1; --";;0;;;;;{raw};;\n' + \
        f"{x}-2;Злой;;;;0;;;;;+7 916 000-00-00'; DELETE FROM clients;--;;\n"
    result = import_csv(database_url, tmp_path, body)
    assert result.exit_code == 0, result.output
    assert "created 1, updated 0, skipped 1" in result.output
    assert "line 3: phones:" in result.output
    assert db_scalar(database_url, "SELECT full_name FROM clients WHERE external_id = :x", x=x) == name
    assert db_scalar(database_url, "SELECT company FROM clients WHERE external_id = :x", x=x) == "1 OR 1=1; --"
    assert db_scalar(database_url, "SELECT count(*) FROM clients") >= 1


def test_unusable_file_is_a_clear_error(database_url, tmp_path):
    result = import_csv(database_url, tmp_path, "name;phone\nИванов;89161234567\n")
    assert result.exit_code == 1
    assert "header has no external_id column" in result.output and "Traceback" not in result.output


def test_dead_database_is_a_clear_error(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("external_id;full_name\nC-1;Иванов\n")
    result = run_cli("clients", "import", str(path), "--database-url", "postgresql://ivr:s3cret@127.0.0.1:1/ivr")
    assert result.exit_code == 1 and "unreachable" in result.output and "s3cret" not in result.output


async def test_import_adopts_potential_client_history_is_kept(database_url, org, tmp_path):
    raw, e164 = unique_phone()
    engine = make_async_engine(database_url)
    async with engine.begin() as conn:
        card_id = await create_potential_client(conn, e164, "Иван")
        await record_contact(conn, card_id, org.ids[org.active1], "outbound", datetime.now(timezone.utc), None, "ok")
    await engine.dispose()
    x = f"adopt-{secrets.token_hex(4)}"
    result = await asyncio.to_thread(import_csv, database_url, tmp_path,
                                     header() + f"{x};Иван Кузнецов;;;розница;0;;;;;{raw};;\n")
    assert "created 0, updated 1, skipped 0" in result.output, result.output
    assert f"card #{card_id} of an earlier caller" in result.output
    assert db_scalar(database_url, "SELECT id FROM clients WHERE external_id = :x", x=x) == card_id
    assert db_scalar(database_url, "SELECT count(*) FROM contacts WHERE client_id = :c", c=card_id) == 1


# --- caller facts ---------------------------------------------------------------------------------
async def test_caller_facts_none_and_unknown_and_hostile(database_url, org):
    assert await facts(database_url, None, org) == CallerFacts(e164=None)
    _, e164 = unique_phone()
    unknown = await facts(database_url, e164, org)
    assert unknown == CallerFacts(e164=e164) and not unknown.known
    hostile = "'; DROP TABLE clients;--"
    assert await facts(database_url, hostile, org) == CallerFacts(e164=hostile)
    assert db_scalar(database_url, "SELECT count(*) FROM client_phones") >= 0


async def test_caller_facts_of_an_imported_client_matched_by_any_format(database_url, org, tmp_path):
    raw, e164 = unique_phone()
    x = f"cf-{secrets.token_hex(4)}"
    result = await asyncio.to_thread(import_csv, database_url, tmp_path, header() + (
        f"{x};Соколов Пётр Николаевич;Пётр Николаевич;ООО «СтройМаркет»;крупный опт;42;{org.manager};"
        f"{org.current};Europe/Moscow;звонок;{raw};;\n"))
    assert "created 1" in result.output, result.output
    assert raw.startswith("8 (")
    got = await facts(database_url, e164, org)
    assert got == CallerFacts(
        e164=e164, client_id=got.client_id, full_name="Соколов Пётр Николаевич", address_name="Пётр Николаевич",
        company="ООО «СтройМаркет»", segment="large_wholesale", stage="client", deals_count=42,
        department=org.current, assigned_operator=org.manager, active_sales_manager=None)
    assert got.client_id is not None


async def test_caller_facts_of_a_potential_client(database_url, org):
    _, e164 = unique_phone()
    engine = make_async_engine(database_url)
    async with engine.begin() as conn:
        client_id = await create_potential_client(conn, e164, "Мария Петровна")
    await engine.dispose()
    assert await facts(database_url, e164, org) == CallerFacts(
        e164=e164, client_id=client_id, full_name="Мария Петровна", stage="potential", deals_count=0)


async def _client_with_deals(database_url: str, deals: int) -> tuple[int, str]:
    _, e164 = unique_phone()
    engine = make_async_engine(database_url)
    async with engine.begin() as conn:
        client_id = await create_potential_client(conn, e164, None)
        await conn.execute(text("UPDATE clients SET deals_count = :d WHERE id = :c"), {"d": deals, "c": client_id})
    await engine.dispose()
    return client_id, e164


async def test_active_sales_manager_is_the_latest_outbound_caller_from_active_sales(database_url, org):
    client_id, e164 = await _client_with_deals(database_url, 0)
    await add_contact(database_url, client_id, org.ids[org.active1], "outbound", 20)
    await add_contact(database_url, client_id, org.ids[org.active2], "outbound", 10)   # the latest one
    await add_contact(database_url, client_id, org.ids[org.active1], "inbound", 1)     # not outbound
    await add_contact(database_url, client_id, org.ids[org.outsider], "outbound", 2)   # not active sales
    await add_contact(database_url, client_id, None, "outbound", 0.5)                  # the robot
    got = await facts(database_url, e164, org)
    assert got.active_sales_manager == org.active2 and got.client_id == client_id
    # another department code: nobody
    engine = make_async_engine(database_url)
    async with engine.connect() as conn:
        other = await caller_facts(conn, e164, active_sales_department=org.current)
    await engine.dispose()
    assert other.active_sales_manager == org.outsider


async def test_no_active_sales_manager_once_he_has_deals(database_url, org):
    client_id, e164 = await _client_with_deals(database_url, 1)
    await add_contact(database_url, client_id, org.ids[org.active1], "outbound", 5)
    assert (await facts(database_url, e164, org)).active_sales_manager is None
    # a higher threshold ("first deal" means fewer than 2 here) brings him back
    assert (await facts(database_url, e164, org, first_deal_threshold=2)).active_sales_manager == org.active1


async def test_no_active_sales_manager_outside_the_window(database_url, org):
    client_id, e164 = await _client_with_deals(database_url, 0)
    await add_contact(database_url, client_id, org.ids[org.active1], "outbound", 100)
    assert (await facts(database_url, e164, org)).active_sales_manager is None
    assert (await facts(database_url, e164, org, active_sales_window_days=120)).active_sales_manager == org.active1


async def test_caller_facts_is_one_index_lookup(database_url, org):
    """The plan uses the unique phone index and the contacts (client_id, at) index, no seq scan
    of clients or contacts (enable_seqscan off: an index must exist for every step)."""
    from models.clients import caller_facts_query
    from sqlalchemy.dialects import postgresql

    stmt = caller_facts_query("+79160000000", active_sales_department=org.active, first_deal_threshold=1,
                              since=datetime.now(timezone.utc))
    engine = make_async_engine(database_url)
    async with engine.connect() as conn:
        await conn.execute(text("SET enable_seqscan = off"))
        compiled = stmt.compile(dialect=postgresql.psycopg.dialect())
        params = {k: getattr(v, "value", v) for k, v in compiled.params.items()}
        plan = "\n".join((await conn.exec_driver_sql("EXPLAIN " + str(compiled), params)).scalars())
    await engine.dispose()
    assert "uq_client_phones_e164" in plan and "ix_contacts_client_at" in plan
    assert "Seq Scan on clients" not in plan and "Seq Scan on contacts" not in plan


# --- potential clients --------------------------------------------------------------------------
async def test_create_potential_client_twice_concurrently_makes_one_client(database_url):
    _, e164 = unique_phone()
    engine = make_async_engine(database_url)

    async def create():
        async with engine.begin() as conn:
            return await create_potential_client(conn, e164, None)

    ids = await asyncio.gather(create(), create(), create())
    assert len(set(ids)) == 1
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(ClientPhone)
                                   .where(ClientPhone.e164 == e164))).scalar_one() == 1
        assert (await conn.execute(select(func.count()).select_from(Client)
                                   .where(Client.full_name.like(f"%{e164[-2:]}")))).scalar_one() >= 1
        names = (await conn.execute(select(Client.full_name).where(Client.id == ids[0]))).scalar_one()
    await engine.dispose()
    assert names.startswith("Новый клиент +7 916 ")


async def test_create_potential_client_loser_of_the_race_returns_the_winner(database_url):
    """Deterministic race: the first transaction holds its uncommitted phone row while the
    second one inserts; the second waits, then returns the first one's id and leaves no client."""
    _, e164 = unique_phone()
    engine = make_async_engine(database_url)
    before = db_scalar(database_url, "SELECT count(*) FROM clients")
    async with engine.connect() as first:
        tx = await first.begin()
        winner = await create_potential_client(first, e164, "Первый")

        async def second():
            async with engine.begin() as conn:
                return await create_potential_client(conn, e164, "Второй")

        loser = asyncio.create_task(second())
        await asyncio.sleep(0.3)
        assert not loser.done()          # blocked on the phone row of the first transaction
        await tx.commit()
        assert await asyncio.wait_for(loser, 5) == winner
    await engine.dispose()
    assert db_scalar(database_url, "SELECT count(*) FROM clients") == before + 1
    assert db_scalar(database_url, "SELECT full_name FROM clients WHERE id = :i", i=winner) == "Первый"


async def test_create_potential_client_hostile_input(database_url):
    _, e164 = unique_phone()
    engine = make_async_engine(database_url)
    async with engine.begin() as conn:
        client_id = await create_potential_client(conn, e164, "x'); DROP TABLE clients;--\x00")
        with pytest.raises(PhoneNumberError):
            await create_potential_client(conn, "'; DROP TABLE client_phones;--", "Иван")
    async with engine.connect() as conn:
        name = (await conn.execute(select(Client.full_name).where(Client.id == client_id))).scalar_one()
    await engine.dispose()
    assert name.startswith("Новый клиент +7 916")


# --- the card ---------------------------------------------------------------------------------
def _call(uid: str, e164: str, when: datetime, **kw) -> dict:
    return dict(call_uid=uid, direction=CallDirection.inbound, from_number=e164.lstrip("+"), from_e164=e164,
                to_number="74951234567", started_at=when, ended_at=when + timedelta(minutes=2), **kw)


def test_client_show_prints_card_and_history_newest_first(database_url, org, tmp_path):
    raw, e164 = unique_phone()
    raw2, e164_2 = unique_phone()
    x = f"show-{secrets.token_hex(4)}"
    imported = import_csv(database_url, tmp_path, header() + (
        f"{x};Соколов Пётр Николаевич;Пётр Николаевич;ООО «СтройМаркет»;крупный опт;42;{org.manager};"
        f"{org.current};Asia/Omsk;смс;{raw}|{raw2};2025-05-14 11:30;{org.active1}\n"))
    assert "created 1" in imported.output, imported.output
    now = datetime.now(timezone.utc)
    engine = make_engine(database_url)
    with engine.begin() as conn:
        client_id = conn.execute(select(Client.id).where(Client.external_id == x)).scalar_one()
        conn.execute(insert(Call).values(**_call(f"old-{x}", e164, now - timedelta(days=3), result="answered",
                                                 answered_by_operator_id=org.ids[org.manager])))
        conn.execute(insert(Call).values(**_call(f"new-{x}", e164_2, now - timedelta(hours=1), result="abandoned")))
    card = client_card(engine, raw)
    engine.dispose()
    assert card.id == client_id and card.phones == (e164, e164_2)
    assert [c.call_uid for c in card.calls] == [f"new-{x}", f"old-{x}"]
    assert [c.operator_extension for c in card.contacts] == [org.active1]

    shown = run_cli("client", "show", f"+7 {e164[2:5]} {e164[5:8]}-{e164[8:10]}-{e164[10:]}",
                    "--database-url", database_url)
    assert shown.exit_code == 0, shown.output
    out = shown.output
    for expected in ("Соколов Пётр Николаевич", "address as:    Пётр Николаевич", "ООО «СтройМаркет»",
                     "large_wholesale (крупный опт)", "deals:         42",
                     f"manager:       {org.manager_name} ({org.manager})", f"({org.current})", "Asia/Omsk",
                     "notify by:     sms", f"phones:        {e164}, {e164_2}", "1 contacts, 2 calls"):
        assert expected in out, expected
    newest, middle, oldest = out.index(f"new-{x}"), out.index(f"old-{x}"), out.index("contact outbound")
    assert newest < middle < oldest


def test_client_show_unknown_and_malformed_phone(database_url):
    _, e164 = unique_phone()
    unknown = run_cli("client", "show", e164, "--database-url", database_url)
    assert unknown.exit_code == 1 and f"no client with phone {e164}" in unknown.output
    malformed = run_cli("client", "show", "8 (916) 12-34", "--database-url", database_url)
    assert malformed.exit_code == 2 and "is not a valid number" in malformed.output
    hostile = run_cli("client", "show", "'; DROP TABLE clients;--", "--database-url", database_url)
    assert hostile.exit_code == 2 and "characters other than digits" in hostile.output
