"""A publish costs a bounded number of SQL statements, whatever its number of recipients.

On SQLite each statement is a round trip to aiosqlite's thread; a statement per recipient made a
publish to 1,000 users cost ~240 ms of CPU. Counted with SQLAlchemy's own execution event on the
server's engine, so the test sees what the database saw.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from backend import keys

from ..conftest import RunningServer

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
