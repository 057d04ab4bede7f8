"""Users are created on first sight: from token claims, or as recipients of a notification."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from ..db import dialect_insert
from ..models import User, utcnow


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
    now = utcnow()
    insert = dialect_insert(session)
    statement = insert(User).values(
        id=user_id, email=email, name=name, created_at=now, updated_at=now
    )
    changes = {"updated_at": now}
    if email is not None:
        changes["email"] = email
    if name is not None:
        changes["name"] = name
    if len(changes) == 1:
        await session.execute(statement.on_conflict_do_nothing(index_elements=["id"]))
        return
    await session.execute(statement.on_conflict_do_update(index_elements=["id"], set_=changes))
