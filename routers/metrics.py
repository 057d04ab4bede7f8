"""Prometheus metrics, read from the live state at scrape time (one registry per app)."""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backend import keys
from backend.realtime.bus import BusWatch


class ServerCollector(Collector):
    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        stats = self.app[keys.CONNECTIONS].stats()
        yield GaugeMetricFamily(
            "notify_connections", "Socket.IO sessions on this process", value=stats["connections"]
        )
        yield GaugeMetricFamily(
            "notify_online_users",
            "users with a session on this process",
            value=stats["online_users"],
        )
        yield GaugeMetricFamily("notify_rooms", "rooms with members", value=len(stats["rooms"]))
        by_transport = GaugeMetricFamily(
            "notify_connections_by_transport", "sessions by transport", labels=["transport"]
        )
        for transport, count in stats["transports"].items():
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
        yield CounterMetricFamily(
            "notify_connections_opened", "sessions opened", value=stats["total_connections"]
        )
        if keys.NOTIFICATIONS in self.app:
            yield CounterMetricFamily(
                "notify_notifications_created", "notifications stored",
                value=self.app[keys.NOTIFICATIONS].created_total,
            )  # fmt: skip
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


def setup_metrics(app: web.Application) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(app))

    async def metrics(_request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app.router.add_get("/metrics", metrics)
