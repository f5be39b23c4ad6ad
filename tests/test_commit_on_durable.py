"""``commit_on=`` / ``rollback_on=`` and ``durable=True`` (docs/events.md), on pysqlite, psycopg, aiosqlite and asyncpg."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import uow
from tests.models import AsyncItemService, ItemService

if TYPE_CHECKING:
    from tests.flavors import Flavor

pytest_plugins = ["tests.flavors"]


class RetryLater(Exception):
    """The "keep my progress, run me again later" signal of a job."""


class Fatal(RetryLater):
    """A RetryLater that must still roll back (excluded with rollback_on=)."""


# -- commit_on / rollback_on ---------------------------------------------------------------------


def _with_services(flavor: Flavor, name: str, error: type[BaseException], **options: Any) -> Any:
    """A @with_services job that writes `name`, then raises `error`, as a user writes it (sync or async)."""
    if flavor.is_async:

        @uow.with_services(AsyncItemService, database=flavor.db, **options)
        async def async_job(items: AsyncItemService) -> None:
            await items.add(name)
            raise error("stop here")

        return async_job

    @uow.with_services(ItemService, database=flavor.db, **options)
    def sync_job(items: ItemService) -> None:
        items.add(name)
        raise error("stop here")

    async def call() -> None:
        sync_job()

    return call


async def test_with_services_commits_on_a_commit_on_exception_and_it_still_propagates(flavor: Flavor) -> None:
    job = _with_services(flavor, "progress", RetryLater, commit_on=RetryLater)
    with pytest.raises(RetryLater, match="stop here"):
        await job()
    assert await flavor.names() == ["progress"]


async def test_other_exceptions_and_rollback_on_still_roll_back(flavor: Flavor) -> None:
    with pytest.raises(ValueError):
        await _with_services(flavor, "a", ValueError, commit_on=RetryLater)()
    with pytest.raises(Fatal):
        await _with_services(flavor, "b", Fatal, commit_on=RetryLater, rollback_on=Fatal)()
    assert await flavor.names() == []


async def test_unit_of_work_commit_on_as_decorator_and_context_manager(flavor: Flavor) -> None:
    async def body(session: Any) -> None:
        await flavor.add(session, "decorated")
        raise RetryLater

    with pytest.raises(RetryLater):
        await flavor.decorated(body, commit_on=(KeyError, RetryLater))()
    with pytest.raises(RetryLater):
        async with flavor.unit(commit_on=[RetryLater]) as session:
            await flavor.add(session, "block")
            raise RetryLater
    assert await flavor.names() == ["block", "decorated"]


async def test_provide_services_commit_on(flavor: Flavor) -> None:
    with pytest.raises(RetryLater):
        if flavor.is_async:
            async with uow.provide_services(AsyncItemService, database=flavor.db, commit_on=RetryLater) as (items,):
                await items.add("provided")
                raise RetryLater
        else:
            with uow.provide_services(ItemService, database=flavor.db, commit_on=RetryLater) as (sync_items,):
                sync_items.add("provided")
                raise RetryLater
    assert await flavor.names() == ["provided"]


async def test_a_joined_unit_with_commit_on_leaves_the_decision_to_its_owner(flavor: Flavor) -> None:
    inner = _with_services(flavor, "inner", RetryLater, commit_on=RetryLater)
    async with flavor.unit() as session:
        await flavor.add(session, "outer")
        with pytest.raises(RetryLater):
            await inner()  # did not doom the outer unit: it commits without RollbackOnlyError
    assert await flavor.names() == ["inner", "outer"]
    again = _with_services(flavor, "again", RetryLater, commit_on=RetryLater)
    with pytest.raises(RetryLater):
        async with flavor.unit():  # an owner without commit_on rolls the joined work back
            await again()
    assert await flavor.names() == ["inner", "outer"]


async def test_hooks_see_the_commit_of_a_commit_on_exception(flavor: Flavor) -> None:
    outcomes: list[uow.Outcome] = []
    with pytest.raises(RetryLater):
        async with flavor.unit(commit_on=RetryLater):
            uow.on_completion(outcomes.append, database=flavor.db)
            raise RetryLater
    assert outcomes == [uow.Outcome.COMMITTED]


def test_a_commit_on_exception_is_not_retried(sqlite_db: uow.Database) -> None:
    calls: list[int] = []

    class Transientish(Exception):
        pass

    policy = uow.Retry(attempts=3, backoff=0, jitter=False, retry_on=lambda error: isinstance(error, Transientish))

    @uow.unit_of_work(database=sqlite_db, retry=policy, commit_on=Transientish)
    def job(session: Session) -> None:
        calls.append(1)
        raise Transientish

    with pytest.raises(Transientish):
        job()
    assert calls == [1]


@pytest.mark.parametrize("bad", [3, "ValueError", ValueError("instance"), (ValueError, int), [object]])
def test_commit_on_and_rollback_on_refuse_what_is_not_an_exception_class(sqlite_db: uow.Database, bad: Any) -> None:
    for option in ("commit_on", "rollback_on"):
        pattern = f"{option}= needs exception classes"
        with pytest.raises(uow.ConfigurationError, match=pattern):

            @uow.with_services(ItemService, database=sqlite_db, **{option: bad})
            def job(items: ItemService) -> None: ...

        with pytest.raises(uow.ConfigurationError, match=pattern):
            uow.unit_of_work(database=sqlite_db, **{option: bad})
        with pytest.raises(uow.ConfigurationError, match=pattern):
            uow.provide_services(ItemService, database=sqlite_db, **{option: bad})


# -- durable ------------------------------------------------------------------------------------


async def test_a_durable_unit_runs_on_its_own(flavor: Flavor) -> None:
    async def pay(session: Any) -> None:
        await flavor.add(session, "paid")

    await flavor.decorated(pay, durable=True)()
    assert await flavor.names() == ["paid"]


async def test_a_durable_unit_inside_another_raises_naming_both(flavor: Flavor) -> None:
    async def pay(session: Any) -> None:
        await flavor.add(session, "paid")

    payment = flavor.decorated(pay, durable=True)
    with pytest.raises(uow.PropagationError, match=r"sync_function\(\)|async_function\(\)") as refused:
        async with flavor.unit() as session:
            await flavor.add(session, "order")
            await payment()
    assert "is durable=True, so it must be the outermost unit of work" in str(refused.value)
    assert "inside unit_of_work()" in str(refused.value)
    assert await flavor.names() == []


def test_durable_with_services_names_the_outer_function(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sqlite_db, durable=True)
    def charge(items: ItemService) -> None: ...

    @uow.with_services(ItemService, database=sqlite_db)
    def checkout(items: ItemService) -> None:
        charge()

    with pytest.raises(uow.PropagationError) as refused:
        checkout()
    message = str(refused.value)
    assert "charge() is durable=True" in message and "checkout() on" in message


async def test_durable_refuses_a_session_passed_by_the_caller(async_sqlite_db: uow.Database) -> None:
    @uow.unit_of_work(database=async_sqlite_db, durable=True)
    async def pay(session: AsyncSession) -> None: ...

    async with async_sqlite_db.session_factory() as session:
        with pytest.raises(uow.PropagationError, match="durable=True, so it must begin its own transaction"):
            await pay(session=session)


@pytest.mark.parametrize("propagation", ["nested", "mandatory", "requires_new"])
def test_durable_with_a_conflicting_propagation_is_refused_when_declared(
    sqlite_db: uow.Database, propagation: str
) -> None:
    with pytest.raises(uow.ConfigurationError, match=f"propagation='{propagation}' is about running inside one"):

        @uow.with_services(ItemService, database=sqlite_db, durable=True, propagation=propagation)
        def job(items: ItemService) -> None: ...

    with pytest.raises(uow.ConfigurationError, match="durable=True refuses"):
        uow.unit_of_work(durable=True, propagation=propagation)


def test_durable_with_never_is_the_same_and_durable_must_be_a_bool(sqlite_db: uow.Database) -> None:
    @uow.unit_of_work(database=sqlite_db, durable=True, propagation="never")
    def job(session: Session) -> None: ...

    job()
    with uow.unit_of_work(database=sqlite_db), pytest.raises(uow.PropagationError, match="durable=True"):
        job()
    with pytest.raises(uow.ConfigurationError, match="durable= needs True or False"):
        uow.unit_of_work(durable="yes")  # type: ignore[arg-type]
