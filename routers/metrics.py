"""Prometheus metrics: live state read at scrape time (ServerCollector) plus the counters and
histograms of backend.metrics, in one registry per app; each process is scraped on its own.

/metrics is served to a bearer METRICS_TOKEN when one is set, on a listener of its own when
METRICS_PORT is set, and otherwise only to a loopback peer that came through no proxy."""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from backend import keys
from backend.config import Settings
from backend.realtime.bus import BusWatch
from backend.security import bearer_token

log = logging.getLogger(__name__)
# A proxy in front says where the request came from: such a request is not a local one.
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


class ServerCollector(Collector):
    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        connections = self.app[keys.CONNECTIONS]
        stats = connections.counters()
        yield GaugeMetricFamily(
            "notify_connections", "Socket.IO sessions on this process", value=stats["connections"]
        )
        yield GaugeMetricFamily(
            "notify_online_users",
            "users with a session on this process",
            value=stats["online_users"],
        )
        yield GaugeMetricFamily("notify_rooms", "rooms with members", value=stats["room_count"])
        by_transport = GaugeMetricFamily(
            "notify_connections_by_transport", "sessions by transport", labels=["transport"]
        )
        for transport, count in connections.transports().items():
            by_transport.add_metric([transport], count)
        yield by_transport
        yield CounterMetricFamily(
            "notify_socket_events_in", "client events received", value=stats["events_in"]
        )
        yield CounterMetricFamily(
            "notify_socket_deliveries", "events delivered to sessions",
            value=self.app[keys.DELIVERY].events_out,
        )  # fmt: skip
        yield CounterMetricFamily(
            "notify_socket_direct_writes", "writes straight to an idle websocket",
            value=self.app[keys.DELIVERY].direct_writes,
        )  # fmt: skip
        control = self.app[keys.DELIVERY]
        yield CounterMetricFamily(
            "notify_socket_coalesced", "events not sent to a session over its outbound rate "
            "(it got one unread_count instead)", value=control.coalesced,
        )  # fmt: skip
        if keys.RECOVERY in self.app:
            recoveries = CounterMetricFamily(
                "notify_recoveries", "recoveries by last_seq or catch-up, by outcome "
                "(recovered, too_far, failed, deferred)", labels=["outcome"],
            )  # fmt: skip
            for outcome, count in self.app[keys.RECOVERY].outcomes.items():
                recoveries.add_metric([outcome], count)
            yield recoveries
        if keys.ENGINE in self.app:
            pool = self.app[keys.ENGINE].pool
            checked_out = getattr(pool, "checkedout", None)
            if checked_out is not None:
                yield GaugeMetricFamily(
                    "notify_db_pool_in_use", "database connections checked out of the pool",
                    value=checked_out(),
                )  # fmt: skip
        yield CounterMetricFamily(
            "notify_connections_opened", "sessions opened", value=stats["total_connections"]
        )
        if keys.NOTIFICATIONS in self.app:
            yield CounterMetricFamily(
                "notify_notifications_created", "notifications stored",
                value=self.app[keys.NOTIFICATIONS].created_total,
            )  # fmt: skip
        if keys.PUSH_LOG in self.app:
            push_log = self.app[keys.PUSH_LOG]
            steps = CounterMetricFamily(
                "notify_activity_pushed_steps",
                "`pushed` activity steps, by outcome (dropped: past ACTIVITY_QUEUE_MAX or the "
                "database away)",
                labels=["outcome"],
            )
            steps.add_metric(["written"], push_log.written)
            steps.add_metric(["dropped"], push_log.dropped)
            yield steps
        if keys.EVENTS in self.app:
            ingest = self.app[keys.EVENTS]
            events = CounterMetricFamily(
                "notify_events", "CloudEvents ingested, by outcome", labels=["outcome"]
            )
            for outcome in ("stored", "duplicate", "dropped", "retry"):
                events.add_metric([outcome], ingest.outcomes[outcome])
            yield events
            dropped = CounterMetricFamily(
                "notify_events_dropped", "CloudEvents dropped (DROP), by reason", labels=["reason"]
            )
            for reason, count in sorted(ingest.drops.items()):
                dropped.add_metric([reason], count)
            yield dropped
        if keys.BUS in self.app:
            yield from bus_metrics(self.app[keys.BUS])
        if keys.REDIS_INGEST in self.app:
            redis = self.app[keys.REDIS_INGEST]
            messages = CounterMetricFamily(
                "notify_redis_messages", "messages read from Redis, by transport and outcome",
                labels=["transport", "outcome"],
            )  # fmt: skip
            for (transport, outcome), count in sorted(redis.outcomes.items()):
                messages.add_metric([transport, outcome], count)
            yield messages
            dropped = CounterMetricFamily(
                "notify_redis_messages_dropped",
                "Redis messages that were no CloudEvent or notification request, by reason",
                labels=["reason"],
            )
            for reason, count in sorted(redis.drops.items()):
                dropped.add_metric([reason], count)
            yield dropped
            yield CounterMetricFamily(
                "notify_redis_dead_lettered", "stream messages moved to <stream>.dead",
                value=redis.dead_lettered,
            )  # fmt: skip
        yield GaugeMetricFamily(
            "notify_uptime_seconds", "seconds since start", value=stats["uptime_seconds"]
        )


def bus_metrics(bus: BusWatch) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "notify_bus_deaf", "1 while this process does not hear its own canary through Redis",
        value=1 if bus.reason() is not None else 0,
    )  # fmt: skip
    counters = (
        ("notify_bus_deaf_episodes", "times this process went deaf", bus.deaf_episodes),
        ("notify_bus_subscribes", "subscriptions to the bus, the first included", bus.subscribes),
        ("notify_bus_gaps", "gaps that made every local session catch up", bus.gaps),
        ("notify_bus_catch_up_sessions", "sessions caught up after a gap", bus.sessions_caught_up),
        ("notify_bus_catch_up_notifications", "notifications sent by catch-ups",
         bus.notifications_caught_up),
        ("notify_bus_catch_up_failures", "catch-ups that failed (the session was closed to "
         "reconnect)", bus.catch_up_failures),
    )  # fmt: skip
    for name, documentation, value in counters:
        yield CounterMetricFamily(name, documentation, value=value)


def _from_loopback(request: web.Request) -> bool:
    if any(header in request.headers for header in PROXY_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


def _token_ok(request: web.Request, expected: str) -> bool:
    offered = bearer_token(request.headers.get("Authorization")) or ""
    return hmac.compare_digest(offered.encode(), expected.encode())


def _answer_for(registry: CollectorRegistry) -> Callable[[], web.Response]:
    def answer() -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return answer


def setup_metrics(app: web.Application) -> None:
    settings = app[keys.SETTINGS]
    registry = app[keys.METRICS].registry
    registry.register(ServerCollector(app))
    token = settings.metrics_token.get() if settings.metrics_token is not None else None
    answer = _answer_for(registry)

    async def metrics(request: web.Request) -> web.Response:
        """The main listener's /metrics."""
        if token is not None:
            if not _token_ok(request, token):
                response = web.json_response(
                    {"error": {"code": "unauthorized", "message": "metrics token required",
                               "details": None}}, status=401,
                )  # fmt: skip
                response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
                return response
        elif settings.metrics_port is not None or not _from_loopback(request):
            # Served elsewhere, or asked through a proxy or from another host without a token.
            raise web.HTTPNotFound()
        return answer()

    app.router.add_get("/metrics", metrics)
    if settings.metrics_port is not None:
        app.cleanup_ctx.append(_metrics_listener(answer, token))


def _metrics_listener(
    answer: Callable[[], web.Response], token: str | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A second listener (METRICS_HOST:METRICS_PORT) that serves /metrics and nothing else."""

    async def listener(app: web.Application) -> AsyncIterator[None]:
        async with _listening(app[keys.SETTINGS], answer, token):
            yield

    return listener


@contextlib.asynccontextmanager
async def _listening(
    settings: Settings, answer: Callable[[], web.Response], token: str | None
) -> AsyncIterator[None]:
    async def metrics(request: web.Request) -> web.Response:
        if token is not None and not _token_ok(request, token):
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        return answer()

    assert settings.metrics_port is not None
    side = web.Application()
    side.router.add_get("/metrics", metrics)
    runner = web.AppRunner(side, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.metrics_host, settings.metrics_port)
        await site.start()
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
        yield
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serve_registry(settings: Settings, registry: CollectorRegistry) -> AsyncIterator[None]:
    """A process without the web app (`python -m backend worker`): its registry on
    METRICS_HOST:METRICS_PORT when METRICS_PORT is set (METRICS_TOKEN required when set), else
    nothing served."""
    if settings.metrics_port is None:
        yield
        return
    token = settings.metrics_token.get() if settings.metrics_token is not None else None
    async with _listening(settings, _answer_for(registry), token):
        yield
