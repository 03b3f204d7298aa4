"""The HTTP SMS gateway driver (ivr.sms.http_gateway) against a real aiohttp server on
127.0.0.1: the request it sends, the message id, temporary and permanent failures, timeouts,
bad answers, and the delivery callback (parser and handler)."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ivr.sms.http_gateway import (HttpSmsGateway, ReceiptError, SmsBadAnswer, SmsRejected, SmsUnavailable,
                                  parse_callback, parse_receipt)
from ivr.sms.smpp import DeliveryReceipt, SmppSubmitError, SmppUnavailable

TOKEN = "s3cr3t-token-never-logged"
TEXT = "Пётр Николаевич, здравствуйте. Компания «Эни»: документы отправлены."


class FakeGateway:
    """Answers POST /send as told; records what it got."""

    def __init__(self):
        self.requests: list[dict] = []
        self.status = 200
        self.answer: bytes = b'{"id": "msg-1"}'
        self.delay = 0.0

    async def handler(self, request: web.Request) -> web.Response:
        self.requests.append({"headers": dict(request.headers), "json": await request.json()})
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status, body=self.answer, content_type="application/json")


@pytest.fixture
async def gateway_server():
    fake = FakeGateway()
    app = web.Application()
    app.router.add_post("/send", fake.handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield fake, str(server.make_url("/send"))
    await server.close()


def make(url: str, **kwargs) -> HttpSmsGateway:
    return HttpSmsGateway(url, token=TOKEN, sender="Eni", timeout=kwargs.pop("timeout", 2.0), **kwargs)


async def test_send_posts_json_with_bearer_token_and_returns_the_id(gateway_server):
    fake, url = gateway_server
    async with make(url, callback_url="https://ivr.example/sms/receipts") as gw:
        assert await gw.send("+79161234567", TEXT) == "msg-1"
    [req] = fake.requests
    assert req["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert req["json"] == {"to": "+79161234567", "text": TEXT, "sender": "Eni",
                           "callback_url": "https://ivr.example/sms/receipts"}
    assert TOKEN not in repr(gw)


async def test_configurable_id_field_nested_and_numeric(gateway_server):
    fake, url = gateway_server
    fake.answer = json.dumps({"data": {"message_id": 12345}}).encode()
    async with make(url, id_field="data.message_id") as gw:
        assert await gw.send("+79161234567", "x") == "12345"
    assert "callback_url" not in fake.requests[0]["json"]


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_5xx_and_429_are_temporary(gateway_server, status, caplog):
    fake, url = gateway_server
    fake.status, fake.answer = status, b'{"error": "busy"}'
    caplog.set_level(logging.DEBUG)
    async with make(url) as gw:
        with pytest.raises(SmsUnavailable) as err:
            await gw.send("+79161234567", "x")
    assert isinstance(err.value, SmppUnavailable)
    assert err.value.http_status == status and err.value.cause == f"gateway http {status}"
    assert TOKEN not in str(err.value) and TOKEN not in caplog.text


@pytest.mark.parametrize("status,body,code", [
    (400, b'{"error": {"code": "INVALID_NUMBER", "message": "bad"}}', "INVALID_NUMBER"),
    (401, b'{"code": 17}', "17"),
    (402, b"no balance", ""),
])
async def test_4xx_is_a_permanent_rejection(gateway_server, status, body, code):
    fake, url = gateway_server
    fake.status, fake.answer = status, body
    async with make(url) as gw:
        with pytest.raises(SmsRejected) as err:
            await gw.send("+79161234567", "x")
    assert isinstance(err.value, SmppSubmitError) and not isinstance(err.value, SmppUnavailable)
    assert err.value.http_status == status and err.value.code == code
    assert err.value.cause == f"rejected http {status}" + (f" {code}" if code else "")
    assert len(err.value.cause) <= 40
    assert TOKEN not in str(err.value)


async def test_timeout_is_temporary(gateway_server):
    fake, url = gateway_server
    fake.delay = 2.0
    async with make(url, timeout=0.3) as gw:
        with pytest.raises(SmsUnavailable) as err:
            await gw.send("+79161234567", "x")
    assert err.value.cause == "gateway_timeout"
    assert "0.3s" in str(err.value)


async def test_connection_refused_is_temporary():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with make(f"http://127.0.0.1:{port}/send") as gw:
        with pytest.raises(SmsUnavailable) as err:
            await gw.send("+79161234567", "x")
    assert err.value.cause == "gateway_unreachable"


@pytest.mark.parametrize("answer,cause", [
    (b"<html>OK</html>", "gateway_bad_answer not_json"),
    (b'{"status": "ok"}', "gateway_bad_answer no_id"),
    (b'{"id": ""}', "gateway_bad_answer no_id"),
    (b'[1, 2]', "gateway_bad_answer no_id"),
])
async def test_bad_answer_is_a_clear_error(gateway_server, answer, cause):
    fake, url = gateway_server
    fake.answer = answer
    async with make(url) as gw:
        with pytest.raises(SmsBadAnswer) as err:
            await gw.send("+79161234567", "x")
    assert err.value.cause == cause
    assert "message id" in str(err.value) or "not JSON" in str(err.value)


def test_constructor_checks():
    with pytest.raises(ValueError):
        HttpSmsGateway("ftp://x", token=TOKEN, sender="Eni")
    with pytest.raises(ValueError):
        HttpSmsGateway("https://x", token="", sender="Eni")


# --- receipts -------------------------------------------------------------------------------

def test_parse_receipt_statuses_and_time():
    r = parse_receipt({"id": "msg-1", "status": "delivered", "at": "2025-03-11T09:01:02Z"})
    assert r == DeliveryReceipt("msg-1", "DELIVRD", datetime(2025, 3, 11, 9, 1, 2, tzinfo=timezone.utc), "msg-1", "")
    assert parse_receipt({"id": 7, "status": "UNDELIVERED", "error": "absent"}).status == "UNDELIV"
    assert parse_receipt({"id": "a", "status": "expired"}).status == "EXPIRED"
    assert parse_receipt({"id": "a", "status": "rejected"}).status == "REJECTD"
    assert parse_receipt({"id": "a", "status": "enroute"}).status == "ENROUTE"
    assert parse_receipt({"id": "a", "status": "delivered", "at": 1741683600}).done_at == datetime(
        2025, 3, 11, 9, 0, tzinfo=timezone.utc)
    assert parse_receipt({"id": "a", "status": "delivered", "at": "2025-03-11T12:00:00"}).done_at.tzinfo is not None
    assert parse_receipt({"msg": "b", "status": "delivered"}, id_field="msg").message_id == "b"


@pytest.mark.parametrize("garbage,words", [
    (b"not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[]", "empty"),
    (b'"delivered"', "expected a JSON object"),
    (b'{"status": "delivered"}', "message id"),
    (b'{"id": "", "status": "delivered"}', "message id"),
    (b'{"id": true, "status": "delivered"}', "message id"),
    (b'{"id": "a"}', "without a status"),
    (b'{"id": "a", "status": "teleported"}', "unknown status"),
    (b'{"id": "a", "status": "delivered", "at": "yesterday"}', "bad 'at'"),
    (b'{"id": "a", "status": "delivered", "at": [1]}', "bad 'at'"),
])
def test_parse_callback_rejects_garbage(garbage, words):
    with pytest.raises(ReceiptError) as err:
        parse_callback(garbage)
    assert words in str(err.value)


def test_parse_callback_list():
    receipts = parse_callback(json.dumps([{"id": "a", "status": "delivered"}, {"id": "b", "status": "undelivered"}]))
    assert [(r.message_id, r.status) for r in receipts] == [("a", "DELIVRD"), ("b", "UNDELIV")]


async def test_callback_handler_queues_receipts_and_checks_the_secret():
    gw = HttpSmsGateway("http://127.0.0.1:1/send", token=TOKEN, sender="Eni", callback_secret="cb-secret")
    app = web.Application()
    gw.add_callback_route(app)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        body = {"id": "m1", "status": "delivered"}
        assert (await client.post("/sms/receipts", json=body)).status == 401
        assert (await client.post("/sms/receipts?token=wrong", json=body)).status == 401
        assert (await client.post("/sms/receipts?token=cb-secret", data=b"garbage")).status == 400
        assert (await client.post("/sms/receipts?token=cb-secret", json=body)).status == 204
        resp = await client.post("/sms/receipts", json=[{"id": "m2", "status": "expired"}],
                                 headers={"Authorization": "Bearer cb-secret"})
        assert resp.status == 204
    stream = gw.receipts()
    first = await asyncio.wait_for(stream.__anext__(), 1)
    second = await asyncio.wait_for(stream.__anext__(), 1)
    assert [(first.message_id, first.status), (second.message_id, second.status)] == [
        ("m1", "DELIVRD"), ("m2", "EXPIRED")]
    await gw.close()


def test_sms_text_drops_the_key_press_sentences():
    from ivr.notify.sms_channel import sms_text

    prompt = ("Пётр Николаевич, здравствуйте. Компания «Эни». 07.02 мы отправили вам документы. "
              "Если вы их уже получили, нажмите 1. Если нет — нажмите 2.")
    assert sms_text(prompt) == "Пётр Николаевич, здравствуйте. Компания «Эни». 07.02 мы отправили вам документы."
    assert sms_text("Заказ прибыл на склад по адресу: ул. Складская, д. 5.") == \
        "Заказ прибыл на склад по адресу: ул. Складская, д. 5."
    assert sms_text("Нажмите 1.") == "Нажмите 1."   # nothing left: send it as written
