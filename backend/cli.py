"""The command line: serve (default), migrate, token, worker, digest."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import threading
import time
from collections.abc import Sequence

from .config import ConfigError, Settings, load_settings
from .logs import configure_logging, one_line

LISTEN_BACKLOG = 4096


EXIT_CONFIG = 2  # a setting is wrong: fix the configuration
EXIT_CANNOT_START = 3  # the database is unreachable or the address is taken: may work later


def serve(settings: Settings) -> int:
    from aiohttp import web

    from .app import create_app

    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is in requirements; Windows lacks it
        pass
    app = create_app(settings)
    app.on_startup.append(_freeze_gc)
    where = f"http://{settings.host}:{settings.port}"
    hint = (
        "get a token: python -m backend token --sub alice --scope notifications:publish"
        if settings.dev_mode
        else "tokens come from your identity provider (JWT_SECRET / JWT_PUBLIC_KEY)"
    )
    # Set once start-up (database, migrations) is done: a failure after it is the listener's.
    started: list[bool] = []
    shutdown = _Shutdown(settings.shutdown_grace_seconds)

    async def mark_started(_app: web.Application) -> None:
        started.append(True)

    app.on_startup.append(mark_started)
    app.on_shutdown.insert(0, shutdown.begin)

    def announce(_: str) -> None:
        shutdown.listening = True
        print(f"notification server listening on {where} ({_describe_db(settings)})", flush=True)
        print(f"open {where}/ in a browser; {hint}", flush=True)

    try:
        # A connect storm queues in the kernel instead of being reset (aiohttp defaults to 128).
        # shutdown_timeout: aiohttp waits that long for requests in flight, then cancels them
        # (and waits as long again at most); the rest of the grace is for closing resources.
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            print=announce,
            access_log=None,
            backlog=LISTEN_BACKLOG,
            shutdown_timeout=settings.shutdown_grace_seconds * 0.6,
        )
    except Exception as exc:
        if shutdown.listening:
            raise
        message = _start_failure(exc, settings, listening=bool(started))
        if message is None:
            raise
        print(f"cannot start: {message}", file=sys.stderr, flush=True)
        return EXIT_CANNOT_START
    shutdown.done()
    return 0


def _start_failure(exc: BaseException, settings: Settings, *, listening: bool) -> str | None:
    """One line for a start-up failure the operator can fix outside the code, else None."""
    from .db import is_unavailable

    if listening and isinstance(exc, OSError):
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        return f"cannot listen on {settings.host}:{settings.port}: {reason}"
    if not listening and is_unavailable(exc):
        return f"the database is unreachable ({_describe_db(settings)}): {one_line(exc, 300)}"
    return None


class _Shutdown:
    """One line when shutdown starts and one when it is done; and a watchdog that ends the
    process when the grace is over, whatever is still running (a client holding a request
    open, a resource that does not close)."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.listening = False  # a start-up that failed is not a shutdown
        self.started: float | None = None

    async def begin(self, _app: object) -> None:
        if self.started is not None or not self.listening:
            return
        self.started = time.monotonic()
        print(f"shutting down: finishing requests in flight (grace {self.grace:g} s)", flush=True)
        watchdog = threading.Timer(self.grace, self._expired)
        watchdog.daemon = True
        watchdog.start()

    def _expired(self) -> None:
        print(
            f"shut down after the grace of {self.grace:g} s; what was still running was cut",
            flush=True,
        )
        os._exit(0)

    def done(self) -> None:
        if self.started is not None:
            print(f"shut down in {time.monotonic() - self.started:.1f} s", flush=True)


async def _freeze_gc(_app: object) -> None:
    """After start-up: move what start-up allocated out of the collector's way, and collect
    young objects less often (a connection allocates many small, long-lived objects). Full
    collections walk every connection's objects (a pause of tens of ms at 20k connections), so
    they come after 100 middle-generation ones instead of 20."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def _describe_db(settings: Settings) -> str:
    if settings.sqlite_path is not None:
        return f"SQLite at {settings.sqlite_path}"
    return "PostgreSQL"


def migrate_command(settings: Settings, revision: str, down: bool) -> int:
    from . import migrate
    from .db import create_engine

    async def run() -> None:
        engine = create_engine(settings)
        try:
            if down:
                await migrate.downgrade(engine, revision)
            else:
                await migrate.upgrade(engine, revision)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print(f"database {'downgraded' if down else 'upgraded'} to {revision}")
    return 0


def token_command(settings: Settings, args: argparse.Namespace) -> int:
    from .security import AuthError, TokenVerifier

    try:
        token = TokenVerifier(settings).issue(
            args.sub,
            scopes=tuple(args.scope),
            ttl_seconds=args.ttl,
            email=args.email,
            name=args.name,
            topics=tuple(args.topic),
        )
    except AuthError as exc:
        print(f"error: {exc.reason}", file=sys.stderr)
        return 2
    print(token)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the server (the default)")
    migrate = sub.add_parser("migrate", help="upgrade (or downgrade) the database schema")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.add_argument("--down", action="store_true", help="downgrade to the revision")
    token = sub.add_parser("token", help="print a signed JWT for trying the server out")
    token.add_argument("--sub", required=True, help="the user id")
    token.add_argument(
        "--scope", action="append", default=[], help="notifications:publish, notifications:admin"
    )
    token.add_argument("--email")
    token.add_argument("--name")
    token.add_argument("--topic", action="append", default=[], help="private topic allowed")
    token.add_argument("--ttl", type=int, default=86400, help="seconds until it expires")
    sub.add_parser("worker", help="run the email queue worker (and digest scheduler) alone")
    digest = sub.add_parser("digest", help="queue the digests due now, or show them")
    digest.add_argument("--period", choices=["hourly", "daily", "weekly"], default="daily")
    digest.add_argument("--dry-run", action="store_true", help="show who would get what")
    digest.add_argument("--at", help="pretend it is this ISO 8601 time (default: now)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # `token` never makes a new secret: it must sign with the one the server uses.
        settings = load_settings(create_secret=args.command != "token")
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings)
    command = args.command or "serve"
    if command == "serve":
        return serve(settings)
    try:
        return _run_command(command, settings, args)
    except Exception as exc:
        # migrate, worker, digest: a database away at start is one line, as for serve.
        from .db import is_unavailable

        if not is_unavailable(exc):
            raise
        print(
            f"cannot {command}: the database is unreachable ({_describe_db(settings)}): "
            + one_line(exc, 300),
            file=sys.stderr,
            flush=True,
        )
        return EXIT_CANNOT_START


def _run_command(command: str, settings: Settings, args: argparse.Namespace) -> int:
    if command == "migrate":
        return migrate_command(settings, args.revision, args.down)
    if command == "token":
        return token_command(settings, args)
    if command == "worker":
        from .email.commands import run_worker

        return run_worker(settings)
    if command == "digest":
        from .email.commands import run_digest

        return run_digest(settings, period=args.period, dry_run=args.dry_run, at=args.at)
    raise AssertionError(command)
