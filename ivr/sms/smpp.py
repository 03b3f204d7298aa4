"""SMPP 3.4 client (ESME) for the SMS channel, asyncio, no third-party dependency.

Only the PDUs the product needs are implemented: bind_transceiver/bind_transmitter,
submit_sm (UCS2, concatenated with UDH), deliver_sm (delivery receipts), enquire_link,
unbind, generic_nack.  See docs/sms.md for why this is not built on smpplib/aiosmpplib.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import re
import struct
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import AsyncIterator, Awaitable, Callable, Optional, Union

log = logging.getLogger(__name__)

# command ids
GENERIC_NACK = 0x80000000
BIND_RECEIVER = 0x00000001
BIND_TRANSMITTER = 0x00000002
SUBMIT_SM = 0x00000004
DELIVER_SM = 0x00000005
UNBIND = 0x00000006
BIND_TRANSCEIVER = 0x00000009
ENQUIRE_LINK = 0x00000015
RESP = 0x80000000

# command statuses used here
ESME_ROK = 0x00
ESME_RINVMSGLEN = 0x01
ESME_RINVCMDID = 0x03
ESME_RBINDFAIL = 0x0D
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
ESME_RSUBMITFAIL = 0x45
ESME_RTHROTTLED = 0x58

STATUS_NAMES = {
    0x00: "ESME_ROK", 0x01: "ESME_RINVMSGLEN", 0x02: "ESME_RINVCMDLEN", 0x03: "ESME_RINVCMDID",
    0x04: "ESME_RINVBNDSTS", 0x05: "ESME_RALYBND", 0x08: "ESME_RSYSERR", 0x0A: "ESME_RINVSRCADR",
    0x0B: "ESME_RINVDSTADR", 0x0D: "ESME_RBINDFAIL", 0x0E: "ESME_RINVPASWD",
    0x0F: "ESME_RINVSYSID", 0x14: "ESME_RMSGQFUL", 0x45: "ESME_RSUBMITFAIL",
    0x58: "ESME_RTHROTTLED",
}

DATA_CODING_UCS2 = 0x08
ESM_CLASS_UDHI = 0x40
ESM_CLASS_RECEIPT = 0x04
TLV_RECEIPTED_MESSAGE_ID = 0x001E
TLV_MESSAGE_STATE = 0x0427
UCS2_SINGLE_BYTES = 140          # 70 UCS2 chars
UCS2_SEGMENT_BYTES = 134         # 67 UCS2 chars + 6-byte UDH
MESSAGE_STATES = {1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV",
                  6: "ACCEPTD", 7: "UNKNOWN", 8: "REJECTD"}

HEADER = struct.Struct(">IIII")
MAX_PDU = 64 * 1024


# ---------------------------------------------------------------- errors

class SmppError(Exception):
    """Base class for SMPP errors."""


class SmppUnavailable(SmppError):
    """SMSC unreachable, connection lost or no response in time."""


class SmppAuthError(SmppError):
    """The SMSC refused the bind (wrong system_id/password, bind not allowed)."""

    def __init__(self, command_status: int, system_id: str):
        self.command_status = command_status
        super().__init__(f"SMSC refused bind for system_id {system_id!r}: "
                         f"{status_name(command_status)} (0x{command_status:08X})")


class SmppSubmitError(SmppError):
    """submit_sm was rejected by the SMSC."""

    def __init__(self, command_status: int, destination: str):
        self.command_status = command_status
        super().__init__(f"SMSC rejected submit_sm to {destination}: "
                         f"{status_name(command_status)} (0x{command_status:08X})")


class SmppProtocolError(SmppError):
    """Malformed PDU."""


def status_name(status: int) -> str:
    return STATUS_NAMES.get(status, "ESME_UNKNOWN")


# ---------------------------------------------------------------- codec

@dataclass
class Pdu:
    command_id: int
    command_status: int
    sequence: int
    body: bytes = b""

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & RESP)


def encode_pdu(command_id: int, status: int, sequence: int, body: bytes = b"") -> bytes:
    return HEADER.pack(HEADER.size + len(body), command_id, status, sequence) + body


async def read_pdu(reader: asyncio.StreamReader) -> Pdu:
    """Read one PDU; raises asyncio.IncompleteReadError on EOF."""
    header = await reader.readexactly(HEADER.size)
    length, command_id, status, sequence = HEADER.unpack(header)
    if length < HEADER.size or length > MAX_PDU:
        raise SmppProtocolError(f"bad command_length {length}")
    body = await reader.readexactly(length - HEADER.size)
    return Pdu(command_id, status, sequence, body)


def cstr(value: str, encoding: str = "ascii") -> bytes:
    return value.encode(encoding) + b"\x00"


def read_cstr(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.find(b"\x00", pos)
    if end < 0:
        raise SmppProtocolError("unterminated C-Octet string")
    return buf[pos:end].decode("latin-1"), end + 1


def encode_bind(system_id: str, password: str, system_type: str = "") -> bytes:
    # interface_version 0x34, addr_ton, addr_npi, address_range
    return cstr(system_id) + cstr(password) + cstr(system_type) + bytes([0x34, 0, 0]) + b"\x00"


def decode_bind(body: bytes) -> tuple[str, str, str]:
    system_id, pos = read_cstr(body, 0)
    password, pos = read_cstr(body, pos)
    system_type, pos = read_cstr(body, pos)
    return system_id, password, system_type


@dataclass
class ShortMessage:
    """Body of submit_sm / deliver_sm (same layout)."""

    source_addr: str
    destination_addr: str
    short_message: bytes
    source_ton: int = 1
    source_npi: int = 1
    dest_ton: int = 1
    dest_npi: int = 1
    esm_class: int = 0
    data_coding: int = DATA_CODING_UCS2
    registered_delivery: int = 1
    service_type: str = ""
    tlvs: dict[int, bytes] | None = None

    def encode(self) -> bytes:
        if len(self.short_message) > 254:
            raise ValueError("short_message longer than 254 octets")
        body = (cstr(self.service_type)
                + bytes([self.source_ton, self.source_npi]) + cstr(self.source_addr)
                + bytes([self.dest_ton, self.dest_npi]) + cstr(self.destination_addr)
                + bytes([self.esm_class, 0, 0]) + b"\x00" + b"\x00"
                + bytes([self.registered_delivery, 0, self.data_coding, 0,
                         len(self.short_message)])
                + self.short_message)
        for tag, value in (self.tlvs or {}).items():
            body += struct.pack(">HH", tag, len(value)) + value
        return body

    @classmethod
    def decode(cls, body: bytes) -> "ShortMessage":
        try:
            service_type, pos = read_cstr(body, 0)
            source_ton, source_npi = body[pos], body[pos + 1]
            source_addr, pos = read_cstr(body, pos + 2)
            dest_ton, dest_npi = body[pos], body[pos + 1]
            destination_addr, pos = read_cstr(body, pos + 2)
            esm_class = body[pos]
            pos += 3                                   # esm_class, protocol_id, priority_flag
            _, pos = read_cstr(body, pos)              # schedule_delivery_time
            _, pos = read_cstr(body, pos)              # validity_period
            registered_delivery, data_coding, sm_length = body[pos], body[pos + 2], body[pos + 4]
            pos += 5
            short_message = body[pos:pos + sm_length]
            if len(short_message) != sm_length:
                raise SmppProtocolError("short_message truncated")
            pos += sm_length
            tlvs: dict[int, bytes] = {}
            while pos + 4 <= len(body):
                tag, length = struct.unpack_from(">HH", body, pos)
                tlvs[tag] = body[pos + 4:pos + 4 + length]
                pos += 4 + length
        except IndexError as exc:
            raise SmppProtocolError("short submit_sm/deliver_sm body") from exc
        return cls(source_addr, destination_addr, short_message, source_ton, source_npi,
                   dest_ton, dest_npi, esm_class, data_coding, registered_delivery,
                   service_type, tlvs)


def split_ucs2(text: str) -> list[bytes]:
    """UCS2 (UTF-16BE) payloads: one if it fits 70 chars, else 67-char segments.

    A segment never ends between the halves of a surrogate pair."""
    data = text.encode("utf-16-be")
    if len(data) <= UCS2_SINGLE_BYTES:
        return [data]
    parts, pos = [], 0
    while pos < len(data):
        end = min(pos + UCS2_SEGMENT_BYTES, len(data))
        if end < len(data) and 0xD8 <= data[end - 2] <= 0xDB:
            end -= 2
        parts.append(data[pos:end])
        pos = end
    return parts


def udh_concat(ref: int, total: int, index: int) -> bytes:
    """8-bit reference concatenation IE (0x00)."""
    return bytes([0x05, 0x00, 0x03, ref & 0xFF, total, index])


def strip_udh(payload: bytes) -> tuple[Optional[tuple[int, int, int]], bytes]:
    """-> ((ref, total, index) or None, text bytes) for a payload with UDHI set."""
    udhl = payload[0]
    udh, rest = payload[1:1 + udhl], payload[1 + udhl:]
    pos, concat = 0, None
    while pos + 2 <= len(udh):
        iei, iel = udh[pos], udh[pos + 1]
        data = udh[pos + 2:pos + 2 + iel]
        if iei == 0x00 and iel == 3:
            concat = (data[0], data[1], data[2])
        elif iei == 0x08 and iel == 4:
            concat = ((data[0] << 8) | data[1], data[2], data[3])
        pos += 2 + iel
    return concat, rest


def address(addr: str) -> tuple[int, int, str]:
    """(ton, npi, addr): E.164 numbers international/ISDN, otherwise alphanumeric."""
    digits = addr[1:] if addr.startswith("+") else addr
    if digits.isdigit():
        return 1, 1, digits
    return 5, 0, addr


# ---------------------------------------------------------------- receipts

@dataclass(frozen=True)
class DeliveryReceipt:
    message_id: str                 # id returned by send() (first segment for long messages)
    status: str                     # DELIVRD, UNDELIV, EXPIRED, REJECTD, ...
    done_at: Optional[datetime]     # from "done date:", read as UTC; None if absent
    segment_id: str = ""            # id of the segment the SMSC reported on
    error: str = ""                 # "err:" field, raw


_RECEIPT_RE = {
    "id": re.compile(r"\bid:(\S+)", re.I),
    "stat": re.compile(r"\bstat:(\w+)", re.I),
    "done": re.compile(r"\bdone date:(\d{10,12})", re.I),
    "err": re.compile(r"\berr:(\w+)", re.I),
}


def parse_receipt(sm: ShortMessage) -> DeliveryReceipt:
    text = sm.short_message.decode("latin-1")
    found = {key: rx.search(text) for key, rx in _RECEIPT_RE.items()}
    tlvs = sm.tlvs or {}
    if TLV_RECEIPTED_MESSAGE_ID in tlvs:
        message_id = tlvs[TLV_RECEIPTED_MESSAGE_ID].rstrip(b"\x00").decode("latin-1")
    elif found["id"]:
        message_id = found["id"].group(1)
    else:
        raise SmppProtocolError(f"delivery receipt without message id: {text!r}")
    if found["stat"]:
        status = found["stat"].group(1).upper()
    elif TLV_MESSAGE_STATE in tlvs:
        status = MESSAGE_STATES.get(tlvs[TLV_MESSAGE_STATE][0], "UNKNOWN")
    else:
        status = "UNKNOWN"
    done_at = None
    if found["done"]:
        raw = found["done"].group(1)
        fmt = "%y%m%d%H%M%S" if len(raw) == 12 else "%y%m%d%H%M"
        try:
            done_at = datetime.strptime(raw, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            done_at = None
    return DeliveryReceipt(message_id, status, done_at, message_id,
                           found["err"].group(1) if found["err"] else "")


def format_receipt(message_id: str, status: str, submitted: datetime, done: datetime,
                   text: str = "") -> bytes:
    return (f"id:{message_id} sub:001 dlvrd:{'001' if status == 'DELIVRD' else '000'} "
            f"submit date:{submitted:%y%m%d%H%M} done date:{done:%y%m%d%H%M} "
            f"stat:{status} err:000 text:{text[:20]}").encode("latin-1", "replace")


# ---------------------------------------------------------------- sender

ReceiptCallback = Callable[[DeliveryReceipt], Union[None, Awaitable[None]]]


class SmppSender:
    """Persistent SMPP session to one SMSC.

    ``await connect()`` binds (raising SmppAuthError / SmppUnavailable); afterwards a lost
    connection is re-established in the background with exponential back-off, and
    ``send()`` waits up to ``timeout`` for it.  Delivery receipts go to ``on_receipt``
    (sync or async) and to the ``receipts()`` async iterator."""

    def __init__(self, host: str, port: int, system_id: str, password: str, source_addr: str,
                 *, system_type: str = "", bind: str = "transceiver",
                 on_receipt: Optional[ReceiptCallback] = None, timeout: float = 10.0,
                 enquire_interval: float = 30.0, reconnect_min_delay: float = 0.5,
                 reconnect_max_delay: float = 30.0):
        if bind not in ("transceiver", "transmitter"):
            raise ValueError("bind must be 'transceiver' or 'transmitter'")
        self.host, self.port = host, port
        self.system_id, self.password, self.system_type = system_id, password, system_type
        self.source_addr, self.bind = source_addr, bind
        self.on_receipt = on_receipt
        self.timeout = timeout
        self.enquire_interval = enquire_interval
        self.reconnect_min_delay = reconnect_min_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.reconnects = 0
        self._seq = itertools.count(1)
        self._ref = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._writer: Optional[asyncio.StreamWriter] = None
        self._tasks: list[asyncio.Task] = []
        self._reconnect_task: Optional[asyncio.Task] = None
        self._connected = asyncio.Event()
        self._closing = False
        self._receipts: asyncio.Queue[DeliveryReceipt] = asyncio.Queue()
        self._segment_parent: dict[str, str] = {}
        # sequence of a submit_sm of a later segment -> message id of the first segment: the link
        # is made as the response is read, before a receipt of that segment can be handled.
        self._pending_parent: dict[int, str] = {}

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- connection

    async def connect(self) -> None:
        self._closing = False
        await self._open()

    async def _open(self) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise SmppUnavailable(f"SMSC {self.host}:{self.port} unreachable: {exc!r}") from exc
        self._writer = writer
        reader_task = asyncio.create_task(self._read_loop(reader, writer))
        command = BIND_TRANSCEIVER if self.bind == "transceiver" else BIND_TRANSMITTER
        try:
            resp = await self._request(command, encode_bind(self.system_id, self.password,
                                                            self.system_type))
        except BaseException:
            reader_task.cancel()
            writer.close()
            raise
        if resp.command_status != ESME_ROK:
            reader_task.cancel()
            writer.close()
            raise SmppAuthError(resp.command_status, self.system_id)
        self._tasks = [reader_task, asyncio.create_task(self._keepalive(writer))]
        self._connected.set()
        log.info("SMPP bound %s to %s:%s as %s", self.bind, self.host, self.port, self.system_id)

    async def close(self) -> None:
        self._closing = True
        if self._reconnect_task:
            self._reconnect_task.cancel()
        if self._connected.is_set():
            try:
                await asyncio.wait_for(self._request(UNBIND), min(self.timeout, 2.0))
            except (SmppError, asyncio.TimeoutError):
                pass
        self._connected.clear()
        for task in self._tasks:
            task.cancel()
        if self._writer:
            self._writer.close()
        self._fail_pending(SmppUnavailable("sender closed"))

    async def __aenter__(self) -> "SmppSender":
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _lost(self, writer: asyncio.StreamWriter, reason: str) -> None:
        if writer is not self._writer:
            return
        was_connected = self._connected.is_set()
        self._connected.clear()
        writer.close()
        self._fail_pending(SmppUnavailable(f"SMSC connection lost: {reason}"))
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        if was_connected and not self._closing and (self._reconnect_task is None or self._reconnect_task.done()):
            log.warning("SMPP connection to %s:%s lost (%s), reconnecting",
                        self.host, self.port, reason)
            self._reconnect_task = asyncio.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        delay = self.reconnect_min_delay
        while not self._closing:
            try:
                await self._open()
                self.reconnects += 1
                return
            except SmppError as exc:
                log.warning("SMPP reconnect failed: %s; retry in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max_delay)

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)

    # -- I/O

    def _write(self, data: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            raise SmppUnavailable("not connected to SMSC")
        self._writer.write(data)

    async def _request(self, command_id: int, body: bytes = b"", parent: Optional[str] = None) -> Pdu:
        seq = next(self._seq)
        if parent is not None:
            self._pending_parent[seq] = parent
        fut = asyncio.get_running_loop().create_future()
        self._pending[seq] = fut
        try:
            self._write(encode_pdu(command_id, 0, seq, body))
            return await asyncio.wait_for(fut, self.timeout)
        except asyncio.TimeoutError as exc:
            raise SmppUnavailable(f"no response from SMSC to command 0x{command_id:08X} "
                                  f"within {self.timeout}s") from exc
        finally:
            self._pending.pop(seq, None)
            self._pending_parent.pop(seq, None)

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while True:
                pdu = await read_pdu(reader)
                if pdu.is_response:
                    parent = self._pending_parent.pop(pdu.sequence, None)
                    if parent is not None and pdu.command_status == ESME_ROK and pdu.body:
                        self._segment_parent[read_cstr(pdu.body, 0)[0]] = parent
                    fut = self._pending.get(pdu.sequence)
                    if fut and not fut.done():
                        fut.set_result(pdu)
                elif pdu.command_id == ENQUIRE_LINK:
                    writer.write(encode_pdu(ENQUIRE_LINK | RESP, 0, pdu.sequence))
                elif pdu.command_id == DELIVER_SM:
                    writer.write(encode_pdu(DELIVER_SM | RESP, 0, pdu.sequence, b"\x00"))
                    await self._on_deliver(pdu)
                elif pdu.command_id == UNBIND:
                    writer.write(encode_pdu(UNBIND | RESP, 0, pdu.sequence))
                    await writer.drain()
                    self._lost(writer, "SMSC sent unbind")
                    return
                else:
                    writer.write(encode_pdu(GENERIC_NACK, ESME_RINVCMDID, pdu.sequence))
        except asyncio.CancelledError:
            raise
        except (asyncio.IncompleteReadError, OSError, SmppProtocolError) as exc:
            self._lost(writer, repr(exc))

    async def _keepalive(self, writer: asyncio.StreamWriter) -> None:
        while True:
            await asyncio.sleep(self.enquire_interval)
            try:
                await self._request(ENQUIRE_LINK)
            except SmppError as exc:
                self._lost(writer, f"enquire_link failed: {exc}")
                return

    async def _on_deliver(self, pdu: Pdu) -> None:
        try:
            sm = ShortMessage.decode(pdu.body)
        except SmppProtocolError:
            log.warning("malformed deliver_sm ignored")
            return
        if not sm.esm_class & ESM_CLASS_RECEIPT:
            log.info("mobile-originated SMS from %s ignored", sm.source_addr)
            return
        try:
            receipt = parse_receipt(sm)
        except SmppProtocolError as exc:
            log.warning("%s", exc)
            return
        parent = self._segment_parent.get(receipt.message_id, receipt.message_id)
        receipt = DeliveryReceipt(parent, receipt.status, receipt.done_at,
                                  receipt.segment_id, receipt.error)
        self._receipts.put_nowait(receipt)
        if self.on_receipt is not None:
            try:
                result = self.on_receipt(receipt)
                if inspect.isawaitable(result):
                    await result
            except Exception:                           # noqa: BLE001 - callback's own bug
                log.exception("delivery receipt callback failed")

    # -- API

    async def wait_connected(self, timeout: Optional[float] = None) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(),
                                   self.timeout if timeout is None else timeout)
        except asyncio.TimeoutError as exc:
            raise SmppUnavailable(f"not connected to SMSC {self.host}:{self.port}") from exc

    async def send(self, e164: str, text: str) -> str:
        """Submit ``text`` to ``e164`` in UCS2; returns the SMSC message id (of the first
        segment when the text is split)."""
        if self._closing:
            raise SmppUnavailable("sender closed")
        await self.wait_connected()
        src_ton, src_npi, src = address(self.source_addr)
        dst_ton, dst_npi, dst = address(e164)
        parts = split_ucs2(text)
        ref = next(self._ref) & 0xFF
        ids: list[str] = []
        for index, part in enumerate(parts, 1):
            esm_class, payload = 0, part
            if len(parts) > 1:
                esm_class, payload = ESM_CLASS_UDHI, udh_concat(ref, len(parts), index) + part
            body = ShortMessage(src, dst, payload, src_ton, src_npi, dst_ton, dst_npi,
                                esm_class=esm_class, data_coding=DATA_CODING_UCS2,
                                registered_delivery=1).encode()
            resp = await self._request(SUBMIT_SM, body, parent=ids[0] if ids else None)
            if resp.command_status != ESME_ROK:
                raise SmppSubmitError(resp.command_status, e164)
            message_id, _ = read_cstr(resp.body, 0) if resp.body else ("", 0)
            ids.append(message_id)
        for segment_id in ids[1:]:
            self._segment_parent[segment_id] = ids[0]
        while len(self._segment_parent) > 10000:
            self._segment_parent.pop(next(iter(self._segment_parent)))
        return ids[0]

    async def receipts(self) -> AsyncIterator[DeliveryReceipt]:
        """Delivery receipts as they arrive (until the task is cancelled)."""
        while True:
            yield await self._receipts.get()
