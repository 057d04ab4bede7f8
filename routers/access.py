"""Every HTTP request: a request id (the client's X-Request-ID or a new one, answered in the same
header), one access log line, and its count and latency by route template.

A websocket upgrade to /socket.io/ is held for the socket's life: it gets its request id, and is
counted when its answer (the 101, or Engine.IO's refusal) is prepared, but no middleware frame
waits around it for hours, and the other middlewares (error mapping, body deadline) do nothing
for it (bench/README, the connect storm)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable

from aiohttp import web

from backend import keys
from backend.logs import REQUEST_ID, USER_ID, new_request_id
from routers.http import ENGINEIO_PREFIX, Handler

access_log = logging.getLogger("backend.access")
REQUEST_ID_HEADER = "X-Request-ID"
UNMATCHED = "unmatched"  # 404 and 405: the raw path would make a label per scanner's guess

# Answers that are a refusal of the client, by reason (sockets count theirs in socket_events).
REFUSAL_BY_STATUS = {401: "auth", 413: "payload", 429: "rate"}


def route_template(request: web.Request) -> str:
    """`/api/v1/notifications/{id}`, never the path itself (bounded label values, no ids)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


# Set on a /socket.io/ websocket upgrade's request: when it started (perf_counter), for its count.
SOCKET_STARTED = web.RequestKey("socket_started", float)


def is_socket_upgrade(request: web.Request) -> bool:
    return request.path.startswith(ENGINEIO_PREFIX) and (
        request.headers.get("Upgrade", "").lower() == "websocket"
    )


@web.middleware
def access_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    if is_socket_upgrade(request):
        # Engine.IO's handler itself is what the connection awaits (no frame of ours); set in
        # this task's context, the request id is on every log line of the socket's life.
        request[SOCKET_STARTED] = time.perf_counter()
        REQUEST_ID.set(new_request_id(request.headers.get(REQUEST_ID_HEADER)))
        USER_ID.set(None)
        return request.match_info.handler(request)
    return _access(request, handler)


async def _access(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = new_request_id(request.headers.get(REQUEST_ID_HEADER))
    token = REQUEST_ID.set(request_id)
    # Set by authenticate()/authorize() (routers.http.identify) in this same task, so the access
    # line names the caller; None first, so a keep-alive connection's next request starts clean.
    user_token = USER_ID.set(None)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response
    except web.HTTPException as exc:  # a redirect, or an error the error middleware let through
        status = exc.status
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    finally:
        duration = time.perf_counter() - started
        route = count(request, status, duration)
        if not request.path.startswith(ENGINEIO_PREFIX):  # long-polling would flood the log
            access_log.info(
                "%s %s %d %.1f ms", request.method, route, status, duration * 1000,
                extra={"method": request.method, "route": route, "status": status,
                       "duration_ms": round(duration * 1000, 2)},
            )  # fmt: skip
        USER_ID.reset(user_token)
        REQUEST_ID.reset(token)


def count(request: web.Request, status: int, duration: float) -> str:
    """An answered request in the metrics, and a refusal by its status; its route template."""
    route = route_template(request)
    metrics = request.app[keys.METRICS]
    metrics.http_answered(request.method, route, status, duration)
    if (reason := REFUSAL_BY_STATUS.get(status)) is not None:
        metrics.refused(reason)
    return route


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """For answers prepared inside the handler (event streams, websockets, files); a socket
    upgrade is counted here, its duration being the time to its answer."""
    request_id = REQUEST_ID.get()
    if request_id is not None and REQUEST_ID_HEADER not in response.headers:
        response.headers[REQUEST_ID_HEADER] = request_id
    started = request.get(SOCKET_STARTED)
    if started is not None:
        del request[SOCKET_STARTED]  # once, whatever prepares after it
        count(request, response.status, time.perf_counter() - started)
