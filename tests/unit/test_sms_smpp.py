"""SMPP sender against the local SMSC over real sockets on 127.0.0.1."""

import asyncio
import socket
import time

import pytest

from ivr.sms.smpp import (DATA_CODING_UCS2, ESM_CLASS_UDHI, ESME_RSUBMITFAIL, DeliveryReceipt,
                          SmppAuthError, SmppSender, SmppSubmitError, SmppUnavailable,
                          split_ucs2)
from ivr.sms.testing_smsc import LocalSmsc

pytestmark = pytest.mark.timeout(10)

RU = "Здравствуйте! Ваша запись к врачу подтверждена на 24.11 в 10:30."
SRC = "+74950000000"
DST = "+79161234567"


def sender_for(smsc: LocalSmsc, password: str = "secret", **kw) -> SmppSender:
    kw.setdefault("timeout", 2.0)
    kw.setdefault("reconnect_min_delay", 0.05)
    kw.setdefault("reconnect_max_delay", 0.2)
    return SmppSender("127.0.0.1", smsc.port, "test", password, SRC, **kw)


async def until(predicate, timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def smsc():
    async with LocalSmsc(password="secret") as server:
        yield server


async def test_bind_ok(smsc):
    async with sender_for(smsc, system_type="ivr") as sender:
        assert sender.connected
        assert smsc.binds[0][1:] == ("test", "secret", "ivr")


async def test_wrong_password_refused(smsc):
    sender = sender_for(smsc, password="wrong")
    with pytest.raises(SmppAuthError) as err:
        await sender.connect()
    assert err.value.command_status == 0x0E
    assert "ESME_RINVPASWD" in str(err.value)
    assert not sender.connected
    await sender.close()


async def test_russian_text_sent_in_ucs2(smsc):
    async with sender_for(smsc) as sender:
        message_id = await sender.send(DST, RU)
    assert message_id
    [seg] = smsc.submitted
    assert seg.data_coding == DATA_CODING_UCS2 == 0x08
    assert seg.destination_addr == "79161234567"
    assert seg.source_addr == "74950000000"
    assert seg.text == RU
    assert seg.concat is None and not seg.esm_class & ESM_CLASS_UDHI


async def test_long_message_split_and_reassembled(smsc):
    text = ("Напоминаем: приём у терапевта завтра в 09:15, кабинет 214. "
            "Пожалуйста, возьмите паспорт и полис ОМС. Если не сможете прийти, "
            "ответьте на звонок или позвоните в регистратуру. 😀 Спасибо!")
    assert len(text) > 140
    async with sender_for(smsc) as sender:
        message_id = await sender.send(DST, text)
    assert len(smsc.submitted) == len(split_ucs2(text)) == 3
    assert all(s.esm_class & ESM_CLASS_UDHI for s in smsc.submitted)
    assert [s.concat[1:] for s in smsc.submitted] == [(3, 1), (3, 2), (3, 3)]
    [message] = smsc.messages
    assert message.text == text
    assert message.message_ids[0] == message_id


def test_split_limits():
    assert len(split_ucs2("я" * 70)) == 1
    parts = split_ucs2("я" * 71)
    assert [len(p) // 2 for p in parts] == [67, 4]


async def test_delivery_receipt_reaches_callback(smsc):
    got: list[DeliveryReceipt] = []

    async def on_receipt(receipt):
        got.append(receipt)

    async with sender_for(smsc, on_receipt=on_receipt) as sender:
        message_id = await sender.send(DST, RU)
        await until(lambda: got)
        from_iter = await asyncio.wait_for(sender.receipts().__anext__(), 2)
    assert got[0].message_id == message_id == from_iter.message_id
    assert got[0].status == "DELIVRD"
    assert got[0].done_at is not None


async def test_undelivered_receipt_status():
    async with LocalSmsc(password="secret", receipt_status="UNDELIV") as smsc:
        async with sender_for(smsc) as sender:
            message_id = await sender.send(DST, RU)
            receipt = await asyncio.wait_for(sender.receipts().__anext__(), 2)
    assert (receipt.message_id, receipt.status) == (message_id, "UNDELIV")


async def test_submit_rejected():
    async with LocalSmsc(password="secret", submit_status=ESME_RSUBMITFAIL) as smsc:
        async with sender_for(smsc) as sender:
            with pytest.raises(SmppSubmitError) as err:
                await sender.send(DST, RU)
    assert err.value.command_status == ESME_RSUBMITFAIL


async def test_reconnects_after_drop(smsc):
    async with sender_for(smsc) as sender:
        await sender.send(DST, "первое")
        await smsc.drop_connections()
        await until(lambda: sender.reconnects == 1 and sender.connected)
        await sender.send(DST, "второе")
    assert [m.text for m in smsc.messages] == ["первое", "второе"]
    assert len(smsc.binds) == 2


async def test_enquire_link_keepalive(smsc):
    async with sender_for(smsc, enquire_interval=0.05) as sender:
        await until(lambda: sum(p.command_id == 0x15 for p in smsc.received) >= 2)
        assert sender.connected


async def test_unreachable_port_fails_fast():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sender = SmppSender("127.0.0.1", port, "test", "secret", SRC, timeout=2.0)
    started = time.monotonic()
    with pytest.raises(SmppUnavailable):
        await sender.connect()
    assert time.monotonic() - started < 2.0
    await sender.close()
