"""The admin page's numbers that no other route gives: read from this process's metrics
registry (the same numbers /metrics serves, never a second counter) and one grouped query."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..metrics import REFUSAL_REASONS, Metrics, quantiles, total, totals_by
from . import emails

PERCENTILES = (0.5, 0.95, 0.99)
RECOVERY_OUTCOMES = ("recovered", "too_far", "failed", "deferred")
EMAIL_ATTEMPTS = ("sent", "retry", "failed", "skipped")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _latency(metric: Any) -> dict[str, Any]:
    count, values = quantiles(metric, PERCENTILES)
    return {"count": count, "p50": values[0.5], "p95": values[0.95], "p99": values[0.99]}


def _counts(totals: dict[str, float], names: tuple[str, ...]) -> dict[str, int]:
    """Every expected label at zero first, so the page's rows never come and go."""
    return {**dict.fromkeys(names, 0), **{k: int(v) for k, v in totals.items()}}


async def overview(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    metrics: Metrics,
    process: str,
    now: float | None = None,
) -> dict[str, Any]:
    """Counters since this process started, latency percentiles from its histograms' buckets,
    its notifications per minute, and the email queue by status across the cluster (the DB)."""
    at = time.time() if now is None else now
    families = metrics.read()
    first_minute, per_minute = metrics.per_minute.series(at)
    return {
        "process": process,
        "at": _iso(at),
        "notifications_stored": int(total(families.get("notify_notifications_stored"))),
        "notifications_per_minute": {"start": _iso(first_minute * 60), "counts": per_minute},
        "deliveries": int(total(families.get("notify_socket_deliveries"))),
        "coalesced": int(total(families.get("notify_socket_coalesced"))),
        "commit_to_emit": _latency(families.get("notify_publish_commit_to_emit_seconds")),
        "commit_to_receipt": _latency(families.get("notify_commit_to_receipt_seconds")),
        "recoveries": _counts(
            totals_by(families.get("notify_recoveries"), "outcome"), RECOVERY_OUTCOMES
        ),
        "refusals": _counts(totals_by(families.get("notify_refusals"), "reason"), REFUSAL_REASONS),
        "email_attempts": _counts(
            totals_by(families.get("notify_emails"), "status"), EMAIL_ATTEMPTS
        ),
        "emails": await emails.count_by_status(sessionmaker=sessionmaker),
    }
