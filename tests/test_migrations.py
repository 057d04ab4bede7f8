"""The same Alembic migrations build both databases, go down again, and match the models."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from backend import migrate
from backend.config import Settings
from backend.db import create_engine
from backend.models import Base

TABLES = {
    "users",
    "notifications",
    "notification_preferences",
    "email_logs",
    "topic_subscriptions",
    "idempotency_keys",
}


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "render_as_batch": True}
    )
    return compare_metadata(context, Base.metadata)


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


async def test_migrations_upgrade_match_the_models_and_downgrade(settings: Settings) -> None:
    engine = create_engine(settings)
    try:
        await migrate.upgrade(engine)
        async with engine.connect() as connection:
            assert await connection.run_sync(_tables) == TABLES
            assert await connection.run_sync(_diff) == []
            indexes = await connection.run_sync(
                lambda c: {i["name"] for i in inspect(c).get_indexes("notifications")}
            )
            assert "ix_notifications_user_id_read_at" in indexes
        await migrate.downgrade(engine, "base")
        async with engine.connect() as connection:
            assert await connection.run_sync(_tables) == set()
        await migrate.upgrade(engine)
        async with engine.connect() as connection:
            assert await connection.run_sync(_tables) == TABLES
    finally:
        await engine.dispose()
