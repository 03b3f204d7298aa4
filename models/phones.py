"""Phone numbers: parse what people and carriers type, store E.164.

Russian numbers arrive as ``8 (916) 123-45-67``, ``+7 916 1234567``, ``79161234567`` or
``9161234567``; all of them are the same client. Caller IDs from the network are untrusted
text: anything that is not a plausible number is rejected with a reason, never stored raw
in a phone column.
"""

from __future__ import annotations

import re

import phonenumbers

DEFAULT_REGION = "RU"
_MAX_RAW = 64
_ALLOWED_RAW = re.compile(r"^[0-9+()\-.\s]+$")


class PhoneNumberError(ValueError):
    """The text is not a valid phone number; the message says why."""


def normalize_phone(raw: str | None, region: str = DEFAULT_REGION) -> str:
    """Return the E.164 form of ``raw`` or raise PhoneNumberError."""
    if raw is None or not str(raw).strip():
        raise PhoneNumberError("empty phone number")
    text = str(raw).strip()
    if len(text) > _MAX_RAW:
        raise PhoneNumberError(f"phone number too long ({len(text)} characters)")
    if not _ALLOWED_RAW.fullmatch(text):
        raise PhoneNumberError(f"phone number {safe_text(text)!r} has characters other than digits, +, (), -, . and spaces")
    digits = re.sub(r"\D", "", text)
    # Russian trunk prefix: 8XXXXXXXXXX (11 digits) means +7XXXXXXXXXX.
    if region == "RU" and not text.startswith("+") and len(digits) == 11 and digits[0] == "8":
        text = "+7" + digits[1:]
    elif region == "RU" and not text.startswith("+") and len(digits) == 11 and digits[0] == "7":
        text = "+" + digits
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise PhoneNumberError(f"phone number {text!r} cannot be parsed: {exc}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise PhoneNumberError(f"phone number {text!r} is not a valid number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def try_normalize_phone(raw: str | None, region: str = DEFAULT_REGION) -> str | None:
    try:
        return normalize_phone(raw, region)
    except PhoneNumberError:
        return None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe_text(raw: object, limit: int = 80) -> str:
    """Untrusted text (a caller ID name, say) made safe for logs and columns:
    control characters replaced, length bounded."""
    text = _CONTROL.sub("?", str(raw if raw is not None else ""))
    return text if len(text) <= limit else text[: limit - 1] + "…"
