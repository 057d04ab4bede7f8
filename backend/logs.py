"""Logging: one format, and one line (never a traceback) for what a client got wrong."""

from __future__ import annotations

import logging
import time

from aiohttp.http_exceptions import HttpProcessingError

from .config import Settings

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
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.log_level != "DEBUG":
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
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
