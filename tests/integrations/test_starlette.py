"""Starlette: the pure ASGI request unit middleware with decorated endpoints, sync and async."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import pytest
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import uow
from tests.integrations.web import AsyncNoteService, NoteService, Sent, Web, http_scope, receive_nothing
from tests.models import AsyncItemService, ItemService
from uow.integrations.starlette import UnitOfWorkMiddleware

pytest_plugins = ["tests.integrations.web"]


@uow.with_services(AsyncItemService)
async def create(items: AsyncItemService, request: Request) -> Response:
    name = request.path_params["name"]
    item = await items.add(name)
    fail = request.query_params.get("fail")
    if fail == "error":
        raise RuntimeError("endpoint failed after writing")
    if fail == "409":
        return JSONResponse({"conflict": name}, status_code=409)
    async with uow.provide_services(AsyncItemService, connection=request) as (joined,):
        same = joined.session is items.session
    return JSONResponse({"id": item.id, "same_session": same}, status_code=201)


@uow.with_services(AsyncNoteService)
async def orphan(notes: AsyncNoteService, request: Request) -> Response:
    await notes.add_orphan("dangling")
    return JSONResponse({"saved": "yes"})


async def ping(request: Request) -> Response:
    return PlainTextResponse("pong")


def async_app(web: Web) -> Starlette:
    routes = [
        Route("/items/{name}", create, methods=["POST"]),
        Route("/orphans", orphan, methods=["POST"]),
        Route("/ping", ping),
    ]
    return Starlette(routes=routes, middleware=[Middleware(UnitOfWorkMiddleware, database=web.db)])


def test_decorated_endpoint_commits_and_joins_the_request_unit(web_async_sqlite: Web) -> None:
    with TestClient(async_app(web_async_sqlite)) as client:
        response = client.post("/items/a")
    assert response.status_code == 201
    assert response.json() == {"id": 1, "same_session": True}
    assert web_async_sqlite.names() == ["a"]
    assert web_async_sqlite.checked_out == 0


@pytest.mark.parametrize(("fail", "status"), [("error", 500), ("409", 409)])
def test_error_rolls_back(web_async_sqlite: Web, fail: str, status: int) -> None:
    with TestClient(async_app(web_async_sqlite), raise_server_exceptions=False) as client:
        assert client.post("/items/a", params={"fail": fail}).status_code == status
    assert web_async_sqlite.names() == []
    assert web_async_sqlite.checked_out == 0


def test_exception_reaches_the_server_after_rollback(web_async_sqlite: Web) -> None:
    with TestClient(async_app(web_async_sqlite)) as client, pytest.raises(RuntimeError, match="after writing"):
        client.post("/items/a", params={"fail": "error"})
    assert web_async_sqlite.names() == []
    assert web_async_sqlite.checked_out == 0


def test_failed_commit_becomes_500(web_async_sqlite: Web, caplog: pytest.LogCaptureFixture) -> None:
    with TestClient(async_app(web_async_sqlite)) as client:
        response = client.post("/orphans")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert "failed to commit" in caplog.text
    assert web_async_sqlite.notes() == 0
    assert web_async_sqlite.checked_out == 0


def test_request_without_database_work_takes_no_connection(web_async_sqlite: Web) -> None:
    with TestClient(async_app(web_async_sqlite)) as client:
        assert client.get("/ping").text == "pong"
    assert web_async_sqlite.checkouts == 0


def test_sync_endpoint_runs_in_a_thread_inside_the_request_unit(web_sqlite: Web) -> None:
    @uow.with_services(ItemService, NoteService)
    def create_sync(items: ItemService, notes: NoteService, request: Request) -> Response:
        items.add(request.path_params["name"])
        if request.query_params.get("orphan"):
            notes.add_orphan("dangling")
        session: Session = uow.current_session()
        return JSONResponse({"same_session": session is items.session})

    app = Starlette(
        routes=[Route("/sync/{name}", create_sync, methods=["POST"])],
        middleware=[Middleware(UnitOfWorkMiddleware, database=web_sqlite.db)],
    )
    with TestClient(app) as client:
        assert client.post("/sync/s1").json() == {"same_session": True}
        assert client.post("/sync/s2", params={"orphan": "1"}).status_code == 500
    assert web_sqlite.names() == ["s1"]
    assert web_sqlite.checked_out == 0


async def test_cancelled_request_rolls_back_and_returns_its_connection(web_async_sqlite: Web) -> None:
    wrote = anyio.Event()

    @uow.with_services(AsyncItemService)
    async def slow(items: AsyncItemService, request: Request) -> Response:
        await items.add("never")
        wrote.set()
        await anyio.sleep_forever()
        raise AssertionError("not reached")

    app = Starlette(
        routes=[Route("/slow", slow)], middleware=[Middleware(UnitOfWorkMiddleware, database=web_async_sqlite.db)]
    )
    sent = Sent()

    async with anyio.create_task_group() as group:
        group.start_soon(app, http_scope("/slow"), receive_nothing, sent)
        await wrote.wait()
        assert web_async_sqlite.checked_out == 1
        group.cancel_scope.cancel()
    assert sent == []
    assert web_async_sqlite.checked_out == 0
    assert web_async_sqlite.names() == []
    await web_async_sqlite.db.dispose_async()


def test_middleware_passes_other_scopes_through(web_async_sqlite: Web) -> None:
    started: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started.append("yes")
        yield

    app = Starlette(lifespan=lifespan, middleware=[Middleware(UnitOfWorkMiddleware, database=web_async_sqlite.db)])
    with TestClient(app):
        pass
    assert started == ["yes"]


@pytest.mark.postgres
def test_postgres_sync_unit(web_postgres: Web) -> None:
    @uow.with_services(ItemService, NoteService)
    def create_sync(items: ItemService, notes: NoteService, request: Request) -> Response:
        items.add(request.path_params["name"])
        if request.query_params.get("orphan"):
            notes.add_orphan("dangling")
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/sync/{name}", create_sync, methods=["POST"])],
        middleware=[Middleware(UnitOfWorkMiddleware, database=web_postgres.db)],
    )
    with TestClient(app) as client:
        assert client.post("/sync/pg").status_code == 200
        assert client.post("/sync/orphan", params={"orphan": "1"}).status_code == 500
    assert web_postgres.names() == ["pg"]
    assert web_postgres.notes() == 0
    assert web_postgres.checked_out == 0


def test_work_while_streaming_runs_in_a_unit_of_its_own(web_async_sqlite: Web) -> None:
    @uow.with_services(AsyncItemService, database=web_async_sqlite.db)
    async def add(items: AsyncItemService, name: str) -> None:
        await items.add(name)

    async def stream(request: Request) -> Response:
        await add("before-response")

        async def body() -> AsyncIterator[bytes]:
            # The request unit committed when the response started; this cannot join it any more.
            await add("while-streaming")
            with pytest.raises(uow.NoActiveUnitOfWork, match="already committed or rolled back"):
                async with uow.provide_services(AsyncItemService, connection=request):
                    pass
            yield b"done"

        return StreamingResponse(body())

    app = Starlette(
        routes=[Route("/stream", stream)], middleware=[Middleware(UnitOfWorkMiddleware, database=web_async_sqlite.db)]
    )
    with TestClient(app) as client:
        assert client.get("/stream").text == "done"
    assert web_async_sqlite.names() == ["before-response", "while-streaming"]
    assert web_async_sqlite.checked_out == 0
