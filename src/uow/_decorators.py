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

from uow._calling import BOTH_SESSION_AND_CONNECTION, UnitRun, decorate
from uow._database import Database
from uow._providers import (
    ServicePlan,
    build_async,
    build_sync,
    current_overrides,
    direct_builder,
    plan_service,
    single_positional,
)
from uow._request_unit import resolve_connection
from uow._retry import Retry
from uow._stack import ExceptionClasses, Propagation, UnitSpec, enter_async, enter_sync
from uow._timeout import begin_deadline, parse_timeout
from uow.errors import ConfigurationError, InjectionError

if TYPE_CHECKING:  # typing only: the decorated functions are plain functions at run time
    from uow._typing import (
        After1,
        AnyDecorator,
        Decorator1,
        Decorator2,
        Decorator3,
        Decorator4,
        Decorator5,
        Decorator6,
        FnFirst,
        Kept,
        KeptMethod,
    )

__all__ = ["ServicesContext", "UnitOfWork", "provide_services", "unit_of_work", "with_services"]

P = ParamSpec("P")
PB = ParamSpec("PB")
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

NO_SERVICES = "At least one service provider is required"


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
    timeout: float | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> Decorator1[S1]: ...


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
    timeout: float | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> Decorator2[S1, S2]: ...


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
    timeout: float | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> Decorator3[S1, S2, S3]: ...


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
    timeout: float | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> Decorator4[S1, S2, S3, S4]: ...


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
    timeout: float | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> Decorator5[S1, S2, S3, S4, S5]: ...


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
    timeout: float | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> Decorator6[S1, S2, S3, S4, S5, S6]: ...


@overload
def with_services(
    *services: Any,
    database: Database | None = None,
    propagation: PropagationArg = "required",
    read_only: bool = False,
    isolation_level: str | None = None,
    retry: Retry | int | None = None,
    timeout: float | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> AnyDecorator: ...


def with_services(
    *services: Any,
    database: Database | None = None,
    propagation: PropagationArg = "required",
    read_only: bool = False,
    isolation_level: str | None = None,
    retry: Retry | int | None = None,
    timeout: float | None = None,
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
    (used as is). A parameter marked ``= injected()`` that no listed service takes gets its own
    (`uow.injected`).
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
        timeout=timeout,
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
    __slots__ = (
        "database",
        "events",
        "isolation_level",
        "name",
        "propagation",
        "read_only",
        "retry",
        "services",
        "timeout",
    )

    def __init__(
        self,
        services: Sequence[Any],
        *,
        database: Database | None,
        propagation: PropagationArg,
        read_only: bool,
        isolation_level: str | None,
        retry: Retry | int | None,
        timeout: float | None,
        name: str,
        events: dict[str, Any],
    ) -> None:
        self.services = tuple(services)
        self.database = database
        self.propagation = propagation
        self.read_only = read_only
        self.isolation_level = isolation_level
        self.retry = retry
        self.timeout = timeout
        self.name = name
        parse_timeout(timeout, label=f"@{name}(...)")  # refused here already, before a function is decorated
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
            timeout=self.timeout,
            **self.events,
        )


class UnitOfWork:
    """The bare unit: a decorator, and a context manager (``with`` / ``async with``) yielding the session.

    As a decorator it passes the unit's session to a parameter annotated ``Session`` /
    ``AsyncSession`` (or named ``session`` / ``db_session``), if the function has one, and
    builds the service of each parameter marked ``= injected()`` (`uow.injected`).
    """

    __slots__ = ("_spec", "database", "events", "isolation_level", "propagation", "read_only", "retry", "timeout")

    def __init__(
        self,
        *,
        database: Database | None,
        propagation: PropagationArg,
        read_only: bool,
        isolation_level: str | None,
        retry: Retry | int | None,
        timeout: float | None = None,
        events: dict[str, Any],
    ) -> None:
        self.database = database
        self.propagation = propagation
        self.read_only = read_only
        self.isolation_level = isolation_level
        self.retry = retry
        self.timeout = timeout
        self.events = events
        self._spec = UnitSpec(
            database=database,
            propagation=propagation,
            read_only=read_only,
            isolation_level=isolation_level,
            label="unit_of_work()",
            timeout=parse_timeout(timeout, label="unit_of_work()"),
            **events,
        )

    # The function's type minus a first Session / AsyncSession parameter, plus session= / connection=.
    # (mypy: a function taking two sessions would match the next overloads too; the first match wins.)
    @overload
    def __call__(self, fn: Callable[Concatenate[Session, P], R], /) -> Kept[P, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: Callable[Concatenate[AsyncSession, P], R], /) -> Kept[P, R]: ...  # type: ignore[overload-overlap]
    # The session after `self` / `cls` / a job's `ctx`: that parameter becomes positional-only to checkers.
    @overload
    def __call__(self, fn: Callable[Concatenate[T, Session, P], R], /) -> After1[T, P, P, R]: ...  # pyright: ignore[reportOverlappingOverload]
    @overload
    def __call__(self, fn: Callable[Concatenate[T, AsyncSession, P], R], /) -> After1[T, P, P, R]: ...
    # Any other function keeps its own signature (parameters marked `= injected()` are optional there),
    # and a caller may pass session= / connection=; a first positional parameter binds like `self`.
    @overload
    def __call__(self, fn: FnFirst[T, P, PB, R], /) -> KeptMethod[T, P, PB, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Kept[P, R]: ...
    def __call__(self, fn: Callable[..., R], /) -> Any:
        decorated: Callable[..., R] = decorate(
            fn,
            (),
            database=self.database,
            propagation=self.propagation,
            read_only=self.read_only,
            isolation_level=self.isolation_level,
            retry=self.retry,
            decorator="unit_of_work",
            timeout=self.timeout,
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
        spec = self._spec
        unit, session = enter_sync(spec)
        deadline = begin_deadline(spec, unit, session, is_async=False) if spec.timeout is not None else None
        _push_entered(self, UnitRun(spec, unit, deadline))
        return session

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        replacement = _pop_entered(self).leave_sync(exc)
        if replacement is not None:
            raise replacement from exc

    async def __aenter__(self) -> Any:
        self._refuse_retry()
        spec = self._spec
        unit, session = await enter_async(spec)
        deadline = begin_deadline(spec, unit, session, is_async=True) if spec.timeout is not None else None
        _push_entered(self, UnitRun(spec, unit, deadline))
        return session

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        replacement = await _pop_entered(self).leave_async(exc)
        if replacement is not None:
            raise replacement from exc


# The units entered through `with`/`async with`, per context: one UnitOfWork object (made once at
# module level, say) may be entered by many tasks or threads at the same time.
_entered: contextvars.ContextVar[tuple[tuple[UnitOfWork, UnitRun], ...]] = contextvars.ContextVar(
    "uow_entered_units", default=()
)


def _push_entered(owner: UnitOfWork, run: UnitRun) -> None:
    _entered.set((*_entered.get(), (owner, run)))


def _pop_entered(owner: UnitOfWork) -> UnitRun:
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
    timeout: float | None = None,
    durable: bool = False,
    commit_on: ExceptionClasses = None,
    rollback_on: ExceptionClasses = None,
) -> UnitOfWork:
    """A unit of work without services: ``with unit_of_work() as session:``, or ``@unit_of_work()``.

    ``commit_on=`` / ``rollback_on=`` / ``durable=`` as for `with_services`.

    As a decorator it also fills the parameters marked ``= injected()``: type checkers then see the
    function's own signature, exact in every layout (docs/typing.md).
    """
    return UnitOfWork(
        database=database,
        propagation=propagation,
        read_only=read_only,
        isolation_level=isolation_level,
        retry=retry,
        timeout=timeout,
        events=_events(durable, commit_on, rollback_on),
    )


class _Prepared:
    """What `provide_services` works out once per tuple of services (cached by `_prepared_for`)."""

    __slots__ = ("async_only", "build_on_session", "label", "plans", "sole_service")

    def __init__(self, services: tuple[Any, ...]) -> None:
        self.plans = tuple(plan_service(service, for_async=True, owner="provide_services()") for service in services)
        self.label = "provide_services(" + ", ".join(p.label for p in self.plans) + ")"
        # The first provider that needs 'async with', for the error a plain 'with' gets.
        self.async_only = next((p.label for p in self.plans if p.is_async_only), None)
        targets = [(str(index), plan) for index, plan in enumerate(self.plans)]
        self.build_on_session = _direct_tuple(self.plans, targets)
        # The commonest case, built inline by `__enter__`: the class of the one service, taking the session first.
        single = single_positional(targets, ()) if self.build_on_session is not None else None
        self.sole_service = single[1] if single is not None else None


def _direct_tuple(
    plans: tuple[ServicePlan, ...], targets: list[tuple[str, ServicePlan]]
) -> Callable[[Any], tuple[Any, ...]] | None:
    """For services that are all distinct classes built from the session alone: a function from the
    session to the services, as `build_sync`/`build_async` would build them outside an `override`
    block (no cache to share, no generator to finish, nothing to await); None for any other services."""
    keys = [p.service_type if p.service_type is not None else p.provider for p in plans]
    if len(set(keys)) != len(keys):
        return None  # one class listed twice: the general path builds it once and hands it out twice
    build = direct_builder(targets, ())
    if build is None:
        return None
    return lambda session: tuple(build(session).values())


@functools.lru_cache(maxsize=256)
def _prepared_for(services: tuple[Any, ...]) -> _Prepared:
    return _Prepared(services)


class ServicesContext(UnitRun, Generic[T]):
    """What `provide_services` returns: use it with ``with`` (sync Database) or ``async with`` (async Database).

    It is the `UnitRun` of the unit it enters: leaving the block finishes the providers, then exits the unit.
    """

    __slots__ = ("_connection", "_prepared", "_session")

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
        timeout: float | None = None,
        events: dict[str, Any],
    ) -> None:
        if session is not None and connection is not None:
            raise ValueError(BOTH_SESSION_AND_CONNECTION)
        try:
            self._prepared = _prepared_for(services)
        except TypeError as unhashable:
            if isinstance(unhashable, InjectionError):
                raise
            self._prepared = _Prepared(services)
        self._session = session
        self._connection = connection
        label = self._prepared.label
        UnitRun.__init__(
            self,
            UnitSpec(
                database=database,
                propagation=propagation,
                read_only=read_only,
                isolation_level=isolation_level,
                label=label,
                timeout=None if timeout is None else parse_timeout(timeout, label=label),
                **events,
            ),
        )

    def _request_tx(self) -> Any:
        if self._connection is None:
            return None
        return resolve_connection(self._connection, label=self.spec.label)

    def __enter__(self) -> T:
        prepared, spec = self._prepared, self.spec
        if prepared.async_only is not None:
            raise InjectionError(
                f"{spec.label}: provider {prepared.async_only} is async; use 'async with provide_services(...)'"
            )
        if self._session is None and self._connection is None:
            unit, session = enter_sync(spec)
        else:
            unit, session = enter_sync(spec, session=self._session, request_tx=self._request_tx())
        self.unit = unit
        if spec.timeout is not None:
            self.deadline = begin_deadline(spec, unit, session, is_async=False)
        build, sole = prepared.build_on_session, prepared.sole_service
        try:
            if build is not None and current_overrides() is None:
                return (sole(session),) if sole is not None else build(session)  # type: ignore[return-value]
            services = build_sync(prepared.plans, session, {}, self.closers)
        except BaseException as exc:
            self.disarm(exc)
            self.end_sync(exc)
            raise
        return tuple(services)  # type: ignore[return-value]

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        replacement = self.leave_sync(exc)
        if replacement is not None:
            raise replacement from exc

    async def __aenter__(self) -> T:
        prepared, spec = self._prepared, self.spec
        if self._session is None and self._connection is None:
            unit, session = await enter_async(spec)
        else:
            unit, session = await enter_async(spec, session=self._session, request_tx=self._request_tx())
        self.unit = unit
        if spec.timeout is not None:
            self.deadline = begin_deadline(spec, unit, session, is_async=True)
        build, sole = prepared.build_on_session, prepared.sole_service
        try:
            if build is not None and current_overrides() is None:
                return (sole(session),) if sole is not None else build(session)  # type: ignore[return-value]
            services = await build_async(prepared.plans, session, {}, self.closers)
        except BaseException as exc:
            self.disarm(exc)
            await self.end_async(exc)
            raise
        return tuple(services)  # type: ignore[return-value]

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        replacement = await self.leave_async(exc)
        if replacement is not None:
            raise replacement from exc


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
    timeout: float | None = None,
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
    timeout: float | None = None,
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
    timeout: float | None = None,
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
    timeout: float | None = None,
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
    timeout: float | None = None,
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
    timeout: float | None = None,
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
    timeout: float | None = None,
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
    timeout: float | None = None,
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
        timeout=timeout,
        events=_events(durable, commit_on, rollback_on),
    )
