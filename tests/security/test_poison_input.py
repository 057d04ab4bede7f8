"""Poison input: JSON nested too deep or too large is refused at the edge, and nothing is stored.

Every REST body, Socket.IO event and CONNECT auth payload is bounded by `MAX_JSON_DEPTH`, and a
notification's `data` by `MAX_DATA_BYTES` as well; deeper than even the decoder goes is refused
the same way, never a RecursionError (a 500, or a traceback inside python-socketio).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from backend.codec import SENDABLE_DEPTH, OrjsonModule
from backend.config import ConfigError, Settings, load_settings

from ..conftest import SCOPE_PUBLISH, Recorder, RunningServer

DEPTH = Settings().max_json_depth
TOO_DEEP = f"nested deeper than {DEPTH} levels"


def nested(depth: int) -> str:
    """A JSON object `depth` levels deep, as text: the stdlib cannot encode the deepest ones."""
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


def publish_body(data_depth: int) -> bytes:
    head = '{"user_ids":["alice"],"type":"test","title":"Hello","data":'
    return (head + nested(data_depth) + "}").encode()


async def post_raw(server: RunningServer, path: str, raw: bytes, **kwargs: Any) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    return await server.request("POST", path, data=raw, headers=headers, **kwargs)


async def stored(server: RunningServer, user: str) -> int:
    status, body = await server.request("GET", "/api/v1/notifications?limit=100", sub=user)
    assert status == 200, body
    status, count = await server.request("GET", "/api/v1/notifications/unread-count", sub=user)
    assert status == 200, count
    assert count["count"] == len(body["notifications"])
    return len(body["notifications"])


@pytest.mark.parametrize("data_depth", [DEPTH, 900, 5_000, 40_000])
async def test_publishing_data_nested_past_the_depth_limit_is_422_and_stores_nothing(
    server: RunningServer, data_depth: int
) -> None:
    """The body is one level more than its data: data at DEPTH makes a body one past it."""
    status, answer = await post_raw(
        server,
        "/api/v1/notifications",
        publish_body(data_depth),
        sub="publisher",
        scopes=(SCOPE_PUBLISH,),
    )
    assert status == 422, answer
    assert answer["error"]["code"] == "validation_error"
    assert TOO_DEEP in answer["error"]["message"]
    assert await stored(server, "alice") == 0


async def test_data_nested_to_the_depth_limit_is_stored(server: RunningServer) -> None:
    status, answer = await post_raw(
        server,
        "/api/v1/notifications",
        publish_body(DEPTH - 1),
        sub="publisher",
        scopes=(SCOPE_PUBLISH,),
    )
    assert status == 201, answer
    assert answer["notifications"][0]["data"] == json.loads(nested(DEPTH - 1))
    assert await stored(server, "alice") == 1


async def test_data_larger_than_max_data_bytes_is_422_and_stores_nothing(
    server: RunningServer,
) -> None:
    limit = server.settings.max_data_bytes
    at_limit = {"blob": "x" * (limit - len('{"blob":""}'))}
    assert len(json.dumps(at_limit, separators=(",", ":"))) == limit
    over = {"blob": at_limit["blob"] + "x"}
    status, answer = await server.request(
        "POST",
        "/api/v1/notifications",
        sub="publisher",
        scopes=(SCOPE_PUBLISH,),
        json={"user_ids": ["alice"], "type": "test", "title": "Hello", "data": over},
    )
    assert status == 422, answer
    assert answer["error"]["details"][0]["loc"] == ["data"]
    assert f"the limit is {limit}" in answer["error"]["message"]
    assert await stored(server, "alice") == 0
    [created] = await server.publish(["alice"], data=at_limit)
    assert created["data"] == at_limit
    assert await stored(server, "alice") == 1


async def test_max_data_bytes_is_a_setting(make_server: Any) -> None:
    server = await make_server(max_data_bytes=64)
    status, answer = await server.request(
        "POST",
        "/api/v1/notifications",
        sub="publisher",
        scopes=(SCOPE_PUBLISH,),
        json={"user_ids": ["alice"], "type": "test", "title": "Hello", "data": {"k": "x" * 60}},
    )
    assert status == 422, answer
    assert await stored(server, "alice") == 0


@pytest.mark.parametrize(
    ("method", "path", "scopes"),
    [
        ("PUT", "/api/v1/preferences", ()),
        ("POST", "/api/v1/notifications/read", ()),
        ("PUT", "/api/v1/admin/users/alice", ("notifications:admin",)),
        ("POST", "/api/v1/notifications", (SCOPE_PUBLISH,)),
    ],
)
@pytest.mark.parametrize("depth", [DEPTH + 1, 40_000])
async def test_every_json_body_nested_past_the_depth_limit_is_422(
    server: RunningServer, method: str, path: str, scopes: tuple[str, ...], depth: int
) -> None:
    raw = ('{"x":' + nested(depth - 1) + "}").encode()
    status, answer = await server.request(
        method,
        path,
        sub="alice",
        scopes=scopes,
        data=raw,
        headers={"Content-Type": "application/json"},
    )
    assert status == 422, answer
    assert TOO_DEEP in answer["error"]["message"]
    assert answer["error"]["details"] == [
        {"loc": [], "msg": f"JSON {TOO_DEEP}", "type": "json_depth"}
    ]


async def test_max_json_depth_is_a_setting(make_server: Any) -> None:
    server = await make_server(max_json_depth=4)
    status, answer = await post_raw(
        server,
        "/api/v1/notifications",
        publish_body(4),
        sub="publisher",
        scopes=(SCOPE_PUBLISH,),
    )
    assert status == 422, answer
    assert "nested deeper than 4 levels" in answer["error"]["message"]
    [created] = await server.publish(["alice"], data={"a": {"b": {}}})
    assert created["data"] == {"a": {"b": {}}}


# -- Socket.IO ---------------------------------------------------------------------------------


async def test_an_event_nested_past_the_depth_limit_gets_an_error_ack(
    server: RunningServer,
) -> None:
    alice = await server.connect("alice")
    deep = json.loads(nested(DEPTH))
    answer = await alice.call("message", {"data": deep})
    assert answer == {
        "ok": False,
        "error": {"code": "invalid_payload", "message": f"the payload is {TOO_DEEP}"},
    }
    shallow = json.loads(nested(DEPTH - 1))
    assert await alice.call("message", {"data": shallow}) == {"ok": True, "echo": shallow}


class RawSocket:
    """A Socket.IO session spoken by hand over a websocket: packets no official client sends."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def receive(self) -> str:
        async with asyncio.timeout(5):
            while True:
                message = await self.ws.receive()
                assert message.type == aiohttp.WSMsgType.TEXT, message
                if message.data == "2":  # an Engine.IO ping
                    await self.ws.send_str("3")
                    continue
                return str(message.data)


async def open_raw(
    server: RunningServer, http: aiohttp.ClientSession, auth: str
) -> tuple[RawSocket, str]:
    ws = await http.ws_connect(f"{server.url}/socket.io/?EIO=4&transport=websocket")
    raw = RawSocket(ws)
    assert (await raw.receive()).startswith("0{")
    await ws.send_str("40" + auth)
    return raw, await raw.receive()


@pytest.mark.parametrize("depth", [900, 1_000])
async def test_an_event_nested_as_deep_as_the_decoder_goes_gets_an_error_ack(
    server: RunningServer, depth: int
) -> None:
    async with aiohttp.ClientSession() as http:
        auth = json.dumps({"token": server.token("alice")})
        raw, answer = await open_raw(server, http, auth)
        assert answer.startswith("40{"), answer
        await raw.ws.send_str('421["message",{"data":' + nested(depth) + "}]")
        ack = json.loads((await raw.receive()).removeprefix("431"))
        assert ack == [
            {
                "ok": False,
                "error": {"code": "invalid_payload", "message": f"the payload is {TOO_DEEP}"},
            }
        ]
        await raw.ws.send_str('422["heartbeat"]')
        assert (await raw.receive()).startswith('432[{"ok":true')
        await raw.ws.close()


@pytest.mark.parametrize("depth", [DEPTH, 900])
async def test_a_connect_auth_nested_past_the_depth_limit_is_refused(
    server: RunningServer, depth: int
) -> None:
    async with aiohttp.ClientSession() as http:
        auth = '{"token":"' + server.token("alice") + '","extra":' + nested(depth) + "}"
        raw, answer = await open_raw(server, http, auth)
        assert answer == '44{"message":"invalid auth: ' + TOO_DEEP + '"}'
        await raw.ws.close()


async def test_a_connect_auth_larger_than_max_payload_bytes_is_refused(
    server: RunningServer,
) -> None:
    limit = server.settings.max_payload_bytes
    recorder = Recorder()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await recorder.client.connect(
            server.url,
            auth={"token": server.token("alice"), "pad": "x" * limit},
            transports=["websocket"],
            wait_timeout=5,
        )
    [refusal] = recorder.connect_errors
    assert refusal["message"].startswith("invalid auth: the payload is ")
    assert refusal["message"].endswith(f"bytes; the limit is {limit}")
    assert (await server.connect("alice")).client.connected


# -- the codec python-socketio decodes and encodes with -----------------------------------------


@pytest.mark.parametrize("depth", [1_025, 5_000, 100_000])
def test_the_socket_codec_refuses_json_too_deep_to_decode_with_a_value_error(depth: int) -> None:
    text = "[" * depth + "]" * depth
    with pytest.raises(ValueError, match="nested too deep") as caught:
        OrjsonModule.loads(text)
    assert not isinstance(caught.value, RecursionError)


def test_the_socket_codec_refuses_data_too_deep_to_encode_with_a_value_error() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError, match="nested too deep"):
        OrjsonModule.dumps(deep)
    assert OrjsonModule.dumps({"big": 2**70}) == '{"big":1180591620717411303424}'


# -- the settings --------------------------------------------------------------------------------


def test_the_json_bounds_come_from_the_environment(tmp_path: Path) -> None:
    base = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"}
    settings = load_settings({**base, "MAX_JSON_DEPTH": "8", "MAX_DATA_BYTES": "2048"})
    assert (settings.max_json_depth, settings.max_data_bytes) == (8, 2048)
    assert (load_settings(base).max_json_depth, load_settings(base).max_data_bytes) == (32, 16384)
    for value in ("1", str(SENDABLE_DEPTH + 1), "deep"):
        with pytest.raises(ConfigError, match="MAX_JSON_DEPTH must be"):
            load_settings({**base, "MAX_JSON_DEPTH": value})
    with pytest.raises(ConfigError, match="MAX_DATA_BYTES must be"):
        load_settings({**base, "MAX_DATA_BYTES": "0"})
