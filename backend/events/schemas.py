"""Wire models of the event routes: Dapr's subscription list and answers, the audit query."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, StringConstraints

from ..email.schemas import Timestamp
from ..schemas import NO_NUL, Cursor, Strict


class DaprSubscription(BaseModel):
    pubsubname: str
    topic: str
    route: str


class DaprSubscriptions(RootModel[list[DaprSubscription]]):
    """Dapr's programmatic subscription: every topic of DAPR_TOPICS to POST /api/v1/events."""


class CloudEventBody(RootModel[Any]):
    """A CloudEvent 1.0 in structured mode (`application/cloudevents+json`: specversion, id,
    source, type, subject?, time?, data), Dapr's wrapping of a plain payload (type
    `com.dapr.event.sent` with `topic` and `data`), or in binary mode the event's data with
    its attributes in `ce-*` headers. Any body is taken: one that can never become a
    notification is answered 200 `DROP` (Dapr's contract), not a 4xx Dapr would redeliver."""


class DaprAnswer(BaseModel):
    """Dapr's subscriber answer; `reason` says why an event was dropped."""

    model_config = ConfigDict(extra="allow")
    status: Literal["SUCCESS", "DROP", "RETRY"]
    reason: str | None = None
    notification_ids: list[int] = Field(default_factory=list)
    duplicate: bool = False


Text = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=NO_NUL)]


class EventQuery(Strict):
    subject: Text | None = Field(default=None, description="e.g. task-42")
    type: Text | None = Field(
        default=None, description="the CloudEvent type (for a Dapr-wrapped payload: its topic)"
    )
    since: Timestamp | None = Field(default=None, description="received at or after (RFC 3339)")
    until: Timestamp | None = Field(default=None, description="received before (RFC 3339)")
    limit: int = Field(default=50, ge=1, le=100)
    cursor: Cursor | None = None


class EventOut(BaseModel):
    id: int = Field(description="the audit row's id (the order events were received in)")
    source: str
    event_id: str = Field(description="the CloudEvent id; unique with source")
    type: str
    subject: str | None
    time: str | None = Field(description="the event's own time, if it had one (UTC)")
    data: Any = Field(description="the event's data; null when too large or too deep to keep")
    received_at: str
    outcome: Literal["stored", "dropped"]
    reason: str | None = Field(description="why it was dropped")
    notification_ids: list[int]


class EventList(BaseModel):
    events: list[EventOut]
    next_cursor: str | None = None
