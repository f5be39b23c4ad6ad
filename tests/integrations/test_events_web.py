"""Unit controls in a request's unit (Starlette's middleware, its TestClient): durable=True is refused, set_rollback_only() rolls back quietly."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

import uow
from tests.integrations.web import Web
from tests.models import AsyncItemService
from uow.integrations.starlette import UnitOfWorkMiddleware

pytest_plugins = ["tests.integrations.web"]


@uow.with_services(AsyncItemService)
async def write_then_pay(items: AsyncItemService, request: Request) -> Response:
    await items.add("order")
    try:
        async with uow.provide_services(AsyncItemService, connection=request, durable=True) as (payments,):
            await payments.add("payment")
    except uow.PropagationError as refused:
        return JSONResponse({"refused": str(refused)}, status_code=409)
    return JSONResponse({"refused": None})


PREVIEW_OUTCOMES: list[uow.Outcome] = []


@uow.with_services(AsyncItemService)
async def preview(items: AsyncItemService, request: Request) -> Response:
    item = await items.add("preview")
    uow.on_completion(PREVIEW_OUTCOMES.append)
    uow.set_rollback_only()
    return JSONResponse({"id": item.id})


def app(web: Web) -> Starlette:
    routes = [Route("/pay", write_then_pay, methods=["POST"]), Route("/preview", preview, methods=["POST"])]
    return Starlette(routes=routes, middleware=[Middleware(UnitOfWorkMiddleware, database=web.db)])


def test_a_durable_unit_refuses_the_requests_unit(web_async_sqlite: Web) -> None:
    with TestClient(app(web_async_sqlite)) as client:
        response = client.post("/pay")
    assert response.status_code == 409
    message = response.json()["refused"]
    assert "is durable=True, so it must be the outermost unit of work" in message
    assert web_async_sqlite.names() == []  # a 409 rolls the request's unit back
    assert web_async_sqlite.checked_out == 0


@pytest.mark.parametrize("fixture", ["web_async_sqlite", "web_async_postgres"])
def test_set_rollback_only_in_a_request_rolls_back_and_still_answers(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    web: Web = request.getfixturevalue(fixture)
    PREVIEW_OUTCOMES.clear()
    with TestClient(app(web)) as client:
        response = client.post("/preview")
    assert response.status_code == 200 and response.json()["id"] > 0
    assert web.names() == []
    assert web.commits == 0
    assert PREVIEW_OUTCOMES == [uow.Outcome.ROLLED_BACK]  # the request's unit ran the hook when it ended
    assert web.checked_out == 0
