"""Every typed application key, in one place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import socketio
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .config import Settings
from .ingest.messages import MessageHandler
from .logs import Throttled
from .metrics import Metrics
from .realtime.bus import BusWatch
from .realtime.cluster import Cluster
from .realtime.connections import ConnectionManager
from .realtime.delivery import DeliveryControl
from .realtime.limits import SessionLimiter, TokenBucket, UserLimiter
from .realtime.notifier import Notifier
from .realtime.recovery import Recovery
from .realtime.sse import StreamHub
from .realtime.tickets import TicketStore
from .security import TokenVerifier
from .services.activity import PushLog
from .services.api_keys import ApiKeys
from .services.events import EventIngest
from .services.notifications import NotificationService
from .services.personal_data import PersonalData
from .services.retention import Retention
from .services.templates import Templates
from .services.users import UserDirectory
from .shutdown import ShutdownClock

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONMAKER = web.AppKey("sessionmaker", async_sessionmaker[AsyncSession])
VERIFIER = web.AppKey("verifier", TokenVerifier)
SIO = web.AppKey("sio", socketio.AsyncServer)
CONNECTIONS = web.AppKey("connections", ConnectionManager)
NOTIFIER = web.AppKey("notifier", Notifier)
CLUSTER = web.AppKey("cluster", Cluster)
DELIVERY = web.AppKey("delivery", DeliveryControl)
RECOVERY = web.AppKey("recovery", Recovery)
# only with REDIS_URL: the canary and the catch-up after a bus gap
BUS = web.AppKey("bus", BusWatch)
INBOUND_LIMITER = web.AppKey("inbound_limiter", SessionLimiter)
CONNECT_BUCKET = web.AppKey("connect_bucket", TokenBucket)
NOTIFICATIONS = web.AppKey("notifications", NotificationService)
USERS = web.AppKey("users", UserDirectory)
# `pushed` activity steps on their way to the database
PUSH_LOG = web.AppKey("push_log", PushLog)
API_KEYS = web.AppKey("api_keys", ApiKeys)
TEMPLATES = web.AppKey("templates", Templates)
EVENTS = web.AppKey("events", EventIngest)
RETENTION = web.AppKey("retention", Retention)
# export and erase over the registry of per-user data
PERSONAL_DATA = web.AppKey("personal_data", PersonalData)
# GET /me/export: one bucket per user (EXPORTS_PER_HOUR)
EXPORT_LIMITER = web.AppKey("export_limiter", UserLimiter)
SHUTDOWN = web.AppKey("shutdown", ShutdownClock)
STREAMS = web.AppKey("streams", StreamHub)
STREAM_TICKETS = web.AppKey("stream_tickets", TicketStore)
# "<host>:<pid>:<random>": this process among others (cluster stats, the stream consumer name)
PROCESS_ID = web.AppKey("process_id", str)
# messages read from Redis channels and streams (present when some are configured)
REDIS_INGEST = web.AppKey("redis_ingest", MessageHandler)
# "database unavailable" from requests and socket events: a line per interval, not per request.
METRICS = web.AppKey("metrics", Metrics)
UNAVAILABLE_LOG = web.AppKey("unavailable_log", Throttled)
# name -> probe returning "ok" or the reason it is not; /health/ready runs them all.
READY_PROBES = web.AppKey("ready_probes", dict[str, Callable[[], Awaitable[str]]])
