"""The wallboard: each department's floor at a glance, live (issue 7, item 2).

Where each thing shown comes from (all of it Postgres; the controller keeps ringing / talking in
its memory too, but it also writes rows at those moments, and the board reads the rows):

* status, pause reason, since: ``operators`` (what the operator chose; feature code, CLI, web);
* ringing: an open ``call_attempts`` row (``outcome`` and ``ended_at`` NULL) - the controller
  inserts it just before it originates the operator's leg (ivr/inbound/call.py ``_ring``);
* on a call: the ``calls`` row with ``answered_by_operator_id`` set and ``ended_at`` NULL - the
  call journal upserts it the moment the operator answers (``_connected``); the ring attempt
  stays open until the call ends, so "on a call" wins over "ringing" for the same call;
* wrap-up: the end of his last answered attempt plus the department's ``wrapup_seconds`` (the
  same rule the distribution uses, models/operators.py);
* calls waiting: inbound ``calls`` rows routed to the department, not ended, not answered by an
  operator, no result yet; today's answered / missed: inbound calls started since local midnight;
* violations: ``violations`` of the department's operators since local midnight.

``floor_snapshot`` is one function, parameterised SQL only; the page gets it as JSON over SSE
(ivr/web/floor_events.py) and on load.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from .floor_events import FloorHub, sse_stream

log = logging.getLogger("ivr.web.wallboard")

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

# Rows older than this are not "live" any more (a controller that died mid-call leaves them open).
RING_STALE_MINUTES = 15
CALL_STALE_HOURS = 12
MISSED_RESULTS = ("callback_requested", "caller_hangup")

_DEPARTMENTS = text("""
SELECT d.id, d.code, d.name, d.wrapup_seconds, d.timezone,
       (date_trunc('day', CAST(:now AS timestamptz) AT TIME ZONE d.timezone) AT TIME ZONE d.timezone) AS day_start
FROM departments d
WHERE CAST(:dep AS integer) IS NULL OR d.id = CAST(:dep AS integer)
ORDER BY d.code
""")

_OPERATORS = text("""
WITH live_calls AS MATERIALIZED (
    SELECT c.call_uid, c.started_at, c.wait_seconds, c.answered_by_operator_id,
           coalesce(cl.full_name, nullif(c.caller_name, ''), c.from_e164, c.from_number) AS who
    FROM calls c LEFT JOIN clients cl ON cl.id = c.client_id
    WHERE c.ended_at IS NULL AND c.started_at > CAST(:now AS timestamptz) - make_interval(hours => :call_stale)
), talk AS (
    SELECT DISTINCT ON (lc.answered_by_operator_id) lc.answered_by_operator_id AS operator_id, lc.call_uid,
           lc.started_at + make_interval(secs => coalesce(lc.wait_seconds, 0)) AS since, lc.who
    FROM live_calls lc WHERE lc.answered_by_operator_id IS NOT NULL
    ORDER BY lc.answered_by_operator_id, lc.started_at DESC
)
SELECT o.id, o.name, o.extension, o.department_id, o.status::text AS status, o.pause_reason, o.status_since,
       talk.call_uid AS talk_uid, talk.since AS talk_since, talk.who AS talk_with,
       ring.call_uid AS ring_uid, ring.started_at AS ring_since, ring.who AS ring_with,
       w.last_end + d.wrapup_seconds * interval '1 second' AS wrapup_until
FROM operators o
JOIN departments d ON d.id = o.department_id
LEFT JOIN talk ON talk.operator_id = o.id
LEFT JOIN LATERAL (
    SELECT a.call_uid, a.started_at,
           coalesce(cl.full_name, nullif(c.caller_name, ''), c.from_e164, c.from_number) AS who
    FROM call_attempts a
    LEFT JOIN calls c ON c.call_uid = a.call_uid
    LEFT JOIN clients cl ON cl.id = c.client_id
    WHERE a.operator_id = o.id AND a.outcome IS NULL AND a.ended_at IS NULL
      AND a.started_at > CAST(:now AS timestamptz) - make_interval(mins => :ring_stale)
      AND a.call_uid IS DISTINCT FROM talk.call_uid
    ORDER BY a.started_at DESC LIMIT 1
) ring ON true
LEFT JOIN LATERAL (
    SELECT max(coalesce(a.ended_at, a.answered_at)) AS last_end
    FROM call_attempts a
    WHERE a.operator_id = o.id AND a.outcome = 'answered'
      AND a.started_at > CAST(:now AS timestamptz) - interval '1 day'
) w ON true
WHERE CAST(:dep AS integer) IS NULL OR o.department_id = CAST(:dep AS integer)
ORDER BY o.extension
""")

# Live calls through the partial index on open calls, today's through (department_code, started_at)
# (both from migration 0009): the cost does not grow with the call history.
_CALLS = text("""
SELECT d.id AS department_id, live.waiting, live.oldest, today.answered, today.missed
FROM (SELECT id, code, (date_trunc('day', CAST(:now AS timestamptz) AT TIME ZONE timezone)
                        AT TIME ZONE timezone) AS day_start
      FROM departments WHERE CAST(:dep AS integer) IS NULL OR id = CAST(:dep AS integer)) d
CROSS JOIN LATERAL (
    SELECT count(*) AS waiting, min(c.started_at) AS oldest
    FROM calls c
    WHERE c.ended_at IS NULL AND c.started_at > CAST(:now AS timestamptz) - make_interval(hours => :call_stale)
      AND c.department_code = d.code AND c.direction = 'inbound'
      AND c.answered_by_operator_id IS NULL AND c.result IS NULL
) live
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE c.answered_by_operator_id IS NOT NULL) AS answered,
           count(*) FILTER (WHERE c.answered_by_operator_id IS NULL AND c.result = ANY(:missed)) AS missed
    FROM calls c
    WHERE c.department_code = d.code AND c.started_at >= d.day_start AND c.direction = 'inbound'
) today
""")

_VIOLATIONS = text("""
SELECT o.department_id, count(*) AS n
FROM violations v JOIN operators o ON o.id = v.operator_id JOIN departments d ON d.id = o.department_id
WHERE v.at >= (date_trunc('day', CAST(:now AS timestamptz) AT TIME ZONE d.timezone) AT TIME ZONE d.timezone)
  AND (CAST(:dep AS integer) IS NULL OR d.id = CAST(:dep AS integer))
GROUP BY o.department_id
""")


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(timezone.utc).isoformat() if value is not None else None


def _operator_state(r, now: datetime) -> dict[str, Any]:
    op: dict[str, Any] = {"id": r.id, "name": r.name, "extension": r.extension, "status": r.status,
                          "reason": None, "since": None, "with": None, "call_uid": None}
    if r.talk_uid:
        op.update(state="on_call", since=_iso(r.talk_since), call_uid=r.talk_uid, **{"with": r.talk_with})
    elif r.ring_uid:
        op.update(state="ringing", since=_iso(r.ring_since), call_uid=r.ring_uid, **{"with": r.ring_with})
    elif r.status == "logged_out":
        op.update(state="logged_out", since=_iso(r.status_since))
    elif r.status == "paused":
        op.update(state="paused", since=_iso(r.status_since), reason=r.pause_reason)
    elif r.wrapup_until is not None and r.wrapup_until > now:
        op.update(state="wrapup", since=_iso(r.wrapup_until), until=_iso(r.wrapup_until))
    else:
        op.update(state="available", since=_iso(r.status_since))
    return op


async def floor_snapshot(conn: AsyncConnection, now: datetime, department_id: int | None = None) -> dict:
    """Every department's floor (or one department's) at ``now``, JSON-ready:
    ``{"at", "departments": [{id, code, name, operators: [{name, extension, state, since, reason,
    with, call_uid}], waiting, longest_wait_s, answered_today, missed_today, violations_today}]}``.
    ``state``: available / ringing / on_call / wrapup / paused / logged_out."""
    if now.tzinfo is None:
        raise ValueError("now needs a time zone")
    p = {"now": now, "dep": department_id}
    stale = {"call_stale": CALL_STALE_HOURS, "ring_stale": RING_STALE_MINUTES}
    deps = (await conn.execute(_DEPARTMENTS, p)).all()
    ops = (await conn.execute(_OPERATORS, {**p, **stale})).all()
    calls = {r.department_id: r for r in await conn.execute(
        _CALLS, {**p, "call_stale": CALL_STALE_HOURS, "missed": list(MISSED_RESULTS)})}
    viol = {r.department_id: int(r.n) for r in await conn.execute(_VIOLATIONS, p)}
    out = []
    for d in deps:
        c = calls.get(d.id)
        oldest = c.oldest if c is not None else None
        out.append({
            "id": d.id, "code": d.code, "name": d.name,
            "operators": [_operator_state(r, now) for r in ops if r.department_id == d.id],
            "waiting": int(c.waiting) if c is not None else 0,
            "longest_wait_s": round(max((now - oldest).total_seconds(), 0.0), 1) if oldest is not None else 0.0,
            "answered_today": int(c.answered) if c is not None else 0,
            "missed_today": int(c.missed) if c is not None else 0,
            "violations_today": viol.get(d.id, 0),
        })
    return {"at": _iso(now), "departments": out}


# --- web ---------------------------------------------------------------------------------------
def engine_of(app: web.Application):
    """The AsyncEngine the console core put in the app (plain key or an AppKey of ivr.web.app)."""
    try:
        return app["engine"]
    except KeyError:
        from ivr.web import app as core  # the core's AppKey, if it uses one
        for name in ("ENGINE", "ENGINE_KEY", "engine_key"):
            key = getattr(core, name, None)
            if key is not None and key in app:
                return app[key]
        raise


def user_department(request: web.Request) -> int | None:
    """Which department this user sees: an admin all (None); others their own when they have one."""
    user = request.get("user")
    if user is None:
        raise web.HTTPUnauthorized(text="log in first")
    if getattr(user, "role", None) == "admin":
        return None
    return getattr(user, "department_id", None)


# A stand-in base.html for a bare app (tests) when the console core's is not there.
_FALLBACK_BASE = """<!doctype html><html lang="ru"><head><meta charset="utf-8"><title>{% block title %}IVR{% endblock %}</title>
{% block head %}{% endblock %}</head><body>{% block content %}{% endblock %}{% block scripts %}{% endblock %}</body></html>"""
_ENV = None
PAGE_ROLES = {"wallboard": ("admin", "head"), "campaigns": ("admin", "head")}


def _jinja_env():
    global _ENV
    if _ENV is None:
        import jinja2
        _ENV = jinja2.Environment(
            loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(TEMPLATES)),
                                        jinja2.DictLoader({"base.html": _FALLBACK_BASE})]),
            autoescape=True)
        _ENV.globals.update(nav_for=lambda request: [], role_names={})
    return _ENV


def _core():
    try:
        from ivr.web import app as core
    except ImportError:
        return None
    return core


def render(request: web.Request, name: str, context: dict) -> web.Response:
    """Render ``name`` (extends base.html) through the console core's ``render`` (menu, CSRF
    token, user) when the app is the core's, else with our own environment (bare test apps)."""
    core = _core()
    if core is not None and getattr(core, "JINJA", None) is not None and core.JINJA in request.app:
        return core.render(request, name, context)
    ctx = {"request": request, "user": request.get("user"), "nav": [], "csrf_token": "", "path": request.path,
           **context}
    return web.Response(text=_jinja_env().get_template(name).render(ctx), content_type="text/html",
                        charset="utf-8")


def require_page(request: web.Request, page: str):
    """The logged-in user, or 401 / 403: the core's roles per page (ivr/web/auth.py PAGE_ROLES)."""
    user = request.get("user")
    if user is None:
        raise web.HTTPUnauthorized(text="log in first")
    roles = PAGE_ROLES[page]
    try:
        from ivr.web.auth import PAGE_ROLES as core_roles
        roles = core_roles.get(page, roles)
    except ImportError:
        pass
    if getattr(user, "role", None) not in roles:
        try:  # the console's own 403 page (as /rules shows it); plain text outside the console
            from ivr.web.app import forbidden
        except ImportError:
            raise web.HTTPForbidden(text="this page is not for your role") from None
        try:
            page_403 = forbidden(request)
        except Exception:  # an app without the console's templates (module tests): plain text
            raise web.HTTPForbidden(text="this page is not for your role") from None
        raise web.HTTPForbidden(body=page_403.body, headers={"Content-Type": page_403.headers["Content-Type"]})
    return user


def user_department(request: web.Request) -> int | None:
    """Which department this user sees: an admin every one (None); a head his own."""
    user = require_page(request, "wallboard")
    if user.role == "admin":
        return None
    return getattr(user, "department_id", None)


async def snapshot_for(app: web.Application, department_id: int | None) -> dict:
    async with engine_of(app).connect() as conn:
        return await floor_snapshot(conn, datetime.now(timezone.utc), department_id)


async def wallboard_page(request: web.Request) -> web.Response:
    dep = user_department(request)
    snap = await snapshot_for(request.app, dep)
    return render(request, "wallboard.html", {"snapshot": snap,
                                              "snapshot_json": json.dumps(snap).replace("<", "\\u003c")})


async def wallboard_json(request: web.Request) -> web.Response:
    return web.json_response(await snapshot_for(request.app, user_department(request)))


async def wallboard_events(request: web.Request) -> web.StreamResponse:
    dep = user_department(request)
    hub: FloorHub = request.app[HUB]
    return await sse_stream(request, hub, dep)


async def wallboard_js(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "wallboard.js", headers={"Content-Type": "application/javascript",
                                                               "Cache-Control": "no-cache"})


HUB = web.AppKey("ivr_floor_hub", FloorHub)


def setup_wallboard(app: web.Application) -> None:
    """Routes /wallboard, /wallboard/snapshot, /wallboard/events (SSE), /wallboard/wallboard.js
    and the floor hub (LISTEN ivr_floor) started and stopped with the app."""
    hub = FloorHub(lambda dep: snapshot_for(app, dep), lambda: engine_of(app))
    app[HUB] = hub

    async def hub_ctx(_app):
        await hub.start()
        yield
        await hub.stop()

    app.cleanup_ctx.append(hub_ctx)
    app.on_shutdown.append(hub.close_clients)     # open SSE streams end so shutdown does not wait
    app.router.add_get("/wallboard", wallboard_page)
    app.router.add_get("/wallboard/snapshot", wallboard_json)
    app.router.add_get("/wallboard/events", wallboard_events)
    app.router.add_get("/wallboard/wallboard.js", wallboard_js)


__all__ = ["floor_snapshot", "setup_wallboard", "render", "engine_of"]
