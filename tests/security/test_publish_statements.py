"""A publish costs a bounded number of SQL statements, whatever its number of recipients.

On SQLite each statement is a round trip to aiosqlite's thread; a statement per recipient made a
publish to 1,000 users cost ~240 ms of CPU. Counted with SQLAlchemy's own execution event on the
server's engine, so the test sees what the database saw.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, text

from backend import keys
from backend.models import Notification, UTCDateTime
from backend.services import store

from ..conftest import RunningServer
from ..email_helpers import register
from ..query_log import queries_per_checkout

RECIPIENTS = 1000


async def test_a_publish_to_a_thousand_users_sends_a_handful_of_statements(
    server: RunningServer,
) -> None:
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = server.app[keys.ENGINE].sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        users = [f"many-{i}" for i in range(RECIPIENTS)]
        stored = await server.publish(users)
        await server.publish(users)  # known users now: the upsert's update branch
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len(stored) == RECIPIENTS
    assert len({row["id"] for row in stored}) == RECIPIENTS
    # each stored row carries its own id: the one the database gave to that user's seq
    listed = await server.request("GET", "/api/v1/notifications", sub="many-7")
    assert listed[1]["notifications"][-1]["id"] == stored[7]["id"]
    assert len(statements) <= 2 * 8, statements[:20]


async def test_a_publish_stores_the_same_column_forms_as_the_typed_columns(
    server: RunningServer,
) -> None:
    """The SQLite statements skip SQLAlchemy's per-row type processing and pass stored forms
    themselves (`store.SqliteValues`): what lands in each column is what the typed column would
    have written, and reads back the same through the ORM."""
    engine = server.app[keys.ENGINE]
    data = {"n": 1, "nested": {"k": [1, "two"]}, "text": "é"}
    [created] = await server.publish(["forms"], data=data)
    await server.request("POST", f"/api/v1/notifications/{created['id']}/read", sub="forms")
    async with engine.connect() as connection:
        stored = (
            await connection.execute(
                text("SELECT created_at, read_at, data, in_app, read FROM notifications "
                     "WHERE id = :id"),
                {"id": created["id"]},
            )
        ).one()  # fmt: skip
        user = (
            await connection.execute(
                text("SELECT created_at, updated_at FROM users WHERE id = 'forms'")
            )
        ).one()
        typed = Notification.__table__.c
        stamp = UTCDateTime().dialect_impl(connection.dialect).bind_processor(connection.dialect)
        as_json = typed.data.type.dialect_impl(connection.dialect).bind_processor(
            connection.dialect
        )
    if engine.dialect.name == "sqlite":
        assert stamp is not None and as_json is not None
        form = stamp(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
        # read_at was written through the ORM (typed): created_at has the same form
        assert len(stored.created_at) == len(stored.read_at) == len(form)
        assert stored.created_at[10] == stored.read_at[10] == form[10]
        assert len(user.created_at) == len(user.updated_at) == len(form)
        assert stored.data == as_json(data)
        assert (stored.in_app, stored.read) == (1, 1)
    [listed] = (await server.request("GET", "/api/v1/notifications", sub="forms"))[1][
        "notifications"
    ]
    assert listed["data"] == data
    assert listed["created_at"] == created["created_at"]


async def test_a_targeted_publish_on_postgresql_is_one_statement(
    server: RunningServer,
) -> None:
    """The hot path (asyncpg directly): the preferences read, the seqs and unread counts and the
    insert are one statement between BEGIN and COMMIT (no ping: BEGIN is one), with the queued
    email of a recipient who has an address in the same transaction. The unread counts are
    still the per-type ones (a muted type is stored, not counted; a type shown in-app counts
    for a user who hides the others)."""
    engine = server.app[keys.ENGINE]
    if engine.dialect.name != "postgresql":
        pytest.skip("the direct path is PostgreSQL's")
    status, _ = await server.request(
        "PUT",
        "/api/v1/preferences",
        sub="quiet",
        json={"type_settings": {"muted": {"in_app": False}}},
    )
    assert status == 200
    status, _ = await server.request(
        "PUT",
        "/api/v1/preferences",
        sub="picky",
        json={"in_app_notifications": False, "type_settings": {"news": {"in_app": True}}},
    )
    assert status == 200
    with queries_per_checkout(engine) as checkouts:
        await server.publish(["quiet", "loud", "picky"], type="muted")
        await server.publish(["quiet", "loud", "picky"], type="news")
        await register(server, "mailed", "mailed@example.com")
        await server.publish(["quiet", "mailed"], type="news")
    statements = [[query.split()[0] for query in queries] for queries in checkouts]
    publishes = [shape for shape in statements if "WITH" in shape]
    alone = ["BEGIN;", "WITH", "COMMIT;"]
    mailed = ["BEGIN;", "WITH", "INSERT", "COMMIT;"]  # INSERT: the queued email
    assert publishes == [alone, alone, mailed], statements
    counts = {
        user: (await server.request("GET", "/api/v1/notifications/unread-count", sub=user))[1]
        for user in ("quiet", "loud", "picky")
    }
    assert counts == {"quiet": {"count": 2}, "loud": {"count": 2}, "picky": {"count": 1}}


def _removed_by_join_filters(plan: dict[str, Any]) -> float:
    nodes, removed = [plan], 0.0
    while nodes:
        node = nodes.pop()
        removed += node.get("Rows Removed by Join Filter", 0)
        nodes.extend(node.get("Plans", []))
    return removed


async def test_the_publish_statement_is_planned_without_a_join_that_grows_with_the_square(
    server: RunningServer,
) -> None:
    """The planner cannot count a CTE's rows: joining the stored notifications back to their
    users' rows was a nested loop, a million comparisons for 1,000 recipients (≈ 170 ms of
    PostgreSQL against ≈ 20 ms). The statement returns them as rows of their own instead; here
    its plan for 1,000 new users, then 1,000 known ones, as PostgreSQL ran it (rolled back)."""
    engine = server.app[keys.ENGINE]
    if engine.dialect.name != "postgresql":
        pytest.skip("the direct path is PostgreSQL's")
    users = [f"square-{i}" for i in range(RECIPIENTS)]
    ones = [1] * RECIPIENTS
    async with engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        assert raw is not None
        for known in (False, True):
            transaction = raw.transaction()
            await transaction.start()
            try:
                if known:
                    await raw.execute(
                        "INSERT INTO users (id, created_at, updated_at)"
                        " SELECT unnest($1::TEXT[]), now(), now()",
                        users,
                    )
                plan = await raw.fetchval(
                    "EXPLAIN (ANALYZE, FORMAT JSON) " + store.DIRECT_PUBLISH,
                    datetime.now(UTC), users, ones, ["t"], ["title"], [""], [None], [None],
                    ["{}"], ["svc"], ["token"], ones, ones,
                )  # fmt: skip
            finally:
                await transaction.rollback()
            if isinstance(plan, str):  # the server's connections may decode JSON themselves
                plan = json.loads(plan)
            removed = _removed_by_join_filters(plan[0]["Plan"])
            assert removed < 10 * RECIPIENTS, (known, removed)
