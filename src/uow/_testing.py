"""Rollback-per-test binding and captured ``on_commit`` hooks: the parts of `uow.testing` that need no pytest.

`bound_to_transaction` opens one connection, begins an outer transaction on it, and points the
Database's session factories at that connection with ``join_transaction_mode="create_savepoint"``
(SQLAlchemy's recipe "Joining a Session into an External Transaction"). Every session a unit
makes while the binding is active therefore commits into a savepoint of the outer transaction,
and rolling that back at the end undoes everything the code under test wrote.

`capture_on_commit` hands the hooks due after units end to a `CapturedHooks` list instead of
running them. `uow.testing` names what of this module is public (its ``__all__`` is the one list);
`frames_left_open` and `left_open_error` are shared with the fixtures of `uow._pytest_plugin`.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import weakref
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from uow._database import AnySessionFactory, Database, SwappedFactories, resolve_database, swap_session_factories
from uow._ownership import release_guard
from uow._stack import Frame, forget_frames_above, innermost_frame
from uow._transaction import (
    AFTER_COMMIT,
    AFTER_ROLLBACK,
    OPENED_BY_KEY,
    Hook,
    Outcome,
    start_capturing_hooks,
    stop_capturing_hooks,
)
from uow.errors import ConfigurationError, UowError

logger = logging.getLogger("uow")

# The Databases bound right now, so a second binding of the same Database fails clearly.
_bound: weakref.WeakSet[Database] = weakref.WeakSet()


class UnitLeftOpenError(UowError):
    """A unit of work was still open when `bound_to_transaction` (or a uow test fixture) ended."""


class _TrackingSessionmaker(sessionmaker[Session]):
    """A sessionmaker that remembers the sessions it made, to find units left open at the end."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.made: list[weakref.ref[Session]] = []

    def __call__(self, **local_kw: Any) -> Session:
        session = super().__call__(**local_kw)
        self.made.append(weakref.ref(session))
        return session


class _TrackingAsyncSessionmaker(async_sessionmaker[AsyncSession]):
    """An async_sessionmaker that remembers the sessions it made, to find units left open at the end."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.made: list[weakref.ref[AsyncSession]] = []

    def __call__(self, **local_kw: Any) -> AsyncSession:
        session = super().__call__(**local_kw)
        self.made.append(weakref.ref(session))
        return session


class _FixedIsolation:
    """Session mixin: a unit's ``isolation_level`` is not applied, since the outer transaction's level is fixed.

    PostgreSQL and SQLAlchemy refuse to change the level of a transaction already begun; the
    unit still runs, at the level of the test's outer transaction.
    """

    def connection(self, bind_arguments: Any = None, execution_options: Any = None) -> Any:
        if execution_options and "isolation_level" in execution_options:
            execution_options = {k: v for k, v in execution_options.items() if k != "isolation_level"}
        return super().connection(bind_arguments, execution_options)  # type: ignore[misc]


def _with_fixed_isolation(session_class: type[Session]) -> type[Session]:
    return type(session_class.__name__, (_FixedIsolation, session_class), {})


def _factory_options(factory: AnySessionFactory) -> dict[str, Any]:
    # Keep the user's session options (expire_on_commit, class_, info...) but bind to the one connection.
    options = {key: value for key, value in factory.kw.items() if key not in ("bind", "binds")}
    options["join_transaction_mode"] = "create_savepoint"
    if isinstance(factory, async_sessionmaker):
        options["class_"] = factory.class_
        options["sync_session_class"] = _with_fixed_isolation(options.get("sync_session_class") or Session)
    else:
        options["class_"] = _with_fixed_isolation(factory.class_)
    return options


def _swap_in(database: Database, factory: AnySessionFactory) -> SwappedFactories:
    # No replicas either: a read-only unit on one would not see the test's uncommitted rows.
    saved = swap_session_factories(database, factory)
    _bound.add(database)
    return saved


def _swap_out(database: Database, saved: SwappedFactories) -> None:
    saved.restore()
    _bound.discard(database)


def _engine_for(database: Database, *, is_async: bool, label: str) -> Any:
    if database.is_async != is_async:
        if database.is_async:
            raise ConfigurationError(f"{database!r} is async: use 'async with {label}'")
        raise ConfigurationError(f"{database!r} is sync: use 'with {label}'")
    if database in _bound:
        raise ConfigurationError(
            f"{database!r} is already bound to a test transaction: a binding cannot be nested; "
            "use one rollback fixture (or one 'with bound_to_transaction(...)') per test"
        )
    engine = database.engine
    if not isinstance(engine, (Engine, AsyncEngine)):
        raise ConfigurationError(
            f"{label}: {database!r} was built from a session_factory without an Engine bind; "
            "build it with Database(url) or Database(engine=...) so the test can open its own connection"
        )
    return engine


def _unit_names(sessions: list[Any]) -> list[str]:
    return [str(session.info.get(OPENED_BY_KEY) or "a unit of work") for session in sessions]


def left_open_error(names: list[str], database: Database) -> UnitLeftOpenError:
    listed = ", ".join(dict.fromkeys(names))
    return UnitLeftOpenError(
        f"the test left {len(names)} unit(s) of work open on {database!r}, opened by: {listed}. "
        "Every 'with unit_of_work()' / provide_services(...) must be exited, and every decorated "
        "call awaited to the end, before the test finishes"
    )


def frames_left_open(database: Database, entered_with: Frame | None) -> list[str]:
    """Units on this context's stack that were entered inside the binding and never left."""
    names: list[str] = []
    frame = innermost_frame()
    while frame is not None and frame is not entered_with:
        if frame.database is database:
            names.append(frame.transaction.label or "a unit of work")
        frame = frame.parent
    return names


# -- SQLite: make SAVEPOINT work inside the outer transaction ---------------------------------


class _SqliteState:
    """How the binding changed a pysqlite/aiosqlite connection, so the pool gets it back unchanged."""

    __slots__ = ("previous_isolation_level",)

    def __init__(self, previous_isolation_level: Any) -> None:
        self.previous_isolation_level = previous_isolation_level


def _prepare_sqlite(connection: Connection) -> _SqliteState | None:
    """Stop the sqlite3 module from beginning and committing on its own (a Database(engine=...) may lack the recipe).

    Databases made from a URL already install SQLAlchemy's pysqlite recipe; a user's own
    Engine may not, and then the first RELEASE SAVEPOINT would commit for real.
    """
    if connection.dialect.name != "sqlite":
        return None
    dbapi_connection: Any = connection.connection.dbapi_connection
    previous = dbapi_connection.isolation_level
    if previous is not None:
        # Setting None commits an open transaction; the connection was just checked out, so none is open.
        dbapi_connection.isolation_level = None
    return _SqliteState(previous)


def _ensure_sqlite_begun(connection: Connection) -> None:
    driver: Any = connection.connection.driver_connection
    if not driver.in_transaction:
        connection.exec_driver_sql("BEGIN")


def _restore_sqlite(connection: Connection, state: _SqliteState | None) -> None:
    if state is None or state.previous_isolation_level is None:
        return
    dbapi_connection: Any = connection.connection.dbapi_connection
    dbapi_connection.isolation_level = state.previous_isolation_level


def _begin_outer_sync(connection: Connection) -> _SqliteState | None:
    state = _prepare_sqlite(connection)
    connection.begin()
    if state is not None:
        _ensure_sqlite_begun(connection)
    return state


def _end_outer_sync(connection: Connection, state: _SqliteState | None) -> None:
    try:
        if state is not None:
            # A read-only unit left open switched the shared connection to query_only; it outlives rollback.
            connection.exec_driver_sql("PRAGMA query_only = OFF")
        # The outer transaction is the whole point: roll it back, whatever happened inside.
        if connection.in_transaction():
            connection.rollback()
        _restore_sqlite(connection, state)
    except BaseException:
        # A connection that could not be put back as it was found must not return to the pool.
        connection.invalidate()
        raise


# -- the binding ------------------------------------------------------------------------------


class bound_to_transaction:
    """Within the block, every unit on `database` commits into a savepoint of one outer transaction, rolled back at the end.

    ``with bound_to_transaction(db) as connection:`` for a sync Database, ``async with`` for an
    async one; `connection` is the (Async)Connection everything runs on, for setting up data
    directly. Units opened inside, including ``requires_new`` ones (a second session on the
    same connection: it sees the test's uncommitted rows and cannot commit independently),
    nested units and request units of framework integrations, all see the test's data. The
    Database's factories are swapped while the block runs, so every thread and task using
    that Database shares the one connection: do not use it from two threads at once.
    Raises `UnitLeftOpenError` at the end if a unit opened inside is still open.
    """

    def __init__(self, database: Database | None = None) -> None:
        self._given = database
        self._database: Database | None = None
        self._saved: SwappedFactories | None = None
        self._connection: Any = None
        self._sqlite: _SqliteState | None = None
        self._factory: Any = None
        self._entered_with: Frame | None = None

    @property
    def database(self) -> Database:
        """The Database this binding applies to (resolved from the configured default when none was given)."""
        if self._database is None:
            self._database = resolve_database(self._given, label="bound_to_transaction()")
        return self._database

    # -- sync ---------------------------------------------------------------------------------

    def __enter__(self) -> Connection:
        database = self.database
        engine: Engine = _engine_for(database, is_async=False, label="bound_to_transaction(...)")
        connection = engine.connect()
        try:
            self._sqlite = _begin_outer_sync(connection)
            factory = _TrackingSessionmaker(bind=connection, **_factory_options(database.session_factory))
        except BaseException:
            connection.close()
            raise
        self._connection, self._factory = connection, factory
        self._saved = _swap_in(database, factory)
        self._entered_with = innermost_frame()
        return connection

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        database, connection = self.database, self._connection
        assert self._saved is not None and isinstance(connection, Connection)
        left_open = self._forget_frames_left_open()
        sessions = self._open_sessions()
        try:
            for session in sessions:
                _close_quietly_sync(session)
        finally:
            _swap_out(database, self._saved)
            try:
                _end_outer_sync(connection, self._sqlite)
            finally:
                connection.close()
        self._raise_if_left_open(left_open, sessions, exc)

    # -- async --------------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncConnection:
        database = self.database
        engine: AsyncEngine = _engine_for(database, is_async=True, label="bound_to_transaction(...)")
        connection = await engine.connect()
        try:
            self._sqlite = await connection.run_sync(_begin_outer_sync)
            factory = _TrackingAsyncSessionmaker(bind=connection, **_factory_options(database.session_factory))
        except BaseException:
            await connection.close()
            raise
        self._connection, self._factory = connection, factory
        self._saved = _swap_in(database, factory)
        self._entered_with = innermost_frame()
        return connection

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        database, connection = self.database, self._connection
        assert self._saved is not None and isinstance(connection, AsyncConnection)
        left_open = self._forget_frames_left_open()
        sessions = self._open_sessions()
        try:
            for session in sessions:
                await _close_quietly_async(session)
        finally:
            _swap_out(database, self._saved)
            try:
                state = self._sqlite
                await connection.run_sync(lambda sync: _end_outer_sync(sync, state))
            finally:
                await connection.close()
        self._raise_if_left_open(left_open, sessions, exc)

    # -- leaks --------------------------------------------------------------------------------

    def _forget_frames_left_open(self) -> list[str]:
        """Names of units entered in this context and never left; drops them so later code starts clean."""
        names = frames_left_open(self.database, self._entered_with)
        if names:
            forget_frames_above(self._entered_with)
        return names

    def _open_sessions(self) -> list[Any]:
        made = self._factory.made if self._factory is not None else []
        return [s for s in (ref() for ref in made) if s is not None and _in_transaction(s)]

    def _raise_if_left_open(self, frames: list[str], sessions: list[Any], exc: BaseException | None) -> None:
        names = frames or _unit_names(sessions)
        if names and exc is None:
            raise left_open_error(names, self.database)


def _in_transaction(session: Session | AsyncSession) -> bool:
    sync_session = session.sync_session if isinstance(session, AsyncSession) else session
    return sync_session.in_transaction()


def _close_quietly_sync(session: Session) -> None:
    release_guard(session)  # the unit it belonged to will never end it: this close is not user code's
    try:
        session.close()
    except Exception:
        logger.exception("uow.testing: closing a session left open by the test failed")


async def _close_quietly_async(session: AsyncSession) -> None:
    release_guard(session)  # the unit it belonged to will never end it: this close is not user code's
    try:
        await session.close()
    except Exception:
        logger.exception("uow.testing: closing a session left open by the test failed")


# -- captured hooks ---------------------------------------------------------------------------


class HookList(list[Hook]):
    """Captured hooks of one phase, in the order they would have run."""

    def run(self) -> None:
        """Run the captured hooks now, in order, and forget them.

        Unlike after a real commit, a hook that raises is not just logged: its error reaches the
        test. An async hook raises `ConfigurationError` (use `run_async`).
        """
        for callback in self._take():
            result = callback()
            if inspect.isawaitable(result):
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                raise ConfigurationError(f"captured hook {callback!r} is async: use 'await hooks.run_async()'")

    async def run_async(self) -> None:
        """Run the captured hooks now (awaiting async ones), in order, and forget them."""
        for callback in self._take():
            result = callback()
            if inspect.isawaitable(result):
                await result

    def _take(self) -> Iterator[Hook]:
        hooks = list(self)
        self.clear()
        return iter(hooks)


class CapturedCompletion:
    """A captured ``on_completion`` hook with the outcome it would have been told; calling it runs the hook so."""

    __slots__ = ("callback", "outcome")

    def __init__(self, callback: Callable[[Outcome], Any], outcome: Outcome) -> None:
        self.callback = callback
        self.outcome = outcome

    def __call__(self) -> Any:
        return self.callback(self.outcome)

    def __repr__(self) -> str:
        return f"CapturedCompletion({self.callback!r}, {self.outcome})"


class CapturedHooks(HookList):
    """The ``on_commit`` hooks captured by `capture_on_commit`, in the order they would have run.

    ``.rollback`` holds the ``on_rollback`` hooks, ``.completion`` the ``on_completion`` ones (each a
    `CapturedCompletion`: ``.callback`` and the ``.outcome`` it would have been told). ``before_commit``
    hooks are part of the unit's work: they run as always and are never captured.
    """

    def __init__(self, hooks: Iterable[Hook] = ()) -> None:
        super().__init__(hooks)
        self.rollback = HookList()
        self.completion = HookList()

    def take(self, due: list[tuple[Callable[..., Any], int]], outcome: Outcome) -> None:
        """Keep the hooks a unit that ended with `outcome` would run now (called by the unit)."""
        for callback, phase in due:
            if phase == AFTER_COMMIT:
                self.append(callback)
            elif phase == AFTER_ROLLBACK:
                self.rollback.append(callback)
            else:
                self.completion.append(CapturedCompletion(callback, outcome))

    def run_all(self) -> None:
        """Run the captured ``on_commit``, then ``on_rollback``, then ``on_completion`` hooks, and forget them."""
        self.run()
        self.rollback.run()
        self.completion.run()

    async def run_all_async(self) -> None:
        """`run_all`, awaiting async hooks."""
        await self.run_async()
        await self.rollback.run_async()
        await self.completion.run_async()


class capture_on_commit:
    """Collect, instead of running, the hooks due after units end inside the block.

    ``with capture_on_commit() as hooks:`` yields a `CapturedHooks` list of the ``on_commit``
    hooks of units that committed (``hooks.rollback``: the ``on_rollback`` hooks of units and
    savepoints that rolled back; ``hooks.completion``: the ``on_completion`` hooks, with their
    outcome): assert on them, or call ``hooks.run()`` / ``await hooks.run_async()`` (``run_all``
    for the three). With ``execute=True`` all of them run when the block ends without an error
    (``async with`` awaits async hooks). ``on_commit`` hooks of units that roll back are dropped
    as always and never captured; ``before_commit`` hooks run as always. The capture follows the context: units run
    by this task (or tasks and threads started with a copy of its context) are captured.
    """

    def __init__(self, *, execute: bool = False) -> None:
        self.execute = execute
        self.hooks = CapturedHooks()
        self._token: contextvars.Token[CapturedHooks | None] | None = None

    def __enter__(self) -> CapturedHooks:
        self._token = start_capturing_hooks(self.hooks)
        return self.hooks

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()
        if self.execute and exc is None:
            self.hooks.run_all()

    async def __aenter__(self) -> CapturedHooks:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()
        if self.execute and exc is None:
            await self.hooks.run_all_async()

    def _stop(self) -> None:
        if self._token is not None:
            stop_capturing_hooks(self._token)
            self._token = None
