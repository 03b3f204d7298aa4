"""Settings of the product, read from the environment and an env file.

Precedence: process environment (``IVR_*``, ``DATABASE_URL``) > the env file
(``$IVR_ENV_FILE`` or ``var/ivr.env`` in the project root, written by
``ivr stack init`` with fresh random secrets) > built-in defaults.

Secrets have no defaults on purpose: a PBX that ships with a known ARI or AMI
password is a PBX that gets hijacked. A missing secret is a clear error that
says how to create one.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_ENV_FILE = PROJECT_ROOT / "var" / "ivr.env"

# Asterisk's Russian prompts from asterisk-core-sounds-ru-* install under this name.
RUSSIAN_SOUNDS_LANGUAGE = "ru_RU_f_IvrvoiceRU"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9.:-]{1,255}$")
_SECRET_RE = re.compile(r"^[A-Za-z0-9_\-.~+/=]{12,128}$")


def _port(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise ConfigError(f"{name}={value} is outside 1..65535")
    return value


def _float(name: str, raw: str, *, minimum: float = 0.0) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be >= {minimum}")
    return value


def _checked(name: str, raw: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.fullmatch(raw):
        raise ConfigError(f"{name}={raw!r} is not a valid {what}")
    return raw


def read_env_file(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines; '#' comments and blank lines ignored; no shell expansion."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Z][A-Z0-9_]*", key.strip()):
            raise ConfigError(f"{path}:{lineno}: expected KEY=VALUE, got {line!r}")
        values[key.strip()] = value.strip().strip('"').strip("'")
    return values


@dataclass(frozen=True)
class Settings:
    # Database: None means "discover" (local server on 127.0.0.1:5432, else a private cluster).
    database_url: str | None = None

    # Asterisk listeners. Everything binds to loopback unless the admin says otherwise.
    bind_host: str = "127.0.0.1"
    sip_port: int = 5060
    http_port: int = 8088  # ARI lives on Asterisk's HTTP server
    ami_port: int = 5038
    agi_port: int = 4573  # FastAGI server run by the controller
    health_port: int = 8090  # controller's own /health endpoint

    ari_user: str = "ivr"
    ari_password: str = field(default="", repr=False)
    ari_app: str = "ivr"
    ami_user: str = "ivr"
    ami_secret: str = field(default="", repr=False)

    # Where inbound carrier traffic comes from (comma-separated IPs/CIDRs).
    carrier_match: str = "127.0.0.1"
    # Where outbound calls go: the carrier's SIP address (a test answering phone in the lab).
    carrier_host: str = "127.0.0.1"
    carrier_port: int = 5090
    # Seconds between SIP OPTIONS to the carrier (0 = off): detects a trunk that is down.
    carrier_qualify: int = 0
    # RTP port range of Asterisk.
    rtp_start: int = 10000
    rtp_end: int = 10999
    # The company's single public number, E.164.
    public_number: str = "+74951234567"

    sound_language: str = RUSSIAN_SOUNDS_LANGUAGE
    # Greeting played to inbound callers (Asterisk sound names, played in sound_language).
    greeting_sounds: tuple[str, ...] = ("hello", "beep")
    # Greeting call flow: how long to wait for the one digit after the greeting ends.
    digit_timeout: float = 5.0

    # --- the confirmation robot (ivr-robot: dialer, notifications API, webhook, SMS) ----------
    company_name: str = ""
    # Caller ID of the robot's calls (E.164; default: the public number, so a call back reaches us).
    robot_caller_id: str = ""
    # PJSIP endpoint of the outbound trunk; originates go to PJSIP/<number>@<trunk>.
    outbound_trunk: str = "carrier"
    # Stable name of this dialer process: its ARI app is "<ari_app>-robot-<worker>", so a
    # restarted dialer gets back the calls it left in Asterisk. One name per process.
    dialer_worker: str = "dialer1"
    dialer_max_channels: int = 10        # concurrent outbound calls of this dialer
    dialer_cps: float = 5.0              # new calls per second
    dialer_client_interval: float = 600.0  # seconds between two calls to the same client
    dialer_ring_timeout: int = 30        # seconds the client's phone rings before "no answer"
    robot_digit_timeout: float = 6.0     # after the prompt ends, seconds to wait for a key
    robot_total_timeout: float = 120.0   # a robot call never lasts longer than this after answer
    api_port: int = 8091                 # notifications HTTP API (loopback by default)
    api_token: str = field(default="", repr=False)
    webhook_url: str = ""                # CRM URL told about final results ("" = keep queued)
    webhook_secret: str = field(default="", repr=False)
    smpp_host: str = ""                  # SMSC; "" = SMS channel off (jobs wait)
    smpp_port: int = 2775
    smpp_system_id: str = ""
    smpp_password: str = field(default="", repr=False)
    sms_source: str = ""                 # sender name/number of SMS (default: the public number)
    sms_http_url: str = ""               # HTTP SMS gateway instead of SMPP
    sms_http_token: str = field(default="", repr=False)
    tts_cache_mb: int = 512
    robot_no_speech_timeout: float = 5.0  # spoken dialog: after a question, seconds until "silence"
    asr_queue: int = 8                    # recognitions waiting beyond the one running
    utterance_retention_days: int = 30    # utterance audio kept for review this long
    asr_engine: str = "whisper"           # whisper (faster-whisper, Whisper base) | vosk (model supplied)
    vosk_model: str = ""                  # folder of a Russian Vosk model (IVR_ASR_ENGINE=vosk)
    vosk_grammar: bool = True             # restrict Vosk to the dialog's phrases
    silero_model: str = ""                # a Silero TTS model file (torch.package), for tts_engine: silero
    silero_speaker: str = "baya"

    # Asterisk: chroot image (private install) and the name of the instance inside it.
    asterisk_root: Path = PROJECT_ROOT / ".cache" / "asterisk-root"
    asterisk_instance: str = "main"
    state_dir: Path = PROJECT_ROOT / "var"

    @property
    def ari_url(self) -> str:
        return f"http://{self.bind_host}:{self.http_port}"

    @property
    def ari_ws_url(self) -> str:
        return f"ws://{self.bind_host}:{self.http_port}/ari/events"

    def require_secrets(self) -> None:
        missing = [n for n, v in (("IVR_ARI_PASSWORD", self.ari_password), ("IVR_AMI_SECRET", self.ami_secret)) if not v]
        if missing:
            raise ConfigError(
                f"{', '.join(missing)} not set: run `ivr stack init` to generate secrets into "
                f"{DEFAULT_ENV_FILE}, or export them"
            )

    def with_overrides(self, **changes: object) -> "Settings":
        return replace(self, **changes)


# Environment variable -> (field name, parser)
_ENV_MAP = {
    "DATABASE_URL": ("database_url", lambda n, v: v or None),
    "IVR_BIND_HOST": ("bind_host", lambda n, v: _checked(n, v, _HOST_RE, "host")),
    "IVR_SIP_PORT": ("sip_port", _port),
    "IVR_HTTP_PORT": ("http_port", _port),
    "IVR_AMI_PORT": ("ami_port", _port),
    "IVR_AGI_PORT": ("agi_port", _port),
    "IVR_HEALTH_PORT": ("health_port", _port),
    "IVR_ARI_USER": ("ari_user", lambda n, v: _checked(n, v, _NAME_RE, "user name")),
    "IVR_ARI_PASSWORD": ("ari_password", lambda n, v: _checked(n, v, _SECRET_RE, "secret (12-128 chars of A-Za-z0-9_-.~+/=)")),
    "IVR_ARI_APP": ("ari_app", lambda n, v: _checked(n, v, _NAME_RE, "application name")),
    "IVR_AMI_USER": ("ami_user", lambda n, v: _checked(n, v, _NAME_RE, "user name")),
    "IVR_AMI_SECRET": ("ami_secret", lambda n, v: _checked(n, v, _SECRET_RE, "secret (12-128 chars of A-Za-z0-9_-.~+/=)")),
    "IVR_CARRIER_MATCH": ("carrier_match", lambda n, v: v),
    "IVR_CARRIER_HOST": ("carrier_host", lambda n, v: _checked(n, v, _HOST_RE, "host")),
    "IVR_CARRIER_PORT": ("carrier_port", _port),
    "IVR_CARRIER_QUALIFY": ("carrier_qualify", lambda n, v: _int(n, v, 0, 3600)),
    "IVR_RTP_START": ("rtp_start", _port),
    "IVR_RTP_END": ("rtp_end", _port),
    "IVR_PUBLIC_NUMBER": ("public_number", lambda n, v: v),
    "IVR_SOUND_LANGUAGE": ("sound_language", lambda n, v: _checked(n, v, _NAME_RE, "language")),
    "IVR_DIGIT_TIMEOUT": ("digit_timeout", lambda n, v: _float(n, v, minimum=0.5)),
    "IVR_ASTERISK_ROOT": ("asterisk_root", lambda n, v: Path(v)),
    "IVR_ASTERISK_INSTANCE": ("asterisk_instance", lambda n, v: _checked(n, v, _NAME_RE, "instance name")),
    "IVR_STATE_DIR": ("state_dir", lambda n, v: Path(v)),
    "IVR_COMPANY_NAME": ("company_name", lambda n, v: _text(n, v, 100)),
    "IVR_ROBOT_CALLER_ID": ("robot_caller_id", lambda n, v: v),
    "IVR_OUTBOUND_TRUNK": ("outbound_trunk", lambda n, v: _checked(n, v, _NAME_RE, "endpoint name")),
    "IVR_DIALER_WORKER": ("dialer_worker", lambda n, v: _checked(n, v, _NAME_RE, "worker name")),
    "IVR_DIALER_MAX_CHANNELS": ("dialer_max_channels", lambda n, v: _int(n, v, 1, 1000)),
    "IVR_DIALER_CPS": ("dialer_cps", lambda n, v: _float(n, v, minimum=0.1)),
    "IVR_DIALER_CLIENT_INTERVAL": ("dialer_client_interval", lambda n, v: _float(n, v)),
    "IVR_DIALER_RING_TIMEOUT": ("dialer_ring_timeout", lambda n, v: _int(n, v, 5, 120)),
    "IVR_ROBOT_DIGIT_TIMEOUT": ("robot_digit_timeout", lambda n, v: _float(n, v, minimum=1.0)),
    "IVR_ROBOT_TOTAL_TIMEOUT": ("robot_total_timeout", lambda n, v: _float(n, v, minimum=10.0)),
    "IVR_API_PORT": ("api_port", _port),
    "IVR_API_TOKEN": ("api_token", lambda n, v: _checked(n, v, _SECRET_RE, "token (12-128 chars of A-Za-z0-9_-.~+/=)")),
    "IVR_WEBHOOK_URL": ("webhook_url", lambda n, v: _url(n, v)),
    "IVR_WEBHOOK_SECRET": ("webhook_secret", lambda n, v: _checked(n, v, _SECRET_RE, "secret")),
    "IVR_SMPP_HOST": ("smpp_host", lambda n, v: v and _checked(n, v, _HOST_RE, "host")),
    "IVR_SMPP_PORT": ("smpp_port", _port),
    "IVR_SMPP_SYSTEM_ID": ("smpp_system_id", lambda n, v: _text(n, v, 15)),
    "IVR_SMPP_PASSWORD": ("smpp_password", lambda n, v: _text(n, v, 8)),
    "IVR_SMS_SOURCE": ("sms_source", lambda n, v: _text(n, v, 20)),
    "IVR_SMS_HTTP_URL": ("sms_http_url", lambda n, v: _url(n, v)),
    "IVR_SMS_HTTP_TOKEN": ("sms_http_token", lambda n, v: _text(n, v, 256)),
    "IVR_TTS_CACHE_MB": ("tts_cache_mb", lambda n, v: _int(n, v, 1, 100_000)),
    "IVR_ROBOT_NO_SPEECH_TIMEOUT": ("robot_no_speech_timeout", lambda n, v: _float(n, v, minimum=1.0)),
    "IVR_ASR_QUEUE": ("asr_queue", lambda n, v: _int(n, v, 0, 1000)),
    "IVR_UTTERANCE_RETENTION_DAYS": ("utterance_retention_days", lambda n, v: _int(n, v, 1, 3650)),
    "IVR_SILERO_MODEL": ("silero_model", lambda n, v: _text(n, v, 500)),
    "IVR_SILERO_SPEAKER": ("silero_speaker", lambda n, v: _checked(n, v, _NAME_RE, "speaker name")),
    "IVR_ASR_ENGINE": ("asr_engine", lambda n, v: _choice(n, v, ("whisper", "vosk"))),
    "IVR_VOSK_MODEL": ("vosk_model", lambda n, v: _text(n, v, 500)),
    "IVR_VOSK_GRAMMAR": ("vosk_grammar", lambda n, v: _choice(n, v, ("0", "1", "yes", "no", "true", "false"))
                         in ("1", "yes", "true")),
}


def _int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is outside {low}..{high}")
    return value


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(choices)}")
    return value


def _text(name: str, raw: str, limit: int) -> str:
    if len(raw) > limit or any(ord(c) < 32 for c in raw):
        raise ConfigError(f"{name}: at most {limit} printable characters")
    return raw


def _url(name: str, raw: str) -> str:
    if raw and not re.fullmatch(r"https?://[^\s]{1,500}", raw):
        raise ConfigError(f"{name}={raw!r} is not an http(s) URL")
    return raw


def load_settings(environ: dict[str, str] | None = None, env_file: Path | None = None) -> Settings:
    environ = dict(os.environ if environ is None else environ)
    if env_file is None:
        env_file = Path(environ.get("IVR_ENV_FILE", DEFAULT_ENV_FILE))
    merged = {**read_env_file(env_file), **{k: v for k, v in environ.items() if k in _ENV_MAP}}
    values: dict[str, object] = {}
    for key, raw in merged.items():
        if key in _ENV_MAP:
            name, parse = _ENV_MAP[key]
            values[name] = parse(key, raw)
    settings = Settings(**values)  # type: ignore[arg-type]
    # Imported here to keep config free of import cycles: the phone module is pure.
    from models.phones import normalize_phone, PhoneNumberError

    try:
        normalize_phone(settings.public_number)
    except PhoneNumberError as exc:
        raise ConfigError(f"IVR_PUBLIC_NUMBER: {exc}") from None
    if settings.robot_caller_id:
        try:
            settings = replace(settings, robot_caller_id=normalize_phone(settings.robot_caller_id))
        except PhoneNumberError as exc:
            raise ConfigError(f"IVR_ROBOT_CALLER_ID: {exc}") from None
    return settings


def generate_env_file(path: Path = DEFAULT_ENV_FILE, **extra: str) -> Path:
    """Create the env file with fresh random secrets; keep existing values (idempotent)."""
    existing = read_env_file(path)
    wanted = {
        "IVR_ARI_PASSWORD": existing.get("IVR_ARI_PASSWORD") or secrets.token_urlsafe(24),
        "IVR_AMI_SECRET": existing.get("IVR_AMI_SECRET") or secrets.token_urlsafe(24),
        "IVR_API_TOKEN": existing.get("IVR_API_TOKEN") or secrets.token_urlsafe(24),
    }
    merged = {**existing, **wanted, **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "# Generated by `ivr stack init`. Secrets are random per machine; keep this file private.\n"
    body += "".join(f"{k}={v}\n" for k, v in sorted(merged.items()))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def settings_fields() -> list[str]:
    return [f.name for f in fields(Settings)]
