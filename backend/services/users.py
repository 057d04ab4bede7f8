"""Users are created on first sight: from token claims, or as recipients of a notification."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db import asyncpg_engine, dialect_insert, single
from ..models import User, utcnow
from .batching import GroupCommit

Claims = tuple[str, str | None, str | None]  # (user id, email, name) as a token carries them
# A connect's ask: its claims, whether they need writing, whether it wants the latest seq.
_Ask = tuple[Claims, bool, bool]


async def ensure_users(session: AsyncSession, user_ids: Iterable[str]) -> None:
    """Insert the users that do not exist yet; never touches existing rows."""
    now = utcnow()
    rows = [{"id": uid, "created_at": now, "updated_at": now} for uid in user_ids]
    if not rows:
        return
    insert = dialect_insert(session)
    await session.execute(insert(User).values(rows).on_conflict_do_nothing(index_elements=["id"]))


async def upsert_user(
    session: AsyncSession, *, user_id: str, email: str | None, name: str | None
) -> None:
    """Create the user, or refresh the email and name that a token or an admin supplied."""
    await upsert_users(session, {user_id: (email, name)})


# PostgreSQL: one fixed statement for any number of users (the Core form below is compiled
# again on every call, which a connect storm paid for on every batch).
PG_UPSERT_USERS = text(
    """
    INSERT INTO users (id, email, name, created_at, updated_at)
    SELECT r.id, r.email, r.name, CAST(:now AS TIMESTAMPTZ), CAST(:now AS TIMESTAMPTZ)
    FROM unnest(CAST(:ids AS TEXT[]), CAST(:emails AS TEXT[]), CAST(:names AS TEXT[]))
         AS r(id, email, name)
    ORDER BY r.id
    ON CONFLICT (id) DO UPDATE
        SET email = COALESCE(excluded.email, users.email),
            name = COALESCE(excluded.name, users.name),
            updated_at = excluded.updated_at
        WHERE excluded.email IS NOT NULL OR excluded.name IS NOT NULL
    """
)


async def upsert_users(
    session: AsyncSession, users: dict[str, tuple[str | None, str | None]]
) -> None:
    """Many `upsert_user`s in one statement: given email and name replace the stored ones,
    missing ones leave them; a user whose token carries neither is only created."""
    if not users:
        return
    now = utcnow()
    ids = sorted(users)  # id order: no deadlock between batches
    if session.get_bind().dialect.name == "postgresql":
        params = {
            "now": now,
            "ids": ids,
            "emails": [users[uid][0] for uid in ids],
            "names": [users[uid][1] for uid in ids],
        }
        await session.execute(PG_UPSERT_USERS, params)
        return
    rows = [
        {"id": uid, "email": users[uid][0], "name": users[uid][1], "created_at": now,
         "updated_at": now}
        for uid in ids
    ]  # fmt: skip
    await session.execute(SQLITE_UPSERT_USERS, rows)


def _sqlite_upsert_users() -> Any:
    """The same upsert in SQLite's dialect, built once (built per call it was compiled per call)."""
    table = User.__table__
    insert = sqlite_insert(User)
    return insert.on_conflict_do_update(
        index_elements=["id"],
        set_={
            "email": func.coalesce(insert.excluded.email, table.c.email),
            "name": func.coalesce(insert.excluded.name, table.c.name),
            "updated_at": insert.excluded.updated_at,
        },
        where=insert.excluded.email.is_not(None) | insert.excluded.name.is_not(None),
    )


SQLITE_UPSERT_USERS = _sqlite_upsert_users()

# The batch in one statement on asyncpg directly, outside a transaction (db.single, idempotent):
# the upsert above, then each wanted user's latest seq, from the upsert's own rows or else from
# the table. Through a session, in a transaction, the two were ≈ 7 % of a 19.5k-connection
# storm's server CPU (bench/README).
DIRECT_REMEMBER = """
    WITH up AS (
        INSERT INTO users (id, email, name, created_at, updated_at)
        SELECT r.id, r.email, r.name, $1::TIMESTAMPTZ, $1::TIMESTAMPTZ
        FROM unnest($2::TEXT[], $3::TEXT[], $4::TEXT[]) AS r(id, email, name)
        ORDER BY r.id
        ON CONFLICT (id) DO UPDATE
            SET email = COALESCE(excluded.email, users.email),
                name = COALESCE(excluded.name, users.name),
                updated_at = excluded.updated_at
            WHERE excluded.email IS NOT NULL OR excluded.name IS NOT NULL
        RETURNING id, last_seq
    )
    SELECT id, last_seq FROM up WHERE id = ANY($5::TEXT[])
    UNION ALL
    SELECT id, last_seq FROM users
    WHERE id = ANY($5::TEXT[]) AND id NOT IN (SELECT id FROM up)
"""


async def latest_seqs(session: AsyncSession, user_ids: Iterable[str]) -> dict[str, int]:
    """Each user's latest seq (a user with no row has none yet: 0)."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    rows = await session.execute(select(User.id, User.last_seq).where(User.id.in_(ids)))
    return {uid: int(seq or 0) for uid, seq in rows}


class UserDirectory:
    """Records the users that connect, with their token's email and name, so emails can reach
    them. Concurrent connects share one write (group commit: on PostgreSQL one statement, on
    SQLite one transaction), and a user already recorded with the same claims costs nothing: a
    reconnect storm writes nothing at all. A connect that needs the user's latest seq (the bus
    catch-up baseline) reads it in the same batch."""

    KNOWN_MAX = 100_000

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        # PostgreSQL through asyncpg: batches skip the session (db.single), as publishes do.
        self._direct = asyncpg_engine(sessionmaker)
        self._known: set[Claims] = set()
        self._group: GroupCommit[_Ask, int | None] = GroupCommit(self._write, max_batch=500)

    async def remember(
        self, user_id: str, email: str | None, name: str | None, *, latest_seq: bool = False
    ) -> int | None:
        """Record the user; with `latest_seq`, also answer the user's latest seq (None without)."""
        claims = (user_id, email, name)
        known = claims in self._known
        if known and not latest_seq:
            return None
        seq = await self._group.submit((claims, not known, latest_seq))
        if not known:
            if len(self._known) >= self.KNOWN_MAX:
                self._known.clear()
            self._known.add(claims)
        return seq

    async def _write(self, batch: list[_Ask]) -> list[int | None]:
        merged: dict[str, tuple[str | None, str | None]] = {}
        for (user_id, email, name), write, _ in batch:
            if write:
                old_email, old_name = merged.get(user_id, (None, None))
                merged[user_id] = (email or old_email, name or old_name)
        wanted = [claims[0] for claims, _, want in batch if want]
        if self._direct is not None:
            seqs = await single(
                self._direct, lambda raw: _remember_direct(raw, merged, wanted), idempotent=True
            )
            return [seqs.get(claims[0], 0) if want else None for claims, _, want in batch]
        async with self._sessionmaker.begin() as session:
            await upsert_users(session, merged)
            # After the upsert, in the same transaction: one more statement per batch, where
            # each connect used to open a transaction of its own for it.
            seqs = await latest_seqs(session, wanted)
        return [seqs.get(claims[0], 0) if want else None for claims, _, want in batch]


async def _remember_direct(
    raw: Any, users: dict[str, tuple[str | None, str | None]], wanted: list[str]
) -> dict[str, int]:
    """UserDirectory's batch on an asyncpg connection: `upsert_users`, then `latest_seqs`, in
    one statement (DIRECT_REMEMBER)."""
    ids = sorted(users)  # id order: no deadlock between batches
    rows = await raw.fetch(
        DIRECT_REMEMBER, utcnow(), ids, [users[uid][0] for uid in ids],
        [users[uid][1] for uid in ids], sorted(set(wanted)),
    )  # fmt: skip
    return {uid: int(seq or 0) for uid, seq in rows}
