"""Starlette: a pure ASGI middleware giving each request one unit of work.

    app = Starlette(routes=..., middleware=[Middleware(UnitOfWorkMiddleware, database=db)])

Inside a request, decorated functions, ``provide_services(..., connection=request)`` and
``uow.current_session()`` all share the request's unit; it commits before the response
starts when the status is below 400 and rolls back otherwise. The middleware speaks
plain ASGI, so this module needs nothing from Starlette itself.
"""

from __future__ import annotations

from uow.integrations._asgi import UnitOfWorkMiddleware

__all__ = ["UnitOfWorkMiddleware"]
