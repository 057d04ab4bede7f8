"""Messages people expect: text and HTML parts, safe headers, a one-click unsubscribe."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from functools import cache
from pathlib import Path
from urllib.parse import urljoin

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

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


@cache
def _environments() -> tuple[Environment, Environment]:
    loader = FileSystemLoader(str(TEMPLATES))
    html = Environment(
        loader=loader, autoescape=select_autoescape(["html"]), undefined=StrictUndefined
    )
    text = Environment(loader=loader, autoescape=False, undefined=StrictUndefined)
    return text, html


def render(letter: Letter, template: str) -> tuple[str, str]:
    """The text and HTML bodies of `template` (`immediate` or `digest`)."""
    text_env, html_env = _environments()
    text = text_env.get_template(f"{template}.txt").render(letter=letter)
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
    """A multipart/alternative message; the Message-ID is stable per email_logs row."""
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
    message.add_alternative(html, subtype="html")
    return message
