"""The same Alembic migrations build both databases, go down again, and match the models."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from backend import migrate
from backend.config import Settings
from backend.db import create_engine
from backend.models import Base, utcnow

TABLES = {
    "users",
    "notifications",
    "notification_preferences",
    "email_logs",
    "topic_subscriptions",
    "idempotency_keys",
    "events",
    "activity",
    "api_keys",
    "notification_templates",
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
            assert "ix_notifications_user_id_id" in indexes
        await migrate.downgrade(engine, "base")
        async with engine.connect() as connection:
            assert await connection.run_sync(_tables) == set()
        await migrate.upgrade(engine)
        async with engine.connect() as connection:
            assert await connection.run_sync(_tables) == TABLES
    finally:
        await engine.dispose()


async def test_unread_count_migration_counts_the_existing_unread_visible_rows(
    settings: Settings,
) -> None:
    engine = create_engine(settings)
    try:
        await migrate.upgrade(engine, "0002")
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO users (id, last_seq, created_at, updated_at) VALUES "
                    "('alice', 4, :now, :now), ('bob', 0, :now, :now)"
                ),
                {"now": utcnow()},
            )
            rows = [  # (seq, read, deleted, in_app): only the first two count
                (1, False, False, True),
                (2, False, False, True),
                (3, True, False, True),
                (4, False, True, True),
                (5, False, False, False),
            ]
            for seq, read, deleted, in_app in rows:
                await connection.execute(
                    text(
                        "INSERT INTO notifications (user_id, seq, type, title, body, data, "
                        "in_app, read, created_at, updated_at, deleted_at) VALUES ('alice', "
                        ":seq, 't', 'x', '', '{}', :in_app, :read, :now, :now, :deleted)"
                    ),
                    {
                        "seq": seq,
                        "in_app": in_app,
                        "read": read,
                        "now": utcnow(),
                        "deleted": utcnow() if deleted else None,
                    },
                )
        await migrate.upgrade(engine)
        async with engine.connect() as connection:
            counts = dict(
                (await connection.execute(text("SELECT id, unread_count FROM users"))).all()
            )
            kept = await connection.scalar(text("SELECT count(*) FROM notifications"))
        assert kept == len(rows)  # changing `users` must not cascade to the notifications
        assert counts == {"alice": 2, "bob": 0}
        await migrate.downgrade(engine, "0002")
        async with engine.connect() as connection:
            kept = await connection.scalar(text("SELECT count(*) FROM notifications"))
        assert kept == len(rows)
    finally:
        await engine.dispose()


async def test_the_retention_indexes_hold_only_read_or_deleted_rows_and_serve_the_purge(
    settings: Settings,
) -> None:
    """An unread notification adds nothing to the `read_at` and `deleted_at` indexes (0008), and
    the retention task's scans still use them."""
    engine = create_engine(settings)
    try:
        await migrate.upgrade(engine)
        async with engine.connect() as connection:
            postgres = connection.dialect.name == "postgresql"
            for column in ("read_at", "deleted_at"):
                name = f"ix_notifications_{column}"
                if postgres:
                    definition = (
                        await connection.execute(
                            text("SELECT indexdef FROM pg_indexes WHERE indexname = :name"),
                            {"name": name},
                        )
                    ).scalar_one()
                    await connection.execute(text("SET enable_seqscan = off"))
                    plan = "\n".join(
                        (
                            await connection.execute(
                                text(f"EXPLAIN SELECT id FROM notifications WHERE {column} < now()")
                            )
                        ).scalars()
                    )
                else:
                    definition = (
                        await connection.execute(
                            text("SELECT sql FROM sqlite_master WHERE name = :name"),
                            {"name": name},
                        )
                    ).scalar_one()
                    plan = " ".join(
                        str(row[-1])
                        for row in await connection.execute(
                            text(
                                "EXPLAIN QUERY PLAN SELECT id FROM notifications "
                                f"WHERE {column} < '2026-01-01'"
                            )
                        )
                    )
                assert f"WHERE ({column} IS NOT NULL)" in definition.replace(
                    f"WHERE {column} IS NOT NULL", f"WHERE ({column} IS NOT NULL)"
                ), definition
                assert name in plan, plan
    finally:
        await engine.dispose()


async def test_a_stored_notification_costs_no_foreign_key_check_and_no_unused_index(
    settings: Settings,
) -> None:
    """0009: the notifications table has no foreign key (the publish locks the user's row
    itself), no `(user_id, read_at)` index, and on PostgreSQL `users` keeps room on its pages
    for in-place (HOT) updates of the counters every publish changes; downgrading restores all
    three."""
    engine = create_engine(settings)
    try:
        await migrate.upgrade(engine)

        def shape(connection: Connection) -> tuple[list[Any], set[str], Any]:
            inspector = inspect(connection)
            keys = inspector.get_foreign_keys("notifications")
            indexes = {i["name"] for i in inspector.get_indexes("notifications")}
            options = None
            if connection.dialect.name == "postgresql":
                options = connection.execute(
                    text("SELECT reloptions FROM pg_class WHERE relname = 'users'")
                ).scalar_one()
            return keys, indexes, options

        async with engine.connect() as connection:
            keys, indexes, options = await connection.run_sync(shape)
            postgres = connection.dialect.name == "postgresql"
        assert keys == []
        assert "ix_notifications_user_id_read_at" not in indexes
        assert options == (["fillfactor=50"] if postgres else None)
        await migrate.downgrade(engine, "0008")
        async with engine.connect() as connection:
            keys, indexes, options = await connection.run_sync(shape)
        assert [(k["referred_table"], k["options"].get("ondelete")) for k in keys] == [
            ("users", "CASCADE")
        ]
        assert "ix_notifications_user_id_read_at" in indexes
        assert options is None
    finally:
        await engine.dispose()


async def test_an_upgrade_that_rebuilds_a_table_keeps_every_row_that_points_at_it(
    settings: Settings,
) -> None:
    """0009 rebuilds `notifications` on SQLite (batch mode: copy, drop, rename). With foreign
    keys enforced, dropping the old table would delete the activity rows and null the email
    logs' `notification_id` pointing at it; the migration runs with them off, and they are on
    again afterwards on the connection it used."""
    engine = create_engine(settings)
    at = utcnow()
    try:
        await migrate.upgrade(engine, "0008")
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO users (id, last_seq, unread_count, purged_seq, created_at,"
                    " updated_at) VALUES ('kept', 1, 1, 0, :at, :at)"
                ),
                {"at": at},
            )
            await connection.execute(
                text(
                    "INSERT INTO notifications (id, user_id, seq, type, title, body, data, in_app,"
                    " read, created_at, updated_at)"
                    " VALUES (7, 'kept', 1, 't', 'x', '', '{}', :yes, :no, :at, :at)"
                ),
                {"at": at, "yes": True, "no": False},
            )
            await connection.execute(
                text(
                    "INSERT INTO activity (notification_id, user_id, type, kind, at, detail)"
                    " VALUES (7, 'kept', 't', 'pushed', :at, '{}')"
                ),
                {"at": at},
            )
            await connection.execute(
                text(
                    "INSERT INTO email_logs (user_id, notification_id, kind, recipient, subject,"
                    " status, attempts, next_attempt_at, payload, created_at, updated_at)"
                    " VALUES ('kept', 7, 'instant', 'a@example.com', 's', 'pending', 0, :at,"
                    " '{}', :at, :at)"
                ),
                {"at": at},
            )
        await migrate.upgrade(engine)
        async with engine.connect() as connection:
            activity = await connection.execute(text("SELECT notification_id FROM activity"))
            emails = await connection.execute(text("SELECT notification_id FROM email_logs"))
            assert activity.scalars().all() == [7]
            assert emails.scalars().all() == [7]
            if connection.dialect.name == "sqlite":
                enforced = await connection.exec_driver_sql("PRAGMA foreign_keys")
                assert enforced.scalar() == 1
    finally:
        await engine.dispose()
