"""Case 3: pure dispatch. A call that joins a unit already active, so no session work at all.

Each variant calls the same function with one service built on the active session:
by hand, through a minimal `functools.wraps` decorator, through @with_services, through
dishka's injection (request container entered once, service not cached, like ours) and
through that-depends' @inject. What remains is the cost of the machinery per call.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from dishka import FromDishka, Provider, Scope, make_async_container, make_container
from dishka.integrations.base import wrap_injection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from that_depends import BaseContainer, Provide, inject, providers

from benchmarks.common import AsyncItems, Items, aiosqlite_engine, async_factory, sqlite_engine, sync_factory
from benchmarks.harness import Case, Setup, Variant
from uow import Database, unit_of_work, with_services

# What a hand-written decorator would keep: the session of the active unit.
_sync_session: contextvars.ContextVar[Session] = contextvars.ContextVar("bench_sync_session")
_async_session: contextvars.ContextVar[AsyncSession] = contextvars.ContextVar("bench_async_session")


def wraps_injector(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The smallest decorator one could write by hand: build the service on the active session, pass it in."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, items=Items(_sync_session.get()), **kwargs)

    return wrapper


def async_wraps_injector(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await fn(*args, items=AsyncItems(_async_session.get()), **kwargs)

    return wrapper


class SyncContainer(BaseContainer):
    session = providers.Factory(_sync_session.get)
    items = providers.Factory(Items, session=session)


class AsyncContainer(BaseContainer):
    session = providers.Factory(_async_session.get)
    items = providers.Factory(AsyncItems, session=session)


def _dishka_provider(service: type, session_type: type) -> Provider:
    provider = Provider()
    provider.from_context(provides=session_type, scope=Scope.REQUEST)
    # cache=False: a new service per call, as uow builds one per unit.
    provider.provide(service, scope=Scope.REQUEST, cache=False)
    return provider


@contextmanager
def sync_dispatch() -> Iterator[Setup]:
    engine = sqlite_engine()
    db = Database(session_factory=sync_factory(engine))
    container = make_container(_dishka_provider(Items, Session))
    request: contextvars.ContextVar[Any] = contextvars.ContextVar("bench_dishka_request")

    def plain(items: Items) -> Items:
        return items

    wrapped = wraps_injector(plain)
    decorated = with_services(Items, database=db)(plain)

    def dishka_target(items: FromDishka[Items]) -> Items:
        return items

    dishka_injected = wrap_injection(
        func=dishka_target, container_getter=lambda _args, _kwargs: request.get(), is_async=False
    )

    @inject
    def td_target(items: Items = Provide[SyncContainer.items]) -> Items:
        return items

    try:
        with unit_of_work(database=db) as session, container(context={Session: session}) as request_container:
            token = _sync_session.set(session)
            request.set(request_container)
            try:
                yield Setup(
                    [
                        Variant("bare call, service built by hand", lambda: plain(Items(session)), kind="baseline"),
                        Variant("functools.wraps decorator", wrapped, kind="baseline"),
                        Variant("@with_services (joins)", decorated),
                        Variant("dishka inject", dishka_injected, kind="alternative"),
                        Variant("that-depends @inject", td_target, kind="alternative"),
                    ]
                )
            finally:
                _sync_session.reset(token)
    finally:
        container.close()
        engine.dispose()


@asynccontextmanager
async def async_dispatch() -> AsyncIterator[Setup]:
    async with aiosqlite_engine() as engine:
        db = Database(session_factory=async_factory(engine))
        container = make_async_container(_dishka_provider(AsyncItems, AsyncSession))
        request: contextvars.ContextVar[Any] = contextvars.ContextVar("bench_dishka_async_request")

        async def plain(items: AsyncItems) -> AsyncItems:
            return items

        wrapped = async_wraps_injector(plain)
        decorated = with_services(AsyncItems, database=db)(plain)

        async def dishka_target(items: FromDishka[AsyncItems]) -> AsyncItems:
            return items

        dishka_injected = wrap_injection(
            func=dishka_target, container_getter=lambda _args, _kwargs: request.get(), is_async=True
        )

        @inject
        async def td_target(items: AsyncItems = Provide[AsyncContainer.items]) -> AsyncItems:
            return items

        try:
            async with unit_of_work(database=db) as session, container(context={AsyncSession: session}) as rc:
                token = _async_session.set(session)
                request.set(rc)
                try:
                    yield Setup(
                        [
                            Variant(
                                "bare call, service built by hand", lambda: plain(AsyncItems(session)), kind="baseline"
                            ),
                            Variant("functools.wraps decorator", wrapped, kind="baseline"),
                            Variant("@with_services (joins)", decorated),
                            Variant("dishka inject", dishka_injected, kind="alternative"),
                            Variant("that-depends @inject", td_target, kind="alternative"),
                        ]
                    )
                finally:
                    _async_session.reset(token)
        finally:
            await container.close()


_MEASURES = (
    "a call that joins an already active unit (no session work), building one service on its session: "
    "a bare call, a hand-written functools.wraps decorator, @with_services, dishka, that-depends"
)
_DEPS = ("dishka", "that_depends")

CASES = [
    Case("dispatch-sync", "pure dispatch, sync", _MEASURES, sync_dispatch, False, 4000, "call", _DEPS),
    Case("dispatch-async", "pure dispatch, async", _MEASURES, async_dispatch, True, 4000, "call", _DEPS),
]
