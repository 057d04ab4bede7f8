"""What PostgreSQL was sent, per pooled connection checkout: asyncpg's query logger on every
connection the server's engine hands out while inside `queries_per_checkout`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

# asyncpg's introspection when it first prepares a statement on a connection, not ours
ONCE = ("typeinfo_tree", "'jit'")


@contextmanager
def queries_per_checkout(engine: AsyncEngine) -> Iterator[list[list[str]]]:
    """Yields a list that gets, for each checkout, the queries sent until its checkin (without
    asyncpg's own introspection)."""
    checkouts: list[list[str]] = []
    loggers: dict[int, Any] = {}

    def checkout(dbapi_connection: Any, *_args: Any) -> None:
        queries: list[str] = []
        checkouts.append(queries)

        def log(query: Any) -> None:
            if not any(mark in query.query for mark in ONCE):
                queries.append(query.query)

        loggers[id(dbapi_connection)] = log
        dbapi_connection.driver_connection.add_query_logger(log)

    def checkin(dbapi_connection: Any, *_args: Any) -> None:
        logger = loggers.pop(id(dbapi_connection), None)
        if logger is not None:
            dbapi_connection.driver_connection.remove_query_logger(logger)

    event.listen(engine.sync_engine, "checkout", checkout)
    event.listen(engine.sync_engine, "checkin", checkin)
    try:
        yield checkouts
    finally:
        event.remove(engine.sync_engine, "checkout", checkout)
        event.remove(engine.sync_engine, "checkin", checkin)
