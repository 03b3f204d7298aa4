"""Import of the accounting system's client export (CSV) into the client store.

Two steps:

1. ``parse_clients_csv(data, operators=..., departments=...)`` - a pure function (no I/O): it
   decodes (utf-8, utf-8 with BOM, cp1251), detects the delimiter (``;`` or ``,``), maps the
   header (English names or Russian aliases), validates every row and returns the good rows and
   one ``RowError`` per bad field (``line N: <field>: <reason>``). References to operators and
   departments are checked against the dictionaries it is given, so it is unit-tested without a
   database.
2. ``import_rows(engine, rows)`` writes the good rows in transactions of ``batch_size`` rows:
   clients upserted by external_id, phones attached (moved from another client when needed,
   reported), phones no longer listed removed, the last active-sales call upserted as an
   outbound contact. Re-importing the same file changes nothing.

All SQL is parameterised (SQLAlchemy Core; arrays are bound as parameters).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.types import DateTime, Integer, String

from models.phones import PhoneNumberError, normalize_phone, safe_text
from models.tables import Department, Operator

DEFAULT_TIMEZONE = "Europe/Moscow"
BATCH_SIZE = 1000
MAX_PHONES = 20
IMPORT_RESULT = "imported"
IMPORT_NOTE = "последний звонок активных продаж (импорт из учётной системы)"

# canonical column -> accepted header names (compared after _header_key)
COLUMNS: dict[str, tuple[str, ...]] = {
    "external_id": ("external_id", "id", "код", "код клиента", "ид", "внешний id", "внешний код"),
    "full_name": ("full_name", "name", "фио", "клиент", "имя", "наименование", "полное имя"),
    "address_name": ("address_name", "обращение", "как обращаться"),
    "company": ("company", "компания", "организация"),
    "segment": ("segment", "сегмент"),
    "stage": ("stage", "стадия", "этап"),
    "deals_count": ("deals_count", "deals", "сделок", "сделки", "количество сделок", "число сделок"),
    "assigned_operator": ("assigned_operator", "manager", "менеджер", "закреплённый менеджер", "ответственный",
                          "добавочный менеджера"),
    "department": ("department", "отдел", "код отдела"),
    "timezone": ("timezone", "tz", "часовой пояс"),
    "notify_channel": ("notify_channel", "channel", "канал", "канал уведомлений"),
    "phones": ("phones", "phone", "телефон", "телефоны"),
    "last_active_sales_call": ("last_active_sales_call", "последний звонок активных продаж",
                               "дата звонка активных продаж"),
    "last_active_sales_manager": ("last_active_sales_manager", "менеджер активных продаж"),
}
REQUIRED = ("external_id", "full_name")

SEGMENTS = {
    "retail": "retail", "розница": "retail", "розничный": "retail",
    "small_wholesale": "small_wholesale", "мелкий опт": "small_wholesale", "мелкооптовый": "small_wholesale",
    "wholesale": "wholesale", "опт": "wholesale", "оптовый": "wholesale",
    "large_wholesale": "large_wholesale", "крупный опт": "large_wholesale", "крупнооптовый": "large_wholesale",
}
STAGES = {
    "potential": "potential", "потенциальный": "potential", "потенциальный клиент": "potential",
    "client": "client", "клиент": "client", "действующий": "client", "действующий клиент": "client",
    "lost": "lost", "потерян": "lost", "потерянный": "lost", "ушёл": "lost",
}
CHANNELS = {"call": "call", "звонок": "call", "sms": "sms", "смс": "sms"}

_STAGE_CODE = re.compile(r"^[a-z][a-z0-9_]{0,29}$")
_EXTENSION = re.compile(r"^[0-9]{2,8}$")
_DEPARTMENT = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_PHONE_SPLIT = re.compile(r"[,;|]")
_RU_DATE = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$")
_LIMITS = {"external_id": 64, "full_name": 300, "address_name": 200, "company": 300}


class CsvFormatError(ValueError):
    """The file as a whole cannot be imported (encoding, header); the message says why."""


@dataclass(frozen=True)
class RowError:
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.reason}"


@dataclass(frozen=True)
class ClientRow:
    line: int
    external_id: str
    full_name: str
    address_name: str | None = None
    company: str | None = None
    segment: str | None = None
    stage: str = "potential"
    deals_count: int = 0
    assigned_operator: str | None = None      # extension
    department: str | None = None             # department code
    timezone: str | None = None
    notify_channel: str = "call"
    phones: tuple[str, ...] = ()              # E.164, no duplicates
    last_active_sales_call: datetime | None = None   # aware
    last_active_sales_manager: str | None = None     # extension


@dataclass
class ParsedFile:
    encoding: str
    delimiter: str
    columns: tuple[str, ...]                  # canonical names found in the header
    ignored_columns: tuple[str, ...]          # header names not understood (not imported)
    rows: list[ClientRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    total: int = 0                            # data rows read (blank ones not counted)

    @property
    def skipped(self) -> int:
        return len({e.line for e in self.errors})


# --- decoding and header -----------------------------------------------------------------------
def decode(data: bytes) -> tuple[str, str]:
    """(text, encoding): utf-8 (a BOM is dropped) when it decodes, else cp1251."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="strict"), "utf-8-sig"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1251"), "cp1251"
    except UnicodeDecodeError as exc:
        raise CsvFormatError(f"the file is neither utf-8 nor cp1251 text (byte {exc.start})") from None


def _header_key(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.replace("\ufeff", "").strip().lower().replace("ё", "е")).strip()


_ALIASES = {_header_key(alias): canonical for canonical, aliases in COLUMNS.items() for alias in aliases}


def map_header(names: Sequence[str]) -> tuple[dict[str, int], list[str]]:
    """canonical column -> index, and the header names not understood."""
    mapping: dict[str, int] = {}
    ignored: list[str] = []
    for index, name in enumerate(names):
        canonical = _ALIASES.get(_header_key(name))
        if canonical is None:
            if name.strip():
                ignored.append(safe_text(name.strip(), 60))
            continue
        if canonical in mapping:
            raise CsvFormatError(f"column {canonical} appears twice in the header "
                                 f"(columns {mapping[canonical] + 1} and {index + 1})")
        mapping[canonical] = index
    missing = [c for c in REQUIRED if c not in mapping]
    if missing:
        raise CsvFormatError(f"header has no {', '.join(missing)} column (found: "
                             f"{', '.join(safe_text(n.strip(), 60) for n in names if n.strip()) or 'nothing'})")
    return mapping, ignored


def detect_delimiter(text_: str) -> str:
    """``;`` or ``,``: csv.Sniffer on the first lines, checked against the header (the required
    columns must come out as separate fields), else whichever splits the header better."""
    sample = text_[:65536]
    header = sample.splitlines()[0] if sample else ""
    candidates: list[str] = []
    try:
        candidates.append(csv.Sniffer().sniff(sample, delimiters=";,").delimiter)
    except csv.Error:
        pass
    candidates += [d for d in (";", ",") if d not in candidates]
    for delimiter in candidates:
        names = next(csv.reader([header], delimiter=delimiter), [])
        keys = {_ALIASES.get(_header_key(n)) for n in names}
        if all(c in keys for c in REQUIRED):
            return delimiter
    return max((";", ","), key=header.count)


# --- one field at a time ------------------------------------------------------------------------
class _Bad(ValueError):
    pass


def _text(value: str, name: str, *, required: bool = False) -> str | None:
    value = value.strip()
    if not value:
        if required:
            raise _Bad("required, empty")
        return None
    if _CONTROL.search(value):
        raise _Bad("has control characters")
    limit = _LIMITS.get(name)
    if limit and len(value) > limit:
        raise _Bad(f"too long ({len(value)} characters, at most {limit})")
    return value


def _choice(value: str, table: Mapping[str, str], what: str) -> str | None:
    key = " ".join(value.strip().lower().replace("ё", "е").split())
    if not key:
        return None
    for alias, canonical in table.items():
        if alias.replace("ё", "е") == key:
            return canonical
    accepted = ", ".join(dict.fromkeys(table))
    raise _Bad(f"unknown {what} {safe_text(value.strip(), 40)!r} (accepted: {accepted})")


def _stage(value: str) -> str | None:
    try:
        return _choice(value, STAGES, "stage")
    except _Bad:
        code = value.strip()
        if _STAGE_CODE.fullmatch(code):
            return code
        raise


def _count(value: str) -> int:
    value = value.strip().replace(" ", "").replace("\u00a0", "")
    if not value:
        return 0
    if not value.isdigit() or not value.isascii():
        raise _Bad(f"{safe_text(value, 20)!r} is not a whole number ≥ 0")
    number = int(value)
    if number > 1_000_000:
        raise _Bad(f"{number} is not plausible (at most 1000000)")
    return number


def _extension(value: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    if not _EXTENSION.fullmatch(value):
        raise _Bad(f"{safe_text(value, 20)!r} is not an extension (2-8 digits)")
    return value


def _department(value: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    if not _DEPARTMENT.fullmatch(value):
        raise _Bad(f"{safe_text(value, 40)!r} is not a department code (latin letters, digits, _)")
    return value


def _timezone(value: str) -> str | None:
    value = value.strip()
    if not value:
        return None
    try:
        if len(value) > 64:
            raise ValueError
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise _Bad(f"{safe_text(value, 40)!r} is not an IANA time zone (e.g. Europe/Moscow)") from None
    return value


def _phones(value: str) -> tuple[str, ...]:
    found: list[str] = []
    for piece in _PHONE_SPLIT.split(value):
        if not piece.strip():
            continue
        try:
            e164 = normalize_phone(piece)
        except PhoneNumberError as exc:
            raise _Bad(str(exc)) from None
        if e164 not in found:
            found.append(e164)
    if len(found) > MAX_PHONES:
        raise _Bad(f"{len(found)} phones, at most {MAX_PHONES}")
    return tuple(found)


def _when(value: str, zone: str | None, now: datetime) -> datetime | None:
    value = value.strip()
    if not value:
        return None
    ru = _RU_DATE.fullmatch(value)
    try:
        if ru:
            d, m, y, hh, mm, ss = ru.groups()
            parsed = datetime(int(y), int(m), int(d), int(hh or 0), int(mm or 0), int(ss or 0))
        else:
            parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _Bad(f"{safe_text(value, 40)!r} is not a date-time (use 2025-03-14 15:30 or 14.03.2025 15:30)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(zone or DEFAULT_TIMEZONE))
    if parsed > now + timedelta(hours=1):
        raise _Bad(f"{value} is in the future")
    if parsed.year < 2000:
        raise _Bad(f"{value} is before 2000")
    return parsed


def parse_row(line: int, cells: Mapping[str, str], *, now: datetime | None = None,
              operators: Mapping[str, int] | None = None,
              departments: Mapping[str, int] | None = None) -> ClientRow | list[RowError]:
    """One data row (canonical column -> cell text) to a ClientRow, or every field error of it.
    With ``operators`` (extension -> id) / ``departments`` (code -> id), references to ones that
    do not exist are errors too."""
    now = now or datetime.now(timezone.utc)
    errors: list[RowError] = []
    values: dict[str, object] = {}

    def check(name: str, fn: Callable[[str], object]) -> None:
        try:
            values[name] = fn(cells.get(name) or "")
        except _Bad as exc:
            errors.append(RowError(line, name, str(exc)))

    check("external_id", lambda v: _text(v, "external_id", required=True))
    check("full_name", lambda v: _text(v, "full_name", required=True))
    check("address_name", lambda v: _text(v, "address_name"))
    check("company", lambda v: _text(v, "company"))
    check("segment", lambda v: _choice(v, SEGMENTS, "segment"))
    check("stage", _stage)
    check("deals_count", _count)
    check("assigned_operator", _extension)
    check("department", _department)
    check("timezone", _timezone)
    check("notify_channel", lambda v: _choice(v, CHANNELS, "notify channel"))
    check("phones", _phones)
    check("last_active_sales_manager", _extension)
    check("last_active_sales_call", lambda v: _when(v, values.get("timezone"), now))
    errors.extend(check_references(line, values, operators, departments))
    if not errors:
        if values["last_active_sales_call"] and not values["last_active_sales_manager"]:
            errors.append(RowError(line, "last_active_sales_manager", "required when last_active_sales_call is set"))
        elif values["last_active_sales_manager"] and not values["last_active_sales_call"]:
            errors.append(RowError(line, "last_active_sales_call", "required when last_active_sales_manager is set"))
    if errors:
        return errors
    deals = values["deals_count"]
    return ClientRow(
        line=line, external_id=values["external_id"], full_name=values["full_name"],
        address_name=values["address_name"], company=values["company"], segment=values["segment"],
        stage=values["stage"] or ("client" if deals else "potential"), deals_count=deals,
        assigned_operator=values["assigned_operator"], department=values["department"],
        timezone=values["timezone"], notify_channel=values["notify_channel"] or "call", phones=values["phones"],
        last_active_sales_call=values["last_active_sales_call"],
        last_active_sales_manager=values["last_active_sales_manager"],
    )


def check_references(line: int, values: Mapping[str, object], operators: Mapping[str, int] | None,
                     departments: Mapping[str, int] | None) -> list[RowError]:
    """Errors for extensions / department codes (well-formed ones, in ``values``) that do not exist."""
    errors: list[RowError] = []
    if operators is not None:
        for name in ("assigned_operator", "last_active_sales_manager"):
            ext = values.get(name)
            if ext is not None and ext not in operators:
                errors.append(RowError(line, name, f"no operator with extension {ext}"))
    code = values.get("department")
    if departments is not None and code is not None and code not in departments:
        errors.append(RowError(line, "department", f"no department with code {code!r}"))
    return errors


def parse_clients_csv(data: bytes, *, operators: Mapping[str, int] | None = None,
                      departments: Mapping[str, int] | None = None, now: datetime | None = None,
                      progress: Callable[[int], None] | None = None) -> ParsedFile:
    """Decode, detect the delimiter, map the header and validate every row (pure: no I/O).

    ``operators`` (extension -> id) and ``departments`` (code -> id) are what exists in the
    database; None skips those checks. Across rows: an external_id or a phone already taken by
    an earlier good row makes the later row an error. Raises CsvFormatError when the file as a
    whole is unusable.
    """
    text_, encoding = decode(data)
    if not text_.strip():
        raise CsvFormatError("the file is empty")
    delimiter = detect_delimiter(text_)
    reader = csv.reader(io.StringIO(text_, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise CsvFormatError(f"line 1: {exc}") from None
    mapping, ignored = map_header(header)
    parsed = ParsedFile(encoding=encoding, delimiter=delimiter,
                        columns=tuple(sorted(mapping, key=mapping.get)), ignored_columns=tuple(ignored))
    now = now or datetime.now(timezone.utc)
    seen_ids: dict[str, int] = {}
    seen_phones: dict[str, tuple[str, int]] = {}
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            parsed.total += 1
            parsed.errors.append(RowError(reader.line_num, "csv", str(exc)))
            continue
        line = reader.line_num
        if progress:
            progress(1)
        if not any(c.strip() for c in cells):
            continue
        parsed.total += 1
        if len(cells) > len(header) and any(c.strip() for c in cells[len(header):]):
            parsed.errors.append(RowError(line, "csv", f"{len(cells)} fields, the header has {len(header)} "
                                                       f"(a {delimiter!r} inside an unquoted value?)"))
            continue
        result = parse_row(line, {name: (cells[i] if i < len(cells) else "") for name, i in mapping.items()},
                           now=now, operators=operators, departments=departments)
        if isinstance(result, list):
            parsed.errors.extend(result)
            continue
        errors: list[RowError] = []
        if result.external_id in seen_ids:
            errors.append(RowError(line, "external_id", f"{safe_text(result.external_id, 64)!r} already in "
                                                        f"line {seen_ids[result.external_id]}"))
        for e164 in result.phones:
            owner = seen_phones.get(e164)
            if owner and owner[0] != result.external_id:
                errors.append(RowError(line, "phones", f"{e164} already belongs to client "
                                                       f"{safe_text(owner[0], 64)!r} in line {owner[1]}"))
        if errors:
            parsed.errors.extend(errors)
            continue
        seen_ids[result.external_id] = line
        for e164 in result.phones:
            seen_phones[e164] = (result.external_id, line)
        parsed.rows.append(result)
    return parsed


# --- writing ---------------------------------------------------------------------------------------
@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    failed: list[RowError] = field(default_factory=list)   # rows the database refused
    notes: list[str] = field(default_factory=list)         # phones moved, potential clients adopted
    contacts_added: int = 0

    def merge(self, other: "ImportResult") -> None:
        self.created += other.created
        self.updated += other.updated
        self.contacts_added += other.contacts_added
        self.failed.extend(other.failed)
        self.notes.extend(other.notes)


def load_references(conn: Connection) -> tuple[dict[str, int], dict[str, int]]:
    """(extension -> operator id, department code -> id)."""
    operators = {ext: id_ for id_, ext in conn.execute(select(Operator.id, Operator.extension))}
    departments = {code: id_ for id_, code in conn.execute(select(Department.id, Department.code))}
    return operators, departments


# Each statement takes whole columns as array parameters (unnest), so a batch of 1000 rows is a
# handful of round trips and no per-row SQL compilation.
_TEXTS, _INTS, _TIMES = ARRAY(String), ARRAY(Integer), ARRAY(DateTime(timezone=True))
_CLIENT_COLUMNS = ("external_id", "full_name", "address_name", "company", "segment", "stage", "deals_count",
                   "assigned_operator_id", "department_id", "timezone", "notify_channel")
_INT_COLUMNS = {"deals_count", "assigned_operator_id", "department_id"}

_EXISTING_CLIENTS = text("SELECT external_id, id FROM clients WHERE external_id = ANY(:ids)").bindparams(
    bindparam("ids", type_=_TEXTS))
_PHONE_OWNERS = text("""
    SELECT p.e164, c.id, c.external_id FROM client_phones p JOIN clients c ON c.id = p.client_id
    WHERE p.e164 = ANY(:phones)""").bindparams(bindparam("phones", type_=_TEXTS))
_ADOPT = text("UPDATE clients SET external_id = :ext WHERE id = :id AND external_id IS NULL")
_UPSERT_CLIENTS = text(f"""
    INSERT INTO clients ({", ".join(_CLIENT_COLUMNS)})
    SELECT {", ".join(_CLIENT_COLUMNS)}
    FROM unnest({", ".join(f"CAST(:{c} AS {'integer' if c in _INT_COLUMNS else 'varchar'}[])" for c in _CLIENT_COLUMNS)})
         AS v({", ".join(_CLIENT_COLUMNS)})
    ON CONFLICT (external_id) DO UPDATE SET
        {", ".join(f"{c} = EXCLUDED.{c}" for c in _CLIENT_COLUMNS if c != "external_id")}, updated_at = now()
    RETURNING external_id, id""").bindparams(
    *(bindparam(c, type_=_INTS if c in _INT_COLUMNS else _TEXTS) for c in _CLIENT_COLUMNS))
_UPSERT_PHONES = text("""
    INSERT INTO client_phones (client_id, e164)
    SELECT client_id, e164 FROM unnest(CAST(:client_ids AS integer[]), CAST(:phones AS varchar[])) AS v(client_id, e164)
    ON CONFLICT (e164) DO UPDATE SET client_id = EXCLUDED.client_id
    WHERE client_phones.client_id <> EXCLUDED.client_id""").bindparams(
    bindparam("client_ids", type_=_INTS), bindparam("phones", type_=_TEXTS))
_DROP_UNLISTED_PHONES = text("""
    DELETE FROM client_phones WHERE client_id = ANY(:client_ids) AND NOT (e164 = ANY(:keep))""").bindparams(
    bindparam("client_ids", type_=_INTS), bindparam("keep", type_=_TEXTS))
_INSERT_CONTACTS = text("""
    INSERT INTO contacts (client_id, operator_id, direction, at, result, note)
    SELECT v.client_id, v.operator_id, 'outbound', v.at, :result, :note
    FROM unnest(:client_ids, :operator_ids, :ats) AS v(client_id, operator_id, at)
    WHERE NOT EXISTS (
        SELECT 1 FROM contacts c
        WHERE c.client_id = v.client_id AND c.at = v.at AND c.operator_id = v.operator_id
          AND c.direction = 'outbound')""").bindparams(
    bindparam("client_ids", type_=_INTS), bindparam("operator_ids", type_=_INTS), bindparam("ats", type_=_TIMES))


def write_batch(conn: Connection, rows: Sequence[ClientRow], operators: Mapping[str, int],
                departments: Mapping[str, int], result: ImportResult) -> None:
    """Upsert ``rows`` (already validated, unique external_ids and phones) in the caller's
    transaction."""
    existing = dict(conn.execute(_EXISTING_CLIENTS, {"ids": [r.external_id for r in rows]}).all())
    all_phones = sorted({p for r in rows for p in r.phones})
    owners: dict[str, tuple[int, str | None]] = {}
    if all_phones:
        owners = {e164: (cid, ext) for e164, cid, ext in conn.execute(_PHONE_OWNERS, {"phones": all_phones})}

    # A new external_id whose phones all belong to one card the controller created for an
    # unknown caller (no external_id): that card becomes this client (history kept).
    adopted: set[int] = set()
    for r in rows:
        if r.external_id in existing:
            continue
        holders = {owners[p] for p in r.phones if p in owners}
        if len(holders) == 1:
            (cid, ext), = holders
            if ext is None and cid not in adopted:
                conn.execute(_ADOPT, {"ext": r.external_id, "id": cid})
                adopted.add(cid)
                existing[r.external_id] = cid
                result.notes.append(f"line {r.line}: phones: card #{cid} of an earlier caller "
                                    f"from {', '.join(r.phones)} became client {r.external_id!r}")
                for p in r.phones:
                    owners[p] = (cid, r.external_id)

    columns = {
        "external_id": [r.external_id for r in rows], "full_name": [r.full_name for r in rows],
        "address_name": [r.address_name for r in rows], "company": [r.company for r in rows],
        "segment": [r.segment for r in rows], "stage": [r.stage for r in rows],
        "deals_count": [r.deals_count for r in rows],
        "assigned_operator_id": [operators[r.assigned_operator] if r.assigned_operator else None for r in rows],
        "department_id": [departments[r.department] if r.department else None for r in rows],
        "timezone": [r.timezone for r in rows], "notify_channel": [r.notify_channel for r in rows],
    }
    ids = dict(conn.execute(_UPSERT_CLIENTS, columns).all())
    for r in rows:
        if r.external_id in existing:
            result.updated += 1
        else:
            result.created += 1

    pairs = [(ids[r.external_id], p, r) for r in rows for p in r.phones]
    for cid, p, r in pairs:
        old = owners.get(p)
        if old is not None and old[0] != cid:
            who = f"client {old[1]!r}" if old[1] is not None else f"card #{old[0]}"
            result.notes.append(f"line {r.line}: phones: {p} moved from {who} to client {r.external_id!r}")
    if pairs:
        conn.execute(_UPSERT_PHONES, {"client_ids": [cid for cid, _, _ in pairs], "phones": [p for _, p, _ in pairs]})
    # The export is the master: a phone the row no longer lists is not his any more.
    conn.execute(_DROP_UNLISTED_PHONES, {"client_ids": list(ids.values()), "keep": all_phones})

    contact_rows = [r for r in rows if r.last_active_sales_call is not None]
    if contact_rows:
        added = conn.execute(_INSERT_CONTACTS, {
            "client_ids": [ids[r.external_id] for r in contact_rows],
            "operator_ids": [operators[r.last_active_sales_manager] for r in contact_rows],
            "ats": [r.last_active_sales_call for r in contact_rows],
            "result": IMPORT_RESULT, "note": IMPORT_NOTE,
        })
        result.contacts_added += max(added.rowcount, 0)


def _chunks(rows: Sequence[ClientRow], size: int) -> Iterable[Sequence[ClientRow]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def import_rows(engine: Engine, rows: Sequence[ClientRow], operators: Mapping[str, int],
                departments: Mapping[str, int], *, dry_run: bool = False, batch_size: int = BATCH_SIZE,
                progress: Callable[[int], None] | None = None) -> ImportResult:
    """Write ``rows`` batch by batch, each batch in one transaction (rolled back on a dry run).
    A batch the database refuses is retried row by row so one bad row costs only itself
    (reported in ``failed``). A lost connection (OperationalError) is raised."""
    result = ImportResult()
    with engine.connect() as conn:
        for batch in _chunks(rows, batch_size):
            try:
                result.merge(_write_in_transaction(conn, batch, operators, departments, dry_run))
            except OperationalError:
                raise
            except DBAPIError:
                for row in batch:
                    try:
                        result.merge(_write_in_transaction(conn, [row], operators, departments, dry_run))
                    except OperationalError:
                        raise
                    except DBAPIError as exc:
                        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                        result.failed.append(RowError(row.line, "database", safe_text(reason, 200)))
            if progress:
                progress(len(batch))
    return result


def _write_in_transaction(conn: Connection, rows: Sequence[ClientRow], operators: Mapping[str, int],
                          departments: Mapping[str, int], dry_run: bool) -> ImportResult:
    partial = ImportResult()
    with conn.begin() as tx:
        write_batch(conn, rows, operators, departments, partial)
        if dry_run:
            tx.rollback()
    return partial
