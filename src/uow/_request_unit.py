"""The request unit, and finding a connection's unit: core, so ``connection=`` works without any integration imported.

A request unit is one lazy `Transaction` per request: its session opens the first time
something in the request needs it, and the framework integration that made it commits it
before the response starts (status below 400) or rolls it back. While the request runs the
unit is the innermost frame of the stack, so every decorated function, ``provide_services``
and ``current_session`` inside the request joins it.

The integration keeps the unit under `SCOPE_KEY` in the request's mapping (the ASGI scope,
the WSGI environ): `find_connection` reads it back from whatever a caller passes as
``connection=`` (the scope or environ itself, or a request object holding one).

When the application has a framework SQLAlchemy plugin (advanced-alchemy's), the
integration hands the unit that plugin's request session (`adopted_unit`): the unit never
makes a session of its own, so the request has one session, and uow commits it.

This module imports no framework.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from uow._database import Database, get_default_database
from uow._stack import Frame, pop_frame, push_transaction
from uow._transaction import Transaction
from uow.errors import ConfigurationError

__all__ = [
    "SCOPE_KEY",
    "RequestUnit",
    "adopted_unit",
    "find_connection",
    "kind_mismatch",
    "request_unit",
    "require_request_unit",
    "resolve_connection",
]

SCOPE_KEY = "uow.request_unit"
"""Where the request unit lives: a key of the ASGI scope, or of the WSGI environ."""


class RequestUnit:
    """The unit of work of one request: a lazy transaction, ambient while the request runs, finished once."""

    __slots__ = ("_token", "finished", "transaction")

    def __init__(self, database: Database | None, session: Session | AsyncSession | None = None) -> None:
        # With `session` (a framework plugin's request session) the unit owns that session's transaction:
        # it commits, rolls back and closes it like one it made. `database` may then be None (no uow
        # Database configured): every unit inside the request joins it anyway, being the innermost.
        self.transaction = Transaction(database, session=session)
        self.finished = False
        self._token: contextvars.Token[Frame | None] | None = None

    @property
    def is_async(self) -> bool:
        return self.transaction.is_async

    def activate(self) -> None:
        """Make the unit the innermost frame of the current context, so the request's code joins it."""
        self._token = push_transaction(self.transaction)

    def deactivate(self) -> None:
        """Undo `activate` (in the same context it ran in)."""
        token, self._token = self._token, None
        if token is not None:
            pop_frame(token)

    # Once finished, the frame stays on the stack until `deactivate` but is skipped by every lookup
    # (a finished transaction is never joined): on_commit hooks and a streamed body get units of their own.

    def finish_sync(self, exc: BaseException | None) -> None:
        """Commit (`exc` None) or roll back, and close; only the first call does anything."""
        if not self.finished:
            self.finished = True
            self.transaction.finish_sync(exc)

    async def finish_async(self, exc: BaseException | None) -> None:
        """Commit (`exc` None) or roll back, and close; only the first call does anything."""
        if not self.finished:
            self.finished = True
            await self.transaction.finish_async(exc)


def kind_mismatch(database: Database | None, is_async: bool) -> tuple[str, str] | None:
    """When a framework plugin's session (or config) is not of `database`'s kind: the two kinds,
    ('async' or 'sync' for the plugin, then for the Database); None when they agree or there is no Database."""
    if database is None or database.is_async == is_async:
        return None
    return ("async" if is_async else "sync"), ("async" if database.is_async else "sync")


def adopted_unit(database: Database | None, session: object, *, plugin: str) -> RequestUnit:
    """A request unit on `session`, the request session of the framework's SQLAlchemy `plugin`.

    `database` (else the configured default, else none) is the Database decorated functions
    look for: it must be the one they resolve to, or they would not find the request's unit.
    """
    if not isinstance(session, (Session, AsyncSession)):
        raise ConfigurationError(
            f"{plugin} gave the request a {type(session).__name__}, not a SQLAlchemy Session or AsyncSession"
        )
    if database is None:
        database = get_default_database()
    mismatch = kind_mismatch(database, isinstance(session, AsyncSession))
    if mismatch is not None:
        raise ConfigurationError(
            f"{plugin}'s request session is {mismatch[0]} but uow's {database!r} is {mismatch[1]}: give uow a "
            "Database of the same kind, built on the plugin's engine (uow.Database(engine=alchemy_config.get_engine()))"
        )
    return RequestUnit(database, session)


def request_unit(connection: Any) -> RequestUnit | None:
    """The unit an integration keeps for `connection` (an ASGI connection or scope, a WSGI request or environ)."""
    holder = _holder(connection)
    unit = holder.get(SCOPE_KEY) if holder is not None else None
    return unit if isinstance(unit, RequestUnit) else None


def require_request_unit(connection: Any, *, install: str) -> RequestUnit:
    """The unit of `connection`'s request, or a `ConfigurationError` saying what to `install`."""
    unit = request_unit(connection)
    if unit is None:
        raise ConfigurationError(f"this request has no unit of work: {install}")
    return unit


def find_connection(connection: Any) -> Transaction | None:
    """The transaction of the request unit an integration keeps for `connection`, or None."""
    # `request_unit(connection)`, without the call: every decorated function with a connection parameter asks.
    holder = connection if type(connection) is dict else _holder(connection)
    unit = holder.get(SCOPE_KEY) if holder is not None else None
    return unit.transaction if isinstance(unit, RequestUnit) else None


def resolve_connection(connection: Any, *, label: str) -> Transaction:
    """The transaction of `connection`'s request unit, or a `ConfigurationError` naming `label`."""
    tx = find_connection(connection)
    if tx is not None:
        return tx
    raise ConfigurationError(
        f"{label} was given connection={type(connection).__name__}, but no framework integration knows it: "
        "install the request unit of your framework (uow.integrations.litestar.UnitOfWorkPlugin, "
        "uow.integrations.starlette.UnitOfWorkMiddleware, ...) or pass session= instead"
    )


def _holder(connection: Any) -> Mapping[str, Any] | None:
    if isinstance(connection, Mapping):
        return connection
    for attribute in ("scope", "environ"):
        holder = getattr(connection, attribute, None)
        if isinstance(holder, Mapping):
            return holder
    return None
