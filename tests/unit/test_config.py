import stat

import pytest

from ivr.config import ConfigError, generate_env_file, load_settings, read_env_file


def test_defaults_bind_loopback_and_have_no_secrets(tmp_path):
    settings = load_settings({}, env_file=tmp_path / "none.env")
    assert settings.bind_host == "127.0.0.1"
    assert settings.ari_password == "" and settings.ami_secret == ""
    with pytest.raises(ConfigError, match="IVR_ARI_PASSWORD, IVR_AMI_SECRET not set"):
        settings.require_secrets()


def test_generated_env_file_is_private_random_and_stable(tmp_path):
    path = generate_env_file(tmp_path / "ivr.env")
    first = read_env_file(path)
    assert len(first["IVR_ARI_PASSWORD"]) >= 24 and first["IVR_ARI_PASSWORD"] != first["IVR_AMI_SECRET"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    generate_env_file(path)  # idempotent: secrets survive a second init
    assert read_env_file(path) == first
    settings = load_settings({}, env_file=path)
    settings.require_secrets()
    assert settings.ari_password == first["IVR_ARI_PASSWORD"]


def test_environment_overrides_file(tmp_path):
    path = generate_env_file(tmp_path / "ivr.env", IVR_SIP_PORT="5070")
    assert load_settings({}, env_file=path).sip_port == 5070
    assert load_settings({"IVR_SIP_PORT": "5080"}, env_file=path).sip_port == 5080


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("IVR_SIP_PORT", "70000", "outside"),
        ("IVR_SIP_PORT", "abc", "not a port"),
        ("IVR_ARI_PASSWORD", "short", "not a valid secret"),
        ("IVR_ARI_PASSWORD", "abcdefghijklmn\nINJECT=1", "not a valid secret"),
        ("IVR_ARI_APP", "ivr;evil", "not a valid application name"),
        ("IVR_BIND_HOST", "127.0.0.1\n[evil]", "not a valid host"),
        ("IVR_PUBLIC_NUMBER", "12", "IVR_PUBLIC_NUMBER"),
        ("IVR_DIGIT_TIMEOUT", "0.1", "must be >="),
    ],
)
def test_malformed_settings_name_the_variable(tmp_path, key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_settings({key: value}, env_file=tmp_path / "none.env")


def test_env_file_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "bad.env"
    path.write_text("# comment\nIVR_SIP_PORT=5060\nthis is not a setting\n")
    with pytest.raises(ConfigError, match="bad.env:3"):
        read_env_file(path)
