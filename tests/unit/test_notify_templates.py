"""Notification templates: the shipped templates render the issue's sentence, errors name the field,
the file and the line, and the sandbox keeps admins' templates away from Python internals."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.notify.templates import RenderedPrompt, TemplateError, TemplateStore, default_folder

CLIENT = {"address_name": "Пётр Николаевич", "full_name": "Иванов Пётр Николаевич", "company": "ООО «Ромашка»"}
DOCS = {"sent_date": "07.02", "sent_how": "заказным письмом", "documents": "бухгалтерские документы за декабрь"}


@pytest.fixture
def store() -> TemplateStore:
    return TemplateStore(default_folder(), company_name="Эни")


def own(tmp_path: Path, **templates: str) -> TemplateStore:
    for name, text in templates.items():
        (tmp_path / f"{name}.txt.j2").write_text(text, encoding="utf-8")
    return TemplateStore(tmp_path, company_name="Эни")


def test_the_issue_example_sentence(store: TemplateStore) -> None:
    prompt = store.render("documents_sent", CLIENT, DOCS)
    assert prompt == RenderedPrompt(
        text="Пётр Николаевич, здравствуйте. Компания «Эни». 07.02 мы отправили вам заказным письмом "
             "бухгалтерские документы за декабрь. Если вы их уже получили, нажмите 1. Если нет — нажмите 2.",
        speech_text="Пётр Николаевич, здравствуйте. Компания Эни. Седьмого февраля мы отправили вам заказным "
                    "письмом бухгалтерские документы за декабрь. Если вы их уже получили, нажмите один. "
                    "Если нет, нажмите два.")


def test_goods_arrived(store: TemplateStore) -> None:
    prompt = store.render("goods_arrived", CLIENT, {"order_number": "1543", "until_date": "14.03",
                                                    "pickup_address": "г. Москва, ул. Складская, д. 5"})
    assert prompt.text == (
        "Пётр Николаевич, здравствуйте. Компания «Эни». Ваш заказ № 1543 прибыл на склад по адресу: "
        "г. Москва, ул. Складская, д. 5. Забрать его можно до 14.03. Если вы приедете за заказом, нажмите 1. "
        "Если нет — нажмите 2.")
    assert prompt.speech_text == (
        "Пётр Николаевич, здравствуйте. Компания Эни. Ваш заказ номер тысяча пятьсот сорок три прибыл на склад "
        "по адресу: город Москва, улица Складская, дом пять. Забрать его можно до четырнадцатого марта. "
        "Если вы приедете за заказом, нажмите один. Если нет, нажмите два.")


def test_contract_confirm(store: TemplateStore) -> None:
    prompt = store.render("contract_confirm", CLIENT, {"contract_number": "123/26"})
    assert prompt.speech_text == (
        "Пётр Николаевич, здравствуйте. Компания Эни. Мы направили вам договор номер сто двадцать три дробь "
        "двадцать шесть. Если вы его получили, нажмите один. Если нет, нажмите два.")


def test_names_and_variables(store: TemplateStore) -> None:
    assert store.names() == ["callback_offer", "contract_confirm", "documents_sent", "goods_arrived"]
    assert store.variables("documents_sent") == {"sent_date", "sent_how", "documents"}
    assert store.variables("goods_arrived") == {"order_number", "pickup_address", "until_date"}
    assert store.variables("contract_confirm") == {"contract_number"}
    assert store.undeclared("contract_confirm") == {"address_name", "company_name", "contract_number"}
    assert store.check("documents_sent", {"sent_date": "07.02", "documents": None}) == ["documents", "sent_how"]


@pytest.mark.parametrize("name", ["documents_sent", "goods_arrived", "contract_confirm"])
def test_every_template_ends_with_the_dtmf_instruction(store: TemplateStore, name: str) -> None:
    variables = {v: "1" for v in store.variables(name)}
    text = store.render(name, CLIENT, variables).text
    assert text.endswith("нажмите 1. Если нет — нажмите 2.")
    assert text.startswith("Пётр Николаевич, здравствуйте. Компания «Эни».")


def test_missing_variable_names_the_field(store: TemplateStore) -> None:
    with pytest.raises(TemplateError, match="'sent_how'") as info:
        store.render("documents_sent", CLIENT, {"sent_date": "07.02", "documents": "акты"})
    assert info.value.field == "sent_how"
    assert info.value.template == "documents_sent"


def test_none_counts_as_missing(store: TemplateStore) -> None:
    with pytest.raises(TemplateError) as info:
        store.render("contract_confirm", CLIENT, {"contract_number": None})
    assert info.value.field == "contract_number"


def test_missing_client_field_and_company_name(store: TemplateStore) -> None:
    with pytest.raises(TemplateError) as info:
        store.render("contract_confirm", {"full_name": "Иванов"}, {"contract_number": "5"})
    assert info.value.field == "address_name"
    bare = TemplateStore(default_folder())
    with pytest.raises(TemplateError) as info:
        bare.render("contract_confirm", CLIENT, {"contract_number": "5"})
    assert info.value.field == "company_name"


def test_unknown_template_lists_the_available(store: TemplateStore) -> None:
    with pytest.raises(TemplateError) as info:
        store.render("goods_sent", CLIENT, {})
    assert str(info.value) == ("unknown template 'goods_sent'; available: callback_offer, contract_confirm, documents_sent, "
                               "goods_arrived")
    with pytest.raises(TemplateError, match="available: callback_offer, contract_confirm, documents_sent, goods_arrived"):
        store.variables("../documents_sent")


def test_syntax_error_has_file_and_line(tmp_path: Path) -> None:
    store = own(tmp_path, broken="{{ address_name }}, здравствуйте.\nКомпания {{ company_name }}.\n{% if x %}нет endif\n")
    for call in (lambda: store.render("broken", CLIENT, {}), lambda: store.variables("broken")):
        with pytest.raises(TemplateError) as info:
            call()
        assert info.value.lineno == 3
        assert info.value.filename.endswith("broken.txt.j2")
        assert "broken.txt.j2, line 3" in str(info.value)


@pytest.mark.parametrize("source", [
    "{{ address_name.__class__.__mro__ }}",
    "{{ address_name.__class__.__subclasses__() }}",
    "{{ ''.__class__.__base__.__subclasses__() }}",
    "{{ address_name.format.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.system('id') }}",
])
def test_sandbox_blocks_dunder_access(tmp_path: Path, source: str) -> None:
    store = own(tmp_path, evil=source)
    with pytest.raises(TemplateError, match="forbidden in a template: .*unsafe"):
        text = store.render("evil", CLIENT, {}).text
        pytest.fail(f"rendered: {text!r}")  # pragma: no cover


def test_autoescape_is_off_and_edits_are_picked_up(tmp_path: Path) -> None:
    store = own(tmp_path, t="{{ address_name }} & <{{ company_name }}>")
    assert store.render("t", {"address_name": "Анна"}, {}).text == "Анна & <Эни>"
    (tmp_path / "t.txt.j2").write_text("Новый текст {{ company_name }}", encoding="utf-8")
    import os
    os.utime(tmp_path / "t.txt.j2", (1, 10**10))  # a later mtime, even on a coarse clock
    assert store.render("t", {}, {}).text == "Новый текст Эни"
