"""Wire models of the email routes: the admin log, retry, recipients, one-click unsubscribe."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, Field, StringConstraints

from ..schemas import Cursor, Strict

EmailStatus = Literal["queued", "sending", "sent", "failed", "skipped"]
# Deliberately plain: one @, no spaces or controls; the SMTP server is the real judge.
EmailAddress = Annotated[
    str, StringConstraints(max_length=320, pattern=r"^[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+\.[^@\s]+$")
]


class EmailLogQuery(Strict):
    status: EmailStatus | None = None
    user_id: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    since: AwareDatetime | None = Field(default=None, description="created at or after (ISO 8601)")
    until: AwareDatetime | None = Field(default=None, description="created before (ISO 8601)")
    limit: int = Field(default=50, ge=1, le=100)
    cursor: Cursor | None = None


class EmailLogOut(BaseModel):
    id: int
    user_id: str
    notification_id: int | None
    kind: Literal["immediate", "digest"]
    period: str | None
    recipient: str | None
    subject: str
    status: EmailStatus
    attempts: int
    next_attempt_at: str | None = Field(description="when queued: the next attempt, UTC")
    sent_at: str | None
    failed_reason: str | None = Field(description="why it failed or was skipped; last error")
    created_at: str
    updated_at: str


class EmailLogList(BaseModel):
    email_logs: list[EmailLogOut]
    next_cursor: str | None = None


class UserUpdate(Strict):
    """A recipient's address and name, set by a publisher or an operator."""

    email: EmailAddress | None = None
    name: Annotated[str, StringConstraints(max_length=255)] | None = None


class UserOut(BaseModel):
    id: str
    email: str | None
    name: str | None


class UnsubscribeQuery(Strict):
    token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class Unsubscribed(BaseModel):
    unsubscribed: bool
    user_id: str
    email_notifications: bool
    types: list[str] = Field(description="types whose email is now off")
