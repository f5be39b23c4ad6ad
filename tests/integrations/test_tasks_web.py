"""Request units joined from a task or thread of their own, and fan-out inside a request.

Starlette's `BaseHTTPMiddleware` runs the endpoint in a task of its own and FastAPI runs a sync
endpoint in a worker thread: each is one child awaited alone, and shares the request's unit.
Two decorated children run concurrently inside an endpoint are refused: the request answers 500,
rolls back and hands its connection back (the fixtures check), so repeating it cannot drain the pool.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

import uow
from tests.integrations.web import Web
from tests.models import AsyncItemService, ItemService
from uow.integrations.fastapi import UnitOfWorkMiddleware as FastAPIUnitOfWorkMiddleware
from uow.integrations.starlette import UnitOfWorkMiddleware

pytest_plugins = ["tests.integrations.web"]

REQUESTS = 6  # more than a pool of 5 holds: a leaked connection per failed request would show


async def passthrough(request: Request, call_next: RequestResponseEndpoint) -> Response:
    return await call_next(request)


@uow.with_services(AsyncItemService)
async def add(items: AsyncItemService, name: str) -> int:
    await items.add(name)
    return await items.count()


@uow.with_services(AsyncItemService)
async def create(items: AsyncItemService, request: Request) -> Response:
    name = request.path_params["name"]
    await items.add(name)
    await add(f"{name}-nested")
    async with uow.provide_services(AsyncItemService, connection=request) as (joined,):
        same = joined.session is items.session
    return JSONResponse({"same_session": same, "task": asyncio.current_task() is not None}, status_code=201)


@uow.with_services(AsyncItemService)
async def fan_out(items: AsyncItemService, request: Request) -> Response:
    name = request.path_params["name"]
    await items.add(name)
    await asyncio.gather(add(f"{name}-a"), add(f"{name}-b"))
    return JSONResponse({"reached": True})


def starlette_app(web: Web) -> Starlette:
    routes = [Route("/items/{name}", create, methods=["POST"]), Route("/fan-out/{name}", fan_out, methods=["POST"])]
    middleware = [
        Middleware(UnitOfWorkMiddleware, database=web.db),
        Middleware(BaseHTTPMiddleware, dispatch=passthrough),
    ]
    return Starlette(routes=routes, middleware=middleware)


@pytest.fixture(params=["sqlite", "postgresql"])
def async_web(request: pytest.FixtureRequest) -> Web:
    web: Web = request.getfixturevalue("web_async_sqlite" if request.param == "sqlite" else "web_async_postgres")
    return web


def test_endpoint_behind_base_http_middleware_shares_the_request_unit(async_web: Web) -> None:
    with TestClient(starlette_app(async_web)) as client:
        response = client.post("/items/one")
        assert response.status_code == 201, response.text
        assert response.json() == {"same_session": True, "task": True}
    assert async_web.names() == ["one", "one-nested"]


def test_fan_out_inside_a_request_answers_500_and_leaks_nothing(async_web: Web) -> None:
    with TestClient(starlette_app(async_web), raise_server_exceptions=False) as client:
        for n in range(REQUESTS):
            assert client.post(f"/fan-out/f{n}").status_code == 500
        assert client.post("/items/after").status_code == 201
    assert async_web.names() == ["after", "after-nested"]


def fastapi_sync_app(web: Web) -> FastAPI:
    app = FastAPI()
    app.add_middleware(FastAPIUnitOfWorkMiddleware, database=web.db)

    @uow.with_services(ItemService)
    def add_sync(items: ItemService, name: str) -> int:
        items.add(name)
        return id(items.session)

    @app.post("/items/{name}")
    @uow.with_services(ItemService)
    def create_sync(items: ItemService, name: str) -> dict[str, Any]:
        items.add(name)
        return {
            "thread": threading.current_thread() is not threading.main_thread(),
            "same_session": add_sync(f"{name}-nested") == id(items.session) and uow.current_session() is items.session,
        }

    @app.post("/fan-out/{name}")
    @uow.with_services(ItemService)
    def fan_out_sync(items: ItemService, name: str) -> dict[str, Any]:
        items.add(name)
        inside, release = threading.Event(), threading.Event()

        @uow.with_services(ItemService)
        def hold(items: ItemService) -> None:
            items.add(f"{name}-held")
            inside.set()
            assert release.wait(10)

        with ThreadPoolExecutor(max_workers=2) as pool:
            first = pool.submit(contextvars.copy_context().run, hold)
            assert inside.wait(10)
            second = pool.submit(contextvars.copy_context().run, add_sync, f"{name}-second")
            refused = second.exception(10)
            release.set()
            first.result(10)
        return {"refused": type(refused).__name__}

    return app


@pytest.fixture(params=["sqlite", "postgresql"])
def sync_web(request: pytest.FixtureRequest) -> Web:
    web: Web = request.getfixturevalue("web_sqlite" if request.param == "sqlite" else "web_postgres")
    return web


def test_sync_endpoint_in_the_worker_thread_shares_the_request_unit(sync_web: Web) -> None:
    with TestClient(fastapi_sync_app(sync_web)) as client:
        response = client.post("/items/s1")
        assert response.json() == {"thread": True, "same_session": True}, response.text
    assert sync_web.names() == ["s1", "s1-nested"]


def test_threads_fanned_out_by_a_sync_endpoint_roll_the_request_back(sync_web: Web) -> None:
    with TestClient(fastapi_sync_app(sync_web), raise_server_exceptions=False) as client:
        for n in range(REQUESTS):
            # The endpoint swallows the refusal and returns: the unit is rollback-only, so its commit fails.
            assert client.post(f"/fan-out/f{n}").status_code == 500
        assert client.post("/items/after").status_code == 200
    assert sync_web.names() == ["after", "after-nested"]
