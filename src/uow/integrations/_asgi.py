"""The request unit as a pure ASGI middleware, shared by the Starlette, FastAPI and Litestar integrations.

It imports no framework, only anyio (which all of them run on): the unit is committed
from the ``send`` callable when ``http.response.start`` goes out, so the status is known
and nothing has reached the client yet.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread

from uow._database import Database, resolve_database
from uow.integrations import SCOPE_KEY, ErrorResponse, NoResponse, RequestUnit

__all__ = ["ASGIApp", "UnitOfWorkMiddleware"]

logger = logging.getLogger("uow")

# Loose on purpose: Starlette spells these as MutableMapping, Litestar as unions of TypedDicts, and
# the middleware must type-check as a middleware of both.
Scope = Any
Message = Any
Receive = Any
Send = Any
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class UnitOfWorkMiddleware:
    """One unit of work per HTTP request: committed before the response starts when its status is below 400.

    A 4xx/5xx response, an exception or a request that never responds rolls the unit back.
    A commit that fails is raised from ``send`` before the response start reaches the client,
    so the framework (or the server) answers 500 instead. `database` defaults to the one
    given to `uow.configure()`, looked up per request.
    """

    def __init__(self, app: ASGIApp, database: Database | None = None) -> None:
        self.app = app
        self.database = database

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        unit = RequestUnit(resolve_database(self.database, what="UnitOfWorkMiddleware"))
        scope[SCOPE_KEY] = unit

        async def send_committing(message: Message) -> None:
            if message["type"] == "http.response.start" and not unit.finished:
                await _finish_before_response(unit, int(message["status"]))
            await send(message)

        unit.activate()
        try:
            await self.app(scope, receive, send_committing)
        except BaseException as exc:
            await _finish_shielded(unit, exc)
            raise
        else:
            await _finish_shielded(unit, NoResponse("the application returned without starting a response"))
        finally:
            unit.deactivate()


async def finish(unit: RequestUnit, exc: BaseException | None) -> None:
    """Finish `unit`: awaited when async, in a worker thread when sync (a commit blocks)."""
    if unit.is_async:
        await unit.finish_async(exc)
    else:
        await anyio.to_thread.run_sync(unit.finish_sync, exc)


async def _finish_before_response(unit: RequestUnit, status: int) -> None:
    if status >= 400:
        await finish(unit, ErrorResponse(status))
        return
    try:
        await finish(unit, None)
    except Exception:
        logger.exception("uow: the request's unit of work failed to commit; the %d response becomes a 500", status)
        raise


async def _finish_shielded(unit: RequestUnit, exc: BaseException) -> None:
    # A cancelled request (client gone, server shutting down) must still roll back and hand its connection back.
    if unit.finished:
        return
    with anyio.CancelScope(shield=True):
        await finish(unit, exc)
