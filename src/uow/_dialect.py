"""Dialect details: making a unit's session, read-only and isolation levels, SQLite's ``query_only``.

- `new_session`: a session for a unit that begins its own transaction, from the `Database`'s
  factory (its replica factory when read-only), bound at the unit's isolation level, of a class
  carrying the statement checks (`uow._ownership.guard_class`);
- `apply_begin_options_sync` / `_async`: connect at once when the unit is read-only or asks for an
  isolation level, so a bad level fails at the unit's start; read-only sessions ask the database to
  refuse writes in every transaction they begin (`_refuse_writes`: PostgreSQL and MySQL/MariaDB
  ``SET TRANSACTION READ ONLY``, SQLite ``PRAGMA query_only``);
- `end_read_only_sync` / `_async` and the pool-reset listener (`_reset_query_only`): SQLite's
  ``query_only`` belongs to the connection, so it is switched off before the connection is reused.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Union

from sqlalchemy import Connection, Engine, event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from uow._ownership import GuardedSession, guard_class, guarded

if TYPE_CHECKING:
    from uow._database import Database

logger = logging.getLogger("uow")

AnySession = Union[Session, AsyncSession]


def new_session(database: Database, read_only: bool, isolation_level: str | None) -> AnySession:
    """A session for a unit that begins its own transaction (on a replica when it is read-only).

    With an isolation level, the session is bound to the engine with that level as an execution
    option, so every connection it takes runs at it: also after a commit or rollback inside the unit.
    """
    factory = database.session_factory_for(read_only=True) if read_only else database.session_factory
    options: dict[str, Any] = {}
    if isolation_level is not None:
        bind = factory.kw.get("bind")
        if isinstance(bind, (Engine, AsyncEngine)):
            options["bind"] = bind.execution_options(isolation_level=isolation_level)
    if isinstance(factory, sessionmaker):
        if factory.class_ not in guarded:
            guard_class(factory.class_)  # its own subclass: only the sessions it makes
        return factory(**options) if options else factory()
    sync_class = factory.kw.get("sync_session_class") or factory.class_.sync_session_class
    if sync_class is Session:
        options["sync_session_class"] = sync_class = GuardedSession
    if sync_class not in guarded:
        guard_class(sync_class)
    return factory(**options)


def apply_begin_options_sync(session: Session, read_only: bool, isolation_level: str | None) -> None:
    if isolation_level is None and not read_only:
        return
    if read_only:
        event.listen(session, "after_begin", _refuse_writes)
    session.connection(execution_options=_isolation_option(session, isolation_level))


async def apply_begin_options_async(session: AsyncSession, read_only: bool, isolation_level: str | None) -> None:
    if isolation_level is None and not read_only:
        return
    if read_only:
        event.listen(session.sync_session, "after_begin", _refuse_writes)
    await session.connection(execution_options=_isolation_option(session.sync_session, isolation_level))


def _isolation_option(session: Session, isolation_level: str | None) -> dict[str, Any]:
    # Connecting now surfaces a bad level at the unit's start. A session made from a factory without an
    # engine bind (`new_session` could not bind the level) gets it on this first connection only.
    if isolation_level is None or _bound_level(session) == isolation_level:
        return {}
    return {"isolation_level": isolation_level}


def _bound_level(session: Session) -> object:
    bind = session.bind
    return bind.get_execution_options().get("isolation_level") if isinstance(bind, Engine) else None


def _refuse_writes(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    """Ask the database to refuse writes in every transaction a read-only unit's session begins.

    Every one, not just the first: code that commits or rolls back inside the unit gets a new
    transaction, and MySQL's ``SET TRANSACTION READ ONLY`` covers a single transaction only.
    """
    if transaction.nested:
        return
    dialect = connection.dialect.name
    statement = _read_only_statement(dialect)
    if statement is None:
        return
    on_callers_connection = isinstance(session.bind, Connection)
    if dialect == "sqlite" and not on_callers_connection:
        _switch_query_only_off_on_return(connection)
    elif dialect in ("mysql", "mariadb") and on_callers_connection:
        return  # the caller's transaction is running, and MySQL cannot make a running transaction read-only
    connection.exec_driver_sql(statement)


def end_read_only_sync(session: Session, read_only: bool) -> None:
    # A caller's connection (uow.testing binds units to one) does not go back to the pool when the unit
    # ends, so the pool cannot undo SQLite's query_only on it: undo it here. On a pooled connection the
    # pool's reset hook undoes it too; doing it here as well does not depend on how the pool gets it back.
    if not read_only:
        return
    bind = session.bind
    if isinstance(bind, Connection):
        if bind.dialect.name == "sqlite":
            bind.exec_driver_sql("PRAGMA query_only = OFF")
        return
    if session.in_transaction() and session.get_bind().dialect.name == "sqlite":
        try:
            session.connection().exec_driver_sql("PRAGMA query_only = OFF")
        except Exception:
            logger.debug("uow: could not switch query_only off; the pool's reset hook will", exc_info=True)


async def end_read_only_async(session: AsyncSession, read_only: bool) -> None:
    if not read_only:
        return
    bind = session.bind
    if isinstance(bind, AsyncConnection):
        if bind.dialect.name == "sqlite":
            await bind.exec_driver_sql("PRAGMA query_only = OFF")
        return
    if session.in_transaction() and session.get_bind().dialect.name == "sqlite":
        try:
            await (await session.connection()).exec_driver_sql("PRAGMA query_only = OFF")
        except Exception:
            logger.debug("uow: could not switch query_only off; the pool's reset hook will", exc_info=True)


def _read_only_statement(dialect_name: str) -> str | None:
    if dialect_name == "sqlite":
        return "PRAGMA query_only = ON"
    if dialect_name in ("postgresql", "mysql", "mariadb"):
        return "SET TRANSACTION READ ONLY"
    return None


_QUERY_ONLY_KEY = "uow_query_only"


def _switch_query_only_off_on_return(connection: Connection) -> None:
    # SQLite's query_only belongs to the connection, not the transaction: undo it when the pool takes the
    # connection back, whatever the unit did with its session (commit, rollback, close) before that.
    connection.connection.info[_QUERY_ONLY_KEY] = True
    pool = connection.engine.pool
    if not event.contains(pool, "reset", _reset_query_only):
        event.listen(pool, "reset", _reset_query_only)


def _reset_query_only(dbapi_connection: Any, record: Any, reset_state: Any) -> None:
    info = getattr(record, "info", None)
    if not info or not info.pop(_QUERY_ONLY_KEY, False):
        return
    if reset_state.terminate_only or not reset_state.asyncio_safe:
        return  # the connection is being thrown away
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA query_only = OFF")
    finally:
        cursor.close()
