"""Flask: the `UnitOfWork` extension with decorated sync and async views."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from flask import Flask, abort, g, request
from sqlalchemy import text
from sqlalchemy.pool import NullPool

import uow
from tests.integrations.web import NoteService, Web
from tests.models import AsyncItemService, ItemService
from uow.integrations.flask import UnitOfWork

pytest_plugins = ["tests.integrations.web"]


def make_app(web: Web, *, async_db: uow.Database | None = None) -> Flask:
    app = Flask(__name__)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # answer 500 as in production, instead of raising into the test
    UnitOfWork(app, web.db)

    @app.post("/items/<name>")
    @uow.with_services(ItemService, NoteService)
    def create(items: ItemService, notes: NoteService, name: str) -> Any:
        items.add(name)
        fail = request.args.get("fail")
        if fail == "error":
            raise RuntimeError("view failed after writing")
        if fail == "404":
            abort(404)
        if fail == "409":
            return {"conflict": name}, 409
        if fail == "orphan":
            notes.add_orphan(name)
        with uow.provide_services(ItemService, connection=request) as (joined,):
            same = joined.session is items.session is uow.current_session() is g.uow_unit.transaction.session
        return {"same_session": same}, 201

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    @app.post("/async/<name>")
    async def create_async(name: str) -> Any:
        if async_db is None:
            # A sync decorated function called from an async view joins the request's (sync) unit.
            add_sync(name)
        else:
            # An async unit runs in this view's event loop and owns its commit.
            await add_async(name, database=async_db)
        if request.args.get("fail"):
            raise RuntimeError("async view failed")
        return {"ok": True}

    return app


@uow.with_services(ItemService)
def add_sync(items: ItemService, name: str) -> None:
    items.add(name)


async def add_async(name: str, *, database: uow.Database) -> None:
    @uow.with_services(AsyncItemService, database=database)
    async def add(items: AsyncItemService) -> None:
        await items.add(name)
        await items.session.execute(text("SELECT 1"))

    await add()


def test_decorated_view_commits_and_shares_the_request_unit(web_sqlite: Web) -> None:
    client = make_app(web_sqlite).test_client()
    response = client.post("/items/a")
    assert response.status_code == 201
    assert response.json == {"same_session": True}
    assert web_sqlite.names() == ["a"]
    assert web_sqlite.checked_out == 0


@pytest.mark.parametrize(("fail", "status"), [("error", 500), ("404", 404), ("409", 409)])
def test_error_rolls_back(web_sqlite: Web, fail: str, status: int) -> None:
    client = make_app(web_sqlite).test_client()
    assert client.post("/items/a", query_string={"fail": fail}).status_code == status
    assert web_sqlite.names() == []
    assert web_sqlite.checked_out == 0


def test_failed_commit_becomes_500(web_sqlite: Web) -> None:
    client = make_app(web_sqlite).test_client()
    response = client.post("/items/a", query_string={"fail": "orphan"})
    assert response.status_code == 500
    assert web_sqlite.names() == []
    assert web_sqlite.notes() == 0
    assert client.post("/items/b").status_code == 201
    assert web_sqlite.names() == ["b"]
    assert web_sqlite.checked_out == 0


def test_request_without_database_work_takes_no_connection(web_sqlite: Web) -> None:
    client = make_app(web_sqlite).test_client()
    assert client.get("/ping").text == "pong"
    assert web_sqlite.checkouts == 0


def test_async_view_joins_the_request_unit(web_sqlite: Web) -> None:
    client = make_app(web_sqlite).test_client()
    assert client.post("/async/a1").json == {"ok": True}
    assert client.post("/async/a2", query_string={"fail": "1"}).status_code == 500
    assert web_sqlite.names() == ["a1"]
    assert web_sqlite.checked_out == 0


def test_async_view_with_an_async_unit_of_its_own(web_sqlite: Web) -> None:
    async_db = uow.Database(web_sqlite.db.engine.url.set(drivername="sqlite+aiosqlite"))  # type: ignore[union-attr]
    client = make_app(web_sqlite, async_db=async_db).test_client()
    for name in ("a1", "a2"):  # each request runs in an event loop of its own
        assert client.post(f"/async/{name}").json == {"ok": True}
    # The async unit committed on its own, before the view failed.
    assert client.post("/async/a3", query_string={"fail": "1"}).status_code == 500
    assert web_sqlite.names() == ["a1", "a2", "a3"]
    assert web_sqlite.checked_out == 0
    asyncio.run(async_db.dispose_async())


def test_init_app_and_configured_default(web_sqlite: Web) -> None:
    uow.configure(web_sqlite.db)
    extension = UnitOfWork()
    app = Flask(__name__)
    extension.init_app(app)
    assert app.extensions["uow"] is extension

    @app.post("/default/<name>")
    def create(name: str) -> str:
        add_sync(name)
        return "ok"

    assert app.test_client().post("/default/d").status_code == 200
    assert web_sqlite.names() == ["d"]


def test_async_database_is_refused_with_the_reason(web_async_sqlite: Web) -> None:
    with pytest.raises(uow.ConfigurationError, match="event loop of its own"):
        UnitOfWork(Flask(__name__), web_async_sqlite.db)


def test_a_before_request_that_answers_skips_the_unit(web_sqlite: Web) -> None:
    app = Flask(__name__)

    @app.before_request
    def refuse() -> tuple[str, int]:
        return "no", 403

    UnitOfWork(app, web_sqlite.db)
    assert app.test_client().get("/anything").status_code == 403
    assert web_sqlite.checkouts == 0


@pytest.mark.postgres
def test_postgres(web_postgres: Web) -> None:
    async_db = uow.Database(
        web_postgres.db.engine.url.set(drivername="postgresql+asyncpg"),  # type: ignore[union-attr]
        engine_options={"poolclass": NullPool},
    )
    client = make_app(web_postgres, async_db=async_db).test_client()
    assert client.post("/items/pg").status_code == 201
    assert client.post("/items/orphan", query_string={"fail": "orphan"}).status_code == 500
    for name in ("pa", "pb"):  # asyncpg in a new event loop per request: NullPool
        assert client.post(f"/async/{name}").json == {"ok": True}
    assert web_postgres.names() == ["pa", "pb", "pg"]
    assert web_postgres.notes() == 0
    assert web_postgres.checked_out == 0


def test_async_function_without_database_in_a_sync_request_says_why(web_sqlite: Web) -> None:
    app = Flask(__name__)
    app.config["PROPAGATE_EXCEPTIONS"] = True
    UnitOfWork(app, web_sqlite.db)

    @uow.with_services(AsyncItemService)
    async def add(items: AsyncItemService) -> None:
        raise AssertionError("not reached")

    @app.post("/mismatch")
    async def mismatch() -> str:
        await add()
        return "unreachable"

    with pytest.raises(uow.ConfigurationError, match="is async but .* is sync"):
        app.test_client().post("/mismatch")
    assert web_sqlite.checked_out == 0


def test_teardown_rolls_back_when_the_error_propagates(web_sqlite: Web) -> None:
    app = make_app(web_sqlite)
    app.config["PROPAGATE_EXCEPTIONS"] = True  # as in debug and testing: no after_request, straight to teardown
    with pytest.raises(RuntimeError, match="after writing"):
        app.test_client().post("/items/a", query_string={"fail": "error"})
    assert web_sqlite.names() == []
    assert web_sqlite.checked_out == 0
