"""The web console (aiohttp + Jinja2): ``make_app(engine, settings)``.

Conventions for page modules (ours in ivr/web/pages.py; ivr/web/wallboard.py and
ivr/web/campaigns.py plug in through ``setup_wallboard(app)`` / ``setup_campaigns(app)``):

* ``request["user"]`` is a ``WebUserInfo`` (ivr/web/auth.py) on every non-public path: the
  session middleware has loaded the ``ivr_session`` cookie or answered already (redirect to
  /login; JSON 401 for /api/... and event streams: paths under /api/, paths ending in /events
  or containing /events/, and ``Accept: text/event-stream``).
* ``@require_role("admin", "head")`` (ivr.web.auth) on a handler: 403 for other roles.
* Every POST (form or fetch) carries the session's CSRF token, as the form field ``csrf_token``
  or the header ``X-CSRF-Token``; the middleware answers 403 otherwise. Templates get it as
  ``csrf_token``.
* ``render(request, "page.html", {...})`` renders a template from ivr/web/templates/ (extend
  base.html; blocks ``title`` and ``content``) with ``user``, ``csrf_token`` and ``nav``.
* ``add_nav(app, "/wallboard", "Табло", ("admin", "head"))`` adds a link to the menu.
* ``app[ENGINE]`` is the AsyncEngine; ``app[SYNC_ENGINE]`` a sync Engine on the same database
  (routing.store and the client card are synchronous; call them through asyncio.to_thread).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from ivr.web import auth

log = logging.getLogger("ivr.web")
# The page modules share plain request keys ("user", "csrf_token": the contract in the docstring).
warnings.filterwarnings("ignore", category=web.NotAppKeyWarning, message=r".*web\.RequestKey")

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
COOKIE = "ivr_session"
LOGIN_CSRF_COOKIE = "ivr_login_csrf"
PORT_ENV = "IVR_WEB_PORT"
DEFAULT_PORT = 8093
DEFAULT_HOST = "127.0.0.1"
MAX_BODY = 512 * 1024
PUBLIC_PATHS = frozenset({"/login", "/health"})
PUBLIC_PREFIXES = ("/static/",)
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Optional page modules built elsewhere: module -> its setup function.
OPTIONAL_MODULES = (("ivr.web.wallboard", "setup_wallboard"), ("ivr.web.campaigns", "setup_campaigns"))
DEFAULT_MODULE_NAV = (("/wallboard", "Табло", "wallboard"), ("/campaigns", "Рассылки", "campaigns"))

ENGINE = web.AppKey("engine", AsyncEngine)
SYNC_ENGINE = web.AppKey("sync_engine", Engine)
SETTINGS = web.AppKey("settings", object)
JINJA = web.AppKey("jinja", jinja2.Environment)
LIMITER = web.AppKey("limiter", auth.LoginLimiter)
SESSION_TTL = web.AppKey("session_ttl", timedelta)
SECURE_COOKIE = web.AppKey("secure_cookie", bool)
NAV = web.AppKey("nav", list)


def add_nav(app: web.Application, path: str, label: str, roles: tuple[str, ...]) -> None:
    app[NAV].append((path, label, tuple(roles)))


def wants_json(request: web.Request) -> bool:
    path = request.path
    return (path.startswith("/api/") or path.startswith("/events") or path.endswith("/events")
            or "/events/" in path or "text/event-stream" in request.headers.get("Accept", ""))


def _nav(request: web.Request) -> list[tuple[str, str]]:
    user = request.get("user")
    return [(p, label) for p, label, roles in request.app[NAV] if user is not None and user.role in roles]


def render(request: web.Request, template: str, context: dict[str, Any] | None = None, *,
           status: int = 200) -> web.Response:
    user = request.get("user")
    ctx = {
        "user": user,
        "csrf_token": request.get("csrf_token", ""),
        "nav": _nav(request),
        "path": request.path,
    }
    ctx.update(context or {})
    body = request.app[JINJA].get_template(template).render(ctx)
    return web.Response(text=body, content_type="text/html", charset="utf-8", status=status)


def forbidden(request: web.Request) -> web.Response:
    if wants_json(request):
        return web.json_response({"error": "forbidden"}, status=403)
    return render(request, "error.html", {"title": "Доступ запрещён",
                                           "message": "Эта страница недоступна для вашей роли."}, status=403)


def _unauthenticated(request: web.Request) -> web.StreamResponse:
    if wants_json(request):
        return web.json_response({"error": "not logged in"}, status=401)
    raise web.HTTPSeeOther("/login")


def set_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/",
                        secure=request.app[SECURE_COOKIE], max_age=int(request.app[SESSION_TTL].total_seconds()))


async def _form_token(request: web.Request) -> str | None:
    header = request.headers.get("X-CSRF-Token")
    if header:
        return header
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        value = form.get("csrf_token")
        return value if isinstance(value, str) else None
    return None


@web.middleware
async def session_middleware(request: web.Request, handler):
    if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
        if request.method in UNSAFE_METHODS and request.path == "/login":
            # Before login there is no session: a double-submit token (cookie = form field).
            if not auth.csrf_ok(await _form_token(request), request.cookies.get(LOGIN_CSRF_COOKIE)):
                return render(request, "error.html", {"title": "Ошибка формы",
                                                      "message": "Форма устарела: откройте страницу входа заново."},
                              status=403)
        return await handler(request)
    token = request.cookies.get(COOKIE, "")
    loaded = None
    if token:
        async with request.app[ENGINE].begin() as conn:
            loaded = await auth.load_session(conn, token, ttl=request.app[SESSION_TTL])
    if loaded is None:
        return _unauthenticated(request)
    request["user"], request["csrf_token"] = loaded
    request["session_token"] = token
    if request.method in UNSAFE_METHODS and not auth.csrf_ok(await _form_token(request), request["csrf_token"]):
        if wants_json(request):
            return web.json_response({"error": "missing or wrong CSRF token"}, status=403)
        return render(request, "error.html", {"title": "Ошибка формы",
                                              "message": "Форма устарела или подделана (CSRF): обновите страницу."},
                      status=403)
    response = await handler(request)
    return response


@web.middleware
async def headers_middleware(request: web.Request, handler):
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
        _secure_headers(response)
        raise
    _secure_headers(response)
    return response


def _secure_headers(response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Cache-Control", "no-store")


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _sync_engine(engine: AsyncEngine) -> Engine:
    from models.db import make_engine

    return make_engine(engine.url.render_as_string(hide_password=False))


def make_app(engine: AsyncEngine, settings: Any = None, *, session_ttl: timedelta | None = None,
             secure_cookie: bool | None = None, limiter: auth.LoginLimiter | None = None) -> web.Application:
    """The console. ``settings`` is an ivr.config.Settings (or None); the session lifetime comes
    from ``session_ttl``, else $IVR_WEB_SESSION_HOURS, else 8 hours."""
    app = web.Application(middlewares=[headers_middleware, session_middleware], client_max_size=MAX_BODY)
    app[ENGINE] = engine
    app[SYNC_ENGINE] = _sync_engine(engine)
    app[SETTINGS] = settings
    if session_ttl is None:
        hours = float(os.environ.get("IVR_WEB_SESSION_HOURS") or 8)
        session_ttl = timedelta(hours=hours)
    app[SESSION_TTL] = session_ttl
    app[SECURE_COOKIE] = bool(secure_cookie if secure_cookie is not None
                              else os.environ.get("IVR_WEB_SECURE_COOKIE", "") in ("1", "true", "yes"))
    app[LIMITER] = limiter or auth.LoginLimiter()
    app[JINJA] = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
                                    autoescape=jinja2.select_autoescape(("html", "xml")),
                                    undefined=jinja2.StrictUndefined if os.environ.get("IVR_WEB_STRICT") else
                                    jinja2.Undefined)
    app[NAV] = []
    env = app[JINJA]
    env.globals["role_names"] = auth.ROLE_NAMES
    env.globals["nav_for"] = lambda request: _nav(request)
    with warnings.catch_warnings():   # a plain key: modules that look up "jinja_env" share ours
        warnings.simplefilter("ignore")
        app["jinja_env"] = env

    async def dispose(app_: web.Application) -> None:
        await asyncio.to_thread(app_[SYNC_ENGINE].dispose)

    async def purge(app_: web.Application) -> None:
        try:
            async with app_[ENGINE].begin() as conn:
                purged = await auth.purge_expired(conn)
            if purged:
                log.info("web console: %d expired sessions removed", purged)
        except Exception as exc:   # a dead database must not stop the console from starting
            log.warning("web console: could not purge expired sessions: %s", exc)

    app.on_startup.append(purge)
    app.on_cleanup.append(dispose)
    app.router.add_get("/health", health)
    app.router.add_static("/static/", STATIC_DIR)

    from ivr.web import pages
    pages.setup_pages(app)
    for module_name, setup_name in OPTIONAL_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if exc.name != module_name:
                raise
            log.info("web console: %s is not installed; its pages are off", module_name)
            continue
        getattr(module, setup_name)(app)
    # A module that did not add its own menu entry gets the default one.
    paths = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    for path, label, page in DEFAULT_MODULE_NAV:
        if path in paths and all(p != path for p, _l, _r in app[NAV]):
            add_nav(app, path, label, auth.PAGE_ROLES[page])
    return app


def run(engine: AsyncEngine, settings: Any = None, *, host: str = DEFAULT_HOST, port: int | None = None) -> None:
    port = port or int(os.environ.get(PORT_ENV) or DEFAULT_PORT)
    app = make_app(engine, settings)
    log.info("web console on http://%s:%d/", host, port)
    web.run_app(app, host=host, port=port, print=lambda msg: None, access_log=log)
