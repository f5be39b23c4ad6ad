"""FastAPI: the Starlette middleware for request units, and dependencies handing out services from them.

    app = FastAPI()
    app.add_middleware(UnitOfWorkMiddleware, database=db)

    @app.post("/users")
    async def create(name: str, users: UserService = Service(UserService)) -> dict[str, int]: ...

Decorated path operations (``@with_services``) need nothing from this module: FastAPI reads
their visible signature, and inside the request they join its unit. With advanced-alchemy's
extension, link it (``add_middleware(UnitOfWorkMiddleware, database=db, alchemy=alchemy)``)
so the unit's session is the one ``alchemy.provide_session()`` hands out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from uow._decorators import ServiceSpec
from uow.integrations._request import DependencyCache, dependency_name, request_service
from uow.integrations._require import requires

with requires("fastapi", "FastAPI", "fastapi", "starlette", "anyio"):
    from fastapi import Depends, Request

    from uow.integrations.starlette import UnitOfWorkMiddleware

__all__ = ["Service", "UnitOfWorkMiddleware", "service"]

T = TypeVar("T")

_DEPENDENCIES = DependencyCache()
_INSTALL = "add the middleware first: app.add_middleware(uow.integrations.fastapi.UnitOfWorkMiddleware, database=db)"


def service(factory: ServiceSpec[T], /) -> Callable[[Request], AsyncIterator[T]]:
    """A dependency yielding `factory`'s service, built on the request's unit: ``Depends(service(UserService))``.

    The same factory gives the same dependency every time, so a test can replace it the way
    FastAPI's testing docs show: ``app.dependency_overrides[service(UserService)] = FakeUserService``.
    """
    return _DEPENDENCIES.get(factory, lambda: _dependency(factory))


def _dependency(factory: ServiceSpec[T]) -> Callable[[Request], AsyncIterator[T]]:
    async def dependency(request: Request) -> AsyncIterator[T]:
        async with request_service(factory, request, install=_INSTALL) as built:
            yield built

    dependency.__name__ = dependency.__qualname__ = dependency_name(factory)
    return dependency


def Service(factory: ServiceSpec[T], /) -> Any:
    """``users: UserService = Service(UserService)``: shorthand for ``Depends(service(UserService))``.

    Override it in tests by ``service(UserService)``, the dependency inside.
    """
    return Depends(service(factory))
