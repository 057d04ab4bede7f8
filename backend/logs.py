"""Logging: one event per line (JSON off a terminal, text on one), the request and session it
belongs to, no secrets, and one line (never a traceback) for what a client got wrong."""

from __future__ import annotations

import contextvars
import logging
import os
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp.http_exceptions import HttpProcessingError

from .config import Settings

# Where a line comes from: set by the HTTP middleware (request_id) and the Socket.IO namespace
# (sid, user_id); each request and socket event runs in its own task, so they never leak.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
SID: contextvars.ContextVar[str | None] = contextvars.ContextVar("sid", default=None)
USER_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("user_id", default=None)
CONTEXT_FIELDS = ("request_id", "sid", "user_id")

# A client's X-Request-ID is kept when it is this short and made of these characters.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

# Secrets a message may carry by accident (a URL with a ticket, a header echoed in an error):
# replaced by "[redacted]" before any line is written.
_SECRETS = (
    # JWTs (and any other three-part base64url token)
    re.compile(r"eyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*"),
    # bearer credentials and API keys in echoed headers
    re.compile(r"(?i)((?:bearer|x-api-key:?|authorization:?)\s+)[^\s,;'\"]+"),
    # query parameters that are credentials: SSE tickets, unsubscribe links, tokens, keys
    re.compile(r"(?i)((?:token|ticket|api_key|apikey|key|sig|signature)=)[^&\s'\"]+"),
)
REDACTED = "[redacted]"

# Loggers that would print a message body or a credential at DEBUG: never below WARNING.
QUIET_LOGGERS = ("aiosmtplib", "mail.log", "asyncio.sslproto")


def redact(text: str) -> str:
    for pattern in _SECRETS:
        text = pattern.sub(lambda m: (m.group(1) if m.re.groups else "") + REDACTED, text)
    return text


def new_request_id(offered: str | None) -> str:
    """The client's X-Request-ID when it is well formed, else a fresh one."""
    if offered and REQUEST_ID_PATTERN.fullmatch(offered):
        return offered
    return os.urandom(16).hex()  # uuid4().hex's 32 hex digits, without building a UUID


class ContextFilter(logging.Filter):
    """Puts request_id, sid and user_id on every record (None where they do not apply)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        record.sid = SID.get()
        record.user_id = USER_ID.get()
        return True


# LogRecord's own attributes: anything else on a record came from `extra=` and is logged.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", *CONTEXT_FIELDS,
}  # fmt: skip


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the context, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        line.update(_extras(record))
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exc"] = redact(record.exc_text)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """The readable line for a terminal, with the context and extras as key=value at its end."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = {n: getattr(record, n, None) for n in CONTEXT_FIELDS}
        fields.update(_extras(record))
        tail = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        return redact(f"{text} [{tail}]" if tail else text)


def use_json(log_format: str, stream: Any) -> bool:
    """`auto`: JSON unless the stream is a terminal."""
    if log_format == "auto":
        isatty = getattr(stream, "isatty", None)
        return not (isatty is not None and isatty())
    return log_format == "json"


# aiohttp's logger for requests it could not parse (oversized headers, bad request lines).
AIOHTTP_SERVER_LOGGER = "aiohttp.server"


class ClientErrorFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (a 100 KB header, a malformed line) as an ERROR
    with a traceback, before any authentication: anyone could fill the log with them. The
    client's mistake becomes one INFO line; errors of our own keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            message = " ".join(str(exc.message or exc).split())[:200]
            record.msg = "bad request from %s: %s %s"
            record.args = (remote, exc.code, message)
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.INFO
            record.levelname = logging.getLevelName(logging.INFO)
            return logging.getLogger(record.name).isEnabledFor(logging.INFO)
        return True


def configure_logging(settings: Settings) -> None:
    """One handler on stderr: JSON or text (LOG_FORMAT), with the context on every line."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if use_json(settings.log_format, sys.stderr) else TextFormatter()
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    if settings.log_level != "DEBUG":
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    install_client_error_filter()


def install_client_error_filter() -> None:
    """Idempotent: one filter on aiohttp's server logger, however many apps are created."""
    logger = logging.getLogger(AIOHTTP_SERVER_LOGGER)
    if not any(isinstance(f, ClientErrorFilter) for f in logger.filters):
        logger.addFilter(ClientErrorFilter())


def library_logger(name: str) -> logging.Logger:
    """The logger handed to python-socketio / python-engineio. Given `logger=False` they add
    a StreamHandler of their own to a logger that also propagates to ours, so each of their
    errors was printed twice; given a logger, they add nothing. Errors only, as before, unless
    the operator set a level for it."""
    logger = logging.getLogger(name)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.ERROR)
    return logger


class Throttled:
    """A warning that repeats with every request (the database is away) at most once per
    interval; the next line says how many were left out. One per application."""

    def __init__(self, logger: logging.Logger, interval_seconds: float) -> None:
        self._logger = logger
        self._interval = interval_seconds
        self._next = 0.0
        self._skipped = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._skipped += 1
            return
        if self._skipped:
            message += " (%d more like it in the last %g s)"
            args = (*args, self._skipped, self._interval)
        self._logger.warning(message, *args)
        self._next = now + self._interval
        self._skipped = 0


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one log-safe line: its class and message, whitespace folded, cut."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:limit]
