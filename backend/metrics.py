"""The metrics this process records as things happen (one registry per application).

Each process serves its own registry: Prometheus scrapes every process (each on its own PORT or
METRICS_PORT) and sums them in queries; nothing is shared between processes. Counters read from
live state at scrape time (connections, deliveries, the bus) are in routers/metrics.py; the ones
here are incremented where the event happens, once per request, notification or email, never
per delivered event.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import Metric
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

# Why a client was refused (a socket connect or event, a REST request).
REFUSAL_REASONS = ("rate", "per_user_cap", "connect_rate", "payload", "auth", "unavailable")
# Who created a notification: the publisher's kind (see notifications.publisher_kind).
SOURCES = ("token", "api_key", "event", "channel", "stream")
OTHER = "other"
# Distinct (method, route, status) whose metric children are kept at hand (Metrics.http_answered).
HTTP_CHILDREN_CACHED = 512

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SEND_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# The admin page's chart of notifications stored per minute: this many minutes, the current last.
PER_MINUTE_WINDOW = 60


class MinuteCounts:
    """Counts per wall-clock minute over the last `size` minutes: one slot per minute, reused
    when the clock comes round again, so memory stays `size` pairs whatever the traffic."""

    def __init__(self, size: int = PER_MINUTE_WINDOW) -> None:
        self.size = size
        self._minutes = [-1] * size
        self._counts = [0] * size

    def add(self, count: int, now: float | None = None) -> None:
        minute = int((time.time() if now is None else now) // 60)
        slot = minute % self.size
        if self._minutes[slot] != minute:
            self._minutes[slot], self._counts[slot] = minute, 0
        self._counts[slot] += count

    def series(self, now: float | None = None) -> tuple[int, list[int]]:
        """(the first minute, as minutes since the epoch; the counts, oldest first, the current
        minute so far last)."""
        current = int((time.time() if now is None else now) // 60)
        first = current - self.size + 1
        counts = []
        for minute in range(first, current + 1):
            slot = minute % self.size
            counts.append(self._counts[slot] if self._minutes[slot] == minute else 0)
        return first, counts


class Metrics:
    """The counters and histograms; `registry` is what /metrics serves (with the collector)."""

    def __init__(self, *, max_types: int = 50) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.max_types = max_types
        self._types: set[str] = set()
        self.http_requests = Counter(
            "notify_http_requests", "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"], registry=r,
        )  # fmt: skip
        self.http_latency = Histogram(
            "notify_http_request_duration_seconds", "time to answer an HTTP request, by route",
            ["route"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.created = Counter(
            "notify_notifications_stored",
            "notifications stored, by type (capped, the rest `other`) and source",
            ["type", "source"], registry=r,
        )  # fmt: skip
        self.commit_to_emit = Histogram(
            "notify_publish_commit_to_emit_seconds",
            "from a publish's commit to its events handed to the sockets (or the bus)",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.commit_to_receipt = Histogram(
            "notify_commit_to_receipt_seconds",
            "from a notification's commit to the first device's receipt",
            buckets=_SEND_BUCKETS, registry=r,
        )  # fmt: skip
        self.refusals = Counter(
            "notify_refusals", "clients refused, by reason", ["reason"], registry=r
        )
        self.emails = Counter(
            "notify_emails", "email attempts settled, by status (sent, retry, failed, skipped)",
            ["status"], registry=r,
        )  # fmt: skip
        self.email_send = Histogram(
            "notify_email_send_seconds", "time to hand one email to the transport (SMTP, outbox)",
            buckets=_SEND_BUCKETS, registry=r,
        )  # fmt: skip
        self.db_query = Histogram(
            "notify_db_query_seconds", "database statement latency",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        for reason in REFUSAL_REASONS:
            self.refusals.labels(reason)  # present at zero, so rate() works from the start
        self.per_minute = MinuteCounts()
        # Labelled children looked up once (`labels()` takes a lock and checks its arguments on
        # every call): at most HTTP_CHILDREN_CACHED answers' kinds, then `labels()` as before.
        self._http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._created_children: dict[tuple[str, str], Any] = {}

    def http_answered(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered HTTP request: its count by method, route and status, and its latency."""
        key = (method, route, status)
        children = self._http_children.get(key)
        if children is None:
            children = (
                self.http_requests.labels(method, route, str(status)),
                self.http_latency.labels(route),
            )
            if len(self._http_children) < HTTP_CHILDREN_CACHED:
                self._http_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def read(self) -> dict[str, Metric]:
        """Every family in the registry by name (the scrape-time collector's too): what /metrics
        would say now, for the admin overview."""
        return {metric.name: metric for metric in self.registry.collect()}

    def type_label(self, notification_type: str) -> str:
        """The type itself for the first `max_types` distinct ones, then `other`."""
        if notification_type in self._types:
            return notification_type
        if len(self._types) < self.max_types:
            self._types.add(notification_type)
            return notification_type
        return OTHER

    def notifications_stored(self, notifications: list[dict[str, Any]], source: str) -> None:
        # One label lookup per type, not per recipient (a publish to 1,000 users is one type);
        # Counter keeps first-seen order, so types are admitted under the cap as before.
        if len(notifications) == 1:  # a targeted publish: no Counter of types
            counts: Iterable[tuple[str, int]] = ((str(notifications[0].get("type")), 1),)
        else:
            counts = collections.Counter(str(i.get("type")) for i in notifications).items()
        for kind, count in counts:
            label = self.type_label(kind)
            child = self._created_children.get((label, source))
            if child is None:  # labels are bounded: max_types types (and other) by SOURCES
                child = self._created_children[(label, source)] = self.created.labels(label, source)
            child.inc(count)
        self.per_minute.add(len(notifications))

    def observe_receipt_latency(self, seconds: float) -> None:
        """The receipts branch calls this once per notification whose first receipt arrived,
        with seconds since its commit (created_at)."""
        self.commit_to_receipt.observe(max(seconds, 0.0))

    def refused(self, reason: str) -> None:
        self.refusals.labels(reason).inc()

    def watch_engine(self, engine: AsyncEngine) -> None:
        """Statement latency from SQLAlchemy's cursor events: two clock reads per statement."""
        sync_engine = engine.sync_engine
        histogram = self.db_query

        @event.listens_for(sync_engine, "before_cursor_execute")
        def _before(conn: Any, _cursor: Any, _statement: Any, *_args: Any) -> None:
            conn.info.setdefault("notify_query_start", []).append(time.perf_counter())

        @event.listens_for(sync_engine, "after_cursor_execute")
        def _after(conn: Any, _cursor: Any, _statement: Any, *_args: Any) -> None:
            starts = conn.info.get("notify_query_start")
            if starts:
                histogram.observe(time.perf_counter() - starts.pop())

        @event.listens_for(sync_engine, "handle_error")
        def _failed(context: Any) -> None:
            connection = context.connection
            starts = connection.info.get("notify_query_start") if connection is not None else None
            if starts:
                histogram.observe(time.perf_counter() - starts.pop())


def totals_by(metric: Metric | None, label: str) -> dict[str, float]:
    """A counter's totals summed by one label (absent family: nothing)."""
    totals: dict[str, float] = {}
    for sample in metric.samples if metric is not None else ():
        if sample.name.endswith("_total") and label in sample.labels:
            key = sample.labels[label]
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def total(metric: Metric | None) -> float:
    """A counter's total over every label."""
    samples = metric.samples if metric is not None else ()
    return sum(s.value for s in samples if s.name.endswith("_total"))


def quantiles(metric: Metric | None, qs: Iterable[float]) -> tuple[int, dict[float, float | None]]:
    """(the observation count, each quantile estimated from the cumulative buckets), the way
    Prometheus' histogram_quantile does: linear within the bucket, the highest finite bound when
    the rank falls in +Inf; None with no observation."""
    buckets: dict[float, float] = {}
    for sample in metric.samples if metric is not None else ():
        if sample.name.endswith("_bucket"):
            bound = float(sample.labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + sample.value
    ordered = sorted(buckets.items())
    count = int(ordered[-1][1]) if ordered else 0
    answers: dict[float, float | None] = {}
    for q in qs:
        answers[q] = _quantile(ordered, q) if count else None
    return count, answers


def _quantile(ordered: list[tuple[float, float]], q: float) -> float:
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, cumulative in ordered:
        if cumulative >= rank and cumulative > below:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (cumulative - below)
        lower, below = (bound if not math.isinf(bound) else lower), cumulative
    return lower
