"""Where messages go: an SMTP server through aiosmtplib, or `.eml` files in an outbox folder."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Protocol

import aiosmtplib

from ..config import Settings

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A send failed; `permanent` means retrying cannot help (an SMTP 5xx answer)."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason[:2000]
        self.permanent = permanent


class Transport(Protocol):
    name: str

    async def send(self, message: EmailMessage, *, recipient: str) -> None: ...


class SmtpTransport:
    """One connection per message: simple, and a broken connection never poisons a batch."""

    name = "smtp"

    def __init__(self, settings: Settings) -> None:
        assert settings.smtp_host is not None
        self._settings = settings
        self._host = settings.smtp_host

    async def send(self, message: EmailMessage, *, recipient: str) -> None:
        s = self._settings
        try:
            await aiosmtplib.send(
                # bytes, flattened with the message's own policy: aiosmtplib's would fold headers
                message.as_bytes(),
                sender=parseaddr(str(message["From"]))[1],
                recipients=[recipient],
                hostname=self._host,
                port=s.smtp_port,
                username=s.smtp_username,
                password=s.smtp_password.get() if s.smtp_password else None,
                use_tls=s.smtp_tls,
                start_tls=s.smtp_starttls,
                timeout=s.smtp_timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusals = exc.recipients
            code = max((r.code for r in refusals), default=550)
            reason = "; ".join(f"{r.code} {r.message} ({r.recipient})" for r in refusals)
            raise DeliveryError(reason or "recipient refused", permanent=code >= 500) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(f"{exc.code} {exc.message}", permanent=exc.code >= 500) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            raise DeliveryError(
                f"cannot deliver via {self._host}:{s.smtp_port}: {detail}", permanent=False
            ) from None


class OutboxTransport:
    """The embedded default: each message a `.eml` file a person can open; counts as sent."""

    name = "outbox"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: EmailMessage, *, recipient: str) -> None:  # noqa: ARG002
        try:
            await asyncio.to_thread(self._write, message)
        except OSError as exc:
            reason = f"cannot write to {self.directory}: {exc}"
            raise DeliveryError(reason, permanent=False) from None

    def _write(self, message: EmailMessage) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        message_id = str(message["Message-ID"]).strip("<>").partition("@")[0]
        target = self.directory / f"{message_id}.eml"
        fd, temporary = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(message.as_bytes())
        os.replace(temporary, target)  # whole files only, even if a reader is watching
        log.info("email written to %s", target)
        return target


def make_transport(settings: Settings) -> Transport:
    """SMTP when SMTP_HOST is set, otherwise the outbox folder."""
    if settings.smtp_host:
        return SmtpTransport(settings)
    return OutboxTransport(Path(settings.email_outbox_dir))
