"""What check and the smoke check verify, over recorded Asterisk 22 CLI output."""

from __future__ import annotations

import secrets

from ivr.config import Settings
from ivr.dialplan.apply import RESTART_ONLY, operator_extensions, reload_commands
from ivr.dialplan.check import CHECK_PORT_SHIFT, INSTANCE_FILES, adapt, check_settings
from ivr.dialplan.verify import Expectations, log_problems, verify
from ivr.stack.render import Directories, OperatorEndpoint, render_texts

PUBLIC = """[ Context 'from-carrier' created by 'pbx_config' ]
  '_X.' =>          1. Set(CHANNEL(language)=ru_RU_f_IvrvoiceRU)  [extensions.conf:19]
                    2. Stasis(ivr,inbound,${EXTEN})               [extensions.conf:20]
                    3. Hangup()                                   [extensions.conf:21]

-= 1 extension (3 priorities) in 1 context. =-
"""
NO_CONTEXT = "There is no existence of 'from-carrier' context\nCommand 'dialplan show 74951234567@from-carrier' failed.\n"
OPERATORS = """[ Context 'operators' created by 'pbx_config' ]
  '*44' =>          1. Set(CHANNEL(language)=ru_RU_f_IvrvoiceRU)  [extensions.conf:43]
                    2. Stasis(ivr,feature,login_toggle)           [extensions.conf:44]
  '101' =>          1. Set(CHANNEL(language)=ru_RU_f_IvrvoiceRU)  [extensions.conf:34]
                    2. Dial(PJSIP/101,30,tT)                      [extensions.conf:35]
  'i' =>            1. Playback(pbx-invalid)                      [extensions.conf:54]
"""
FEATURE = """[ Context 'operators' created by 'pbx_config' ]
  '{code}' =>          1. Set(CHANNEL(language)=ru_RU_f_IvrvoiceRU)  [extensions.conf:39]
                    2. Stasis(ivr,feature,x)           [extensions.conf:40]
"""
ENDPOINTS = """
 Endpoint:  <Endpoint/CID.....................................>  <State.....>  <Channels.>
==========================================================================================

 Endpoint:  101/101                                              Not in use    0 of inf
     InAuth:  101-auth/101
 Endpoint:  carrier                                              Not in use    0 of inf
        Aor:  carrier                                            0
"""


def fake(outputs: dict[str, str]):
    def run(command: str) -> str:
        for key, value in outputs.items():
            if command == key:
                return value
        if command.startswith("dialplan show *"):
            return FEATURE.format(code=command.split()[2].split("@")[0])
        return "There is no existence of that\n"
    return run


EXPECT = Expectations("+74951234567", "ivr", ["101"])


def test_a_healthy_instance_passes():
    run = fake({"dialplan show 74951234567@from-carrier": PUBLIC, "dialplan show operators": OPERATORS,
                "pjsip show endpoints": ENDPOINTS})
    assert verify(run, EXPECT) == []


def test_missing_public_context_operator_and_endpoint_are_reported():
    run = fake({"dialplan show 74951234567@from-carrier": NO_CONTEXT, "dialplan show operators": OPERATORS,
                "pjsip show endpoints": ENDPOINTS})
    problems = verify(run, Expectations("+74951234567", "ivr", ["101", "102"]))
    assert any("public number +74951234567 does not enter Stasis" in p for p in problems)
    assert "operator extension 102 is missing from [operators]" in problems
    assert "PJSIP endpoint 102 is missing (pjsip show endpoints)" in problems
    assert not any("101" in p for p in problems)


def test_a_stasis_of_another_application_does_not_count():
    run = fake({"dialplan show 74951234567@from-carrier": PUBLIC.replace("Stasis(ivr,", "Stasis(ivrx,"),
                "dialplan show operators": OPERATORS, "pjsip show endpoints": ENDPOINTS})
    assert len(verify(run, EXPECT)) == 1


def test_missing_operators_context_and_feature_codes():
    run = fake({"dialplan show 74951234567@from-carrier": PUBLIC, "dialplan show operators": NO_CONTEXT,
                "pjsip show endpoints": ENDPOINTS})
    assert "context [operators] is missing" in verify(run, EXPECT)
    run = fake({"dialplan show 74951234567@from-carrier": PUBLIC, "dialplan show operators": OPERATORS,
                "dialplan show *77@operators": "There is no existence of '*77' extension in 'operators'",
                "pjsip show endpoints": ENDPOINTS})
    assert verify(run, EXPECT) == ["feature code *77 in [operators] does not reach Stasis(ivr,...)"]


def test_log_problems_keep_errors_and_warnings_only():
    lines = ["[2026-11-30 06:33:53.745] WARNING[27025] config.c: parse error: no closing ']', line 13",
             "[2026-11-30 06:33:53.746] NOTICE[27025] loader.c: something fine",
             "[2026-11-30 06:33:53.845] ERROR[27025] loader.c: pbx_config declined to load.",
             "  == Parsing '/srv/ivr/x/etc/extensions.conf': Found"]
    assert [l.split("]")[1].strip() for l in log_problems(lines)] == ["WARNING[27025", "ERROR[27025"]


def _settings(**kw) -> Settings:
    return Settings(ari_password=secrets.token_urlsafe(18), ami_secret=secrets.token_urlsafe(18), **kw)


def test_check_instance_ports_are_derived_and_never_the_stacks():
    for s in (_settings(), _settings(asterisk_instance="pytest900", sip_port=15960, http_port=18988, ami_port=15938,
                                     agi_port=15473, health_port=18990, rtp_start=31900, rtp_end=32899)):
        cs = check_settings(s)
        assert cs.asterisk_instance == s.asterisk_instance + "-check"
        assert cs.sip_port == s.sip_port + CHECK_PORT_SHIFT and cs.http_port == s.http_port + CHECK_PORT_SHIFT
        assert {cs.sip_port, cs.http_port, cs.ami_port}.isdisjoint({5060, 8088, 5038, 15060, 18088, 15038, 28088})
        assert not cs.rtp_start <= cs.sip_port <= cs.rtp_end
        assert cs.ari_password != s.ari_password and cs.ami_secret != s.ami_secret
        assert not s.rtp_start <= cs.rtp_start <= s.rtp_end, "no RTP port of the live instance"


def test_adapt_keeps_dialplan_and_endpoints_but_not_listeners_or_secrets():
    s = _settings()
    ops = [OperatorEndpoint("101", "Anna", secrets.token_urlsafe(18))]
    files = render_texts(s, Directories.instance("main", "/usr/lib/asterisk/modules"), ops)
    cs = check_settings(s)
    adapted = adapt(files, s, cs, "/usr/lib/asterisk/modules")
    assert adapted["extensions.conf"] == files["extensions.conf"]
    assert f"bind = 127.0.0.1:{cs.sip_port}" in adapted["pjsip.conf"]
    assert adapted["pjsip.conf"].replace(str(cs.sip_port), str(s.sip_port)) == files["pjsip.conf"]
    for name in INSTANCE_FILES:
        assert s.ari_password not in adapted[name] and s.ami_secret not in adapted[name]
    assert "/srv/ivr/main-check/" in adapted["asterisk.conf"]


def test_reload_commands_follow_the_changed_files():
    assert reload_commands(["extensions.conf"]) == ["dialplan reload"]
    assert reload_commands(["extensions.conf", "pjsip.conf"]) == ["module reload res_pjsip.so", "dialplan reload"]
    assert reload_commands(["say.conf"]) == []
    assert reload_commands(["custom.conf"]) == ["core reload"]
    assert "modules.conf" in RESTART_ONLY and "asterisk.conf" in RESTART_ONLY


def test_operator_extensions_are_read_from_pjsip_conf():
    s = _settings()
    ops = [OperatorEndpoint(e, "X", secrets.token_urlsafe(18)) for e in ("102", "101")]
    files = render_texts(s, Directories.instance("main", "/m"), ops)
    assert operator_extensions(files) == ["101", "102"]


def test_toll_fraud_paths_in_the_dialplan_are_refused():
    from ivr.dialplan.verify import toll_fraud_problems

    clean = fake({"dialplan show from-carrier": PUBLIC, "dialplan show operators": OPERATORS})
    assert toll_fraud_problems(clean) == []
    dial_out = PUBLIC.replace("3. Hangup()", "3. Dial(PJSIP/${EXTEN}@carrier)")
    goto = PUBLIC + "  Include =>        'outbound'                                    [pbx_config]\n"
    assert len(toll_fraud_problems(fake({"dialplan show from-carrier": dial_out,
                                         "dialplan show operators": OPERATORS}))) == 1
    assert "must not include" in toll_fraud_problems(fake({"dialplan show from-carrier": goto,
                                                           "dialplan show operators": OPERATORS}))[0]
    trunk = OPERATORS + "  '_9X.' =>          1. Dial(PJSIP/${EXTEN:1}@carrier,30)   [extensions.conf:60]\n"
    problems = toll_fraud_problems(fake({"dialplan show from-carrier": PUBLIC, "dialplan show operators": trunk}))
    assert problems == ["[operators] may dial operators only (PJSIP/<extension>), found Dial(PJSIP/${EXTEN:1}@carrier,30)"]


def test_a_busy_start_with_many_endpoints_is_not_a_config_problem():
    line = ("[2026-11-30 06:45:52.169] WARNING[8764] taskprocessor.c: Taskprocessor "
            "'stasis/m:devicestate:all-00000009' queue reached 500 scheduled tasks (high water mark: 500).")
    assert log_problems([line]) == []
