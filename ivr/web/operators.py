"""/operators: pause with a reason / resume, log in / log out — through models.operators.set_status,
the function behind `ivr operator pause|rejoin|login|logout` and the feature codes, with
cause "web", so operator_events gets the same records.

Who sees whom: admin — every operator; head — his department; manager — only himself."""

from __future__ import annotations

from aiohttp import web
from yarl import URL
from sqlalchemy import select

from ivr.web.app import ENGINE, render
from ivr.web.auth import PAGE_ROLES, WebUserInfo, require_role
from models.operators import OperatorError, list_operators, operator_events, set_status
from models.tables import Department, Operator, OperatorStatus

ACTIONS = {
    "pause": OperatorStatus.paused,
    "rejoin": OperatorStatus.available,
    "login": OperatorStatus.available,
    "logout": OperatorStatus.logged_out,
}
STATUS_NAMES = {"available": "на линии", "paused": "пауза", "logged_out": "не в системе"}
EVENT_NAMES = {"pause": "пауза", "rejoin": "снята пауза", "login": "вход", "logout": "выход"}


async def visible_operators(conn, user: WebUserInfo) -> list:
    rows = await list_operators(conn)
    if user.role == "admin":
        return rows
    if user.role == "head":
        code = await conn.scalar(select(Department.code).where(Department.id == user.department_id)) \
            if user.department_id else None
        return [r for r in rows if code is not None and r.department == code]
    return [r for r in rows if user.operator_id is not None and r.id == user.operator_id]


@require_role(*PAGE_ROLES["operators"])
async def operators_page(request: web.Request) -> web.Response:
    user = request["user"]
    async with request.app[ENGINE].connect() as conn:
        rows = await visible_operators(conn, user)
        history = {}
        if user.role == "manager" and rows:
            history[rows[0].extension] = (await operator_events(conn, rows[0].extension, limit=20))[::-1]
    return render(request, "operators.html", {
        "operators": rows, "status_names": STATUS_NAMES, "event_names": EVENT_NAMES, "history": history,
        "done": request.query.get("done", ""), "error": request.query.get("error", ""),
    })


@require_role(*PAGE_ROLES["operators"])
async def operator_action(request: web.Request) -> web.StreamResponse:
    user = request["user"]
    extension = request.match_info["extension"]
    action = request.match_info["action"]
    if action not in ACTIONS:
        raise web.HTTPNotFound()
    form = await request.post()
    reason = str(form.get("reason", "")).strip() or None if action == "pause" else None
    async with request.app[ENGINE].begin() as conn:
        allowed = {r.extension for r in await visible_operators(conn, user)}
        if extension not in allowed:
            exists = await conn.scalar(select(Operator.id).where(Operator.extension == extension))
            if exists is None:
                raise web.HTTPNotFound()
            from ivr.web.app import forbidden
            return forbidden(request)
        try:
            change = await set_status(conn, extension, ACTIONS[action], reason=reason, cause="web")
        except OperatorError as exc:
            raise web.HTTPSeeOther(str(URL("/operators").with_query(error=str(exc))))
    done = f"{change.extension}:{change.event or 'unchanged'}"
    raise web.HTTPSeeOther(str(URL("/operators").with_query(done=done)))


def setup(app: web.Application) -> None:
    app.router.add_get("/operators", operators_page)
    app.router.add_post("/operators/{extension}/{action}", operator_action)
