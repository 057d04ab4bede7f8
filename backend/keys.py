"""Every typed application key, in one place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import socketio
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from .config import Settings
from .realtime.connections import ConnectionManager
from .realtime.notifier import Notifier
from .security import TokenVerifier
from .services.notifications import NotificationService

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONMAKER = web.AppKey("sessionmaker", async_sessionmaker[AsyncSession])
VERIFIER = web.AppKey("verifier", TokenVerifier)
SIO = web.AppKey("sio", socketio.AsyncServer)
CONNECTIONS = web.AppKey("connections", ConnectionManager)
NOTIFIER = web.AppKey("notifier", Notifier)
NOTIFICATIONS = web.AppKey("notifications", NotificationService)
# name -> probe returning "ok" or the reason it is not; /health/ready runs them all.
READY_PROBES = web.AppKey("ready_probes", dict[str, Callable[[], Awaitable[str]]])
