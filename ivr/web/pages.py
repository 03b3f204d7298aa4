"""The console's own pages: /login, /logout, / (home by role). Operator controls, the rules editor
and the client card live in ivr/web/operators.py, rules.py and clients.py; thin handlers over
the same functions the CLI uses."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ivr.web import auth
from ivr.web.app import (COOKIE, ENGINE, LIMITER, LOGIN_CSRF_COOKIE, NAV, SECURE_COOKIE, SESSION_TTL, add_nav, render,
                         set_session_cookie)


# Where each role lands on "/": the first of these that is installed and allowed, else the first menu entry.
HOME_ORDER = {"admin": ("/wallboard", "/operators"), "head": ("/wallboard", "/operators"), "manager": ("/operators",)}


def _login_page(request: web.Request, *, error: str | None = None, login: str = "", status: int = 200) -> web.Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or auth.new_token()
    response = render(request, "login.html", {"error": error, "login": login, "login_csrf": token}, status=status)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict", path="/login",
                        secure=request.app[SECURE_COOKIE])
    return response


async def login_form(request: web.Request) -> web.Response:
    return _login_page(request)


async def login_submit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    login = str(form.get("login", "")).strip()[:64]
    password = str(form.get("password", ""))
    limiter = request.app[LIMITER]
    wait = limiter.wait_seconds(login)
    if wait > 0:
        return _login_page(request, login=login, status=429,
                           error=f"Слишком много неудачных попыток. Повторите через {int(wait) + 1} с.")
    async with request.app[ENGINE].connect() as conn:
        row = await auth.find_login(conn, login) if auth.LOGIN_RE.fullmatch(login or "-") else None
    # Always one argon2 verification (a dummy hash for an unknown login): same time either way.
    ok = await asyncio.to_thread(auth.verify_password, row.password_hash if row else None, password)
    if not ok or row is None:
        limiter.failed(login)
        return _login_page(request, login=login, error=auth.GENERIC_LOGIN_ERROR, status=401)
    limiter.succeeded(login)
    async with request.app[ENGINE].begin() as conn:
        token, _csrf = await auth.create_session(conn, row.id, ttl=request.app[SESSION_TTL])
        if auth.needs_rehash(row.password_hash):   # the library's parameters went up: store a new hash
            await auth.rehash(conn, row.id, await asyncio.to_thread(auth.hash_password, password))
    response = web.HTTPSeeOther("/")
    set_session_cookie(request, response, token)
    response.del_cookie(LOGIN_CSRF_COOKIE, path="/login")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    async with request.app[ENGINE].begin() as conn:
        await auth.delete_session(conn, request["session_token"])
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


async def home(request: web.Request) -> web.StreamResponse:
    """Each role starts where it works: the first menu entry it may open."""
    user = request["user"]
    entries = {path: roles for path, _label, roles in request.app[NAV]}
    for path in HOME_ORDER.get(user.role, ()) + tuple(entries):
        if user.role in entries.get(path, ()):
            raise web.HTTPSeeOther(path)
    return render(request, "error.html", {"title": "Нет страниц", "message": "Для вашей роли нет страниц."})


def setup_pages(app: web.Application) -> None:
    from ivr.web import clients, operators, rules

    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login_submit)
    app.router.add_post("/logout", logout)
    app.router.add_get("/", home)
    operators.setup(app)
    add_nav(app, "/operators", "Операторы", auth.PAGE_ROLES["operators"])
    clients.setup(app)
    add_nav(app, "/clients", "Клиенты", auth.PAGE_ROLES["clients"])
    rules.setup(app)
    add_nav(app, "/rules", "Правила", auth.PAGE_ROLES["rules"])
