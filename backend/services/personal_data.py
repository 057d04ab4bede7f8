"""Personal data: one registry of every table that holds a user's rows, read by export and erase.

A table that stores something about a user gets one `PersonalTable` entry in `PERSONAL_DATA`
and is then exported by GET /api/v1/me/export and erased by DELETE /api/v1/me (and the admin's
DELETE /api/v1/admin/users/{id}); tests/security/test_personal_data.py fails for a table with a
`user_id` column that is missing here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy import Column, Row, Table, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .. import codec
from ..models import (
    Activity,
    EmailLog,
    Notification,
    NotificationPreference,
    TopicSubscription,
    User,
)
from ..schemas import isoformat
from .retention import purge_batches

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PersonalTable:
    """Where a user's rows are: `name` is their key in the export document."""

    name: str
    table: Table
    user_column: Column[Any]  # whose rows
    key_column: Column[Any]  # unique among one user's rows: the export's keyset order
    single: bool = False  # at most one row per user: exported as an object (or null)


def _entry(name: str, model: Any, user: str, key: str, *, single: bool = False) -> PersonalTable:
    table = cast(Table, model.__table__)
    return PersonalTable(name, table, table.c[user], table.c[key], single)


# Parents before children: erase runs this backwards (email logs before the notifications they
# point to, the user row last).
PERSONAL_DATA: tuple[PersonalTable, ...] = (
    _entry("user", User, "id", "id", single=True),
    _entry("preferences", NotificationPreference, "user_id", "id", single=True),
    _entry("subscriptions", TopicSubscription, "user_id", "topic"),
    _entry("notifications", Notification, "user_id", "id"),
    _entry("email_logs", EmailLog, "user_id", "id"),
    _entry("activity", Activity, "user_id", "id"),
)


def _plain(value: Any) -> Any:
    return isoformat(value) if isinstance(value, datetime) else value


def row_json(entry: PersonalTable, row: Row[Any]) -> dict[str, Any]:
    """Every stored column of the row, timestamps as on the wire."""
    mapping = row._mapping
    return {column.name: _plain(mapping[column]) for column in entry.table.c}


def _encode(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # what orjson refuses (an integer beyond 64 bits) the stdlib takes
        return codec.OrjsonModule.dumps(value).encode()


def _has_own_id(entry: PersonalTable) -> bool:
    """Rows with an id of their own (the bulky tables), which an erase deletes in batches."""
    primary = list(entry.table.primary_key.columns)
    return not entry.single and primary == [entry.key_column]


class PersonalData:
    """Export and erase, over `PERSONAL_DATA`."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, batch: int) -> None:
        self._sessionmaker = sessionmaker
        self._batch = batch

    async def export(self, *, user_id: str, now: datetime, page_size: int) -> AsyncIterator[bytes]:
        """The user's data as one JSON document, in chunks: each table read in keyset pages of
        `page_size` rows, one short session per page, so memory holds one page at a time."""
        # The first chunk comes after the first read: a database away fails before any byte.
        head = b'{"exported_at":' + _encode(isoformat(now)) + b',"user_id":' + _encode(user_id)
        for entry in PERSONAL_DATA:
            head += b',"' + entry.name.encode() + b'":'
            mine = select(entry.table).where(entry.user_column == user_id)
            if entry.single:
                async with self._sessionmaker() as session:
                    row = (await session.execute(mine.limit(1))).first()
                yield head + (b"null" if row is None else _encode(row_json(entry, row)))
                head = b""
                continue
            head += b"["
            after: Any = None
            flushed = False
            while True:
                page = mine if after is None else mine.where(entry.key_column > after)
                async with self._sessionmaker() as session:
                    rows = list(
                        await session.execute(page.order_by(entry.key_column).limit(page_size))
                    )
                if rows:
                    yield head + b",".join(_encode(row_json(entry, row)) for row in rows)
                    head, flushed = b",", True
                    after = rows[-1]._mapping[entry.key_column]
                if len(rows) < page_size:
                    break
            head = head + b"]" if not flushed else b"]"  # the list's end goes with what follows
        yield head + b"}"

    async def erase(self, *, user_id: str) -> dict[str, int]:
        """Delete every row of the user; how many of each kind (the log line says no more).

        First the bulky tables in batches of short transactions (a user with a million
        notifications holds no lock for long), then one transaction for whatever is left,
        which starts with a write on the user's row: a publish to the user either committed
        before it (its rows are deleted here) or waits for it and stores for a new user."""
        counts = {entry.name: 0 for entry in PERSONAL_DATA}
        for entry in reversed(PERSONAL_DATA):
            if _has_own_id(entry):
                counts[entry.name] += await purge_batches(
                    self._sessionmaker,
                    due=select(entry.key_column).where(entry.user_column == user_id),
                    id_column=entry.key_column,
                    batch=self._batch,
                )
        users = cast(Table, User.__table__)
        async with self._sessionmaker.begin() as session:
            await session.execute(
                update(users).where(users.c.id == user_id).values(last_seq=users.c.last_seq)
            )
            for entry in reversed(PERSONAL_DATA):
                result = await session.execute(
                    delete(entry.table).where(entry.user_column == user_id)
                )
                counts[entry.name] += int(getattr(result, "rowcount", 0) or 0)
        summary = ", ".join(f"{n} {name}" for name, n in counts.items())
        log.info("erased a user: %s", summary)  # counts only: no id, no address
        return counts
