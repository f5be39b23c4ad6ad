"""What the web integrations' request units share; imports no framework.

A request unit is one lazy `Transaction` per request: its session opens the first time
something in the request needs it, and the integration commits it before the response
starts (status below 400) or rolls it back. While the request runs, the unit is the
innermost frame, so every decorated function, ``provide_services`` and ``current_session``
inside the request joins it. Importing this module teaches ``connection=`` to find the
unit of a request (an ASGI connection or scope, a WSGI request or environ).

When the application has a framework SQLAlchemy plugin (advanced-alchemy's), the
integration hands the unit that plugin's request session (`adopted_unit`): the unit
never makes a session of its own, so the request has one session, and uow commits it.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from uow._database import Database, get_default_database
from uow._decorators import ServiceSpec, provide_services
from uow._inject import register_connection_resolver
from uow._providers import snake_case
from uow._stack import Frame, push_transaction
from uow._transaction import Transaction
from uow.errors import ConfigurationError

__all__ = [
    "SCOPE_KEY",
    "DependencyCache",
    "ErrorResponse",
    "NoResponse",
    "RequestUnit",
    "adopted_unit",
    "request_unit",
    "require_request_unit",
]

SCOPE_KEY = "uow.request_unit"
"""Where the request unit lives: a key of the ASGI scope, or of the WSGI environ."""


class ErrorResponse(Exception):
    """Why a request unit rolled back without an exception: the response status was 400 or above."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the response status is {status}: the request's unit of work is rolled back")
        self.status = status


class NoResponse(Exception):
    """Why a request unit rolled back: the application returned without starting a response."""


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
            token.var.reset(token)  # `pop_frame(token)`, without the call

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
    is_async = isinstance(session, AsyncSession)
    if database is not None and database.is_async != is_async:
        raise ConfigurationError(
            f"{plugin}'s request session is {'async' if is_async else 'sync'} but uow's {database!r} is "
            f"{'async' if database.is_async else 'sync'}: give uow a Database of the same kind, built on the "
            "plugin's engine (uow.Database(engine=alchemy_config.get_engine()))"
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


T = TypeVar("T")


@contextlib.asynccontextmanager
async def request_service(factory: ServiceSpec[T], request: Any, *, install: str) -> AsyncGenerator[T, None]:
    """`factory`'s service built on `request`'s unit: what a framework's dependency yields."""
    # Joining a sync request unit only builds the service on a not-yet-connected Session: no blocking I/O here.
    if require_request_unit(request, install=install).is_async:
        async with provide_services(factory, connection=request) as (built,):
            yield built
    else:
        with provide_services(factory, connection=request) as (built,):
            yield built


class DependencyCache:
    """One framework dependency per service factory, so ``service(UserService)`` is the same object every time.

    Tests override a dependency by the object the application declared (FastAPI's
    ``app.dependency_overrides[service(UserService)] = ...``), which only works when asking
    again gives the same object. Factories are kept by equality (a bound method asked for twice
    is two equal objects); an unhashable factory gets a new dependency each time.
    """

    def __init__(self) -> None:
        self._made: dict[object, Any] = {}

    def get(self, factory: object, make: Callable[[], T]) -> T:
        try:
            found: T | None = self._made.get(factory)
        except TypeError:  # unhashable: nothing to key it by
            return make()
        if found is not None:
            return found
        made: T = self._made.setdefault(factory, make())
        return made


def dependency_name(factory: object) -> str:
    """The name a framework shows for the dependency providing `factory`'s service."""
    return f"provide_{snake_case(getattr(factory, '__name__', 'service'))}"


def _holder(connection: Any) -> Mapping[str, Any] | None:
    if isinstance(connection, Mapping):
        return connection
    for attribute in ("scope", "environ"):
        holder = getattr(connection, attribute, None)
        if isinstance(holder, Mapping):
            return holder
    return None


def _transaction_of(connection: Any) -> Transaction | None:
    # `request_unit(connection)`, without the call: every decorated function with a connection parameter asks.
    holder = connection if type(connection) is dict else _holder(connection)
    unit = holder.get(SCOPE_KEY) if holder is not None else None
    return unit.transaction if isinstance(unit, RequestUnit) else None


register_connection_resolver(_transaction_of)
