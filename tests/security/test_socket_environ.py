"""The environ python-socketio keeps for each session's life: what python-engineio's has, less the
WSGI constants nothing reads, with one shared key string per header name, whatever names a
client invents."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from engineio.async_drivers import aiohttp as eio_aiohttp
from multidict import CIMultiDict

from backend import keys
from backend.realtime import fast

from ..conftest import RunningServer

UNREAD = {
    "wsgi.errors", "wsgi.version", "wsgi.async", "wsgi.multithread", "wsgi.multiprocess",
    "wsgi.run_once", "SERVER_SOFTWARE", "RAW_URI", "SERVER_PROTOCOL", "REMOTE_PORT",
    "SERVER_NAME", "SERVER_PORT",
}  # fmt: skip


def request(**headers: str) -> web.Request:
    multi = CIMultiDict(headers)
    multi.add("Accept", "text/plain")
    multi.add("Accept", "application/json")  # a repeated header: joined with a comma
    return make_mocked_request("GET", "/socket.io/?EIO=4&transport=websocket", headers=multi)


def test_the_environ_has_what_python_engineio_gives_less_the_unread_wsgi_constants() -> None:
    req = request(**{"User-Agent": "probe/1", "Content-Type": "text/plain",
                     "X-Forwarded-Proto": "https", "Origin": "http://example.test"})  # fmt: skip
    ours = fast.translate_request(req)
    theirs = eio_aiohttp.translate_request(req)
    assert set(theirs) - set(ours) == UNREAD
    assert set(ours) <= set(theirs)
    assert {k: v for k, v in theirs.items() if k not in UNREAD} == ours
    assert ours["HTTP_ACCEPT"] == "text/plain,application/json"
    assert ours["wsgi.url_scheme"] == "https"


def test_header_keys_are_shared_and_their_cache_is_bounded() -> None:
    first = fast.translate_request(request(**{"User-Agent": "a"}))
    second = fast.translate_request(request(**{"User-Agent": "b"}))
    [key_one] = [k for k in first if k == "HTTP_USER_AGENT"]
    [key_two] = [k for k in second if k == "HTTP_USER_AGENT"]
    assert key_one is key_two
    for batch in range(4):  # 2,000 names a client made up: the cache stops at its bound
        names = {f"X-Invented-{batch}-{i}": "1" for i in range(500)}
        environ = fast.translate_request(request(**names))
        assert environ[f"HTTP_X_INVENTED_{batch}_499"] == "1"
    assert len(fast._environ_keys) <= fast.ENVIRON_KEYS_MAX


async def test_a_socket_connect_still_sees_its_user_agent_and_address(
    server: RunningServer,
) -> None:
    recorder = await server.connect("env-probe")
    del recorder
    [connection] = [c for c in server.app[keys.CONNECTIONS].all() if c.user_id == "env-probe"]
    assert connection.remote_address == "127.0.0.1"
    assert connection.user_agent  # python-socketio's client names itself
