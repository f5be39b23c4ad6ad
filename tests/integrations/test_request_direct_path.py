"""The direct path of a decorated function with its own connection parameter decides as the general path.

A Starlette endpoint takes the `Request`; FastAPI passes ``request=`` by keyword. Such a function
joins the request unit that parameter points at: the wrapper does it without `_decide` when that
unit is the innermost one (`uow._stack.join_request`), and when the parameter points at no unit
(none installed, or already finished) it joins or begins as any decorated function would. These
tests call the same function both ways inside real requests (the frameworks' own test clients) —
through its wrapper, and through the general path (`uow._calling.call_async` / `call_sync`) — for
every propagation and option, and compare what each decided.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import uow
from tests.integrations.web import Web
from tests.models import AsyncItemService, ItemService
from uow import _calling, _stack
from uow.integrations._request import SCOPE_KEY
from uow.integrations.starlette import UnitOfWorkMiddleware

pytest_plugins = ["tests.integrations.web"]

OPTIONS: list[dict[str, Any]] = [{}, {"read_only": True}, {"isolation_level": "SERIALIZABLE"}]
PROPAGATIONS = [p.value for p in uow.Propagation]


def _what(session: Session | AsyncSession, request: Request) -> dict[str, Any]:
    """What a unit decided, seen from inside it: whose session it runs in, and in which unit."""
    unit = request.scope.get(SCOPE_KEY)
    request_tx = unit.transaction if unit is not None else None
    frame = _stack.innermost_frame()
    assert frame is not None
    return {
        "request_session": request_tx is not None and session is request_tx.session,
        "frame_is_request": frame.transaction is request_tx,
        "nested": session.in_nested_transaction(),
        "read_only": frame.transaction.read_only,
    }


def _async_variants(database: uow.Database | None) -> list[Callable[..., Any]]:
    functions = []
    for propagation in PROPAGATIONS:
        for options in OPTIONS:

            @uow.with_services(AsyncItemService, database=database, propagation=propagation, **options)
            async def probe(request: Request, items: AsyncItemService) -> dict[str, Any]:
                return _what(items.session, request)

            functions.append(probe)
    return functions


def _sync_variants(database: uow.Database | None) -> list[Callable[..., Any]]:
    functions = []
    for propagation in PROPAGATIONS:
        for options in OPTIONS:

            @uow.with_services(ItemService, database=database, propagation=propagation, **options)
            def probe(request: Request, items: ItemService) -> dict[str, Any]:
                return _what(items.session, request)

            functions.append(probe)
    return functions


async def _outcome_async(call: Callable[[], Any]) -> Any:
    try:
        return await call()
    except Exception as exc:
        return type(exc).__name__


def _outcome_sync(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:
        return type(exc).__name__


async def _compare_async(request: Request, functions: list[Callable[..., Any]], *, by_keyword: bool) -> list[Any]:
    """Each function through its wrapper, then through the general path: the two outcomes, per function."""
    if by_keyword:
        args: tuple[Any, ...] = ()
        kwargs: Callable[[], dict[str, Any]] = lambda: {"request": request}  # noqa: E731
    else:
        args, kwargs = (request,), dict
    pairs = []
    for fn in functions:
        plan = fn.__uow_plan__  # type: ignore[attr-defined]
        direct = await _outcome_async(lambda fn=fn: fn(*args, **kwargs()))
        general = await _outcome_async(lambda plan=plan: _calling.call_async(plan, args, kwargs()))
        pairs.append((plan.spec.propagation.value, plan.spec.read_only, plan.spec.isolation_level, direct, general))
    return pairs


def _assert_same(pairs: list[Any]) -> None:
    assert pairs
    for propagation, read_only, level, direct, general in pairs:
        assert direct == general, (propagation, read_only, level)


def _plain(pairs: list[Any]) -> dict[str, Any]:
    """The direct outcome per propagation, for the variants without read_only= or isolation_level=."""
    return {
        propagation: direct for propagation, read_only, level, direct, _ in pairs if not read_only and level is None
    }


@pytest.fixture
def other_async(tmp_path: Any) -> Iterator[uow.Database]:
    db = uow.Database(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    yield db
    asyncio.run(db.dispose_async())


def test_starlette_async_endpoint_decides_as_the_general_path(web_async_sqlite: Web, other_async: uow.Database) -> None:
    results: dict[str, list[Any]] = {}
    own = _async_variants(web_async_sqlite.db)
    other = _async_variants(other_async)  # another database: the request's unit is joined anyway
    default = _async_variants(None)

    async def compare(request: Request) -> Response:
        await uow.current_session_async()  # the request unit's session is open, as after a first write
        results["own"] = await _compare_async(request, own, by_keyword=False)
        results["other"] = await _compare_async(request, other, by_keyword=False)
        return JSONResponse({"ok": True})

    async def lazy(request: Request) -> Response:
        results["lazy"] = await _compare_async(request, own, by_keyword=False)  # the session not opened yet
        return JSONResponse({"ok": True})

    async def streamed(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            # The response has started: the request unit has committed, so nothing joins it any more.
            results["finished"] = await _compare_async(request, own, by_keyword=False)
            results["finished, default"] = await _compare_async(request, default, by_keyword=False)
            yield b"done"

        return StreamingResponse(body())

    routes = [Route("/compare", compare), Route("/lazy", lazy), Route("/streamed", streamed)]
    app = Starlette(routes=routes, middleware=[Middleware(UnitOfWorkMiddleware, database=web_async_sqlite.db)])
    uow.configure(web_async_sqlite.db)
    with TestClient(app) as client:
        assert client.get("/compare").status_code == 200
        assert client.get("/lazy").status_code == 200
        assert client.get("/streamed").text == "done"
    for name in ("own", "other", "lazy", "finished", "finished, default"):
        _assert_same(results[name])
    # The plain join of the request unit, as the general path decides it: the request's session and frame.
    required = _plain(results["own"])
    assert required["required"] == {
        "request_session": True,
        "frame_is_request": True,
        "nested": False,
        "read_only": False,
    }
    assert required["nested"]["nested"] is True
    assert required["never"] == "PropagationError"
    assert _plain(results["other"])["required"]["request_session"] is True
    assert _plain(results["finished"])["required"]["request_session"] is False
    assert web_async_sqlite.checked_out == 0


def test_the_direct_path_joins_the_request_unit_without_deciding(
    web_async_sqlite: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    decided: list[object] = []
    general: list[object] = []
    decide, call_async = _stack._decide, _calling.call_async

    def spy_decide(*args: Any, **kwargs: Any) -> Any:
        decided.append(args[0])
        return decide(*args, **kwargs)

    async def spy_call(*args: Any, **kwargs: Any) -> Any:
        general.append(args[0])
        return await call_async(*args, **kwargs)

    monkeypatch.setattr(_stack, "_decide", spy_decide)
    monkeypatch.setattr(_calling, "call_async", spy_call)

    @uow.with_services(AsyncItemService)
    async def create(request: Request, items: AsyncItemService) -> Response:
        item = await items.add(request.query_params["name"])
        return JSONResponse({"id": item.id, "request_session": _what(items.session, request)["request_session"]})

    app = Starlette(
        routes=[Route("/items", create, methods=["POST"])],
        middleware=[Middleware(UnitOfWorkMiddleware, database=web_async_sqlite.db)],
    )
    uow.configure(web_async_sqlite.db)
    with TestClient(app) as client:
        response = client.post("/items", params={"name": "a"})
    assert response.json() == {"id": 1, "request_session": True}
    assert decided == [] and general == []  # joined directly
    assert web_async_sqlite.names() == ["a"]
    assert web_async_sqlite.commits == 1


def test_starlette_sync_endpoint_decides_as_the_general_path(web_sqlite: Web) -> None:
    # A sync endpoint runs in a worker thread: the request unit was pushed by the event loop's thread,
    # so its join is one from another thread, which the general path admits; the direct one hands it over.
    results: dict[str, list[Any]] = {}
    own = _sync_variants(web_sqlite.db)

    def compare(request: Request) -> Response:
        uow.current_session()
        pairs = []
        for fn in own:
            plan = fn.__uow_plan__
            direct = _outcome_sync(lambda fn=fn: fn(request))
            general = _outcome_sync(lambda plan=plan: _calling.call_sync(plan, (request,), {}))
            pairs.append((plan.spec.propagation.value, plan.spec.read_only, plan.spec.isolation_level, direct, general))
        results["own"] = pairs
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[Route("/compare", compare)], middleware=[Middleware(UnitOfWorkMiddleware, database=web_sqlite.db)]
    )
    with TestClient(app) as client:
        assert client.get("/compare").status_code == 200
    _assert_same(results["own"])
    required = _plain(results["own"])
    assert required["required"]["request_session"] is True
    assert web_sqlite.checked_out == 0


def test_fastapi_request_keyword_decides_as_the_general_path(web_async_sqlite: Web) -> None:
    results: dict[str, list[Any]] = {}
    own = _async_variants(web_async_sqlite.db)
    app = FastAPI()
    app.add_middleware(UnitOfWorkMiddleware, database=web_async_sqlite.db)

    @app.get("/compare")
    async def compare(request: Request) -> dict[str, bool]:
        await uow.current_session_async()
        results["own"] = await _compare_async(request, own, by_keyword=True)
        return {"ok": True}

    @app.post("/items")
    @uow.with_services(AsyncItemService)
    async def create(name: str, request: Request, items: AsyncItemService) -> dict[str, Any]:
        item = await items.add(name)
        return {"id": item.id, "request_session": _what(items.session, request)["request_session"]}

    uow.configure(web_async_sqlite.db)
    with TestClient(app) as client:
        assert client.get("/compare").status_code == 200
        assert client.post("/items", params={"name": "b"}).json() == {"id": 1, "request_session": True}
    _assert_same(results["own"])
    assert web_async_sqlite.names() == ["b"]


def test_without_a_request_unit_the_endpoint_begins_its_own(web_async_sqlite: Web) -> None:
    # No middleware: the parameter points at no unit, so the function begins one (the direct begin).
    results: dict[str, list[Any]] = {}
    own = _async_variants(web_async_sqlite.db)

    async def compare(request: Request) -> Response:
        results["own"] = await _compare_async(request, own, by_keyword=False)
        return JSONResponse({"ok": True})

    with TestClient(Starlette(routes=[Route("/compare", compare)])) as client:
        assert client.get("/compare").status_code == 200
    _assert_same(results["own"])
    required = _plain(results["own"])
    assert required["required"] == {
        "request_session": False,
        "frame_is_request": False,
        "nested": False,
        "read_only": False,
    }
    assert required["mandatory"] == "PropagationError"
    assert web_async_sqlite.checked_out == 0
