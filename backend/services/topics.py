"""Topics: who may join or subscribe, and the persisted subscriptions publishing reads."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ..db import dialect_insert
from ..errors import Forbidden, Invalid
from ..models import TopicSubscription, utcnow
from ..security import TokenClaims
from .users import ensure_users

TOPIC_PREFIX = "topic:"
USER_PREFIX = "user:"


def authorize_topic(claims: TokenClaims, topic: str, public_topics: Iterable[str]) -> None:
    """A topic that is public, or that the token's `topics` claim names; nothing else."""
    if topic not in public_topics and topic not in claims.topics:
        raise Forbidden(f"topic {topic!r} is private and not in your token")


def authorize_room(claims: TokenClaims, room: str, public_topics: Iterable[str]) -> str:
    """Return the room a session may join, or raise: never another user's room."""
    if room.startswith(USER_PREFIX):
        if room != USER_PREFIX + claims.sub:
            raise Forbidden("you cannot join another user's room")
        return room
    if not room.startswith(TOPIC_PREFIX) or len(room) == len(TOPIC_PREFIX):
        raise Invalid("rooms are named topic:<name> (or your own user:<id>)")
    authorize_topic(claims, room[len(TOPIC_PREFIX) :], public_topics)
    return room


async def subscribe(
    *, sessionmaker: async_sessionmaker[AsyncSession], user_id: str, topic: str
) -> None:
    async with sessionmaker.begin() as session:
        await ensure_users(session, [user_id])
        statement = dialect_insert(session)(TopicSubscription).values(
            user_id=user_id, topic=topic, created_at=utcnow()
        )
        await session.execute(statement.on_conflict_do_nothing())


async def unsubscribe(
    *, sessionmaker: async_sessionmaker[AsyncSession], user_id: str, topic: str
) -> None:
    async with sessionmaker.begin() as session:
        await session.execute(
            delete(TopicSubscription).where(
                TopicSubscription.user_id == user_id, TopicSubscription.topic == topic
            )
        )


async def subscriptions(
    *, sessionmaker: async_sessionmaker[AsyncSession], user_id: str
) -> list[str]:
    async with sessionmaker() as session:
        rows = await session.scalars(
            select(TopicSubscription.topic)
            .where(TopicSubscription.user_id == user_id)
            .order_by(TopicSubscription.topic)
        )
        return list(rows)
