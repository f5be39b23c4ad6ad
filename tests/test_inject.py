"""Which parameter gets which service, what frameworks see, and what a call may pass (docs/design.md, "Services and parameters").

This module deliberately has no ``from __future__ import annotations``: its annotations are
real objects. `tests.stringified` holds the same cases with string annotations.
"""

import asyncio
import functools
import inspect
import types
import typing
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Coroutine, Generator, Iterator
from typing import Annotated, Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import uow
from tests import stringified
from tests.helpers import committed, committed_async
from tests.models import AsyncItemService, Item, ItemService, TagService
from uow import ConfigurationError, InjectionError, with_services


class UserService:
    """A fake service: records the session it was built with."""

    built = 0

    def __init__(self, session: Session) -> None:
        self.session = session
        UserService.built += 1


class RoleService:
    def __init__(self, session: Session) -> None:
        self.session = session


class AsyncUserService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session


class HTTPClient:
    def __init__(self, session: Session) -> None:
        self.session = session


class UsersServiceImpl:
    def __init__(self, session: Session) -> None:
        self.session = session


def provide_users_service(session):  # type: ignore[no-untyped-def]
    """A provider without a return annotation: matched by its name."""
    return UsersServiceImpl(session)


def user_provider(session: Session) -> Iterator[UserService]:
    """A provider whose type comes from its return annotation, unwrapped from Iterator."""
    yield UserService(session)


@pytest.fixture(autouse=True)
def _reset_build_count() -> None:
    UserService.built = 0


# -- which parameter gets which service ----------------------------------------------------------


def test_by_annotation_whatever_the_parameter_name(sqlite_db: uow.Database) -> None:
    @with_services(UserService, RoleService, database=sqlite_db)
    def f(r: RoleService, u: UserService) -> tuple[Any, Any]:
        return u, r

    u, r = f()
    assert type(u) is UserService
    assert type(r) is RoleService
    assert u.session is r.session


def test_by_annotated_annotation(sqlite_db: uow.Database) -> None:
    @with_services(UserService, database=sqlite_db)
    def f(anything: Annotated[UserService, "metadata"]) -> Any:
        return anything

    assert type(f()) is UserService


def test_by_snake_case_name(sqlite_db: uow.Database) -> None:
    @with_services(UserService, HTTPClient, database=sqlite_db)
    def f(user_service, http_client, n: int) -> tuple[Any, Any, int]:  # type: ignore[no-untyped-def]
        return user_service, http_client, n

    user, client, n = f(3)
    assert type(user) is UserService
    assert type(client) is HTTPClient
    assert n == 3


def test_provider_by_its_name(sqlite_db: uow.Database) -> None:
    @with_services(provide_users_service, database=sqlite_db)
    def f(users_service) -> Any:  # type: ignore[no-untyped-def]
        return users_service

    assert type(f()) is UsersServiceImpl


def test_provider_by_its_return_annotation(sqlite_db: uow.Database) -> None:
    @with_services(user_provider, database=sqlite_db)
    def f(whoever: UserService) -> Any:
        return whoever

    assert type(f()) is UserService


@pytest.mark.parametrize(
    "returns",
    [
        UserService,
        Iterator[UserService],
        Generator[UserService, None, None],
        AsyncIterator[UserService],
        AsyncGenerator[UserService, None],
        Awaitable[UserService],
        Coroutine[Any, Any, UserService],
        Annotated[UserService, "meta"],
        "Iterator[UserService]",
        "AsyncGenerator[UserService, None]",
    ],
    ids=str,
)
def test_provider_type_is_unwrapped_from_its_return_annotation(returns: Any) -> None:
    def provider(session: AsyncSession) -> Any:
        raise AssertionError("not called: this only plans")

    provider.__annotations__["return"] = returns

    @with_services(provider)
    async def f(whoever: UserService, n: int) -> None:
        pass

    assert list(inspect.signature(f).parameters) == ["n"]


def test_annotation_wins_over_name(sqlite_db: uow.Database) -> None:
    @with_services(UserService, database=sqlite_db)
    def f(user_service: int, chosen: UserService) -> tuple[Any, Any]:
        return user_service, chosen

    number, chosen = f(user_service=7)
    assert number == 7
    assert type(chosen) is UserService


def test_string_annotations_from_a_future_import_module(sqlite_db: uow.Database) -> None:
    uow.configure(sqlite_db)
    item = stringified.tag_item("a", label="blue")
    assert item.name == "a"
    assert stringified.names_by_name("a") == ["a"]
    assert stringified.count() == 1
    assert committed(sqlite_db) == ["a"]


# -- InjectionError at decoration time -----------------------------------------------------------


def test_no_matching_parameter() -> None:
    with pytest.raises(InjectionError, match=r"f\(\) has no parameter for service .*UserService.*'user_service'"):

        @with_services(UserService)
        def f(other: int) -> None:
            pass


def test_no_matching_parameter_when_the_name_has_another_annotation() -> None:
    with pytest.raises(InjectionError, match="user_service"):

        @with_services(UserService)
        def f(user_service: int) -> None:
            pass


def test_same_service_twice() -> None:
    with pytest.raises(InjectionError, match=r"f\(\).*UserService is listed twice"):

        @with_services(UserService, UserService)
        def f(users: UserService) -> None:
            pass


def test_two_services_want_one_parameter() -> None:
    class UsersService:
        def __init__(self, session: Session) -> None:
            pass

    with pytest.raises(InjectionError, match=r"f\(\): services .* both want parameter 'users_service'"):

        @with_services(UsersService, provide_users_service)
        def f(users_service) -> None:  # type: ignore[no-untyped-def]
            pass


def test_two_parameters_annotated_with_one_service() -> None:
    with pytest.raises(InjectionError, match="'a', 'b' are all annotated"):

        @with_services(UserService)
        def f(a: UserService, b: UserService) -> None:
            pass


def test_positional_only_target() -> None:
    with pytest.raises(InjectionError, match="'users' is positional-only"):

        @with_services(UserService)
        def f(users: UserService, /, n: int) -> None:
            pass


def test_lambda() -> None:
    with pytest.raises(InjectionError, match="lambda"):
        with_services(UserService)(lambda user_service: None)


def test_session_parameter_clash() -> None:
    with pytest.raises(InjectionError, match="parameter 'session' clashes"):

        @with_services(UserService)
        def f(users: UserService, session: int) -> None:
            pass


def test_own_connection_parameter_is_passed_through() -> None:
    # Frameworks name it (Litestar calls retrieve_user_handler(token, connection)): it stays visible and
    # reaches the function untouched; a value no integration knows lets the active unit decide.
    @with_services(UserService)
    def f(token: str, connection: str, users: UserService) -> str:
        return f"{token}:{connection}"

    assert list(inspect.signature(f).parameters) == ["token", "connection"]
    assert f("t", "c", session=Session()) == "t:c"
    assert f("t", connection="c", session=Session()) == "t:c"


def test_generator_function() -> None:
    with pytest.raises(InjectionError, match="generator function"):

        @with_services(UserService)
        def f(users: UserService) -> Iterator[int]:
            yield 1


def test_async_provider_for_a_sync_function() -> None:
    async def provide_user_service(session: Session) -> UserService:
        return UserService(session)

    with pytest.raises(InjectionError, match="is sync but its provider .*provide_user_service is async"):

        @with_services(provide_user_service)
        def f(user_service: UserService) -> None:
            pass


def test_injection_error_is_a_type_error() -> None:
    assert issubclass(InjectionError, TypeError)
    assert issubclass(InjectionError, uow.UowError)


# -- the session parameter -----------------------------------------------------------------------


def test_session_by_annotation_and_by_name(sqlite_db: uow.Database) -> None:
    @with_services(UserService, database=sqlite_db)
    def f(
        users: UserService,
        s: Session,
        maybe: Session | None,
        tagged: Annotated[Session, "x"],
        session,  # type: ignore[no-untyped-def]
        db_session,
    ) -> list[Any]:
        return [users.session, s, maybe, tagged, session, db_session]

    sessions = f()
    assert all(s is sessions[0] for s in sessions)
    assert isinstance(sessions[0], Session)
    assert list(inspect.signature(f).parameters) == []


async def test_async_session_by_annotation_and_by_name(async_sqlite_db: uow.Database) -> None:
    @with_services(AsyncUserService, database=async_sqlite_db)
    async def f(users: AsyncUserService, s: AsyncSession, db_session) -> list[Any]:  # type: ignore[no-untyped-def]
        return [users.session, s, db_session]

    sessions = await f()
    assert all(s is sessions[0] for s in sessions)
    assert isinstance(sessions[0], AsyncSession)


def test_session_name_with_another_annotation_is_not_the_session() -> None:
    @uow.unit_of_work()
    def f(db_session: int = 3) -> int:
        return db_session

    assert list(inspect.signature(f).parameters) == ["db_session"]


# -- what frameworks see -------------------------------------------------------------------------


def _original(users: UserService, roles: RoleService, user_id: int, *, verbose: bool = False) -> str:
    """Original docstring."""
    return f"{user_id}"


def test_signature_and_annotations_hide_injected_parameters() -> None:
    before = dict(vars(_original))
    annotations_before = dict(_original.__annotations__)
    decorated = with_services(UserService, RoleService)(_original)

    assert str(inspect.signature(decorated)) == "(user_id: int, *, verbose: bool = False) -> str"
    assert decorated.__signature__ == inspect.signature(decorated)  # type: ignore[attr-defined]
    assert decorated.__annotations__ == {"user_id": int, "verbose": bool, "return": str}
    assert typing.get_type_hints(decorated) == {"user_id": int, "verbose": bool, "return": str}
    assert decorated.__name__ == "_original"
    assert decorated.__qualname__ == "_original"
    assert decorated.__module__ == __name__
    assert decorated.__doc__ == "Original docstring."
    assert decorated.__wrapped__ is _original  # type: ignore[attr-defined]
    assert list(inspect.signature(decorated.__wrapped__).parameters) == ["users", "roles", "user_id", "verbose"]  # type: ignore[attr-defined]

    # The original function object is untouched: no attribute added, its annotations intact.
    assert dict(vars(_original)) == before
    assert _original.__annotations__ == annotations_before
    assert "__signature__" not in vars(_original)
    assert str(inspect.signature(_original)).startswith("(users: tests.test_inject.UserService")


def test_string_annotations_resolve_for_frameworks() -> None:
    hints = typing.get_type_hints(stringified.tag_item)
    assert hints == {"name": str, "label": str, "return": Item}
    # Frameworks that read the signature without evaluating it (typer) get evaluated annotations.
    assert str(inspect.signature(stringified.tag_item)) == "(name: str, label: str = 'red') -> tests.models.Item"
    assert list(inspect.signature(stringified.count).parameters) == []
    assert list(inspect.signature(stringified.names_by_name).parameters) == ["prefix"]
    assert stringified.tag_item.__doc__ == "Add an item and tag it."
    assert stringified.tag_item.__module__ == "tests.stringified"


def test_async_functions_stay_coroutine_functions() -> None:
    @with_services(AsyncUserService)
    async def f(users: AsyncUserService, n: int) -> int:
        return n

    assert inspect.iscoroutinefunction(f)
    assert asyncio.iscoroutinefunction(f)
    assert inspect.iscoroutinefunction(stringified.async_count)
    assert not inspect.iscoroutinefunction(stringified.count)


def test_functools_partial_and_wraps_see_the_visible_signature() -> None:
    decorated = with_services(UserService, RoleService)(_original)

    @functools.wraps(decorated)
    def outer(*args: Any, **kwargs: Any) -> Any:
        return decorated(*args, **kwargs)

    assert str(inspect.signature(outer)) == "(user_id: int, *, verbose: bool = False) -> str"
    assert str(inspect.signature(functools.partial(decorated, 1))) == "(*, verbose: bool = False) -> str"


# -- methods ---------------------------------------------------------------------------------------


class Handlers:
    prefix = "cls"

    def __init__(self) -> None:
        self.prefix = "self"

    @with_services(UserService)
    def method(self, users: UserService, n: int) -> tuple[str, Any, int]:
        return self.prefix, users, n

    @classmethod
    @with_services(UserService)
    def class_method_outer(cls, users: UserService, n: int) -> tuple[str, Any, int]:
        return cls.prefix, users, n

    @with_services(UserService)
    @classmethod
    def class_method_inner(cls, users: UserService, n: int) -> tuple[str, Any, int]:
        return cls.prefix, users, n

    @staticmethod
    @with_services(UserService)
    def static_outer(users: UserService, n: int) -> tuple[str, Any, int]:
        return "static", users, n

    @with_services(UserService)
    @staticmethod
    def static_inner(users: UserService, n: int) -> tuple[str, Any, int]:
        return "static", users, n


@pytest.mark.parametrize(
    ("name", "owner"),
    [
        ("method", "self"),
        ("class_method_outer", "cls"),
        ("class_method_inner", "cls"),
        ("static_outer", "static"),
        ("static_inner", "static"),
    ],
)
def test_methods(sqlite_db: uow.Database, name: str, owner: str) -> None:
    uow.configure(sqlite_db)
    for target in (getattr(Handlers(), name), getattr(Handlers, name)) if owner != "self" else (Handlers().method,):
        assert str(inspect.signature(target)) == "(n: int) -> tuple[str, typing.Any, int]"
        for result in (target(5), target(n=5)):
            prefix, users, n = result
            assert (prefix, type(users), n) == (owner, UserService, 5)


def test_method_called_through_the_class_with_an_explicit_self(sqlite_db: uow.Database) -> None:
    uow.configure(sqlite_db)
    handlers = Handlers()
    prefix, users, n = Handlers.method(handlers, 5)
    assert (prefix, type(users), n) == ("self", UserService, 5)


# -- what callers may pass -----------------------------------------------------------------------


def test_visible_parameters_called_positionally(sqlite_db: uow.Database) -> None:
    @with_services(UserService, RoleService, database=sqlite_db)
    def f(users: UserService, roles: RoleService, user_id: int, name: str = "x") -> tuple[Any, ...]:
        return type(users), type(roles), user_id, name

    assert f(5) == (UserService, RoleService, 5, "x")
    assert f(5, "y") == (UserService, RoleService, 5, "y")
    assert f(user_id=5, name="z") == (UserService, RoleService, 5, "z")
    with pytest.raises(TypeError):
        f()


def test_services_after_visible_parameters(sqlite_db: uow.Database) -> None:
    @with_services(UserService, database=sqlite_db)
    def f(user_id: int, users: UserService, *, flag: bool = False) -> tuple[Any, ...]:
        return user_id, type(users), flag

    assert str(inspect.signature(f)) == "(user_id: int, *, flag: bool = False) -> tuple[typing.Any, ...]"
    assert f(1) == (1, UserService, False)
    assert f(1, flag=True) == (1, UserService, True)


def test_variadic_parameters_pass_through(sqlite_db: uow.Database) -> None:
    @with_services(UserService, database=sqlite_db)
    def f(users: UserService, *args: int, **kwargs: str) -> tuple[Any, ...]:
        return type(users), args, kwargs

    assert str(inspect.signature(f)) == "(*args: int, **kwargs: str) -> tuple[typing.Any, ...]"
    assert f(1, 2, x="y") == (UserService, (1, 2), {"x": "y"})
    assert f() == (UserService, (), {})


def test_service_passed_by_keyword_is_used_as_is(sqlite_db: uow.Database) -> None:
    fake = object()

    @with_services(UserService, RoleService, database=sqlite_db)
    def f(users: UserService, roles: RoleService, user_id: int) -> tuple[Any, Any, int]:
        return users, roles, user_id

    users, roles, user_id = f(5, users=fake)
    assert users is fake
    assert type(roles) is RoleService
    assert user_id == 5
    assert UserService.built == 0


async def test_service_passed_by_keyword_is_used_as_is_async(async_sqlite_db: uow.Database) -> None:
    fake = types.SimpleNamespace(name="fake")

    @with_services(AsyncUserService, database=async_sqlite_db)
    async def f(users: AsyncUserService) -> Any:
        return users

    assert await f(users=fake) is fake


def test_a_call_does_no_inspect_work(sqlite_db: uow.Database, monkeypatch: pytest.MonkeyPatch) -> None:
    class Exploding:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"inspect.{name} used during a call")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("signature work during a call")

    @with_services(UserService, RoleService, database=sqlite_db)
    def h(users: UserService, roles: RoleService, n: int) -> int:
        return n

    for name in ("signature", "getfullargspec", "get_annotations", "iscoroutinefunction", "isgeneratorfunction"):
        monkeypatch.setattr(inspect, name, refuse)
    monkeypatch.setattr(typing, "get_type_hints", refuse)
    for module in ("uow._planning", "uow._calling", "uow._providers", "uow._decorators"):
        monkeypatch.setattr(f"{module}.inspect", Exploding(), raising=False)
    assert h(1) == 1
    assert h(2, users=UserService(None)) == 2  # type: ignore[arg-type]


async def test_an_async_call_does_no_inspect_work(
    async_sqlite_db: uow.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    @with_services(AsyncUserService, database=async_sqlite_db)
    async def f(users: AsyncUserService, n: int) -> int:
        return n

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("signature work during a call")

    for name in ("signature", "getfullargspec", "get_annotations"):
        monkeypatch.setattr(inspect, name, refuse)
    monkeypatch.setattr(typing, "get_type_hints", refuse)
    assert await f(1) == 1


def test_unknown_keyword_reaches_the_function_as_a_type_error(sqlite_db: uow.Database) -> None:
    @with_services(UserService, database=sqlite_db)
    def f(users: UserService) -> None:
        pass

    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        f(nope=1)


# -- sync/async and the database -----------------------------------------------------------------


def test_sync_function_with_an_async_database(async_sqlite_db: uow.Database) -> None:
    with pytest.raises(ConfigurationError, match=r"f\(\) is sync but .* is async.*'async def'"):

        @with_services(UserService, database=async_sqlite_db)
        def f(users: UserService) -> None:
            pass


def test_async_function_with_a_sync_database(sqlite_db: uow.Database) -> None:
    with pytest.raises(ConfigurationError, match=r"f\(\) is async but .* is sync"):

        @with_services(AsyncUserService, database=sqlite_db)
        async def f(users: AsyncUserService) -> None:
            pass


async def test_mismatch_with_the_configured_database_is_reported_at_call_time(
    sqlite_db: uow.Database, async_sqlite_db: uow.Database
) -> None:
    @with_services(UserService)
    def sync_f(users: UserService) -> None:
        pass

    @with_services(AsyncUserService)
    async def async_f(users: AsyncUserService) -> None:
        pass

    uow.configure(async_sqlite_db)
    with pytest.raises(ConfigurationError, match=r"sync_f\(\) is sync but .* is async"):
        sync_f()
    uow.configure(sqlite_db)
    with pytest.raises(ConfigurationError, match=r"async_f\(\) is async but .* is sync"):
        await async_f()


def test_decorated_before_configure(sqlite_db: uow.Database) -> None:
    # tests.stringified decorated its functions at import, long before this test configured anything.
    with pytest.raises(ConfigurationError, match="configure"):
        stringified.count()
    uow.configure(sqlite_db)
    stringified.tag_item("a")
    assert stringified.count() == 1


async def test_decorated_before_configure_async(async_sqlite_db: uow.Database) -> None:
    uow.configure(async_sqlite_db)
    async with uow.provide_services(AsyncItemService) as (items,):
        await items.add("a")
    assert await stringified.async_count() == 1
    assert await committed_async(async_sqlite_db) == ["a"]


def test_explicit_database_wins_over_the_configured_one(sqlite_db: uow.Database, tmp_path: Any) -> None:
    other = uow.configure(uow.Database(f"sqlite:///{tmp_path / 'other.sqlite3'}"))
    try:

        @with_services(ItemService, database=sqlite_db)
        def add(items: ItemService) -> None:
            items.add("a")

        add()
        assert committed(sqlite_db) == ["a"]
    finally:
        other.dispose()


def test_tags_service_from_stringified_is_built_with_annotated(sqlite_db: uow.Database) -> None:
    uow.configure(sqlite_db)
    with uow.provide_services(TagService, ItemService) as (tags, items):
        assert tags.session is items.session
