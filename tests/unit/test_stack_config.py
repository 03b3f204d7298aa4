"""Stack plumbing that needs no Asterisk: instance layout, system install, CLI config rendering."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ivr.config import ConfigError, Settings
from ivr.stack.asterisk import AsteriskInstance, StackError, install_system
from ivr.stack.render import Directories, find_moddir

SECRETS = dict(ari_password="Ari-password_123", ami_secret="Ami-secret_4567")


def fake_root(tmp_path: Path, arch: str = "aarch64-linux-gnu") -> Path:
    root = tmp_path / "root"
    mod = root / "usr/lib" / arch / "asterisk/modules"
    mod.mkdir(parents=True)
    (mod / "chan_pjsip.so").write_bytes(b"")
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/asterisk").write_bytes(b"")
    return root


def test_moddir_is_derived_not_hardcoded(tmp_path):
    assert find_moddir(fake_root(tmp_path)) == "/usr/lib/aarch64-linux-gnu/asterisk/modules"
    with pytest.raises(ConfigError):
        find_moddir(tmp_path / "empty")


def test_instance_layout_and_install_config_wipes_stale_files(tmp_path):
    root = fake_root(tmp_path)
    s = Settings(**SECRETS, asterisk_root=root, asterisk_instance="demo", state_dir=tmp_path / "state")
    inst = AsteriskInstance(s)
    assert inst.conf_path == "/srv/ivr/demo/etc/asterisk.conf"
    assert inst.log_file == tmp_path / "state" / "asterisk-demo.log"
    (inst.etc_dir).mkdir(parents=True)
    (inst.etc_dir / "stale.conf").write_text("old")
    written = inst.install_config()
    assert not (inst.etc_dir / "stale.conf").exists()
    assert {p.name for p in written} == {p.name for p in inst.etc_dir.iterdir()}
    for sub in ("etc", "run", "log", "spool", "db", "keys"):
        assert (root / "srv/ivr/demo" / sub).is_dir()
    conf = (inst.etc_dir / "asterisk.conf").read_text()
    assert "astmoddir => /usr/lib/aarch64-linux-gnu/asterisk/modules" in conf
    assert "astdbdir => /srv/ivr/demo/db" in conf
    assert not inst.is_running()
    inst.stop()  # idempotent when not running
    with pytest.raises(StackError, match="not running"):
        inst.cli("core show version")


def test_install_config_validates_before_touching_files(tmp_path):
    root = fake_root(tmp_path)
    s = Settings(**SECRETS, asterisk_root=root, asterisk_instance="demo", ari_app="x;y")
    inst = AsteriskInstance(s)
    inst.etc_dir.mkdir(parents=True)
    (inst.etc_dir / "keep.conf").write_text("old")
    with pytest.raises(ConfigError, match="IVR_ARI_APP"):
        inst.install_config()
    assert (inst.etc_dir / "keep.conf").exists()


def test_install_system_backup_and_dry_run(tmp_path):
    etc = tmp_path / "etc" / "asterisk"
    etc.mkdir(parents=True)
    (etc / "extensions.conf").write_text("[old]\n")
    (etc / "voicemail.conf").write_text("[general]\n")
    s = Settings(**SECRETS)
    changes = dict(install_system(s, etc_dir=etc, dry_run=True, moddir="/usr/lib/asterisk/modules"))
    assert changes["extensions.conf"] == "changed" and changes["pjsip.conf"] == "new"
    assert (etc / "extensions.conf").read_text() == "[old]\n"
    install_system(s, etc_dir=etc, moddir="/usr/lib/asterisk/modules")
    backups = list((tmp_path / "etc").glob("asterisk.backup-*"))
    assert len(backups) == 1 and (backups[0] / "extensions.conf").read_text() == "[old]\n"
    conf = (etc / "asterisk.conf").read_text()
    assert "astrundir => /var/run/asterisk" in conf and f"astetcdir => {etc}" in conf
    assert "from-carrier" in (etc / "extensions.conf").read_text()
    again = dict(install_system(s, etc_dir=etc, dry_run=True, moddir="/usr/lib/asterisk/modules"))
    assert set(again.values()) == {"unchanged"}


def test_system_directories_are_defaults():
    d = Directories.system("/usr/lib/asterisk/modules")
    assert (d.etc, d.run, d.log, d.spool) == ("/etc/asterisk", "/var/run/asterisk", "/var/log/asterisk", "/var/spool/asterisk")


def test_cli_config_and_init(tmp_path, monkeypatch):
    from ivr.stack.cli import stack_group

    env_file = tmp_path / "ivr.env"
    monkeypatch.setenv("IVR_ENV_FILE", str(env_file))
    for k in ("IVR_ARI_PASSWORD", "IVR_AMI_SECRET", "IVR_ASTERISK_ROOT"):
        monkeypatch.delenv(k, raising=False)
    runner = CliRunner()
    res = runner.invoke(stack_group, ["init"])
    assert res.exit_code == 0, res.output
    first = env_file.read_text()
    assert "IVR_ARI_PASSWORD=" in first and env_file.stat().st_mode & 0o077 == 0
    assert runner.invoke(stack_group, ["init"]).exit_code == 0
    assert env_file.read_text() == first  # idempotent: secrets kept
    res = runner.invoke(stack_group, ["config", "--out", str(tmp_path / "out"), "--instance", "cfg"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "pjsip.conf").exists()
    assert "astetcdir => /srv/ivr/cfg/etc" in (tmp_path / "out" / "asterisk.conf").read_text()
    secret = [ln.split("=", 1)[1] for ln in first.splitlines() if ln.startswith("IVR_ARI_PASSWORD=")][0]
    assert secret not in res.output
    res = runner.invoke(stack_group, ["config", "--out", str(tmp_path / "o2"), "--instance", "../x"])
    assert res.exit_code != 0


def test_install_system_twice_in_one_second_keeps_both_backups(tmp_path):
    etc = tmp_path / "asterisk"
    etc.mkdir()
    (etc / "x.conf").write_text("x")
    s = Settings(**SECRETS)
    install_system(s, etc_dir=etc, moddir="/usr/lib/asterisk/modules")
    install_system(s, etc_dir=etc, moddir="/usr/lib/asterisk/modules")
    assert len(list(tmp_path.glob("asterisk.backup-*"))) == 2
