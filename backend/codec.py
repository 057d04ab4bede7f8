"""The JSON codec of the wire (Socket.IO packets, REST answers, stored `data`) and its bounds.

orjson does the work; the stdlib takes what orjson refuses (an integer beyond 64 bits, a lone
surrogate). Neither may raise RecursionError out of here: inside python-socketio that is a
traceback, inside a request a 500. Nesting past what a decoder goes is a ValueError like any
other malformed JSON, and `exceeds_depth` measures nesting without recursion, so the edge can
hold documents to `MAX_JSON_DEPTH` before anything else walks them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import orjson

# The deepest `data` that every encoder on the way out takes: orjson encodes 254 levels, and a
# notification goes out inside a packet or a list a few levels deep. MAX_JSON_DEPTH may not
# exceed it, so what the edge accepts can always be sent.
SENDABLE_DEPTH = 128


CONTAINERS = (dict, list, tuple)


class TooDeep(ValueError):
    """JSON nested deeper than a decoder or encoder goes."""

    def __init__(self) -> None:
        super().__init__("JSON nested too deep to decode or encode")


class OrjsonModule:
    """The `json` interface python-socketio expects, backed by orjson (stdlib as fallback)."""

    @staticmethod
    def dumps(obj: Any, **_kwargs: Any) -> str:
        try:
            return orjson.dumps(obj).decode()
        except TypeError:  # what orjson refuses (say, an int beyond 64 bits) the stdlib takes
            try:
                return json.dumps(obj, separators=(",", ":"))
            except RecursionError:
                raise TooDeep from None

    @staticmethod
    def loads(data: str | bytes, **_kwargs: Any) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:  # orjson stops at 1024 levels; the stdlib sooner
            return loads(data)


def loads(data: str | bytes) -> Any:
    """The stdlib's decoding (exact big integers, NaN), with TooDeep for nesting past it."""
    try:
        return json.loads(data)
    except RecursionError:
        raise TooDeep from None


def loads_stored(text: str | bytes) -> Any:
    """The database's JSON columns (the engine's json_deserializer): the stdlib, as before, but
    JSON too deep to decode (stored before MAX_JSON_DEPTH) reads as None instead of failing the
    whole query, so one row cannot stop the reading of the others."""
    try:
        return loads(text)
    except TooDeep:
        return None


def exceeds_depth(value: Any, limit: int) -> bool:
    """Whether `value` nests objects and arrays deeper than `limit` (`{}` and `[]` are 1 level,
    a scalar 0), found without recursion, so no depth can overflow the stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list | tuple):  # tuples: what python-socketio passes for args
            children = item
        else:
            continue
        if level > limit:
            return True
        stack.extend((child, level + 1) for child in children if isinstance(child, CONTAINERS))
    return False


def encoded_size(value: Any) -> int:
    """Bytes of `value`'s compact JSON encoding, as it is stored and sent."""
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return len(OrjsonModule.dumps(value).encode())
