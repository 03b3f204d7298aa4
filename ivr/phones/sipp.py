"""sipp-driven test phones: a caller (UAC) and an answering phone (UAS).

Both render a scenario from ``ivr/phones/scenarios/*.xml`` (Jinja2) into a
working directory, run ``sipp`` with ``asyncio.create_subprocess_exec`` and
read sipp's message trace (``-trace_msg``) afterwards to learn what happened
(final status, timings, who hung up).  Every wait is bounded, and the sipp
process is killed if the coroutine is cancelled or times out.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import quoteattr

import jinja2

from .audio import RtpTimeline, validate_dtmf, wav_to_ulaw

log = logging.getLogger(__name__)

SCENARIO_DIR = Path(__file__).with_name("scenarios")
SIPP = "sipp"
#: Final responses the caller scenario recognises (anything else aborts sipp; the
#: status is still read from the message trace).
REJECT_CODES = (301, 302, 400, 401, 403, 404, 407, 408, 410, 415, 420, 480, 481, 482, 483, 484,
                485, 486, 487, 488, 491, 500, 501, 502, 503, 504, 580, 600, 603, 604, 606)


class PhoneError(RuntimeError):
    """A test phone failed (bad arguments, process error, timeout)."""

    def __init__(self, message: str, *, log_tail: str = "", returncode: int | None = None):
        if log_tail:
            message = f"{message}\n--- sipp/baresip log tail ---\n{log_tail}"
        super().__init__(message)
        self.log_tail = log_tail
        self.returncode = returncode


# --------------------------------------------------------------------------- ports

_reserved_ports: set[int] = set()
_port_counter = itertools.count()


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_udp_port(host: str = "127.0.0.1", *, span: int = 1) -> int:
    """A UDP port P on ``host`` such that P..P+span-1 are all free right now.

    Ports handed out by this process are remembered so that two phones started
    at the same time never get the same one.  Random ports come from a range
    below the usual ephemeral range (20000-29999), stepping by 4 for media pairs.
    """
    rnd = secrets.SystemRandom()
    for _ in range(500):
        base = rnd.randrange(20000, 30000 - span) & ~1
        ports = range(base, base + span)
        if any(p in _reserved_ports for p in ports):
            continue
        if all(_bindable(host, p) for p in ports):
            _reserved_ports.update(ports)
            return base
    raise PhoneError(f"no free UDP port range of {span} on {host}")


def release_ports(*bases_spans: tuple[int, int]) -> None:
    for base, span in bases_spans:
        for p in range(base, base + span):
            _reserved_ports.discard(p)


# --------------------------------------------------------------------------- escaping

_SIP_USER_OK = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+$")


def check_header_safe(value: str, what: str) -> str:
    """Header values may contain any garbage except line breaks and NUL."""
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{what} must not contain CR, LF or NUL: {value!r}")
    return value


def sip_quote(display_name: str) -> str:
    """RFC 3261 quoted-string for a display name: escape backslash and double quote."""
    check_header_safe(display_name, "caller_name")
    return '"' + display_name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sip_user_escape(user: str) -> str:
    """Percent-encode characters that are not allowed in a SIP URI user part."""
    check_header_safe(user, "caller_id")
    out = []
    for ch in user:
        if _SIP_USER_OK.match(ch) and ch != "%":
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def build_from_header(caller_id: str | None, caller_name: str | None, host: str) -> str:
    """From header value without tag, e.g. ``"Bob" <sip:79161234567@127.0.0.1>``.

    ``caller_id`` None or 'anonymous' gives the RFC 3323 anonymous form.
    """
    if caller_id is None or caller_id.lower() == "anonymous":
        uri = "sip:anonymous@anonymous.invalid"
    else:
        uri = f"sip:{sip_user_escape(caller_id)}@{host}"
    if caller_name is None:
        return f"<{uri}>"
    return f"{sip_quote(caller_name)} <{uri}>"


def cdata_escape(text: str) -> str:
    """Make ``text`` safe inside a CDATA section (split any ``]]>``)."""
    return text.replace("]]>", "]]]]><![CDATA[>")


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(SCENARIO_DIR)),
    autoescape=False,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)
_env.filters["quoteattr"] = lambda v: quoteattr(str(v))


def render_scenario(template: str, **params) -> str:
    return _env.get_template(template).render(**params)


# --------------------------------------------------------------------------- message trace

_SEP = re.compile(r"^-{20,}\s+(\d{4}-\d{2}-\d{2})\s+(\d{2}:\d{2}:\d{2}(?:\.\d+)?)", re.M)
_DIR = re.compile(r"^\s*(UDP|TCP|TLS|SCTP)\s+message\s+(sent|received)", re.I)


@dataclass
class SipMessage:
    time: float  # unix time
    direction: str  # 'sent' | 'received'
    first_line: str
    headers: dict[str, str]
    text: str

    @property
    def is_request(self) -> bool:
        return not self.first_line.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        return self.first_line.split(" ", 1)[0] if self.is_request else ""

    @property
    def status(self) -> int | None:
        if self.is_request:
            return None
        try:
            return int(self.first_line.split()[1])
        except (IndexError, ValueError):
            return None

    @property
    def call_id(self) -> str:
        return self.headers.get("call-id", self.headers.get("i", ""))

    @property
    def cseq_method(self) -> str:
        parts = self.headers.get("cseq", "").split()
        return parts[1].upper() if len(parts) > 1 else ""


_COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact", "l": "content-length"}


def parse_message_trace(path: Path) -> list[SipMessage]:
    """Parse sipp's ``-trace_msg`` file into messages (best effort)."""
    try:
        data = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return []
    seps = list(_SEP.finditer(data))
    msgs: list[SipMessage] = []
    for i, m in enumerate(seps):
        block = data[m.end(): seps[i + 1].start() if i + 1 < len(seps) else len(data)]
        lines = block.lstrip("\r\n").splitlines()
        if not lines:
            continue
        d = _DIR.match(lines[0])
        if not d:
            continue
        body = [ln for ln in lines[1:]]
        while body and not body[0].strip():
            body.pop(0)
        if not body:
            continue
        headers: dict[str, str] = {}
        for ln in body[1:]:
            if not ln.strip():
                break
            if ":" in ln:
                k, v = ln.split(":", 1)
                k = k.strip().lower()
                headers.setdefault(_COMPACT.get(k, k), v.strip())
        try:
            ts = datetime.strptime(f"{m.group(1)} {m.group(2)}", "%Y-%m-%d %H:%M:%S.%f").timestamp()
        except ValueError:
            ts = datetime.strptime(f"{m.group(1)} {m.group(2)}", "%Y-%m-%d %H:%M:%S").timestamp()
        msgs.append(SipMessage(ts, d.group(2).lower(), body[0].strip(), headers, "\n".join(body)))
    return msgs


def tail(path: Path | None, lines: int = 30) -> str:
    if not path:
        return ""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------- processes

async def _terminate(proc: asyncio.subprocess.Process, *, grace: float = 3.0) -> None:
    """Stop ``proc`` (and its process group): SIGTERM, then SIGKILL after ``grace``."""
    if proc.returncode is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
            return
        except asyncio.TimeoutError:
            continue


async def _spawn(args: list[str], *, cwd: Path, stdout_path: Path) -> asyncio.subprocess.Process:
    exe = shutil.which(args[0])
    if not exe:
        raise PhoneError(f"{args[0]} is not installed")
    log.debug("spawn: %s", " ".join(args))
    with open(stdout_path, "ab") as out:
        return await asyncio.create_subprocess_exec(
            exe, *args[1:], cwd=str(cwd), stdin=asyncio.subprocess.DEVNULL,
            stdout=out, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )


def _ms(seconds: float) -> int:
    return max(1, int(round(seconds * 1000)))


# --------------------------------------------------------------------------- caller

@dataclass
class CallResult:
    """What a :class:`SippCaller` call did."""

    status: int | None  # final response to INVITE (200, 486, 487, 503...), None if none
    answered: bool
    invite_sent_at: float | None
    answered_at: float | None
    bye_at: float | None  # time of the BYE (ours or theirs)
    remote_bye: str | None  # the far end's BYE (full text) if it hung up first
    cancelled: bool  # we sent CANCEL (no answer within the timeout)
    returncode: int
    scenario: Path
    message_log: Path
    error_log: Path
    stdout_log: Path
    messages: list[SipMessage] = field(default_factory=list, repr=False)

    @property
    def hung_up_by_remote(self) -> bool:
        return self.remote_bye is not None

    @property
    def talk_time(self) -> float | None:
        if self.answered_at and self.bye_at:
            return self.bye_at - self.answered_at
        return None


class SippCaller:
    """A SIP phone that places calls with sipp (UAC).

    >>> caller = SippCaller("127.0.0.1", 5060, workdir=tmp_path)
    >>> res = await caller.call("100", dtmf="12#", hold_after=2)
    >>> assert res.answered and res.status == 200
    """

    def __init__(self, target_host: str, target_port: int, *, local_ip: str = "127.0.0.1",
                 caller_id: str | None = "79161234567", caller_name: str | None = None,
                 workdir: Path | str | None = None, local_port: int | None = None,
                 from_header: str | None = None, debug: bool = False,
                 auth: tuple[str, str] | None = None):
        self.target_host = target_host
        # (user, password) for a phone that must authenticate (an operator's extension).
        self.auth = auth
        self.target_port = int(target_port)
        self.local_ip = local_ip
        self.caller_id = caller_id
        self.caller_name = caller_name
        self.local_port = local_port
        self.debug = debug
        # raw From value (without tag) for robustness tests; must be CR/LF-free
        self.from_header = check_header_safe(from_header, "from_header") if from_header is not None else None
        if self.from_header is None:
            build_from_header(caller_id, caller_name, local_ip)  # validate early
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="sipp-caller-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._seq = itertools.count(1)

    def from_value(self) -> str:
        if self.from_header is not None:
            return self.from_header
        return build_from_header(self.caller_id, self.caller_name, self.local_ip)

    async def build_media(self, calldir: Path, *, dtmf: str, dtmf_delay: float, dtmf_gap: float,
                          speak_wav: Path | None) -> tuple[Path | None, float]:
        """The RTP timeline of the call as one pcap: (path or None, duration in s).

        Timeline after ACK: with ``speak_wav``: 1.5 s silence, the speech, then
        (if ``dtmf``) ``dtmf_delay`` s silence and the digits; without: ``dtmf_delay`` s
        of silence and the digits.  Silence frames keep the RTP stream alive.
        """
        if not dtmf and speak_wav is None:
            return None, 0.0
        tl = RtpTimeline()
        if speak_wav is not None:
            ulaw = await wav_to_ulaw(Path(speak_wav), calldir / "speech.ulaw")
            tl.silence(1.5)
            tl.audio(ulaw)
        if dtmf:
            tl.silence(dtmf_delay)
            tl.digits(dtmf, gap=dtmf_gap)
        tl.silence(0.2)
        return tl.write(calldir / "media.pcap"), tl.duration

    def render(self, *, answer_timeout: float, talk: float, pcap: Path | None) -> str:
        first_branch = f"z9hG4bK-ivr{secrets.token_hex(6)}"
        return render_scenario(
            "uac.xml",
            auth=self.auth is not None,
            first_branch=first_branch,
            # With auth, the INVITE that can be answered (and cancelled) is the second one.
            invite_branch=f"z9hG4bK-ivr{secrets.token_hex(6)}" if self.auth else first_branch,
            cseq=2 if self.auth else 1,
            answer_timeout_ms=_ms(answer_timeout),
            talk_ms=_ms(talk),
            pcap=str(pcap) if pcap else "",
            reject_codes=REJECT_CODES,
        )

    async def call(self, number: str, *, dtmf: str = "", dtmf_delay: float = 1.5, dtmf_gap: float = 0.3,
                   speak_wav: Path | None = None, hold_after: float = 3.0, hangup_after: float | None = None,
                   timeout: float = 30, raise_on_error: bool = True) -> CallResult:
        """Call ``number`` at the target; return when the call is over.

        ``timeout``: seconds to wait for an answer (then CANCEL).  The whole call is
        bounded by timeout + media + hold_after (+ margin); sipp is killed beyond it.
        """
        if not re.fullmatch(r"[A-Za-z0-9*#+._\-]+", number):
            raise ValueError(f"bad number {number!r}")
        dtmf = validate_dtmf(dtmf)
        n = next(self._seq)
        calldir = self.workdir / f"call-{os.getpid()}-{n:03d}-{secrets.token_hex(3)}"
        calldir.mkdir(parents=True)
        pcap, media_len = await self.build_media(calldir, dtmf=dtmf, dtmf_delay=dtmf_delay,
                                                 dtmf_gap=dtmf_gap, speak_wav=speak_wav)
        talk = hangup_after if hangup_after is not None else media_len + hold_after
        scenario = calldir / "uac.xml"
        scenario.write_text(self.render(answer_timeout=timeout, talk=talk, pcap=pcap), encoding="iso-8859-1")

        own_port = self.local_port is None
        sip_port = self.local_port or free_udp_port(self.local_ip)
        media_port = free_udp_port(self.local_ip, span=4)
        msg_log, err_log, out_log = calldir / "messages.log", calldir / "errors.log", calldir / "sipp.out"
        overall = timeout + talk + 8  # margin for CANCEL/487 or BYE/200 exchanges
        args = [
            SIPP, f"{self.target_host}:{self.target_port}", "-sf", str(scenario),
            "-s", number, "-m", "1", "-l", "1",
            "-i", self.local_ip, "-p", str(sip_port), "-mi", self.local_ip, "-mp", str(media_port),
            "-set", "from_hdr", self.from_value(),
            "-nostdin", "-timeout", f"{int(overall)}s", "-timeout_error",
            "-trace_msg", "-message_file", str(msg_log),
            "-trace_err", "-error_file", str(err_log),
        ]
        if self.auth is not None:
            args += ["-au", check_header_safe(self.auth[0], "auth user"), "-ap", self.auth[1]]
        if self.debug:
            args += ["-trace_logs", "-log_file", str(calldir / "actions.log")]
        proc = await _spawn(args, cwd=calldir, stdout_path=out_log)
        try:
            rc = await asyncio.wait_for(proc.wait(), overall + 5)
        except asyncio.TimeoutError:
            await _terminate(proc)
            raise PhoneError(f"sipp call to {number} did not finish within {overall + 5:.0f}s",
                             log_tail=tail(err_log) or tail(out_log)) from None
        finally:
            if proc.returncode is None:
                await _terminate(proc)
            release_ports((media_port, 4), *([(sip_port, 1)] if own_port else []))

        result = self._result(rc, scenario, msg_log, err_log, out_log)
        log.info("sipp call %s -> status=%s answered=%s rc=%s", number, result.status, result.answered, rc)
        if raise_on_error and result.status is None:
            raise PhoneError(f"sipp call to {number}@{self.target_host}:{self.target_port} got no final "
                             f"response (exit code {rc})", log_tail=tail(err_log) or tail(out_log), returncode=rc)
        if raise_on_error and rc not in (0,) and result.status == 200 and result.bye_at is None:
            raise PhoneError(f"sipp call to {number} failed after answer (exit code {rc})",
                             log_tail=tail(err_log) or tail(out_log), returncode=rc)
        return result

    @staticmethod
    def _result(rc: int, scenario: Path, msg_log: Path, err_log: Path, out_log: Path) -> CallResult:
        msgs = parse_message_trace(msg_log)
        invite = next((m for m in msgs if m.direction == "sent" and m.method == "INVITE"), None)
        finals = [m for m in msgs if m.direction == "received" and m.cseq_method == "INVITE"
                  and m.status is not None and m.status >= 200]
        # A digest challenge (401/407) is followed by a second INVITE: its answer is the final one.
        challenged = [m for m in finals if m.status in (401, 407)]
        final = next((m for m in finals if m.status not in (401, 407)), challenged[0] if challenged else None)
        answered = final is not None and 200 <= final.status < 300
        remote_bye = next((m for m in msgs if m.direction == "received" and m.method == "BYE"), None)
        local_bye = next((m for m in msgs if m.direction == "sent" and m.method == "BYE"), None)
        bye = remote_bye or local_bye
        if remote_bye and local_bye:
            bye = min(remote_bye, local_bye, key=lambda m: m.time)
            if bye is local_bye:
                remote_bye = None
        return CallResult(
            status=final.status if final else None,
            answered=answered,
            invite_sent_at=invite.time if invite else None,
            answered_at=final.time if answered else None,
            bye_at=bye.time if bye else None,
            remote_bye=remote_bye.text if remote_bye else None,
            cancelled=any(m.direction == "sent" and m.method == "CANCEL" for m in msgs),
            returncode=rc, scenario=scenario, message_log=msg_log, error_log=err_log, stdout_log=out_log,
            messages=msgs,
        )


# --------------------------------------------------------------------------- answerer

@dataclass
class AnsweredCall:
    """One INVITE seen by a :class:`SippAnswerer`."""

    call_id: str
    from_: str
    to: str
    request_uri: str
    invited_at: float
    answered: bool = False
    answered_at: float | None = None
    cancelled: bool = False
    rejected: int | None = None  # status we sent (486) if any
    remote_bye: bool = False  # the far end hung up
    local_bye: bool = False  # we hung up (hold expired)
    ended_at: float | None = None
    invite: str = ""


class SippAnswerer:
    """A SIP phone that receives calls with sipp (UAS): ``answer``, ``ring`` or ``busy``.

    >>> async with SippAnswerer(mode="answer", hold=5) as op:
    ...     await SippCaller("127.0.0.1", op.port).call("200")
    ...     assert op.invites == 1
    """

    MODES = ("answer", "ring", "busy")

    def __init__(self, *, listen_port: int | None = None, mode: str = "answer", answer_delay: float = 0.0,
                 hold: float = 30, dtmf: str = "", dtmf_delay: float = 1.0, dtmf_gap: float = 0.3,
                 local_ip: str = "127.0.0.1", workdir: Path | str | None = None, max_calls: int = 100000,
                 refer_to: str | None = None, refer_after: float = 1.0, refer_domain: str = "127.0.0.1",
                 script: Sequence[tuple[str, object]] = ()):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, not {mode!r}")
        self.mode = mode
        # Blind transfer: after answering, REFER the caller to this extension (mode "answer").
        if refer_to is not None and not re.fullmatch(r"[0-9*#+]{1,20}", refer_to):
            raise ValueError(f"refer_to must be an extension, not {refer_to!r}")
        self.refer_to = refer_to
        self.refer_after = refer_after
        # host[:port] of the PBX in the Refer-To URI
        self.refer_domain = check_header_safe(refer_domain, "refer_domain")
        self.answer_delay = float(answer_delay)
        self.hold = float(hold)
        self.dtmf = validate_dtmf(dtmf)
        # What the answered phone sends, in order (instead of dtmf/dtmf_delay):
        # ("silence", seconds), ("speak", "/path/to.wav"), ("dtmf", "12").
        self.script = [self._check_step(step) for step in script]
        if self.script and self.dtmf:
            raise ValueError("give either dtmf or script, not both")
        self.dtmf_delay = dtmf_delay
        self.dtmf_gap = dtmf_gap
        self.local_ip = local_ip
        self.max_calls = max_calls
        self._own_port = listen_port is None
        self.port: int = listen_port or free_udp_port(local_ip)
        self.media_port: int | None = None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="sipp-answerer-"))
        self.workdir = self.workdir / f"answerer-{self.mode}-{self.port}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.message_log = self.workdir / "messages.log"
        self.error_log = self.workdir / "errors.log"
        self.stdout_log = self.workdir / "sipp.out"
        self.scenario = self.workdir / "uas.xml"
        self._proc: asyncio.subprocess.Process | None = None

    @staticmethod
    def _check_step(step: tuple[str, object]) -> tuple[str, object]:
        kind, value = step
        if kind == "silence":
            if not 0 <= float(value) <= 600:
                raise ValueError(f"silence of {value!r} s")
        elif kind == "speak":
            if not Path(str(value)).is_file():
                raise ValueError(f"no such audio file: {value}")
        elif kind == "dtmf":
            validate_dtmf(str(value))
        else:
            raise ValueError(f"unknown script step {kind!r}: silence, speak or dtmf")
        return kind, value

    @property
    def uri(self) -> str:
        return f"sip:{self.local_ip}:{self.port}"

    def render(self, pcap: Path | None) -> str:
        return render_scenario("uas.xml", mode=self.mode, answer_delay_ms=int(self.answer_delay * 1000),
                               hold_ms=_ms(self.hold), pcap=str(pcap) if pcap else "",
                               refer_to=self.refer_to or "", refer_after_ms=_ms(self.refer_after),
                               refer_domain=self.refer_domain)

    async def start(self) -> "SippAnswerer":
        if self._proc is not None:
            raise PhoneError("answerer already started")
        pcap = None
        if self.dtmf and self.mode == "answer":
            tl = RtpTimeline()
            tl.silence(self.dtmf_delay)
            tl.digits(self.dtmf, gap=self.dtmf_gap)
            tl.silence(0.2)
            pcap = tl.write(self.workdir / "dtmf.pcap")
        elif self.script and self.mode == "answer":
            tl = RtpTimeline()
            for n, (kind, value) in enumerate(self.script):
                if kind == "silence":
                    tl.silence(float(value))
                elif kind == "speak":
                    tl.audio(await wav_to_ulaw(Path(value), self.workdir / f"speech-{n}.ulaw"))
                else:
                    tl.digits(str(value), gap=self.dtmf_gap)
            tl.silence(0.2)
            pcap = tl.write(self.workdir / "script.pcap")
        self.scenario.write_text(self.render(pcap), encoding="iso-8859-1")
        self.media_port = free_udp_port(self.local_ip, span=4)
        args = [
            SIPP, "-sf", str(self.scenario), "-i", self.local_ip, "-p", str(self.port),
            "-mi", self.local_ip, "-mp", str(self.media_port), "-m", str(self.max_calls),
            "-nostdin", "-trace_msg", "-message_file", str(self.message_log),
            "-trace_err", "-error_file", str(self.error_log),
        ]
        self._proc = await _spawn(args, cwd=self.workdir, stdout_path=self.stdout_log)
        # wait until sipp has bound its SIP port (or died)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self._proc.returncode is not None:
                break
            if not _bindable(self.local_ip, self.port):
                return self
            await asyncio.sleep(0.05)
        rc = self._proc.returncode
        await self.stop()
        raise PhoneError(f"sipp answerer did not start on {self.local_ip}:{self.port} (exit code {rc})",
                         log_tail=tail(self.error_log) or tail(self.stdout_log), returncode=rc)

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            await _terminate(proc)
        if self.media_port:
            release_ports((self.media_port, 4))
            self.media_port = None
        if self._own_port:
            release_ports((self.port, 1))

    async def __aenter__(self) -> "SippAnswerer":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    # ---- what it saw (parsed from the message trace on each access)

    @property
    def calls(self) -> list[AnsweredCall]:
        calls: dict[str, AnsweredCall] = {}
        for m in parse_message_trace(self.message_log):
            c = calls.get(m.call_id)
            if m.direction == "received" and m.method == "INVITE" and c is None:
                parts = m.first_line.split()
                calls[m.call_id] = AnsweredCall(m.call_id, m.headers.get("from", ""), m.headers.get("to", ""),
                                                parts[1] if len(parts) > 1 else "", m.time, invite=m.text)
                continue
            if c is None:
                continue
            if m.direction == "sent" and m.cseq_method == "INVITE" and m.status:
                if m.status == 200 and not c.answered:
                    c.answered, c.answered_at = True, m.time
                elif m.status >= 300 and m.status != 487:
                    c.rejected = m.status
            elif m.direction == "received" and m.method == "CANCEL":
                c.cancelled, c.ended_at = True, m.time
            elif m.method == "BYE":
                if m.direction == "received":
                    c.remote_bye = True
                else:
                    c.local_bye = True
                c.ended_at = c.ended_at or m.time
        return list(calls.values())

    @property
    def invites(self) -> int:
        return len(self.calls)

    @property
    def answered(self) -> int:
        return sum(c.answered for c in self.calls)

    @property
    def cancelled(self) -> int:
        return sum(c.cancelled for c in self.calls)

    async def wait_for_calls(self, n: int = 1, *, timeout: float = 10, ended: bool = False) -> list[AnsweredCall]:
        """Wait until at least ``n`` INVITEs (optionally: ``n`` finished calls) were seen."""
        deadline = time.monotonic() + timeout
        while True:
            calls = self.calls
            done = [c for c in calls if c.ended_at or c.rejected] if ended else calls
            if len(done) >= n:
                return calls
            if time.monotonic() > deadline:
                raise PhoneError(f"answerer on port {self.port}: expected {n} call(s), saw {len(done)} "
                                 f"in {timeout}s", log_tail=tail(self.error_log))
            if self._proc is not None and self._proc.returncode is not None:
                raise PhoneError(f"answerer sipp exited with {self._proc.returncode}",
                                 log_tail=tail(self.error_log) or tail(self.stdout_log))
            await asyncio.sleep(0.1)
