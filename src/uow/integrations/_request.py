"""What the web integrations share beside the request unit itself; imports no framework.

The request unit (`RequestUnit`, `SCOPE_KEY`, `adopted_unit`, `require_request_unit`) lives in core,
`uow._request_unit`, re-exported here for the integrations. This module holds what faces the
frameworks: why a unit rolled back without an exception (`ErrorResponse`, `NoResponse`), the
service a framework dependency yields (`request_service`, `DependencyCache`, `dependency_name`),
and the check that a linked advanced-alchemy config is of the Database's kind.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

from uow._database import Database
from uow._decorators import ServiceSpec, provide_services
from uow._providers import snake_case
from uow._request_unit import (
    SCOPE_KEY,
    RequestUnit,
    adopted_unit,
    kind_mismatch,
    require_request_unit,
)
from uow.errors import ConfigurationError

__all__ = [
    "SCOPE_KEY",
    "DependencyCache",
    "ErrorResponse",
    "NoResponse",
    "RequestUnit",
    "adopted_unit",
    "alchemy_kind_error",
    "dependency_name",
    "request_service",
    "require_request_unit",
]


class ErrorResponse(Exception):
    """Why a request unit rolled back without an exception: the response status was 400 or above."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the response status is {status}: the request's unit of work is rolled back")
        self.status = status


class NoResponse(Exception):
    """Why a request unit rolled back: the application returned without starting a response."""


T = TypeVar("T")


@contextlib.asynccontextmanager
async def request_service(factory: ServiceSpec[T], request: Any, *, install: str) -> AsyncGenerator[T, None]:
    """`factory`'s service built on `request`'s unit: what a framework's dependency yields."""
    # Joining a sync request unit only builds the service on a not-yet-connected Session: no blocking I/O here.
    if require_request_unit(request, install=install).is_async:
        async with provide_services(factory, connection=request) as (built,):
            yield built
    else:
        with provide_services(factory, connection=request) as (built,):
            yield built


class DependencyCache:
    """One framework dependency per service factory, so ``service(UserService)`` is the same object every time.

    Tests override a dependency by the object the application declared (FastAPI's
    ``app.dependency_overrides[service(UserService)] = ...``), which only works when asking
    again gives the same object. Factories are kept by equality (a bound method asked for twice
    is two equal objects); an unhashable factory gets a new dependency each time.
    """

    def __init__(self) -> None:
        self._made: dict[object, Any] = {}

    def get(self, factory: object, make: Callable[[], T]) -> T:
        try:
            found: T | None = self._made.get(factory)
        except TypeError:  # unhashable: nothing to key it by
            return make()
        if found is not None:
            return found
        made: T = self._made.setdefault(factory, make())
        return made


def dependency_name(factory: object) -> str:
    """The name a framework shows for the dependency providing `factory`'s service."""
    return f"provide_{snake_case(getattr(factory, '__name__', 'service'))}"


def alchemy_kind_error(
    owner: str, config_is_async: bool, database: Database | None, *, engine: str
) -> ConfigurationError | None:
    """The error for `owner(alchemy=...)` linking an advanced-alchemy config of the other kind than `database`.

    `engine` says where the right Database comes from ("the plugin's engine, uow.Database(...)").
    """
    mismatch = kind_mismatch(database, config_is_async)
    if mismatch is None:
        return None
    return ConfigurationError(
        f"{owner}(alchemy=...) links an {mismatch[0]} advanced-alchemy config to the {mismatch[1]} {database!r}: "
        f"give uow a Database on {engine}"
    )
