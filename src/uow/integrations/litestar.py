"""Litestar: a plugin giving each request one unit of work, and `Provide` helpers for services in it.

    app = Litestar(route_handlers=[...], plugins=[UnitOfWorkPlugin(db)])

    @get("/users/{user_id:int}")
    @with_services(UserService)
    async def get_user(users: UserService, user_id: int) -> User: ...

The handler, its guards, its dependencies and ``provide_services(..., connection=request)``
share the request's unit; it commits before the response starts when the status is below
400 and rolls back otherwise.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, TypeVar

from litestar import Request
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.plugins import InitPlugin

from uow._database import Database
from uow._decorators import ServiceSpec
from uow.integrations._asgi import UnitOfWorkMiddleware
from uow.integrations._request import dependency_name, request_service

__all__ = ["UnitOfWorkMiddleware", "UnitOfWorkPlugin", "provide_service"]

T = TypeVar("T")

_INSTALL = "add the plugin first: Litestar(..., plugins=[uow.integrations.litestar.UnitOfWorkPlugin(db)])"


class UnitOfWorkPlugin(InitPlugin):
    """Installs `UnitOfWorkMiddleware` as the outermost middleware, so every request gets a lazy unit of work.

    `database` defaults to the one given to `uow.configure()`, looked up per request.
    """

    __slots__ = ("database",)

    def __init__(self, database: Database | None = None) -> None:
        self.database = database

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        # Outermost, so the authentication middleware and everything inside can use the unit too.
        app_config.middleware.insert(0, DefineMiddleware(UnitOfWorkMiddleware, database=self.database))
        return app_config


def provide_service(factory: ServiceSpec[T], /) -> Provide:
    """A Litestar dependency handing out `factory`'s service, built on the request's unit.

    ``dependencies={"users": provide_service(UserService)}``
    """

    async def dependency(request: Request[Any, Any, Any]) -> AsyncGenerator[T, None]:
        async with request_service(factory, request, install=_INSTALL) as built:
            yield built

    dependency.__name__ = dependency.__qualname__ = dependency_name(factory)
    return Provide(dependency)
