"""Render the Asterisk configuration the product ships (``asterisk-conf/*.conf.j2`` and
``dialplans/extensions.conf.j2``) from :class:`ivr.config.Settings`.

Every value that reaches a config file is validated first (Asterisk config files have no
quoting: a newline, ``;``, ``[`` or ``,`` in a value would add settings, comment the rest of a
line out, open a section or add an argument; ``)``, ``$``, ``{`` would rewrite dialplan), and
the template filter ``v`` checks again, so a template that forgets the validation still cannot
emit a hostile value. Rendering is deterministic: same settings, same bytes.
"""

from __future__ import annotations

import glob
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

import jinja2

from ivr.config import PROJECT_ROOT, ConfigError, Settings

CONF_TEMPLATE_DIR = PROJECT_ROOT / "asterisk-conf"
DIALPLAN_TEMPLATE_DIR = PROJECT_ROOT / "dialplans"

# Files that are rendered, in order. extensions.conf comes from dialplans/.
CONF_FILES = (
    "asterisk.conf", "modules.conf", "logger.conf", "http.conf", "ari.conf", "manager.conf",
    "pjsip.conf", "pjproject.conf", "rtp.conf", "websocket_client.conf", "extensions.conf", "cdr.conf", "cel.conf", "indications.conf",
    "acl.conf", "ccss.conf", "features.conf", "udptl.conf", "stasis.conf", "sorcery.conf",
    "codecs.conf", "musiconhold.conf", "cli.conf", "say.conf", "res_http_media_cache.conf",
)

_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HOSTNAME_RE = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*")
_SECRET_RE = re.compile(r"[A-Za-z0-9_\-.~+/=]{12,128}")
_PATH_RE = re.compile(r"/[A-Za-z0-9_./-]*")
_NUMBER_RE = re.compile(r"\+?[0-9]{3,20}")
# What no rendered value may contain, whatever the template (defence in depth).
_FORBIDDEN = set("\r\n\t;[](){}$,\"'`\\<>|&!*#")


@dataclass(frozen=True)
class Directories:
    """Paths in asterisk.conf [directories], as Asterisk sees them."""

    etc: str
    run: str
    log: str
    spool: str
    db: str
    keys: str
    cache: str
    data: str = "/usr/share/asterisk"
    varlib: str = "/var/lib/asterisk"
    agi: str = "/usr/share/asterisk/agi-bin"
    sbin: str = "/usr/sbin"
    mod: str = "/usr/lib/asterisk/modules"

    @classmethod
    def instance(cls, instance: str, moddir: str) -> "Directories":
        base = f"/srv/ivr/{instance}"
        return cls(etc=f"{base}/etc", run=f"{base}/run", log=f"{base}/log", spool=f"{base}/spool",
                   db=f"{base}/db", keys=f"{base}/keys", cache=f"{base}/cache", mod=moddir)

    @classmethod
    def system(cls, moddir: str, etc: str = "/etc/asterisk") -> "Directories":
        return cls(etc=etc, run="/var/run/asterisk", log="/var/log/asterisk", spool="/var/spool/asterisk",
                   db="/var/lib/asterisk", keys="/var/lib/asterisk", cache="/var/cache/asterisk", mod=moddir)


def find_moddir(root: Path | str = "/") -> str:
    """The Asterisk module directory under ``root`` (multiarch dir derived, not hard-coded)."""
    root = Path(root)
    candidates = sorted(glob.glob(str(root / "usr/lib/*/asterisk/modules"))) + [
        str(root / "usr/lib/asterisk/modules"), str(root / "usr/lib64/asterisk/modules")]
    for cand in candidates:
        if Path(cand, "chan_pjsip.so").exists() or Path(cand, "res_ari.so").exists():
            return "/" + str(Path(cand).relative_to(root))
    raise ConfigError(f"no Asterisk module directory (with chan_pjsip.so) found under {root}")


# --- validation -----------------------------------------------------------------------------

def _ip(name: str, value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an IP address") from None


def _host(name: str, value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not isinstance(value, str) or not _HOSTNAME_RE.fullmatch(value):
        raise ConfigError(f"{name}={value!r} is not a valid IP address or host name")
    return value.lower()


def _port(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={value!r} is not an integer port")
    if not 1 <= value <= 65535:
        raise ConfigError(f"{name}={value} is outside 1..65535")
    return value


def _match(name: str, value: str, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ConfigError(f"{name}={value!r} is not a valid {what}")
    return value


def _networks(name: str, value: str) -> list[str]:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} is empty: list the carrier's IPs/CIDRs, comma-separated")
    out: list[str] = []
    for part in value.split(","):
        part = part.strip()
        try:
            net = ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise ConfigError(f"{name}: {part!r} is not an IP address or CIDR network") from None
        text = str(net.network_address) if net.num_addresses == 1 else str(net)
        if text not in out:
            out.append(text)
    return out


def _secret(name: str, value: str) -> str:
    if not value:
        raise ConfigError(f"{name} is not set: run `ivr stack init` to generate secrets, or export it")
    return _match(name, value, _SECRET_RE, "secret (12-128 chars of A-Za-z0-9_-.~+/=)")


def validate(settings: Settings) -> dict[str, object]:
    """Check every setting that reaches Asterisk config; return the template context."""
    s = settings
    ctx: dict[str, object] = {
        "bind_host": _ip("IVR_BIND_HOST", s.bind_host),
        "sip_port": _port("IVR_SIP_PORT", s.sip_port),
        "http_port": _port("IVR_HTTP_PORT", s.http_port),
        "ami_port": _port("IVR_AMI_PORT", s.ami_port),
        "agi_port": _port("IVR_AGI_PORT", s.agi_port),
        "ari_user": _match("IVR_ARI_USER", s.ari_user, _NAME_RE, "user name"),
        "ari_password": _secret("IVR_ARI_PASSWORD", s.ari_password),
        "ari_app": _match("IVR_ARI_APP", s.ari_app, _NAME_RE, "application name"),
        "ami_user": _match("IVR_AMI_USER", s.ami_user, _NAME_RE, "user name"),
        "ami_secret": _secret("IVR_AMI_SECRET", s.ami_secret),
        "carrier_match": _networks("IVR_CARRIER_MATCH", s.carrier_match),
        "carrier_host": _host("IVR_CARRIER_HOST", s.carrier_host),
        "carrier_port": _port("IVR_CARRIER_PORT", s.carrier_port),
        "carrier_qualify": int(s.carrier_qualify),
        "rtp_start": _port("IVR_RTP_START", s.rtp_start),
        "rtp_end": _port("IVR_RTP_END", s.rtp_end),
        "public_number": _match("IVR_PUBLIC_NUMBER", s.public_number, _NUMBER_RE, "phone number (E.164)"),
        "sound_language": _match("IVR_SOUND_LANGUAGE", s.sound_language, _NAME_RE, "language"),
        "instance": _match("IVR_ASTERISK_INSTANCE", s.asterisk_instance, _NAME_RE, "instance name"),
    }
    if ctx["rtp_start"] >= ctx["rtp_end"]:  # type: ignore[operator]
        raise ConfigError(f"IVR_RTP_START={s.rtp_start} must be below IVR_RTP_END={s.rtp_end}")
    tcp = {"IVR_HTTP_PORT": s.http_port, "IVR_AMI_PORT": s.ami_port, "IVR_AGI_PORT": s.agi_port}
    if len(set(tcp.values())) != len(tcp):
        raise ConfigError(f"TCP ports must differ: {tcp}")
    if s.rtp_start <= s.sip_port <= s.rtp_end:
        raise ConfigError(f"IVR_SIP_PORT={s.sip_port} lies inside the RTP range {s.rtp_start}-{s.rtp_end}")
    ctx["bind_is_wildcard"] = ipaddress.ip_address(ctx["bind_host"]).is_unspecified  # type: ignore[arg-type]
    # AMI: loopback always, the bind address too when it is a specific one.
    permits = ["127.0.0.1/255.255.255.255"]
    bind = ipaddress.ip_address(ctx["bind_host"])  # type: ignore[arg-type]
    if bind.version == 4 and not bind.is_unspecified and str(bind) != "127.0.0.1":
        permits.append(f"{bind}/255.255.255.255")
    ctx["ami_permits"] = permits
    return ctx


def _safe_value(value: object) -> object:
    """Jinja filter ``v``: refuse any value that could break out of a config line."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return value
    text = str(value)
    bad = sorted(set(text) & _FORBIDDEN)
    if bad or not text:
        raise ConfigError(f"refusing to write {text!r} into Asterisk config (characters {''.join(bad)!r})")
    return text


def _path_value(value: object) -> str:
    text = str(value)
    if not _PATH_RE.fullmatch(text) or ".." in PurePosixPath(text).parts:
        raise ConfigError(f"refusing to write path {text!r} into asterisk.conf")
    return text


TEMPLATES_ENV = "IVR_DIALPLAN_TEMPLATES"


def default_template_dirs() -> list[Path]:
    """The admin's template folders from ``IVR_DIALPLAN_TEMPLATES`` (environment, else the env
    file), ``os.pathsep``-separated. Every writer of the configuration (``ivr stack up``,
    ``sync-operators``, ``install-system``, ``ivr dialplan``) uses them, so an operator sync
    never silently drops an admin's edit."""
    import os

    value = os.environ.get(TEMPLATES_ENV)
    if value is None:
        from ivr.config import DEFAULT_ENV_FILE, read_env_file

        try:
            value = read_env_file(Path(os.environ.get("IVR_ENV_FILE", DEFAULT_ENV_FILE))).get(TEMPLATES_ENV)
        except (ConfigError, OSError):
            value = None
    return [Path(p) for p in (value or "").split(os.pathsep) if p]


def template_search_path(template_dirs: Sequence[Path | str] | None = None) -> list[str]:
    """Where templates are looked up: the admin's folders first (a file there replaces the
    shipped template of the same name), then ``asterisk-conf/`` and ``dialplans/``."""
    return [str(Path(d)) for d in (template_dirs or ())] + [str(CONF_TEMPLATE_DIR), str(DIALPLAN_TEMPLATE_DIR)]


def _environment(template_dirs: Sequence[Path | str] | None = None) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_search_path(template_dirs)),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["v"] = _safe_value
    env.filters["path"] = _path_value
    # IPv6 literals in URIs and host:port need brackets; applied after ``v``.
    env.filters["urihost"] = lambda value: f"[{value}]" if ":" in str(value) else value
    return env


@dataclass(frozen=True)
class OperatorEndpoint:
    """An operator's phone as written into pjsip.conf / extensions.conf (validated)."""

    extension: str
    name: str
    secret: str
    contact: str | None = None   # sip:host:port for phones that do not register


_EXTENSION_RE = re.compile(r"[0-9]{2,8}")

# Feature codes of the [operators] context: code -> (Stasis arguments, what it does). The
# controller identifies the operator by his authenticated endpoint; prompts are in Russian.
FEATURE_CODES: dict[str, tuple[str, str]] = {
    "*45": ("feature,pause_toggle", "pause / rejoin (toggle)"),
    "*44": ("feature,login_toggle", "log in / log out (toggle)"),
    "*77": ("summon", "summon a current-sales manager to the sales floor"),
    "*78": ("feature,summon_arrived", "the summoned manager confirms arrival"),
    "*69": ("feature,callback_last", "call the last caller back (the number comes from the calls table)"),
    # The transfer itself is pressed during a customer call (*2, the colleague's extension, #) and
    # reaches the controller as DTMF on the operator's bridged leg; dialled alone it only explains.
    "*2": ("feature,transfer_help", "transfer: during a customer call press *2, the extension and #"),
}
# Caller-ID names shown on phones: letters (any script), digits, spaces, . _ -
_DISPLAY_NAME_RE = re.compile(r"[^\W][\w .\-]{0,59}")
_CONTACT_RE = re.compile(r"sip:([A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\]):([0-9]{1,5})")


def validate_operator(op: OperatorEndpoint) -> OperatorEndpoint:
    what = f"operator {op.extension!r}"
    _match(f"{what} extension", op.extension, _EXTENSION_RE, "extension (2-8 digits)")
    _match(f"{what} name", op.name, _DISPLAY_NAME_RE, "display name (letters, digits, spaces, . _ -; max 60)")
    _secret(f"{what} SIP secret", op.secret)
    if op.contact is not None:
        m = _CONTACT_RE.fullmatch(op.contact)
        if not m:
            raise ConfigError(f"{what} contact {op.contact!r} is not sip:HOST:PORT")
        _host(f"{what} contact host", m.group(1).strip("[]"))
        _port(f"{what} contact port", int(m.group(2)))
    return op


def render_texts(settings: Settings, directories: Directories,
                 operators: tuple[OperatorEndpoint, ...] | list[OperatorEndpoint] = (),
                 template_dirs: Sequence[Path | str] | None = None) -> dict[str, str]:
    """File name -> rendered text, for all of CONF_FILES.

    ``template_dirs``: admin folders searched before the shipped templates. A template that
    does not parse (Jinja syntax), uses an unknown variable or writes a hostile value raises
    :class:`ConfigError` naming the file and line; nothing is returned half-rendered.
    """
    ctx = validate(settings)
    ctx["dirs"] = directories
    seen: set[str] = set()
    for op in operators:
        validate_operator(op)
        if op.extension in seen:
            raise ConfigError(f"operator extension {op.extension} appears twice")
        if op.extension in (ctx["public_number"], str(ctx["public_number"]).lstrip("+")):
            raise ConfigError(f"operator extension {op.extension} is the public number")
        seen.add(op.extension)
    ctx["operators"] = sorted(operators, key=lambda op: op.extension)
    ctx["feature_codes"] = FEATURE_CODES
    env = _environment(template_dirs)
    out: dict[str, str] = {}
    for name in CONF_FILES:
        try:
            out[name] = env.get_template(name + ".j2").render(ctx)
        except jinja2.TemplateNotFound:
            raise ConfigError(f"template {name}.j2 missing from {' / '.join(template_search_path(template_dirs))}") from None
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"template {exc.filename or name + '.j2'} line {exc.lineno}: syntax error: {exc.message}") from None
        except jinja2.UndefinedError as exc:
            raise ConfigError(f"template {name}.j2: {exc.message}") from None
    return out


def render_config(settings: Settings, out_dir: Path, directories: Directories | None = None) -> list[Path]:
    """Render all config files into ``out_dir`` (created); return the written paths.

    ``directories`` defaults to the private-instance layout ``/srv/ivr/<instance>/...`` with
    the module directory found in ``settings.asterisk_root`` (or ``/usr/lib/asterisk/modules``
    if there is no image yet).
    """
    if directories is None:
        try:
            moddir = find_moddir(settings.asterisk_root)
        except ConfigError:
            moddir = "/usr/lib/asterisk/modules"
        directories = Directories.instance(settings.asterisk_instance, moddir)
    texts = render_texts(settings, directories, template_dirs=default_template_dirs())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in texts.items():
        path = out_dir / name
        path.write_text(text, encoding="utf-8")
        path.chmod(0o640)
        written.append(path)
    return written
