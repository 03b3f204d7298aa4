"""`ivr dialplan` against the real Asterisk (the e2e instance): render, check, diff, apply,
history, rollback; broken templates refused by the check; a broken apply rolled back
automatically while calls keep flowing (real sipp calls before, during and after)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ivr.config import ConfigError
from ivr.dialplan import store
from ivr.dialplan.apply import ApplyRefused, ApplyRolledBack, apply, render_live, rollback
from ivr.dialplan.check import check_files, check_settings
from ivr.dialplan.files import diff, read_dir
from ivr.dialplan.apply import expectations
from models.db import run_sql
from tests.conftest import unique_mobile
from tests.e2e.test_inbound_greeting import wait_for_row

pytestmark = pytest.mark.e2e

SHIPPED = Path(__file__).resolve().parents[2] / "dialplans" / "extensions.conf.j2"
OPERATORS = {"611": "Ольга Тестова", "612": "Пётр Проверкин"}


@pytest.fixture(scope="module")
def live(asterisk, e2e_settings, database_url):
    """The e2e instance with two operators in the database; its config is put back afterwards
    (other test modules of the session expect the plain config)."""
    for ext, name in OPERATORS.items():
        run_sql(database_url, "INSERT INTO operators (name, extension, sip_contact) VALUES (:n, :e, :c) "
                "ON CONFLICT (extension) DO NOTHING", n=name, e=ext, c=f"sip:127.0.0.1:{40000 + int(ext)}")
    yield asterisk
    run_sql(database_url, "DELETE FROM operators WHERE extension = ANY(:e)", e=list(OPERATORS))
    from ivr.stack.operators import sync_operators

    sync_operators(e2e_settings, database_url)


def _templates(tmp_path: Path, edit) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir(parents=True, exist_ok=True)
    text = SHIPPED.read_text(encoding="utf-8")
    (folder / "extensions.conf.j2").write_text(edit(text), encoding="utf-8")
    return folder


def _versions(url: str, instance: str) -> list:
    return store.list_versions(url, instance, 1000)


def test_render_check_diff_apply_history_rollback(live, e2e_settings, database_url, tmp_path):
    s = e2e_settings
    files, operators = render_live(s, database_url)
    assert {op.extension for op in operators} >= set(OPERATORS)
    assert all(op.secret for op in operators), "secrets are generated"
    result = check_files(s, files, expectations(s, files))
    assert result.ok, result.problems
    assert result.instance == f"{s.asterisk_instance}-check"

    first = apply(s, database_url, applied_by="alice")
    if first.version is None:   # an earlier run left the same config live
        first_id = store.active_version(database_url, s.asterisk_instance).id
    else:
        first_id = first.version
        assert "pjsip.conf" in first.changed and "module reload res_pjsip.so" in first.reloads
    assert diff(read_dir(live.etc_dir), render_live(s, database_url)[0]) == ""
    for ext in OPERATORS:
        assert f"Endpoint:  {ext}" in live.cli("pjsip show endpoints")
        assert "Dial(PJSIP/" + ext in live.cli(f"dialplan show {ext}@operators")

    # An admin adds an extension in his own template folder.
    templates = _templates(tmp_path, lambda t: t.replace(
        "exten => i,1,Playback(pbx-invalid)", "exten => 555,1,Playback(beep)\n same => n,Hangup()\n"
        "exten => i,1,Playback(pbx-invalid)"))
    runner = CliRunner()
    env = _cli_env(s, database_url)
    out = runner.invoke(_cli(), ["dialplan", "diff", "--templates", str(templates)], env=env)
    assert out.exit_code == 1, out.output
    assert "+exten => 555,1,Playback(beep)" in out.output
    assert s.ari_password not in out.output and s.ami_secret not in out.output

    out = runner.invoke(_cli(), ["dialplan", "apply", "--by", "bob", "--templates", str(templates)], env=env)
    assert out.exit_code == 0, out.output
    assert "dialplan reload" in out.output and "module reload res_pjsip.so" not in out.output
    assert "Playback(beep)" in live.cli("dialplan show 555@operators")
    second = store.active_version(database_url, s.asterisk_instance)
    assert second.applied_by == "bob" and "+exten => 555" in second.diff
    assert s.ari_password not in str(second.files) and s.ami_secret not in str(second.files)

    out = runner.invoke(_cli(), ["dialplan", "history"], env=env)
    assert out.exit_code == 0 and f"* {second.id:>4}" in out.output and "by bob" in out.output, out.output

    # Back to the first version: 555 is gone, stored as a new version.
    result = rollback(s, database_url, first_id, applied_by="carol")
    assert result.version is not None and result.changed == ["extensions.conf"]
    assert "There is no existence" in live.cli("dialplan show 555@operators")
    third = store.active_version(database_url, s.asterisk_instance)
    assert (third.id, third.rollback_of, third.applied_by) == (result.version, first_id, "carol")


def test_template_syntax_errors_are_refused_and_never_applied(live, e2e_settings, database_url, tmp_path):
    s = e2e_settings
    before = read_dir(live.etc_dir)
    count = len(_versions(database_url, s.asterisk_instance))
    # A Jinja error: refused at render.
    jinja = _templates(tmp_path / "jinja", lambda t: t.replace("{% endfor %}", "{% endfo %}", 1))
    with pytest.raises(ConfigError, match="syntax error"):
        apply(s, database_url, applied_by="mallory", template_dirs=[jinja])
    # An Asterisk error (a section that never closes): rendered fine, refused by the check.
    broken = _templates(tmp_path / "ast", lambda t: t.replace("[operators]", "[operators"))
    with pytest.raises(ApplyRefused) as refused:
        apply(s, database_url, applied_by="mallory", template_dirs=[broken])
    assert any("parse error" in p for p in refused.value.problems), refused.value.problems
    out = CliRunner().invoke(_cli(), ["dialplan", "check", "--templates", str(broken)], env=_cli_env(s, database_url))
    assert out.exit_code == 1 and "parse error" in out.output, out.output
    assert read_dir(live.etc_dir) == before
    assert len(_versions(database_url, s.asterisk_instance)) == count


def test_an_edit_that_opens_the_trunk_is_refused_by_check(live, e2e_settings, database_url, tmp_path):
    s = e2e_settings
    before = read_dir(live.etc_dir)
    trunk = _templates(tmp_path / "op", lambda t: t.replace(
        "exten => i,1,Playback(pbx-invalid)", "exten => _9X.,1,Dial(PJSIP/${EXTEN:1}@carrier,30)\n"
        "exten => i,1,Playback(pbx-invalid)"))
    with pytest.raises(ApplyRefused) as refused:
        apply(s, database_url, applied_by="mallory", template_dirs=[trunk])
    assert any("[operators] may dial operators only" in p for p in refused.value.problems), refused.value.problems
    inbound = _templates(tmp_path / "in", lambda t: t.replace(
        "[from-carrier]\n", "[from-carrier]\ninclude => operators\n"))
    with pytest.raises(ApplyRefused) as refused:
        apply(s, database_url, applied_by="mallory", template_dirs=[inbound])
    assert any("[from-carrier] must not include" in p for p in refused.value.problems), refused.value.problems
    assert read_dir(live.etc_dir) == before


async def _greeting_call(settings, tmp_path, **kwargs):
    from ivr.phones.sipp import SippCaller

    caller = unique_mobile()
    result = await SippCaller(settings.bind_host, settings.sip_port, caller_id=caller, workdir=tmp_path).call(
        "ivr-greeting", dtmf="1", dtmf_delay=kwargs.pop("dtmf_delay", 1.0), hold_after=6, **kwargs)
    return caller, result


async def test_a_broken_apply_is_rolled_back_and_calls_keep_flowing(live, controller, e2e_settings, database_url,
                                                                    tmp_path):
    s = e2e_settings
    caller, result = await _greeting_call(s, tmp_path)
    assert result.answered
    assert wait_for_row(database_url, "+" + caller).result == "digit"

    before = read_dir(live.etc_dir)
    # The admin's edit removes the public number's context. The check would refuse it
    # (test above); skipped here so the smoke check after the reload is what catches it.
    broken = _templates(tmp_path, lambda t: t.replace("[from-carrier]", "[from-carrier-old]"))
    during = asyncio.create_task(_greeting_call(s, tmp_path, dtmf_delay=4.0))
    await asyncio.sleep(1.0)   # the call is up when the apply starts
    with pytest.raises(ApplyRolledBack) as rolled:
        await asyncio.to_thread(apply, s, database_url, applied_by="mallory", template_dirs=[broken], check=False)
    assert any("does not enter Stasis" in p for p in rolled.value.problems), rolled.value.problems
    assert rolled.value.after_rollback == []
    assert read_dir(live.etc_dir) == before
    assert "Stasis(" in live.cli(f"dialplan show {s.public_number.lstrip('+')}@from-carrier")
    row = store.get_version(database_url, rolled.value.version)
    assert (row.outcome, row.active, row.applied_by) == ("rolled_back", False, "mallory")

    caller_during, result_during = await during
    assert result_during.answered
    assert wait_for_row(database_url, "+" + caller_during).result == "digit"
    caller, result = await _greeting_call(s, tmp_path)
    assert result.answered
    assert wait_for_row(database_url, "+" + caller).result == "digit"


async def test_apply_with_a_real_smoke_call(live, controller, e2e_settings, database_url, tmp_path):
    from ivr.dialplan.apply import sipp_smoke

    s = e2e_settings
    templates = _templates(tmp_path, lambda t: t.replace("[default]", "[default]\n; smoke-call test"))
    calls = []
    smoke = sipp_smoke(s, workdir=tmp_path)
    result = await asyncio.to_thread(apply, s, database_url, applied_by="dave", template_dirs=[templates],
                                     smoke=lambda: calls.append(1) or smoke())
    assert result.version is not None and calls == [1]
    # The same smoke call against a number nobody answers makes the apply roll back.
    templates = _templates(tmp_path / "2", lambda t: t.replace("[default]", "[default]\n; smoke-call test 2"))
    bad_smoke = sipp_smoke(s, number="ivr-nobody-answers", workdir=tmp_path, local_ip="127.0.0.2")
    with pytest.raises(ApplyRolledBack, match="was not answered"):
        await asyncio.to_thread(apply, s, database_url, applied_by="dave", template_dirs=[templates], smoke=bad_smoke)
    assert "; smoke-call test 2" not in read_dir(live.etc_dir)["extensions.conf"]


def test_injection_through_operator_names_never_reaches_the_config(live, e2e_settings, database_url):
    s = e2e_settings
    hostile = "Eve\n[carrier]\ntype=identify\nmatch=0.0.0.0/0;(x),${SHELL}"
    run_sql(database_url, "INSERT INTO operators (name, extension) VALUES (:n, '699')", n=hostile)
    try:
        files, operators = render_live(s, database_url)
        eve = next(op for op in operators if op.extension == "699")
        assert "\n" not in eve.name and "[" not in eve.name and "$" not in eve.name
        assert "match=0.0.0.0/0" not in files["pjsip.conf"].replace(" ", "")
        assert files["pjsip.conf"].count("[carrier]") == 3
        assert check_files(s, files, expectations(s, files)).ok
    finally:
        run_sql(database_url, "DELETE FROM operators WHERE extension = '699'")


def test_check_ports_follow_the_instance(e2e_settings):
    cs = check_settings(e2e_settings)
    used = {5060, 8088, 5038, 15060, 18088, 15038, 25060, 28088, 25038}
    assert {cs.sip_port, cs.http_port, cs.ami_port}.isdisjoint(used | {e2e_settings.sip_port,
                                                                       e2e_settings.http_port, e2e_settings.ami_port})
    assert cs.asterisk_instance != e2e_settings.asterisk_instance


def _cli():
    from ivr.cli import main

    return main


def _cli_env(settings, database_url: str) -> dict[str, str]:
    from ivr.runner import settings_env

    env = settings_env(settings)
    env["DATABASE_URL"] = database_url
    env.update(IVR_ASTERISK_INSTANCE=settings.asterisk_instance, IVR_ASTERISK_ROOT=str(settings.asterisk_root),
               IVR_CARRIER_PORT=str(settings.carrier_port), IVR_RTP_START=str(settings.rtp_start),
               IVR_RTP_END=str(settings.rtp_end))
    return env
