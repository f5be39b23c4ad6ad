"""Every misuse gets a clear error, at decoration time where it can be known then.

Each message must name the function (or the option) involved and say how to fix it; the
patterns below match on those key parts, not on the whole wording.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.orm import Session

import uow
from tests.models import AsyncItemService, ItemService

SYNC_DB = uow.Database("sqlite://")
ASYNC_DB = uow.Database("sqlite+aiosqlite://")


def provide_items(session: Session) -> ItemService:
    return ItemService(session)


async def provide_async_items(session: Any) -> ItemService:
    return ItemService(session)


def non_callable_service() -> None:
    @uow.with_services(42, database=SYNC_DB)  # type: ignore[call-overload]
    def handler(items: ItemService) -> None: ...


def same_service_twice() -> None:
    @uow.with_services(ItemService, ItemService, database=SYNC_DB)
    def handler(items: ItemService) -> None: ...


def two_services_one_parameter() -> None:
    @uow.with_services(ItemService, provide_items, database=SYNC_DB)
    def handler(items: ItemService) -> None: ...


def positional_only() -> None:
    @uow.with_services(ItemService, database=SYNC_DB)
    def handler(items: ItemService, /) -> None: ...


def args_only() -> None:
    @uow.with_services(ItemService, database=SYNC_DB)
    def handler(*args: Any) -> None: ...


def a_lambda() -> None:
    uow.with_services(ItemService, database=SYNC_DB)(lambda items: None)


def no_matching_parameter() -> None:
    @uow.with_services(ItemService, database=SYNC_DB)
    def handler(count: int) -> None: ...


def unknown_propagation() -> None:
    @uow.with_services(ItemService, database=SYNC_DB, propagation="sometimes")
    def handler(items: ItemService) -> None: ...


def retry_zero() -> None:
    @uow.with_services(ItemService, database=SYNC_DB, retry=0)
    def handler(items: ItemService) -> None: ...


def retry_policy_zero() -> None:
    uow.Retry(attempts=0)


def sync_function_async_database() -> None:
    @uow.with_services(ItemService, database=ASYNC_DB)
    def handler(items: ItemService) -> None: ...


def async_function_sync_database() -> None:
    @uow.with_services(AsyncItemService, database=SYNC_DB)
    async def handler(items: AsyncItemService) -> None: ...


def async_provider_sync_function() -> None:
    @uow.with_services(provide_async_items, database=SYNC_DB)
    def handler(items: ItemService) -> None: ...


def provider_of_unknown_type() -> None:
    def make(session: Session):  # type: ignore[no-untyped-def]
        return ItemService(session)

    @uow.with_services(make, database=SYNC_DB)
    def handler(items: ItemService) -> None: ...


def generator_function() -> None:
    @uow.with_services(ItemService, database=SYNC_DB)
    def handler(items: ItemService) -> Any:
        yield items


def reserved_parameter() -> None:
    @uow.with_services(ItemService, database=SYNC_DB)
    def handler(items: ItemService, session: int) -> None: ...


def database_not_a_database() -> None:
    @uow.with_services(ItemService, database="sqlite://")  # type: ignore[arg-type]
    def handler(items: ItemService) -> None: ...


# (misuse, error type, patterns every one of which the message must contain)
AT_DECORATION: list[tuple[Callable[[], None], type[Exception], list[str]]] = [
    (non_callable_service, uow.InjectionError, [r"handler\(\)", r"42 is not a service", r"pass a service class"]),
    (
        same_service_twice,
        uow.InjectionError,
        [r"handler\(\)", r"ItemService is listed twice", r"list each service once"],
    ),
    (
        two_services_one_parameter,
        uow.InjectionError,
        [r"handler\(\)", r"ItemService and .*provide_items both want parameter 'items'", r"give each its own"],
    ),
    (positional_only, uow.InjectionError, [r"handler\(\)", r"'items' is positional-only", r"remove the '/'"]),
    (
        args_only,
        uow.InjectionError,
        [r"handler\(\)", r"no parameter for service .*ItemService", r"\*args and \*\*kwargs cannot receive"],
    ),
    (a_lambda, uow.InjectionError, [r"cannot decorate a lambda", r"<lambda>", r"write a 'def' function"]),
    (
        no_matching_parameter,
        uow.InjectionError,
        [r"handler\(\)", r"no parameter for service .*ItemService", r"annotated with it, or named 'item_service'"],
    ),
    (unknown_propagation, uow.ConfigurationError, [r"handler\(\)", r"unknown propagation 'sometimes'", r"use one of"]),
    (retry_zero, uow.ConfigurationError, [r"handler\(\)", r"retry=0", r"at least 1"]),
    (retry_policy_zero, uow.ConfigurationError, [r"Retry\(attempts=0\)", r"at least 1"]),
    (
        sync_function_async_database,
        uow.ConfigurationError,
        [r"handler\(\) is sync", r"is async", r"make the function 'async def'"],
    ),
    (
        async_function_sync_database,
        uow.ConfigurationError,
        [r"handler\(\) is async", r"is sync", r"make the function a plain 'def'"],
    ),
    (
        async_provider_sync_function,
        uow.InjectionError,
        [r"handler\(\) is sync", r"provide_async_items is async", r"'async def'"],
    ),
    (
        provider_of_unknown_type,
        uow.InjectionError,
        [r"handler\(\)", r"cannot tell which service", r"return annotation"],
    ),
    (generator_function, uow.InjectionError, [r"generator function .*handler\(\)", r"return a list instead"]),
    (reserved_parameter, uow.InjectionError, [r"handler\(\)", r"'session' clashes", r"rename the parameter"]),
    (database_not_a_database, uow.ConfigurationError, [r"handler\(\)", r"needs a uow.Database", r"got str"]),
]


@pytest.mark.parametrize(
    ("misuse", "error", "patterns"), AT_DECORATION, ids=[misuse.__name__ for misuse, _, _ in AT_DECORATION]
)
def test_misuse_is_refused_at_decoration_time(
    misuse: Callable[[], None], error: type[Exception], patterns: list[str]
) -> None:
    with pytest.raises(error) as refused:
        misuse()
    message = str(refused.value)
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in: {message}"


def test_no_services() -> None:
    with pytest.raises(ValueError, match="^At least one service provider is required$"):
        uow.with_services()


# -- what can only be known when called ------------------------------------------------------------


def test_sync_function_with_an_async_default_database() -> None:
    # With configure() the database is resolved at call time: the mismatch is reported then.
    @uow.with_services(ItemService)
    def handler(items: ItemService) -> None: ...

    uow.configure(ASYNC_DB)
    with pytest.raises(uow.ConfigurationError) as refused:
        handler()
    message = str(refused.value)
    for pattern in [r"handler\(\) is sync", r"is async", r"'async def'", r"sync driver"]:
        assert re.search(pattern, message), f"{pattern!r} not in: {message}"


def test_connection_without_an_integration() -> None:
    @uow.with_services(ItemService, database=SYNC_DB)
    def handler(items: ItemService) -> None: ...

    with pytest.raises(uow.ConfigurationError) as refused:
        handler(connection=object())
    message = str(refused.value)
    for pattern in [r"handler\(\)", r"connection=object", r"no framework integration knows it", r"pass session="]:
        assert re.search(pattern, message), f"{pattern!r} not in: {message}"


def test_session_and_connection_together() -> None:
    @uow.with_services(ItemService, database=SYNC_DB)
    def handler(items: ItemService) -> None: ...

    with pytest.raises(ValueError, match="^Cannot provide both 'session' and 'connection' - choose one$"):
        handler(session=object(), connection=object())


def test_no_database_at_all() -> None:
    @uow.with_services(ItemService)
    def handler(items: ItemService) -> None: ...

    with pytest.raises(uow.ConfigurationError) as refused:
        handler()
    message = str(refused.value)
    for pattern in [r"handler\(\) has no database", r"uow.configure\(Database\(url\)\)", r"database=\.\.\."]:
        assert re.search(pattern, message), f"{pattern!r} not in: {message}"
