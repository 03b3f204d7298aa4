"""Fast tests of the test-phone harness: scenario generation, escaping, RTP/DTMF pcap writer."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ivr.phones import audio
from ivr.phones.sipp import (
    SippAnswerer,
    SippCaller,
    build_from_header,
    cdata_escape,
    parse_message_trace,
    sip_quote,
    sip_user_escape,
)

HOSTILE_NAMES = [
    'Robert"); DROP TABLE calls;--',
    'x" <sip:admin@evil> "y',
    "]]><evil/>",
    "[service] [$from_hdr] [call_id]",
    "back\\slash \\\" quote",
    "Иван Петров ☎",
    "<script>alert(1)</script>&amp;",
    "a" * 300,
]


def _parse(xml: str) -> ET.Element:
    return ET.fromstring(xml.encode("iso-8859-1"))


def _commands(root: ET.Element) -> list[str]:
    return [el.tag for el in root]


def test_uac_scenario_is_valid_xml_with_labels(tmp_path):
    caller = SippCaller("127.0.0.1", 5060, workdir=tmp_path)
    pcap = tmp_path / 'we"ird & <dir>' / "media.pcap"
    root = _parse(caller.render(answer_timeout=7, talk=4.5, pcap=pcap))
    labels = {el.get("id") for el in root.iter("label")}
    assert {"localbye", "cancel", "rejected", "done"} <= labels
    # every jump target exists
    targets = {el.get(a) for el in root.iter() for a in ("next", "ontimeout") if el.get(a)}
    assert targets <= labels
    execs = [el.get("play_pcap_audio") for el in root.iter("exec")]
    assert execs == [str(pcap)]  # attribute quoting survived the XML round trip
    bye_wait = next(el for el in root.iter("recv") if el.get("request") == "BYE")
    assert bye_wait.get("timeout") == "4500" and bye_wait.get("ontimeout") == "localbye"
    answer = [el for el in root.iter("recv") if el.get("response") == "200" and el.get("rtd")]
    assert answer[0].get("timeout") == "7000"
    codes = {el.get("response") for el in root.iter("recv") if el.get("next") == "rejected"}
    assert {"486", "503", "404", "603"} <= codes


def test_uac_without_media_has_no_exec(tmp_path):
    root = _parse(SippCaller("h", 1, workdir=tmp_path).render(answer_timeout=1, talk=1, pcap=None))
    assert not list(root.iter("exec"))


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_caller_name_never_reaches_the_scenario_xml(tmp_path, name):
    caller = SippCaller("127.0.0.1", 5060, workdir=tmp_path, caller_name=name)
    xml = caller.render(answer_timeout=5, talk=1, pcap=None)
    assert name not in xml
    _parse(xml)
    value = caller.from_value()
    # RFC 3261 quoted-string: the name is recoverable and no bare quote ends it early
    assert value.startswith('"') and value.endswith("<sip:79161234567@127.0.0.1>")
    quoted = value[: value.rindex(" <sip:")]
    assert _unquote(quoted) == name


def _unquote(q: str) -> str:
    """Parse an RFC 3261 quoted-string strictly (the whole string must be one)."""
    assert q[0] == '"' and q[-1] == '"'
    out, i, body = [], 0, q[1:-1]
    while i < len(body):
        ch = body[i]
        assert ch != '"', f"bare quote at {i} in {q!r}"
        if ch == "\\":
            i += 1
            ch = body[i]
        out.append(ch)
        i += 1
    return "".join(out)


@pytest.mark.parametrize("bad", ["a\r\nVia: evil", "line\nbreak", "nul\0"])
def test_header_injection_is_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        SippCaller("127.0.0.1", 5060, workdir=tmp_path, caller_name=bad)
    with pytest.raises(ValueError):
        SippCaller("127.0.0.1", 5060, workdir=tmp_path, caller_id=bad)
    with pytest.raises(ValueError):
        SippCaller("127.0.0.1", 5060, workdir=tmp_path, from_header=bad)


def test_from_header_forms():
    assert build_from_header("79161234567", None, "127.0.0.1") == "<sip:79161234567@127.0.0.1>"
    assert build_from_header("79161234567", "Bob", "10.0.0.1") == '"Bob" <sip:79161234567@10.0.0.1>'
    assert build_from_header("anonymous", "Anonymous", "x") == '"Anonymous" <sip:anonymous@anonymous.invalid>'
    assert build_from_header(None, None, "x") == "<sip:anonymous@anonymous.invalid>"
    assert sip_quote('a"b\\c') == '"a\\"b\\\\c"'
    assert sip_user_escape("+7 916<x>@") == "+7%20916%3Cx%3E%40"
    assert sip_user_escape("100%") == "100%25"


def test_raw_from_header_override(tmp_path):
    c = SippCaller("h", 1, workdir=tmp_path, from_header='"unterminated <sip:@>')
    assert c.from_value() == '"unterminated <sip:@>'


def test_cdata_escape():
    wrapped = f"<r><![CDATA[{cdata_escape('a]]>b')}]]></r>"
    assert ET.fromstring(wrapped).text == "a]]>b"


def test_number_and_dtmf_validation(tmp_path):
    import asyncio

    c = SippCaller("h", 1, workdir=tmp_path)
    with pytest.raises(ValueError):
        asyncio.run(c.call("10 0"))
    with pytest.raises(ValueError):
        asyncio.run(c.call("100", dtmf="1x"))
    assert audio.validate_dtmf("12*#abcd") == "12*#ABCD"


@pytest.mark.parametrize("mode", ["answer", "ring", "busy"])
@pytest.mark.parametrize("delay", [0.0, 2.0])
def test_uas_scenarios_render(tmp_path, mode, delay):
    a = SippAnswerer(mode=mode, answer_delay=delay, hold=5, workdir=tmp_path, listen_port=45678)
    root = _parse(a.render(tmp_path / "dtmf.pcap" if mode == "answer" else None))
    labels = {el.get("id") for el in root.iter("label")}
    targets = {el.get(x) for el in root.iter() for x in ("next", "ontimeout") if el.get(x)}
    assert targets <= labels
    sent_status = [el.text.strip().splitlines()[0].strip() for el in root.iter("send")]
    if mode == "busy":
        assert "SIP/2.0 486 Busy Here" in sent_status
        assert not list(root.iter("ereg"))  # sipp refuses variables that are set but never used
    elif mode == "ring":
        assert "SIP/2.0 487 Request Terminated" in sent_status
        assert not any(s.startswith("SIP/2.0 200 OK") and "sdp" in s for s in sent_status)
    else:
        assert any(el.get("play_pcap_audio") for el in root.iter("exec"))
        assert ("SIP/2.0 487 Request Terminated" in sent_status) == (delay > 0)


def test_answerer_rejects_unknown_mode():
    with pytest.raises(ValueError):
        SippAnswerer(mode="voicemail")


# --------------------------------------------------------------------------- pcap writer

def _udp_ok(frame: bytes) -> bool:
    ip = frame[14:34]
    udp = frame[34:]
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 17, len(udp))
    return audio._checksum(ip) == 0 and audio._checksum(pseudo + udp) in (0, 0xFFFF)


def test_dtmf_timeline_packets(tmp_path):
    tl = audio.RtpTimeline(ssrc=0x1234, seq=65530, timestamp=1000)
    tl.silence(0.1)
    tl.digits("11#", gap=0.3)
    path = tl.write(tmp_path / "d.pcap")
    pkts = audio.read_pcap(path)
    assert pkts == [audio.RtpPacket(p.t, p.payload_type, p.seq, p.timestamp, p.ssrc, p.payload, p.marker)
                    for p in tl.packets]
    assert all(p.ssrc == 0x1234 for p in pkts)
    assert [p.payload_type for p in pkts[:5]] == [0] * 5
    assert pkts[0].marker and len(pkts[0].payload) == 160 and pkts[0].payload == b"\xff" * 160
    # sequence numbers wrap and never go backwards (end packets are repeated with the same seq)
    seqs = [p.seq for p in pkts]
    steps = {(b - a) % 65536 for a, b in zip(seqs, seqs[1:])}
    assert steps <= {0, 1}
    events = [p for p in pkts if p.payload_type == 101]
    starts = [p for p in events if p.marker]
    assert [struct.unpack("!B", p.payload[:1])[0] for p in starts] == [1, 1, 11]
    # each digit has its own RTP timestamp, so "11" is two key presses
    assert len({p.timestamp for p in starts}) == 3
    ends = [p for p in events if p.payload[1] & 0x80]
    assert len(ends) == 9  # 3 end packets per digit
    # durations grow within an event, timestamps fixed within an event
    first = [p for p in events if p.timestamp == starts[0].timestamp]
    durs = [struct.unpack("!H", p.payload[2:4])[0] for p in first]
    assert durs == sorted(durs) and durs[-1] == 1280
    # timing: digits 160 ms + 300 ms gap apart
    assert starts[1].t - starts[0].t == pytest.approx(0.46, abs=0.001)
    assert tl.duration == pytest.approx(0.1 + 3 * 0.16 + 2 * 0.3, abs=0.001)
    # frames carry valid IPv4 and UDP checksums
    raw = path.read_bytes()
    off = 24
    while off < len(raw):
        incl = struct.unpack("<I", raw[off + 8: off + 12])[0]
        assert _udp_ok(raw[off + 16: off + 16 + incl])
        off += 16 + incl


def test_all_sixteen_events():
    tl = audio.RtpTimeline()
    tl.digits("0123456789*#ABCD", gap=0.1)
    starts = [p for p in tl.packets if p.marker and p.payload_type == 101]
    assert [p.payload[0] for p in starts] == list(range(16))


def test_read_sip_tester_pcap_format():
    """Our reader understands the digit files shipped with sip-tester (same link type/layout)."""
    shipped = Path("/usr/share/sip-tester/dtmf_2833_1.pcap")
    if not shipped.exists():
        pytest.skip("sip-tester not installed")
    pkts = audio.read_pcap(shipped)
    assert pkts[0].payload_type == 101 and pkts[0].payload[0] == 1


def test_audio_frames_are_padded():
    tl = audio.RtpTimeline()
    tl.audio(b"\x01" * 170)
    assert [len(p.payload) for p in tl.packets] == [160, 160]
    assert tl.packets[1].payload.endswith(b"\xff" * 150)
    assert tl.packets[1].timestamp - tl.packets[0].timestamp == 160


TRACE = """----------------------------------------------- 2026-11-23 12:28:58.499737
UDP message sent (650 bytes):

INVITE sip:100@127.0.0.1:29008 SIP/2.0
Call-ID: abc
CSeq: 1 INVITE

v=0
----------------------------------------------- 2026-11-23 12:28:58.600000
UDP message received [266] bytes :

SIP/2.0 486 Busy Here
i: abc
CSeq: 1 INVITE
Content-Length: 0

"""


def test_parse_message_trace(tmp_path):
    p = tmp_path / "m.log"
    p.write_text(TRACE)
    msgs = parse_message_trace(p)
    assert [(m.direction, m.method, m.status) for m in msgs] == [("sent", "INVITE", None), ("received", "", 486)]
    assert msgs[1].call_id == "abc" and msgs[1].cseq_method == "INVITE"
    assert msgs[1].time - msgs[0].time == pytest.approx(0.100263, abs=1e-5)
    assert SippCaller._result(1, p, p, p, p).status == 486
