"""The web console in a real browser against the real stack (issue 7, "Tests").

Headless Debian Chromium (/usr/bin/chromium) driven by the Python ``playwright`` package with
``executable_path`` - never Playwright's own browser download, which does not work here. The
console is the real ``ivr web serve`` subprocess (ivr/web/runner.py) on the e2e database; the
controller, Asterisk and sipp phones are the ones of the inbound e2e tests; the confirmation
robot and a far-end sipp phone behind the carrier trunk move a campaign's numbers.

Screenshots of the main pages go to ``IVR_SCREENSHOTS_DIR`` if set, else a pytest tmp folder;
the path is printed (``pytest -s`` shows it; it is also in the report's captured output).

    IVR_TEST_PORT_OFFSET=1300 IVR_TEST_DB=ivr_test_browser \\
        .cache/venv/bin/python -m pytest -q -s tests/e2e/test_web_console.py
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from pathlib import Path

import pytest

from ivr.phones.sipp import SippAnswerer
from tests.conftest import PORT_OFFSET, unique_mobile
from tests.e2e.floor import Floor, _apply_rules, _sql, call, wait_for

pytestmark = pytest.mark.e2e

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = os.environ.get("IVR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ADMIN, HEAD, MANAGER = "boss", "petrova", "ivanov"
PASSWORD = "correct horse " + secrets.token_hex(4)

# The watched department: two operators who answer after 2 s of ringing (ring_timeout is 3 s in
# the floor's rules), so "ringing" lasts long enough to be seen, then "on a call" for 5 s.
OPERATORS = {
    "101": ("Анна Смирнова", "current_sales", "answer"),
    "102": ("Борис Козлов", "current_sales", "answer"),
    "301": ("Егор Лебедев", "current_service", "answer"),
}
RING_SECONDS = 2.0
TALK_SECONDS = 5.0


def _chromium_missing() -> bool:
    return not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM))


@pytest.fixture(scope="module")
async def floor(request, asterisk, e2e_settings, database_url, tmp_path_factory):
    """This module's floor (overrides tests/e2e/conftest.py's): phones that ring before they answer."""
    from ivr.stack.operators import sync_operators

    _sql(database_url, "TRUNCATE call_attempts, violations, callback_requests, summons, operator_events, contacts, "
                       "deals, client_phones, calls RESTART IDENTITY CASCADE")
    _sql(database_url, "DELETE FROM clients")
    _sql(database_url, "DELETE FROM web_sessions")
    _sql(database_url, "DELETE FROM web_users")
    _sql(database_url, "DELETE FROM operators")
    from tests.e2e.floor import RULES
    await asyncio.to_thread(_apply_rules, database_url, RULES)
    workdir = tmp_path_factory.mktemp("floor")
    phones: dict[str, SippAnswerer] = {}
    for ext, (name, dept, mode) in OPERATORS.items():
        phone = SippAnswerer(mode=mode, answer_delay=RING_SECONDS, hold=TALK_SECONDS, workdir=workdir)
        await phone.start()
        phones[ext] = phone
        _sql(database_url,
             "INSERT INTO operators (name, extension, department_id, sip_contact, status) VALUES "
             "(:n, :e, (SELECT id FROM departments WHERE code = :d), :c, 'available')",
             n=name, e=ext, d=dept, c=phone.uri)
    await asyncio.to_thread(sync_operators, e2e_settings, database_url)
    yield Floor(database_url, phones)
    for phone in phones.values():
        await phone.stop()


@pytest.fixture(scope="module")
async def routed(floor, controller):
    return floor


@pytest.fixture(scope="module")
async def console(floor, database_url, tmp_path_factory):
    """``ivr web serve`` on a free port, users added through the functions ``ivr web user add`` calls."""
    from ivr.web.runner import WebConsoleProcess, add_user

    await asyncio.to_thread(add_user, database_url, ADMIN, PASSWORD, "admin")
    await asyncio.to_thread(add_user, database_url, HEAD, PASSWORD, "head", department_code="current_sales")
    await asyncio.to_thread(add_user, database_url, MANAGER, PASSWORD, "manager", operator_extension="101")
    proc = WebConsoleProcess(database_url, tmp_path_factory.mktemp("web") / "web.log").start()
    try:
        await asyncio.to_thread(proc.wait_healthy, 30)
        yield proc
    finally:
        await asyncio.to_thread(proc.stop)


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("IVR_SCREENSHOTS_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
async def browser():
    """One headless Chromium (Playwright gives it a fresh temporary profile); a context per user."""
    if _chromium_missing():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; scripts/bootstrap.sh)")
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        await b.close()


async def new_page(browser, console, login: str | None = None):
    """A page in a fresh browser context (its own cookies), logged in as ``login`` when given."""
    ctx = await browser.new_context(viewport={"width": 1600, "height": 1000}, locale="ru-RU")
    page = await ctx.new_page()
    page.set_default_timeout(15_000)
    if login is None:
        return page
    await page.goto(console.url + "/login")
    await page.fill("input[name=login]", login)
    await page.fill("input[name=password]", PASSWORD)
    async with page.expect_navigation():
        await page.click("form.login button[type=submit]")
    assert "/login" not in page.url, await page.content()
    return page


async def close_page(page) -> None:
    await page.context.close()


@pytest.fixture(scope="module")
async def admin(browser, console):
    page = await new_page(browser, console, ADMIN)
    yield page
    await close_page(page)


def op_box(ext: str) -> str:
    return f'#wb-floor .op[data-ext="{ext}"]'


async def wait_state(page, ext: str, state: str, timeout: float = 15_000) -> None:
    await page.wait_for_selector(f'{op_box(ext)}[data-state="{state}"]', timeout=timeout)


# --- tests -------------------------------------------------------------------------------------

async def test_login_page_and_bad_password(browser, console, shots):
    page = await new_page(browser, console)
    try:
        await page.goto(console.url + "/wallboard")
        assert page.url.endswith("/login")                     # not logged in -> the login form
        await page.screenshot(path=str(shots / "login.png"))
        await page.fill("input[name=login]", ADMIN)
        await page.fill("input[name=password]", "wrong password")
        await page.click("form.login button[type=submit]")
        await page.wait_for_selector("p.error")
        assert "Неверный логин или пароль" in await page.inner_text("p.error")
    finally:
        await close_page(page)


async def test_call_rings_an_operator_and_the_wallboard_shows_ringing_then_on_a_call(
        routed, console, admin, e2e_settings, tmp_path, shots):
    page = admin
    await page.goto(console.url + "/wallboard")
    await page.wait_for_selector("#wb-conn.live", timeout=15_000)   # the SSE stream is open
    for ext in ("101", "102"):
        await wait_state(page, ext, "available")
    loads = await page.evaluate("location.href")
    # Every DOM change of the board, stamped in the page (no reload happens: the same document).
    await page.evaluate("""() => {
        window.__seen = [];
        const floor = document.getElementById('wb-floor');
        new MutationObserver(() => {
            floor.querySelectorAll('.op').forEach(e => window.__seen.push(
                [e.getAttribute('data-ext'), e.getAttribute('data-state'), e.querySelector('.state').textContent]));
        }).observe(floor, {childList: true, subtree: true});
        window.__doc = Math.random();
    }""")
    doc = await page.evaluate("window.__doc")
    caller = unique_mobile()
    placed = asyncio.create_task(call(e2e_settings, tmp_path, caller, hold_after=TALK_SECONDS + 2, timeout=15))
    try:
        ringing = await page.wait_for_selector('#wb-floor .op[data-state="ringing"]', timeout=15_000)
        ext = await ringing.get_attribute("data-ext")
        assert ext in ("101", "102")
        assert "звонит" in await ringing.inner_text()
        await page.screenshot(path=str(shots / "wallboard-ringing.png"))
        await wait_state(page, ext, "on_call")
        box = await page.inner_text(op_box(ext))
        assert "разговор" in box and caller[-4:] in box.replace(" ", "").replace("-", ""), box
        await page.screenshot(path=str(shots / "wallboard.png"))
        await wait_state(page, ext, "available", timeout=30_000)
    finally:
        result = await placed
    assert result.answered, result
    assert await page.evaluate("window.__doc") == doc and await page.evaluate("location.href") == loads
    states = [s for e, s, _ in await page.evaluate("window.__seen") if e == ext]
    assert "ringing" in states and "on_call" in states
    assert states.index("ringing") < states.index("on_call")


async def test_pausing_from_the_operators_page_stops_calls_reaching_that_operator(
        routed, console, admin, e2e_settings, tmp_path, shots):
    floor = routed
    page = admin
    await page.goto(console.url + "/operators")
    row = page.locator('#operators tr[data-extension="101"]')
    await row.locator("input[name=reason]").fill("обед")
    async with page.expect_navigation():
        await row.locator("button[value=pause]").click()
    assert "обед" in await page.locator('#operators tr[data-extension="101"]').inner_text()
    await page.screenshot(path=str(shots / "operators.png"))
    [status] = floor.sql("SELECT status::text, pause_reason FROM operators WHERE extension = '101'")
    assert tuple(status) == ("paused", "обед")
    [event] = floor.sql("SELECT event, reason, cause FROM operator_events e JOIN operators o ON o.id = e.operator_id "
                        "WHERE o.extension = '101' ORDER BY e.id DESC LIMIT 1")
    assert event.reason == "обед" and event.cause == "web"
    try:
        for _ in range(2):
            before = floor.invites()
            result = await call(e2e_settings, tmp_path, unique_mobile(), hold_after=1, timeout=15)
            assert result.answered, result
            after = floor.invites()
            assert after["101"] == before["101"], (before, after)      # the paused operator: no call
            assert after["102"] == before["102"] + 1, (before, after)  # the other one got it
    finally:
        await page.goto(console.url + "/operators")
        row = page.locator('#operators tr[data-extension="101"]')
        async with page.expect_navigation():
            await row.get_by_role("button", name="Снять паузу").click()
    [status] = floor.sql("SELECT status::text FROM operators WHERE extension = '101'")
    assert status[0] == "available"


async def test_a_bad_rule_shows_its_error_and_is_not_applied(routed, console, admin, shots):
    floor = routed
    page = admin
    versions = floor.sql("SELECT count(*) FROM ruleset_versions")[0][0]
    await page.goto(console.url + "/rules")
    source = await page.input_value("form.rules textarea")
    bad = source.replace("strategy: longest_idle", "strategy: loudest_first", 1)
    assert bad != source
    line = bad[:bad.index("loudest_first")].count("\n") + 1
    await page.fill("form.rules textarea", bad)
    async with page.expect_navigation() as nav:
        await page.click("form.rules button.primary")                  # Применить
    assert (await nav.value).status == 422
    errors = await page.inner_text("#errors")
    assert "loudest_first" in errors or f"строка {line}" in errors, errors
    assert await page.locator(f"#line-{line}.bad").count() == 1
    await page.screenshot(path=str(shots / "rules-error.png"), full_page=True)
    assert floor.sql("SELECT count(*) FROM ruleset_versions")[0][0] == versions
    await page.goto(console.url + "/rules")
    assert "loudest_first" not in await page.input_value("form.rules textarea")
    await page.screenshot(path=str(shots / "rules.png"))


async def test_a_manager_cannot_reach_admin_pages(browser, console, shots):
    page = await new_page(browser, console, MANAGER)
    try:
        for path in ("/wallboard", "/campaigns"):
            response = await page.goto(console.url + path)
            assert response.status == 403, path
        response = await page.goto(console.url + "/rules")
        assert response.status == 403
        assert "Доступ запрещён" in await page.inner_text("body")      # the console's 403 page
        await page.screenshot(path=str(shots / "manager-403.png"))
        response = await page.goto(console.url + "/operators")
        assert response.status == 200
        assert await page.locator("#operators tr[data-extension]").count() == 1   # only himself
    finally:
        await close_page(page)


async def test_client_card(routed, console, admin, shots):
    floor = routed
    phone = floor.add_client(full_name="Ромашка ООО (браузер)", segment="wholesale", deals=0)
    page = admin
    await page.goto(console.url + "/clients")
    await page.fill("input[name=q]", "+" + phone)
    async with page.expect_navigation():
        await page.press("input[name=q]", "Enter")
    await page.wait_for_load_state()
    assert "Ромашка ООО (браузер)" in await page.content()
    await page.screenshot(path=str(shots / "client-card.png"), full_page=True)


# --- campaign: the robot calls far-end phones that press 1 -------------------------------------

@pytest.fixture(scope="module")
async def robot(routed, asterisk, e2e_settings, database_url, tmp_path_factory):
    from tests.e2e.test_robot import Crm, Robot

    crm = await Crm().start()
    settings = e2e_settings.with_overrides(
        api_port=18091 + PORT_OFFSET, api_token=secrets.token_urlsafe(24), company_name="Эни",
        dialer_worker="e2e", dialer_ring_timeout=6, robot_digit_timeout=2.0, dialer_cps=20.0,
        dialer_client_interval=0.0, webhook_url=f"http://127.0.0.1:{crm.port}/crm/hook")
    r = Robot(settings, tmp_path_factory.mktemp("robot"))
    r.sql("TRUNCATE notification_jobs, webhook_deliveries, manager_tasks RESTART IDENTITY CASCADE")
    await r.start()
    yield r
    await r.stop()
    r.db.dispose()
    await crm.stop()


async def _counts(page, template: str) -> dict[str, int]:
    row = page.locator(f'tr[data-template="{template}"]').first
    if await row.count() == 0:
        return {}
    out = {}
    for key in ("pending", "in_progress", "confirmed", "not_received"):
        cell = row.locator(f'td[data-k="{key}"]')
        out[key] = int((await cell.inner_text()).strip() or 0) if await cell.count() else 0
    return out


async def test_campaign_numbers_move_as_the_far_end_phones_press_1(robot, console, admin, e2e_settings, tmp_path,
                                                                     shots):
    far = await SippAnswerer(listen_port=e2e_settings.carrier_port, workdir=tmp_path, mode="answer", dtmf="1",
                             dtmf_delay=2.0, hold=15).start()
    page = admin
    try:
        jobs = []
        for _ in range(3):
            status, job = await robot.create(unique_mobile())
            assert status == 201, job
            jobs.append(job["id"])
        [day] = robot.sql("SELECT CAST(created_at AT TIME ZONE 'Europe/Moscow' AS date) AS d FROM notification_jobs "
                          "WHERE id = :i", i=jobs[0])
        url = f"{console.url}/campaigns?day={day['d'].isoformat()}"
        await page.goto(url)
        first = await _counts(page, "documents_sent")
        assert sum(first.values()) == 3 and first.get("confirmed", 0) < 3, first
        seen = [first]

        async def confirmed_on_page():
            await page.reload()
            counts = await _counts(page, "documents_sent")
            seen.append(counts)
            return counts.get("confirmed") == 3

        deadline = asyncio.get_running_loop().time() + 90
        while not await confirmed_on_page():
            assert asyncio.get_running_loop().time() < deadline, f"counts seen: {seen}; jobs: " + str(
                [dict(robot.job(j)) for j in jobs])
            await asyncio.sleep(1.0)
        await page.screenshot(path=str(shots / "campaigns.png"), full_page=True)
        confirmed = [c.get("confirmed", 0) for c in seen]
        assert confirmed == sorted(confirmed) and confirmed[0] < confirmed[-1] == 3, seen
        assert seen[-1].get("pending", 0) == 0 and seen[-1].get("in_progress", 0) == 0
        await page.click(f'a[href="/campaigns/job/{jobs[0]}"]') if await page.locator(
            f'a[href="/campaigns/job/{jobs[0]}"]').count() else await page.goto(f"{console.url}/campaigns/job/{jobs[0]}")
        await page.wait_for_load_state()
        assert "07.02 мы отправили" in await page.content()
        await page.screenshot(path=str(shots / "campaign-job.png"), full_page=True)
    finally:
        await far.stop()
    for j in jobs:
        assert robot.job(j)["status"] == "confirmed"
