"""The web console against the real Postgres, through aiohttp's test client: login, sessions,
CSRF, roles, operator controls (same records as the CLI), the rules editor, the client card."""

from __future__ import annotations

import asyncio
import re
import secrets
from datetime import datetime, timedelta, timezone

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from sqlalchemy import func, insert, select, update

from ivr.cli import main
from ivr.web import auth
from ivr.web.app import make_app
from models.db import make_async_engine
from models.operators import add_operator, operator_events
from models.tables import (Call, CallDirection, Client, ClientPhone, Department, OperatorStatus, RulesetVersion,
                           WebSession)
from routing.loader import DEFAULT_FILE

pytestmark = pytest.mark.db

PASSWORD = "correct horse battery"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
async def engine(database_url):
    eng = make_async_engine(database_url)
    yield eng
    await eng.dispose()


@pytest.fixture
async def app_client(engine):
    async with TestClient(TestServer(make_app(engine))) as client:
        yield client


@pytest.fixture
async def make_client(engine):
    """More browsers (separate cookie jars) on the same app."""
    app = make_app(engine)
    clients = []

    async def make() -> TestClient:
        client = TestClient(TestServer(app)) if not clients else TestClient(clients[0].server)
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        await client.close()


def _ext() -> str:
    return str(10_000 + secrets.randbelow(89_999_999))


async def _department(engine) -> str:
    code = "w" + secrets.token_hex(4)
    async with engine.begin() as conn:
        await conn.execute(insert(Department).values(code=code, name=f"Отдел {code}"))
    return code


async def _operator(engine, dep: str) -> str:
    ext = _ext()
    async with engine.begin() as conn:
        await add_operator(conn, f"Оператор {ext}", ext, dep)
    return ext


async def _user(engine, role: str, **kw) -> str:
    login = f"{role}-{secrets.token_hex(4)}"
    async with engine.begin() as conn:
        await auth.add_user(conn, login, PASSWORD, role, **kw)
    return login


async def _login(client: TestClient, login: str, password: str = PASSWORD, *, token: str | None = None):
    page = await client.get("/login")
    assert page.status == 200
    csrf = CSRF_RE.search(await page.text()).group(1)
    return await client.post("/login", data={"login": login, "password": password,
                                             "csrf_token": csrf if token is None else token},
                             allow_redirects=False)


async def _cli(*args: str):
    """The real `ivr` command (it runs its own event loop: in a thread)."""
    return await asyncio.to_thread(CliRunner().invoke, main, list(args))


async def _csrf(client: TestClient, path: str = "/operators") -> str:
    page = await client.get(path)
    assert page.status == 200, await page.text()
    return CSRF_RE.search(await page.text()).group(1)


# --- login, sessions ---------------------------------------------------------------------------------
async def test_login_sets_a_strict_httponly_session_and_logout_ends_it(engine, app_client):
    login = await _user(engine, "admin")
    assert (await app_client.get("/operators", allow_redirects=False)).headers["Location"] == "/login"
    response = await _login(app_client, login)
    assert response.status == 303 and response.headers["Location"] == "/"
    cookie = next(v for v in response.headers.getall("Set-Cookie") if v.startswith("ivr_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    async with engine.connect() as conn:
        row = (await conn.execute(select(WebSession).where(WebSession.id == auth.session_key(token)))).first()
        assert row is not None and await conn.scalar(
            select(func.count()).select_from(WebSession).where(WebSession.id == token)) == 0  # only its hash
    expires = row.expires_at - datetime.now(timezone.utc)
    assert timedelta(hours=7, minutes=58) < expires <= timedelta(hours=8)
    home = await app_client.get("/", allow_redirects=False)
    assert home.status == 303 and home.headers["Location"] in ("/wallboard", "/operators")
    csrf = await _csrf(app_client)
    out = await app_client.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)
    assert out.status == 303 and out.headers["Location"] == "/login"
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(WebSession)
                                 .where(WebSession.id == auth.session_key(token))) == 0
    assert (await app_client.get("/operators", allow_redirects=False)).status == 303


async def test_bad_password_and_unknown_login_get_the_same_generic_error_then_a_rate_limit(engine, app_client):
    login = await _user(engine, "admin")
    wrong = await _login(app_client, login, "wrong password!")
    unknown = await _login(app_client, "nobody-" + secrets.token_hex(3), PASSWORD)
    for response in (wrong, unknown):
        assert response.status == 401
        assert auth.GENERIC_LOGIN_ERROR in await response.text()
        assert not any(v.startswith("ivr_session=") for v in response.headers.getall("Set-Cookie", []))
    for _ in range(4):
        assert (await _login(app_client, login, "wrong password!")).status == 401
    limited = await _login(app_client, login)   # the right password, but too many failures
    assert limited.status == 429 and "Повторите через" in await limited.text()


async def test_login_form_needs_its_csrf_token(engine, app_client):
    login = await _user(engine, "admin")
    response = await _login(app_client, login, token="forged")
    assert response.status == 403


async def test_expired_session_goes_to_login_and_api_gets_401(engine, app_client):
    login = await _user(engine, "admin")
    response = await _login(app_client, login)
    token = next(v for v in response.headers.getall("Set-Cookie") if v.startswith("ivr_session=")) \
        .split(";")[0].split("=", 1)[1]
    key = auth.session_key(token)
    # sliding: a session used after an hour is extended to 8 h from now
    async with engine.begin() as conn:
        await conn.execute(update(WebSession).where(WebSession.id == key)
                           .values(expires_at=func.now() + timedelta(hours=1)))
    assert (await app_client.get("/operators")).status == 200
    async with engine.connect() as conn:
        expires = await conn.scalar(select(WebSession.expires_at).where(WebSession.id == key))
    assert expires - datetime.now(timezone.utc) > timedelta(hours=7, minutes=58)
    # expired: back to the login page; the API and event streams get a JSON 401
    async with engine.begin() as conn:
        await conn.execute(update(WebSession).where(WebSession.id == key)
                           .values(expires_at=func.now() - timedelta(seconds=1)))
    page = await app_client.get("/operators", allow_redirects=False)
    assert page.status == 303 and page.headers["Location"] == "/login"
    api = await app_client.get("/api/anything")
    assert api.status == 401 and (await api.json())["error"] == "not logged in"
    stream = await app_client.get("/operators", headers={"Accept": "text/event-stream"})
    assert stream.status == 401
    async with engine.connect() as conn:   # the expired row is gone
        assert await conn.scalar(select(func.count()).select_from(WebSession).where(WebSession.id == key)) == 0


# --- roles ---------------------------------------------------------------------------------------------
async def test_manager_cannot_reach_rules_and_sees_only_himself(engine, make_client):
    dep = await _department(engine)
    mine, other = await _operator(engine, dep), await _operator(engine, dep)
    login = await _user(engine, "manager", operator_extension=mine)
    client = await make_client()
    assert (await _login(client, login)).status == 303
    rules = await client.get("/rules")
    assert rules.status == 403 and "недоступна" in await rules.text()
    csrf = await _csrf(client)
    assert (await client.post("/rules/apply", data={"csrf_token": csrf, "source": "x"})).status == 403
    page = await (await client.get("/operators")).text()
    assert f'data-extension="{mine}"' in page and f'data-extension="{other}"' not in page
    assert "/rules" not in page   # no menu entry either
    denied = await client.post(f"/operators/{other}/pause", data={"csrf_token": csrf, "reason": "x"})
    assert denied.status == 403
    async with engine.connect() as conn:
        assert [e.event for e in await operator_events(conn, other)] == ["login"]


async def test_head_sees_his_department_only(engine, make_client):
    dep, other_dep = await _department(engine), await _department(engine)
    mine, foreign = await _operator(engine, dep), await _operator(engine, other_dep)
    login = await _user(engine, "head", department_code=dep)
    client = await make_client()
    await _login(client, login)
    page = await (await client.get("/operators")).text()
    assert f'data-extension="{mine}"' in page and f'data-extension="{foreign}"' not in page
    assert (await client.get("/rules")).status == 403


# --- operator controls -----------------------------------------------------------------------------------
async def test_pause_from_the_page_writes_the_same_records_as_the_cli(engine, make_client, database_url):
    dep = await _department(engine)
    by_web, by_cli = await _operator(engine, dep), await _operator(engine, dep)
    client = await make_client()
    await _login(client, await _user(engine, "admin"))
    csrf = await _csrf(client)

    # no CSRF token, or a wrong one: refused, nothing recorded
    assert (await client.post(f"/operators/{by_web}/pause", data={"reason": "обед"})).status == 403
    assert (await client.post(f"/operators/{by_web}/pause",
                              data={"reason": "обед", "csrf_token": "x" + csrf[1:]})).status == 403
    async with engine.connect() as conn:
        assert [e.event for e in await operator_events(conn, by_web)] == ["login"]

    done = await client.post(f"/operators/{by_web}/pause", data={"reason": "обед", "csrf_token": csrf},
                             allow_redirects=False)
    assert done.status == 303 and "done=" in done.headers["Location"]
    page = await (await client.get(done.headers["Location"])).text()
    assert "пауза" in page and "обед" in page
    cli = await _cli("operator", "pause", by_cli, "--reason", "обед", "--database-url", database_url)
    assert cli.exit_code == 0, cli.output

    for action in ("rejoin", "logout", "login"):
        response = await client.post(f"/operators/{by_web}/{action}", data={"csrf_token": csrf})
        assert response.status == 200
    for command in ("rejoin", "logout", "login"):
        cli = await _cli("operator", command, by_cli, "--database-url", database_url)
        assert cli.exit_code == 0, cli.output

    async with engine.connect() as conn:
        web_events = await operator_events(conn, by_web)
        cli_events = await operator_events(conn, by_cli)
    shape = lambda events: [(e.event, e.status, e.reason) for e in events]  # noqa: E731
    assert shape(web_events) == shape(cli_events) == [
        ("login", OperatorStatus.available, None), ("pause", OperatorStatus.paused, "обед"),
        ("rejoin", OperatorStatus.available, None), ("logout", OperatorStatus.logged_out, None),
        ("login", OperatorStatus.available, None)]
    assert [e.cause for e in web_events[1:]] == ["web"] * 4
    assert [e.cause for e in cli_events[1:]] == ["cli"] * 4


async def test_pause_without_reason_gets_the_web_default(engine, make_client):
    dep = await _department(engine)
    ext = await _operator(engine, dep)
    client = await make_client()
    await _login(client, await _user(engine, "manager", operator_extension=ext))
    csrf = await _csrf(client)
    assert (await client.post(f"/operators/{ext}/pause", data={"csrf_token": csrf})).status == 200
    async with engine.connect() as conn:
        last = (await operator_events(conn, ext))[-1]
    assert (last.event, last.reason, last.cause) == ("pause", "пауза из веб-интерфейса", "web")


# --- rules editor ----------------------------------------------------------------------------------------
async def _versions(engine) -> list:
    async with engine.connect() as conn:
        return (await conn.execute(select(RulesetVersion.id, RulesetVersion.applied_by, RulesetVersion.active)
                                   .order_by(RulesetVersion.id))).all()


async def test_bad_rule_shows_its_error_in_place_and_is_not_applied(engine, make_client):
    client = await make_client()
    await _login(client, await _user(engine, "admin"))
    csrf = await _csrf(client, "/rules")
    before = await _versions(engine)
    source = DEFAULT_FILE.read_text(encoding="utf-8")
    bad = source.replace("strategy: longest_idle", "strategy: loudest_first", 1)
    assert bad != source
    line = bad[:bad.index("loudest_first")].count("\n") + 1
    for action in ("check", "apply"):
        response = await client.post(f"/rules/{action}", data={"csrf_token": csrf, "source": bad})
        assert response.status == 422
        text = await response.text()
        assert f'href="#line-{line}" data-line="{line}">строка {line}</a>' in text and "loudest_first" in text
        assert f'id="line-{line}" class="bad"' in text   # highlighted in the numbered text
    assert await _versions(engine) == before
    syntax = await client.post("/rules/check", data={"csrf_token": csrf, "source": "rules: [\n  - {"})
    assert syntax.status == 422 and "YAML syntax error" in await syntax.text()


async def test_good_rule_is_applied_as_a_new_version_with_diff_and_can_be_rolled_back(engine, make_client):
    login = await _user(engine, "admin")
    client = await make_client()
    await _login(client, login)
    csrf = await _csrf(client, "/rules")
    source = DEFAULT_FILE.read_text(encoding="utf-8")
    checked = await client.post("/rules/check", data={"csrf_token": csrf, "source": source})
    assert checked.status == 200 and "Ошибок нет" in await checked.text()
    first = await client.post("/rules/apply", data={"csrf_token": csrf, "source": source.replace("\n", "\r\n")})
    assert first.status == 200 and "Применена версия" in await first.text()
    changed = source.replace("ring_timeout: 15", "ring_timeout: 17", 1)
    if changed == source:
        changed = source + "\n# edited on the web\n"
    second = await client.post("/rules/apply", data={"csrf_token": csrf, "source": changed})
    text = await second.text()
    assert second.status == 200 and "Применена версия" in text and 'id="diff"' in text
    versions = await _versions(engine)
    assert versions[-1].applied_by == f"web:{login}" and versions[-1].active
    assert not versions[-2].active
    page = await (await client.get("/rules")).text()
    assert "Часы работы отделов" in page and f"/rules/rollback/{versions[-2].id}" in page
    again = await client.post("/rules/apply", data={"csrf_token": csrf, "source": changed})
    assert "Без изменений" in await again.text()
    back = await client.post(f"/rules/rollback/{versions[-2].id}", data={"csrf_token": csrf})
    assert back.status == 200 and "снова действует" in await back.text()
    assert {v.id for v in await _versions(engine) if v.active} == {versions[-2].id}


# --- client card -------------------------------------------------------------------------------------------
async def test_client_search_by_name_and_phone_shows_the_card_with_calls_both_ways(engine, make_client):
    e164 = "+7916" + str(secrets.randbelow(10**7)).zfill(7)
    surname = "Вебов" + secrets.token_hex(3)
    now = datetime.now(timezone.utc)
    async with engine.begin() as conn:
        client_id = (await conn.execute(insert(Client).values(full_name=f"{surname} Пётр", company="ООО Ромашка")
                                        .returning(Client.id))).scalar_one()
        await conn.execute(insert(ClientPhone).values(client_id=client_id, e164=e164))
        await conn.execute(insert(Call).values(
            call_uid="in-" + secrets.token_hex(6), direction=CallDirection.inbound, from_number=e164[1:],
            from_e164=e164, to_number="74951234567", started_at=now - timedelta(days=1), result="answered",
            talk_seconds=95.0, client_id=client_id))
        await conn.execute(insert(Call).values(
            call_uid="out-" + secrets.token_hex(6), direction=CallDirection.outbound, from_number="74951234567",
            to_number=e164[1:], started_at=now - timedelta(hours=1), result="no_answer", client_id=client_id))
    client = await make_client()
    await _login(client, await _user(engine, "manager", operator_extension=await _operator(
        engine, await _department(engine))))
    by_name = await client.get("/clients", params={"q": surname.lower()}, allow_redirects=False)
    assert by_name.status == 303 and by_name.headers["Location"].startswith("/clients/card?phone=")
    by_phone = await client.get("/clients", params={"q": f"8 ({e164[2:5]}) {e164[5:8]}-{e164[8:10]}-{e164[10:]}"})
    assert by_phone.status == 200
    text = await by_phone.text()
    assert f"{surname} Пётр" in text and "ООО Ромашка" in text and e164 in text
    assert text.index("исходящий") < text.index("входящий")   # newest first: outbound 1 h ago
    assert "разговор 95 с" in text
    nobody = await client.get("/clients", params={"q": "Несуществующий" + secrets.token_hex(3)})
    assert "Никого не нашли" in await nobody.text()
    unknown = await client.get("/clients/card", params={"phone": "+79990000000"})
    assert unknown.status == 404
    injected = await client.get("/clients", params={"q": "%"})   # a LIKE wildcard is searched literally
    assert injected.status == 200


# --- CLI ---------------------------------------------------------------------------------------------------
def test_cli_user_add_reads_the_password_from_stdin_and_lists(database_url):
    login = "cli-" + secrets.token_hex(4)
    runner = CliRunner()
    added = runner.invoke(main, ["web", "user", "add", login, "--role", "admin", "--password-stdin",
                                 "--database-url", database_url], input=PASSWORD + "\n")
    assert added.exit_code == 0 and f"added web user {login}" in added.output, added.output
    again = runner.invoke(main, ["web", "user", "add", login, "--role", "admin", "--password-stdin",
                                 "--database-url", database_url], input=PASSWORD + "\n")
    assert again.exit_code == 1 and "taken" in again.output
    short = runner.invoke(main, ["web", "user", "add", login + "x", "--role", "admin", "--password-stdin",
                                 "--database-url", database_url], input="short\n")
    assert short.exit_code == 1 and "too short" in short.output
    head = runner.invoke(main, ["web", "user", "add", login + "h", "--role", "head", "--password-stdin",
                                "--database-url", database_url], input=PASSWORD + "\n")
    assert head.exit_code == 1 and "--department" in head.output
    listed = runner.invoke(main, ["web", "user", "list", "--database-url", database_url])
    assert listed.exit_code == 0 and login in listed.output and PASSWORD not in listed.output
