"""Case 4: end to end, one request through a real framework (httpx ASGITransport, no network).

Every variant serves ``POST /items?name=...``: insert a row, commit, return its id, on
the same in-memory aiosqlite engine. Each variant is a separate application so one
variant's middleware never slows another's requests. Litestar applications run their
lifespan (advanced-alchemy's plugin puts its engine and session maker in the app state
there).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from advanced_alchemy.extensions.litestar import AsyncSessionConfig, SQLAlchemyAsyncConfig, SQLAlchemyPlugin
from dishka import FromDishka, Provider, Scope, make_async_container
from dishka.integrations import fastapi as dishka_fastapi
from fastapi import Depends, FastAPI
from litestar import Litestar, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from benchmarks.common import AsyncItems, aiosqlite_engine, async_factory, clear_async
from benchmarks.harness import Case, Setup, Variant
from uow import Database, with_services
from uow.integrations import fastapi as fastapi_unit
from uow.integrations import litestar as litestar_unit
from uow.integrations import starlette as starlette_unit

Factory = async_sessionmaker[AsyncSession]


def fastapi_by_hand(factory: Factory, db: Database) -> FastAPI:
    app = FastAPI()

    @app.post("/items")
    async def create(name: str) -> dict[str, int]:
        async with factory() as session:
            item = AsyncItems(session).add(name)
            await session.commit()
        return {"id": item.id}

    return app


def fastapi_flush_first(factory: Factory, db: Database) -> FastAPI:
    """The hand-written route shaped like a unit of work: the id comes from a flush, the commit follows it."""
    app = FastAPI()

    @app.post("/items")
    async def create(name: FromQuery[str]) -> dict[str, int]:
        async with factory() as session:
            item = AsyncItems(session).add(name)
            await session.flush()
            await session.commit()
        return {"id": item.id}

    return app


def fastapi_with_services(factory: Factory, db: Database) -> FastAPI:
    app = FastAPI()

    @app.post("/items")
    @with_services(AsyncItems, database=db)
    async def create(name: str, items: AsyncItems) -> dict[str, int]:
        item = items.add(name)
        await items.session.flush()
        return {"id": item.id}

    return app


def fastapi_depends(factory: Factory, db: Database) -> FastAPI:
    app = FastAPI()

    async def provide_items() -> AsyncIterator[AsyncItems]:
        async with factory() as session:
            yield AsyncItems(session)

    @app.post("/items")
    async def create(name: str, items: AsyncItems = Depends(provide_items)) -> dict[str, int]:  # noqa: B008
        item = items.add(name)
        await items.session.commit()
        return {"id": item.id}

    return app


def fastapi_dishka(factory: Factory, db: Database) -> FastAPI:
    app = FastAPI()

    provider = Provider(scope=Scope.REQUEST)

    async def session() -> AsyncIterator[AsyncSession]:
        async with factory() as session:
            yield session

    provider.provide(session, provides=AsyncSession)
    provider.provide(AsyncItems)

    @app.post("/items")
    @dishka_fastapi.inject
    async def create(name: str, items: FromDishka[AsyncItems]) -> dict[str, int]:
        item = items.add(name)
        await items.session.commit()
        return {"id": item.id}

    dishka_fastapi.setup_dishka(make_async_container(provider, dishka_fastapi.FastapiProvider()), app)
    return app


def litestar_by_hand(factory: Factory, db: Database) -> Litestar:
    @post("/items", status_code=200)
    async def create(name: FromQuery[str]) -> dict[str, int]:
        async with factory() as session:
            item = AsyncItems(session).add(name)
            await session.commit()
        return {"id": item.id}

    return Litestar([create], logging_config=None)


def litestar_flush_first(factory: Factory, db: Database) -> Litestar:
    @post("/items", status_code=200)
    async def create(name: FromQuery[str]) -> dict[str, int]:
        async with factory() as session:
            item = AsyncItems(session).add(name)
            await session.flush()
            await session.commit()
        return {"id": item.id}

    return Litestar([create], logging_config=None)


def litestar_with_services(factory: Factory, db: Database) -> Litestar:
    @post("/items", status_code=200)
    @with_services(AsyncItems, database=db)
    async def create(name: FromQuery[str], items: AsyncItems) -> dict[str, int]:
        item = items.add(name)
        await items.session.flush()
        return {"id": item.id}

    return Litestar([create], logging_config=None)


def litestar_provide(factory: Factory, db: Database) -> Litestar:
    async def provide_items() -> AsyncIterator[AsyncItems]:
        async with factory() as session:
            yield AsyncItems(session)

    @post("/items", status_code=200, dependencies={"items": Provide(provide_items)})
    async def create(name: FromQuery[str], items: NamedDependency[AsyncItems]) -> dict[str, int]:
        item = items.add(name)
        await items.session.commit()
        return {"id": item.id}

    return Litestar([create], logging_config=None)


def litestar_alchemy_plugin(factory: Factory, db: Database) -> Litestar:
    """advanced-alchemy's own request session: `SQLAlchemyPlugin`, its autocommit handler commits before sending."""
    engine = factory.kw["bind"]
    assert isinstance(engine, AsyncEngine)
    config = SQLAlchemyAsyncConfig(
        engine_instance=engine,
        session_config=AsyncSessionConfig(expire_on_commit=False),
        before_send_handler="autocommit",
    )

    @post("/items", status_code=200)
    async def create(name: FromQuery[str], db_session: NamedDependency[AsyncSession]) -> dict[str, int]:
        item = AsyncItems(db_session).add(name)
        await db_session.flush()
        return {"id": item.id}

    return Litestar([create], plugins=[SQLAlchemyPlugin(config=config)], logging_config=None)


def starlette_by_hand(factory: Factory, db: Database) -> Starlette:
    async def create(request: Request) -> JSONResponse:
        async with factory() as session:
            item = AsyncItems(session).add(request.query_params["name"])
            await session.commit()
        return JSONResponse({"id": item.id})

    return Starlette(routes=[Route("/items", create, methods=["POST"])])


def starlette_flush_first(factory: Factory, db: Database) -> Starlette:
    async def create(request: Request) -> JSONResponse:
        async with factory() as session:
            item = AsyncItems(session).add(request.query_params["name"])
            await session.flush()
            await session.commit()
        return JSONResponse({"id": item.id})

    return Starlette(routes=[Route("/items", create, methods=["POST"])])


def starlette_with_services(factory: Factory, db: Database) -> Starlette:
    @with_services(AsyncItems, database=db)
    async def create(request: Request, items: AsyncItems) -> JSONResponse:
        item = items.add(request.query_params["name"])
        await items.session.flush()
        return JSONResponse({"id": item.id})

    return Starlette(routes=[Route("/items", create, methods=["POST"])])


def fastapi_request_unit(factory: Factory, db: Database) -> FastAPI:
    """The decorated route inside the request unit of `uow.integrations.fastapi.UnitOfWorkMiddleware`."""
    app = FastAPI()
    app.add_middleware(fastapi_unit.UnitOfWorkMiddleware, database=db)

    @app.post("/items")
    @with_services(AsyncItems, database=db)
    async def create(name: str, items: AsyncItems) -> dict[str, int]:
        item = items.add(name)
        await items.session.flush()
        return {"id": item.id}

    return app


def starlette_request_unit(factory: Factory, db: Database) -> Starlette:
    @with_services(AsyncItems, database=db)
    async def create(request: Request, items: AsyncItems) -> JSONResponse:
        item = items.add(request.query_params["name"])
        await items.session.flush()
        return JSONResponse({"id": item.id})

    return Starlette(
        routes=[Route("/items", create, methods=["POST"])],
        middleware=[Middleware(starlette_unit.UnitOfWorkMiddleware, database=db)],
    )


def litestar_request_unit(factory: Factory, db: Database) -> Litestar:
    @post("/items", status_code=200)
    @with_services(AsyncItems, database=db)
    async def create(name: FromQuery[str], items: AsyncItems) -> dict[str, int]:
        item = items.add(name)
        await items.session.flush()
        return {"id": item.id}

    return Litestar([create], plugins=[litestar_unit.UnitOfWorkPlugin(db)], logging_config=None)


AppFactory = Callable[[Factory, Database], Any]


def _poster(client: httpx.AsyncClient) -> Callable[[], Awaitable[None]]:
    async def post_one() -> None:
        response = await client.post("/items", params={"name": "x"})
        if response.status_code != 200 or "id" not in response.json():
            raise RuntimeError(f"unexpected response {response.status_code}: {response.text[:200]}")

    return post_one


def _web_setup(apps: list[tuple[str, AppFactory, str, str | None]]) -> Callable[[], Any]:
    @asynccontextmanager
    async def setup() -> AsyncIterator[Setup]:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
        async with aiosqlite_engine() as engine, AsyncExitStack() as stack:
            factory = async_factory(engine)
            db = Database(session_factory=factory)
            variants: list[Variant] = []
            for name, make_app, kind, baseline in apps:
                app = make_app(factory, db)
                if isinstance(app, Litestar):
                    await stack.enter_async_context(app.lifespan())
                transport = httpx.ASGITransport(app=app)
                client = await stack.enter_async_context(
                    httpx.AsyncClient(transport=transport, base_url="http://bench")
                )
                variants.append(Variant(name, _poster(client), baseline=baseline, kind=kind))
            yield Setup(variants, reset=lambda: clear_async(engine))

    return setup


_MEASURES = (
    "one POST request that inserts a row and commits, through the framework's own request handling "
    "(httpx ASGITransport, no network), per request"
)

CASES = [
    Case(
        "web-fastapi",
        "end to end, FastAPI",
        _MEASURES,
        _web_setup(
            [
                ("hand-written", fastapi_by_hand, "baseline", None),
                ("hand-written, flush then commit", fastapi_flush_first, "control", None),
                ("@with_services", fastapi_with_services, "uow", None),
                ("@with_services, request unit", fastapi_request_unit, "uow", None),
                ("Depends()", fastapi_depends, "alternative", None),
                ("dishka", fastapi_dishka, "alternative", None),
            ]
        ),
        True,
        10,
        "request",
        ("fastapi", "httpx", "dishka"),
    ),
    Case(
        "web-litestar",
        "end to end, Litestar",
        _MEASURES,
        _web_setup(
            [
                ("hand-written", litestar_by_hand, "baseline", None),
                ("hand-written, flush then commit", litestar_flush_first, "control", None),
                ("@with_services", litestar_with_services, "uow", None),
                ("@with_services, request unit", litestar_request_unit, "uow", None),
                ("Provide()", litestar_provide, "alternative", None),
                ("advanced-alchemy SQLAlchemyPlugin", litestar_alchemy_plugin, "alternative", None),
            ]
        ),
        True,
        10,
        "request",
        ("litestar", "httpx", "advanced_alchemy"),
    ),
    Case(
        "web-starlette",
        "end to end, Starlette",
        _MEASURES,
        _web_setup(
            [
                ("hand-written", starlette_by_hand, "baseline", None),
                ("hand-written, flush then commit", starlette_flush_first, "control", None),
                ("@with_services", starlette_with_services, "uow", None),
                ("@with_services, request unit", starlette_request_unit, "uow", None),
            ]
        ),
        True,
        10,
        "request",
        ("starlette", "httpx"),
    ),
]
