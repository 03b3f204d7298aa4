"""Notification templates: Jinja2 text files in Russian that admins edit (``<name>.txt.j2``).

    store = TemplateStore(Path("ivr/notify/templates"), company_name="Эни")
    store.names()                      # ["contract_confirm", "documents_sent", "goods_arrived"]
    store.variables("documents_sent")  # {"sent_date", "sent_how", "documents"}  (job variables)
    prompt = store.render("documents_sent", client={...}, variables={...})
    prompt.text, prompt.speech_text    # as written / normalised for TTS

Templates run in a sandboxed Jinja2 environment (admins edit them; a template cannot reach Python
internals) with StrictUndefined (a missing value is an error naming the field, never an empty gap in
a call). See docs/templates.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Mapping

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from ivr.speech.normalize import normalize_for_speech

__all__ = ["CLIENT_FIELDS", "SETTINGS_FIELDS", "SUFFIX", "RenderedPrompt", "TemplateError", "TemplateStore",
           "default_folder"]

SUFFIX = ".txt.j2"
#: fields of the client card every template may use
CLIENT_FIELDS = frozenset({"address_name", "full_name", "company"})
#: fields coming from settings
SETTINGS_FIELDS = frozenset({"company_name"})


def default_folder() -> Path:
    """The templates shipped with the product (admins may point the store at their own copy)."""
    return Path(__file__).resolve().parent / "templates"


class TemplateError(Exception):
    """A template cannot be found, parsed or rendered. ``field`` names the missing variable, if any;
    ``filename``/``lineno`` locate a syntax error."""

    def __init__(self, message: str, *, template: str | None = None, field: str | None = None,
                 filename: str | None = None, lineno: int | None = None):
        super().__init__(message)
        self.template = template
        self.field = field
        self.filename = filename
        self.lineno = lineno


@dataclass(frozen=True)
class RenderedPrompt:
    text: str          # the rendered text as written (shown to managers, stored with the attempt)
    speech_text: str   # the same text normalised for speech synthesis


def _clean(text: str) -> str:
    """Template whitespace (line breaks for readability) -> one line of prose."""
    return re.sub(r"\s+", " ", text).strip()


class TemplateStore:
    """Loads ``*.txt.j2`` from ``folder``; each render reads the file afresh only when it changed
    (Jinja2's auto-reload), so admins' edits take effect without a restart."""

    def __init__(self, folder: Path, *, company_name: str = "", today: date | None = None):
        self.folder = Path(folder)
        self.company_name = company_name
        self.today = today
        self._env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(self.folder), encoding="utf-8"),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            auto_reload=True,
        )

    # ---------------------------------------------------------------------------------- lookup
    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.name[: -len(SUFFIX)] for p in self.folder.glob(f"*{SUFFIX}") if p.is_file())

    def _filename(self, name: str) -> str:
        available = self.names()
        if name not in available:
            listing = ", ".join(available) if available else f"none in {self.folder}"
            raise TemplateError(f"unknown template {name!r}; available: {listing}", template=name)
        return name + SUFFIX

    def _syntax_error(self, name: str, exc: jinja2.TemplateSyntaxError) -> TemplateError:
        filename = exc.filename or str(self.folder / (name + SUFFIX))
        return TemplateError(f"{filename}, line {exc.lineno}: template syntax error: {exc.message}",
                             template=name, filename=filename, lineno=exc.lineno)

    def source(self, name: str) -> str:
        return (self.folder / self._filename(name)).read_text(encoding="utf-8")

    # ------------------------------------------------------------------------------- variables
    def undeclared(self, name: str) -> set[str]:
        """Every name the template reads (client fields and company_name included)."""
        filename = self._filename(name)
        try:
            ast = self._env.parse(self.source(name), name, filename)
        except jinja2.TemplateSyntaxError as exc:
            raise self._syntax_error(name, exc) from exc
        return set(meta.find_undeclared_variables(ast))

    def variables(self, name: str) -> set[str]:
        """The job variables the template needs: the names it reads minus the client card fields and
        the settings fields (those are always provided)."""
        return self.undeclared(name) - CLIENT_FIELDS - SETTINGS_FIELDS

    def check(self, name: str, variables: Mapping[str, Any]) -> list[str]:
        """Missing job variables (sorted) -- for validation when a job is created."""
        return sorted(v for v in self.variables(name) if v not in variables or variables[v] is None)

    # ---------------------------------------------------------------------------------- render
    def render(self, name: str, client: Mapping[str, Any], variables: Mapping[str, Any]) -> RenderedPrompt:
        filename = self._filename(name)
        try:
            template = self._env.get_template(filename)
        except jinja2.TemplateSyntaxError as exc:
            raise self._syntax_error(name, exc) from exc
        context: dict[str, Any] = {}
        for key in CLIENT_FIELDS:
            value = client.get(key)
            if value not in (None, ""):
                context[key] = value
        if self.company_name:
            context["company_name"] = self.company_name
        # a None variable counts as missing (StrictUndefined raises naming it)
        context.update({k: v for k, v in variables.items() if v is not None})
        try:
            text = template.render(context)
        except jinja2.UndefinedError as exc:
            field = _undefined_name(str(exc))
            raise TemplateError(f"template {name!r}: missing value for {field!r}" if field
                                else f"template {name!r}: {exc}", template=name, field=field) from exc
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateError(f"template {name!r}: forbidden in a template: {exc}", template=name) from exc
        except jinja2.TemplateError as exc:
            raise TemplateError(f"template {name!r}: {exc}", template=name) from exc
        text = _clean(text)
        return RenderedPrompt(text=text, speech_text=normalize_for_speech(text, today=self.today))


def _undefined_name(message: str) -> str | None:
    m = re.search(r"'([^']+)' is undefined", message) or re.search(r"has no attribute '([^']+)'", message)
    return m.group(1) if m else None
