"""The engine and session factory: one of each per application."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from contextvars import ContextVar
from typing import Any, TypeVar

from sqlalchemy import String, any_, bindparam, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import greenlet_spawn

from . import codec
from .config import Settings

# How long a client should wait before retrying while the database is away (Retry-After).
RETRY_AFTER_SECONDS = 5

# The database is away, not wrong: refused or dropped connections, a pool with no connection to
# give, SQLite's "database is locked" (an OperationalError), and asyncpg's own classes below.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
)
_BROKEN: tuple[type[BaseException], ...] = ()
# The server's own error for one statement: the connection stays usable.
_REFUSED: tuple[type[BaseException], ...] = ()
try:
    import asyncpg

    _BROKEN = (asyncpg.InternalClientError,)
    _REFUSED = (asyncpg.PostgresError,)

    # SQLAlchemy wraps these as a bare DBAPIError: starting up or shutting down (57P01-57P03,
    # "the database system is shutting down"), a connection lost (class 08), too many clients
    # (53300), or a connection asyncpg already knows is closed.
    _UNAVAILABLE += (
        asyncpg.CannotConnectNowError,
        asyncpg.AdminShutdownError,
        asyncpg.CrashShutdownError,
        asyncpg.PostgresConnectionError,
        asyncpg.TooManyConnectionsError,
        asyncpg.ConnectionDoesNotExistError,
        asyncpg.InterfaceError,
    )
except ImportError:  # pragma: no cover - asyncpg is in requirements.txt
    pass


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc` means "the database cannot be reached now; try again", by class.

    The one rule for REST (503 + Retry-After), socket events, recovery and the email worker.
    It looks through SQLAlchemy's wrapper (`.orig`, the driver's error) and explicit causes
    (`raise ... from`), not through exceptions merely raised while handling another.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen or len(seen) > 20:
            continue
        seen.add(id(current))
        if isinstance(current, _UNAVAILABLE):
            return True
        if isinstance(current, _BROKEN) and "another operation" in str(current):
            # asyncpg, for a query sent after the server's FATAL (shutting down) arrived but
            # before the socket closed: the connection is gone, whichever path used it.
            return True
        if isinstance(current, sa_exc.DBAPIError):
            if current.connection_invalidated:
                return True
            orig = current.orig
            todo.append(orig if isinstance(orig, BaseException) else None)
        todo.append(current.__cause__)
    return False


def create_engine(settings: Settings) -> AsyncEngine:
    """PostgreSQL gets a pool; SQLite gets one connection, so writers queue instead of failing."""
    if settings.is_sqlite:
        path = settings.sqlite_path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            settings.database_url,
            pool_size=1,
            max_overflow=0,
            pool_timeout=60,
            connect_args={"timeout": 30},
            json_deserializer=codec.loads_stored,
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, Any] = {}
    if "asyncpg" in settings.database_url.split("://", 1)[0]:
        # Statements are prepared once per connection; PostgreSQL's generic plan for them,
        # made without the parameters, chose a scan of all of a table's rows for a list of
        # users (the unread counts of every publish: 14 ms instead of 1 ms). Plan each run
        # (`direct` lets small publishes use the generic plan: BEGIN_GENERIC_PLANS).
        connect_args["server_settings"] = {"plan_cache_mode": "force_custom_plan"}
    engine = create_async_engine(
        settings.database_url,
        pool_size=10,
        max_overflow=10,
        connect_args=connect_args,
        json_deserializer=codec.loads_stored,
    )
    event.listen(engine.sync_engine.pool, "checkout", _ping)
    return engine


def _ping(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """The pool's pre-ping, in one round trip: `SELECT 1` on the checked-out connection.

    SQLAlchemy's own (`pool_pre_ping`) sends BEGIN, the query and ROLLBACK on asyncpg: three
    round trips before every transaction (~9% of a targeted publish's server CPU). Any failure
    (dead after a PostgreSQL restart, or left mid-operation) discards this connection and the
    pool checks out another (`DisconnectionError`, up to three times), so nothing was sent."""
    raw = getattr(dbapi_connection, "driver_connection", None)
    if raw is None or not hasattr(raw, "execute"):  # pragma: no cover - asyncpg only
        return
    if _BEGIN_PINGS.get():  # db.direct: its BEGIN is the ping (retried on another connection)
        if raw.is_closed():
            raise sa_exc.DisconnectionError("closed")
        return
    try:
        dbapi_connection.await_(raw.execute("SELECT 1"))
    except Exception as exc:
        raise sa_exc.DisconnectionError(f"pre-ping failed: {exc!r}") from exc


Result = TypeVar("Result")
# Set by `direct` around its checkout: the pool's ping is skipped (a closed connection is still
# replaced), since `direct` retries a transaction whose BEGIN failed on another connection.
_BEGIN_PINGS: ContextVar[bool] = ContextVar("begin_pings", default=False)
# BEGIN on a connection that died unseen (a PostgreSQL restart) fails: nothing was sent, so
# another connection is tried, up to this many in all (the pool's pre-ping tries three).
DIRECT_ATTEMPTS = 3


# The session's connections plan every statement for its parameters (`force_custom_plan`, in
# create_engine); a direct transaction of a few rows may let PostgreSQL reuse its generic plan,
# set with BEGIN in the same message (no round trip more).
BEGIN = "BEGIN;"
BEGIN_GENERIC_PLANS = "BEGIN; SET LOCAL plan_cache_mode = auto;"


async def direct(
    engine: AsyncEngine,
    work: Callable[[Any], Awaitable[Result]],
    *,
    generic_plans: bool = False,
) -> Result:
    """Run `work(connection)` in one transaction on a pooled asyncpg connection (PostgreSQL),
    without SQLAlchemy on each statement: the publish hot path (about 60 µs a statement against
    145 µs through a session).

    The pool does not ping the connection first (a round trip, ~5% of a targeted publish's
    CPU): BEGIN does. A connection whose BEGIN fails (dead since the database restarted, or in
    a bad state) is invalidated and another is tried, up to DIRECT_ATTEMPTS in all; one that
    dies under the work is invalidated and the work runs once more on another; a failure during
    the commit is not retried (it may have committed). Errors stay the driver's, which
    `is_unavailable` classifies.

    A publish is not sent outside a transaction (as one statement committing by itself, two
    round trips fewer) because its queued emails must commit with it, and which recipients have
    an address is known only once the statement ran.

    `generic_plans`: PostgreSQL may run the statements with their generic plan (plan_cache_mode
    `auto` for this transaction). Planning the publish statement for each execution was ≈ 0.5
    ms of PostgreSQL's CPU and ≈ 0.6 ms of wall time per publish of one row (bench/README); a
    plan made without the parameters fits a few rows, so callers ask for it for small
    batches only."""
    for attempt in range(1, DIRECT_ATTEMPTS + 1):
        began = committing = clean = False
        pooled = await _checkout(engine, ping=False)
        try:
            raw = pooled.driver_connection
            await raw.execute(BEGIN_GENERIC_PLANS if generic_plans else BEGIN)
            began = True
            try:
                result = await work(raw)
            except BaseException:
                clean = await _rolled_back(raw)
                raise
            committing = True
            await raw.execute("COMMIT;")
            clean = True
            return result
        except BaseException as exc:
            if attempt < DIRECT_ATTEMPTS and not committing and isinstance(exc, Exception):
                # Nothing can have been committed: BEGIN failed (the ping), or the connection
                # died under the work (the transaction died with it).
                if not began or (attempt == 1 and _connection_broke(exc)):
                    continue
            raise
        finally:
            # dead, or in an unknown state: it must not go back to the pool
            await _give_back(pooled, sound=clean)
    raise AssertionError("unreachable")  # pragma: no cover


def asyncpg_engine(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncEngine | None:
    """The sessionmaker's engine when it is PostgreSQL through asyncpg (the paths that skip
    SQLAlchemy per statement: `direct`, `single`), else None."""
    bind = sessionmaker.kw.get("bind")
    if (
        isinstance(bind, AsyncEngine)
        and bind.dialect.name == "postgresql"
        and bind.dialect.driver == "asyncpg"
    ):
        return bind
    return None


async def single(
    engine: AsyncEngine, work: Callable[[Any], Awaitable[Result]], *, idempotent: bool = False
) -> Result:
    """Run `work(connection)`, one statement, on a pooled asyncpg connection without an explicit
    transaction: a single statement commits (or fails) as a whole by itself, so BEGIN and
    COMMIT would be two round trips for nothing.

    By default the pool pings the connection first, as for a session, and one that fails under
    the work is invalidated, never retried (it may have run): the activity writer's insert.
    `idempotent`, for a statement safe to run twice (the upsert of the users a connect storm
    records): no ping; a connection that broke under it (dead since the database restarted) is
    invalidated and the work runs again on another, up to DIRECT_ATTEMPTS in all, whether the
    broken one committed or not. Errors stay the driver's, which `is_unavailable` classifies."""
    attempts = DIRECT_ATTEMPTS if idempotent else 1
    for attempt in range(1, attempts + 1):
        pooled = await _checkout(engine, ping=not idempotent)
        sound = False
        try:
            result = await work(pooled.driver_connection)
            sound = True
            return result
        except BaseException as exc:
            # A statement PostgreSQL refused (a foreign key, say) leaves the connection idle and
            # sound; anything else (dropped, cancelled mid-statement) leaves it in doubt.
            sound = isinstance(exc, _REFUSED) and not is_unavailable(exc)
            if attempt < attempts and isinstance(exc, Exception) and _connection_broke(exc):
                continue
            raise
        finally:
            await _give_back(pooled, sound=sound)
    raise AssertionError("unreachable")  # pragma: no cover


async def _checkout(engine: AsyncEngine, *, ping: bool) -> Any:
    """A pooled connection as the pool holds it (`.driver_connection` is asyncpg's), without
    SQLAlchemy's Connection around it: its checkout and return were ≈ 100 µs of CPU a
    publish. Without `ping`, the pool only replaces a connection it knows is closed."""
    token = _BEGIN_PINGS.set(not ping)
    try:
        return await engine.raw_connection()
    finally:
        _BEGIN_PINGS.reset(token)


async def _give_back(pooled: Any, *, sound: bool) -> None:
    """Return a `_checkout` connection to the pool, or close it for good when not `sound`.
    A sound one goes back without I/O (nothing to roll back: the pool's adapter started no
    transaction), so a cancellation cannot cut it short; closing is shielded."""
    if sound:
        await greenlet_spawn(pooled.close)
        return
    with suppress(Exception):
        await asyncio.shield(greenlet_spawn(pooled.invalidate))


def _connection_broke(exc: BaseException) -> bool:
    """The database went away, or the driver's connection is in a state it cannot use: asyncpg
    raises InternalClientError ("another operation is in progress") for a query sent after the
    server's FATAL (shutting down) arrived but before it closed the socket."""
    return is_unavailable(exc) or isinstance(exc, _BROKEN)


async def _rolled_back(raw: Any) -> bool:
    if raw.is_closed():
        return False
    try:
        await raw.execute("ROLLBACK;")
    except Exception:
        return False
    return True


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def dialect_insert(session: AsyncSession) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT, for upserts on both databases."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def one_of(dialect: str, column: Any, name: str) -> Any:
    """`column IN :name`, the list bound at execution. On PostgreSQL `column = ANY(:name)`: one
    array parameter, so one prepared statement whatever the number of values; elsewhere an
    expanding IN. Built once per dialect, a statement with it is compiled once."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == any_(bindparam(name, type_=ARRAY(String)))
    return column.in_(bindparam(name, expanding=True))
