"""The Socket.IO namespace: authenticate on connect, then answer client events through acks."""

from __future__ import annotations

import logging
from typing import Any

import socketio
from aiohttp import web

from backend import keys
from backend.realtime.notifier import user_room
from backend.security import AuthError, bearer_token
from backend.services.users import upsert_user

log = logging.getLogger(__name__)


class NotificationNamespace(socketio.AsyncNamespace):
    """Namespace `/`: every session lives in room user:<sub>."""

    def __init__(self, app: web.Application, namespace: str = "/") -> None:
        super().__init__(namespace)
        self.app = app

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            token = bearer_token(environ.get("HTTP_AUTHORIZATION"))
        try:
            claims = self.app[keys.VERIFIER].verify(token)
        except AuthError as exc:
            raise socketio.exceptions.ConnectionRefusedError(exc.reason) from None
        async with self.app[keys.SESSIONMAKER].begin() as session:
            await upsert_user(session, user_id=claims.sub, email=claims.email, name=claims.name)
        await self.save_session(sid, {"user_id": claims.sub, "claims": claims})
        await self.enter_room(sid, user_room(claims.sub))
        request = environ.get("aiohttp.request")
        self.app[keys.CONNECTIONS].connect(
            sid,
            claims.sub,
            transport=self.server.transport(sid),
            remote_address=getattr(request, "remote", None),
            user_agent=environ.get("HTTP_USER_AGENT"),
        )

    async def on_disconnect(self, sid: str, reason: str | None = None) -> None:
        connection = self.app[keys.CONNECTIONS].disconnect(sid)
        if connection is not None:
            log.debug("disconnected %s (%s): %s", sid, connection.user_id, reason)
