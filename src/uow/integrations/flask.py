"""Flask: an extension giving each request one unit of work, kept on ``flask.g``.

    db = Database("sqlite:///app.db")
    app = Flask(__name__)
    UnitOfWork(app, db)           # or: uow_ext = UnitOfWork(); uow_ext.init_app(app, db)

Views, decorated functions and ``uow.current_session()`` inside a request share its unit.
It commits in ``after_request`` when the status is below 400, before Flask sends the
response, so a failed commit becomes a 500; anything else rolls it back.

With advanced-alchemy's Flask extension, link the two so the request has one session:
``UnitOfWork(app, db, alchemy=alchemy)`` after ``alchemy = AdvancedAlchemy(config, app)``.
The unit's session is then ``alchemy.get_session()``'s, and uow commits it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from uow._database import Database, resolve_database
from uow.errors import ConfigurationError
from uow.integrations._request import SCOPE_KEY, ErrorResponse, NoResponse, RequestUnit, adopted_unit
from uow.integrations._require import requires

with requires("flask", "Flask", "flask"):
    from flask import Flask, Response, current_app, g, request

if TYPE_CHECKING:
    from advanced_alchemy.extensions.flask import AdvancedAlchemy

__all__ = ["UnitOfWork"]

UNLINKED = (
    "UnitOfWork is installed next to advanced-alchemy's AdvancedAlchemy extension without being linked to it: "
    "every request would get two sessions and two transactions (uow's and the extension's). Link them with "
    "UnitOfWork(app, db, alchemy=alchemy), passing the AdvancedAlchemy object of this app, so uow's request unit "
    "is the extension's request session; pass alchemy=False only if uow's Database is another database"
)
NOT_THIS_APP = (
    "UnitOfWork(alchemy=...) was given an AdvancedAlchemy extension this app was not initialised with: "
    "initialise it first, AdvancedAlchemy(config, app), then UnitOfWork(app, db, alchemy=alchemy)"
)
ASYNC_ALCHEMY = (
    "UnitOfWork cannot link advanced-alchemy's async config {key!r}: Flask runs each async view in an event loop "
    "of its own, so no async session can be the request's unit; link a SQLAlchemySyncConfig"
)

_G_KEY = "uow_unit"

_ASYNC_DATABASE = (
    "UnitOfWork needs a sync Database: Flask runs each async view in an event loop of its own, which ends "
    "before the response is finished, so no async session can live for the whole request. Give the extension "
    "a sync Database; in async views, decorate functions with @with_services(..., database=async_db) so each "
    "owns its unit (and give async_db engine_options={'poolclass': NullPool}: pooled async connections cannot "
    "move between event loops)"
)


class UnitOfWork:
    """The Flask extension: one lazy unit of work per request, committed or rolled back before the response goes out.

    `database` defaults to the one given to `uow.configure()`, looked up per request.
    `alchemy` links the unit to advanced-alchemy's extension (initialised on the app first):
    its session is then the extension's request session for `alchemy_key`
    (``alchemy=False``: keep them apart, for an extension serving another database).
    """

    def __init__(
        self,
        app: Flask | None = None,
        database: Database | None = None,
        *,
        alchemy: AdvancedAlchemy | Literal[False] | None = None,
        alchemy_key: str = "default",
    ) -> None:
        self.database = database
        self.alchemy: AdvancedAlchemy | Literal[False] | None = alchemy
        self.alchemy_key = alchemy_key
        if app is not None:
            self.init_app(app, database)

    def init_app(self, app: Flask, database: Database | None = None) -> None:
        """Install the request unit on `app` (`database` overrides the one given to the constructor)."""
        if database is not None:
            self.database = database
        if self.database is not None and self.database.is_async:
            raise ConfigurationError(_ASYNC_DATABASE)
        self._check_alchemy(app)
        app.extensions["uow"] = self
        app.before_request(self._begin)
        app.after_request(self._finish)
        app.teardown_request(self._teardown)

    def _check_alchemy(self, app: Flask) -> None:
        installed: object = app.extensions.get("advanced_alchemy")
        alchemy = self.alchemy
        if alchemy is None:
            if installed is not None:
                raise ConfigurationError(UNLINKED)
            return
        if alchemy is False:
            return
        # Linked: advanced-alchemy's after_request (its autocommit) must run after ours, so it must be
        # registered before ours (Flask runs after_request functions last-registered first).
        if id(installed) != id(alchemy):
            raise ConfigurationError(NOT_THIS_APP)
        from advanced_alchemy.config.asyncio import SQLAlchemyAsyncConfig

        for config in alchemy.config:
            if (config.bind_key or "default") == self.alchemy_key and isinstance(config, SQLAlchemyAsyncConfig):
                raise ConfigurationError(ASYNC_ALCHEMY.format(key=self.alchemy_key))

    def _new_unit(self) -> RequestUnit:
        alchemy = self.alchemy
        if alchemy is not None and alchemy is not False:
            return adopted_unit(
                self.database, alchemy.get_session(self.alchemy_key), plugin="advanced-alchemy's AdvancedAlchemy"
            )
        if alchemy is None and "advanced_alchemy" in current_app.extensions:
            raise ConfigurationError(UNLINKED)  # advanced-alchemy was initialised on the app after uow
        database = resolve_database(self.database, label="UnitOfWork (Flask)")
        if database.is_async:
            raise ConfigurationError(_ASYNC_DATABASE)
        return RequestUnit(database)

    def _begin(self) -> None:
        unit = self._new_unit()
        setattr(g, _G_KEY, unit)
        request.environ[SCOPE_KEY] = unit
        unit.activate()

    def _finish(self, response: Response) -> Response:
        # Runs before the response is sent: a commit that raises here makes Flask answer 500.
        unit: RequestUnit | None = g.get(_G_KEY)
        if unit is not None:
            status = response.status_code
            unit.finish_sync(None if status < 400 else ErrorResponse(status))
        return response

    def _teardown(self, exc: BaseException | None) -> None:
        unit: RequestUnit | None = g.pop(_G_KEY, None)
        if unit is None:
            return
        try:
            unit.finish_sync(exc if exc is not None else NoResponse("the request ended without a response"))
        finally:
            unit.deactivate()
