"""CloudEvents 1.0 as other services (and Dapr sidecars) send them, parsed into one type.

Structured mode is a JSON document with the attributes and `data`; binary mode carries the
attributes in `ce-*` headers and `data` as the body. Dapr wraps a plain payload published to a
topic as a structured event of type `com.dapr.event.sent` with `topic` and `pubsubname`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from ..email.schemas import Timestamp
from ..schemas import NO_NUL

DAPR_WRAPPED_TYPE = "com.dapr.event.sent"
BINARY_PREFIX = "ce-"


Text255 = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=NO_NUL)]
Text512 = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=NO_NUL)]


class MalformedEvent(ValueError):
    """Not a CloudEvent 1.0 we can key: it can never succeed (DROP)."""


class _Attributes(BaseModel):
    """The context attributes we read; extensions (traceparent, ...) are allowed and ignored."""

    model_config = ConfigDict(extra="ignore")
    specversion: Literal["1.0"]
    id: Text255
    source: Text512
    type: Text255
    subject: Text255 | None = None
    time: Timestamp | None = None
    datacontenttype: Text255 | None = None
    # Dapr's own extensions on what it delivers
    topic: Text255 | None = None
    pubsubname: Text255 | None = None


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """One event, however it arrived (HTTP structured or binary, Dapr, a Redis message)."""

    id: str
    source: str
    type: str
    data: Any = None
    subject: str | None = None
    time: datetime | None = None
    datacontenttype: str | None = None
    topic: str | None = None  # the Dapr topic it was delivered on, if any
    pubsubname: str | None = None

    @property
    def mapping_key(self) -> str:
        """Which mapping turns it into a notification: its `type`; for a payload Dapr wrapped,
        `data.event_type` when present, else the topic."""
        if self.type == DAPR_WRAPPED_TYPE:
            if isinstance(self.data, dict) and isinstance(self.data.get("event_type"), str):
                return str(self.data["event_type"])
            if self.topic:
                return self.topic
        return self.type


def _reason(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "the event"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"not a CloudEvent 1.0: {where}: {first['msg']}{more}"


def _build(attributes: Mapping[str, Any], data: Any) -> CloudEvent:
    try:
        parsed = _Attributes.model_validate(dict(attributes))
    except ValidationError as exc:
        raise MalformedEvent(_reason(exc)) from None
    return CloudEvent(
        id=parsed.id,
        source=parsed.source,
        type=parsed.type,
        data=data,
        subject=parsed.subject,
        time=parsed.time,
        datacontenttype=parsed.datacontenttype,
        topic=parsed.topic,
        pubsubname=parsed.pubsubname,
    )


def parse_structured(document: Any) -> CloudEvent:
    """A structured-mode event (`application/cloudevents+json`), already decoded from JSON."""
    if not isinstance(document, dict):
        raise MalformedEvent("not a CloudEvent 1.0: the body is not a JSON object")
    if "data_base64" in document:
        raise MalformedEvent("data_base64 is not supported: send data as JSON")
    return _build(document, document.get("data"))


def is_binary(headers: Mapping[str, str]) -> bool:
    """Binary mode: the attributes are in `ce-*` headers."""
    return any(name.lower() == "ce-specversion" for name in headers)


def parse_binary(headers: Mapping[str, str], data: Any) -> CloudEvent:
    """A binary-mode event: `ce-<attribute>` headers, the body (decoded) is its data."""
    attributes: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith(BINARY_PREFIX):
            attributes[lowered.removeprefix(BINARY_PREFIX)] = value
    content_type = next((v for n, v in headers.items() if n.lower() == "content-type"), None)
    if content_type:
        attributes.setdefault("datacontenttype", content_type)
    return _build(attributes, data)
