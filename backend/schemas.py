"""The wire models: validated at the edge, and the source of the OpenAPI document."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PrivateAttr,
    StringConstraints,
    model_validator,
)


@functools.lru_cache(maxsize=1024)  # a batch of rows shares one created_at
def isoformat(value: datetime | None) -> str | None:
    """A timestamp on the wire (REST, Socket.IO, email logs): UTC, microseconds, a Z."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


DigestFrequency = Literal["immediate", "hourly", "daily", "weekly", "never"]
# Surrounding whitespace is dropped, so an id needs one character that is not whitespace (those
# pydantic strips, spelled out: \s differs between the regex dialects that read the document).
NOT_ONLY_SPACE = "[^\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\x00]"
# No NUL character in any text we store: PostgreSQL's text cannot hold one (SQLite could, and
# the two databases must accept the same input), so it is refused at the edge with a 422.
NO_NUL = "^[^\x00]*$"
UserId = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=255,
        strip_whitespace=True,
        pattern=f"^[^\x00]*{NOT_ONLY_SPACE}[^\x00]*$",
    ),
]
Text = Annotated[str, StringConstraints(pattern=NO_NUL)]
TypeName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")
]
TopicName = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")
]
Url = Annotated[str, StringConstraints(max_length=2048, pattern="^(https?://|/)[^\x00]*$")]


def _integral(value: object) -> object:
    """JSON Schema counts 5.0 as an integer; bodies are validated strictly (no `true`, no
    `"5"`), so an integral float becomes its int first."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Last in an int's Annotated (after its bounds, which the JSON schema would lose otherwise).
INTEGRAL = BeforeValidator(_integral)


@functools.cache
def known_timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def _known_timezone(value: str) -> str:
    if value not in known_timezones():
        raise ValueError(f"unknown timezone {value!r}")
    return value


def _timezone_enum(schema: dict[str, Any]) -> None:
    schema["enum"] = sorted(known_timezones())


TimezoneName = Annotated[
    str, AfterValidator(_known_timezone), Field(json_schema_extra=_timezone_enum)
]

# The largest BIGINT: no id, seq or cursor past it can name a row, and the drivers refuse it
# (asyncpg and sqlite3 raise OverflowError), so it is refused here, where it is a 422.
MAX_ID = 2**63 - 1
RowId = Annotated[int, Field(ge=1, le=MAX_ID), INTEGRAL]
Seq = Annotated[int, Field(ge=0, le=MAX_ID), INTEGRAL]


def _bigint(value: str) -> str:
    if int(value) > MAX_ID:
        raise ValueError(f"must be at most {MAX_ID}")
    return value


Cursor = Annotated[
    str,
    StringConstraints(pattern=r"^[1-9][0-9]{0,18}$"),
    AfterValidator(_bigint),
    Field(description=f"an id from next_cursor: 1 to {MAX_ID}"),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def exactly_one(*names: str) -> ConfigDict:
    """Say in the JSON schema what a model validator enforces: one of these fields, non-null."""
    branches: list[JsonValue] = [
        {"required": [name], "properties": {name: {"not": {"type": "null"}}}} for name in names
    ]
    return ConfigDict(extra="forbid", json_schema_extra={"oneOf": branches})


_NOT_NULL: dict[str, JsonValue] = {"not": {"type": "null"}}
# Content: a title (and body), or a stored template and its variables; never both.
_CONTENT: list[JsonValue] = [
    {
        "required": ["title"],
        "properties": {"title": _NOT_NULL},
        "not": {"anyOf": [{"required": ["template"]}, {"required": ["variables"]}]},
    },
    {
        "required": ["template"],
        "properties": {"template": _NOT_NULL},
        "not": {"anyOf": [{"required": ["title"]}, {"required": ["body"]}]},
    },
]


Title = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=NO_NUL)]


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """A template's email parts as rendered at publish (None: that part falls back to the
    layouts). Stored with each queued email, so a later template edit changes no email."""

    subject: str | None = None
    text: str | None = None
    html: str | None = None

    def as_payload(self) -> dict[str, str]:
        return {k: v for k, v in (("subject", self.subject), ("text", self.text),
                                  ("html", self.html)) if v is not None}  # fmt: skip


class NotificationCreate(Strict):
    """A publish request: user_ids or topic, not both; title (and body) or a template."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": exactly_one("user_ids", "topic")["json_schema_extra"]["oneOf"],  # type: ignore[index,call-overload]
            "allOf": [{"oneOf": _CONTENT}],
        },
    )
    user_ids: list[UserId] | None = Field(default=None, min_length=1, max_length=1000)
    topic: TopicName | None = None
    type: TypeName
    title: Title | None = None
    body: Annotated[str, StringConstraints(max_length=10_000, pattern=NO_NUL)] = ""
    template: TypeName | None = Field(
        default=None, description="a stored template (PUT /admin/templates/{name}) instead of title"
    )
    variables: dict[str, Any] | None = Field(
        default=None, description="the template's variables; a missing one is a 422 naming it"
    )
    icon: Url | None = None
    action_url: Url | None = None
    data: dict[str, Any] = Field(
        default_factory=dict,
        description="any JSON object: at most MAX_DATA_BYTES (default 16384) bytes encoded, in a "
        "body at most MAX_JSON_DEPTH (default 32) levels deep",
    )
    # Set by Templates.apply, never by a client: the template's rendered email parts.
    _email: RenderedEmail | None = PrivateAttr(default=None)

    @property
    def rendered_email(self) -> RenderedEmail | None:
        return self._email

    def with_email(self, email: RenderedEmail | None) -> NotificationCreate:
        self._email = email
        return self

    @model_validator(mode="after")
    def _one_audience(self) -> NotificationCreate:
        if (self.user_ids is None) == (self.topic is None):
            raise ValueError("give exactly one of user_ids or topic")
        given = self.model_fields_set
        if self.template is not None:
            if {"title", "body"} & given:
                raise ValueError("give title and body, or a template, not both")
        elif self.title is None or {"template", "variables"} & given:
            raise ValueError("give exactly one of title or template")
        return self


class NotificationOut(BaseModel):
    id: int
    seq: int
    type: str
    title: str
    body: str
    icon: str | None
    action_url: str | None
    data: dict[str, Any]
    created_at: str = Field(description="ISO 8601, UTC")
    read_at: str | None
    delivered_at: str | None = Field(
        description="when a device of the user first acknowledged it (a receipt), UTC"
    )


class NotificationList(BaseModel):
    notifications: list[NotificationOut]
    next_cursor: str | None = None


class ListQuery(Strict):
    unread: bool = False
    limit: int = Field(default=20, ge=1, le=100)
    cursor: Cursor | None = None


class UnreadCount(BaseModel):
    count: int


class MarkRead(Strict):
    """`{"ids": [...]}` or `{"id": n}`."""

    model_config = exactly_one("ids", "id")
    ids: list[RowId] | None = Field(default=None, max_length=1000)
    id: RowId | None = None

    @model_validator(mode="after")
    def _one_form(self) -> MarkRead:
        if (self.ids is None) == (self.id is None):
            raise ValueError("give exactly one of ids or id")
        return self

    def all_ids(self) -> list[int]:
        return self.ids if self.ids is not None else [self.id or 0]


class TypeSetting(Strict):
    email: DigestFrequency | None = None
    in_app: bool | None = None
    email_if_unread_after: Annotated[int, Field(ge=0, le=10080), INTEGRAL] | None = None
    email_unless: Literal["read", "delivered"] | None = Field(
        default=None,
        description="with email_if_unread_after: skip the held email if by then the "
        "notification was read (the default), or delivered to a device (or read)",
    )


class Preferences(BaseModel):
    email_notifications: bool = True
    in_app_notifications: bool = True
    digest_frequency: DigestFrequency = "immediate"
    type_settings: dict[TypeName, TypeSetting] = Field(default_factory=dict)
    timezone: str = "UTC"
    digest_hour: int = Field(default=9, ge=0, le=23)


class PreferencesUpdate(Strict):
    """Any subset of the preferences; what is absent stays as it was."""

    email_notifications: bool | None = None
    in_app_notifications: bool | None = None
    digest_frequency: DigestFrequency | None = None
    type_settings: dict[TypeName, TypeSetting] | None = None
    timezone: TimezoneName | None = None
    digest_hour: Annotated[int, Field(ge=0, le=23), INTEGRAL] | None = None


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class DevTokenRequest(Strict):
    sub: Annotated[
        str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@\-]+$")
    ]
    name: Annotated[str, StringConstraints(max_length=255, pattern=NO_NUL)] | None = None


class DevToken(BaseModel):
    token: str
    expires_in: int


class DevConfig(BaseModel):
    dev_sign_in: bool


# Printable ASCII without surrounding spaces: what survives a header unchanged.
IdempotencyKey = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[!-~]([ -~]*[!-~])?$")
]


class PublishHeaders(BaseModel):
    """Retries with the same key return the first answer instead of storing again."""

    idempotency_key: IdempotencyKey | None = Field(default=None, alias="Idempotency-Key")


class BatchItem(NotificationCreate):
    """One notification of a batch, with its own optional idempotency key."""

    idempotency_key: IdempotencyKey | None = Field(
        default=None,
        description="like the Idempotency-Key header of a single publish, and shared with it: "
        "a retry of this item returns its first result",
    )

    def request(self) -> NotificationCreate:
        """The item as a single publish request (so its hash is the single publish's); built
        from the validated fields, not validated again."""
        fields = {name: getattr(self, name) for name in NotificationCreate.model_fields}
        return NotificationCreate.model_construct(**fields)


class BatchCreate(Strict):
    """Up to MAX_BATCH_ITEMS notifications, stored in one transaction: all or none."""

    items: list[BatchItem] = Field(
        min_length=1,
        description="at most MAX_BATCH_ITEMS (default 1000), with at most MAX_BATCH_RECIPIENTS "
        "(default 10000) recipients in all; idempotency keys unique within the batch",
    )


class BatchResult(BaseModel):
    status: Literal["created", "replayed"] = Field(
        description="created: stored now; replayed: its idempotency key was used before with "
        "the same item, and this is that first result"
    )
    notifications: list[NotificationOut]


class BatchAnswer(BaseModel):
    results: list[BatchResult] = Field(description="one per item, in the items' order")


# -- Socket.IO event payloads ------------------------------------------------------------------

RoomName = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class RoomPayload(Strict):
    room: RoomName


class MarkReadPayload(Strict):
    ids: list[RowId] = Field(min_length=1, max_length=1000)


class SyncPayload(Strict):
    after_seq: Seq


# The hard bound of RECEIPT_MAX_SEQS (the setting, at most this, is checked by the handlers).
MAX_RECEIPT_SEQS = 1000


class Receipt(Strict):
    """`received {"seqs": [...]}`: these of the caller's notifications reached this device."""

    seqs: list[Seq] = Field(
        min_length=1,
        max_length=MAX_RECEIPT_SEQS,
        description="seqs of the caller's notifications; at most RECEIPT_MAX_SEQS (default 100)",
    )


class ReceiptOut(BaseModel):
    delivered: list[int] = Field(
        description="ids of the notifications this receipt delivered first"
    )


class MessagePayload(Strict):
    room: RoomName | None = None
    data: Any = None
