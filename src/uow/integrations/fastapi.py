"""FastAPI: the Starlette middleware for request units, and dependencies handing out services from them.

    app = FastAPI()
    app.add_middleware(UnitOfWorkMiddleware, database=db)

    @app.post("/users")
    async def create(name: str, users: UserService = Service(UserService)) -> dict[str, int]: ...

Decorated path operations (``@with_services``) need nothing from this module: FastAPI reads
their visible signature, and inside the request they join its unit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi import Depends, Request

from uow._decorators import ServiceSpec, provide_services
from uow._providers import snake_case
from uow.integrations._asgi import UnitOfWorkMiddleware
from uow.integrations._request import require_request_unit

__all__ = ["Service", "UnitOfWorkMiddleware", "service"]

T = TypeVar("T")

_INSTALL = "add the middleware first: app.add_middleware(uow.integrations.fastapi.UnitOfWorkMiddleware, database=db)"


def service(factory: ServiceSpec[T], /) -> Callable[[Request], AsyncIterator[T]]:
    """A dependency yielding `factory`'s service, built on the request's unit: ``Depends(service(UserService))``."""

    async def dependency(request: Request) -> AsyncIterator[T]:
        # Joining a sync request unit only builds the service on a not-yet-connected Session: no blocking I/O here.
        if require_request_unit(request, install=_INSTALL).is_async:
            async with provide_services(factory, connection=request) as (built,):
                yield built
        else:
            with provide_services(factory, connection=request) as (built,):
                yield built

    dependency.__name__ = dependency.__qualname__ = f"provide_{snake_case(getattr(factory, '__name__', 'service'))}"
    return dependency


def Service(factory: ServiceSpec[T], /) -> Any:
    """``users: UserService = Service(UserService)``: shorthand for ``Depends(service(UserService))``."""
    return Depends(service(factory))
