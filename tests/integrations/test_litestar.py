"""Litestar: decorated handlers and controller methods, the request unit plugin, `provide_service`, advanced-alchemy."""

from __future__ import annotations

import warnings
from typing import Any

import anyio
import pytest
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig, SQLAlchemyPlugin
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from litestar import Controller, Litestar, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotAuthorizedException, NotFoundException
from litestar.handlers import BaseRouteHandler
from litestar.middleware import ASGIMiddleware
from litestar.params import FromPath, FromQuery
from litestar.testing import AsyncTestClient, TestClient
from litestar.types import ASGIApp, Receive, Scope, Send
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import uow
from tests.integrations.web import AsyncNoteService, NoteService, Sent, Web, http_scope, receive_nothing
from tests.models import AsyncItemService, AsyncTagService, Item, ItemService
from uow.integrations.litestar import UnitOfWorkPlugin, provide_service

pytest_plugins = ["tests.integrations.web"]


class ItemRepository(SQLAlchemyAsyncRepository[Item]):
    model_type = Item


class ItemRepositoryService(SQLAlchemyAsyncRepositoryService[Item]):
    """advanced-alchemy's own service class, used as a `with_services` argument as it is."""

    repository_type = ItemRepository


def async_app(web: Web, *, plugins: list[Any] | None = None) -> Litestar:
    sessions: dict[str, int] = {}

    async def record_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        async with uow.provide_services(AsyncItemService, connection=connection) as (items,):
            sessions["guard"] = id(items.session)
            if connection.query_params.get("guard_writes"):
                await items.add("from-guard")

    @post("/items")
    @uow.with_services(AsyncItemService)
    async def create(items: AsyncItemService, name: FromQuery[str], fail: FromQuery[str] = "") -> dict[str, Any]:
        item = await items.add(name)
        if fail == "error":
            raise RuntimeError("handler failed after writing")
        if fail == "404":
            raise NotFoundException("nothing here")
        if fail == "409":
            return Response({"conflict": name}, status_code=409)  # type: ignore[return-value]
        return {"id": item.id, "name": item.name}

    @post("/orphans")
    @uow.with_services(AsyncNoteService)
    async def orphan(notes: AsyncNoteService) -> dict[str, str]:
        await notes.add_orphan("dangling")
        return {"saved": "yes"}

    @post(
        "/shared",
        guards=[record_guard],
        dependencies={"tags": provide_service(AsyncTagService)},
    )
    @uow.with_services(AsyncItemService)
    async def shared(
        items: AsyncItemService, tags: NamedDependency[AsyncTagService], request: Request[Any, Any, Any]
    ) -> dict[str, Any]:
        sessions["handler"] = id(items.session)
        sessions["dependency"] = id(tags.session)
        sessions["current"] = id(await uow.current_session_async())
        async with uow.provide_services(AsyncItemService, connection=request) as (joined,):
            sessions["provide_services"] = id(joined.session)
        item = await items.add("shared")
        await tags.tag(item, "t")
        if request.query_params.get("fail"):
            raise NotAuthorizedException("no")
        return dict(sessions)

    @get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    @get("/items/{item_id:int}")
    @uow.with_services(AsyncItemService)
    async def read(items: AsyncItemService, item_id: FromPath[int], verbose: FromQuery[bool] = False) -> dict[str, Any]:
        return {"id": item_id, "verbose": verbose, "count": await items.count()}

    class ItemController(Controller):
        path = "/controller"

        @post("/{name:str}")
        @uow.with_services(AsyncItemService)
        async def add(self, items: AsyncItemService, name: FromPath[str]) -> dict[str, str]:
            await items.add(name)
            return {"added": name}

    return Litestar(
        [create, orphan, shared, ping, read, ItemController],
        plugins=[UnitOfWorkPlugin(web.db), *(plugins or [])],
    )


def test_decorated_handler_commits(web_async_sqlite: Web) -> None:
    with TestClient(async_app(web_async_sqlite)) as client:
        response = client.post("/items", params={"name": "a"})
        assert response.status_code == 201, response.text
        assert response.json() == {"id": 1, "name": "a"}
    assert web_async_sqlite.names() == ["a"]
    assert web_async_sqlite.checked_out == 0


@pytest.mark.parametrize(("fail", "status"), [("error", 500), ("404", 404), ("409", 409)])
def test_error_status_rolls_back(web_async_sqlite: Web, fail: str, status: int) -> None:
    with TestClient(async_app(web_async_sqlite)) as client:
        response = client.post("/items", params={"name": "a", "fail": fail})
    assert response.status_code == status
    assert web_async_sqlite.names() == []
    assert web_async_sqlite.checked_out == 0


def test_failed_commit_becomes_500(web_async_sqlite: Web) -> None:
    with TestClient(async_app(web_async_sqlite)) as client:
        response = client.post("/orphans")
        assert response.status_code == 500
        assert "saved" not in response.text
        # The app still serves the next request normally.
        assert client.post("/items", params={"name": "after"}).status_code == 201
    assert web_async_sqlite.notes() == 0
    assert web_async_sqlite.names() == ["after"]
    assert web_async_sqlite.checked_out == 0


def test_one_unit_shared_by_guard_dependency_and_handler(web_async_sqlite: Web) -> None:
    with TestClient(async_app(web_async_sqlite)) as client:
        response = client.post("/shared", params={"guard_writes": "1"})
    assert response.status_code == 201, response.text
    sessions = response.json()
    assert set(sessions) == {"guard", "handler", "dependency", "current", "provide_services"}
    assert len(set(sessions.values())) == 1
    assert web_async_sqlite.names() == ["from-guard", "shared"]


def test_guard_writes_roll_back_with_the_handler(web_async_sqlite: Web) -> None:
    with TestClient(async_app(web_async_sqlite)) as client:
        response = client.post("/shared", params={"guard_writes": "1", "fail": "1"})
    assert response.status_code == 401
    assert web_async_sqlite.names() == []
    assert web_async_sqlite.checked_out == 0


def test_request_without_database_work_takes_no_connection(web_async_sqlite: Web) -> None:
    with TestClient(async_app(web_async_sqlite)) as client:
        assert client.get("/ping").json() == {"pong": "yes"}
    assert web_async_sqlite.checkouts == 0


def test_controller_method(web_async_sqlite: Web) -> None:
    with TestClient(async_app(web_async_sqlite)) as client:
        assert client.post("/controller/c1").json() == {"added": "c1"}
    assert web_async_sqlite.names() == ["c1"]


def test_handler_parameters_resolve_and_openapi_lists_only_them(web_async_sqlite: Web) -> None:
    with TestClient(async_app(web_async_sqlite)) as client:
        assert client.get("/items/7", params={"verbose": "true"}).json() == {"id": 7, "verbose": True, "count": 0}
        schema = client.get("/schema/openapi.json").json()
    read_params = {p["name"]: p["in"] for p in schema["paths"]["/items/{item_id}"]["get"]["parameters"]}
    assert read_params == {"item_id": "path", "verbose": "query"}
    create_params = {p["name"] for p in schema["paths"]["/items"]["post"]["parameters"]}
    assert create_params == {"name", "fail"}
    assert "parameters" not in schema["paths"]["/controller/{name}"]["post"] or {
        p["name"] for p in schema["paths"]["/controller/{name}"]["post"]["parameters"]
    } == {"name"}
    shared_params = {p["name"] for p in schema["paths"]["/shared"]["post"].get("parameters", [])}
    assert not shared_params & {"items", "tags", "session"}


def test_on_commit_hook_runs_after_the_request_commits(web_async_sqlite: Web) -> None:
    ran: list[list[str]] = []

    @post("/hooked")
    @uow.with_services(AsyncItemService)
    async def hooked(items: AsyncItemService) -> None:
        await items.add("h")

        async def after() -> None:
            # Outside the finished request unit: this is a unit of its own, and it sees the commit.
            async with uow.provide_services(AsyncItemService, database=web_async_sqlite.db) as (fresh,):
                ran.append(await fresh.names())

        uow.on_commit(after)

    with TestClient(Litestar([hooked], plugins=[UnitOfWorkPlugin(web_async_sqlite.db)])) as client:
        assert client.post("/hooked").status_code == 201
    assert ran == [["h"]]
    assert web_async_sqlite.checked_out == 0


def test_sync_handler_with_sync_database(web_sqlite: Web) -> None:
    @post("/sync/{name:str}", sync_to_thread=True)
    @uow.with_services(ItemService, NoteService)
    def create(
        items: ItemService, notes: NoteService, name: FromPath[str], orphan: FromQuery[bool] = False
    ) -> dict[str, int]:
        items.add(name)
        if orphan:
            notes.add_orphan(name)
        return {"session": id(items.session), "current": id(uow.current_session())}

    @get("/sync-dependency", sync_to_thread=True, dependencies={"items": provide_service(ItemService)})
    def count(items: NamedDependency[ItemService]) -> dict[str, int]:
        return {"count": items.count()}

    app = Litestar([create, count], plugins=[UnitOfWorkPlugin(web_sqlite.db)])
    with TestClient(app) as client:
        body = client.post("/sync/s1").json()
        assert body["session"] == body["current"]
        assert client.post("/sync/s2", params={"orphan": "true"}).status_code == 500
        assert client.get("/sync-dependency").json() == {"count": 1}
    assert web_sqlite.names() == ["s1"]
    assert web_sqlite.notes() == 0
    assert web_sqlite.checked_out == 0


def test_configured_default_database(web_async_sqlite: Web) -> None:
    uow.configure(web_async_sqlite.db)

    @post("/default/{name:str}")
    @uow.with_services(AsyncItemService)
    async def create(items: AsyncItemService, name: FromPath[str]) -> None:
        await items.add(name)

    with TestClient(Litestar([create], plugins=[UnitOfWorkPlugin()])) as client:
        assert client.post("/default/d").status_code == 201
    assert web_async_sqlite.names() == ["d"]


def test_provide_service_without_plugin_says_what_to_install(web_async_sqlite: Web) -> None:
    @get("/no-plugin", dependencies={"items": provide_service(AsyncItemService)})
    async def handler(items: NamedDependency[AsyncItemService]) -> None:
        raise AssertionError("not reached")

    with TestClient(Litestar([handler], debug=True)) as client:
        response = client.get("/no-plugin")
    assert response.status_code == 500
    assert "UnitOfWorkPlugin" in response.text


def test_linked_to_advanced_alchemy_plugin(web_async_sqlite: Web) -> None:
    # The request-session cases are in test_alchemy_litestar.py; this is the plain mix of both kinds of handler.
    alchemy = SQLAlchemyAsyncConfig(
        connection_string=web_async_sqlite.db.engine.url.render_as_string(hide_password=False),  # type: ignore[union-attr]
        before_send_handler="autocommit",
    )

    @post("/alchemy/{name:str}")
    async def alchemy_create(db_session: NamedDependency[AsyncSession], name: FromPath[str]) -> None:
        db_session.add(Item(name=name))

    @post("/ours/{name:str}")
    @uow.with_services(ItemRepositoryService)
    async def ours_create(items: ItemRepositoryService, name: FromPath[str]) -> dict[str, int]:
        created = await items.create(Item(name=name))
        return {"id": created.id}

    @get("/both")
    @uow.with_services(AsyncItemService)
    async def both(items: AsyncItemService, db_session: NamedDependency[AsyncSession]) -> dict[str, list[str]]:
        theirs = list((await db_session.scalars(select(Item.name).order_by(Item.name))).all())
        return {"ours": await items.names(), "theirs": theirs}

    app = Litestar(
        [alchemy_create, ours_create, both],
        plugins=[SQLAlchemyPlugin(config=alchemy), UnitOfWorkPlugin(web_async_sqlite.db, alchemy=alchemy)],
    )
    with TestClient(app) as client:
        assert client.post("/alchemy/theirs").status_code == 201
        assert client.post("/ours/ours").status_code == 201
        assert client.get("/both").json() == {"ours": ["ours", "theirs"], "theirs": ["ours", "theirs"]}
        schema = client.get("/schema/openapi.json").json()
    both_params = {p["name"] for p in schema["paths"]["/both"]["get"].get("parameters", [])}
    assert not both_params & {"items", "db_session"}
    assert web_async_sqlite.names() == ["ours", "theirs"]
    assert web_async_sqlite.checked_out == 0


@pytest.mark.postgres
async def test_postgres_commit_rollback_and_failed_commit(web_async_postgres: Web) -> None:
    async with AsyncTestClient(async_app(web_async_postgres)) as client:
        assert (await client.post("/items", params={"name": "pg"})).status_code == 201
        assert (await client.post("/items", params={"name": "gone", "fail": "error"})).status_code == 500
        assert (await client.post("/orphans")).status_code == 500
        assert (await client.post("/shared")).status_code == 201
    assert web_async_postgres.names() == ["pg", "shared"]
    assert web_async_postgres.notes() == 0
    assert web_async_postgres.checked_out == 0


def test_dependency_is_a_litestar_provide() -> None:
    assert isinstance(provide_service(ItemService), Provide)


async def test_cancelled_request_rolls_back_and_returns_its_connection(web_async_sqlite: Web) -> None:
    wrote = anyio.Event()

    @get("/slow")
    @uow.with_services(AsyncItemService)
    async def slow(items: AsyncItemService) -> None:
        await items.add("never")
        wrote.set()
        await anyio.sleep_forever()

    app = Litestar([slow], plugins=[UnitOfWorkPlugin(web_async_sqlite.db)])
    sent = Sent()
    async with anyio.create_task_group() as group:
        # What a server does when the client goes away or it shuts down: cancel the request's task.
        group.start_soon(app, http_scope("/slow"), receive_nothing, sent)
        await wrote.wait()
        assert web_async_sqlite.checked_out == 1
        group.cancel_scope.cancel()
    assert sent == []
    assert web_async_sqlite.checked_out == 0
    assert web_async_sqlite.names() == []
    await web_async_sqlite.db.dispose_async()


def test_app_middleware_runs_inside_the_request_unit(web_async_sqlite: Web) -> None:
    calls: list[int] = []

    class AuditMiddleware(ASGIMiddleware):
        async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
            calls.append(1)
            async with uow.provide_services(AsyncItemService, connection=scope) as (items,):
                await items.add(f"audit-{len(calls)}")
            await next_app(scope, receive, send)

    @post("/audited")
    @uow.with_services(AsyncItemService)
    async def audited(items: AsyncItemService, fail: FromQuery[bool] = False) -> None:
        await items.add(f"handler-{len(calls)}")
        if fail:
            raise NotAuthorizedException("no")

    app = Litestar([audited], middleware=[AuditMiddleware()], plugins=[UnitOfWorkPlugin(web_async_sqlite.db)])
    with TestClient(app) as client:
        assert client.post("/audited").status_code == 201
        assert web_async_sqlite.names() == ["audit-1", "handler-1"]
        assert client.post("/audited", params={"fail": "true"}).status_code == 401
    assert web_async_sqlite.names() == ["audit-1", "handler-1"]
    assert web_async_sqlite.checked_out == 0


def decorated_guard_app(web: Web, sessions: dict[str, object], *, plugin: bool) -> Litestar:
    @uow.with_services(AsyncItemService)
    async def guard(
        connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler, items: AsyncItemService
    ) -> None:
        sessions["guard"] = items.session
        await items.add("from-guard")

    @post("/guarded", guards=[guard])
    @uow.with_services(AsyncItemService)
    async def guarded(items: AsyncItemService) -> None:
        sessions["handler"] = items.session

    return Litestar([guarded], plugins=[UnitOfWorkPlugin(web.db)] if plugin else [])


def test_decorated_guard_joins_the_request_unit(web_async_sqlite: Web) -> None:
    sessions: dict[str, object] = {}
    with TestClient(decorated_guard_app(web_async_sqlite, sessions, plugin=True)) as client:
        assert client.post("/guarded").status_code == 201
    assert sessions["guard"] is sessions["handler"]
    assert web_async_sqlite.names() == ["from-guard"]


def test_decorated_guard_without_the_plugin_owns_its_unit(web_async_sqlite: Web) -> None:
    # No request unit: the connection Litestar passes is no error, and each function commits its own unit.
    uow.configure(web_async_sqlite.db)
    sessions: dict[str, object] = {}
    with TestClient(decorated_guard_app(web_async_sqlite, sessions, plugin=False)) as client:
        assert client.post("/guarded").status_code == 201
    # The objects, not their id()s: the guard's session is gone by the time the handler's is made,
    # and CPython may give the new one the same id.
    assert sessions["guard"] is not sessions["handler"]
    assert web_async_sqlite.names() == ["from-guard"]
    assert web_async_sqlite.commits == 1  # the guard's unit; the handler's touched no table


def test_provide_service_is_the_same_provider_for_the_same_factory() -> None:
    assert provide_service(AsyncItemService) is provide_service(AsyncItemService)
    assert provide_service(AsyncItemService).dependency is provide_service(AsyncItemService).dependency
    assert provide_service(AsyncItemService) is not provide_service(AsyncTagService)


def test_explicit_dependencies_raise_no_deprecation(web_async_sqlite: Web) -> None:
    # Litestar 2.23+ warns about a dependency matched by name without a marker (it stops working in 3.0).
    @get("/explicit", dependencies={"items": provide_service(AsyncItemService)})
    async def explicit(items: NamedDependency[AsyncItemService]) -> dict[str, int]:
        return {"count": await items.count()}

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        app = Litestar([explicit], plugins=[UnitOfWorkPlugin(web_async_sqlite.db)])
        with TestClient(app) as client:
            assert client.get("/explicit").json() == {"count": 0}
    assert web_async_sqlite.checked_out == 0
