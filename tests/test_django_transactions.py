"""The scenarios of Django's ``tests/transactions/tests.py`` that have a uow counterpart, as uow tests.

Django's ``atomic()`` nested in ``atomic()`` is a savepoint: here ``propagation="nested"``.
``atomic(savepoint=False)`` merges into the enclosing block: here ``propagation="required"``
(a join). ``atomic(durable=True)`` refuses to be nested: here ``propagation="never"``. A new
connection is ``propagation="requires_new"``. Where Django's outer block silently rolls back
after a swallowed inner failure (``needs_rollback``), uow rolls back and raises
`RollbackOnlyError`, as docs/design.md, "Ownership", asks. Every scenario runs on pysqlite, psycopg,
aiosqlite and asyncpg (`tests.flavors`); the basic ones also inside an outer transaction, the
way Django's ``AtomicInsideTransactionTests`` repeats them (here: ``uow.testing``'s binding).

Left out, having no uow counterpart: ``set_rollback()`` / ``get_rollback()`` (test_force_rollback,
test_prevent_rollback and the get_rollback checks of AtomicMergeTests), autocommit modes
(AtomicWithoutAutocommitTests, NonAutocommitTests, test_atomic_prevents_setting_autocommit,
test_mark_for_rollback_on_error_in_autocommit), ``@atomic`` without parentheses (uow's
``unit_of_work()`` takes keyword options only), the MySQL deadlock test (these four drivers
do not include MySQL), and test_new_connection_nested3 (on SQLite, the outer unit's open read
holds a lock the inner unit's COMMIT waits for: SQLite's locking, not a uow behaviour).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError, PendingRollbackError
from sqlalchemy.ext.asyncio import AsyncEngine

import uow
from tests.models import Item

if TYPE_CHECKING:
    from tests.flavors import Flavor

pytest_plugins = ["tests.flavors"]


class Oops(Exception):
    pass


def around(flavor: Flavor, inside: bool) -> AbstractAsyncContextManager[Any]:
    """The scenario as it is, or inside an outer transaction (Django's AtomicInsideTransactionTests)."""
    if inside:
        return flavor.binding()
    return _nothing()


@asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    with nullcontext():
        yield


INSIDE = pytest.mark.parametrize("inside", [False, True], ids=["alone", "inside_a_transaction"])


async def count(flavor: Flavor, session: Any) -> int:
    result = await flavor.execute(session, select(func.count()).select_from(Item))
    return int(result.scalar_one())


# -- AtomicTests -----------------------------------------------------------------------------------


@INSIDE
async def test_decorator_syntax_commit(flavor: Flavor, inside: bool) -> None:
    """AtomicTests.test_decorator_syntax_commit: a decorated function commits on return."""

    async def make_reporter(session: Any) -> str:
        return (await flavor.add(session, "Tintin")).name

    async with around(flavor, inside):
        assert await flavor.decorated(make_reporter)() == "Tintin"
        assert await flavor.names() == ["Tintin"]


@INSIDE
async def test_decorator_syntax_rollback(flavor: Flavor, inside: bool) -> None:
    """AtomicTests.test_decorator_syntax_rollback: a decorated function that raises leaves nothing."""

    async def make_reporter(session: Any) -> None:
        await flavor.add(session, "Haddock")
        raise Oops("Oops, that's his last name")

    async with around(flavor, inside):
        with pytest.raises(Oops, match="Oops"):
            await flavor.decorated(make_reporter)()
        assert await flavor.names() == []


@INSIDE
async def test_commit(flavor: Flavor, inside: bool) -> None:
    """AtomicTests.test_commit: the context manager commits."""
    async with around(flavor, inside):
        async with flavor.unit() as session:
            await flavor.add(session, "Tintin")
        assert await flavor.names() == ["Tintin"]


@INSIDE
async def test_rollback(flavor: Flavor, inside: bool) -> None:
    """AtomicTests.test_rollback: the context manager rolls back on an exception."""
    async with around(flavor, inside):
        with pytest.raises(Oops):
            async with flavor.unit() as session:
                await flavor.add(session, "Haddock")
                raise Oops("Oops, that's his last name")
        assert await flavor.names() == []


@INSIDE
async def test_nested_commit_commit(flavor: Flavor, inside: bool) -> None:
    """AtomicTests.test_nested_commit_commit: a released savepoint is committed with its unit."""
    async with around(flavor, inside):
        async with flavor.unit() as session:
            await flavor.add(session, "Tintin")
            async with flavor.unit(propagation="nested") as inner:
                await flavor.add(inner, "Archibald Haddock")
        assert await flavor.names() == ["Archibald Haddock", "Tintin"]


@INSIDE
async def test_nested_commit_rollback(flavor: Flavor, inside: bool) -> None:
    """AtomicTests.test_nested_commit_rollback: a failed savepoint is undone, the outer unit commits."""
    async with around(flavor, inside):
        async with flavor.unit() as session:
            await flavor.add(session, "Tintin")
            with pytest.raises(Oops):
                async with flavor.unit(propagation="nested") as inner:
                    await flavor.add(inner, "Haddock")
                    raise Oops("Oops, that's his last name")
        assert await flavor.names() == ["Tintin"]


@INSIDE
async def test_nested_rollback_commit(flavor: Flavor, inside: bool) -> None:
    """AtomicTests.test_nested_rollback_commit: the outer failure undoes the released savepoint too."""
    async with around(flavor, inside):
        with pytest.raises(Oops, match="first name"):
            async with flavor.unit() as session:
                await flavor.add(session, "Tintin")
                async with flavor.unit(propagation="nested") as inner:
                    await flavor.add(inner, "Haddock")
                raise Oops("Oops, that's his first name")
        assert await flavor.names() == []


@INSIDE
async def test_nested_rollback_rollback(flavor: Flavor, inside: bool) -> None:
    """AtomicTests.test_nested_rollback_rollback: both fail, nothing is kept."""
    async with around(flavor, inside):
        with pytest.raises(Oops, match="first name"):
            async with flavor.unit() as session:
                await flavor.add(session, "Tintin")
                with pytest.raises(Oops, match="last name"):
                    async with flavor.unit(propagation="nested") as inner:
                        await flavor.add(inner, "Haddock")
                    raise Oops("Oops, that's his last name")
                raise Oops("Oops, that's his first name")
        assert await flavor.names() == []


@INSIDE
async def test_merged_commit_commit(flavor: Flavor, inside: bool) -> None:
    """AtomicTests.test_merged_commit_commit: a joined unit's work commits with the owner's."""
    async with around(flavor, inside):
        async with flavor.unit() as session:
            await flavor.add(session, "Tintin")
            async with flavor.unit() as joined:
                assert joined is session
                await flavor.add(joined, "Archibald Haddock")
        assert await flavor.names() == ["Archibald Haddock", "Tintin"]


@INSIDE
async def test_merged_commit_rollback(flavor: Flavor, inside: bool) -> None:
    """AtomicTests.test_merged_commit_rollback: a joined unit's failure rolls back the outer writes too.

    Django rolls back silently at the end of the outer block; uow raises RollbackOnlyError.
    """
    async with around(flavor, inside):
        with pytest.raises(uow.RollbackOnlyError):
            async with flavor.unit() as session:
                await flavor.add(session, "Tintin")
                with pytest.raises(Oops):
                    async with flavor.unit() as joined:
                        await flavor.add(joined, "Haddock")
                        raise Oops("Oops, that's his last name")
        assert await flavor.names() == []


@INSIDE
async def test_merged_rollback_commit(flavor: Flavor, inside: bool) -> None:
    """AtomicTests.test_merged_rollback_commit."""
    async with around(flavor, inside):
        with pytest.raises(Oops, match="first name"):
            async with flavor.unit() as session:
                await flavor.add(session, "Tintin")
                async with flavor.unit() as joined:
                    await flavor.add(joined, "Haddock")
                raise Oops("Oops, that's his first name")
        assert await flavor.names() == []


@INSIDE
async def test_merged_rollback_rollback(flavor: Flavor, inside: bool) -> None:
    """AtomicTests.test_merged_rollback_rollback."""
    async with around(flavor, inside):
        with pytest.raises(Oops, match="first name"):
            async with flavor.unit() as session:
                await flavor.add(session, "Tintin")
                with pytest.raises(Oops, match="last name"):
                    async with flavor.unit() as joined:
                        await flavor.add(joined, "Haddock")
                    raise Oops("Oops, that's his last name")
                raise Oops("Oops, that's his first name")
        assert await flavor.names() == []


@INSIDE
async def test_reuse_commit_commit(flavor: Flavor, inside: bool) -> None:
    """AtomicTests.test_reuse_commit_commit: one unit_of_work object entered twice, nested."""
    unit = flavor.unit(propagation="nested")
    async with around(flavor, inside):
        async with unit as session:
            await flavor.add(session, "Tintin")
            async with unit as inner:
                await flavor.add(inner, "Archibald Haddock")
        assert await flavor.names() == ["Archibald Haddock", "Tintin"]


@INSIDE
async def test_reuse_commit_rollback(flavor: Flavor, inside: bool) -> None:
    """AtomicTests.test_reuse_commit_rollback."""
    unit = flavor.unit(propagation="nested")
    async with around(flavor, inside):
        async with unit as session:
            await flavor.add(session, "Tintin")
            with pytest.raises(Oops):
                async with unit as inner:
                    await flavor.add(inner, "Haddock")
                    raise Oops("Oops, that's his last name")
        assert await flavor.names() == ["Tintin"]


@INSIDE
async def test_reuse_rollback_commit(flavor: Flavor, inside: bool) -> None:
    """AtomicTests.test_reuse_rollback_commit."""
    unit = flavor.unit(propagation="nested")
    async with around(flavor, inside):
        with pytest.raises(Oops):
            async with unit as session:
                await flavor.add(session, "Tintin")
                async with unit as inner:
                    await flavor.add(inner, "Haddock")
                raise Oops("Oops, that's his first name")
        assert await flavor.names() == []


@INSIDE
async def test_reuse_rollback_rollback(flavor: Flavor, inside: bool) -> None:
    """AtomicTests.test_reuse_rollback_rollback."""
    unit = flavor.unit(propagation="nested")
    async with around(flavor, inside):
        with pytest.raises(Oops, match="first name"):
            async with unit as session:
                await flavor.add(session, "Tintin")
                with pytest.raises(Oops, match="last name"):
                    async with unit as inner:
                        await flavor.add(inner, "Haddock")
                    raise Oops("Oops, that's his last name")
                raise Oops("Oops, that's his first name")
        assert await flavor.names() == []


def savepoint_names(flavor: Flavor) -> list[str]:
    """The names of the savepoints the Database's engine begins from now on, read off the SAVEPOINT statements."""
    engine = flavor.db.engine
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    assert isinstance(sync_engine, Engine)
    names: list[str] = []

    def record(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        words = statement.split()
        if len(words) == 2 and words[0].upper() == "SAVEPOINT":
            names.append(words[1])

    event.listen(sync_engine, "before_cursor_execute", record)
    return names


async def test_failure_on_exit_transaction(flavor: Flavor) -> None:
    """AtomicTests.test_failure_on_exit_transaction: the savepoint's RELEASE fails.

    Django provokes it with a wrong savepoint id; here the nested unit's savepoint is released
    behind uow's back, so uow's own RELEASE fails. The error reaches the caller, and the outer
    unit, whose transaction can no longer be trusted, rolls back instead of committing.
    """
    savepoints = savepoint_names(flavor)
    with pytest.raises(uow.RollbackOnlyError):
        async with flavor.unit() as session:
            with pytest.raises(DBAPIError):
                async with flavor.unit(propagation="nested") as inner:
                    await flavor.add(inner, "Tintin")
                    assert await count(flavor, inner) == 1
                    await flavor.execute(inner, f"RELEASE SAVEPOINT {savepoints[-1]}")
            assert session is inner
    assert await flavor.names() == []


# -- AtomicMergeTests ----------------------------------------------------------------------------


async def test_merged_outer_rollback(flavor: Flavor) -> None:
    """AtomicMergeTests.test_merged_outer_rollback: a failure two joins deep dooms the owner."""
    with pytest.raises(uow.RollbackOnlyError):
        async with flavor.unit() as session:
            await flavor.add(session, "Tintin")
            async with flavor.unit() as joined:
                await flavor.add(joined, "Archibald Haddock")
                with pytest.raises(Oops):
                    async with flavor.unit() as innermost:
                        await flavor.add(innermost, "Calculus")
                        raise Oops("Oops, that's his last name")
                # The third insert is not undone yet: only the owner can roll back.
                assert await count(flavor, joined) == 3
            assert await count(flavor, session) == 3
    assert await flavor.names() == []


async def test_merged_inner_savepoint_rollback(flavor: Flavor) -> None:
    """AtomicMergeTests.test_merged_inner_savepoint_rollback: a savepoint contains a joined unit's failure.

    Django's savepoint block rolls back silently; the nested unit rolls back to its savepoint and
    raises RollbackOnlyError, which the owner catches and goes on.
    """
    async with flavor.unit() as session:
        await flavor.add(session, "Tintin")
        with pytest.raises(uow.RollbackOnlyError, match="savepoint"):
            async with flavor.unit(propagation="nested") as inner:
                await flavor.add(inner, "Archibald Haddock")
                with pytest.raises(Oops):
                    async with flavor.unit() as joined:
                        await flavor.add(joined, "Calculus")
                        raise Oops("Oops, that's his last name")
                assert await count(flavor, inner) == 3
        assert await count(flavor, session) == 1
    assert await flavor.names() == ["Tintin"]


# -- AtomicErrorsTests ---------------------------------------------------------------------------


async def test_atomic_prevents_calling_transaction_methods(flavor: Flavor) -> None:
    """AtomicErrorsTests.test_atomic_prevents_calling_transaction_methods: commit and rollback inside a unit.

    Django refuses both before they act (TransactionManagementError) and the block then commits.
    uow refuses the commit before it acts and reports the rollback right after it (SQLAlchemy
    has no event before one) with OwnershipError; the unit, its work undone, ends rolled back.
    """
    with pytest.raises(uow.RollbackOnlyError):
        async with flavor.unit() as session:
            await flavor.add(session, "Tintin")
            with pytest.raises(uow.OwnershipError, match="is refused"):
                await flavor.commit(session)
            with pytest.raises(uow.OwnershipError, match="rolled back or closed"):
                await flavor.rollback(session)
    assert await flavor.names() == []


async def test_atomic_prevents_queries_in_broken_transaction(flavor: Flavor) -> None:
    """AtomicErrorsTests.test_atomic_prevents_queries_in_broken_transaction: after an IntegrityError, no more work.

    SQLAlchemy rolls the transaction back when a flush fails: later statements raise
    PendingRollbackError, and the unit rolls back (a swallowed failed flush is a rollback-only
    unit: RollbackOnlyError) so the existing row keeps its value.
    """
    async with flavor.unit() as session:
        await flavor.add(session, "Archibald Haddock")
    with pytest.raises(uow.RollbackOnlyError):
        async with flavor.unit() as session:
            with pytest.raises(IntegrityError):
                await flavor.add(session, "Archibald Haddock")
            with pytest.raises(PendingRollbackError):
                await flavor.rename(session, "Archibald Haddock", "Cuthbert Calculus")
    assert await flavor.names() == ["Archibald Haddock"]


@pytest.mark.parametrize("how", ["nested_unit", "begin_nested"])
async def test_atomic_allows_queries_after_fixing_transaction(flavor: Flavor, how: str) -> None:
    """AtomicErrorsTests.test_atomic_allows_queries_after_fixing_transaction: recovery after an IntegrityError.

    Django recovers with set_rollback(False); uow's way is a savepoint around the insert that may
    fail (a ``nested`` unit, or the user's own ``begin_nested()``): the unit goes on and commits.
    """
    async with flavor.unit() as session:
        await flavor.add(session, "Archibald Haddock")
    async with flavor.unit() as session:
        with pytest.raises(IntegrityError):
            if how == "nested_unit":
                async with flavor.unit(propagation="nested") as inner:
                    await flavor.add(inner, "Archibald Haddock")
            else:
                savepoint = session.begin_nested()
                if flavor.is_async:
                    savepoint = await savepoint
                try:
                    await flavor.add(session, "Archibald Haddock")
                finally:
                    await savepoint.rollback() if flavor.is_async else savepoint.rollback()
        await flavor.rename(session, "Archibald Haddock", "Cuthbert Calculus")
        await flavor.add(session, "Tintin")
    assert await flavor.names() == ["Cuthbert Calculus", "Tintin"]


async def test_atomic_prevents_queries_in_broken_transaction_after_client_close(flavor: Flavor) -> None:
    """AtomicErrorsTests.test_atomic_prevents_queries_in_broken_transaction_after_client_close.

    Closing the unit's session inside it is reported (OwnershipError); the unit rolls back and
    the next unit works as usual.
    """
    with pytest.raises(uow.OwnershipError, match="rolled back or closed"):
        async with flavor.unit() as session:
            await flavor.add(session, "Archibald Haddock")
            await flavor.close(session)
    assert await flavor.names() == []


# -- AtomicMiscTests -----------------------------------------------------------------------------


async def test_wrap_callable_instance(flavor: Flavor) -> None:
    """AtomicMiscTests.test_wrap_callable_instance (#20028): a callable instance can be decorated.

    Django only requires that wrapping does not fail; uow may refuse it, but with a UowError.
    """

    class Callable:
        def __call__(self) -> None:
            pass

    try:
        uow.unit_of_work(database=flavor.db)(Callable())
    except uow.UowError:
        pass


async def test_atomic_does_not_leak_savepoints_on_failure(flavor: Flavor) -> None:
    """AtomicMiscTests.test_atomic_does_not_leak_savepoints_on_failure (#23074): a rolled-back savepoint is released.

    Rolling back to it afterwards must fail, because it no longer exists.
    """
    savepoints = savepoint_names(flavor)
    with pytest.raises(DBAPIError):
        async with flavor.unit() as session:
            with pytest.raises(Oops):
                async with flavor.unit(propagation="nested") as inner:
                    await count(flavor, inner)  # a savepoint is begun on the connection when it is first used
                    name = savepoints[-1]
                    raise Oops("Oops")
            await flavor.execute(session, f"ROLLBACK TO SAVEPOINT {name}")


async def test_mark_for_rollback_on_error_in_transaction(flavor: Flavor) -> None:
    """AtomicMiscTests.test_mark_for_rollback_on_error_in_transaction: a failed joined unit dooms the unit.

    Django refuses further queries; SQLAlchemy runs them, and uow rolls them back with the rest
    (RollbackOnlyError). The next unit starts clean.
    """
    with pytest.raises(uow.RollbackOnlyError):
        async with flavor.unit() as session:
            with pytest.raises(Oops):
                async with flavor.unit():
                    raise Oops("Oops")
            await flavor.add(session, "written after the failure")
    async with flavor.unit() as session:
        await flavor.add(session, "next unit")
    assert await flavor.names() == ["next unit"]


# -- DurableTests: atomic(durable=True) is propagation="never" ------------------------------------


async def test_durable_commit(flavor: Flavor) -> None:
    """DurableTestsBase.test_commit."""
    async with flavor.unit(propagation="never") as session:
        await flavor.add(session, "Tintin")
    assert await flavor.names() == ["Tintin"]


async def test_nested_outer_durable(flavor: Flavor) -> None:
    """DurableTestsBase.test_nested_outer_durable: a durable unit may contain others."""
    async with flavor.unit(propagation="never") as session:
        await flavor.add(session, "Tintin")
        async with flavor.unit(propagation="nested") as inner:
            await flavor.add(inner, "Archibald Haddock")
    assert await flavor.names() == ["Archibald Haddock", "Tintin"]


async def test_nested_both_durable(flavor: Flavor) -> None:
    """DurableTestsBase.test_nested_both_durable: a durable unit cannot be nested in another."""
    async with flavor.unit(propagation="never"):
        with pytest.raises(uow.PropagationError, match="never"):
            async with flavor.unit(propagation="never"):
                pass


async def test_nested_inner_durable(flavor: Flavor) -> None:
    """DurableTestsBase.test_nested_inner_durable: nor in any unit."""
    async with flavor.unit():
        with pytest.raises(uow.PropagationError, match="never"):
            async with flavor.unit(propagation="never"):
                pass


async def test_sequence_of_durables(flavor: Flavor) -> None:
    """DurableTestsBase.test_sequence_of_durables."""
    async with flavor.unit(propagation="never") as session:
        await flavor.add(session, "Tintin 1")
    assert await flavor.names() == ["Tintin 1"]
    async with flavor.unit(propagation="never") as session:
        await flavor.add(session, "Tintin 2")
    assert await flavor.names() == ["Tintin 1", "Tintin 2"]


# -- AsyncTransactionTestCase: new_connection() is propagation="requires_new" ----------------------


async def test_new_connection_nested(flavor: Flavor) -> None:
    """AsyncTransactionTestCase.test_new_connection_nested: the inner unit's commit is seen by the outer one."""
    async with flavor.unit() as outer:
        async with flavor.unit(propagation="requires_new") as inner:
            assert inner is not outer
            await flavor.add(inner, "Sarah Hatoff")
            assert await count(flavor, inner) == 1
        assert await count(flavor, outer) == 1


async def test_new_connection_nested2(flavor: Flavor) -> None:
    """AsyncTransactionTestCase.test_new_connection_nested2: the inner unit does not see the outer's uncommitted row."""
    async with flavor.unit() as outer:
        await flavor.add(outer, "Sarah Hatoff")
        assert await count(flavor, outer) == 1
        async with flavor.unit(propagation="requires_new") as inner:
            assert await count(flavor, inner) == 0
    assert await flavor.names() == ["Sarah Hatoff"]


async def test_asavepoint(flavor: Flavor) -> None:
    """AsyncTransactionTestCase.test_asavepoint: rolling back to a savepoint removes what was written in it."""
    async with flavor.unit() as session:
        with pytest.raises(Oops):
            async with flavor.unit(propagation="nested") as inner:
                await flavor.add(inner, "Archibald Haddock")
                assert await count(flavor, inner) == 1
                raise Oops("back to the savepoint")
        assert await count(flavor, session) == 0
