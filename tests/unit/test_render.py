"""Rendering of the Asterisk config: hostile values are refused, good values render as expected."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ivr.config import ConfigError, Settings
from ivr.stack.render import CONF_FILES, Directories, render_config, render_texts

DIRS = Directories.instance("unit", "/usr/lib/x86_64-linux-gnu/asterisk/modules")


def good(**changes) -> Settings:
    base = Settings(ari_password="Ari-password_123", ami_secret="Ami-secret_4567", sip_port=25060, http_port=28088,
                    ami_port=25038, agi_port=24573, carrier_match="127.0.0.1, 192.0.2.0/24",
                    carrier_host="192.0.2.10", carrier_port=5090, asterisk_instance="unit")
    return base.with_overrides(**changes)


def texts(**changes) -> dict[str, str]:
    return render_texts(good(**changes), DIRS)


def conf_lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(";")]


def test_good_render_contains_expected_lines():
    t = texts()
    assert set(t) == set(CONF_FILES)
    http = conf_lines(t["http.conf"])
    assert "bindaddr = 127.0.0.1" in http and "bindport = 28088" in http and "enabled = yes" in http
    ari = conf_lines(t["ari.conf"])
    assert "[ivr]" in ari and "password = Ari-password_123" in ari and "password_format = plain" in ari
    ami = conf_lines(t["manager.conf"])
    assert "port = 25038" in ami and "secret = Ami-secret_4567" in ami
    assert "deny = 0.0.0.0/0.0.0.0" in ami and "permit = 127.0.0.1/255.255.255.255" in ami
    pj = conf_lines(t["pjsip.conf"])
    for line in ("bind = 127.0.0.1:25060", "endpoint_identifier_order = username,ip,anonymous",
                 "context = from-carrier", "disallow = all", "dtmf_mode = rfc4733", "direct_media = no",
                 "rtp_symmetric = yes", "force_rport = yes", "rewrite_contact = yes",
                 "match = 127.0.0.1", "match = 192.0.2.0/24", "contact = sip:192.0.2.10:5090",
                 "permit = 192.0.2.0/24"):
        assert line in pj, line
    ast = conf_lines(t["asterisk.conf"])
    assert "astetcdir => /srv/ivr/unit/etc" in ast and "astrundir => /srv/ivr/unit/run" in ast
    assert "astmoddir => /usr/lib/x86_64-linux-gnu/asterisk/modules" in ast
    mods = conf_lines(t["modules.conf"])
    assert "autoload = no" in mods
    for m in ("chan_pjsip.so", "res_ari.so", "app_stasis.so", "res_stasis_playback.so", "res_agi.so", "pbx_config.so"):
        assert f"load = {m}" in mods
    rtp = conf_lines(t["rtp.conf"])
    assert "rtpstart = 10000" in rtp and "rtpend = 10999" in rtp


def test_dialplan_inbound_context_is_isolated():
    ext = texts()["extensions.conf"]
    sections = re.split(r"^\[", ext, flags=re.M)
    inbound = next(s for s in sections if s.startswith("from-carrier]"))
    assert "exten => _X.,1,Set(CHANNEL(language)=ru_RU_f_IvrvoiceRU)" in inbound
    assert "exten => _+X.,1," in inbound and "exten => s,1," in inbound
    assert inbound.count("Stasis(ivr,inbound,${EXTEN})") == 3
    for forbidden in ("Dial(", "Goto", "include", "Gosub", "ivr-selftest", "AGI("):
        assert forbidden not in inbound
    selftest = next(s for s in sections if s.startswith("ivr-selftest]"))
    assert "exten => agi,1,AGI(agi://127.0.0.1:24573/selftest)" in selftest
    assert "UserEvent(IvrAgiSelftest,Result: ${IVR_AGI_RESULT})" in selftest
    assert "exten => dtmf,1,Answer()" in selftest and "SendDTMF(1)" in selftest
    assert "exten => answer,1,Answer()" in selftest
    assert any(s.startswith("default]") for s in sections)
    # Only the carrier endpoint exists and it lands in from-carrier.
    assert conf_lines(texts()["pjsip.conf"]).count("context = from-carrier") == 1


def test_render_is_deterministic(tmp_path: Path):
    a = render_config(good(), tmp_path / "a", DIRS)
    b = render_config(good(), tmp_path / "b", DIRS)
    assert [p.name for p in a] == [p.name for p in b]
    for pa, pb in zip(a, b):
        assert pa.read_bytes() == pb.read_bytes()


@pytest.mark.parametrize("field,value,setting", [
    ("ari_password", "Secret-value-1\n[evil]", "IVR_ARI_PASSWORD"),           # newline + section injection
    ("ari_password", "Secret-value-1;comment", "IVR_ARI_PASSWORD"),            # comment injection
    ("ami_secret", "abcdefghijkl\r\nread=all", "IVR_AMI_SECRET"),
    ("ari_user", "ivr]\n[admin", "IVR_ARI_USER"),                               # [section] injection
    ("ari_user", "[admin]", "IVR_ARI_USER"),
    ("ami_user", "ivr;x", "IVR_AMI_USER"),
    ("ari_app", "ivr),Dial(PJSIP/carrier", "IVR_ARI_APP"),                       # ) dialplan injection
    ("ari_app", "ivr,outbound", "IVR_ARI_APP"),                                  # extra Stasis argument
    ("ari_app", "${SHELL(id)}", "IVR_ARI_APP"),
    ("sound_language", "ru)\nexten => _X.,1,Dial(PJSIP/x)", "IVR_SOUND_LANGUAGE"),
    ("sound_language", "ru;x", "IVR_SOUND_LANGUAGE"),
    ("bind_host", "127.0.0.1\nbindaddr=0.0.0.0", "IVR_BIND_HOST"),
    ("bind_host", "localhost", "IVR_BIND_HOST"),
    ("carrier_host", "evil.example;transport=tcp", "IVR_CARRIER_HOST"),
    ("carrier_host", "1.2.3.4\n[carrier]", "IVR_CARRIER_HOST"),
    ("carrier_match", "0.0.0.0/0\n[anonymous]", "IVR_CARRIER_MATCH"),
    ("carrier_match", "10.0.0.1;comment", "IVR_CARRIER_MATCH"),
    ("carrier_match", "example.com", "IVR_CARRIER_MATCH"),
    ("carrier_match", "", "IVR_CARRIER_MATCH"),
    ("public_number", "+7495)", "IVR_PUBLIC_NUMBER"),
    ("asterisk_instance", "../../etc", "IVR_ASTERISK_INSTANCE"),
    ("ari_password", "", "IVR_ARI_PASSWORD"),
    ("ami_secret", "short", "IVR_AMI_SECRET"),
    ("sip_port", "5060\n", "IVR_SIP_PORT"),
    ("http_port", 70000, "IVR_HTTP_PORT"),
    ("ami_port", True, "IVR_AMI_PORT"),
])
def test_hostile_values_are_refused(field, value, setting):
    with pytest.raises(ConfigError, match=re.escape(setting)):
        texts(**{field: value})


def test_inconsistent_ports_are_refused():
    with pytest.raises(ConfigError, match="IVR_RTP_START"):
        texts(rtp_start=20000, rtp_end=10000)
    with pytest.raises(ConfigError, match="TCP ports must differ"):
        texts(ami_port=28088)
    with pytest.raises(ConfigError, match="IVR_SIP_PORT"):
        texts(sip_port=10500)


def test_filter_refuses_hostile_directory_paths():
    bad = Directories.instance("unit", "/usr/lib/asterisk/modules\n[x]")
    with pytest.raises(ConfigError, match="path"):
        render_texts(good(), bad)


def test_ipv6_and_cidr_normalisation():
    t = texts(carrier_match="2001:db8::1, 198.51.100.7/32, 198.51.100.7", carrier_host="2001:db8::5")
    pj = conf_lines(t["pjsip.conf"])
    assert "match = 2001:db8::1" in pj and pj.count("match = 198.51.100.7") == 1
    assert "contact = sip:[2001:db8::5]:5090" in pj


def test_no_secret_in_files_other_than_ari_and_manager():
    t = texts()
    for name, text in t.items():
        if name not in ("ari.conf", "manager.conf"):
            assert "Ari-password_123" not in text and "Ami-secret_4567" not in text, name


def test_carrier_qualify_rendered_only_when_asked():
    assert "qualify_frequency" not in texts()["pjsip.conf"]
    assert "qualify_frequency = 30" in texts(carrier_qualify=30)["pjsip.conf"]
