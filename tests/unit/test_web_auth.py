"""Web console auth helpers without a database: argon2 hashing, CSRF tokens, the login rate
limit, the role matrix and the require_role decorator."""

from __future__ import annotations

import asyncio

import pytest

from ivr.web import auth


def test_hash_is_argon2id_and_verifies():
    h = auth.hash_password("correct horse")
    assert h.startswith("$argon2id$")
    assert "correct horse" not in h
    assert auth.verify_password(h, "correct horse")
    assert not auth.verify_password(h, "correct horsE")
    assert not auth.verify_password(h, "")
    assert auth.hash_password("correct horse") != h   # salted


def test_verify_without_hash_or_with_garbage_is_false():
    assert not auth.verify_password(None, "anything at all")
    assert not auth.verify_password("not-a-hash", "anything at all")


def test_password_rules():
    with pytest.raises(auth.WebAuthError, match="too short"):
        auth.hash_password("short")
    with pytest.raises(auth.WebAuthError, match="too long"):
        auth.check_password_rules("x" * 2000)


def test_login_and_role_validation():
    assert auth.validate_login(" boss.1 ") == "boss.1"
    for bad in ("", "a b", "x" * 65, "кто", "a;drop"):
        with pytest.raises(auth.WebAuthError):
            auth.validate_login(bad)
    with pytest.raises(auth.WebAuthError):
        auth.validate_role("root")


def test_csrf_tokens():
    token = auth.new_token()
    assert len(token) >= 40 and token != auth.new_token()
    assert auth.csrf_ok(token, token)
    assert not auth.csrf_ok(token[:-1] + ("A" if token[-1] != "A" else "B"), token)
    assert not auth.csrf_ok("", "")
    assert not auth.csrf_ok(None, token)
    assert not auth.csrf_ok(token, None)


def test_session_key_is_sha256_not_the_token():
    token = auth.new_token()
    key = auth.session_key(token)
    assert len(key) == 64 and token not in key and key == auth.session_key(token)


@pytest.mark.parametrize("role,page,allowed", [
    ("admin", "rules", True), ("admin", "operators", True), ("admin", "clients", True),
    ("head", "rules", False), ("head", "operators", True), ("head", "clients", True), ("head", "wallboard", True),
    ("manager", "rules", False), ("manager", "operators", True), ("manager", "wallboard", False),
    ("manager", "campaigns", False), ("admin", "nonexistent", False),
])
def test_role_matrix(role, page, allowed):
    assert auth.role_allowed(role, page) is allowed


def test_rate_limit_per_login():
    now = [1000.0]
    limiter = auth.LoginLimiter(max_failures=5, window=60, clock=lambda: now[0])
    for _ in range(4):
        limiter.failed("boss")
    assert limiter.wait_seconds("boss") == 0
    limiter.failed("Boss")                      # case-insensitive
    assert 59 <= limiter.wait_seconds("boss") <= 60
    assert limiter.wait_seconds("other") == 0   # per login
    now[0] += 61
    assert limiter.wait_seconds("boss") == 0
    for _ in range(5):
        limiter.failed("boss")
    limiter.succeeded("boss")
    assert limiter.wait_seconds("boss") == 0


class _Request(dict):
    path = "/rules"
    headers: dict = {}


def test_require_role_lets_allowed_roles_through(monkeypatch):
    calls = []

    @auth.require_role("admin")
    async def handler(request):
        calls.append(request["user"].login)
        return "page"

    monkeypatch.setattr("ivr.web.app.forbidden", lambda request: "403")
    admin = auth.WebUserInfo(1, "boss", "Boss", "admin", None, None)
    manager = auth.WebUserInfo(2, "m", "M", "manager", None, 7)
    assert asyncio.run(handler(_Request(user=admin))) == "page"
    assert asyncio.run(handler(_Request(user=manager))) == "403"
    assert asyncio.run(handler(_Request())) == "403"
    assert calls == ["boss"] and handler.allowed_roles == ("admin",)
    with pytest.raises(auth.WebAuthError):
        auth.require_role("root")


def test_user_info_is_frozen():
    user = auth.WebUserInfo(1, "boss", "Boss", "admin", None, None)
    with pytest.raises(Exception):
        user.role = "manager"  # type: ignore[misc]
