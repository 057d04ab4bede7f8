"""`python -m backend worker` and `python -m backend digest`: the email queue without the server."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from ..config import Settings
from ..models import utcnow

DRY_RUN_TITLES = 10


def run_worker(settings: Settings) -> int:
    """Poll and send until SIGINT/SIGTERM; any number of these may share one database. Its
    metrics (emails, send and query latency) are served on METRICS_PORT when that is set."""
    from .. import migrate
    from ..app import worker_metrics
    from ..db import create_engine, create_sessionmaker
    from ..metrics import Metrics
    from .worker import EmailWorker

    async def run() -> None:
        engine = create_engine(settings)
        metrics = Metrics(max_types=settings.metrics_max_types)
        metrics.watch_engine(engine)
        try:
            if settings.auto_migrate:
                await migrate.upgrade(engine)
            worker = EmailWorker(
                sessionmaker=create_sessionmaker(engine), settings=settings, metrics=metrics
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            where = (
                f"SMTP {settings.smtp_host}:{settings.smtp_port}"
                if settings.smtp_host
                else f"outbox {settings.email_outbox_dir}"
            )
            async with worker_metrics(settings, metrics.registry):
                print(f"email worker running ({where}); Ctrl-C stops it", flush=True)
                await worker.run(stop=stop)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print("email worker stopped", flush=True)
    return 0


def parse_time(raw: str | None) -> datetime:
    """ISO 8601; a time without an offset is UTC."""
    if not raw:
        return utcnow()
    value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def run_digest(settings: Settings, *, period: str, dry_run: bool, at: str | None) -> int:
    """Queue (or with --dry-run only show) the digests due for the last complete period."""
    from .. import migrate
    from ..db import create_engine, create_sessionmaker
    from ..services.digests import DigestPlan, plan_digests, queue_digests

    try:
        now = parse_time(at)
    except ValueError:
        print(f"error: --at must be an ISO 8601 time, got {at!r}", file=sys.stderr)
        return 2

    async def run() -> list[DigestPlan]:
        engine = create_engine(settings)
        try:
            if settings.auto_migrate:
                await migrate.upgrade(engine)
            sessionmaker = create_sessionmaker(engine)
            if dry_run:
                async with sessionmaker() as session:
                    return await plan_digests(session, period=period, now=now)
            return await queue_digests(sessionmaker, period=period, now=now)
        finally:
            await engine.dispose()

    plans = asyncio.run(run())
    verb = "would send" if dry_run else "queued"
    print(f"{period} digests at {now.isoformat()}: {verb} {len(plans)}")
    for line in describe(plans):
        print(line)
    return 0


def describe(plans: Sequence[object]) -> list[str]:
    from ..services.digests import DigestPlan

    lines: list[str] = []
    for plan in plans:
        assert isinstance(plan, DigestPlan)
        to = plan.recipient or "(no email address: skipped)"
        window = f"{plan.window.start:%Y-%m-%d %H:%M}Z..{plan.window.end:%Y-%m-%d %H:%M}Z"
        lines.append(f"{plan.user_id} <{to}>: {plan.total} unread, {window}")
        lines.extend(f"  - {title}" for title in plan.titles[:DRY_RUN_TITLES])
        if plan.total > DRY_RUN_TITLES:
            lines.append(f"  ... and {plan.total - DRY_RUN_TITLES} more")
    return lines
