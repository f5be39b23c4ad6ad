"""FastAPI and Starlette with advanced-alchemy's AdvancedAlchemy extension linked to uow's middleware.

The apps are configured the way advanced-alchemy's docs show (``AdvancedAlchemy(config=..., app=app)``,
``Depends(alchemy.provide_session())``, ``Depends(alchemy.provide_service(...))``, ``commit_mode``
``"manual"`` or ``"autocommit"``), on the test's engine so the fixtures count its connections and
COMMITs. Every request must see one session, committed once, before the response starts.
"""

# No `from __future__ import annotations`: the dependencies are built per app, inside functions, and
# FastAPI must see the Annotated[..., Depends(...)] objects themselves, not names it cannot resolve.
from collections.abc import Callable
from typing import Annotated, Any

import pytest
from advanced_alchemy.extensions.fastapi import AdvancedAlchemy, SQLAlchemyAsyncConfig, SQLAlchemySyncConfig
from advanced_alchemy.extensions.starlette import AdvancedAlchemy as StarletteAdvancedAlchemy
from advanced_alchemy.extensions.starlette import SQLAlchemyAsyncConfig as StarletteAsyncConfig
from advanced_alchemy.repository import SQLAlchemyAsyncRepository, SQLAlchemySyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService, SQLAlchemySyncRepositoryService
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

import uow
from tests.integrations.web import AsyncNoteService, NoteService, Web
from tests.models import AsyncItemService, AsyncTagService, Item, ItemService, TagService
from uow.errors import ConfigurationError
from uow.integrations.fastapi import Service, UnitOfWorkMiddleware
from uow.integrations.starlette import UnitOfWorkMiddleware as StarletteUnitOfWorkMiddleware

pytest_plugins = ["tests.integrations.web"]

COMMIT_MODES = ["manual", "autocommit"]


class ItemRepositoryService(SQLAlchemyAsyncRepositoryService[Item]):
    class Repository(SQLAlchemyAsyncRepository[Item]):
        model_type = Item

    repository_type = Repository


class ItemSyncRepositoryService(SQLAlchemySyncRepositoryService[Item]):
    class Repository(SQLAlchemySyncRepository[Item]):
        model_type = Item

    repository_type = Repository


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def async_web(request: pytest.FixtureRequest) -> Web:
    web: Web = request.getfixturevalue("web_async_sqlite" if request.param == "sqlite" else "web_async_postgres")
    return web


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def sync_web(request: pytest.FixtureRequest) -> Web:
    web: Web = request.getfixturevalue("web_sqlite" if request.param == "sqlite" else "web_postgres")
    return web


class Record:
    """Session ids per place, hooks that ran, and the COMMIT count when each response started."""

    def __init__(self, web: Web) -> None:
        self.web = web
        self.sessions: dict[str, int] = {}
        self.hooks: list[list[str]] = []
        self.starts: list[tuple[int, int]] = []

    def hook(self) -> None:
        self.hooks.append(self.web.names())

    def outermost(self, app: Any) -> Callable[..., Any]:
        """`app` wrapped in a plain ASGI layer that notes the COMMIT count as each response starts."""

        async def recording(scope: Any, receive: Any, send: Any) -> None:
            async def noting_send(message: Any) -> None:
                if message["type"] == "http.response.start":
                    self.starts.append((int(message["status"]), self.web.commits))
                await send(message)

            await app(scope, receive, noting_send)

        return recording


# -- FastAPI, async -----------------------------------------------------------------------------


@uow.with_services(AsyncItemService)
async def add_then_fail(items: AsyncItemService) -> None:
    await items.add("doomed")
    raise RuntimeError("inner unit failed")


def async_app(web: Web, commit_mode: str, record: Record) -> FastAPI:
    engine = web.db.engine
    assert isinstance(engine, AsyncEngine)
    app = FastAPI()
    alchemy = AdvancedAlchemy(
        config=SQLAlchemyAsyncConfig(engine_instance=engine, commit_mode=commit_mode),  # type: ignore[arg-type]
        app=app,
    )
    app.add_middleware(UnitOfWorkMiddleware, database=web.db, alchemy=alchemy)
    DatabaseSession = Annotated[AsyncSession, Depends(alchemy.provide_session())]
    Items = Annotated[ItemRepositoryService, Depends(alchemy.provide_service(ItemRepositoryService))]
    sessions = record.sessions

    def advanced_alchemys_session(db_session: DatabaseSession) -> int:
        return id(db_session)

    @app.post("/shared", status_code=201)
    @uow.with_services(AsyncItemService)
    async def shared(
        items: AsyncItemService,
        db_session: AsyncSession,
        request: Request,
        tags: Annotated[AsyncTagService, Service(AsyncTagService)],
        repository: Items,
        aa_session: Annotated[int, Depends(advanced_alchemys_session)],
    ) -> dict[str, str]:
        item = await items.add("shared")
        await tags.tag(item, "t")
        await repository.update({"name": "renamed"}, item_id=item.id)
        sessions.update(
            handler=id(items.session),
            db_session=id(db_session),
            dependency=id(tags.session),
            repository=id(repository.repository.session),
            advanced_alchemy=aa_session,
            current=id(uow.current_session()),
            provide_services=await _session_through(request),
        )
        return {"ok": "yes"}

    @app.post("/swallowed", status_code=201)
    async def swallowed(db_session: DatabaseSession) -> dict[str, str]:
        db_session.add(Item(name="outer"))
        uow.on_commit(record.hook)
        try:
            await add_then_fail()
        except RuntimeError:
            pass
        return {"swallowed": "yes"}

    @app.post("/hooked", status_code=201)
    @uow.with_services(AsyncItemService)
    async def hooked(items: AsyncItemService, fail: bool = False) -> None:
        await items.add("hooked")
        uow.on_commit(record.hook)
        if fail:
            raise HTTPException(status_code=409, detail="no")

    @app.post("/orphans", status_code=201)
    @uow.with_services(AsyncNoteService)
    async def orphan(notes: AsyncNoteService) -> dict[str, str]:
        await notes.add_orphan("dangling")
        return {"saved": "yes"}

    return app


async def _session_through(request: Request) -> int:
    async with uow.provide_services(AsyncItemService, connection=request) as (items,):
        return id(items.session)


@pytest.mark.parametrize("commit_mode", COMMIT_MODES)
def test_fastapi_async_one_session_per_request(async_web: Web, commit_mode: str) -> None:
    record = Record(async_web)
    with TestClient(record.outermost(async_app(async_web, commit_mode, record))) as client:
        response = client.post("/shared")
    assert response.status_code == 201, response.text
    assert set(record.sessions) == {
        "handler",
        "db_session",
        "dependency",
        "repository",
        "advanced_alchemy",
        "current",
        "provide_services",
    }
    assert len(set(record.sessions.values())) == 1, record.sessions
    assert async_web.names() == ["renamed"]
    assert async_web.commits == 1
    assert record.starts == [(201, 1)]  # committed before the response started, and never again
    assert async_web.checked_out == 0


@pytest.mark.parametrize("commit_mode", COMMIT_MODES)
def test_fastapi_async_rollback_only_hooks_and_failed_commit(async_web: Web, commit_mode: str) -> None:
    record = Record(async_web)
    with TestClient(record.outermost(async_app(async_web, commit_mode, record))) as client:
        swallowed = client.post("/swallowed")
        assert swallowed.status_code == 500
        assert "swallowed" not in swallowed.text
        assert client.post("/hooked", params={"fail": "true"}).status_code == 409
        assert record.hooks == []
        orphan = client.post("/orphans")
        assert orphan.status_code == 500
        assert "saved" not in orphan.text
        assert client.post("/hooked").status_code == 201
    assert record.hooks == [["hooked"]]
    assert async_web.names() == ["hooked"]
    assert async_web.notes() == 0
    assert [status for status, _ in record.starts] == [500, 409, 500, 201]
    assert async_web.commits == 2  # the orphan's COMMIT (refused by the database) and the last request's
    assert async_web.checked_out == 0


# -- FastAPI, sync ------------------------------------------------------------------------------


def sync_app(web: Web, commit_mode: str, record: Record) -> FastAPI:
    app = FastAPI()
    alchemy = AdvancedAlchemy(
        config=SQLAlchemySyncConfig(engine_instance=web.db.engine, commit_mode=commit_mode),  # type: ignore[arg-type]
        app=app,
    )
    app.add_middleware(UnitOfWorkMiddleware, database=web.db, alchemy=alchemy)
    DatabaseSession = Annotated[Session, Depends(alchemy.provide_session())]
    Items = Annotated[ItemSyncRepositoryService, Depends(alchemy.provide_service(ItemSyncRepositoryService))]
    sessions = record.sessions

    def advanced_alchemys_session(db_session: DatabaseSession) -> int:
        return id(db_session)

    @app.post("/shared", status_code=201)
    @uow.with_services(ItemService)
    def shared(
        items: ItemService,
        db_session: Session,
        tags: Annotated[TagService, Service(TagService)],
        repository: Items,
        aa_session: Annotated[int, Depends(advanced_alchemys_session)],
    ) -> dict[str, str]:
        item = items.add("shared")
        tags.tag(item, "t")
        repository.update({"name": "renamed"}, item_id=item.id)
        sessions.update(
            handler=id(items.session),
            db_session=id(db_session),
            dependency=id(tags.session),
            repository=id(repository.repository.session),
            advanced_alchemy=aa_session,
            current=id(uow.current_session()),
        )
        return {"ok": "yes"}

    @app.post("/orphans", status_code=201)
    @uow.with_services(NoteService)
    def orphan(notes: NoteService) -> dict[str, str]:
        notes.add_orphan("dangling")
        uow.on_commit(record.hook)
        return {"saved": "yes"}

    return app


@pytest.mark.parametrize("commit_mode", COMMIT_MODES)
def test_fastapi_sync_one_session_per_request(sync_web: Web, commit_mode: str) -> None:
    record = Record(sync_web)
    with TestClient(record.outermost(sync_app(sync_web, commit_mode, record))) as client:
        assert client.post("/shared").status_code == 201
        assert client.post("/orphans").status_code == 500
    assert set(record.sessions) == {"handler", "db_session", "dependency", "repository", "advanced_alchemy", "current"}
    assert len(set(record.sessions.values())) == 1, record.sessions
    assert sync_web.names() == ["renamed"]
    assert sync_web.notes() == 0
    assert record.hooks == []
    assert record.starts == [(201, 1), (500, 2)]
    assert sync_web.checked_out == 0


# -- Starlette ----------------------------------------------------------------------------------


def test_starlette_one_session_per_request(web_async_sqlite: Web) -> None:
    engine = web_async_sqlite.db.engine
    assert isinstance(engine, AsyncEngine)

    @uow.with_services(AsyncItemService)
    async def create(request: Request, items: AsyncItemService) -> JSONResponse:
        await items.add("starlette")
        theirs = alchemy.get_session(request)
        return JSONResponse({"same": theirs is items.session is uow.current_session()}, status_code=201)

    app = Starlette(routes=[Route("/items", create, methods=["POST"])])
    alchemy = StarletteAdvancedAlchemy(
        config=StarletteAsyncConfig(engine_instance=engine, commit_mode="autocommit"), app=app
    )
    app.add_middleware(StarletteUnitOfWorkMiddleware, database=web_async_sqlite.db, alchemy=alchemy)
    with TestClient(app) as client:
        response = client.post("/items")
    assert response.status_code == 201
    assert response.json() == {"same": True}
    assert web_async_sqlite.names() == ["starlette"]
    assert web_async_sqlite.commits == 1


# -- how the two are put together ---------------------------------------------------------------

UNLINKED = (
    "UnitOfWorkMiddleware is installed next to advanced-alchemy's AdvancedAlchemy extension without being linked "
    "to it: every request would get two sessions and two transactions (uow's and the extension's). Link them with "
    "app.add_middleware(UnitOfWorkMiddleware, database=db, alchemy=alchemy), passing the AdvancedAlchemy object of "
    "this app, so uow's request unit is the extension's request session; pass alchemy=False only if uow's Database "
    "is another database"
)


def unlinked_app(web: Web, *, uow_first: bool) -> FastAPI:
    engine = web.db.engine
    assert isinstance(engine, AsyncEngine)
    app = FastAPI()
    if uow_first:
        app.add_middleware(UnitOfWorkMiddleware, database=web.db)
    AdvancedAlchemy(config=SQLAlchemyAsyncConfig(engine_instance=engine), app=app)
    if not uow_first:
        app.add_middleware(UnitOfWorkMiddleware, database=web.db)

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    return app


@pytest.mark.parametrize("uow_first", [True, False])
def test_unlinked_middleware_fails_the_start_up(web_async_sqlite: Web, uow_first: bool) -> None:
    with pytest.raises(ConfigurationError) as info:
        with TestClient(unlinked_app(web_async_sqlite, uow_first=uow_first)):
            raise AssertionError("the application started")
    assert str(info.value) == UNLINKED


def test_unlinked_middleware_refuses_requests_without_a_start_up(web_async_sqlite: Web) -> None:
    # A server that runs no lifespan still never serves a request with two sessions.
    client = TestClient(unlinked_app(web_async_sqlite, uow_first=False))
    with pytest.raises(ConfigurationError) as info:
        client.get("/ping")
    assert str(info.value) == UNLINKED


def test_linked_extension_must_be_the_apps(web_async_sqlite: Web) -> None:
    engine = web_async_sqlite.db.engine
    assert isinstance(engine, AsyncEngine)
    app = FastAPI()
    AdvancedAlchemy(config=SQLAlchemyAsyncConfig(engine_instance=engine), app=app)
    other = AdvancedAlchemy(config=SQLAlchemyAsyncConfig(engine_instance=engine))
    app.add_middleware(UnitOfWorkMiddleware, database=web_async_sqlite.db, alchemy=other)
    with pytest.raises(ConfigurationError) as info:
        with TestClient(app):
            raise AssertionError("the application started")
    assert str(info.value) == (
        "UnitOfWorkMiddleware(alchemy=...) was given an AdvancedAlchemy extension this app was not initialised "
        "with: pass the one created with AdvancedAlchemy(config=..., app=app)"
    )


def test_alchemy_false_keeps_the_sessions_apart(web_async_sqlite: Web) -> None:
    engine = web_async_sqlite.db.engine
    assert isinstance(engine, AsyncEngine)
    app = FastAPI()
    alchemy = AdvancedAlchemy(config=SQLAlchemyAsyncConfig(engine_instance=engine), app=app)
    app.add_middleware(UnitOfWorkMiddleware, database=web_async_sqlite.db, alchemy=False)

    def advanced_alchemys_session(db_session: Annotated[AsyncSession, Depends(alchemy.provide_session())]) -> int:
        return id(db_session)

    @app.post("/items", status_code=201)
    @uow.with_services(AsyncItemService)
    async def create(
        items: AsyncItemService, theirs: Annotated[int, Depends(advanced_alchemys_session)]
    ) -> dict[str, bool]:
        await items.add("ours")
        return {"same": theirs == id(items.session)}

    with TestClient(app) as client:
        assert client.post("/items").json() == {"same": False}
    assert web_async_sqlite.names() == ["ours"]


def test_linked_config_and_database_must_be_of_one_kind(web_sqlite: Web) -> None:
    app = FastAPI()
    alchemy = AdvancedAlchemy(config=SQLAlchemyAsyncConfig(connection_string="sqlite+aiosqlite://"), app=app)
    app.add_middleware(UnitOfWorkMiddleware, database=web_sqlite.db, alchemy=alchemy)
    with pytest.raises(ConfigurationError) as info:
        with TestClient(app):
            raise AssertionError("the application started")
    assert str(info.value).startswith(
        "UnitOfWorkMiddleware(alchemy=...) links an async advanced-alchemy config to the sync "
    )
