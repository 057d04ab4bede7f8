"""How long a request may take to arrive: its body here; its headers through aiohttp's
keep-alive timer (see `request_header_timeout` in the app factory)."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Middleware

from routers.http import Handler, error_response

# Engine.IO reads its own long-polling bodies, under the same deadline (backend/realtime/engine.py).
SOCKET_IO_PREFIX = "/socket.io/"
# A handler with this attribute (an async function of the request) answers its own too-large body.
TOO_LARGE_ATTRIBUTE = "answer_too_large"


def body_deadline_middleware(timeout_seconds: float) -> Middleware:
    """Read a request's body within `timeout_seconds` of its headers, or answer 408 and close:
    a client that sends half a body must not hold a connection and a handler forever."""

    @web.middleware
    async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.can_read_body and not request.path.startswith(SOCKET_IO_PREFIX):
            try:
                if request.content.is_eof():  # it came with the headers: no wait, no timer
                    await request.read()
                else:
                    async with asyncio.timeout(timeout_seconds):
                        await request.read()  # kept by aiohttp: the handler's read() returns it
            except web.HTTPRequestEntityTooLarge:
                # A route may answer it its own way (Dapr's: 200 DROP, as a 413 is redelivered).
                too_large = getattr(request.match_info.handler, TOO_LARGE_ATTRIBUTE, None)
                if too_large is None:
                    raise
                return await too_large(request)
            except TimeoutError:
                response = error_response(
                    408,
                    f"the request body did not arrive within {timeout_seconds:g} s",
                    code="request_timeout",
                )
                response.force_close()
                return response
        return await handler(request)

    return body_deadline
