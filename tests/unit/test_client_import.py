"""The client CSV parser and validator: pure, no database."""

from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ivr.clients.importer import (
    ClientRow, CsvFormatError, RowError, decode, detect_delimiter, map_header, parse_clients_csv, parse_row,
)
from models.clients import potential_client_name

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
OPERATORS = {"201": 1, "202": 2, "301": 3, "302": 4, "203": 5}
DEPARTMENTS = {"current_sales": 1, "retail": 2, "active_sales": 3}
HEADER = "external_id;full_name;segment;phones;assigned_operator;department;timezone;notify_channel;deals_count"


def parse(text: str, encoding: str = "utf-8", **kwargs):
    kwargs.setdefault("operators", OPERATORS)
    kwargs.setdefault("departments", DEPARTMENTS)
    return parse_clients_csv(text.encode(encoding), now=NOW, **kwargs)


def errors_of(parsed) -> list[str]:
    return [str(e) for e in parsed.errors]


def one_row(**cells) -> ClientRow | list[RowError]:
    base = {"external_id": "C-1", "full_name": "Соколов Пётр"}
    return parse_row(7, base | cells, now=NOW)


def field_errors(**cells) -> list[tuple[str, str]]:
    result = one_row(**cells)
    assert isinstance(result, list), f"expected errors, got {result}"
    return [(e.field, e.reason) for e in result]


# --- a whole file -------------------------------------------------------------------------------
def test_the_documented_example_parses_with_one_bad_row():
    data = (Path(__file__).resolve().parents[2] / "docs/examples/clients.csv").read_bytes()
    parsed = parse_clients_csv(data, operators=OPERATORS, departments=DEPARTMENTS, now=NOW)
    assert (parsed.encoding, parsed.delimiter, parsed.total) == ("utf-8", ";", 10)
    assert len(parsed.rows) == 9 and parsed.skipped == 1
    assert {e.line for e in parsed.errors} == {10}
    assert {e.field for e in parsed.errors} == {"segment", "phones"}
    first = parsed.rows[0]
    assert first == ClientRow(
        line=2, external_id="C-00017", full_name="Соколов Пётр Николаевич", address_name="Пётр Николаевич",
        company="ООО «СтройМаркет»", segment="large_wholesale", stage="client", deals_count=42,
        assigned_operator="201", department="current_sales", timezone="Europe/Moscow", notify_channel="call",
        phones=("+79161234567", "+74951234567"))
    smirnova = next(r for r in parsed.rows if r.external_id == "C-00020")
    assert smirnova.phones == ("+73432102030", "+79221002030")
    assert smirnova.last_active_sales_call == datetime(2025, 5, 14, 11, 30, tzinfo=ZoneInfo("Asia/Yekaterinburg"))
    assert smirnova.last_active_sales_manager == "301" and smirnova.stage == "potential"


@pytest.mark.parametrize("delimiter", [";", ","])
def test_both_delimiters_with_quoted_phone_lists(delimiter):
    d = delimiter
    text = (f"external_id{d}full_name{d}phones{d}company\n"
            f'C-1{d}Иванов Иван{d}"8 (916) 123-45-67, +7 495 123-45-67"{d}"ООО ""Ромашка"", склад; офис"\n'
            f'C-2{d}Петров Пётр{d}+7 917 555-12-34{d}\n')
    parsed = parse(text)
    assert parsed.delimiter == delimiter
    assert errors_of(parsed) == []
    assert [r.phones for r in parsed.rows] == [("+79161234567", "+74951234567"), ("+79175551234",)]
    assert parsed.rows[0].company == 'ООО "Ромашка", склад; офис'


def test_sniffer_is_not_fooled_by_commas_in_a_semicolon_file():
    text = "external_id;full_name;phones\n" + "".join(
        f"C-{i};Клиент {i};8 916 123-45-{i:02d}, 8 917 000-00-{i:02d}\n" for i in range(10, 20))
    assert detect_delimiter(text) == ";"
    parsed = parse(text)
    assert len(parsed.rows) == 10 and parsed.rows[0].phones == ("+79161234510", "+79170000010")


@pytest.mark.parametrize("encoding,expected", [("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("cp1251", "cp1251")])
def test_encodings(encoding, expected):
    text = "Код клиента;ФИО;Сегмент;Телефоны\nC-1;Соколов Пётр Николаевич;крупный опт;8 (916) 123-45-67\n"
    parsed = parse(text, encoding)
    assert parsed.encoding == expected
    assert parsed.rows[0].full_name == "Соколов Пётр Николаевич"
    assert parsed.rows[0].segment == "large_wholesale"


def test_decode_prefers_utf8_and_falls_back_to_cp1251():
    assert decode("Ёжик".encode("cp1251")) == ("Ёжик", "cp1251")
    assert decode("Ёжик".encode()) == ("Ёжик", "utf-8")


def test_russian_header_aliases_and_unknown_columns_are_ignored_and_named():
    mapping, ignored = map_header(["Код клиента", "ФИО", "Закреплённый менеджер", "Часовой пояс", "ИНН"])
    assert mapping == {"external_id": 0, "full_name": 1, "assigned_operator": 2, "timezone": 3}
    assert ignored == ["ИНН"]


def test_missing_required_column_is_a_file_error():
    with pytest.raises(CsvFormatError, match="no full_name column"):
        parse("external_id;phones\nC-1;89161234567\n")


def test_duplicate_column_is_a_file_error():
    with pytest.raises(CsvFormatError, match="appears twice"):
        parse("external_id;full_name;ФИО\nC-1;a;b\n")


def test_empty_file_is_a_file_error():
    with pytest.raises(CsvFormatError, match="empty"):
        parse("")


def test_line_numbers_count_the_header_and_blank_lines_are_skipped():
    text = HEADER + "\n" + "C-1;Иванов;retail;89161234567;;;;;\n\n;;;;;;;;\nC-2;;retail;89161234568;;;;;\n"
    parsed = parse(text)
    assert errors_of(parsed) == ["line 5: full_name: required, empty"]
    assert [r.external_id for r in parsed.rows] == ["C-1"] and parsed.total == 2


def test_too_many_fields_is_reported_not_imported():
    parsed = parse("external_id,full_name,phones\nC-1,Иванов,8 916 123-45-67,8 917 555-12-34\n")
    assert parsed.rows == []
    assert parsed.errors[0].line == 2 and parsed.errors[0].field == "csv"


def test_every_bad_field_of_a_row_is_reported():
    text = HEADER + "\nC-1;Иванов;оптовик;8 (916) 12;999;no_such;Mars/Olympus;факс;много\n"
    parsed = parse(text)
    assert sorted(e.field for e in parsed.errors) == sorted(
        ["segment", "phones", "assigned_operator", "department", "timezone", "notify_channel", "deals_count"])
    assert all(e.line == 2 for e in parsed.errors) and parsed.skipped == 1 and parsed.rows == []


# --- one field at a time ------------------------------------------------------------------------
@pytest.mark.parametrize("raw,expected", [
    ("8 (916) 123-45-67", ("+79161234567",)),
    ("+7 916 123-45-67", ("+79161234567",)),
    ("79161234567", ("+79161234567",)),
    ("9161234567", ("+79161234567",)),
    ("8-495-123-45-67; 8 916 1234567 | +7(917)5551234", ("+74951234567", "+79161234567", "+79175551234")),
    ("8 916 123 45 67, +79161234567", ("+79161234567",)),  # the same number twice: once
    ("", ()),
])
def test_phones_in_russian_formats(raw, expected):
    row = one_row(phones=raw)
    assert isinstance(row, ClientRow) and row.phones == expected


@pytest.mark.parametrize("raw,reason", [
    ("8 (916) 12-34", "is not a valid number"),
    ("+7 916 123-45-67 доб. 12", "characters other than digits"),
    ("'; DROP TABLE clients;--", "characters other than digits"),
])
def test_bad_phones(raw, reason):
    [(name, why)] = field_errors(phones=raw)
    assert name == "phones" and reason in why


@pytest.mark.parametrize("raw,expected", [
    ("розница", "retail"), ("Мелкий  опт", "small_wholesale"), ("ОПТ", "wholesale"), ("крупный опт", "large_wholesale"),
    ("large_wholesale", "large_wholesale"), ("", None),
])
def test_segments(raw, expected):
    assert one_row(segment=raw).segment == expected


def test_unknown_segment():
    [(name, why)] = field_errors(segment="средний опт")
    assert name == "segment" and "unknown segment 'средний опт'" in why


@pytest.mark.parametrize("raw,expected", [("звонок", "call"), ("СМС", "sms"), ("sms", "sms"), ("", "call")])
def test_notify_channels(raw, expected):
    assert one_row(notify_channel=raw).notify_channel == expected


@pytest.mark.parametrize("cells,expected", [
    ({}, "potential"), ({"deals_count": "3"}, "client"), ({"stage": "потерян"}, "lost"),
    ({"stage": "vip_watch"}, "vip_watch"), ({"stage": "Потенциальный клиент", "deals_count": "2"}, "potential"),
])
def test_stage_defaults_and_aliases(cells, expected):
    assert one_row(**cells).stage == expected


def test_bad_stage_and_deals_count():
    assert field_errors(stage="Важный!")[0][0] == "stage"
    assert field_errors(deals_count="-1") == [("deals_count", "'-1' is not a whole number ≥ 0")]
    assert field_errors(deals_count="2.5")[0][0] == "deals_count"
    assert one_row(deals_count=" 12 ").deals_count == 12


@pytest.mark.parametrize("raw", ["Europe/Moscow", "Asia/Vladivostok", "UTC"])
def test_good_timezones(raw):
    assert one_row(timezone=raw).timezone == raw


@pytest.mark.parametrize("raw", ["MSK+3", "Europe/Moskva", "../../etc/passwd", "/etc/localtime", "x" * 100])
def test_bad_timezones(raw):
    [(name, why)] = field_errors(timezone=raw)
    assert name == "timezone" and "not an IANA time zone" in why


@pytest.mark.parametrize("raw", ["1O1", "1", "123456789", "201; DROP"])
def test_bad_extensions(raw):
    assert field_errors(assigned_operator=raw)[0][0] == "assigned_operator"


def test_required_fields_and_lengths_and_control_characters():
    assert ("external_id", "required, empty") in field_errors(external_id="  ")
    assert field_errors(full_name="x" * 301) == [("full_name", "too long (301 characters, at most 300)")]
    assert field_errors(company="ООО\x1b[31mКрасное") == [("company", "has control characters")]
    assert field_errors(full_name="Иванов\x00") == [("full_name", "has control characters")]


def test_sql_looking_text_is_just_text():
    row = one_row(full_name="Robert'); DROP TABLE clients;--", company="1 OR 1=1", address_name="<script>")
    assert isinstance(row, ClientRow)
    assert row.full_name == "Robert'); DROP TABLE clients;--" and row.company == "1 OR 1=1"


@pytest.mark.parametrize("raw,expected", [
    ("2025-05-14 11:30", datetime(2025, 5, 14, 11, 30, tzinfo=ZoneInfo("Europe/Moscow"))),
    ("2025-05-14T11:30:00+05:00", datetime(2025, 5, 14, 6, 30, tzinfo=timezone.utc)),
    ("14.05.2025 11:30", datetime(2025, 5, 14, 11, 30, tzinfo=ZoneInfo("Europe/Moscow"))),
    ("14.05.2025", datetime(2025, 5, 14, tzinfo=ZoneInfo("Europe/Moscow"))),
])
def test_last_active_sales_call_dates(raw, expected):
    row = one_row(last_active_sales_call=raw, last_active_sales_manager="301")
    assert row.last_active_sales_call == expected and row.last_active_sales_manager == "301"


def test_naive_date_is_in_the_clients_timezone():
    row = one_row(last_active_sales_call="2025-05-14 11:30", last_active_sales_manager="301", timezone="Asia/Omsk")
    assert row.last_active_sales_call.utcoffset().total_seconds() == 6 * 3600


@pytest.mark.parametrize("cells,bad_field,reason", [
    ({"last_active_sales_call": "вчера", "last_active_sales_manager": "301"}, "last_active_sales_call", "not a date"),
    ({"last_active_sales_call": "31.02.2025", "last_active_sales_manager": "301"}, "last_active_sales_call",
     "not a date"),
    ({"last_active_sales_call": "2030-01-01 10:00", "last_active_sales_manager": "301"}, "last_active_sales_call",
     "in the future"),
    ({"last_active_sales_call": "2025-05-14 11:30"}, "last_active_sales_manager", "required when"),
    ({"last_active_sales_manager": "301"}, "last_active_sales_call", "required when"),
])
def test_bad_active_sales_pairs(cells, bad_field, reason):
    [(name, why)] = field_errors(**cells)
    assert name == bad_field and reason in why


# --- across rows and references ---------------------------------------------------------------
def test_unknown_operator_department_and_manager_are_reported():
    text = ("external_id;full_name;assigned_operator;department;last_active_sales_call;last_active_sales_manager\n"
            "C-1;Иванов;299;current_sales;;\n"
            "C-2;Петров;201;warehouse;;\n"
            "C-3;Сидоров;201;current_sales;2025-05-01 10:00;399\n"
            "C-4;Орлов;201;current_sales;2025-05-01 10:00;301\n")
    parsed = parse(text)
    assert errors_of(parsed) == [
        "line 2: assigned_operator: no operator with extension 299",
        "line 3: department: no department with code 'warehouse'",
        "line 4: last_active_sales_manager: no operator with extension 399",
    ]
    assert [r.external_id for r in parsed.rows] == ["C-4"]


def test_references_are_not_checked_without_dictionaries():
    parsed = parse("external_id;full_name;assigned_operator\nC-1;Иванов;299\n", operators=None, departments=None)
    assert parsed.errors == [] and parsed.rows[0].assigned_operator == "299"


def test_a_phone_of_another_client_in_the_same_file_and_a_repeated_external_id():
    text = ("external_id;full_name;phones\n"
            "C-1;Иванов;8 (916) 123-45-67\n"
            "C-2;Петров;+7 916 123-45-67\n"
            "C-1;Иванов снова;8 917 555-12-34\n"
            "C-3;Сидоров;8 917 555-12-34\n")
    parsed = parse(text)
    assert errors_of(parsed) == [
        "line 3: phones: +79161234567 already belongs to client 'C-1' in line 2",
        "line 4: external_id: 'C-1' already in line 2",
    ]
    # line 4 was refused, so its phone is free for line 5
    assert [r.external_id for r in parsed.rows] == ["C-1", "C-3"]


def test_progress_is_reported_per_row():
    ticks = []
    parse("external_id;full_name\nC-1;a\nC-2;b\nC-3;c\n", progress=ticks.append)
    assert sum(ticks) == 3


# --- the name of a card made for an unknown caller --------------------------------------------------
@pytest.mark.parametrize("name,expected", [
    ("Иван Петров", "Иван Петров"),
    ("  ООО «Ромашка»  ", "ООО «Ромашка»"),
    (None, "Новый клиент +7 916 123-45-67"),
    ("79161234567", "Новый клиент +7 916 123-45-67"),
    ("Anonymous", "Новый клиент +7 916 123-45-67"),
    ("'; DROP TABLE clients;--", "Новый клиент +7 916 123-45-67"),
    ("Иван\x00\x1b[2J", "Новый клиент +7 916 123-45-67"),
    ("Я" * 81, "Новый клиент +7 916 123-45-67"),
])
def test_potential_client_name(name, expected):
    assert potential_client_name("+79161234567", name) == expected
