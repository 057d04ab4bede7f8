"""Wire models of the activity routes: one notification's timeline and the admin search."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from .email.schemas import Timestamp
from .schemas import NO_NUL, Cursor, Strict, TypeName

StepKind = Literal[
    "created", "pushed", "delivered", "read", "emailed", "email_failed", "email_skipped",
    "deleted",
]  # fmt: skip


class TimelineQuery(Strict):
    limit: int = Field(default=1000, ge=1, le=1000, description="steps after `created`")


class ActivityQuery(Strict):
    user_id: (
        Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=NO_NUL)] | None
    ) = None
    type: TypeName | None = Field(default=None, description="the notification's type")
    kind: StepKind | None = Field(default=None, description="the step's kind")
    since: Timestamp | None = Field(default=None, description="at or after (RFC 3339)")
    until: Timestamp | None = Field(default=None, description="before (RFC 3339)")
    limit: int = Field(default=50, ge=1, le=100)
    cursor: Cursor | None = None


class StepOut(BaseModel):
    id: int | None = Field(description="null for `created`, which is the notification row itself")
    notification_id: int
    user_id: str
    type: str
    kind: StepKind
    at: str = Field(description="ISO 8601, UTC")
    detail: dict[str, Any] | None = Field(
        description="created: publisher, publisher_kind; pushed: sessions, via (live or "
        "recovery); delivered: via (socket or rest); emailed and email_*: email_log_id, "
        "attempts, reason"
    )


class TimelineNotification(BaseModel):
    id: int
    user_id: str
    seq: int
    type: str
    title: str
    publisher: str | None
    publisher_kind: str | None
    in_app: bool
    created_at: str
    delivered_at: str | None
    read_at: str | None
    deleted_at: str | None


class Timeline(BaseModel):
    notification: TimelineNotification
    activity: list[StepOut] = Field(description="in order: `created` first, then by time")


class ActivityList(BaseModel):
    activity: list[StepOut] = Field(description="recorded steps, newest first")
    next_cursor: str | None = None
