"""The notification HTTP API against the real Postgres, through aiohttp's test server."""

from __future__ import annotations

import secrets

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from ivr.notify.http import OPENAPI_PATH, ApiConfigError, make_app
from ivr.notify.templates import TemplateStore
from models.db import make_async_engine

pytestmark = pytest.mark.db

TOKEN = secrets.token_hex(16)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TEMPLATE = "{{ address_name }}, здравствуйте. {{ sent_date }} мы отправили вам {{ documents }}."
VARS = {"sent_date": "07.02", "documents": "документы", "address_name": "Пётр Николаевич"}


def unique_phone() -> str:
    return "+7916" + str(secrets.randbelow(10**7)).zfill(7)


@pytest.fixture
async def client(database_url, tmp_path):
    (tmp_path / "docs_sent.txt.j2").write_text(TEMPLATE, encoding="utf-8")
    engine = make_async_engine(database_url)
    app = make_app(engine, TemplateStore(tmp_path), token=TOKEN)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client
    await engine.dispose()


async def test_create_is_idempotent_and_readable(client):
    body = {"phone": unique_phone(), "template": "docs_sent", "variables": VARS,
            "external_id": "crm-" + secrets.token_hex(6), "channel": "call"}
    first = await client.post("/v1/notifications", json=body, headers=AUTH)
    assert first.status == 201, await first.text()
    job = await first.json()
    assert job["status"] == "pending" and job["channel"] == "call" and "07.02" in job["prompt_text"]
    assert first.headers["Location"] == f"/v1/notifications/{job['id']}"
    again = await client.post("/v1/notifications", json=body, headers=AUTH)
    assert again.status == 200 and (await again.json())["id"] == job["id"]

    shown = await client.get(f"/v1/notifications/{job['id']}", headers=AUTH)
    assert shown.status == 200
    data = await shown.json()
    assert data["id"] == job["id"] and data["attempts"] == []

    listed = await client.get("/v1/notifications", params={"status": "pending", "limit": "1000"}, headers=AUTH)
    assert listed.status == 200 and job["id"] in {j["id"] for j in (await listed.json())["jobs"]}

    cancelled = await client.post(f"/v1/notifications/{job['id']}/cancel", headers=AUTH)
    assert cancelled.status == 200 and (await cancelled.json())["status"] == "cancelled"
    twice = await client.post(f"/v1/notifications/{job['id']}/cancel", headers=AUTH)
    assert twice.status == 409 and "is final" in (await twice.json())["errors"][0]["message"]


async def test_validation_errors_are_422_naming_fields(client):
    response = await client.post("/v1/notifications", headers=AUTH,
                                 json={"phone": 7916, "template": "docs_sent", "max_attempts": "x"})
    assert response.status == 422
    fields = {e["field"] for e in (await response.json())["errors"]}
    assert fields == {"phone", "max_attempts"}
    response = await client.post("/v1/notifications", headers=AUTH,
                                 json={"phone": unique_phone(), "template": "docs_sent", "variables": {}})
    assert response.status == 422
    assert (await response.json())["errors"][0]["field"].startswith("variables.")
    response = await client.post("/v1/notifications", headers=AUTH,
                                 json={"phone": "123", "template": "docs_sent", "variables": VARS})
    assert response.status == 422 and (await response.json())["errors"][0]["field"] == "phone"
    bad_json = await client.post("/v1/notifications", headers={**AUTH, "Content-Type": "application/json"},
                                 data=b"{nope")
    assert bad_json.status == 400
    bad_status = await client.get("/v1/notifications", params={"status": "nope"}, headers=AUTH)
    assert bad_status.status == 422 and (await bad_status.json())["errors"][0]["field"] == "status"


async def test_unknown_job_is_404(client):
    assert (await client.get("/v1/notifications/999999999", headers=AUTH)).status == 404
    assert (await client.post("/v1/notifications/999999999/cancel", headers=AUTH)).status == 404
    assert (await client.get("/v1/notifications/abc", headers=AUTH)).status == 404


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-wrong-token"},
                                     {"Authorization": f"Basic {TOKEN}"}])
async def test_token_required_except_for_the_schema(client, headers):
    for method, path in [("GET", "/v1/notifications"), ("POST", "/v1/notifications"),
                         ("GET", "/v1/notifications/1"), ("POST", "/v1/notifications/1/cancel")]:
        response = await client.request(method, path, headers=headers)
        assert response.status == 401, (method, path)
    schema = await client.get("/openapi.yaml", headers=headers)
    assert schema.status == 200
    assert "/v1/notifications" in yaml.safe_load(await schema.text())["paths"]


def test_no_token_refuses_to_start(monkeypatch, tmp_path):
    monkeypatch.delenv("IVR_API_TOKEN", raising=False)
    with pytest.raises(ApiConfigError, match="IVR_API_TOKEN is not set"):
        make_app(None, TemplateStore(tmp_path))
    with pytest.raises(ApiConfigError, match="too short"):
        make_app(None, TemplateStore(tmp_path), token="short")
    monkeypatch.setenv("IVR_API_TOKEN", TOKEN)
    assert make_app(None, TemplateStore(tmp_path)) is not None


def test_openapi_lists_the_paths():
    spec = yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))
    assert spec["openapi"].startswith("3.1")
    assert set(spec["paths"]) == {"/v1/notifications", "/v1/notifications/{id}", "/v1/notifications/{id}/cancel",
                                  "/openapi.yaml"}
    assert set(spec["paths"]["/v1/notifications"]) == {"get", "post"}
    assert set(spec["paths"]["/v1/notifications/{id}/cancel"]) == {"post"}
    assert spec["paths"]["/openapi.yaml"]["get"]["security"] == []
    from models.notifications import JobRequest
    from dataclasses import fields
    assert set(spec["components"]["schemas"]["JobRequest"]["properties"]) == {f.name for f in fields(JobRequest)}
