"""Web console authentication: password hashing (argon2id via argon2-cffi), sessions, CSRF tokens,
the login rate limit, roles and the ``require_role`` decorator.

Pure helpers first (unit-tested without a database), then the queries over ``web_users`` and
``web_sessions`` (async SQLAlchemy Core; the caller owns the transaction).

The cookie carries only a random session token; the database keeps its sha256 (a leaked
``web_sessions`` table does not give live cookies) and the session's CSRF token.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Awaitable, Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from models.tables import Department, Operator, WebSession, WebUser

ROLES = ("admin", "head", "manager")
ROLE_NAMES = {"admin": "администратор", "head": "руководитель отдела", "manager": "менеджер"}
LOGIN_RE = re.compile(r"[A-Za-z0-9._@-]{1,64}")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
SESSION_TTL = timedelta(hours=8)
# A sliding session is extended at most once a minute (one UPDATE, not one per request).
SLIDE_EVERY = timedelta(seconds=60)
GENERIC_LOGIN_ERROR = "Неверный логин или пароль"

# Which pages each role may open. The wallboard / campaigns modules use the same names.
PAGE_ROLES: dict[str, tuple[str, ...]] = {
    "operators": ("admin", "head", "manager"),
    "clients": ("admin", "head", "manager"),
    "rules": ("admin",),
    "wallboard": ("admin", "head"),
    "campaigns": ("admin", "head"),
}

_hasher = PasswordHasher()   # argon2id, the library's RFC 9106 defaults
# Verified against when the login is unknown, so an unknown login costs the same time as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class WebAuthError(ValueError):
    """A request about web users that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class WebUserInfo:
    """Who is logged in: ``request["user"]``."""
    id: int
    login: str
    display_name: str
    role: str
    department_id: int | None
    operator_id: int | None


# --- pure helpers -------------------------------------------------------------------------------
def hash_password(password: str) -> str:
    check_password_rules(password)
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; always does one full argon2 verification (a missing hash
    is checked against a dummy), so timing does not tell whether the login exists."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password[:MAX_PASSWORD]) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return False


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise WebAuthError(f"the password is too short: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise WebAuthError(f"the password is too long: at most {MAX_PASSWORD} characters")


def validate_login(login: str) -> str:
    login = (login or "").strip()
    if not LOGIN_RE.fullmatch(login):
        raise WebAuthError(f"login {login!r}: 1-64 latin letters, digits and . _ @ -")
    return login


def validate_role(role: str) -> str:
    if role not in ROLES:
        raise WebAuthError(f"role {role!r}: use one of {', '.join(ROLES)}")
    return role


def new_token() -> str:
    """A random URL-safe token (256 bits): session ids and CSRF tokens."""
    return secrets.token_urlsafe(32)


def session_key(token: str) -> str:
    """What the database stores for a session cookie: its sha256 (64 hex characters)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def csrf_ok(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; an empty or missing token never matches."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def role_allowed(role: str, page: str) -> bool:
    return role in PAGE_ROLES.get(page, ())


class LoginLimiter:
    """At most ``max_failures`` failed logins per login within ``window`` seconds; after that the
    login must wait until the oldest failure leaves the window. In memory, per process."""

    def __init__(self, max_failures: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        now = self.clock()
        q = self._failures.get(key)
        if q is None:
            return deque()
        while q and now - q[0] >= self.window:
            q.popleft()
        if not q:
            self._failures.pop(key, None)
        return q

    def wait_seconds(self, login: str) -> float:
        """0 when a login attempt may be made now, else how long to wait."""
        key = login.strip().lower()
        q = self._recent(key)
        if len(q) < self.max_failures:
            return 0.0
        return max(0.0, self.window - (self.clock() - q[0]))

    def failed(self, login: str) -> None:
        key = login.strip().lower()
        self._recent(key)
        self._failures.setdefault(key, deque()).append(self.clock())
        if len(self._failures) > 10_000:   # a flood of invented logins: forget the oldest
            self._failures.pop(next(iter(self._failures)))

    def succeeded(self, login: str) -> None:
        self._failures.pop(login.strip().lower(), None)


def require_role(*roles: str):
    """Handler decorator: 403 (page, or JSON under /api/) unless ``request["user"].role`` is one
    of ``roles``. The session middleware has already made sure somebody is logged in."""
    for role in roles:
        validate_role(role)

    def decorate(handler: Callable[..., Awaitable]):
        @functools.wraps(handler)
        async def wrapped(request, *args, **kwargs):
            user = request.get("user")
            if user is None or user.role not in roles:
                from ivr.web.app import forbidden
                return forbidden(request)
            return await handler(request, *args, **kwargs)
        wrapped.allowed_roles = roles
        return wrapped
    return decorate


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --- users --------------------------------------------------------------------------------------
async def add_user(conn: AsyncConnection, login: str, password: str, role: str, *, display_name: str | None = None,
                   department_code: str | None = None, operator_extension: str | None = None) -> WebUserInfo:
    login = validate_login(login)
    role = validate_role(role)
    dep_id = op_id = None
    if department_code:
        dep_id = await conn.scalar(select(Department.id).where(Department.code == department_code))
        if dep_id is None:
            raise WebAuthError(f"no department {department_code!r}")
    if operator_extension:
        row = (await conn.execute(select(Operator.id, Operator.name, Operator.department_id)
                                  .where(Operator.extension == operator_extension))).first()
        if row is None:
            raise WebAuthError(f"no operator with extension {operator_extension!r}")
        op_id = row.id
        display_name = display_name or row.name
        dep_id = dep_id or row.department_id
    if role == "head" and dep_id is None:
        raise WebAuthError("a head of department needs --department CODE")
    if role == "manager" and op_id is None:
        raise WebAuthError("a manager needs --operator EXT (his operator record)")
    if await conn.scalar(select(WebUser.id).where(WebUser.login == login)) is not None:
        raise WebAuthError(f"login {login!r} is taken")
    display_name = (display_name or login).strip()[:200]
    user_id = (await conn.execute(insert(WebUser).values(
        login=login, display_name=display_name, role=role, password_hash=hash_password(password),
        department_id=dep_id, operator_id=op_id).returning(WebUser.id))).scalar_one()
    return WebUserInfo(user_id, login, display_name, role, dep_id, op_id)


async def list_users(conn: AsyncConnection) -> list:
    return (await conn.execute(
        select(WebUser.id, WebUser.login, WebUser.display_name, WebUser.role, WebUser.active,
               Department.code.label("department"), Operator.extension.label("operator"), WebUser.created_at)
        .outerjoin(Department, Department.id == WebUser.department_id)
        .outerjoin(Operator, Operator.id == WebUser.operator_id)
        .order_by(WebUser.login))).all()


async def set_password(conn: AsyncConnection, login: str, password: str) -> None:
    """A new password; every open session of the user ends."""
    user_id = await conn.scalar(update(WebUser).where(WebUser.login == login)
                                .values(password_hash=hash_password(password)).returning(WebUser.id))
    if user_id is None:
        raise WebAuthError(f"no web user {login!r}")
    await conn.execute(delete(WebSession).where(WebSession.user_id == user_id))


async def rehash(conn: AsyncConnection, user_id: int, password_hash: str) -> None:
    await conn.execute(update(WebUser).where(WebUser.id == user_id).values(password_hash=password_hash))


async def find_login(conn: AsyncConnection, login: str):
    """(id, password_hash) of an active user, or None."""
    return (await conn.execute(select(WebUser.id, WebUser.password_hash)
                               .where(WebUser.login == login, WebUser.active.is_(True)))).first()


# --- sessions -----------------------------------------------------------------------------------
async def create_session(conn: AsyncConnection, user_id: int, *, ttl: timedelta = SESSION_TTL,
                         now: datetime | None = None) -> tuple[str, str]:
    """A new session; returns (cookie token, CSRF token)."""
    token, csrf = new_token(), new_token()
    now = now or utcnow()
    await conn.execute(insert(WebSession).values(id=session_key(token), user_id=user_id, csrf_token=csrf,
                                                 created_at=now, expires_at=now + ttl))
    return token, csrf


async def load_session(conn: AsyncConnection, token: str, *, ttl: timedelta = SESSION_TTL,
                       now: datetime | None = None) -> tuple[WebUserInfo, str] | None:
    """(user, CSRF token) for a live session of an active user, extending it (sliding expiry);
    None when unknown or expired (an expired row is deleted)."""
    if not token or len(token) > 200:
        return None
    now = now or utcnow()
    key = session_key(token)
    row = (await conn.execute(
        select(WebSession.expires_at, WebSession.csrf_token, WebUser.id, WebUser.login, WebUser.display_name,
               WebUser.role, WebUser.department_id, WebUser.operator_id)
        .join(WebUser, WebUser.id == WebSession.user_id)
        .where(WebSession.id == key, WebUser.active.is_(True)))).first()
    if row is None:
        return None
    if row.expires_at <= now:
        await conn.execute(delete(WebSession).where(WebSession.id == key))
        return None
    if now + ttl - row.expires_at >= SLIDE_EVERY:
        await conn.execute(update(WebSession).where(WebSession.id == key).values(expires_at=now + ttl))
    user = WebUserInfo(row.id, row.login, row.display_name, row.role, row.department_id, row.operator_id)
    return user, row.csrf_token


async def delete_session(conn: AsyncConnection, token: str) -> None:
    await conn.execute(delete(WebSession).where(WebSession.id == session_key(token)))


async def purge_expired(conn: AsyncConnection, now: datetime | None = None) -> int:
    result = await conn.execute(delete(WebSession).where(WebSession.expires_at <= (now or utcnow())))
    return result.rowcount or 0
