"""A small local SMPP 3.4 SMSC for tests and demos (asyncio).

Accepts bind_transceiver/bind_transmitter (checks system_id/password), answers submit_sm
with a message id and (optionally) sends a deliver_sm delivery receipt
"id:... stat:DELIVRD ...", answers enquire_link and unbind, and records everything.
Concatenated UCS2 segments are reassembled in ``messages``.

    async with LocalSmsc(password="secret") as smsc:
        sender = SmppSender("127.0.0.1", smsc.port, "test", "secret", "+74950000000")
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Optional

from ivr.sms.smpp import (BIND_TRANSCEIVER, BIND_TRANSMITTER, DATA_CODING_UCS2, DELIVER_SM,
                          ENQUIRE_LINK, ESM_CLASS_RECEIPT, ESM_CLASS_UDHI, ESME_RINVCMDID,
                          ESME_RINVPASWD, ESME_RINVSYSID, ESME_ROK, GENERIC_NACK, RESP,
                          SUBMIT_SM, UNBIND, Pdu, ShortMessage, SmppProtocolError, cstr,
                          decode_bind, encode_pdu, format_receipt, read_pdu, strip_udh)


@dataclass
class Submitted:
    message_id: str
    source_addr: str
    destination_addr: str
    data_coding: int
    esm_class: int
    text: str                                   # this segment's text
    concat: Optional[tuple[int, int, int]]      # (ref, total, index) or None


@dataclass
class Message:
    """A whole message as the handset would show it."""
    destination_addr: str
    text: str
    message_ids: list[str] = field(default_factory=list)


class LocalSmsc:
    __test__ = False

    def __init__(self, system_id: str = "test", password: str = "secret", *,
                 host: str = "127.0.0.1", port: int = 0, receipts: bool = True,
                 receipt_status: str = "DELIVRD", receipt_delay: float = 0.0,
                 submit_status: int = ESME_ROK):
        self.system_id, self.password = system_id, password
        self.host, self.port = host, port
        self.receipts, self.receipt_status, self.receipt_delay = (
            receipts, receipt_status, receipt_delay)
        self.submit_status = submit_status
        self.received: list[Pdu] = []            # every PDU received, in order
        self.binds: list[tuple[int, str, str, str]] = []  # (command, system_id, password, type)
        self.submitted: list[Submitted] = []
        self.messages: list[Message] = []
        self.bound = asyncio.Event()
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._server: Optional[asyncio.base_events.Server] = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._parts: dict[tuple[str, int], dict[int, Submitted]] = {}
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        await self.drop_connections()
        for task in list(self._tasks):
            task.cancel()
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> "LocalSmsc":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def drop_connections(self) -> None:
        """Close every client connection abruptly (simulates an SMSC restart)."""
        self.bound.clear()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    @property
    def connections(self) -> int:
        return len(self._writers)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._writers.add(writer)
        bound = False
        try:
            while True:
                pdu = await read_pdu(reader)
                self.received.append(pdu)
                cid = pdu.command_id
                if cid in (BIND_TRANSCEIVER, BIND_TRANSMITTER):
                    system_id, password, system_type = decode_bind(pdu.body)
                    self.binds.append((cid, system_id, password, system_type))
                    if system_id != self.system_id:
                        status = ESME_RINVSYSID
                    elif password != self.password:
                        status = ESME_RINVPASWD
                    else:
                        status, bound = ESME_ROK, cid == BIND_TRANSCEIVER
                        self.bound.set()
                    writer.write(encode_pdu(cid | RESP, status, pdu.sequence,
                                            cstr("localsmsc")))
                elif cid == SUBMIT_SM:
                    if self.submit_status != ESME_ROK:
                        writer.write(encode_pdu(cid | RESP, self.submit_status, pdu.sequence))
                        continue
                    message_id = f"{next(self._ids):08x}"
                    self._record(message_id, ShortMessage.decode(pdu.body))
                    writer.write(encode_pdu(cid | RESP, ESME_ROK, pdu.sequence,
                                            cstr(message_id)))
                    if self.receipts and bound:
                        self._spawn(self._send_receipt(writer, message_id,
                                                       datetime.now(timezone.utc)))
                elif cid == ENQUIRE_LINK:
                    writer.write(encode_pdu(cid | RESP, ESME_ROK, pdu.sequence))
                elif cid == UNBIND:
                    writer.write(encode_pdu(cid | RESP, ESME_ROK, pdu.sequence))
                    await writer.drain()
                    break
                elif pdu.is_response:
                    pass                                  # deliver_sm_resp etc.
                else:
                    writer.write(encode_pdu(GENERIC_NACK, ESME_RINVCMDID, pdu.sequence))
        except (asyncio.IncompleteReadError, ConnectionError, SmppProtocolError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_receipt(self, writer, message_id: str, submitted: datetime) -> None:
        if self.receipt_delay:
            await asyncio.sleep(self.receipt_delay)
        if writer.is_closing():
            return
        body = ShortMessage(
            source_addr="", destination_addr="",
            short_message=format_receipt(message_id, self.receipt_status, submitted,
                                         datetime.now(timezone.utc)),
            esm_class=ESM_CLASS_RECEIPT, data_coding=0, registered_delivery=0).encode()
        writer.write(encode_pdu(DELIVER_SM, ESME_ROK, next(self._seq), body))

    def _record(self, message_id: str, sm: ShortMessage) -> None:
        payload, concat = sm.short_message, None
        if sm.esm_class & ESM_CLASS_UDHI:
            concat, payload = strip_udh(payload)
        codec = "utf-16-be" if sm.data_coding == DATA_CODING_UCS2 else "latin-1"
        text = payload.decode(codec, "replace")
        seg = Submitted(message_id, sm.source_addr, sm.destination_addr, sm.data_coding,
                        sm.esm_class, text, concat)
        self.submitted.append(seg)
        if concat is None:
            self.messages.append(Message(sm.destination_addr, text, [message_id]))
            return
        ref, total, _ = concat
        key = (sm.destination_addr, ref)
        parts = self._parts.setdefault(key, {})
        parts[concat[2]] = seg
        if len(parts) == total:
            del self._parts[key]
            ordered = [parts[i] for i in sorted(parts)]
            self.messages.append(Message(sm.destination_addr,
                                         "".join(p.text for p in ordered),
                                         [p.message_id for p in ordered]))
