"""Reference server: bare python-socketio + aiohttp doing only JWT check, rooms and emits.

    python bench/ref_python.py --port 9002 [--gc-freeze]     (env JWT_SECRET)

The floor of our own server's overhead: same REST call, same auth, no database.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
from datetime import UTC, datetime
from typing import Any

import jwt
import socketio
from aiohttp import web


def build(
    secret: str, ping_interval: float, ping_timeout: float, redis_url: str | None = None
) -> web.Application:
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        # Several processes reach each other's clients through Redis (the scale-out shape).
        client_manager=socketio.AsyncRedisManager(redis_url) if redis_url else None,
        cors_allowed_origins="*",
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
    )
    app = web.Application()
    sio.attach(app)
    ids = itertools.count(1)

    @sio.event
    async def connect(sid: str, _environ: dict[str, Any], auth: Any) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not token:
            raise socketio.exceptions.ConnectionRefusedError("missing token")
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp"]})
        except jwt.ExpiredSignatureError:
            raise socketio.exceptions.ConnectionRefusedError("token expired") from None
        except jwt.InvalidTokenError as exc:
            raise socketio.exceptions.ConnectionRefusedError(f"invalid token: {exc}") from None
        await sio.enter_room(sid, f"user:{claims['sub']}")

    def note(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": next(ids),
            "seq": 0,
            "type": body.get("type"),
            "title": body.get("title"),
            "body": body.get("body"),
            "data": body.get("data") or {},
            "created_at": datetime.now(UTC).isoformat(),
            "read_at": None,
        }

    async def publish(request: web.Request) -> web.Response:
        body = await request.json()
        created = []
        if body.get("topic") is not None:
            item = note(body)
            await sio.emit("notification", item)
            created.append(item)
        else:
            for uid in body.get("user_ids") or []:
                item = note(body)
                await sio.emit("notification", item, room=f"user:{uid}")
                created.append(item)
        return web.json_response({"notifications": created}, status=201)

    async def live(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_post("/api/v1/notifications", publish)
    app.router.add_get("/health/live", live)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9002)
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after start-up")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--redis", default=None, help="redis:// URL: fan out between processes")
    args = parser.parse_args()
    if not args.no_uvloop:
        import uvloop

        uvloop.install()
    app = build(
        os.environ["JWT_SECRET"],
        float(os.environ.get("PING_INTERVAL_SECONDS", "25")),
        float(os.environ.get("PING_TIMEOUT_SECONDS", "20")),
        args.redis,
    )
    if args.gc_freeze:

        async def freeze(_: web.Application) -> None:
            gc.collect()
            gc.freeze()

        app.on_startup.append(freeze)
    print(f"ref-python listening on http://{args.host}:{args.port}", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
