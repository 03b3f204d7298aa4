"""The notification HTTP API (aiohttp): thin handlers over models.notifications.

    POST /v1/notifications               create (201 new, 200 the existing job for its external_id)
    GET  /v1/notifications/{id}          one job with its attempts
    GET  /v1/notifications?status=&limit= newest first
    POST /v1/notifications/{id}/cancel   cancel (409 when its state does not allow it)
    GET  /openapi.yaml                   the schema (no token needed)

Every other endpoint needs ``Authorization: Bearer <IVR_API_TOKEN>``. There is no default token:
``make_app`` refuses to build the application without one. The bind address is the caller's
business (loopback unless the admin says otherwise).
"""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from ivr.notify.jobs import InvalidTransition
from ivr.notify.templates import TemplateStore
from models.notifications import (
    LIST_LIMIT, JobNotFound, JobRequest, JobValidationError, JobValidationErrors, cancel_job, create_job, get_job,
    job_attempts, list_jobs,
)

OPENAPI_PATH = Path(__file__).resolve().parent / "openapi.yaml"
TOKEN_ENV = "IVR_API_TOKEN"
MIN_TOKEN_LENGTH = 16
MAX_BODY = 64 * 1024
# /sms/receipts: the HTTP SMS gateway's delivery reports, checked by their own callback secret.
PUBLIC_PATHS = frozenset({"/openapi.yaml", "/health", "/sms/receipts"})
# The prompt cache for an Asterisk on another host (res_http_media_cache sends no token); names
# are unguessable sha256 digests and the API binds to loopback unless the admin opens it.
PUBLIC_PREFIXES = ("/tts/",)

ENGINE = web.AppKey("engine", AsyncEngine)
TEMPLATES = web.AppKey("templates", TemplateStore)
TOKEN = web.AppKey("token", str)
POLICIES = web.AppKey("policies", object)   # ivr.notify.retry.PolicySet: the templates' barriers


class ApiConfigError(RuntimeError):
    pass


def _errors(status: int, errors: list[dict]) -> web.Response:
    return web.json_response({"errors": errors}, status=status)


def _error(status: int, field: str | None, message: str) -> web.Response:
    return _errors(status, [{"field": field, "message": message}])


@web.middleware
async def _auth(request: web.Request, handler):
    if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), request.app[TOKEN].encode()):
        response = _error(401, None, "missing or wrong bearer token")
        response.headers["WWW-Authenticate"] = 'Bearer realm="ivr"'
        return response
    return await handler(request)


def _job_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit() or len(raw) > 18:
        raise web.HTTPNotFound(text=json.dumps({"errors": [{"field": "id", "message": "no such job"}]}),
                               content_type="application/json")
    return int(raw)


async def create_handler(request: web.Request) -> web.Response:
    if request.content_type != "application/json":
        return _error(415, "body", "send application/json")
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "body", "not valid JSON")
    try:
        job_request = JobRequest.from_json(data)
        async with request.app[ENGINE].begin() as conn:
            job, created = await create_job(conn, job_request, templates=request.app[TEMPLATES],
                                            policies=request.app.get(POLICIES))
    except JobValidationErrors as exc:
        return _errors(422, [e.as_json() for e in exc.errors])
    except JobValidationError as exc:
        return _errors(422, [exc.as_json()])
    response = web.json_response(job.as_json(), status=201 if created else 200)
    response.headers["Location"] = f"/v1/notifications/{job.id}"
    return response


async def show_handler(request: web.Request) -> web.Response:
    job_id = _job_id(request)
    try:
        async with request.app[ENGINE].connect() as conn:
            job = await get_job(conn, job_id)
            attempts = await job_attempts(conn, job_id)
    except JobNotFound as exc:
        return _error(404, "id", str(exc))
    return web.json_response({**job.as_json(), "attempts": attempts})


async def list_handler(request: web.Request) -> web.Response:
    status = request.query.get("status") or None
    raw_limit = request.query.get("limit") or str(LIST_LIMIT)
    if not raw_limit.isdigit():
        return _error(422, "limit", "expected a positive integer")
    try:
        async with request.app[ENGINE].connect() as conn:
            jobs = await list_jobs(conn, status=status, limit=int(raw_limit))
    except JobValidationError as exc:
        return _errors(422, [exc.as_json()])
    return web.json_response({"jobs": [j.as_json() for j in jobs]})


async def cancel_handler(request: web.Request) -> web.Response:
    job_id = _job_id(request)
    try:
        async with request.app[ENGINE].begin() as conn:
            job = await cancel_job(conn, job_id)
    except JobNotFound as exc:
        return _error(404, "id", str(exc))
    except InvalidTransition as exc:
        return _error(409, "status", str(exc))
    return web.json_response(job.as_json())


async def openapi_handler(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI_PATH.read_bytes(), content_type="application/yaml", charset="utf-8")


def api_token(explicit: str | None = None) -> str:
    """The API token: ``explicit``, else $IVR_API_TOKEN; refuses to run without one."""
    token = explicit if explicit is not None else os.environ.get(TOKEN_ENV, "")
    token = token.strip()
    if not token:
        raise ApiConfigError(f"{TOKEN_ENV} is not set: the notification API has no default token and "
                             f"refuses to start without one (generate one, e.g. `openssl rand -hex 24`)")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ApiConfigError(f"{TOKEN_ENV} is too short: at least {MIN_TOKEN_LENGTH} characters")
    return token


def make_app(engine: AsyncEngine, templates: TemplateStore, *, token: str | None = None,
             policies=None) -> web.Application:
    app = web.Application(middlewares=[_auth], client_max_size=MAX_BODY)
    app[TOKEN] = api_token(token)
    app[ENGINE] = engine
    app[TEMPLATES] = templates
    if policies is not None:
        app[POLICIES] = policies
    app.router.add_post("/v1/notifications", create_handler)
    app.router.add_get("/v1/notifications", list_handler)
    app.router.add_get("/v1/notifications/{id}", show_handler)
    app.router.add_post("/v1/notifications/{id}/cancel", cancel_handler)
    app.router.add_get("/openapi.yaml", openapi_handler)
    return app
