"""The call path of a decorated function: what runs at every call of a plan made by `uow._planning`.

- `decorate` plans a function (`plan_function`) and `wrap`s it: the wrapper carries the
  function's name, `__wrapped__`, the visible `__signature__` and `__annotations__`.
- The wrappers (`_sync_wrapper`, `_async_wrapper`) take the direct path when the plan allows it
  (`FunctionPlan.build_on_session`) and the call passes nothing that changes the unit: join the
  innermost unit (`join_innermost`'s comparisons, made inline, or `join_request` for the request a
  connection parameter points at) or begin one (`begin_sync`), build the services, run, exit.
  Written out inline: every call pays for each frame.
- Otherwise the general path, `call_sync` / `call_async`: take the caller's ``session=``,
  ``connection=`` and services out (`_pop_caller_keywords`), run one attempt (`_attempt_sync`) or
  the retry loop around attempts (`_retry_sync`, when `_can_retry`).
- `UnitRun`: how every unit entered here, by `provide_services` and by ``with unit_of_work()``
  ends: the deadline disarmed, the providers (generator services) finished, then the unit exited,
  an error while finishing a provider noted on the primary one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from collections.abc import Callable, Sequence
from threading import get_ident
from typing import TYPE_CHECKING, Any

from uow import _observe
from uow._database import _default
from uow._failures import is_interrupt, note_secondary
from uow._planning import (
    PLAN_ATTRIBUTE,
    FunctionPlan,
    check_late_session_classes,
    database_of,
    layout,
    marked_tail,
    plan_function,
)
from uow._providers import (
    ServicePlan,
    build_async,
    build_sync,
    close_async,
    close_sync,
    current_overrides,
    underlying_function,
)
from uow._request_unit import find_connection, resolve_connection
from uow._retry import describe_error
from uow._sharing import task_on
from uow._stack import (
    ActiveUnit,
    Propagation,
    UnitSpec,
    begin_async,
    begin_sync,
    check_join,
    current_frame,
    enter_async,
    enter_sync,
    exit_async,
    exit_sync,
    find_frame,
    join_request,
)
from uow._timeout import Deadline, begin_deadline
from uow._transaction import Block, Transaction
from uow.errors import InjectionError

if TYPE_CHECKING:
    from uow._observe import Observer

__all__ = ["BOTH_SESSION_AND_CONNECTION", "UnitRun", "call_async", "call_sync", "decorate", "wrap"]

logger = logging.getLogger("uow")

BOTH_SESSION_AND_CONNECTION = "Cannot provide both 'session' and 'connection' - choose one"


# -- ending a unit ----------------------------------------------------------------------------


class UnitRun:
    """One entered unit and how it ends: finish the providers (generator services), then exit the unit.

    The general path of `with_services` makes one per attempt, ``with unit_of_work()`` one per
    block; a `ServicesContext` (`provide_services`) is one. The decisions are pure functions:
    `settle` (which error the unit ends with, and which one the caller gets instead of its own)
    and `kept_over`; `leave_*` / `end_*` are the sync and async shells around them.
    """

    __slots__ = ("closers", "deadline", "spec", "unit")

    def __init__(self, spec: UnitSpec, unit: ActiveUnit | None = None, deadline: Deadline | None = None) -> None:
        self.spec = spec
        self.unit = unit
        self.deadline = deadline
        self.closers: list[Any] = []  # the provider generators to finish, in the order they were opened

    def disarm(self, exc: BaseException | None) -> BaseException | None:
        """Disarm the deadline, if any: `exc`, or the `UnitTimeoutError` the unit ends with instead."""
        deadline, self.deadline = self.deadline, None
        return exc if deadline is None else deadline.leave(exc)

    def take_unit(self) -> ActiveUnit:
        unit, self.unit = self.unit, None
        assert unit is not None, "a UnitRun ends once, after its unit was entered"
        return unit

    def leave_sync(self, exc: BaseException | None) -> BaseException | None:
        """End the unit after its body returned (`exc` None) or raised `exc`: the error to raise instead, or None."""
        if exc is None and self.deadline is None and not self.closers:
            # The commonest ending: `end_sync(None)`, without its calls.
            unit, self.unit = self.unit, None
            assert unit is not None
            exit_sync(unit, None)
            return None
        failure, replacement = settle(self.spec, exc, self.disarm(exc))
        self.end_sync(failure)
        return replacement

    async def leave_async(self, exc: BaseException | None) -> BaseException | None:
        """End the unit after its body returned (`exc` None) or raised `exc`: the error to raise instead, or None."""
        if exc is None and self.deadline is None:
            failure = replacement = None
        else:
            failure, replacement = settle(self.spec, exc, self.disarm(exc))
        await self.end_async(failure)
        return replacement

    def end_sync(self, failure: BaseException | None) -> None:
        """Finish the providers with `failure` thrown in (None: run to their end), then exit the unit with it."""
        unit = self.take_unit()
        if self.closers:
            try:
                close_sync(self.closers, failure)
            except BaseException as close_error:
                primary = kept_over(failure, close_error)
                if primary is None:
                    exit_sync(unit, close_error)
                    raise
                note_secondary(primary, "finishing a provider", close_error)
        exit_sync(unit, failure)

    async def end_async(self, failure: BaseException | None) -> None:
        """Finish the providers with `failure` thrown in (None: run to their end), then exit the unit with it."""
        unit = self.take_unit()
        if self.closers:
            try:
                await close_async(self.closers, failure)
            except BaseException as close_error:
                primary = kept_over(failure, close_error)
                if primary is None:
                    await exit_async(unit, close_error)
                    raise
                note_secondary(primary, "finishing a provider", close_error)
        await exit_async(unit, failure)


def settle(
    spec: UnitSpec, exc: BaseException | None, ending: BaseException | None
) -> tuple[BaseException | None, BaseException | None]:
    """How a unit ends after its body returned (`exc` None) or raised `exc`, `ending` being what its
    deadline made of that (`exc` itself, or a `UnitTimeoutError`): (the error the unit ends with,
    the error the caller gets instead of `exc`).

    A timeout ends the unit and reaches the caller; an `exc` matching ``commit_on=`` ends it with
    nothing (it commits) and still propagates; any other `exc` ends it and propagates.
    """
    if ending is not exc:
        return ending, ending
    if exc is not None and spec.commits(exc):
        return None, None
    return exc, None


def kept_over(failure: BaseException | None, close_error: BaseException) -> BaseException | None:
    """Which error wins when finishing a provider raised `close_error` while the unit ends with `failure`.

    `failure`, when there is one and `close_error` is no interrupt: it stays the error the unit ends
    with and the caller sees, `close_error` noted on it. None: `close_error` ends the unit and propagates.
    """
    return None if failure is None or is_interrupt(close_error) else failure


# -- the general path -------------------------------------------------------------------------


def _pop_caller_keywords(
    plan: FunctionPlan, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, Transaction | None, dict[str, Any]]:
    session = kwargs.pop("session", None)
    request_tx = None
    if plan.connection_param is None:
        connection = kwargs.pop("connection", None)
        if connection is not None:
            if session is not None:
                raise ValueError(BOTH_SESSION_AND_CONNECTION)
            request_tx = resolve_connection(connection, label=plan.label)
    elif session is None:
        request_tx = _own_connection_unit(*plan.connection_param, args, kwargs)
    supplied: dict[str, Any] = {}
    if kwargs:
        for name in plan.target_names:
            if name in kwargs:
                supplied[name] = kwargs.pop(name)
    return session, request_tx, supplied


def _own_connection_unit(
    name: str, index: int | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Transaction | None:
    """The unfinished request unit the function's own connection parameter points at; None lets the active unit decide.

    The framework, not the user, passes it, so a value no integration knows (no request unit,
    or one already finished) is no error: the call joins or begins a unit as it would without it.
    """
    if name in kwargs:
        connection = kwargs[name]
    elif index is not None and len(args) > index:
        connection = args[index]
    else:
        return None
    tx = find_connection(connection) if connection is not None else None
    return tx if tx is not None and not tx.finished else None


def _can_retry(plan: FunctionPlan, session: Any, request_tx: Transaction | None) -> bool:
    if plan.retry is None or session is not None or request_tx is not None:
        return False
    if plan.spec.propagation is Propagation.REQUIRES_NEW:
        return True
    database = database_of(plan)
    return database is not None and find_frame(database) is None


def _observe_retries(observer: Observer, plan: FunctionPlan) -> contextlib.AbstractContextManager[None]:
    """One record (one span) for all the attempts of a retried unit: see `uow._observe`."""
    spec = plan.spec
    return observer.retrying(
        function=spec.label,
        database=database_of(plan),
        propagation=spec.propagation.value,
        read_only=spec.read_only,
        isolation_level=spec.isolation_level,
    )


def _retry_delay(plan: FunctionPlan, attempt: int, exc: Exception) -> float | None:
    """How long to wait before running `plan` again after attempt `attempt` raised `exc` (logged); None: do not."""
    retry = plan.retry
    assert retry is not None
    if not retry.should_retry(exc, attempt) or plan.spec.commits(exc):
        return None
    delay = retry.delay(attempt)
    # Never the exception's text: SQLAlchemy's carries the statement and its bound parameters.
    logger.warning(
        "uow: %s failed on attempt %d of %d with %s; running it again in %.3fs",
        plan.label,
        attempt,
        retry.attempts,
        describe_error(exc),
        delay,
    )
    if _observe.observer is not None:
        _observe.observer.unit_retried(attempt, exc)
    return delay


def _pending(plan: FunctionPlan, supplied: dict[str, Any]) -> tuple[list[str], list[ServicePlan], dict[Any, Any]]:
    """The services to build (those the caller did not pass): their parameters, their plans, and the
    cache of constructor dependencies, seeded with the services the caller passed."""
    names: list[str] = []
    plans: list[ServicePlan] = []
    cache: dict[Any, Any] = {}
    for name, service_plan in plan.targets:
        if name in supplied:
            key = service_plan.service_type if service_plan.service_type is not None else service_plan.provider
            cache[key] = supplied[name]
        else:
            names.append(name)
            plans.append(service_plan)
    return names, plans, cache


def call_sync(plan: FunctionPlan, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    session, request_tx, supplied = _pop_caller_keywords(plan, args, kwargs)
    if not _can_retry(plan, session, request_tx):
        return _attempt_sync(plan, args, kwargs, session, request_tx, supplied)
    if _observe.observer is not None:
        with _observe_retries(_observe.observer, plan):
            return _retry_sync(plan, args, kwargs, supplied)
    return _retry_sync(plan, args, kwargs, supplied)


def _retry_sync(plan: FunctionPlan, args: tuple[Any, ...], kwargs: dict[str, Any], supplied: dict[str, Any]) -> Any:
    attempt = 1
    while True:
        try:
            return _attempt_sync(plan, args, kwargs, None, None, supplied)
        except Exception as exc:
            delay = _retry_delay(plan, attempt, exc)
            if delay is None:
                raise
            time.sleep(delay)
            attempt += 1


def _attempt_sync(
    plan: FunctionPlan,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    session: Any,
    request_tx: Transaction | None,
    supplied: dict[str, Any],
) -> Any:
    spec = plan.spec
    unit, unit_session = enter_sync(spec, session=session, request_tx=request_tx)
    run = UnitRun(
        spec, unit, begin_deadline(spec, unit, unit_session, is_async=False) if spec.timeout is not None else None
    )
    try:
        values = _values_sync(plan, unit_session, supplied, run.closers)
        call_args, call_kwargs = layout(plan, args, kwargs, values)
        result = plan.fn(*call_args, **call_kwargs)
    except BaseException as exc:
        replacement = run.leave_sync(exc)
        if replacement is None:
            raise
        raise replacement from exc
    replacement = run.leave_sync(None)
    if replacement is not None:
        raise replacement
    return result


def _values_sync(plan: FunctionPlan, session: Any, supplied: dict[str, Any], closers: list[Any]) -> dict[str, Any]:
    values: dict[str, Any] = dict.fromkeys(plan.session_params, session)
    if plan.targets:
        names, plans, cache = _pending(plan, supplied)
        values.update(zip(names, build_sync(plans, session, cache, closers), strict=True))
        values.update(supplied)
    return values


async def call_async(plan: FunctionPlan, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    session, request_tx, supplied = _pop_caller_keywords(plan, args, kwargs)
    if not _can_retry(plan, session, request_tx):
        return await _attempt_async(plan, args, kwargs, session, request_tx, supplied)
    if _observe.observer is not None:
        with _observe_retries(_observe.observer, plan):
            return await _retry_async(plan, args, kwargs, supplied)
    return await _retry_async(plan, args, kwargs, supplied)


async def _retry_async(
    plan: FunctionPlan, args: tuple[Any, ...], kwargs: dict[str, Any], supplied: dict[str, Any]
) -> Any:
    attempt = 1
    while True:
        try:
            return await _attempt_async(plan, args, kwargs, None, None, supplied)
        except Exception as exc:
            delay = _retry_delay(plan, attempt, exc)
            if delay is None:
                raise
            await asyncio.sleep(delay)
            attempt += 1


async def _attempt_async(
    plan: FunctionPlan,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    session: Any,
    request_tx: Transaction | None,
    supplied: dict[str, Any],
) -> Any:
    spec = plan.spec
    unit, unit_session = await enter_async(spec, session=session, request_tx=request_tx)
    run = UnitRun(
        spec, unit, begin_deadline(spec, unit, unit_session, is_async=True) if spec.timeout is not None else None
    )
    try:
        values = await _values_async(plan, unit_session, supplied, run.closers)
        call_args, call_kwargs = layout(plan, args, kwargs, values)
        result = await plan.fn(*call_args, **call_kwargs)
    except BaseException as exc:
        replacement = await run.leave_async(exc)
        if replacement is None:
            raise
        raise replacement from exc
    replacement = await run.leave_async(None)
    if replacement is not None:
        raise replacement
    return result


async def _values_async(
    plan: FunctionPlan, session: Any, supplied: dict[str, Any], closers: list[Any]
) -> dict[str, Any]:
    values: dict[str, Any] = dict.fromkeys(plan.session_params, session)
    if plan.targets:
        names, plans, cache = _pending(plan, supplied)
        values.update(zip(names, await build_async(plans, session, cache, closers), strict=True))
        values.update(supplied)
    return values


# -- wrapping ---------------------------------------------------------------------------------


def wrap(plan: FunctionPlan) -> Callable[..., Any]:
    """A new function with `plan.fn`'s metadata and its visible signature; the original is left untouched."""
    fn = plan.fn
    wrapper = _async_wrapper(plan) if plan.is_async else _sync_wrapper(plan)
    tail = marked_tail(plan)
    if tail is not None:
        wrapper = _spreading(wrapper, plan, *tail)
    if inspect.isroutine(fn):
        functools.update_wrapper(wrapper, fn)
    else:
        # A partial or a callable instance: named after the function it runs, without copying its __dict__.
        functools.update_wrapper(wrapper, underlying_function(fn), updated=())
        wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    wrapper.__annotations__ = dict(plan.visible_annotations)
    vars(wrapper).update({"__signature__": plan.visible_signature, PLAN_ATTRIBUTE: plan})
    return wrapper


def _spreading(wrapper: Callable[..., Any], plan: FunctionPlan, visible: int, tail: tuple[str, ...]) -> Any:
    """`wrapper`, taking the values a caller passed positionally to the marked tail as its keywords."""
    label = plan.label

    def move(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        extra = args[visible:]
        if len(extra) > len(tail):
            raise InjectionError(
                f"{label} takes at most {visible + len(tail)} positional arguments ({len(args)} given)"
            )
        for name, value in zip(tail, extra, strict=False):  # extra may be shorter than tail
            if name in kwargs:
                raise InjectionError(f"{label} got multiple values for argument {name!r}")
            kwargs[name] = value
        return args[:visible]

    if plan.is_async:

        async def spreading_async(*args: Any, **kwargs: Any) -> Any:
            if len(args) > visible:
                args = move(args, kwargs)
            return await wrapper(*args, **kwargs)

        return spreading_async

    def spreading(*args: Any, **kwargs: Any) -> Any:
        if len(args) > visible:
            args = move(args, kwargs)
        return wrapper(*args, **kwargs)

    return spreading


# The wrappers below take the direct path when `plan.build_on_session` allows it and the call passes
# none of `plan.caller_names`: the general path (`call_sync` / `call_async`) minus the steps that would
# do nothing there. It is written out here, not in helpers, because every call pays for each frame.
#
# A function with its own framework connection parameter (a Starlette endpoint's `request`, a Litestar
# guard's `connection`): the general path reads that parameter and, when it points at a request unit
# that has not finished, decides with ``request_tx=`` that unit. The wrappers take the same steps
# directly when that unit is the innermost one (`join_request`: a plain join of it) or when the
# parameter points at no unit (then `join_innermost`'s comparisons, inline, or `begin_*`); everything
# else goes the general way. A plain join that fails marks the joined block rollback-only, which is all
# `exit_sync` / `exit_async` would do for it.


def _sync_wrapper(plan: FunctionPlan) -> Callable[..., Any]:
    build, spec, fn, layout_after = plan.build_on_session, plan.spec, plan.fn, plan.layout_after
    if build is None:
        late_check = bool(plan.session_classes)

        def general(*args: Any, **kwargs: Any) -> Any:
            if late_check and kwargs.get("session") is None:
                check_late_session_classes(plan)
            return call_sync(plan, args, kwargs)

        return general
    sole_name, sole_cls = plan.sole_service if plan.sole_service is not None else ("", None)
    has_connection = plan.connection_param is not None
    connection_name, connection_index = plan.connection_param if plan.connection_param is not None else ("", None)
    # The connection parameter is the function's own: passing it by keyword is the framework's doing.
    caller_names = plan.caller_names - {connection_name}
    # What `join_innermost(spec, False)` reads of the spec, read once.
    required, own_database, checks_isolation = spec.required, spec.database, spec.isolation_level is not None

    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        if (kwargs and not caller_names.isdisjoint(kwargs)) or current_overrides() is not None:
            return call_sync(plan, args, kwargs)
        unit: ActiveUnit | None = None
        tx: Transaction | None = None
        block: Block | None = None
        request_tx = _own_connection_unit(connection_name, connection_index, args, kwargs) if has_connection else None
        if request_tx is not None:
            joined = join_request(spec, request_tx, False)
            if joined is None:
                return call_sync(plan, args, kwargs)
            tx, block = joined.transaction, joined.block
        else:
            # `join_innermost(spec, False)`, inline: the plain join of the innermost unit, or a begin.
            frame = current_frame()
            if frame is not None and required:
                database = own_database if own_database is not None else _default.database
                active = frame.transaction
                if (
                    frame.database is database
                    and database is not None
                    and not database.is_async
                    and not active.finished
                    and frame.owner == get_ident()
                ):
                    if active.read_only or checks_isolation:
                        check_join(spec, active)
                    tx, block = active, frame.block
        session: Any
        if tx is None:
            unit, session = begin_sync(spec)  # not `enter_sync`: the join was just ruled out
        else:
            session = tx.session if tx.session is not None else tx.open_sync()
        try:
            values = {sole_name: sole_cls(session)} if sole_cls is not None else build(session)
            if kwargs:
                values = {**kwargs, **values}
            if len(args) > layout_after:
                args, values = layout(plan, args, values, {})
            result = fn(*args, **values)
        except BaseException as exc:
            if unit is None:
                block.rollback_only = True  # type: ignore[union-attr]  # leaving a failed join: `exit_sync`, inline
            else:
                exit_sync(unit, exc)
            raise
        if unit is not None:  # leaving a plain join without an error does nothing (see exit_sync)
            exit_sync(unit, None)
        return result

    return sync_wrapper


def _async_wrapper(plan: FunctionPlan) -> Callable[..., Any]:
    build, spec, fn, layout_after = plan.build_on_session, plan.spec, plan.fn, plan.layout_after
    if build is None:
        late_check = bool(plan.session_classes)

        async def general(*args: Any, **kwargs: Any) -> Any:
            if late_check and kwargs.get("session") is None:
                check_late_session_classes(plan)
            return await call_async(plan, args, kwargs)

        return general
    sole_name, sole_cls = plan.sole_service if plan.sole_service is not None else ("", None)
    # The wrapper's coroutine is what a unit in flight holds: its frame has a slot per local and per
    # name read from here (8 bytes each, times every unit awaiting at once), so it keeps few of both.
    connection_param = plan.connection_param  # (name, index) or None, passed whole
    caller_names = plan.caller_names - {connection_param[0]} if connection_param is not None else plan.caller_names
    required, own_database, checks_isolation = spec.required, spec.database, spec.isolation_level is not None

    async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
        if (kwargs and not caller_names.isdisjoint(kwargs)) or current_overrides() is not None:
            return await call_async(plan, args, kwargs)
        unit: ActiveUnit | None = None
        tx: Transaction | None = None
        block: Block | None = None
        frame: Any = None  # the request unit the connection points at, its join, or the innermost frame
        if connection_param is not None:
            frame = _own_connection_unit(connection_param[0], connection_param[1], args, kwargs)
        if frame is not None:
            frame = join_request(spec, frame, True)
            if frame is None:
                return await call_async(plan, args, kwargs)
            tx, block = frame.transaction, frame.block
        else:
            # `join_innermost(spec, True)`, inline: the plain join of the innermost unit, or a begin.
            frame = current_frame()
            if frame is not None and required:
                database = own_database if own_database is not None else _default.database
                tx = frame.transaction
                if (
                    frame.database is database
                    and database is not None
                    and database.is_async
                    and not tx.finished  # pyright: ignore[reportOptionalMemberAccess]  # `tx` is the frame's
                    and task_on(frame.loop) is frame.owner
                ):
                    if tx.read_only or checks_isolation:  # pyright: ignore[reportOptionalMemberAccess]
                        check_join(spec, tx)  # pyright: ignore[reportArgumentType]
                    block = frame.block
                else:
                    tx = None
        session: Any
        if tx is None:
            unit, session = await begin_async(spec)  # not `enter_async`: the join was just ruled out
        else:
            session = tx.session if tx.session is not None else await tx.open_async()
        try:
            values = {sole_name: sole_cls(session)} if sole_cls is not None else build(session)
            if kwargs:
                values = {**kwargs, **values}
            if len(args) > layout_after:
                args, values = layout(plan, args, values, {})
            result = fn(*args, **values)
            del values  # the call holds what it needs: no dict kept while the unit is in flight
            result = await result
        except BaseException as exc:
            if unit is None:
                block.rollback_only = True  # type: ignore[union-attr]  # leaving a failed join: `exit_async`, inline
            else:
                await exit_async(unit, exc)
            raise
        if unit is not None:  # leaving a plain join without an error does nothing (see exit_async)
            await exit_async(unit, None)
        return result

    return async_wrapper


def decorate(target: Any, services: Sequence[Any], **options: Any) -> Any:
    """Decorate a function, method, classmethod or staticmethod: `options` are `plan_function`'s."""
    if isinstance(target, (classmethod, staticmethod)):
        return type(target)(decorate(target.__func__, services, **options))
    return wrap(plan_function(target, services, **options))
