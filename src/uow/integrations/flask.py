"""Flask: an extension giving each request one unit of work, kept on ``flask.g``.

    db = Database("sqlite:///app.db")
    app = Flask(__name__)
    UnitOfWork(app, db)           # or: uow_ext = UnitOfWork(); uow_ext.init_app(app, db)

Views, decorated functions and ``uow.current_session()`` inside a request share its unit.
It commits in ``after_request`` when the status is below 400, before Flask sends the
response, so a failed commit becomes a 500; anything else rolls it back.
"""

from __future__ import annotations

from flask import Flask, Response, g, request

from uow._database import Database, resolve_database
from uow.errors import ConfigurationError
from uow.integrations._request import SCOPE_KEY, ErrorResponse, NoResponse, RequestUnit

__all__ = ["UnitOfWork"]

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
    """

    def __init__(self, app: Flask | None = None, database: Database | None = None) -> None:
        self.database = database
        if app is not None:
            self.init_app(app, database)

    def init_app(self, app: Flask, database: Database | None = None) -> None:
        """Install the request unit on `app` (`database` overrides the one given to the constructor)."""
        if database is not None:
            self.database = database
        if self.database is not None and self.database.is_async:
            raise ConfigurationError(_ASYNC_DATABASE)
        app.extensions["uow"] = self
        app.before_request(self._begin)
        app.after_request(self._finish)
        app.teardown_request(self._teardown)

    def _begin(self) -> None:
        database = resolve_database(self.database, what="UnitOfWork (Flask)")
        if database.is_async:
            raise ConfigurationError(_ASYNC_DATABASE)
        unit = RequestUnit(database)
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
