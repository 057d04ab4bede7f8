"""A connect that meets a fault of ours is refused with a reason at once, never left hanging."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from ..conftest import RunningServer, refused_connect


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_connect_that_fails_inside_the_server_is_refused_with_a_reason(
    server: RunningServer,
) -> None:
    database = Path(server.settings.database_url.split("///", 1)[1])
    # A database that refuses the write (a trigger an operator left
    # behind): recording a new user fails with an IntegrityError, which is not "database
    # unavailable" (that one is refused with retry_after, tested elsewhere).
    await server.stop()  # migrated; the trigger goes in while nothing holds the file
    with sqlite3.connect(database, timeout=10) as connection:
        connection.execute(
            "CREATE TRIGGER refuse_users BEFORE INSERT ON users "
            "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
        )
    await server.start()
    started = time.monotonic()
    errors = await refused_connect(server, {"token": server.token("newcomer")})
    assert errors == [{"message": "server error; retry later"}]
    assert time.monotonic() - started < 4  # answered, not left to the client's timeout
