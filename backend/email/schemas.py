"""Wire models of the email routes: the admin log, retry, recipients, one-click unsubscribe."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field, StringConstraints

from ..schemas import NO_NUL, Cursor, Strict

EmailStatus = Literal["queued", "sending", "sent", "failed", "skipped"]
# One address and nothing else: a dot-atom local part (no quotes, commas, angle brackets or
# spaces, so a header can never hold two), a dotted domain; non-ASCII letters are allowed.
# Deliberately plain beyond that: the SMTP server is the real judge.
EMAIL_PATTERN = (
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\uffff-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u0080-\uffff-]+)*"
    r"@[A-Za-z0-9\u0080-\uffff-]+(\.[A-Za-z0-9\u0080-\uffff-]+)+$"
)
EMAIL_ADDRESS = re.compile(EMAIL_PATTERN)
EmailAddress = Annotated[str, StringConstraints(max_length=320, pattern=EMAIL_PATTERN)]


RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", re.ASCII)


def _rfc3339(value: object) -> object:
    """What the document promises (format date-time), not every form pydantic would parse
    (a Unix time such as `0.5`, a space instead of the T)."""
    if isinstance(value, str) and not RFC3339.fullmatch(value):
        raise ValueError("expected an RFC 3339 date-time, such as 2026-01-31T09:00:00Z")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


class EmailLogQuery(Strict):
    status: EmailStatus | None = None
    user_id: (
        Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=NO_NUL)] | None
    ) = None
    since: Timestamp | None = Field(default=None, description="created at or after (RFC 3339)")
    until: Timestamp | None = Field(default=None, description="created before (RFC 3339)")
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
    name: Annotated[str, StringConstraints(max_length=255, pattern=NO_NUL)] | None = None


class UserOut(BaseModel):
    id: str
    email: str | None
    name: str | None


class UnsubscribeQuery(Strict):
    # a signed token's characters (base64url and dots): the link's URL stays one short line
    token: Annotated[
        str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[A-Za-z0-9_.\-]+$")
    ]


class Unsubscribed(BaseModel):
    unsubscribed: bool
    user_id: str
    email_notifications: bool
    types: list[str] = Field(description="types whose email is now off")
