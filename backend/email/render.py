"""Messages people expect: text and HTML parts, safe headers, a one-click unsubscribe."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateSyntaxError,
    UndefinedError,
    nodes,
    select_autoescape,
)
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

TEMPLATES = Path(__file__).resolve().parent / "templates"
# Never fold headers: folding turns a long List-Unsubscribe URL into RFC 2047 encoded-words,
# which mail clients do not decode there; 998 octets is the line limit of RFC 5322.
POLICY = policy.SMTP.clone(max_line_length=998)
# Everything that could end a header line or hide in one: C0/C1 controls and Unicode separators.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SPACES = re.compile(r"\s{2,}")


def sanitize_header(value: str, *, max_length: int = 200) -> str:
    """One line, no CR/LF or other controls, bounded: safe in Subject or a display name."""
    cleaned = _SPACES.sub(" ", _UNSAFE.sub(" ", value)).strip()
    if len(cleaned) > max_length:
        cleaned = cleaned[: max_length - 1].rstrip() + "…"
    return cleaned


def absolute_url(app_url: str, target: str | None) -> str:
    """A notification's action_url made absolute against APP_URL (the app itself when absent)."""
    base = app_url.rstrip("/") + "/"
    if not target:
        return base
    return urljoin(base, target)


@dataclass(frozen=True, slots=True)
class Item:
    """One notification as an email shows it."""

    title: str
    body: str
    url: str
    created_at: datetime
    type: str = ""


@dataclass(frozen=True, slots=True)
class Letter:
    """Everything a template needs; `more` is how many items the digest leaves out."""

    subject: str
    heading: str
    items: list[Item]
    app_url: str
    unsubscribe_url: str | None = None
    more: int = 0
    period: str | None = None
    recipient_name: str | None = None
    # A template's email parts, rendered at publish (the `templated` layout): its text, and its
    # HTML (autoescaped when rendered, so Markup here) framed by the layout's header and footer.
    text: str | None = None
    html: Markup | None = None


# The largest number a template may pass to a call or filter, and the longest string or list an
# operator (* + ~ %) may build: what keeps one expression from allocating gigabytes.
MAX_TEMPLATE_NUMBER = 100_000
MAX_TEMPLATE_VALUE = 100_000
# Filters that could format past any bound (widths inside a string); str.format likewise.
_REFUSED_FILTERS = ("format",)
_REFUSED_ATTRIBUTES = frozenset({"format", "format_map"})


def _sized(value: Any) -> Any:
    if isinstance(value, str | list | tuple | dict) and len(value) > MAX_TEMPLATE_VALUE:
        raise SecurityError(f"a value longer than {MAX_TEMPLATE_VALUE} was built")
    return value


def _check_arguments(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int | float) and not isinstance(value, bool):
            if abs(value) > MAX_TEMPLATE_NUMBER:
                raise SecurityError(f"a number over {MAX_TEMPLATE_NUMBER} was passed to a call")


def _bounded_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)  # keeps jinja_pass_arg (context/environment filters)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_arguments(args[1:], kwargs)
        if function.__name__ == "do_join" and args:
            separator = args[-1] if len(args) > 2 else kwargs.get("d", "")
            if isinstance(separator, str) and len(separator) > 1000:
                raise SecurityError("a join separator over 1000 characters")
        return _sized(function(*args, **kwargs))

    return bounded


class _BoundedCodeGenerator(CodeGenerator):
    """`a ~ b` (string concatenation) checked like the other operators."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.sized(")
        super().visit_Concat(node, frame)
        self.write(")")


class BoundedSandbox(SandboxedEnvironment):
    """Jinja2's sandbox (no private attributes, no unsafe callables, range at most 100,000)
    with bounds on what one expression may build: the email layouts and the notification
    templates both render here."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {
            name: _bounded_filter(function)
            for name, function in self.filters.items()
            if name not in _REFUSED_FILTERS
        }
        self.globals.pop("namespace", None)  # mutable state across loop iterations
        self.sized = _sized

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if attr in _REFUSED_ATTRIBUTES:
            return False
        return bool(super().is_safe_attribute(obj, attr, value))

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if not isinstance(right, int | float) or abs(right) > 64:
                raise SecurityError("an exponent over 64")
            if isinstance(left, int) and left.bit_length() > 4096:
                raise SecurityError("a power of a number over 4096 bits")
        if operator == "*":
            for count, sequence in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(count, int):
                    if len(sequence) * count > MAX_TEMPLATE_VALUE:
                        raise SecurityError(f"a value longer than {MAX_TEMPLATE_VALUE} was built")
        if operator == "%" and isinstance(left, str):
            raise SecurityError("string formatting with % is not allowed")
        return _sized(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _check_arguments(args, kwargs)
        return _sized(super().call(__context, __obj, *args, **kwargs))


@cache
def _environments() -> tuple[BoundedSandbox, BoundedSandbox]:
    """The text and the HTML environment (HTML autoescaped, strings included)."""
    loader = FileSystemLoader(str(TEMPLATES))
    html = BoundedSandbox(
        loader=loader,
        autoescape=select_autoescape(["html"], default_for_string=True),
        undefined=StrictUndefined,
    )
    text = BoundedSandbox(loader=loader, autoescape=False, undefined=StrictUndefined)
    return text, html


class TemplateRefused(ValueError):
    """A template source or its rendering broke a rule; str() says which, for a 422."""


# What a stored template may not use: loops inside loops (the one way to run long without
# output), macros and call blocks (recursion), and anything that reaches the layouts' files.
_REFUSED_NODES: dict[type[nodes.Node], str] = {
    nodes.Macro: "macros",
    nodes.CallBlock: "call blocks",
    nodes.Include: "include",
    nodes.Extends: "extends",
    nodes.Import: "import",
    nodes.FromImport: "import",
}


def check_source(source: str, *, html: bool = False) -> None:
    """Parse a template source and refuse what could run unbounded (TemplateRefused)."""
    text_env, html_env = _environments()
    env = html_env if html else text_env
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateRefused(f"syntax error on line {exc.lineno}: {exc.message}") from None
    for node_type, what in _REFUSED_NODES.items():
        if tree.find(node_type) is not None:
            raise TemplateRefused(f"{what} are not allowed in a notification template")
    for loop in tree.find_all(nodes.For):
        if loop.recursive:
            raise TemplateRefused("recursive loops are not allowed in a notification template")
        if any(True for _ in loop.find_all(nodes.For)):
            raise TemplateRefused("loops inside loops are not allowed in a notification template")
    for constant in tree.find_all(nodes.Const):
        value = constant.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            if abs(value) > MAX_TEMPLATE_NUMBER:
                raise TemplateRefused(f"numbers over {MAX_TEMPLATE_NUMBER} are not allowed")


@functools.lru_cache(maxsize=256)
def _compiled(source: str, html: bool) -> Template:
    """Checked and compiled once per source text (Jinja does not cache `from_string`): every
    publish naming a template renders up to six of them. A refused source raises, so it is
    never cached; an edited template is new text, so it is compiled anew."""
    check_source(source, html=html)
    text_env, html_env = _environments()
    return (html_env if html else text_env).from_string(source)


def render_source(
    source: str, variables: Mapping[str, Any], *, html: bool = False, max_chars: int
) -> str:
    """Render a stored template with the layouts' sandbox: StrictUndefined (a missing variable
    is an error naming it), bounded values, and at most `max_chars` of output."""
    parts: list[str] = []
    size = 0
    try:
        chunks: Iterator[str] = _compiled(source, html).generate(**variables)
        for chunk in chunks:
            size += len(chunk)
            if size > max_chars:
                raise TemplateRefused(f"renders more than {max_chars} characters")
            parts.append(chunk)
    except UndefinedError as exc:
        raise TemplateRefused(f"missing variable: {exc.message}") from None
    except SecurityError as exc:
        raise TemplateRefused(f"refused by the sandbox: {exc}") from None
    except (TemplateError, ArithmeticError, TypeError, ValueError, RecursionError) as exc:
        if isinstance(exc, TemplateRefused):
            raise
        raise TemplateRefused(f"cannot render: {type(exc).__name__}: {exc}") from None
    return "".join(parts)


def render(letter: Letter, template: str) -> tuple[str, str | None]:
    """The text and HTML bodies of `template` (`immediate`, `digest` or `templated`); no HTML
    for a template that gave a text part only (the layout's would say something else)."""
    text_env, html_env = _environments()
    text = text_env.get_template(f"{template}.txt").render(letter=letter)
    if template == "templated" and letter.html is None and letter.text is not None:
        return text, None
    html = html_env.get_template(f"{template}.html").render(letter=letter)
    return text, html


def message_domain(sender: str) -> str:
    address = parseaddr(sender)[1]
    _, _, domain = address.rpartition("@")
    return domain or "localhost"


def build_message(
    *,
    letter: Letter,
    template: str,
    sender: str,
    recipient: str,
    message_id: str,
    date: datetime,
) -> EmailMessage:
    """A multipart/alternative message (text only when the template gave only text); the
    Message-ID is stable per email_logs row."""
    text, html = render(letter, template)
    message = EmailMessage(policy=POLICY)
    message["From"] = sender
    name = sanitize_header(letter.recipient_name or "", max_length=100)
    message["To"] = formataddr((name, recipient)) if name else str(Address(addr_spec=recipient))
    message["Subject"] = sanitize_header(letter.subject)
    message["Date"] = format_datetime(date)
    message["Message-ID"] = f"<{message_id}@{message_domain(sender)}>"
    message["Auto-Submitted"] = "auto-generated"
    if letter.unsubscribe_url:
        # RFC 8058: one POST to this URL unsubscribes, no page to click through.
        message["List-Unsubscribe"] = f"<{letter.unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message
