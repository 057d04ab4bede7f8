"""The Socket.IO namespace: authenticate on connect, then answer client events through acks."""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime
from typing import Any

import socketio
from aiohttp import web
from pydantic import BaseModel, ValidationError

from backend import codec, keys
from backend.db import RETRY_AFTER_SECONDS, is_unavailable
from backend.errors import Conflict, DomainError, Invalid
from backend.logs import SID, USER_ID
from backend.realtime.connections import ClientConnection
from backend.realtime.engine import end_for_reconnect
from backend.realtime.notifier import user_room
from backend.schemas import (
    MAX_ID,
    MarkReadPayload,
    MessagePayload,
    Receipt,
    RoomPayload,
    SyncPayload,
)
from backend.security import AuthError, TokenClaims, bearer_token
from backend.services.topics import authorize_room

log = logging.getLogger(__name__)
DB_UNAVAILABLE = "database unavailable"
CAP = "cap"  # why the cluster view evicted a session: over the user's cap


def error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


def refuse(reason: str, *, kind: str, **data: Any) -> socketio.exceptions.ConnectionRefusedError:
    """`kind` is the refusal's label in notify_refusals_total."""
    exc = (
        socketio.exceptions.ConnectionRefusedError(reason, data)
        if data
        else socketio.exceptions.ConnectionRefusedError(reason)
    )
    exc.refusal_kind = kind  # type: ignore[attr-defined]
    return exc


def refusal_reason(exc: socketio.exceptions.ConnectionRefusedError) -> str:
    """The label `refuse` gave it; "invalid" for a refusal raised elsewhere."""
    return str(getattr(exc, "refusal_kind", "invalid"))


class NotificationNamespace(socketio.AsyncNamespace):
    """Namespace `/`: every session lives in room user:<sub>; every event gets an ack."""

    def __init__(self, app: web.Application, namespace: str = "/") -> None:
        super().__init__(namespace)
        self.app = app

    # -- lifecycle -------------------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        """Every connect is answered: admitted, or refused with its reason. A fault of ours is
        one log line and a refusal too; python-socketio would leave that connect unanswered
        until the client timed out (and call the handler again on a TypeError)."""
        sid_token = SID.set(sid)
        user_token = USER_ID.set(None)
        try:
            await self._connect(sid, environ, auth)
        except socketio.exceptions.ConnectionRefusedError as exc:
            self.app[keys.METRICS].refused(refusal_reason(exc))
            raise
        except Exception:
            log.exception("connect of %s failed", sid)
            raise refuse("server error; retry later", kind="invalid") from None
        finally:
            SID.reset(sid_token)
            USER_ID.reset(user_token)

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        app = self.app
        settings = app[keys.SETTINGS]
        connect_bucket = app[keys.CONNECT_BUCKET]
        if not connect_bucket.take():
            retry = math.ceil(max(connect_bucket.wait_time(), 0.1) * 100) / 100
            raise refuse(f"server busy, retry in {retry} s", kind="connect_rate", retry_after=retry)
        # Bounded before anything walks it (python-socketio's admin instrumentation does).
        depth, limit = settings.max_json_depth, settings.max_payload_bytes
        if codec.exceeds_depth(auth, depth):
            raise refuse(f"invalid auth: nested deeper than {depth} levels", kind="payload")
        if auth is not None and (size := codec.encoded_size(auth)) > limit:
            raise refuse(
                f"invalid auth: the payload is {size} bytes; the limit is {limit}", kind="payload"
            )
        auth = auth if isinstance(auth, dict) else {}
        token = auth.get("token")
        if not isinstance(token, str) or not token:
            token = bearer_token(environ.get("HTTP_AUTHORIZATION"))
        try:
            claims = app[keys.VERIFIER].verify(token)
        except AuthError as exc:
            raise refuse(exc.reason, kind="auth") from None
        USER_ID.set(claims.sub)
        last_seq = auth.get("last_seq")
        if last_seq is not None and (
            not isinstance(last_seq, int)
            or isinstance(last_seq, bool)
            or not 0 <= last_seq <= MAX_ID
        ):
            raise refuse(
                f"invalid last_seq: expected an integer from 0 to {MAX_ID}", kind="invalid"
            )
        # The slot is taken before the first await, and given back if this connect fails.
        connections = app[keys.CONNECTIONS]
        request = environ.get("aiohttp.request")
        displaced = connections.admit(
            sid,
            claims.sub,
            limit=settings.max_connections_per_user,
            transport=self.server.transport(sid),
            remote_address=getattr(request, "remote", None),
            user_agent=environ.get("HTTP_USER_AGENT"),
        )
        for old in displaced:
            self._displace(old)
        try:
            # Across processes (Redis): the user's oldest sessions anywhere over the cap.
            for other, process in await app[keys.CLUSTER].admission(sid):
                if process == app[keys.CLUSTER].process_id:
                    await self.evicted(other, CAP)
                else:
                    self.server.start_background_task(self._drop, other)
            bus = app.get(keys.BUS)
            try:
                # With the bus, a session without last_seq needs its catch-up baseline: the
                # user's latest seq, read in the same batch as the upsert.
                latest_seq = await app[keys.USERS].remember(
                    claims.sub, claims.email, claims.name,
                    latest_seq=bus is not None and last_seq is None,
                )  # fmt: skip
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                # Refused with a delay, which the official clients retry, not left hanging.
                raise refuse(
                    f"{DB_UNAVAILABLE}, retry in {RETRY_AFTER_SECONDS} s",
                    kind="unavailable",
                    retry_after=RETRY_AFTER_SECONDS,
                ) from None
            recovery = app[keys.RECOVERY]
            if last_seq is not None:
                recovery.hold(sid)  # before joining the room: nothing live slips in unseen
            elif bus is not None and latest_seq is not None:  # where a bus gap catches up from
                bus.baseline(sid, latest_seq)
            await self.save_session(sid, {"claims": claims})
            connection = connections.get(sid)
            if connection is None:  # a newer connect of this user displaced this one meanwhile
                raise refuse("too many connections for this user", kind="per_user_cap")
            connection.live = True
            await self.enter_room(sid, user_room(claims.sub))
        except BaseException:
            self._forget(sid)
            raise
        if last_seq is not None:
            # Runs after this handler returns, so the CONNECT packet is queued first.
            self.server.start_background_task(self._recover_on_connect, sid, claims.sub, last_seq)

    async def on_disconnect(self, sid: str, reason: str | None = None) -> None:
        connection = self.app[keys.CONNECTIONS].get(sid)
        tokens = SID.set(sid), USER_ID.set(connection.user_id if connection else None)
        try:
            self._forget(sid)
            log.debug("disconnected %s: %s", sid, reason)
        finally:
            SID.reset(tokens[0])
            USER_ID.reset(tokens[1])

    def _forget(self, sid: str) -> None:
        self.app[keys.CONNECTIONS].disconnect(sid)
        self.app[keys.DELIVERY].forget(sid)
        self.app[keys.INBOUND_LIMITER].forget(sid)

    def _displace(self, old: ClientConnection) -> None:
        """A session over the user's cap: out of the user's room now, so no notification reaches
        more than the cap; told why and closed next. One still connecting refuses itself."""
        if not old.live:
            return
        self.app[keys.METRICS].refused("per_user_cap")
        self.server.manager.basic_leave_room(old.sid, self.namespace, user_room(old.user_id))
        self.server.start_background_task(self._drop, old.sid)

    async def _drop(self, sid: str) -> None:
        """The oldest session of a user over the limit: tell it why, then close it. A session
        on another process is reached through the manager's pub/sub, like any emit."""
        reason = "too many connections for this user; the oldest session was closed"
        await self.emit("session_closed", {"reason": reason}, to=sid)
        await self.server.disconnect(sid)

    async def evicted(self, sid: str, reason: str) -> None:
        """Another process took this process's session out of the cluster view: over the user's
        cap (`cap`) or stale (`stale`). Also the way it arrives when pub/sub missed it, or when
        the session was still connecting (python-socketio ignores a remote disconnect then)."""
        connection = self.app[keys.CONNECTIONS].disconnect(sid)
        if connection is None:
            return
        if reason == CAP:
            self._displace(connection)  # one still connecting refuses itself
        elif connection.live:
            self.server.start_background_task(self.server.disconnect, sid)

    async def _recover_on_connect(self, sid: str, user_id: str, last_seq: int) -> None:
        try:
            result = await self.app[keys.RECOVERY].recover(sid, user_id, last_seq)
        except Exception as exc:
            if not is_unavailable(exc):
                # A fault of ours: the client refetches over REST (reconnecting would only
                # meet it again).
                log.exception("recovery failed for %s", sid)
                self.app[keys.RECOVERY].outcomes["failed"] += 1
                failed = {"recovered": False, "count": 0, "last_seq": last_seq}
                await self.emit("recovery", {**failed, "reason": "recovery failed"}, to=sid)
                return
            self.app[keys.UNAVAILABLE_LOG].warning("recovery deferred: %s", DB_UNAVAILABLE)
            self.app[keys.RECOVERY].outcomes["deferred"] += 1
            # Not "too far behind": the client keeps its last_seq. The transport is then closed
            # as on shutdown (end_for_reconnect), so the official clients reconnect on their
            # own, with backoff and the same last_seq, and recovery runs again.
            deferred = {
                "recovered": False,
                "retry": True,
                "reason": DB_UNAVAILABLE,
                "retry_after": RETRY_AFTER_SECONDS,
                "count": 0,
                "last_seq": last_seq,
            }
            await self.emit("recovery", deferred, to=sid)
            await self._close_transport(sid)
            return
        await self.app[keys.NOTIFIER].emit_to_local_session(sid, "recovery", result.as_dict())

    async def _close_transport(self, sid: str) -> None:
        eio_sid = self.server.manager.eio_sid_from_sid(sid, self.namespace)
        sock = self.server.eio.sockets.get(eio_sid) if eio_sid is not None else None
        if sock is not None:
            await end_for_reconnect(sock)

    # -- events ----------------------------------------------------------------------------

    async def trigger_event(self, event: str, *args: Any) -> Any:
        if event in ("connect", "disconnect"):
            return await super().trigger_event(event, *args)
        sid = args[0]
        data = args[1] if len(args) > 1 else None
        return await self._dispatch(event, sid, data)

    async def _dispatch(self, event: str, sid: str, data: Any) -> dict[str, Any]:
        sid_token, user_token = SID.set(sid), USER_ID.set(None)
        try:
            return await self._handle(event, sid, data)
        finally:
            SID.reset(sid_token)
            USER_ID.reset(user_token)

    async def _handle(self, event: str, sid: str, data: Any) -> dict[str, Any]:
        app = self.app
        connections = app[keys.CONNECTIONS]
        connections.record_event_in(sid)
        connections.heartbeat(sid)
        connections.set_transport(sid, self.server.transport(sid))
        limiter = app[keys.INBOUND_LIMITER]
        if not limiter.admit(sid):
            if limiter.abusive(sid):
                log.warning("disconnecting %s: sustained event flood", sid)
                self.server.start_background_task(self.server.disconnect, sid)
            app[keys.METRICS].refused("rate")
            return error("rate_limited", "too many events; slow down")
        handler = getattr(self, f"handle_{event}", None)
        if handler is None:
            return error("unknown_event", f"unknown event {event!r}")
        settings = app[keys.SETTINGS]
        if codec.exceeds_depth(data, settings.max_json_depth):
            depth = settings.max_json_depth
            return error("invalid_payload", f"the payload is nested deeper than {depth} levels")
        limit = settings.max_payload_bytes
        try:
            size = len(json.dumps(data, separators=(",", ":")))
        except (TypeError, ValueError):
            return error("invalid_payload", "the payload is not JSON")
        if size > limit:
            app[keys.METRICS].refused("payload")
            return error("payload_too_large", f"payload is {size} bytes; the limit is {limit}")
        try:
            session = await self.get_session(sid)
            USER_ID.set(session["claims"].sub)  # reset by _dispatch
            return await handler(sid, session["claims"], data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "payload"
            return error("invalid_payload", f"{where}: {first['msg']}")
        except DomainError as exc:
            return error(exc.code, exc.message)
        except Exception as exc:
            if is_unavailable(exc):
                app[keys.UNAVAILABLE_LOG].warning(
                    "database unavailable for event %s from %s: %r", event, sid, exc
                )
                return error("unavailable", "the database is unavailable; retry shortly")
            log.exception("event %s from %s failed", event, sid)
            return error("internal_error", "the server could not handle this event")

    @staticmethod
    def _parse(model: type[BaseModel], data: Any) -> Any:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise Invalid("the payload must be a JSON object")
        return model.model_validate(data)

    async def handle_heartbeat(self, sid: str, claims: TokenClaims, data: Any) -> dict[str, Any]:
        del sid, claims, data
        return {"ok": True, "server_time": datetime.now(UTC).isoformat().replace("+00:00", "Z")}

    async def handle_join(self, sid: str, claims: TokenClaims, data: Any) -> dict[str, Any]:
        payload: RoomPayload = self._parse(RoomPayload, data)
        room = authorize_room(claims, payload.room, self.app[keys.SETTINGS].public_topics)
        await self.enter_room(sid, room)
        self.app[keys.CONNECTIONS].join(sid, room)
        return {"ok": True, "room": room}

    async def handle_leave(self, sid: str, claims: TokenClaims, data: Any) -> dict[str, Any]:
        payload: RoomPayload = self._parse(RoomPayload, data)
        if payload.room == user_room(claims.sub):
            raise Invalid("a session always stays in its own user room")
        await self.leave_room(sid, payload.room)
        self.app[keys.CONNECTIONS].leave(sid, payload.room)
        return {"ok": True, "room": payload.room}

    async def handle_mark_read(self, sid: str, claims: TokenClaims, data: Any) -> dict[str, Any]:
        del sid
        payload: MarkReadPayload = self._parse(MarkReadPayload, data)
        changed = await self.app[keys.NOTIFICATIONS].mark_read(user_id=claims.sub, ids=payload.ids)
        return {"ok": True, "ids": changed}

    async def handle_mark_all_read(
        self, sid: str, claims: TokenClaims, data: Any
    ) -> dict[str, Any]:
        del sid, data
        changed = await self.app[keys.NOTIFICATIONS].mark_all_read(user_id=claims.sub)
        return {"ok": True, "count": len(changed)}

    async def handle_received(self, sid: str, claims: TokenClaims, data: Any) -> dict[str, Any]:
        """A delivery receipt: `received {"seqs": [...]}`, batched by the client. Only the
        caller's own notifications can be marked; the first device's receipt counts."""
        del sid
        if not isinstance(data, dict):
            raise Invalid("the payload must be a JSON object")
        payload = Receipt.model_validate(data, strict=True)  # no "1", no true, no 1.5
        limit = self.app[keys.SETTINGS].receipt_max_seqs
        if len(payload.seqs) > limit:
            raise Invalid(f"seqs: a receipt holds at most {limit} seqs, got {len(payload.seqs)}")
        ids = await self.app[keys.NOTIFICATIONS].mark_delivered(
            user_id=claims.sub, seqs=payload.seqs, via="socket"
        )
        return {"ok": True, "delivered": len(ids)}

    async def handle_sync(self, sid: str, claims: TokenClaims, data: Any) -> dict[str, Any]:
        payload: SyncPayload = self._parse(SyncPayload, data)
        recovery = self.app[keys.RECOVERY]
        if self.app[keys.DELIVERY].holding.get(sid) is not None:
            raise Conflict("a sync is already running for this session; wait for its ack")
        recovery.hold(sid)
        result = await recovery.recover(sid, claims.sub, payload.after_seq)
        return {"ok": True, **result.as_dict()}

    async def handle_message(self, sid: str, claims: TokenClaims, data: Any) -> dict[str, Any]:
        """Ephemeral: relayed to a room the session is in (typing, presence), never stored."""
        payload: MessagePayload = self._parse(MessagePayload, data)
        if payload.room is None:
            return {"ok": True, "echo": payload.data}
        if payload.room not in self.rooms(sid):
            raise Invalid(f"join {payload.room!r} before sending to it")
        message = {"room": payload.room, "from": claims.sub, "data": payload.data}
        await self.emit("message", message, room=payload.room, skip_sid=sid)
        return {"ok": True}
