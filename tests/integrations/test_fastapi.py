"""FastAPI: decorated path operations parsed from their visible signature, the middleware, `Service` dependencies."""

from __future__ import annotations

import threading
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, HTTPException
from fastapi.testclient import TestClient
from pydantic import BaseModel

import uow
from tests.integrations.web import AsyncNoteService, NoteService, Web
from tests.models import AsyncItemService, AsyncTagService, ItemService, TagService
from uow.integrations.fastapi import Service, UnitOfWorkMiddleware, service

pytest_plugins = ["tests.integrations.web"]


class NewItem(BaseModel):
    name: str
    tags: list[str] = []


def async_app(web: Web) -> FastAPI:
    app = FastAPI()
    app.add_middleware(UnitOfWorkMiddleware, database=web.db)

    @app.post("/groups/{group_id}/items", status_code=201)
    @uow.with_services(AsyncItemService)
    async def create(
        items: AsyncItemService,
        group_id: int,
        body: NewItem,
        tags: Annotated[AsyncTagService, Service(AsyncTagService)],
        fail: str = "",
    ) -> dict[str, Any]:
        item = await items.add(f"{group_id}-{body.name}")
        for label in body.tags:
            await tags.tag(item, label)
        if fail == "error":
            raise RuntimeError("path operation failed after writing")
        if fail == "404":
            raise HTTPException(404, "no such group")
        same = tags.session is items.session is await uow.current_session_async()
        return {"id": item.id, "same_session": same}

    @app.post("/orphans")
    @uow.with_services(AsyncNoteService)
    async def orphan(notes: AsyncNoteService) -> dict[str, str]:
        await notes.add_orphan("dangling")
        return {"saved": "yes"}

    @app.get("/count")
    async def count(items: Annotated[AsyncItemService, Depends(service(AsyncItemService))]) -> dict[str, int]:
        return {"count": await items.count()}

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    return app


def test_decorated_path_operation_parses_its_own_parameters_and_commits(web_async_sqlite: Web) -> None:
    with TestClient(async_app(web_async_sqlite)) as client:
        response = client.post("/groups/7/items", json={"name": "a", "tags": ["x", "y"]})
        assert response.status_code == 201, response.text
        assert response.json() == {"id": 1, "same_session": True}
        assert client.get("/count").json() == {"count": 1}
        assert client.post("/groups/not-a-number/items", json={"name": "b"}).status_code == 422
        assert client.post("/groups/7/items", json={}).status_code == 422
    assert web_async_sqlite.names() == ["7-a"]
    assert web_async_sqlite.checked_out == 0


def test_openapi_lists_only_visible_parameters(web_async_sqlite: Web) -> None:
    with TestClient(async_app(web_async_sqlite)) as client:
        schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/groups/{group_id}/items"]["post"]
    assert {(p["name"], p["in"]) for p in operation["parameters"]} == {("group_id", "path"), ("fail", "query")}
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/NewItem"}
    assert "parameters" not in schema["paths"]["/orphans"]["post"]
    assert "parameters" not in schema["paths"]["/count"]["get"]


@pytest.mark.parametrize(("fail", "status"), [("error", 500), ("404", 404)])
def test_error_rolls_back(web_async_sqlite: Web, fail: str, status: int) -> None:
    with TestClient(async_app(web_async_sqlite), raise_server_exceptions=False) as client:
        response = client.post("/groups/1/items", params={"fail": fail}, json={"name": "a", "tags": ["t"]})
    assert response.status_code == status
    assert web_async_sqlite.names() == []
    assert web_async_sqlite.checked_out == 0


def test_failed_commit_becomes_500(web_async_sqlite: Web) -> None:
    with TestClient(async_app(web_async_sqlite)) as client:
        assert client.post("/orphans").status_code == 500
        assert client.get("/count").json() == {"count": 0}
    assert web_async_sqlite.notes() == 0
    assert web_async_sqlite.checked_out == 0


def test_request_without_database_work_takes_no_connection(web_async_sqlite: Web) -> None:
    with TestClient(async_app(web_async_sqlite)) as client:
        assert client.get("/ping").json() == {"pong": "yes"}
    assert web_async_sqlite.checkouts == 0


def sync_app(web: Web) -> FastAPI:
    app = FastAPI()
    app.add_middleware(UnitOfWorkMiddleware, database=web.db)

    @app.post("/items/{name}")
    @uow.with_services(ItemService, NoteService)
    def create(
        items: ItemService,
        notes: NoteService,
        tags: Annotated[TagService, Service(TagService)],
        name: str,
        orphan: bool = False,
    ) -> dict[str, Any]:
        item = items.add(name)
        tags.tag(item, "sync")
        if orphan:
            notes.add_orphan(name)
        return {
            "thread": threading.current_thread() is not threading.main_thread(),
            "same_session": tags.session is items.session is uow.current_session(),
        }

    return app


def test_sync_path_operation_with_sync_database(web_sqlite: Web) -> None:
    with TestClient(sync_app(web_sqlite)) as client:
        assert client.post("/items/s1").json() == {"thread": True, "same_session": True}
        assert client.post("/items/s2", params={"orphan": "true"}).status_code == 500
    assert web_sqlite.names() == ["s1"]
    assert web_sqlite.notes() == 0
    assert web_sqlite.checked_out == 0


def test_service_without_middleware_says_what_to_install() -> None:
    app = FastAPI()

    @app.get("/count")
    async def count(items: Annotated[AsyncItemService, Service(AsyncItemService)]) -> None:
        raise AssertionError("not reached")

    with TestClient(app) as client, pytest.raises(uow.ConfigurationError, match="add_middleware"):
        client.get("/count")


@pytest.mark.postgres
def test_postgres_async_unit(web_async_postgres: Web) -> None:
    with TestClient(async_app(web_async_postgres)) as client:
        assert client.post("/groups/1/items", json={"name": "pg", "tags": ["t"]}).status_code == 201
        assert client.post("/orphans").status_code == 500
        assert client.get("/count").json() == {"count": 1}
    assert web_async_postgres.names() == ["1-pg"]
    assert web_async_postgres.notes() == 0
    assert web_async_postgres.checked_out == 0


@pytest.mark.postgres
def test_postgres_sync_unit(web_postgres: Web) -> None:
    with TestClient(sync_app(web_postgres)) as client:
        assert client.post("/items/pg").status_code == 200
        assert client.post("/items/orphan", params={"orphan": "true"}).status_code == 500
    assert web_postgres.names() == ["pg"]
    assert web_postgres.checked_out == 0


def test_service_is_the_same_dependency_for_the_same_factory() -> None:
    assert service(AsyncItemService) is service(AsyncItemService)
    assert service(AsyncItemService) is not service(AsyncTagService)
    assert Service(AsyncItemService).dependency is service(AsyncItemService)


class FakeItemService:
    """A test double for AsyncItemService: no database."""

    async def count(self) -> int:
        return 42


def test_dependency_overrides_replace_a_service(web_async_sqlite: Web) -> None:
    # FastAPI's "Testing Dependencies with Overrides": key dependency_overrides by the declared dependency.
    app = async_app(web_async_sqlite)
    client = TestClient(app)
    app.dependency_overrides[service(AsyncItemService)] = FakeItemService
    assert client.get("/count").json() == {"count": 42}
    assert web_async_sqlite.checkouts == 0  # the fake never touched the database

    app.dependency_overrides = {}
    assert client.get("/count").json() == {"count": 0}
    assert web_async_sqlite.checked_out == 0


def test_dependency_overrides_replace_a_service_given_with_the_shorthand(web_async_sqlite: Web) -> None:
    # create() asks for tags through Service(AsyncTagService); override it by service(AsyncTagService).
    tagged: list[str] = []

    class FakeTags:
        async def tag(self, item: object, label: str) -> None:
            tagged.append(label)

        session = None

    app = async_app(web_async_sqlite)
    app.dependency_overrides[service(AsyncTagService)] = FakeTags
    with TestClient(app) as client:
        response = client.post("/groups/1/items", json={"name": "a", "tags": ["x"]})
    assert response.status_code == 201, response.text
    assert response.json()["same_session"] is False  # the fake has no session of the unit
    assert tagged == ["x"]
    assert web_async_sqlite.names() == ["1-a"]
