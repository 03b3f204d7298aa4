import pytest

from models.phones import PhoneNumberError, normalize_phone, safe_text, try_normalize_phone


@pytest.mark.parametrize(
    "raw",
    ["8 (916) 123-45-67", "+7 916 123-45-67", "+79161234567", "79161234567", "9161234567", "8-916-123-45-67",
     " +7 (916) 123 45 67 "],
)
def test_russian_formats_are_the_same_client(raw):
    assert normalize_phone(raw) == "+79161234567"


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("", "empty"),
        (None, "empty"),
        ("anonymous", "characters"),
        ("+7916<script>", "characters"),
        ("79161234567\n", None),  # trailing newline is whitespace: accepted after strip
        ("123", "not a valid"),
        ("1" * 70, "too long"),
        ("+7 916 123-45-67; DROP TABLE clients", "characters"),
    ],
)
def test_bad_numbers_are_rejected_with_a_reason(raw, reason):
    if reason is None:
        assert normalize_phone(raw) == "+79161234567"
        return
    with pytest.raises(PhoneNumberError, match=reason):
        normalize_phone(raw)
    assert try_normalize_phone(raw) is None


def test_moscow_landline():
    assert normalize_phone("8 495 123-45-67") == "+74951234567"


def test_safe_text_strips_control_characters_and_bounds_length():
    assert safe_text("Иван\r\nInjected: x") == "Иван??Injected: x"
    assert len(safe_text("x" * 500, 80)) == 80
    assert safe_text(None) == ""
