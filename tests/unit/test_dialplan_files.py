"""File sets: render with admin templates, diff, masking, what is stored, atomic writes."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from ivr.config import ConfigError, Settings
from ivr.dialplan.files import (
    changed_files, diff, from_stored, read_dir, render_set, secrets_in, sha256_of, to_stored, write_dir,
)
from ivr.stack.render import CONF_FILES, FEATURE_CODES, Directories, OperatorEndpoint, render_texts

SHIPPED = Path(__file__).resolve().parents[2] / "dialplans" / "extensions.conf.j2"
DIRS = Directories.instance("main", "/usr/lib/asterisk/modules")


@pytest.fixture
def settings() -> Settings:
    return Settings(ari_password=secrets.token_urlsafe(18), ami_secret=secrets.token_urlsafe(18))


def op(ext: str, name: str = "Anna") -> OperatorEndpoint:
    return OperatorEndpoint(ext, name, secrets.token_urlsafe(18))


def test_render_set_has_every_file_and_feature_codes(settings):
    files = render_set(settings, [op("101")], directories=DIRS)
    assert set(files) == set(CONF_FILES)
    for code, (args, _what) in FEATURE_CODES.items():
        assert f"exten => {code},1," in files["extensions.conf"]
        assert f"Stasis(ivr,{args})" in files["extensions.conf"]
    assert "exten => 101,1," in files["extensions.conf"] and "[101]\ntype = endpoint" in files["pjsip.conf"]


def test_admin_template_folder_overrides_the_shipped_one(settings, tmp_path):
    (tmp_path / "extensions.conf.j2").write_text(SHIPPED.read_text().replace("[default]", "[default]\n; admin was here"))
    files = render_set(settings, [], template_dirs=[tmp_path], directories=DIRS)
    assert "; admin was here" in files["extensions.conf"]
    assert files["pjsip.conf"] == render_set(settings, [], directories=DIRS)["pjsip.conf"]


def test_jinja_syntax_error_names_the_file_and_line(settings, tmp_path):
    (tmp_path / "extensions.conf.j2").write_text("[general]\n{% for x in operators %}\n")
    with pytest.raises(ConfigError, match=r"extensions.conf.j2 line \d+: syntax error"):
        render_set(settings, [], template_dirs=[tmp_path], directories=DIRS)


def test_undefined_variable_in_a_template_is_refused(settings, tmp_path):
    (tmp_path / "extensions.conf.j2").write_text("[general]\nx = {{ no_such_thing }}\n")
    with pytest.raises(ConfigError, match="no_such_thing"):
        render_set(settings, [], template_dirs=[tmp_path], directories=DIRS)


def test_template_cannot_write_a_hostile_value(settings, tmp_path):
    (tmp_path / "extensions.conf.j2").write_text("[general]\n{% for o in operators %}x = {{ o.name ~ ';[' | v }}{% endfor %}\n")
    with pytest.raises(ConfigError, match="refusing to write"):
        render_set(settings, [op("101")], template_dirs=[tmp_path], directories=DIRS)


@pytest.mark.parametrize("name", [
    "Eve\n[carrier]", "Eve;comment", "Eve [x]", "Eve,Dial(PJSIP/x@carrier)", "Eve)", "${SHELL}", "Eve\r\nmatch=0.0.0.0/0",
    "Eve <999>", '"Eve"', "Eve\u2028x", "", "Eve\\", "Eve&x", "Eve\x00",
])
def test_operator_names_that_could_inject_config_are_refused(settings, name):
    with pytest.raises(ConfigError, match="operator '101' name"):
        render_texts(settings, DIRS, [op("101", name)])


def test_operator_extension_must_not_be_the_public_number(settings):
    public = settings.with_overrides(public_number="+74951")
    with pytest.raises(ConfigError, match="public number"):
        render_texts(public, DIRS, [op("74951")])


def test_diff_masks_every_secret_and_names_files(settings):
    a = render_set(settings, [op("101")], directories=DIRS)
    b = render_set(settings, [op("101"), op("102", "Boris")], directories=DIRS)
    text = diff(a, b, [settings.ari_password, settings.ami_secret, *secrets_in(a), *secrets_in(b)])
    assert "--- live/pjsip.conf" in text and "+++ rendered/extensions.conf" in text
    assert "+password = ***" in text
    for secret in secrets_in(b):
        assert secret not in text
    assert changed_files(a, b) == ["extensions.conf", "pjsip.conf"]
    assert diff(a, a) == ""


def test_diff_of_new_and_removed_files():
    text = diff({"a.conf": "x\n"}, {"b.conf": "y\n"})
    assert "--- /dev/null\n+++ rendered/b.conf" in text and "--- live/a.conf\n+++ /dev/null" in text


def test_stored_files_hold_no_ari_ami_secret_and_come_back_with_the_current_ones(settings):
    files = render_set(settings, [], directories=DIRS)
    stored = to_stored(files, settings)
    assert settings.ari_password not in str(stored) and settings.ami_secret not in str(stored)
    assert from_stored(stored, settings) == files
    rotated = settings.with_overrides(ari_password=secrets.token_urlsafe(18))
    assert rotated.ari_password in from_stored(stored, rotated)["ari.conf"]


def test_sha256_depends_on_names_and_texts():
    assert sha256_of({"a": "b"}) != sha256_of({"b": "a"})
    assert sha256_of({"a": "1", "b": "2"}) == sha256_of({"b": "2", "a": "1"})


def test_write_dir_is_atomic_and_removes_stale_conf_files(tmp_path):
    (tmp_path / "old.conf").write_text("x")
    (tmp_path / "notes.txt").write_text("keep")
    write_dir({"a.conf": "1\n"}, tmp_path, remove_others=True)
    assert read_dir(tmp_path) == {"a.conf": "1\n"}
    assert (tmp_path / "notes.txt").exists() and not list(tmp_path.glob(".*ivr-tmp"))
    assert oct((tmp_path / "a.conf").stat().st_mode & 0o777) == "0o640"
    with pytest.raises(ValueError):
        write_dir({"../x.conf": ""}, tmp_path)


def test_admin_folders_from_the_environment_reach_every_writer(settings, tmp_path, monkeypatch):
    """IVR_DIALPLAN_TEMPLATES is used by render_set and by the instance's install_config (what
    `ivr stack up` and `sync-operators` call), so an operator sync keeps the admin's edit."""
    from ivr.stack.asterisk import AsteriskInstance
    from ivr.stack.render import default_template_dirs

    admin = tmp_path / "admin"
    admin.mkdir()
    (admin / "extensions.conf.j2").write_text(SHIPPED.read_text().replace("[default]", "[default]\n; admin edit"))
    monkeypatch.setenv("IVR_DIALPLAN_TEMPLATES", str(admin))
    assert default_template_dirs() == [admin]
    assert "; admin edit" in render_set(settings, [], directories=DIRS)["extensions.conf"]
    root = tmp_path / "root"
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/asterisk").write_text("")
    (root / "usr/lib/x86_64-linux-gnu/asterisk/modules").mkdir(parents=True)
    (root / "usr/lib/x86_64-linux-gnu/asterisk/modules/chan_pjsip.so").write_text("")
    inst = AsteriskInstance(settings.with_overrides(asterisk_root=root, asterisk_instance="unit"))
    inst.install_config()
    assert "; admin edit" in (inst.etc_dir / "extensions.conf").read_text()


def test_admin_folders_from_the_env_file(tmp_path, monkeypatch):
    from ivr.stack.render import default_template_dirs

    env = tmp_path / "ivr.env"
    env.write_text(f"IVR_DIALPLAN_TEMPLATES={tmp_path}/a:{tmp_path}/b\n")
    monkeypatch.delenv("IVR_DIALPLAN_TEMPLATES", raising=False)
    monkeypatch.setenv("IVR_ENV_FILE", str(env))
    assert default_template_dirs() == [tmp_path / "a", tmp_path / "b"]
