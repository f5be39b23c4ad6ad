"""Starlette: a pure ASGI middleware giving each request one unit of work.

    app = Starlette(routes=..., middleware=[Middleware(UnitOfWorkMiddleware, database=db)])

Inside a request, decorated functions, ``provide_services(..., connection=request)`` and
``uow.current_session()`` all share the request's unit; it commits before the response
starts when the status is below 400 and rolls back otherwise. The middleware speaks
plain ASGI; it needs Starlette itself only to link advanced-alchemy's extension.

With advanced-alchemy's ``AdvancedAlchemy`` extension, link the two so the request has one
session: ``app.add_middleware(UnitOfWorkMiddleware, database=db, alchemy=alchemy)``. The
unit's session is then the extension's request session (``alchemy.provide_session()``),
and uow commits it before the response starts; the extension finds it closed afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from uow._database import Database
from uow.errors import ConfigurationError
from uow.integrations._request import alchemy_kind_error
from uow.integrations._require import requires

# The middleware runs on anyio, which Starlette (and every ASGI framework uow integrates) brings.
with requires("starlette", "Starlette", "anyio"):
    from uow.integrations import _asgi
    from uow.integrations._asgi import ASGIApp, RequestSession, Scope

if TYPE_CHECKING:
    from advanced_alchemy.extensions.starlette import AdvancedAlchemy

__all__ = ["UnitOfWorkMiddleware"]

UNLINKED = (
    "UnitOfWorkMiddleware is installed next to advanced-alchemy's AdvancedAlchemy extension without being linked "
    "to it: every request would get two sessions and two transactions (uow's and the extension's). Link them with "
    "app.add_middleware(UnitOfWorkMiddleware, database=db, alchemy=alchemy), passing the AdvancedAlchemy object of "
    "this app, so uow's request unit is the extension's request session; pass alchemy=False only if uow's Database "
    "is another database"
)
NOT_THIS_APP = (
    "UnitOfWorkMiddleware(alchemy=...) was given an AdvancedAlchemy extension this app was not initialised with: "
    "pass the one created with AdvancedAlchemy(config=..., app=app)"
)


class UnitOfWorkMiddleware(_asgi.UnitOfWorkMiddleware):
    """One unit of work per HTTP request: committed before the response starts when its status is below 400.

    A 4xx/5xx response, an exception or a request that never responds rolls the unit back.
    When the commit fails, the client gets a 500 instead of the application's response
    and the error is logged. `database` defaults to the one given to `uow.configure()`,
    looked up per request. `alchemy` links the unit to advanced-alchemy's extension: its
    session is then the extension's request session for config `alchemy_key`
    (``alchemy=False``: keep them apart, for an extension serving another database).
    """

    plugin_name = "advanced-alchemy's AdvancedAlchemy extension"

    def __init__(
        self,
        app: ASGIApp,
        database: Database | None = None,
        *,
        alchemy: AdvancedAlchemy | Literal[False] | None = None,
        alchemy_key: str | None = None,
    ) -> None:
        super().__init__(app, database, request_session=_request_session(alchemy, alchemy_key))
        self.alchemy_key = alchemy_key
        self.alchemy: AdvancedAlchemy | Literal[False] | None = alchemy

    def startup_error(self, scope: Scope) -> ConfigurationError | None:
        """Refuse an advanced-alchemy extension on the app that this middleware was not linked to."""
        installed: object = getattr(getattr(scope.get("app"), "state", None), "advanced_alchemy", None)
        if self.alchemy is None:
            return ConfigurationError(UNLINKED) if installed is not None else None
        if self.alchemy is False:
            return None
        if id(installed) != id(self.alchemy):
            return ConfigurationError(NOT_THIS_APP)
        return _kind_error(self.alchemy, self.alchemy_key, self.database)


def _kind_error(alchemy: AdvancedAlchemy, key: str | None, database: Database | None) -> ConfigurationError | None:
    from advanced_alchemy.config.asyncio import SQLAlchemyAsyncConfig

    return alchemy_kind_error(
        "UnitOfWorkMiddleware",
        isinstance(alchemy.get_config(key), SQLAlchemyAsyncConfig),
        database,
        engine="the extension's engine, uow.Database(engine=alchemy.get_engine())",
    )


def _request_session(alchemy: AdvancedAlchemy | Literal[False] | None, key: str | None) -> RequestSession | None:
    if alchemy is None or alchemy is False:
        return None
    from starlette.requests import Request

    def request_session(scope: Scope) -> Any:
        # The extension keeps the session on request.state, which lives in the scope: every Request
        # made for this scope (its dependencies', its middleware's) sees the same one.
        return alchemy.get_session(Request(scope), key)

    return request_session
