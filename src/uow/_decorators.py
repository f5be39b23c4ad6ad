"""The public decorators and context managers: `with_services`, `unit_of_work`, `provide_services`.

The overloads below (and `uow._typing`) only teach type checkers the shapes; at run time every
form is the same small object (`_ServicesDecorator`, `UnitOfWork`, `ServicesContext`).
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, Generic, TypeVar, Union, overload

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from typing_extensions import ParamSpec

from uow._database import Database
from uow._inject import BOTH_SESSION_AND_CONNECTION, NO_SERVICES, decorate, resolve_connection
from uow._providers import ServicePlan, build_async, build_sync, close_async, close_sync, plan_service
from uow._retry import Retry
from uow._unit import (
    ActiveUnit,
    ExceptionClasses,
    Propagation,
    UnitSpec,
    _is_interrupt,
    _note_secondary,
    enter_async,
    enter_sync,
    exit_async,
    exit_sync,
)
from uow.errors import ConfigurationError, InjectionError

if TYPE_CHECKING:  # typing only: the decorated functions are plain functions at run time
    from uow._typing import (
        _AnyDecorator,
        _Decorator1,
        _Decorator2,
        _Decorator3,
        _Decorator4,
        _Decorator5,
        _Decorator6,
    )

__all__ = ["ServicesContext", "UnitOfWork", "provide_services", "unit_of_work", "with_services"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

S1 = TypeVar("S1")
S2 = TypeVar("S2")
S3 = TypeVar("S3")
S4 = TypeVar("S4")
S5 = TypeVar("S5")
S6 = TypeVar("S6")

ServiceSpec = Union[type[T], Callable[..., AsyncIterator[T]], Callable[..., Iterator[T]], Callable[..., Awaitable[T]]]
"""A service class, or a provider taking the session and returning/yielding the service."""

PropagationArg = Union[Propagation, str]


@overload
def with_services(  # pyright: ignore[reportOverlappingOverload]
    s1: ServiceSpec[S1],
    /,
    *,
    database: Database | None = None,
    propagation: PropagationArg = "required",
    read_only: bool = False,
    isolation_level: str | None = None,
    retry: Retry | int | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> _Decorator1[S1]: ...


@overload
def with_services(
    s1: ServiceSpec[S1],
    s2: ServiceSpec[S2],
    /,
    *,
    database: Database | None = None,
    propagation: PropagationArg = "required",
    read_only: bool = False,
    isolation_level: str | None = None,
    retry: Retry | int | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> _Decorator2[S1, S2]: ...


@overload
def with_services(
    s1: ServiceSpec[S1],
    s2: ServiceSpec[S2],
    s3: ServiceSpec[S3],
    /,
    *,
    database: Database | None = None,
    propagation: PropagationArg = "required",
    read_only: bool = False,
    isolation_level: str | None = None,
    retry: Retry | int | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> _Decorator3[S1, S2, S3]: ...


@overload
def with_services(
    s1: ServiceSpec[S1],
    s2: ServiceSpec[S2],
    s3: ServiceSpec[S3],
    s4: ServiceSpec[S4],
    /,
    *,
    database: Database | None = None,
    propagation: PropagationArg = "required",
    read_only: bool = False,
    isolation_level: str | None = None,
    retry: Retry | int | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> _Decorator4[S1, S2, S3, S4]: ...


@overload
def with_services(
    s1: ServiceSpec[S1],
    s2: ServiceSpec[S2],
    s3: ServiceSpec[S3],
    s4: ServiceSpec[S4],
    s5: ServiceSpec[S5],
    /,
    *,
    database: Database | None = None,
    propagation: PropagationArg = "required",
    read_only: bool = False,
    isolation_level: str | None = None,
    retry: Retry | int | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> _Decorator5[S1, S2, S3, S4, S5]: ...


@overload
def with_services(
    s1: ServiceSpec[S1],
    s2: ServiceSpec[S2],
    s3: ServiceSpec[S3],
    s4: ServiceSpec[S4],
    s5: ServiceSpec[S5],
    s6: ServiceSpec[S6],
    /,
    *,
    database: Database | None = None,
    propagation: PropagationArg = "required",
    read_only: bool = False,
    isolation_level: str | None = None,
    retry: Retry | int | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> _Decorator6[S1, S2, S3, S4, S5, S6]: ...


@overload
def with_services(
    *services: Any,
    database: Database | None = None,
    propagation: PropagationArg = "required",
    read_only: bool = False,
    isolation_level: str | None = None,
    retry: Retry | int | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> _AnyDecorator: ...


def with_services(
    *services: Any,
    database: Database | None = None,
    propagation: PropagationArg = "required",
    read_only: bool = False,
    isolation_level: str | None = None,
    retry: Retry | int | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> Any:
    """Decorate a function so it runs in a unit of work with `services` built and passed in as keyword arguments.

    The unit commits when the function returns and rolls back when it raises (unless the
    exception matches ``commit_on=`` and not ``rollback_on=``: then it commits, and the exception
    still propagates); it joins a unit already active for the same database (see `propagation`;
    ``durable=True`` refuses to run inside one). Callers may pass ``session=`` (join a session
    they own), ``connection=`` (join a request's unit) or a service under its parameter name
    (used as is).
    """
    if not services:
        raise ValueError(NO_SERVICES)
    return _ServicesDecorator(
        services,
        database=database,
        propagation=propagation,
        read_only=read_only,
        isolation_level=isolation_level,
        retry=retry,
        name="with_services",
        events=_events(durable, commit_on, rollback_on),
    )


def _events(durable: bool, commit_on: ExceptionClasses, rollback_on: ExceptionClasses) -> dict[str, Any]:
    """The keyword options of issue 16, passed on only when set (the common call stays as it was)."""
    options: dict[str, Any] = {}
    if durable is not False:
        options["durable"] = durable
    if commit_on is not None:
        options["commit_on"] = commit_on
    if rollback_on is not None:
        options["rollback_on"] = rollback_on
    return options


class _ServicesDecorator:
    __slots__ = ("database", "events", "isolation_level", "name", "propagation", "read_only", "retry", "services")

    def __init__(
        self,
        services: Sequence[Any],
        *,
        database: Database | None,
        propagation: PropagationArg,
        read_only: bool,
        isolation_level: str | None,
        retry: Retry | int | None,
        name: str,
        events: dict[str, Any],
    ) -> None:
        self.services = tuple(services)
        self.database = database
        self.propagation = propagation
        self.read_only = read_only
        self.isolation_level = isolation_level
        self.retry = retry
        self.name = name
        self.events = events

    def __call__(self, fn: Any, /) -> Any:
        return decorate(
            fn,
            self.services,
            database=self.database,
            propagation=self.propagation,
            read_only=self.read_only,
            isolation_level=self.isolation_level,
            retry=self.retry,
            decorator=self.name,
            **self.events,
        )


class UnitOfWork:
    """The bare unit: a decorator, and a context manager (``with`` / ``async with``) yielding the session.

    As a decorator it passes the unit's session to a parameter annotated ``Session`` /
    ``AsyncSession`` (or named ``session`` / ``db_session``), if the function has one.
    """

    __slots__ = ("_spec", "database", "events", "isolation_level", "propagation", "read_only", "retry")

    def __init__(
        self,
        *,
        database: Database | None,
        propagation: PropagationArg,
        read_only: bool,
        isolation_level: str | None,
        retry: Retry | int | None,
        events: dict[str, Any],
    ) -> None:
        self.database = database
        self.propagation = propagation
        self.read_only = read_only
        self.isolation_level = isolation_level
        self.retry = retry
        self.events = events
        self._spec = UnitSpec(
            database=database,
            propagation=propagation,
            read_only=read_only,
            isolation_level=isolation_level,
            what="unit_of_work()",
            **events,
        )

    @overload
    def __call__(self, fn: Callable[Concatenate[Session, P], R], /) -> Callable[P, R]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[AsyncSession, P], R], /) -> Callable[P, R]: ...
    # The session after `self` / `cls` / a job's `ctx`: that parameter becomes positional-only to checkers.
    @overload
    def __call__(self, fn: Callable[Concatenate[T, Session, P], R], /) -> Callable[Concatenate[T, P], R]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[T, AsyncSession, P], R], /) -> Callable[Concatenate[T, P], R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Callable[P, R]: ...
    def __call__(self, fn: Callable[..., R], /) -> Callable[..., R]:
        decorated: Callable[..., R] = decorate(
            fn,
            (),
            database=self.database,
            propagation=self.propagation,
            read_only=self.read_only,
            isolation_level=self.isolation_level,
            retry=self.retry,
            decorator="unit_of_work",
            **self.events,
        )
        return decorated

    def _refuse_retry(self) -> None:
        if self.retry is not None:
            raise ConfigurationError(
                "unit_of_work(retry=...) cannot retry a 'with' block: a block cannot be run again. "
                "Put the work in a function decorated with @unit_of_work(retry=...) or @with_services(..., retry=...)"
            )

    def __enter__(self) -> Any:
        self._refuse_retry()
        unit, session = enter_sync(self._spec)
        _push_entered(self, unit)
        return session

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        exit_sync(_pop_entered(self), None if exc is None or self._spec.commits(exc) else exc)

    async def __aenter__(self) -> Any:
        self._refuse_retry()
        unit, session = await enter_async(self._spec)
        _push_entered(self, unit)
        return session

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await exit_async(_pop_entered(self), None if exc is None or self._spec.commits(exc) else exc)


# The units entered through `with`/`async with`, per context: one UnitOfWork object (made once at
# module level, say) may be entered by many tasks or threads at the same time.
_entered: contextvars.ContextVar[tuple[tuple[UnitOfWork, ActiveUnit], ...]] = contextvars.ContextVar(
    "uow_entered_units", default=()
)


def _push_entered(owner: UnitOfWork, unit: ActiveUnit) -> None:
    _entered.set((*_entered.get(), (owner, unit)))


def _pop_entered(owner: UnitOfWork) -> ActiveUnit:
    stack = _entered.get()
    for index in range(len(stack) - 1, -1, -1):
        if stack[index][0] is owner:
            _entered.set(stack[:index] + stack[index + 1 :])
            return stack[index][1]
    raise RuntimeError("unit_of_work(): __exit__ without a matching __enter__ in this task or thread")


def unit_of_work(
    *,
    database: Database | None = None,
    propagation: PropagationArg = "required",
    read_only: bool = False,
    isolation_level: str | None = None,
    retry: Retry | int | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> UnitOfWork:
    """A unit of work without services: ``with unit_of_work() as session:``, or ``@unit_of_work()``.

    ``commit_on=`` / ``rollback_on=`` / ``durable=`` as for `with_services`.
    """
    return UnitOfWork(
        database=database,
        propagation=propagation,
        read_only=read_only,
        isolation_level=isolation_level,
        retry=retry,
        events=_events(durable, commit_on, rollback_on),
    )


@functools.lru_cache(maxsize=256)
def _plans_for(services: tuple[Any, ...]) -> tuple[ServicePlan, ...]:
    return tuple(plan_service(service, for_async=True, owner="provide_services()") for service in services)


class ServicesContext(Generic[T]):
    """What `provide_services` returns: use it with ``with`` (sync Database) or ``async with`` (async Database)."""

    __slots__ = ("_closers", "_connection", "_plans", "_session", "_spec", "_unit")

    def __init__(
        self,
        services: tuple[Any, ...],
        *,
        session: Any,
        connection: Any,
        database: Database | None,
        propagation: PropagationArg,
        read_only: bool,
        isolation_level: str | None,
        events: dict[str, Any],
    ) -> None:
        if session is not None and connection is not None:
            raise ValueError(BOTH_SESSION_AND_CONNECTION)
        try:
            self._plans = _plans_for(services)
        except TypeError as unhashable:
            if isinstance(unhashable, InjectionError):
                raise
            self._plans = tuple(plan_service(s, for_async=True, owner="provide_services()") for s in services)
        self._session = session
        self._connection = connection
        self._spec = UnitSpec(
            database=database,
            propagation=propagation,
            read_only=read_only,
            isolation_level=isolation_level,
            what="provide_services(" + ", ".join(p.label for p in self._plans) + ")",
            **events,
        )
        self._unit: ActiveUnit | None = None
        self._closers: list[Any] = []

    def _request_tx(self) -> Any:
        if self._connection is None:
            return None
        return resolve_connection(self._connection, what=self._spec.what)

    def __enter__(self) -> T:
        for plan in self._plans:
            if plan.is_async_only:
                raise InjectionError(
                    f"{self._spec.what}: provider {plan.label} is async; use 'async with provide_services(...)'"
                )
        unit, session = enter_sync(self._spec, session=self._session, request_tx=self._request_tx())
        self._unit = unit
        try:
            services = build_sync(self._plans, session, {}, self._closers)
        except BaseException as exc:
            self._fail_sync(exc)
            raise
        return tuple(services)  # type: ignore[return-value]

    def _fail_sync(self, exc: BaseException) -> None:
        unit, self._unit = self._unit, None
        assert unit is not None
        try:
            close_sync(self._closers, exc)
        except BaseException as close_error:
            # The block's exception stays the one the caller sees, unless this is an interrupt.
            if _is_interrupt(close_error):
                exit_sync(unit, close_error)
                raise
            _note_secondary(exc, "finishing a provider", close_error)
        exit_sync(unit, exc)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and not self._spec.commits(exc):
            self._fail_sync(exc)
            return
        unit, self._unit = self._unit, None
        assert unit is not None
        try:
            close_sync(self._closers, None)
        except BaseException as failure:
            exit_sync(unit, failure)
            raise
        exit_sync(unit, None)

    async def __aenter__(self) -> T:
        unit, session = await enter_async(self._spec, session=self._session, request_tx=self._request_tx())
        self._unit = unit
        try:
            services = await build_async(self._plans, session, {}, self._closers)
        except BaseException as exc:
            await self._fail_async(exc)
            raise
        return tuple(services)  # type: ignore[return-value]

    async def _fail_async(self, exc: BaseException) -> None:
        unit, self._unit = self._unit, None
        assert unit is not None
        try:
            await close_async(self._closers, exc)
        except BaseException as close_error:
            # The block's exception stays the one the caller sees, unless this is an interrupt.
            if _is_interrupt(close_error):
                await exit_async(unit, close_error)
                raise
            _note_secondary(exc, "finishing a provider", close_error)
        await exit_async(unit, exc)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and not self._spec.commits(exc):
            await self._fail_async(exc)
            return
        unit, self._unit = self._unit, None
        assert unit is not None
        try:
            await close_async(self._closers, None)
        except BaseException as failure:
            await exit_async(unit, failure)
            raise
        await exit_async(unit, None)


@overload
def provide_services(
    s1: ServiceSpec[S1],
    /,
    *,
    session: Any = None,
    connection: Any = None,
    database: Database | None = None,
    propagation: PropagationArg = "required",
    read_only: bool = False,
    isolation_level: str | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> ServicesContext[tuple[S1]]: ...


@overload
def provide_services(
    s1: ServiceSpec[S1],
    s2: ServiceSpec[S2],
    /,
    *,
    session: Any = None,
    connection: Any = None,
    database: Database | None = None,
    propagation: PropagationArg = "required",
    read_only: bool = False,
    isolation_level: str | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> ServicesContext[tuple[S1, S2]]: ...


@overload
def provide_services(
    s1: ServiceSpec[S1],
    s2: ServiceSpec[S2],
    s3: ServiceSpec[S3],
    /,
    *,
    session: Any = None,
    connection: Any = None,
    database: Database | None = None,
    propagation: PropagationArg = "required",
    read_only: bool = False,
    isolation_level: str | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> ServicesContext[tuple[S1, S2, S3]]: ...


@overload
def provide_services(
    s1: ServiceSpec[S1],
    s2: ServiceSpec[S2],
    s3: ServiceSpec[S3],
    s4: ServiceSpec[S4],
    /,
    *,
    session: Any = None,
    connection: Any = None,
    database: Database | None = None,
    propagation: PropagationArg = "required",
    read_only: bool = False,
    isolation_level: str | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> ServicesContext[tuple[S1, S2, S3, S4]]: ...


@overload
def provide_services(
    s1: ServiceSpec[S1],
    s2: ServiceSpec[S2],
    s3: ServiceSpec[S3],
    s4: ServiceSpec[S4],
    s5: ServiceSpec[S5],
    /,
    *,
    session: Any = None,
    connection: Any = None,
    database: Database | None = None,
    propagation: PropagationArg = "required",
    read_only: bool = False,
    isolation_level: str | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> ServicesContext[tuple[S1, S2, S3, S4, S5]]: ...


@overload
def provide_services(
    s1: ServiceSpec[S1],
    s2: ServiceSpec[S2],
    s3: ServiceSpec[S3],
    s4: ServiceSpec[S4],
    s5: ServiceSpec[S5],
    s6: ServiceSpec[S6],
    /,
    *,
    session: Any = None,
    connection: Any = None,
    database: Database | None = None,
    propagation: PropagationArg = "required",
    read_only: bool = False,
    isolation_level: str | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> ServicesContext[tuple[S1, S2, S3, S4, S5, S6]]: ...


@overload
def provide_services(
    *services: Any,
    session: Any = None,
    connection: Any = None,
    database: Database | None = None,
    propagation: PropagationArg = "required",
    read_only: bool = False,
    isolation_level: str | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> ServicesContext[tuple[Any, ...]]: ...


def provide_services(
    *services: Any,
    session: Any = None,
    connection: Any = None,
    database: Database | None = None,
    propagation: PropagationArg = "required",
    read_only: bool = False,
    isolation_level: str | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> ServicesContext[Any]:
    """A unit with `services` built in it: ``with provide_services(A, B) as (a, b):`` (or ``async with``).

    Opens or joins a unit exactly like `with_services`; the tuple is in the order given.
    """
    if not services:
        raise ValueError(NO_SERVICES)
    return ServicesContext(
        tuple(services),
        session=session,
        connection=connection,
        database=database,
        propagation=propagation,
        read_only=read_only,
        isolation_level=isolation_level,
        events=_events(durable, commit_on, rollback_on),
    )
