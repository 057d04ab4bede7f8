"""Writing notifications: one transaction for one request or a batch of them.

Per-user `seq` comes from one upsert on `users`: it creates unknown users and adds the number
of new notifications to `last_seq` in the same statement, taking each user's row lock (in id
order, so two batches never deadlock) until the commit. So a user's seq values follow commit
order, which durable recovery relies on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, column, insert, select, text
from sqlalchemy import table as table_clause
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import TableClause

from ..codec import OrjsonModule, loads_stored
from ..errors import Invalid
from ..models import Notification, TopicSubscription, User, UTCDateTime, utcnow
from ..schemas import NotificationCreate, Preferences, RenderedEmail
from . import preferences as preference_service


@dataclass(slots=True)
class StoredNotification:
    """A row just inserted, with the attributes of a `Notification` that readers use; built
    from the values we wrote and the ids the database gave, without an ORM object each."""

    id: int
    user_id: str
    seq: int
    type: str
    title: str
    body: str
    icon: str | None
    action_url: str | None
    data: dict[str, Any]
    in_app: bool
    created_at: datetime
    publisher: str | None = None
    publisher_kind: str | None = None
    read_at: datetime | None = None
    delivered_at: datetime | None = None
    email: RenderedEmail | None = None  # a template's email parts (queued, not a column)


AfterInsert = Callable[
    [AsyncSession, Sequence[StoredNotification], dict[str, Preferences], dict[str, str | None]],
    Awaitable[Any],
]

COLUMNS = (
    "user_id", "seq", "type", "title", "body", "icon", "action_url", "data", "in_app", "publisher",
    "publisher_kind",
)  # fmt: skip
SHARED = ("type", "title", "body", "icon", "action_url")  # the same for a request's recipients

# PostgreSQL: one fixed statement whatever the row count (prepared once per connection). What
# differs per row (user, seq, in_app) goes as arrays of rows; what a request shares with all its
# recipients (type, title, body, ...) as arrays of requests, joined by the request's number.
# `WITH ORDINALITY` + ORDER BY keeps the insert in input order.
PG_INSERT = text(
    """
    WITH inserted AS (
        INSERT INTO notifications
            (user_id, seq, type, title, body, icon, action_url, data, in_app, publisher,
             publisher_kind, read, created_at, updated_at)
        SELECT r.user_id, r.seq, q.type, q.title, q.body, q.icon, q.action_url,
               CAST(q.data AS JSON), r.in_app, q.publisher, q.publisher_kind, false,
               CAST(:now AS TIMESTAMPTZ), CAST(:now AS TIMESTAMPTZ)
        FROM unnest(CAST(:user_id AS TEXT[]), CAST(:seq AS BIGINT[]),
                    CAST(:in_app AS BOOLEAN[]), CAST(:request AS BIGINT[]))
             WITH ORDINALITY AS r(user_id, seq, in_app, request, n)
        JOIN unnest(CAST(:type AS TEXT[]), CAST(:title AS TEXT[]), CAST(:body AS TEXT[]),
                    CAST(:icon AS TEXT[]), CAST(:action_url AS TEXT[]), CAST(:data AS TEXT[]),
                    CAST(:publisher AS TEXT[]), CAST(:publisher_kind AS TEXT[]))
             WITH ORDINALITY
             AS q(type, title, body, icon, action_url, data, publisher, publisher_kind, request)
          ON q.request = r.request
        ORDER BY r.n
        RETURNING id, user_id, seq
    )
    SELECT array_agg(id), array_agg(user_id), array_agg(seq) FROM inserted
    """
)
PG_ALLOCATE = text(
    """
    INSERT INTO users (id, last_seq, unread_count, created_at, updated_at)
    SELECT r.id, r.wanted, r.unread, CAST(:now AS TIMESTAMPTZ), CAST(:now AS TIMESTAMPTZ)
    FROM unnest(CAST(:ids AS TEXT[]), CAST(:wanted AS BIGINT[]), CAST(:unread AS BIGINT[]))
         AS r(id, wanted, unread)
    ORDER BY r.id
    ON CONFLICT (id) DO UPDATE
        SET last_seq = users.last_seq + excluded.last_seq,
            unread_count = users.unread_count + excluded.unread_count,
            updated_at = excluded.updated_at
    RETURNING id, last_seq, unread_count, email
    """
)


def _untyped(table: Any) -> TableClause:
    """The table's name and columns without their types: SQLAlchemy then runs no bind processor
    on each value of each row (a UTC datetime, JSON and boolean per column and row were about a
    third of the CPU of a publish to 1,000 users on SQLite); the caller passes values already
    in the form SQLite stores (`sqlite_values`)."""
    return table_clause(table.name, *(column(c.name) for c in table.columns))


def _sqlite_statements() -> tuple[Any, Any]:
    """SQLite's forms of the allocate upsert and the insert, built once (built per call, they
    were compiled per call).

    Neither asks for RETURNING rows in parameter order: SQLite cannot promise the order of a
    multi-row INSERT's RETURNING, so SQLAlchemy would send one statement per row (a round trip
    to aiosqlite's thread each: 1,000 recipients cost ~240 ms). Unordered, the rows go as a
    few multi-row INSERTs, and the returned keys (the user id; the unique (user_id, seq)) say
    which row is which."""
    users = _untyped(User.__table__)
    upsert = sqlite_insert(users)
    allocate = upsert.on_conflict_do_update(
        index_elements=["id"],
        set_={
            "last_seq": users.c.last_seq + upsert.excluded.last_seq,
            "unread_count": users.c.unread_count + upsert.excluded.unread_count,
            "updated_at": upsert.excluded.updated_at,
        },
    ).returning(
        users.c.id,
        users.c.last_seq,
        users.c.unread_count,
        users.c.email,
    )
    notifications = _untyped(Notification.__table__)
    rows = insert(notifications).returning(
        notifications.c.id, notifications.c.user_id, notifications.c.seq
    )
    return allocate, rows


@dataclass(frozen=True, slots=True)
class SqliteValues:
    """Converters to what SQLite stores, taken from the dialect's own types (so the stored text
    is what the typed statements would write), applied once per value that requests share."""

    stamp: Callable[[datetime], Any]
    json: Callable[[Any], Any]

    @classmethod
    def of(cls, dialect: Any) -> SqliteValues:
        stamp = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        json = JSON().dialect_impl(dialect).bind_processor(dialect)
        return cls(stamp or _same, json or _same)


def _same(value: Any) -> Any:
    return value


SQLITE_ALLOCATE, SQLITE_INSERT = _sqlite_statements()


@dataclass(frozen=True, slots=True)
class Recipient:
    """What allocating gives back per user: the first reserved seq, the unread count with the
    new notifications, and the email address on record."""

    first_seq: int
    unread: int
    email: str | None


async def recipients(session: AsyncSession, request: NotificationCreate) -> list[str]:
    """The request's users, each once, or the topic's subscribers."""
    if request.topic is None:
        return list(dict.fromkeys(request.user_ids or ()))
    rows = await session.scalars(
        select(TopicSubscription.user_id)
        .where(TopicSubscription.topic == request.topic)
        .order_by(TopicSubscription.user_id)
    )
    return list(rows)


async def allocate(
    session: AsyncSession, wanted: Counter[str], unread: Counter[str]
) -> dict[str, Recipient]:
    """Upsert the users, reserve `wanted[user]` seqs and add `unread[user]` to the unread count
    of each, in one statement that takes the users' row locks in id order."""
    now = utcnow()
    ids = sorted(wanted)
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        params = {
            "now": now,
            "ids": ids,
            "wanted": [wanted[uid] for uid in ids],
            "unread": [unread[uid] for uid in ids],
        }
        result = await connection.execute(PG_ALLOCATE, params)
    else:
        stamp = SqliteValues.of(connection.dialect).stamp(now)
        rows = [
            {
                "id": uid,
                "last_seq": wanted[uid],
                "unread_count": unread[uid],
                "created_at": stamp,
                "updated_at": stamp,
            }
            for uid in ids
        ]
        result = await connection.execute(SQLITE_ALLOCATE, rows)
    return {
        uid: Recipient(last_seq - wanted[uid] + 1, count, email)
        for uid, last_seq, count, email in result.all()
    }


async def insert_rows(
    session: AsyncSession,
    requests: Sequence[NotificationCreate],
    rows: list[StoredNotification],
    request_of: list[int],
    now: datetime,
    publishers: Sequence[str | None],
    kinds: Sequence[str | None],
) -> None:
    """Insert the rows (row i from request `request_of[i]`, counted from 1) in one statement and
    fill in their ids."""
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        params = _pg_insert_params(requests, rows, request_of, now, publishers, kinds)
        result = await connection.execute(PG_INSERT, params)
        row_ids, user_ids, seqs = result.one()
        ids = dict(zip(zip(user_ids, seqs, strict=True), row_ids, strict=True))
        for row in rows:
            row.id = ids[(row.user_id, row.seq)]
        return
    convert = SqliteValues.of(connection.dialect)
    stamp = convert.stamp(now)
    data = [convert.json(request.data) for request in requests]  # once per request
    values = [
        {
            **{name: getattr(row, name) for name in COLUMNS},
            "data": data[number - 1],
            "read": False,
            "created_at": stamp,
            "updated_at": stamp,
        }
        for row, number in zip(rows, request_of, strict=True)
    ]
    result = await connection.execute(SQLITE_INSERT, values)
    ids = {(user_id, seq): row_id for row_id, user_id, seq in result.all()}
    for row in rows:
        row.id = ids[(row.user_id, row.seq)]


def _pg_insert_params(
    requests: Sequence[NotificationCreate],
    rows: list[StoredNotification],
    request_of: list[int],
    now: datetime,
    publishers: Sequence[str | None],
    kinds: Sequence[str | None],
) -> dict[str, Any]:
    """PG_INSERT's parameters (the session's path and the direct one send the same)."""
    params: dict[str, Any] = {
        name: [getattr(request, name) for request in requests] for name in SHARED
    }
    params["data"] = [OrjsonModule.dumps(request.data) for request in requests]
    params["publisher"] = list(publishers)
    params["publisher_kind"] = list(kinds)
    params["user_id"] = [row.user_id for row in rows]
    params["seq"] = [row.seq for row in rows]
    params["in_app"] = [row.in_app for row in rows]
    params["request"] = request_of
    params["now"] = now
    return params


async def store(
    session: AsyncSession,
    requests: Sequence[NotificationCreate],
    after_insert: AfterInsert,
    publishers: Sequence[str | None],
    kinds: Sequence[str | None],
    *,
    max_recipients: int | None = None,
) -> tuple[list[list[StoredNotification]], dict[str, int]]:
    """Insert one notification per recipient of each request (`publishers[i]` published
    `requests[i]`, by way of `kinds[i]`: token, api_key, event, channel or stream). Returns the
    rows per request and each recipient's unread count after them. More than `max_recipients`
    in all (topics resolved) is `Invalid`, before anything is written."""
    audiences = [await recipients(session, request) for request in requests]
    wanted = _wanted(audiences, max_recipients)
    if not wanted:
        return [[] for _ in requests], {}
    prefs = await preference_service.load_many(session, wanted)
    in_app, unread = _in_app(requests, audiences, prefs)
    allocated = await allocate(session, wanted, unread)
    now = utcnow()
    rows = _rows(requests, audiences, in_app, publishers, kinds, allocated, now)
    request_of = _request_numbers(audiences)
    await insert_rows(session, requests, rows, request_of, now, publishers, kinds)
    emails = {uid: recipient.email for uid, recipient in allocated.items()}
    await after_insert(session, rows, prefs, emails)
    return _grouped(rows, audiences), {uid: r.unread for uid, r in allocated.items()}


def _wanted(audiences: list[list[str]], max_recipients: int | None) -> Counter[str]:
    total = sum(len(audience) for audience in audiences)
    if max_recipients is not None and total > max_recipients:
        message = f"{total} recipients in all; the limit is {max_recipients}"
        raise Invalid(message, details=[{"loc": ["items"], "msg": message, "type": "too_long"}])
    return Counter(uid for audience in audiences for uid in audience)


def _in_app(
    requests: Sequence[NotificationCreate],
    audiences: list[list[str]],
    prefs: dict[str, Preferences],
) -> tuple[list[list[bool]], Counter[str]]:
    in_app = [
        [preference_service.in_app_enabled(prefs[uid], request.type) for uid in audience]
        for request, audience in zip(requests, audiences, strict=True)
    ]
    unread = Counter(
        uid
        for audience, shown in zip(audiences, in_app, strict=True)
        for uid, visible in zip(audience, shown, strict=True)
        if visible
    )
    return in_app, unread


def _rows(
    requests: Sequence[NotificationCreate],
    audiences: list[list[str]],
    in_app: list[list[bool]],
    publishers: Sequence[str | None],
    kinds: Sequence[str | None],
    allocated: dict[str, Recipient],
    now: datetime,
) -> list[StoredNotification]:
    """One row per recipient of each request, in order, with its reserved seq."""
    next_seq = {uid: recipient.first_seq for uid, recipient in allocated.items()}
    rows: list[StoredNotification] = []
    for request, audience, shown, publisher, kind in zip(
        requests, audiences, in_app, publishers, kinds, strict=True
    ):
        # NotificationService renders a template into title and body before storing.
        assert request.title is not None, "a template request must be rendered first"
        # Read once per request, not per recipient (the email is a pydantic private attribute,
        # whose every read goes through __getattr__).
        type_, title, body, icon = request.type, request.title, request.body, request.icon
        action_url, data, email = request.action_url, request.data, request.rendered_email
        for uid, visible in zip(audience, shown, strict=True):
            rows.append(
                StoredNotification(
                    0, uid, next_seq[uid], type_, title, body, icon, action_url, data, visible,
                    now, publisher, kind, email=email,
                )
            )  # fmt: skip
            next_seq[uid] += 1
    return rows


def _request_numbers(audiences: list[list[str]]) -> list[int]:
    """For each row, in order, the number (from 1) of the request it comes from."""
    return [number for number, audience in enumerate(audiences, start=1) for _ in audience]


def _grouped(
    rows: list[StoredNotification], audiences: list[list[str]]
) -> list[list[StoredNotification]]:
    grouped: list[list[StoredNotification]] = []
    start = 0
    for audience in audiences:
        grouped.append(rows[start : start + len(audience)])
        start += len(audience)
    return grouped


# -- PostgreSQL without SQLAlchemy per statement (db.direct): positional statements --


DIRECT_TOPIC = "SELECT user_id FROM topic_subscriptions WHERE topic = $1 ORDER BY user_id"
PREFERENCE_FIELDS = (
    "email_notifications", "in_app_notifications", "digest_frequency", "type_settings",
    "timezone", "digest_hour",
)  # fmt: skip
# The whole publish in one statement (one round trip between BEGIN and COMMIT): the
# preferences read, whether each row is shown in-app (`preferences.in_app_enabled` in SQL: a
# per-type setting wins over the global switch; checked against Python's on every row), the
# users upsert that reserves seqs and adds the unread counts (PG_ALLOCATE's, taking the row
# locks in id order), and the insert (PG_INSERT's, a user's seqs in input order). Each row's
# rank among its user's rows (`k`) and its user's row count (`wanted`) come from Python.
#
# The answer is three kinds of rows, not one row per notification joined to its user's: `n` a
# stored notification, `u` a user's counts and address, `p` a user's preferences. The planner
# cannot count a CTE's rows (it guessed 50 users and 1 notification), and joined the two with a
# nested loop: for 1,000 recipients, a million comparisons (≈ 170 ms against ≈ 20 ms).
DIRECT_PUBLISH = """
    WITH r AS (
        SELECT user_id, request, k, wanted, n
        FROM unnest($2::TEXT[], $3::BIGINT[], $12::BIGINT[], $13::BIGINT[]) WITH ORDINALITY
             AS r(user_id, request, k, wanted, n)
    ), q AS (
        SELECT *
        FROM unnest($4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[],
                    $10::TEXT[], $11::TEXT[]) WITH ORDINALITY
             AS q(type, title, body, icon, action_url, data, publisher, publisher_kind, request)
    ), p AS (
        SELECT user_id, email_notifications, in_app_notifications, digest_frequency,
               type_settings, timezone, digest_hour
        FROM notification_preferences WHERE user_id = ANY($2::TEXT[])
    ), v AS (
        SELECT r.n, r.user_id, r.k, r.wanted, q.type, q.title, q.body, q.icon, q.action_url,
               q.data, q.publisher, q.publisher_kind,
               COALESCE(CAST(CAST(p.type_settings AS JSONB) -> q.type ->> 'in_app' AS BOOLEAN),
                        p.in_app_notifications, TRUE) AS in_app
        FROM r JOIN q ON q.request = r.request LEFT JOIN p ON p.user_id = r.user_id
    ), a AS (
        INSERT INTO users (id, last_seq, unread_count, created_at, updated_at)
        SELECT user_id, max(wanted), count(*) FILTER (WHERE in_app), $1::TIMESTAMPTZ,
               $1::TIMESTAMPTZ
        FROM v GROUP BY user_id ORDER BY user_id
        ON CONFLICT (id) DO UPDATE
            SET last_seq = users.last_seq + excluded.last_seq,
                unread_count = users.unread_count + excluded.unread_count,
                updated_at = excluded.updated_at
        RETURNING id, last_seq, unread_count, email
    ), i AS (
        INSERT INTO notifications
            (user_id, seq, type, title, body, icon, action_url, data, in_app, publisher,
             publisher_kind, read, created_at, updated_at)
        SELECT v.user_id, a.last_seq - v.wanted + v.k, v.type, v.title, v.body, v.icon,
               v.action_url, CAST(v.data AS JSON), v.in_app, v.publisher, v.publisher_kind,
               false, $1::TIMESTAMPTZ, $1::TIMESTAMPTZ
        FROM v JOIN a ON a.id = v.user_id
        ORDER BY v.n
        RETURNING id, user_id, seq, in_app
    )
    SELECT 'n' AS kind, user_id, id, seq, in_app, NULL::BIGINT AS last_seq,
           NULL::BIGINT AS unread_count, NULL::TEXT AS email,
           NULL::BOOLEAN AS email_notifications, NULL::BOOLEAN AS in_app_notifications,
           NULL::TEXT AS digest_frequency, NULL::TEXT AS type_settings, NULL::TEXT AS timezone,
           NULL::INTEGER AS digest_hour
    FROM i
    UNION ALL
    SELECT 'u', id, NULL, NULL, NULL, last_seq, unread_count, email, NULL, NULL, NULL, NULL,
           NULL, NULL
    FROM a
    UNION ALL
    SELECT 'p', user_id, NULL, NULL, NULL, NULL, NULL, NULL, email_notifications,
           in_app_notifications, digest_frequency, CAST(type_settings AS TEXT), timezone,
           digest_hour
    FROM p
"""


EMAIL_COLUMNS = (
    "user_id", "notification_id", "kind", "recipient", "subject", "status", "attempts",
    "next_attempt_at", "payload", "created_at", "updated_at",
)  # fmt: skip
DIRECT_EMAILS = (
    f"INSERT INTO email_logs ({', '.join(EMAIL_COLUMNS)}) VALUES "
    "($1, $2, $3, $4, $5, $6, $7, $8, CAST($9 AS JSON), $10, $11)"
)

EmailValues = Callable[
    [Sequence[StoredNotification], dict[str, Preferences], dict[str, str | None]],
    list[dict[str, Any]],
]


@dataclass(slots=True)
class _PreferenceRow:
    email_notifications: bool
    in_app_notifications: bool
    digest_frequency: str
    type_settings: Any
    timezone: str
    digest_hour: int


async def store_direct(
    connection: Any,
    requests: Sequence[NotificationCreate],
    email_values: EmailValues,
    publishers: Sequence[str | None],
    kinds: Sequence[str | None],
    *,
    max_recipients: int | None = None,
) -> tuple[list[list[StoredNotification]], dict[str, int]]:
    """`store` on an asyncpg connection inside a transaction (PostgreSQL's publish hot path):
    the same rows, counts and locks, without SQLAlchemy on each statement, in one statement
    (DIRECT_PUBLISH)."""
    audiences: list[list[str]] = []
    for request in requests:
        if request.topic is None:
            audiences.append(list(dict.fromkeys(request.user_ids or ())))
        else:
            found = await connection.fetch(DIRECT_TOPIC, request.topic)
            audiences.append([record[0] for record in found])
    wanted = _wanted(audiences, max_recipients)
    if not wanted:
        return [[] for _ in requests], {}
    user_ids = [uid for audience in audiences for uid in audience]
    seen: Counter[str] = Counter()
    ranks = []  # each row's rank among its user's rows, from 1
    for uid in user_ids:
        seen[uid] += 1
        ranks.append(seen[uid])
    now = utcnow()
    found = await connection.fetch(
        DIRECT_PUBLISH,
        now,
        user_ids,
        _request_numbers(audiences),
        *([getattr(request, name) for request in requests] for name in SHARED),
        [OrjsonModule.dumps(request.data) for request in requests],
        list(publishers),
        list(kinds),
        ranks,
        [wanted[uid] for uid in user_ids],
    )
    default = Preferences()  # shared by the users without a row: read it, never change it
    prefs: dict[str, Preferences] = {}
    allocated: dict[str, Recipient] = {}
    stored: dict[tuple[str, int], tuple[int, bool]] = {}
    for record in found:
        kind, uid = record[0], record[1]
        if kind == "n":
            stored[(uid, record["seq"])] = (record["id"], record["in_app"])
        elif kind == "u":
            allocated[uid] = Recipient(
                record["last_seq"] - wanted[uid] + 1, record["unread_count"], record["email"]
            )
        else:
            values = {name: record[name] for name in PREFERENCE_FIELDS}
            if values["type_settings"] is not None:  # JSON, as text: one type for all kinds
                values["type_settings"] = loads_stored(values["type_settings"])
            prefs[uid] = preference_service.to_preferences(_PreferenceRow(**values))
    for uid in allocated:
        if uid not in prefs:
            prefs[uid] = default
    in_app, _unread = _in_app(requests, audiences, prefs)
    rows = _rows(requests, audiences, in_app, publishers, kinds, allocated, now)
    if len(stored) != len(rows):
        raise RuntimeError(f"publish stored {len(stored)} rows for {len(rows)}")
    for row in rows:
        row.id, shown = stored[(row.user_id, row.seq)]
        if shown != row.in_app:  # SQL's in_app_enabled must be Python's: never store a guess
            raise RuntimeError(f"in_app of {row.user_id} for {row.type!r}: {shown} in SQL")
    emails = {uid: recipient.email for uid, recipient in allocated.items()}
    queued = email_values(rows, prefs, emails)
    if queued:
        await connection.executemany(
            DIRECT_EMAILS,
            [
                tuple(
                    OrjsonModule.dumps(value[name]) if name == "payload" else value[name]
                    for name in EMAIL_COLUMNS
                )
                for value in queued
            ],
        )
    return _grouped(rows, audiences), {uid: r.unread for uid, r in allocated.items()}
