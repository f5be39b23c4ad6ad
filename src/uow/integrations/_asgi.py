"""The request unit as a pure ASGI middleware, shared by the Starlette, FastAPI and Litestar integrations.

It imports no framework, only anyio (which all of them run on): the unit is committed
from the ``send`` callable when ``http.response.start`` goes out, so the status is known
and nothing has reached the client yet.

A commit that fails there is answered by the middleware itself (a plain 500, the error
logged on logger ``uow``) rather than raised into the application: Litestar's exception
middleware marks the response as started before our ``send`` runs and would refuse to
turn the error into a response, so raising would leave each framework to do something
different.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread

from uow._database import Database, resolve_database
from uow.errors import ConfigurationError
from uow.integrations._request import SCOPE_KEY, ErrorResponse, NoResponse, RequestUnit, adopted_unit

__all__ = ["ASGIApp", "UnitOfWorkMiddleware"]

logger = logging.getLogger("uow")
_LABEL = "UnitOfWorkMiddleware"

# Loose on purpose: Starlette spells these as MutableMapping, Litestar as unions of TypedDicts, and
# the middleware must type-check as a middleware of both.
Scope = Any
Message = Any
Receive = Any
Send = Any
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
RequestSession = Callable[[Scope], Any]
"""Hands out the request session of a framework SQLAlchemy plugin for an HTTP scope (made once per request)."""


class UnitOfWorkMiddleware:
    """One unit of work per HTTP request: committed before the response starts when its status is below 400.

    A 4xx/5xx response, an exception or a request that never responds rolls the unit back.
    When the commit fails, the client gets a 500 instead of the application's response
    and the error is logged. `database` defaults to the one given to `uow.configure()`,
    looked up per request.

    With `request_session` (what the framework integrations pass to link a SQLAlchemy plugin),
    the unit's session is the one it returns for the request, not one of uow's own.
    """

    plugin_name = "the framework's SQLAlchemy plugin"

    def __init__(
        self, app: ASGIApp, database: Database | None = None, *, request_session: RequestSession | None = None
    ) -> None:
        self.app = app
        self.database = database
        self.request_session = request_session
        self._checked = False

    def startup_error(self, scope: Scope) -> ConfigurationError | None:
        """What is wrong with how the application is set up (checked at start-up and on the first request)."""
        return None

    def _unchecked_error(self, scope: Scope) -> ConfigurationError | None:
        """`startup_error`, until the set-up has once been found right (then None, without asking again)."""
        if self._checked:
            return None
        error = self.startup_error(scope)
        self._checked = error is None
        return error

    def _check_once(self, scope: Scope) -> None:
        error = self._unchecked_error(scope)
        if error is not None:
            raise error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                receive = self._checking_startup(scope, receive, send)
            await self.app(scope, receive, send)
            return
        if not self._checked:
            self._check_once(scope)
        if self.request_session is None:
            database = self.database  # `resolve_database(self.database, ...)`, without the call when it is set
            unit = RequestUnit(database if database is not None else resolve_database(None, label=_LABEL))
        else:
            unit = adopted_unit(self.database, self.request_session(scope), plugin=self.plugin_name)
        scope[SCOPE_KEY] = unit

        replaced = False

        async def send_committing(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the rest of a response the client will never see
            if message["type"] == "http.response.start" and not unit.finished:
                # Commit (status below 400) or roll back before anything reaches the client.
                status = int(message["status"])
                if status >= 400:
                    await finish(unit, ErrorResponse(status))
                else:
                    try:
                        await finish(unit, None)
                    except Exception:
                        logger.exception(
                            "uow: the request's unit of work failed to commit; answering 500 instead of %d", status
                        )
                        replaced = True
                        await _send_server_error(send)
                        return
            await send(message)

        unit.activate()
        try:
            await self.app(scope, receive, send_committing)
        except BaseException as exc:
            await _finish_shielded(unit, exc)
            raise
        else:
            if not unit.finished:  # the response started: it is finished, and no NoResponse is made for nothing
                await _finish_shielded(unit, NoResponse("the application returned without starting a response"))
        finally:
            unit.deactivate()

    def _checking_startup(self, scope: Scope, receive: Receive, send: Send) -> Receive:
        # A set-up error fails the start-up the ASGI way (servers stop; test clients raise it) instead of
        # surfacing as a 500 on some later request.
        async def receive_checked() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                error = self._unchecked_error(scope)
                if error is not None:
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    raise error
            return message

        return receive_checked


async def finish(unit: RequestUnit, exc: BaseException | None) -> None:
    """Finish `unit` (once): awaited when async, in a worker thread when sync (a commit blocks)."""
    tx = unit.transaction
    if tx.is_async:
        if not unit.finished:  # `unit.finish_async(exc)`, without the call
            unit.finished = True
            await tx.finish_async(exc)
    else:
        await anyio.to_thread.run_sync(unit.finish_sync, exc)


_SERVER_ERROR = b"Internal Server Error"


async def _send_server_error(send: Send) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(_SERVER_ERROR)).encode())]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": _SERVER_ERROR, "more_body": False})


async def _finish_shielded(unit: RequestUnit, exc: BaseException) -> None:
    # A cancelled request (client gone, server shutting down) must still roll back and hand its connection back.
    if unit.finished:
        return
    with anyio.CancelScope(shield=True):
        await finish(unit, exc)
