"""Litestar: a plugin giving each request one unit of work, and `Provide` helpers for services in it.

    app = Litestar(route_handlers=[...], plugins=[UnitOfWorkPlugin(db)])

    @get("/users/{user_id:int}")
    @with_services(UserService)
    async def get_user(users: UserService, user_id: int) -> User: ...

The handler, its guards, its dependencies and ``provide_services(..., connection=request)``
share the request's unit; it commits before the response starts when the status is below
400 and rolls back otherwise.

With advanced-alchemy's ``SQLAlchemyPlugin``, link the two so the request has one session:
``UnitOfWorkPlugin(db, alchemy=alchemy_config)``. The unit's session is then the plugin's
request session (the ``db_session`` dependency), and uow commits it; the plugin's
``before_send_handler`` finds it closed and has nothing left to do.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union

from uow._database import Database
from uow._decorators import ServiceSpec
from uow.errors import ConfigurationError
from uow.integrations._request import DependencyCache, alchemy_kind_error, dependency_name, request_service
from uow.integrations._require import requires

with requires("litestar", "Litestar", "litestar", "anyio"):
    from litestar import Litestar, Request
    from litestar.config.app import AppConfig
    from litestar.di import Provide
    from litestar.middleware import DefineMiddleware
    from litestar.plugins import InitPlugin

    from uow.integrations._asgi import RequestSession, Scope, UnitOfWorkMiddleware

if TYPE_CHECKING:
    from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig, SQLAlchemySyncConfig

    AlchemyConfig = Union[SQLAlchemyAsyncConfig, SQLAlchemySyncConfig]

__all__ = ["UnitOfWorkMiddleware", "UnitOfWorkPlugin", "provide_service"]

T = TypeVar("T")

_PROVIDERS = DependencyCache()
_INSTALL = "add the plugin first: Litestar(..., plugins=[uow.integrations.litestar.UnitOfWorkPlugin(db)])"

UNLINKED = (
    "UnitOfWorkPlugin is installed next to advanced-alchemy's SQLAlchemyPlugin without being linked to it: "
    "every request would get two sessions and two transactions (uow's and the plugin's db_session). "
    "Link them with UnitOfWorkPlugin(db, alchemy=alchemy_config), passing the config you gave SQLAlchemyPlugin, "
    "so uow's request unit is the plugin's request session; pass alchemy=False only if uow's Database is "
    "another database"
)
NOT_INSTALLED = (
    "UnitOfWorkPlugin(alchemy=...) was given an advanced-alchemy config that no SQLAlchemyPlugin of this app holds: "
    "install the plugin with that same config object, Litestar(plugins=[SQLAlchemyPlugin(config=alchemy_config), "
    "UnitOfWorkPlugin(db, alchemy=alchemy_config)])"
)


class UnitOfWorkPlugin(InitPlugin):
    """Installs `UnitOfWorkMiddleware` as the outermost middleware, so every request gets a lazy unit of work.

    `database` defaults to the one given to `uow.configure()`, looked up per request.
    `alchemy` links the unit to advanced-alchemy's ``SQLAlchemyPlugin``: give it the plugin's
    config, and the unit's session is the plugin's request session (``alchemy=False``: keep
    them apart, for a plugin serving another database).
    """

    __slots__ = ("alchemy", "database")

    def __init__(
        self, database: Database | None = None, *, alchemy: AlchemyConfig | Literal[False] | None = None
    ) -> None:
        self.database = database
        self.alchemy: AlchemyConfig | Literal[False] | None = alchemy

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Install the request-unit middleware outermost (linked to advanced-alchemy's plugin when asked to)."""
        request_session = self._request_session(_alchemy_configs(app_config.plugins))
        # Outermost, so the authentication middleware and everything inside can use the unit too.
        app_config.middleware.insert(
            0, DefineMiddleware(UnitOfWorkMiddleware, database=self.database, request_session=request_session)
        )
        return app_config

    def _request_session(self, installed: Sequence[Any]) -> RequestSession | None:
        config = self.alchemy
        if config is False:
            return None
        if config is None:
            if installed:
                raise ConfigurationError(UNLINKED)
            return None
        if not any(candidate is config for candidate in installed):
            raise ConfigurationError(NOT_INSTALLED)
        _check_kind(config, self.database)

        def request_session(scope: Scope) -> Any:
            return config.provide_session(Litestar.from_scope(scope).state, scope)

        return request_session


def _alchemy_configs(plugins: Sequence[Any]) -> list[Any]:
    """The configs of every advanced-alchemy SQLAlchemy plugin among `plugins` (none if it is not installed)."""
    try:
        from advanced_alchemy.extensions.litestar import SQLAlchemyInitPlugin, SQLAlchemyPlugin
    except ImportError:
        return []
    return [
        config
        for plugin in plugins
        if isinstance(plugin, (SQLAlchemyPlugin, SQLAlchemyInitPlugin))
        for config in plugin.config
    ]


def _check_kind(config: Any, database: Database | None) -> None:
    from advanced_alchemy.config.asyncio import SQLAlchemyAsyncConfig as AsyncConfig

    error = alchemy_kind_error(
        "UnitOfWorkPlugin",
        isinstance(config, AsyncConfig),
        database,
        engine="the plugin's engine, uow.Database(engine=alchemy_config.get_engine())",
    )
    if error is not None:
        raise error


def provide_service(factory: ServiceSpec[T], /) -> Provide:
    """A Litestar dependency handing out `factory`'s service, built on the request's unit.

    ``dependencies={"users": provide_service(UserService)}``, and in the handler
    ``users: NamedDependency[UserService]`` (``litestar.di.NamedDependency``, Litestar 2.23+), the
    explicit marker Litestar 3 requires. The same factory gives the same `Provide` every time.
    """
    return _PROVIDERS.get(factory, lambda: _provide(factory))


def _provide(factory: ServiceSpec[T]) -> Provide:
    async def dependency(request: Request[Any, Any, Any]) -> AsyncGenerator[T, None]:
        async with request_service(factory, request, install=_INSTALL) as built:
            yield built

    dependency.__name__ = dependency.__qualname__ = dependency_name(factory)
    return Provide(dependency)
