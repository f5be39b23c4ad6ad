"""Planning what people actually pass: Session subclasses, partials, callable instances, advanced-alchemy
providers, and misuse that must be refused when decorating with a message saying what happened.

Every message is checked word for word: it is the user's only guide to the fix.
"""

from __future__ import annotations

import functools
import logging
import re
import sqlite3
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlmodel
from advanced_alchemy.base import BigIntBase
from advanced_alchemy.extensions.litestar.providers import create_service_provider
from advanced_alchemy.repository import SQLAlchemyAsyncRepository, SQLAlchemySyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService, SQLAlchemySyncRepositoryService
from sqlalchemy import Engine, String, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Mapped, Session, mapped_column

import uow
from tests import type_checking_provider
from tests.conftest import Backend, make_sync_db
from tests.helpers import committed
from tests.models import AsyncItemService, Base, Item, ItemService
from uow import ConfigurationError, InjectionError, with_services

HERE = __name__


def exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


# -- a parameter annotated with a Session subclass ---------------------------------------------


class SQLModelItems:
    """A service written for SQLModel: it calls `session.exec`, which a plain Session lacks."""

    def __init__(self, session: sqlmodel.Session) -> None:
        self.session = session

    def names(self) -> list[str]:
        return [name for (name,) in self.session.exec(select(Item.name).order_by(Item.name))]  # type: ignore[call-overload]


@pytest.fixture
def sqlmodel_db(sqlite_backend: Backend) -> Iterator[uow.Database]:
    database = make_sync_db(sqlite_backend, session_options={"class_": sqlmodel.Session})
    yield database
    database.dispose()


def test_a_session_subclass_parameter_gets_that_class(sqlmodel_db: uow.Database) -> None:
    @uow.with_services(SQLModelItems, database=sqlmodel_db)
    def add(items: SQLModelItems, session: sqlmodel.Session, name: str) -> list[str]:
        session.add(Item(name=name))
        session.flush()
        return items.names()

    assert add("a") == ["a"]
    assert committed(sqlmodel_db) == ["a"]

    @uow.unit_of_work(database=sqlmodel_db)
    def kind(session: sqlmodel.Session) -> type:
        return type(session)

    assert issubclass(kind(), sqlmodel.Session)  # sessionmaker makes a subclass of the class it is given


def test_a_session_subclass_the_database_does_not_make_is_refused_at_decoration(sqlite_db: uow.Database) -> None:
    with pytest.raises(ConfigurationError) as refused:

        @uow.unit_of_work(database=sqlite_db)
        def f(session: sqlmodel.Session) -> None: ...

    assert str(refused.value) == (
        f"{HERE}.test_a_session_subclass_the_database_does_not_make_is_refused_at_decoration.<locals>.f(): "
        f"parameter 'session' is annotated sqlmodel.Session, but {sqlite_db!r} makes "
        'sqlalchemy.orm.session.Session sessions: create it with Database(..., session_options={"class_": '
        "sqlmodel.Session}) (or pass class_=sqlmodel.Session to your sessionmaker)"
    )


def test_a_services_session_subclass_is_checked_too(sqlite_db: uow.Database) -> None:
    with pytest.raises(ConfigurationError) as refused:

        @uow.with_services(SQLModelItems, database=sqlite_db)
        def f(items: SQLModelItems) -> None: ...

    assert str(refused.value) == (
        f"{HERE}.test_a_services_session_subclass_is_checked_too.<locals>.f(): {HERE}.SQLModelItems(session) "
        f"is annotated sqlmodel.Session, but {sqlite_db!r} makes sqlalchemy.orm.session.Session sessions: "
        'create it with Database(..., session_options={"class_": sqlmodel.Session}) '
        "(or pass class_=sqlmodel.Session to your sessionmaker)"
    )


def test_a_session_subclass_is_checked_at_the_first_call_when_the_database_comes_late(
    sqlite_db: uow.Database, sqlmodel_db: uow.Database
) -> None:
    @uow.with_services(SQLModelItems)
    def names(items: SQLModelItems) -> list[str]:
        return items.names()

    uow.configure(sqlite_db)
    with pytest.raises(ConfigurationError) as refused:
        names()
    assert str(refused.value) == (
        f"{HERE}.test_a_session_subclass_is_checked_at_the_first_call_when_the_database_comes_late.<locals>"
        f".names(): {HERE}.SQLModelItems(session) is annotated sqlmodel.Session, but {sqlite_db!r} makes "
        'sqlalchemy.orm.session.Session sessions: create it with Database(..., session_options={"class_": '
        "sqlmodel.Session}) (or pass class_=sqlmodel.Session to your sessionmaker)"
    )
    uow.configure(sqlmodel_db)
    assert names() == []


def test_an_async_session_annotation_on_a_sync_function_is_refused() -> None:
    with pytest.raises(InjectionError) as refused:

        @uow.unit_of_work()
        def f(session: AsyncSession) -> None: ...

    assert str(refused.value) == (
        f"{HERE}.test_an_async_session_annotation_on_a_sync_function_is_refused.<locals>.f() is sync, so its "
        "unit's session is a Session, but parameter 'session' is annotated AsyncSession: annotate it Session "
        "(sqlalchemy.orm), or make the function 'async def'"
    )


def test_a_session_annotation_on_an_async_function_is_refused() -> None:
    with pytest.raises(InjectionError) as refused:

        @uow.with_services(ItemService)
        async def f(items: ItemService) -> None: ...

    assert str(refused.value) == (
        f"{HERE}.test_a_session_annotation_on_an_async_function_is_refused.<locals>.f() is async, so its unit's "
        "session is an AsyncSession, but tests.models.ItemService(session) is annotated Session: annotate it "
        "AsyncSession (sqlalchemy.ext.asyncio), or make the function a plain 'def'"
    )


# -- service constructors ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.hour = 12


class Untyped:
    def __init__(self, session: Session, limit) -> None:  # type: ignore[no-untyped-def]
        self.limit = limit


def test_a_service_built_outside_the_unit_is_refused() -> None:
    with pytest.raises(InjectionError) as refused:

        @with_services(Clock)
        def f(clock: Clock) -> None: ...

    assert str(refused.value) == (
        f"{HERE}.test_a_service_built_outside_the_unit_is_refused.<locals>.f(): {HERE}.Clock() takes neither a "
        "session nor another service, so uow would build it outside the unit: give its constructor a "
        "'session: Session' (or 'AsyncSession') parameter, or pass a provider function that builds it"
    )


def test_a_service_without_a_session_may_still_replace_one_in_override(sqlite_db: uow.Database) -> None:
    class FakeItems(Clock):
        def names(self) -> list[str]:
            return ["fake"]

    @with_services(ItemService, database=sqlite_db)
    def names(items: ItemService) -> list[str]:
        return items.names()

    with uow.override(ItemService, FakeItems):
        assert names() == ["fake"]


def test_an_unannotated_constructor_parameter_is_refused() -> None:
    with pytest.raises(InjectionError) as refused:

        @with_services(Untyped)
        def f(untyped: Untyped) -> None: ...

    assert str(refused.value) == (
        f"{HERE}.test_an_unannotated_constructor_parameter_is_refused.<locals>.f(): cannot build {HERE}.Untyped: "
        "its parameter 'limit' has no annotation, so uow cannot tell what to pass; annotate it with a service "
        "class (or Session), give it a default, or bind it with functools.partial(Untyped, limit=...)"
    )


def test_a_partial_binds_what_uow_cannot_fill(sqlite_db: uow.Database) -> None:
    @with_services(functools.partial(Untyped, limit=5), database=sqlite_db)
    def limit(untyped: Untyped) -> int:
        return int(untyped.limit)

    assert limit() == 5


# -- partials and callable instances, decorated and as providers ---------------------------------


def _add(items: ItemService, name: str, *, suffix: str) -> str:
    return items.add(name + suffix).name


async def _add_async(items: AsyncItemService, name: str, *, suffix: str) -> str:
    return (await items.add(name + suffix)).name


class Adder:
    def __call__(self, items: ItemService, name: str) -> str:
        return items.add(name).name


class AsyncAdder:
    async def __call__(self, items: AsyncItemService, name: str) -> str:
        return (await items.add(name)).name


def test_a_partial_can_be_decorated(sqlite_db: uow.Database) -> None:
    add = with_services(ItemService, database=sqlite_db)(functools.partial(_add, suffix="!"))
    assert list(add.__signature__.parameters) == ["name", "suffix"]  # type: ignore[attr-defined]
    assert add("a") == "a!"
    assert committed(sqlite_db) == ["a!"]


async def test_an_async_partial_can_be_decorated(async_sqlite_db: uow.Database) -> None:
    add = with_services(AsyncItemService, database=async_sqlite_db)(functools.partial(_add_async, suffix="?"))
    assert await add("b") == "b?"


def test_a_callable_instance_can_be_decorated(sqlite_db: uow.Database) -> None:
    add = with_services(ItemService, database=sqlite_db)(Adder())
    assert add("c") == "c"
    assert committed(sqlite_db) == ["c"]


async def test_an_async_callable_instance_can_be_decorated(async_sqlite_db: uow.Database) -> None:
    add = with_services(AsyncItemService, database=async_sqlite_db)(AsyncAdder())
    assert await add("d") == "d"


class ItemsProvider:
    def __call__(self, session: Session) -> ItemService:
        return ItemService(session)


class AsyncItemsProvider:
    async def __call__(self, session: AsyncSession) -> AsyncItemService:
        return AsyncItemService(session)


def test_partials_and_callable_instances_as_providers(sqlite_db: uow.Database) -> None:
    def make_items(session: Session, prefix: str) -> ItemService:
        service = ItemService(session)
        service.add(prefix)
        return service

    @with_services(functools.partial(make_items, prefix="p"), database=sqlite_db)
    def from_partial(items: ItemService) -> list[str]:
        return items.names()

    @with_services(ItemsProvider(), database=sqlite_db)
    def from_instance(items: ItemService) -> list[str]:
        return items.names()

    assert from_partial() == ["p"]
    assert from_instance() == ["p"]


async def test_an_async_callable_instance_as_a_provider(async_sqlite_db: uow.Database) -> None:
    @with_services(AsyncItemsProvider(), database=async_sqlite_db)
    async def count(items: AsyncItemService) -> int:
        return await items.count()

    assert await count() == 0


def test_a_partial_is_described_as_one() -> None:
    with pytest.raises(InjectionError) as refused:

        @with_services(functools.partial(Untyped, limit=5))
        def f(other: int) -> None: ...

    assert str(refused.value) == (
        f"{HERE}.test_a_partial_is_described_as_one.<locals>.f() has no parameter for service "
        f"functools.partial({HERE}.Untyped, limit=...): add a parameter annotated with it, or named 'untyped'"
    )


# -- how providers are matched -------------------------------------------------------------------


class Widgets:
    def __init__(self, session: Session) -> None:
        self.session = session


def provide_widgets(session):  # type: ignore[no-untyped-def]
    return Widgets(session)


def test_a_provider_without_a_return_type_matches_by_name_an_annotated_parameter(sqlite_db: uow.Database) -> None:
    @with_services(provide_widgets, database=sqlite_db)
    def f(widgets: Widgets, session: Session) -> bool:
        return widgets.session is session

    assert f() is True


def test_a_return_type_imported_under_type_checking_matches_the_class(sqlite_db: uow.Database) -> None:
    @with_services(type_checking_provider.make_items, database=sqlite_db)
    def f(stock: ItemService) -> int:
        return stock.count()

    assert f() == 0
    plan = f.__uow_plan__  # type: ignore[attr-defined]
    assert plan.targets[0][1].service_type is ItemService  # overrides and the unit's cache key on the class


def test_a_providers_required_parameter_is_refused_at_decoration() -> None:
    def provide_roles(session: Session, *, statement: Any) -> ItemService:
        return ItemService(session)

    with pytest.raises(InjectionError) as refused:

        @with_services(provide_roles)
        def f(roles: ItemService) -> None: ...

    assert str(refused.value) == (
        f"{HERE}.test_a_providers_required_parameter_is_refused_at_decoration.<locals>.f(): provider "
        f"{HERE}.test_a_providers_required_parameter_is_refused_at_decoration.<locals>.provide_roles has a "
        "required parameter 'statement' that uow cannot fill (it passes a provider the session as its only "
        "argument): give it a default, or bind it for this use with functools.partial(provide_roles, "
        "statement=...)"
    )


# -- misuse at decoration ------------------------------------------------------------------------


def test_a_property_is_named() -> None:
    with pytest.raises(InjectionError) as refused:

        class Handlers:
            @with_services(ItemService)  # type: ignore[arg-type]
            @property
            def count(self, items: ItemService) -> int:
                return items.count()

    assert str(refused.value) == (
        f"@with_services cannot decorate the property {HERE}.test_a_property_is_named.<locals>.Handlers.count: "
        "a property is read as an attribute, not called; put @with_services below @property so that it "
        "decorates the getter, or make it a method"
    )


def test_a_property_over_the_decorated_getter_works(sqlite_db: uow.Database) -> None:
    class Handlers:
        @property
        @with_services(ItemService, database=sqlite_db)
        def count(self, items: ItemService) -> int:
            return items.count()

    assert Handlers().count == 0


def test_the_same_service_stacked_twice_says_so() -> None:
    with pytest.raises(InjectionError) as refused:

        @with_services(ItemService)
        @with_services(ItemService)
        def f(items: ItemService) -> None: ...

    assert str(refused.value) == (
        f"{HERE}.test_the_same_service_stacked_twice_says_so.<locals>.f(): service tests.models.ItemService is "
        "already injected by the @with_services below this @with_services: the same service is stacked twice; "
        "list it in one decorator"
    )


@pytest.mark.parametrize("read_only", ["yes", 1, None])
def test_read_only_must_be_a_bool(read_only: Any) -> None:
    with pytest.raises(ConfigurationError) as refused:

        @uow.unit_of_work(read_only=read_only)
        def f() -> None: ...

    assert str(refused.value) == (
        f"{HERE}.test_read_only_must_be_a_bool.<locals>.f(): read_only= needs True or False, got {read_only!r}"
    )


def test_an_unknown_isolation_level_is_refused() -> None:
    with pytest.raises(ConfigurationError) as refused:

        @with_services(ItemService, isolation_level="SERIALISABLE")
        def f(items: ItemService) -> None: ...

    assert str(refused.value) == (
        f"{HERE}.test_an_unknown_isolation_level_is_refused.<locals>.f(): unknown isolation_level 'SERIALISABLE': "
        "use one of 'READ COMMITTED', 'READ UNCOMMITTED', 'REPEATABLE READ', 'SERIALIZABLE' ('SNAPSHOT' on SQL "
        "Server), or leave it unset for the database's default"
    )


def test_autocommit_is_refused_it_cannot_roll_back() -> None:
    with pytest.raises(ConfigurationError) as refused:

        @uow.unit_of_work(isolation_level="AUTOCOMMIT")
        def f() -> None: ...

    assert str(refused.value) == (
        f"{HERE}.test_autocommit_is_refused_it_cannot_roll_back.<locals>.f(): isolation_level='AUTOCOMMIT' would "
        "commit every statement on its own, so the unit could not roll back; leave isolation_level unset, or run "
        "the statement outside a unit of work"
    )


def test_isolation_levels_are_spelt_as_sqlalchemy_accepts_them(sqlite_db: uow.Database) -> None:
    @uow.unit_of_work(database=sqlite_db, isolation_level="read_uncommitted")
    def f(session: Session) -> int:
        return int(session.scalar(text("SELECT 1")) or 0)

    assert f() == 1


def test_unit_of_work_on_a_lambda_does_not_talk_about_services(sqlite_db: uow.Database) -> None:
    one = uow.unit_of_work(database=sqlite_db)(lambda session: session.scalar(text("SELECT 1")))
    assert one() == 1


# -- retry warnings carry no bound parameters ----------------------------------------------------

SECRET = "s3cret-token-value"


def test_a_retry_warning_names_the_error_but_not_its_parameters(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "locked.sqlite3"
    database = uow.Database(f"sqlite:///{path}", engine_options={"connect_args": {"timeout": 0}})
    assert isinstance(database.engine, Engine)
    Base.metadata.create_all(database.engine)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a real writer holding the lock: every attempt gets "database is locked"

    @uow.unit_of_work(database=database, retry=uow.Retry(attempts=2, backoff=0))
    def add(session: Session) -> None:
        session.add(Item(name=SECRET))
        session.flush()

    try:
        with caplog.at_level(logging.WARNING, logger="uow"), pytest.raises(Exception, match=SECRET) as failed:
            add()
    finally:
        holder.rollback()
        holder.close()
        database.dispose()
    assert uow.is_transient(failed.value)
    (record,) = [r for r in caplog.records if r.name == "uow"]
    message = record.getMessage()
    assert SECRET not in caplog.text
    assert "[parameters" not in message and "INSERT" not in message
    code = "SQLITE_BUSY, " if sys.version_info >= (3, 11) else ""  # sqlite_errorname is new in 3.11
    assert message == (
        f"uow: {HERE}.test_a_retry_warning_names_the_error_but_not_its_parameters.<locals>.add() failed on attempt "
        f"1 of 2 with sqlalchemy.exc.OperationalError (sqlite3.OperationalError, {code}database is locked); "
        "running it again in 0.000s"
    )


@pytest.mark.postgres
def test_a_retry_warning_carries_the_sqlstate(backend_postgres: uow.Database, caplog: pytest.LogCaptureFixture) -> None:
    @uow.unit_of_work(database=backend_postgres, retry=uow.Retry(attempts=2, backoff=0))
    def fail(session: Session) -> None:
        session.execute(text("SELECT uow_planning_fail_serialization(:secret)"), {"secret": SECRET})

    with caplog.at_level(logging.WARNING, logger="uow"), pytest.raises(Exception, match=SECRET):
        fail()
    (record,) = [r for r in caplog.records if r.name == "uow"]
    assert SECRET not in caplog.text
    assert re.search(
        r"with sqlalchemy\.exc\.OperationalError \(psycopg\.errors\.\w+, SQLSTATE 40001\);", record.getMessage()
    )


@pytest.fixture
def backend_postgres(postgres_server: Any) -> Iterator[uow.Database]:
    database = uow.Database(postgres_server.sync_url)
    assert isinstance(database.engine, Engine)
    with database.engine.begin() as connection:
        connection.execute(
            text(
                "CREATE OR REPLACE FUNCTION uow_planning_fail_serialization(value text) RETURNS int AS $$ "
                "BEGIN RAISE EXCEPTION SQLSTATE '40001' USING MESSAGE = 'could not serialize access'; END $$ "
                "LANGUAGE plpgsql"
            )
        )
    yield database
    database.dispose()


# -- advanced-alchemy providers ------------------------------------------------------------------


class Role(BigIntBase):
    __tablename__ = "uow_planning_roles"

    name: Mapped[str] = mapped_column(String(50))


class RoleService(SQLAlchemyAsyncRepositoryService[Role]):
    class Repository(SQLAlchemyAsyncRepository[Role]):
        model_type = Role

    repository_type = Repository


class SyncRoleService(SQLAlchemySyncRepositoryService[Role]):
    class Repository(SQLAlchemySyncRepository[Role]):
        model_type = Role

    repository_type = Repository


ADMINS = select(Role).where(Role.name.startswith("admin"))


def test_an_advanced_alchemy_provider_matches_its_service_class_and_is_named_by_it() -> None:
    provider = create_service_provider(RoleService)

    @with_services(provider)
    async def f(whatever: RoleService, n: int) -> None: ...

    assert list(f.__signature__.parameters) == ["n"]  # type: ignore[attr-defined]

    with pytest.raises(InjectionError) as refused:

        @with_services(provider)
        async def g(a: RoleService, b: RoleService) -> None: ...

    assert str(refused.value) == (
        f"{HERE}.test_an_advanced_alchemy_provider_matches_its_service_class_and_is_named_by_it.<locals>.g(): "
        f"parameters 'a', 'b' are all annotated {HERE}.RoleService; uow cannot tell which one to fill: keep one"
    )
    with pytest.raises(InjectionError) as refused:

        @with_services(provider)
        async def h(count: int) -> None: ...

    assert str(refused.value) == (
        f"{HERE}.test_an_advanced_alchemy_provider_matches_its_service_class_and_is_named_by_it.<locals>.h() has "
        f"no parameter for service create_service_provider({HERE}.RoleService): add a parameter annotated with "
        "it, or named 'role_service'"
    )
    with pytest.raises(InjectionError) as refused:

        @with_services(provider)
        def k(roles: RoleService) -> None: ...

    assert str(refused.value) == (
        f"{HERE}.test_an_advanced_alchemy_provider_matches_its_service_class_and_is_named_by_it.<locals>.k() is "
        f"sync but its provider create_service_provider({HERE}.RoleService) is async: make the function "
        "'async def' or give it a sync provider"
    )


@pytest.fixture
def roles_db(sqlite_backend: Backend) -> Iterator[uow.Database]:
    database = uow.Database(sqlite_backend.sync_url)
    assert isinstance(database.engine, Engine)
    Role.__table__.create(database.engine)  # type: ignore[attr-defined]
    yield database
    database.dispose()


@pytest.fixture
async def async_roles_db(sqlite_backend: Backend) -> AsyncIterator[uow.Database]:
    database = uow.Database(sqlite_backend.async_url)
    assert isinstance(database.engine, AsyncEngine)
    async with database.engine.begin() as connection:
        await connection.run_sync(Role.__table__.create)  # type: ignore[attr-defined]
    yield database
    await database.dispose_async()


def test_a_partial_configures_an_advanced_alchemy_service_per_use(roles_db: uow.Database) -> None:
    @with_services(SyncRoleService, database=roles_db)
    def seed(roles: SyncRoleService) -> None:
        roles.create_many([{"name": "admin-1"}, {"name": "user-1"}, {"name": "admin-2"}])

    @with_services(functools.partial(SyncRoleService, statement=ADMINS), database=roles_db)
    def admins(roles: SyncRoleService) -> list[str]:
        return sorted(role.name for role in roles.get_many())

    @with_services(create_service_provider(SyncRoleService, statement=ADMINS), database=roles_db)
    def admins_from_provider(roles: SyncRoleService) -> list[str]:
        return sorted(role.name for role in roles.get_many())

    seed()
    assert admins() == ["admin-1", "admin-2"]
    assert admins_from_provider() == ["admin-1", "admin-2"]


async def test_create_service_provider_configures_a_service_per_use(async_roles_db: uow.Database) -> None:
    @with_services(RoleService, database=async_roles_db)
    async def seed(roles: RoleService) -> None:
        await roles.create_many([{"name": "admin-1"}, {"name": "user-1"}])

    @with_services(create_service_provider(RoleService, statement=ADMINS), database=async_roles_db)
    async def admins(roles: RoleService) -> list[str]:
        return [role.name for role in await roles.get_many()]

    @with_services(functools.partial(RoleService, statement=ADMINS), database=async_roles_db)
    async def admins_from_partial(roles: RoleService) -> list[str]:
        return [role.name for role in await roles.get_many()]

    await seed()
    assert await admins() == ["admin-1"]
    assert await admins_from_partial() == ["admin-1"]


# -- the configured default ----------------------------------------------------------------------


def test_get_default_database(sqlite_db: uow.Database) -> None:
    assert uow.get_default_database() is None
    assert uow.configure(sqlite_db) is sqlite_db
    assert uow.get_default_database() is sqlite_db
