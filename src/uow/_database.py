"""`Database`: where a unit's sessions come from, and `configure()`: the process default.

Also what belongs to a Database's engines and factories: ``ping`` (health checks, retried once on a
connection the server dropped), the SQLite recipe that makes savepoints work, the savepoint-end
notes nested units read (`track_savepoint_ends`, `savepoint_end`), dropping a parent's pooled
connections in a forked child, `resolve_database` (the given one, else the default) and
`swap_session_factories` (uow.testing binding a test's units to one connection).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Union

from sqlalchemy import Connection, Engine, create_engine, event, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from uow.errors import ConfigurationError, DatabaseUnavailable

__all__ = [
    "Database",
    "configure",
    "forget_savepoint_end",
    "get_default_database",
    "resolve_database",
    "savepoint_end",
    "swap_session_factories",
    "track_savepoint_ends",
]

AnySessionFactory = Union["sessionmaker[Session]", "async_sessionmaker[AsyncSession]"]
AnyEngine = Union[Engine, AsyncEngine]

_DEFAULT_SESSION_OPTIONS: Mapping[str, Any] = {"expire_on_commit": False}

# Every Database made in this process, so a forked child can drop the parent's pooled connections.
_ALL_DATABASES: weakref.WeakSet[Database] = weakref.WeakSet()


class Database:
    """Where sessions come from: a URL, an Engine/AsyncEngine, or a (async_)sessionmaker.

    A URL with an async driver makes an async Database. Sessions default to
    ``expire_on_commit=False`` so objects stay readable after their unit commits.
    Read-only units run on one of ``replicas`` (round-robin) when any are given.
    """

    def __init__(
        self,
        url: str | URL | None = None,
        *,
        engine: AnyEngine | None = None,
        session_factory: AnySessionFactory | None = None,
        replicas: Sequence[str | URL | AnyEngine] = (),
        engine_options: Mapping[str, Any] | None = None,
        session_options: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        given = [x for x in (url, engine, session_factory) if x is not None]
        if len(given) != 1:
            raise ConfigurationError(
                "Database() needs exactly one of: a URL (Database('sqlite:///app.db')), "
                "engine=Engine/AsyncEngine, or session_factory=sessionmaker/async_sessionmaker; "
                f"got {len(given)}"
            )
        self._engine_options = dict(engine_options or {})
        self._session_options = {**_DEFAULT_SESSION_OPTIONS, **(session_options or {})}
        self._owned_engines: list[AnyEngine] = []
        if session_factory is not None:
            self.session_factory = self._check_factory(session_factory)
            self.is_async = isinstance(session_factory, async_sessionmaker)
            bind = session_factory.kw.get("bind")
            self.engine: AnyEngine | None = bind if isinstance(bind, (Engine, AsyncEngine)) else None
        else:
            primary = engine if engine is not None else self._make_engine(url)  # type: ignore[arg-type]
            if not isinstance(primary, (Engine, AsyncEngine)):
                raise ConfigurationError(
                    f"Database(engine=...) needs a sqlalchemy Engine or AsyncEngine, got {type(primary).__name__}"
                )
            self.engine = primary
            self.is_async = isinstance(primary, AsyncEngine)
            self.session_factory = self._factory_for(primary)
        self.replica_factories: list[AnySessionFactory] = [self._replica_factory(r) for r in replicas]
        for managed in engines_of(self):
            # Also engines the application built: nested units must behave as with a URL (and as under
            # uow.testing, which binds tests to a connection with this recipe's effect).
            _use_real_sqlite_transactions(managed)
        self._replica_cycle = itertools.cycle(self.replica_factories) if self.replica_factories else None
        self._replica_lock = threading.Lock()
        self.name = name or self._describe()
        self._given_name = name  # a name the application chose is what errors call it; else the URL sans credentials
        _ALL_DATABASES.add(self)

    def __repr__(self) -> str:
        kind = "async" if self.is_async else "sync"
        return f"<Database {self.name} ({kind})>"

    def session_factory_for(self, *, read_only: bool) -> AnySessionFactory:
        """The factory a new unit takes its session from: a replica for read-only units when there are any."""
        if read_only and self._replica_cycle is not None:
            with self._replica_lock:
                return next(self._replica_cycle)
        return self.session_factory

    def dispose(self) -> None:
        """Close the pooled connections of the engines this Database created itself (sync Databases)."""
        for engine in self._owned_engines:
            if isinstance(engine, AsyncEngine):
                raise ConfigurationError(f"{self!r} is async: use 'await database.dispose_async()'")
            engine.dispose()

    async def dispose_async(self) -> None:
        """Close the pooled connections of the engines this Database created itself."""
        for engine in self._owned_engines:
            if isinstance(engine, AsyncEngine):
                await engine.dispose()
            else:
                engine.dispose()

    # -- health ------------------------------------------------------------------------------

    def ping(self, timeout: float = 5.0) -> float:
        """Run a trivial round trip (``SELECT 1``) on a pooled connection of the primary; its latency in seconds.

        For readiness probes and periodic checks: the connection is not the active unit's (a ping inside
        a unit neither joins nor disturbs it). Raises `DatabaseUnavailable`, naming the database without
        its credentials, when the server cannot be reached or does not answer within `timeout` seconds;
        the wait is bounded by `timeout` even when the server accepts the connection and never answers.
        """
        seconds = _ping_timeout(timeout, label=f"{self!r}.ping()")
        if self.is_async:
            raise ConfigurationError(f"{self!r} is async: use 'await database.ping_async()'")
        engine = self._ping_engine()
        assert isinstance(engine, Engine)
        outcome: list[float | BaseException] = []

        def probe() -> None:
            try:
                outcome.append(_round_trip_sync(engine))
            except BaseException as failure:  # handed to the caller's thread
                outcome.append(failure)

        # A thread of its own: a driver's connect can wait for a silent server far longer than `timeout`
        # (and libpq's connect_timeout counts whole seconds). It ends by itself when the driver gives up.
        worker = threading.Thread(target=probe, name=f"uow-ping {self._safe_label()}", daemon=True)
        worker.start()
        worker.join(seconds)
        if not outcome:
            raise self._unavailable(f"no answer within {seconds:g}s", seconds)
        result = outcome[0]
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            raise self._unavailable(self._reason(result), seconds) from result
        return result

    async def ping_async(self, timeout: float = 5.0) -> float:
        """`ping` for async code: an async Database pings on its event loop, a sync one in a thread."""
        seconds = _ping_timeout(timeout, label=f"{self!r}.ping_async()")
        if not self.is_async:
            return await asyncio.get_running_loop().run_in_executor(None, self.ping, seconds)
        engine = self._ping_engine()
        assert isinstance(engine, AsyncEngine)
        try:
            return await asyncio.wait_for(_round_trip_async(engine), seconds)
        except asyncio.TimeoutError as slow:
            raise self._unavailable(f"no answer within {seconds:g}s", seconds) from slow
        except Exception as failure:
            raise self._unavailable(self._reason(failure), seconds) from failure

    def _ping_engine(self) -> AnyEngine:
        if self.engine is None:
            raise ConfigurationError(
                f"{self!r} has no engine to ping: its session_factory has no engine bind; "
                "make it with sessionmaker(engine) / async_sessionmaker(engine), or pass engine=..."
            )
        return self.engine

    def _safe_label(self) -> str:
        if self._given_name is not None:
            return self._given_name
        if self.engine is None:
            return self.name
        url = self.engine.url
        return URL.create(url.drivername, host=url.host, port=url.port, database=url.database).render_as_string()

    def _reason(self, failure: BaseException) -> str:
        """What the driver said (first line), with the URL's credentials blanked out."""
        driver = getattr(failure, "orig", None) or failure
        message = str(driver).strip().splitlines()[0] if str(driver).strip() else ""
        url = self.engine.url if self.engine is not None else None
        if url is not None and url.password:
            message = message.replace(str(url.password), "***")
        if url is not None and url.username:
            for quoted in (f'"{url.username}"', f"'{url.username}'", f"user={url.username}"):
                message = message.replace(quoted, quoted.replace(url.username, "***"))
        kind = f"{type(driver).__module__}.{type(driver).__qualname__}"
        return f"{kind}: {message}" if message else kind

    def _unavailable(self, reason: str, seconds: float) -> DatabaseUnavailable:
        label = self._safe_label()
        return DatabaseUnavailable(
            f"database {label} is unavailable: {reason} (ping timeout {seconds:g}s). "
            "Check that the server is up and reachable from here, or raise the timeout",
            database=label,
            timeout=seconds,
        )

    def _describe(self) -> str:
        if self.engine is not None:
            return self.engine.url.render_as_string(hide_password=True)
        return f"session_factory@{id(self.session_factory):x}"

    def _make_engine(self, url: str | URL) -> AnyEngine:
        parsed = make_url(url)
        is_async = bool(getattr(parsed.get_dialect(), "is_async", False))
        engine: AnyEngine
        if is_async:
            engine = create_async_engine(parsed, **self._engine_options)
        else:
            engine = create_engine(parsed, **self._engine_options)
        self._owned_engines.append(engine)
        return engine

    def _factory_for(self, engine: AnyEngine) -> AnySessionFactory:
        if isinstance(engine, AsyncEngine):
            return async_sessionmaker(engine, **self._session_options)
        return sessionmaker(engine, **self._session_options)

    def _replica_factory(self, replica: str | URL | AnyEngine) -> AnySessionFactory:
        engine = replica if isinstance(replica, (Engine, AsyncEngine)) else self._make_engine(replica)
        if isinstance(engine, AsyncEngine) != self.is_async:
            raise ConfigurationError(
                f"replica {engine.url.render_as_string(hide_password=True)} is "
                f"{'async' if isinstance(engine, AsyncEngine) else 'sync'} but the primary is "
                f"{'async' if self.is_async else 'sync'}: use the same kind of driver for both"
            )
        return self._factory_for(engine)

    @staticmethod
    def _check_factory(factory: object) -> AnySessionFactory:
        if not isinstance(factory, (sessionmaker, async_sessionmaker)):
            raise ConfigurationError(
                "Database(session_factory=...) needs a sqlalchemy sessionmaker or async_sessionmaker, "
                f"got {type(factory).__name__}"
            )
        return factory


class SwappedFactories:
    """What `swap_session_factories` replaced on a Database; `restore()` puts it back."""

    __slots__ = ("database", "replica_cycle", "replica_factories", "session_factory")

    def __init__(self, database: Database) -> None:
        self.database = database
        self.session_factory = database.session_factory
        self.replica_factories = database.replica_factories
        self.replica_cycle = database._replica_cycle

    def restore(self) -> None:
        database = self.database
        database.session_factory = self.session_factory
        database.replica_factories = self.replica_factories
        database._replica_cycle = self.replica_cycle


def swap_session_factories(database: Database, factory: AnySessionFactory) -> SwappedFactories:
    """Until the returned `SwappedFactories` is restored, every unit on `database` takes its session from `factory`.

    Read-only units too: the replicas are set aside (uow.testing binds a test's units to one connection).
    """
    saved = SwappedFactories(database)
    database.session_factory = factory
    database.replica_factories = []
    database._replica_cycle = None
    return saved


def _ping_timeout(value: object, *, label: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{label}: timeout= must be a positive number of seconds, got {value!r}")
    return float(value)


def _is_stale(failure: Exception) -> bool:
    # A pooled connection the server dropped since (a restart, an idle timeout): SQLAlchemy has thrown
    # it away, and the next connection is a fresh one. That is not the server being down.
    return isinstance(failure, DBAPIError) and bool(failure.connection_invalidated)


def _round_trip_sync(engine: Engine) -> float:
    try:
        return _select_one_sync(engine)
    except Exception as failure:
        if not _is_stale(failure):
            raise
    return _select_one_sync(engine)  # once more, on the fresh connection


async def _round_trip_async(engine: AsyncEngine) -> float:
    try:
        return await _select_one_async(engine)
    except Exception as failure:
        if not _is_stale(failure):
            raise
    return await _select_one_async(engine)  # once more, on the fresh connection


def _select_one_sync(engine: Engine) -> float:
    started = time.perf_counter()
    with engine.connect() as connection:
        connection.execute(select(1)).scalar()
    return time.perf_counter() - started


async def _select_one_async(engine: AsyncEngine) -> float:
    started = time.perf_counter()
    async with engine.connect() as connection:
        (await connection.execute(select(1))).scalar()
    return time.perf_counter() - started


# -- savepoints: which one a connection last rolled back or tried to release ------------------

# Where a connection's record keeps ("rollback" | "release", savepoint name) of its last savepoint end.
_SAVEPOINT_END_KEY = "uow_savepoint_end"


# Engines whose savepoint ends are noted (a weak set: a cheap check on every nested unit).
_TRACKED_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def track_savepoint_ends(bind: Engine | Connection) -> None:
    """Note on each connection of `bind`'s engine the savepoint it last rolled back to or tried to release.

    SQLAlchemy emits ROLLBACK TO SAVEPOINT without RELEASE, and does not roll back a savepoint
    whose RELEASE failed; the unit ending the savepoint finishes both (`savepoint_end`) and needs
    the savepoint's name, which SQLAlchemy hands out publicly only through these events. The
    first nested unit on an engine installs them: any connection event costs SQLAlchemy about
    2-3 µs per statement, which engines that never see a savepoint do not pay.
    """
    engine = bind.engine
    if engine in _TRACKED_ENGINES:
        return
    if not event.contains(engine, "rollback_savepoint", _note_rollback_to):
        event.listen(engine, "rollback_savepoint", _note_rollback_to)
        event.listen(engine, "release_savepoint", _note_release)
    _TRACKED_ENGINES.add(engine)


def _note_rollback_to(connection: Connection, name: str, _context: object) -> None:
    info = _info_of(connection)
    if info is not None:
        info[_SAVEPOINT_END_KEY] = ("rollback", name)


def _note_release(connection: Connection, name: str, _context: object) -> None:
    info = _info_of(connection)
    if info is not None:
        info[_SAVEPOINT_END_KEY] = ("release", name)


def forget_savepoint_end(connection: Connection) -> None:
    """Drop what `connection` noted, before ending a savepoint that is still active on it."""
    info = _info_of(connection)
    if info is not None:
        info.pop(_SAVEPOINT_END_KEY, None)


def savepoint_end(connection: Connection) -> tuple[str, str] | None:
    """("rollback" | "release", name) of the savepoint `connection` last ended (and forget it), or None.

    None too for a connection that is closed or invalidated: nothing can be finished on it.
    """
    info = _info_of(connection)
    noted: tuple[str, str] | None = info.pop(_SAVEPOINT_END_KEY, None) if info is not None else None
    return noted


def _info_of(connection: Connection) -> dict[Any, Any] | None:
    # An invalidated connection refuses even `.info` until it is rolled back: it has nothing to finish.
    if connection.closed or connection.invalidated:
        return None
    return connection.info


# -- SQLite -----------------------------------------------------------------------------------


def _use_real_sqlite_transactions(engine: AnyEngine) -> None:
    """Let SQLAlchemy, not the sqlite3 module, decide when transactions begin, so savepoints work.

    This is the recipe from SQLAlchemy's pysqlite documentation ("Serializable isolation /
    Savepoints / Transactional DDL"); without it a SAVEPOINT that opens a transaction is
    committed by its RELEASE, and a nested unit's work outlives the rollback of its enclosing
    unit. Applied to every SQLite engine a Database uses, the application's own included, once
    (a second Database on the same engine adds nothing). It holds for connections already in the
    engine's pool too, and leaves a BEGIN the application's own copy of the recipe emitted alone.
    """
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    if sync_engine.dialect.name != "sqlite" or event.contains(sync_engine, "begin", _emit_begin):
        return
    event.listen(sync_engine, "connect", _disable_pysqlite_autobegin)
    event.listen(sync_engine, "begin", _emit_begin)


def _disable_pysqlite_autobegin(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None


def _emit_begin(connection: Connection) -> None:
    if _autocommits(connection):
        return  # the application asked for no transactions: SQLAlchemy would never COMMIT this BEGIN
    pooled = connection.connection
    if pooled.dbapi_connection is not None and pooled.dbapi_connection.isolation_level is not None:
        # Connected before uow saw the engine (the "connect" listener never ran for it). No
        # transaction is open at "begin", so switching sqlite3's own transactions off commits nothing.
        pooled.dbapi_connection.isolation_level = None
    driver: Any = pooled.driver_connection
    if driver is None or not driver.in_transaction:
        connection.exec_driver_sql("BEGIN")


def _autocommits(connection: Connection) -> bool:
    level = connection.get_execution_options().get("isolation_level")
    if level is None:
        # create_engine(isolation_level="AUTOCOMMIT"): SQLAlchemy keeps that level on the dialect only.
        level = getattr(connection.dialect, "_on_connect_isolation_level", None)
    return bool(level == "AUTOCOMMIT")


class _DefaultDatabase:
    """Holds the process default set by `configure()`."""

    __slots__ = ("database",)

    def __init__(self) -> None:
        self.database: Database | None = None


_default = _DefaultDatabase()


def configure(database: Database) -> Database:
    """Make `database` the process default used by every decorator and unit not given one; returns it."""
    if not isinstance(database, Database):
        raise ConfigurationError(
            f"configure() needs a uow.Database, got {type(database).__name__}: "
            "wrap it first, e.g. configure(Database('sqlite:///app.db'))"
        )
    _default.database = database
    return database


def get_default_database() -> Database | None:
    """The database set by `configure()`, or None."""
    return _default.database


def resolve_database(database: Database | None, *, label: str) -> Database:
    """`database` itself, else the configured default; `ConfigurationError` naming `label` if neither exists."""
    if database is not None:
        return database
    default = _default.database
    if default is None:
        raise ConfigurationError(
            f"{label} has no database: call uow.configure(Database(url)) at start-up, "
            "or pass database=... to the decorator"
        )
    return default


def _forget_parent_connections() -> None:
    """In a forked child, drop the parent's pooled connections without closing them under the parent."""
    for database in list(_ALL_DATABASES):
        for engine in engines_of(database):
            sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
            sync_engine.dispose(close=False)


def engines_of(database: Database) -> Iterator[AnyEngine]:
    seen: set[int] = set()
    factories = [database.session_factory, *database.replica_factories]
    for factory in factories:
        bind = factory.kw.get("bind")
        if isinstance(bind, (Engine, AsyncEngine)) and id(bind) not in seen:
            seen.add(id(bind))
            yield bind


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_connections)
