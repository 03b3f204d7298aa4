"""``ivr dialplan apply`` / ``rollback``: write a checked file set into the live instance, reload
the modules that read the changed files over AMI, smoke-check, and put the previous files back
(and reload again) when anything fails. Every apply is stored (``ivr.dialplan.store``).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ivr.config import Settings
from ivr.dialplan import store
from ivr.dialplan.check import INSTANCE_FILES, CheckResult, check_files
from ivr.dialplan.files import (
    FileSet, changed_files, diff, from_stored, mask, read_dir, render_set, secrets_in, secrets_of, sha256_of,
    to_stored,
    write_dir,
)
from ivr.dialplan.verify import Expectations, log_problems, verify
from ivr.stack.asterisk import AsteriskInstance
from ivr.stack.render import CONF_FILES, OperatorEndpoint

# What makes Asterisk read a file again (AMI "Command" actions). Calls in progress survive
# all of these.
RELOADS: dict[str, tuple[str, ...]] = {
    "pjsip.conf": ("module reload res_pjsip.so",),
    "extensions.conf": ("dialplan reload",),
    "manager.conf": ("manager reload",),
    "ari.conf": ("module reload res_ari.so",),
    "http.conf": ("module reload http",),
    "rtp.conf": ("module reload res_rtp_asterisk.so",),
    "logger.conf": ("logger reload",),
    "features.conf": ("module reload features",),
    "indications.conf": ("module reload indications",),
    "musiconhold.conf": ("module reload res_musiconhold.so",),
    "pjproject.conf": ("module reload res_pjproject.so",),
    "res_http_media_cache.conf": ("module reload res_http_media_cache.so",),
    "acl.conf": ("module reload acl",),
    "udptl.conf": ("module reload udptl",),
    "cdr.conf": ("module reload cdr",),
    "cel.conf": ("module reload cel",),
    "ccss.conf": ("module reload ccss",),
    "cli.conf": (),              # CLI aliases: no module of ours reads it
    "say.conf": (),              # read when a number is said
    "codecs.conf": (),
    "websocket_client.conf": (),  # no outbound websocket is configured
}
# Read only at start-up: a change needs `ivr stack down && ivr stack up`, not an apply.
RESTART_ONLY = ("asterisk.conf", "modules.conf", "stasis.conf", "sorcery.conf")
# Log lines during a reload that are about configuration (the live instance also logs calls).
_CONFIG_LOG_RE = re.compile(r"config\.c|config_options\.c|pbx_config|sorcery|loader\.c|res_pjsip/config_|parse error")

_ENDPOINT_SECTION_RE = re.compile(r"^\[([0-9]{2,8})\]\s*\ntype\s*=\s*endpoint\b", re.M)


class ApplyRefused(Exception):
    """Nothing was written: the render or the check failed, or the change needs a restart."""

    def __init__(self, message: str, problems: Sequence[str] = ()):
        super().__init__(message)
        self.problems = list(problems)


class ApplyRolledBack(Exception):
    """The files were written but the smoke check failed: the previous files are back."""

    def __init__(self, version: int, problems: Sequence[str], after_rollback: Sequence[str]):
        super().__init__(f"apply failed the smoke check and was rolled back (version {version}): "
                         + "; ".join(problems))
        self.version = version
        self.problems = list(problems)
        self.after_rollback = list(after_rollback)


@dataclass
class ApplyResult:
    version: int | None          # None: nothing changed, nothing stored
    changed: list[str] = field(default_factory=list)
    reloads: list[str] = field(default_factory=list)
    diff: str = ""
    check: CheckResult | None = None
    seconds: float = 0.0


def operator_extensions(files: FileSet) -> list[str]:
    """Operators' endpoints declared in a file set's pjsip.conf."""
    return sorted(set(_ENDPOINT_SECTION_RE.findall(files.get("pjsip.conf", ""))))


def expectations(settings: Settings, files: FileSet) -> Expectations:
    return Expectations(settings.public_number, settings.ari_app, operator_extensions(files))


def reload_commands(changed: Sequence[str]) -> list[str]:
    out: list[str] = []
    for name in sorted(changed, key=lambda n: CONF_FILES.index(n) if n in CONF_FILES else 999):
        for cmd in RELOADS.get(name, ("core reload",)):
            if cmd not in out:
                out.append(cmd)
    return out


class AmiCli:
    """CLI commands over AMI from synchronous code (own event loop)."""

    def __init__(self, settings: Settings):
        from ivr.ami.adapter import AmiAdapter

        host = "127.0.0.1" if settings.bind_host in ("0.0.0.0", "::") else settings.bind_host
        self.loop = asyncio.new_event_loop()
        self.ami = AmiAdapter(host, settings.ami_port, settings.ami_user, settings.ami_secret)

    def connect(self) -> "AmiCli":
        self.loop.run_until_complete(self.ami.connect(timeout=5))
        return self

    def __call__(self, command: str) -> str:
        return self.loop.run_until_complete(self.ami.command(command, timeout=20))

    def close(self) -> None:
        try:
            self.ami.close()
            self.loop.run_until_complete(asyncio.sleep(0))
        finally:
            self.loop.close()


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _log_since(path: Path, offset: int) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return []


def apply_files(settings: Settings, database_url: str, files: FileSet, *, applied_by: str | None,
                secrets: Sequence[str] = (), check: bool = True, rollback_of: int | None = None,
                smoke: Callable[[], list[str]] | None = None) -> ApplyResult:
    """Check ``files``, write them into the live instance, reload, smoke-check; restore the
    previous files automatically on failure (ApplyRolledBack). ``smoke``: extra checks (e.g. a
    real call) run after the built-in ones."""
    started = time.monotonic()
    instance = AsteriskInstance(settings)
    secrets = [*secrets_of(settings), *secrets]
    secrets += secrets_in(files)
    with instance.config_lock():
        live = read_dir(instance.etc_dir)
        secrets += secrets_in(live)
        changed = changed_files(live, files)
        text = diff(live, files, secrets)
        result = ApplyResult(version=None, changed=changed, diff=text)
        if not changed:
            result.seconds = time.monotonic() - started
            return result
        restart = [n for n in changed if n in RESTART_ONLY]
        if restart:
            raise ApplyRefused(f"{', '.join(restart)} changed: Asterisk reads it only at start-up; "
                               f"use `ivr stack down && ivr stack up` for such a change", restart)
        if not instance.is_running():
            raise ApplyRefused(f"Asterisk instance {instance.name!r} is not running (ivr stack up)")
        expect = expectations(settings, files)
        if check:
            result.check = check_files(settings, files, expect)
            if not result.check.ok:
                raise ApplyRefused("the check failed; nothing was applied", result.check.problems)
        try:
            ami = AmiCli(settings).connect()
        except Exception as exc:  # AmiAuthError / AmiUnavailable
            raise ApplyRefused(f"cannot reload over AMI: {exc}") from None
        try:
            messages = instance.host_dir / "log" / "messages.log"
            mark = _log_size(messages)
            write_dir(files, instance.etc_dir, remove_others=True)
            result.reloads = reload_commands(changed)
            for cmd in result.reloads:
                ami(cmd)
            problems = [f"Asterisk log: {line}" for line in log_problems(_log_since(messages, mark))
                        if _CONFIG_LOG_RE.search(line)]
            problems += verify(ami, expect, stop_early=True)
            if not problems and smoke is not None:
                problems += smoke()
            problems = [mask(p, secrets) for p in problems]
            if problems:
                write_dir(live, instance.etc_dir, remove_others=True)
                for cmd in result.reloads:
                    ami(cmd)
                after = verify(ami, expectations(settings, live))
                version = store.record(
                    database_url, instance=instance.name, applied_by=applied_by, outcome="rolled_back",
                    sha256=sha256_of(files), files=to_stored(files, settings), diff=text,
                    problems="\n".join(problems), rollback_of=rollback_of, seconds=time.monotonic() - started)
                raise ApplyRolledBack(version, problems, after)
        finally:
            ami.close()
        result.seconds = time.monotonic() - started
        result.version = store.record(
            database_url, instance=instance.name, applied_by=applied_by, outcome="applied",
            sha256=sha256_of(files), files=to_stored(files, settings), diff=text, rollback_of=rollback_of,
            seconds=result.seconds)
        return result


def render_live(settings: Settings, database_url: str,
                template_dirs: Sequence[Path | str] | None = None) -> tuple[FileSet, list[OperatorEndpoint]]:
    """The file set for the live instance: templates + operators from the database."""
    from ivr.stack.operators import load_operator_endpoints

    operators = load_operator_endpoints(database_url)
    return render_set(settings, operators, template_dirs), operators


def apply(settings: Settings, database_url: str, *, applied_by: str | None,
          template_dirs: Sequence[Path | str] | None = None, check: bool = True,
          smoke: Callable[[], list[str]] | None = None) -> ApplyResult:
    """Render (templates + database), then :func:`apply_files`. ConfigError when a template
    does not render: nothing is written."""
    files, operators = render_live(settings, database_url, template_dirs)
    return apply_files(settings, database_url, files, applied_by=applied_by, check=check, smoke=smoke,
                       secrets=[op.secret for op in operators])


def rollback(settings: Settings, database_url: str, version_id: int, *, applied_by: str | None,
             check: bool = True, smoke: Callable[[], list[str]] | None = None) -> ApplyResult:
    """Apply a stored version's files again (stored as a new version, ``rollback_of``). The
    files bound to the instance (directories, listeners, ARI/AMI) stay as they are now."""
    row = store.get_version(database_url, version_id)
    if row is None or row.instance != settings.asterisk_instance:
        raise KeyError(version_id)
    files = from_stored(dict(row.files), settings)
    live = read_dir(AsteriskInstance(settings).etc_dir)
    for name in (*INSTANCE_FILES, *RESTART_ONLY):
        if name in live:
            files[name] = live[name]
    return apply_files(settings, database_url, files, applied_by=applied_by, check=check, smoke=smoke,
                       rollback_of=version_id)


def sipp_smoke(settings: Settings, number: str = "ivr-greeting", workdir: Path | None = None,
               local_ip: str = "127.0.0.1") -> Callable[[], list[str]]:
    """An extra smoke check for :func:`apply_files`: a real SIP call from ``local_ip`` (must be
    in IVR_CARRIER_MATCH) to ``number`` in [from-carrier] must be answered. Needs sipp and a
    running controller (the greeting self-test number is answered by it)."""

    def run() -> list[str]:
        import tempfile

        from ivr.phones.sipp import SippCaller

        async def call():
            phone = SippCaller(settings.bind_host if settings.bind_host not in ("0.0.0.0", "::") else "127.0.0.1",
                               settings.sip_port, local_ip=local_ip, caller_id="79000000000",
                               workdir=workdir or Path(tempfile.mkdtemp(prefix="dialplan-smoke-")))
            return await phone.call(number, hold_after=1, timeout=8, raise_on_error=False)

        try:
            result = asyncio.run(call())
        except Exception as exc:  # noqa: BLE001 - sipp missing, ports...
            return [f"smoke call to {number} could not be placed: {exc}"]
        if not result.answered:
            return [f"smoke call to {number}@from-carrier was not answered (SIP {result.status})"]
        return []

    return run
