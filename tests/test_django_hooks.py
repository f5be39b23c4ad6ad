"""The scenarios of Django's ``tests/transaction_hooks/tests.py``, for ``uow.on_commit``.

As in Django, each step writes a row and registers a hook that records its number, and a test
checks both: the hooks that ran (in order) and the rows that were committed must match. Django's
inner ``atomic()`` is a ``nested`` unit here, ``atomic(savepoint=False)`` a joined one. Where Django
runs a hook at once outside a transaction, uow refuses with `NoActiveUnitOfWork` (docs/design.md,
"Hooks"); where Django's outer block rolls back silently after a swallowed inner failure,
uow raises `RollbackOnlyError`. uow's hooks are all "robust": one that raises is logged and the
others run. Every scenario runs on pysqlite, psycopg, aiosqlite and asyncpg (`tests.flavors`).

Left out: test_raises_exception_non_autocommit_mode (uow has no autocommit mode to refuse).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest

import uow

if TYPE_CHECKING:
    from tests.flavors import Flavor

pytest_plugins = ["tests.flavors"]


class ForcedError(Exception):
    pass


class Notes:
    """What Django's TestConnectionOnCommit keeps in ``self.notified``, with its ``do`` and ``assertDone``."""

    def __init__(self, flavor: Flavor) -> None:
        self.flavor = flavor
        self.notified: list[int] = []

    def notify(self, number: int | str) -> None:
        if number == "error":
            raise ForcedError
        assert isinstance(number, int)
        self.notified.append(number)

    async def do(self, session: Any, number: int) -> None:
        """Write a row and register a hook reporting it."""
        await self.flavor.add(session, str(number))
        uow.on_commit(lambda: self.notify(number), database=self.flavor.db)

    async def assert_done(self, numbers: list[int]) -> None:
        assert self.notified == numbers
        assert sorted(int(name) for name in await self.flavor.names()) == sorted(numbers)


@pytest.fixture
def notes(flavor: Flavor) -> Notes:
    return Notes(flavor)


async def test_executes_immediately_if_no_transaction(flavor: Flavor, notes: Notes) -> None:
    """test_executes_immediately_if_no_transaction, test_robust_if_no_transaction: outside a unit.

    Django runs the hook at once; uow has no transaction to attach it to and refuses.
    """
    with pytest.raises(uow.NoActiveUnitOfWork, match="outside a unit of work"):
        uow.on_commit(lambda: notes.notify(1), database=flavor.db)
    with pytest.raises(uow.NoActiveUnitOfWork):
        uow.on_commit(lambda: notes.notify(1))
    await notes.assert_done([])


async def test_robust_transaction(flavor: Flavor, notes: Notes, caplog: pytest.LogCaptureFixture) -> None:
    """test_robust_transaction: a hook that raises is logged (ERROR, logger uow), the commit and the others stand."""

    def robust_callback() -> None:
        raise ForcedError("robust callback")

    with caplog.at_level(logging.ERROR, logger="uow"):
        async with flavor.unit() as session:
            uow.on_commit(robust_callback, database=flavor.db)
            await notes.do(session, 1)
    await notes.assert_done([1])
    records = [r for r in caplog.records if r.name == "uow" and "robust_callback" in r.getMessage()]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], ForcedError)


async def test_delays_execution_until_after_transaction_commit(flavor: Flavor, notes: Notes) -> None:
    """test_delays_execution_until_after_transaction_commit."""
    async with flavor.unit() as session:
        await notes.do(session, 1)
        assert notes.notified == []
    await notes.assert_done([1])


async def test_does_not_execute_if_transaction_rolled_back(flavor: Flavor, notes: Notes) -> None:
    """test_does_not_execute_if_transaction_rolled_back."""
    with pytest.raises(ForcedError):
        async with flavor.unit() as session:
            await notes.do(session, 1)
            raise ForcedError
    await notes.assert_done([])


@pytest.mark.parametrize("propagation", ["nested", "required"])
async def test_executes_only_after_final_transaction_committed(flavor: Flavor, notes: Notes, propagation: str) -> None:
    """test_executes_only_after_final_transaction_committed: not when the inner unit ends, after the owner commits."""
    async with flavor.unit():
        async with flavor.unit(propagation=propagation) as inner:
            await notes.do(inner, 1)
            assert notes.notified == []
        assert notes.notified == []
    await notes.assert_done([1])


async def test_discards_hooks_from_rolled_back_savepoint(flavor: Flavor, notes: Notes) -> None:
    """test_discards_hooks_from_rolled_back_savepoint: only hooks of released savepoints run."""
    async with flavor.unit():
        async with flavor.unit(propagation="nested") as inner:
            await notes.do(inner, 1)
        with pytest.raises(ForcedError):
            async with flavor.unit(propagation="nested") as inner:
                await notes.do(inner, 2)
                raise ForcedError
        async with flavor.unit(propagation="nested") as inner:
            await notes.do(inner, 3)
    await notes.assert_done([1, 3])


async def test_no_hooks_run_from_failed_transaction(flavor: Flavor, notes: Notes) -> None:
    """test_no_hooks_run_from_failed_transaction: if the owner fails, no hook from within it runs."""
    with pytest.raises(ForcedError):
        async with flavor.unit():
            async with flavor.unit(propagation="nested") as inner:
                await notes.do(inner, 1)
            raise ForcedError
    await notes.assert_done([])


async def test_inner_savepoint_rolled_back_with_outer(flavor: Flavor, notes: Notes) -> None:
    """test_inner_savepoint_rolled_back_with_outer: a released savepoint's hooks go with the savepoint around it."""
    async with flavor.unit() as session:
        with pytest.raises(ForcedError):
            async with flavor.unit(propagation="nested"):
                async with flavor.unit(propagation="nested") as innermost:
                    await notes.do(innermost, 1)
                raise ForcedError
        await notes.do(session, 2)
    await notes.assert_done([2])


async def test_no_savepoints_atomic_merged_with_outer(flavor: Flavor, notes: Notes) -> None:
    """test_no_savepoints_atomic_merged_with_outer: a joined unit's swallowed failure dooms the savepoint it is in.

    Django's block rolls back silently; the nested unit rolls back and raises RollbackOnlyError,
    and an owner that lets it through rolls back too.
    """
    with pytest.raises(uow.RollbackOnlyError):
        async with flavor.unit():
            async with flavor.unit(propagation="nested") as inner:
                await notes.do(inner, 1)
                with pytest.raises(ForcedError):
                    async with flavor.unit():
                        raise ForcedError
    await notes.assert_done([])


async def test_inner_savepoint_does_not_affect_outer(flavor: Flavor, notes: Notes) -> None:
    """test_inner_savepoint_does_not_affect_outer: a savepoint rolled back inside keeps the enclosing hooks."""
    async with flavor.unit():
        async with flavor.unit(propagation="nested") as inner:
            await notes.do(inner, 1)
            with pytest.raises(ForcedError):
                async with flavor.unit(propagation="nested"):
                    raise ForcedError
    await notes.assert_done([1])


async def test_runs_hooks_in_order_registered(flavor: Flavor, notes: Notes) -> None:
    """test_runs_hooks_in_order_registered: registration order, across savepoints."""
    async with flavor.unit() as session:
        await notes.do(session, 1)
        async with flavor.unit(propagation="nested") as inner:
            await notes.do(inner, 2)
        await notes.do(session, 3)
    await notes.assert_done([1, 2, 3])


async def test_hooks_cleared_after_successful_commit(flavor: Flavor, notes: Notes) -> None:
    """test_hooks_cleared_after_successful_commit: [1, 2], not [1, 1, 2]."""
    async with flavor.unit() as session:
        await notes.do(session, 1)
    async with flavor.unit() as session:
        await notes.do(session, 2)
    await notes.assert_done([1, 2])


async def test_hooks_cleared_after_rollback(flavor: Flavor, notes: Notes) -> None:
    """test_hooks_cleared_after_rollback."""
    with pytest.raises(ForcedError):
        async with flavor.unit() as session:
            await notes.do(session, 1)
            raise ForcedError
    async with flavor.unit() as session:
        await notes.do(session, 2)
    await notes.assert_done([2])


async def test_hooks_cleared_on_reconnect(flavor: Flavor, notes: Notes) -> None:
    """test_hooks_cleared_on_reconnect: closing the unit's session inside it is reported, and its hooks dropped."""
    with pytest.raises(uow.OwnershipError, match="rolled back or closed"):
        async with flavor.unit() as session:
            await notes.do(session, 1)
            await flavor.close(session)
    async with flavor.unit() as session:
        await notes.do(session, 2)
    await notes.assert_done([2])


async def test_error_in_hook_doesnt_prevent_clearing_hooks(flavor: Flavor, notes: Notes) -> None:
    """test_error_in_hook_doesnt_prevent_clearing_hooks: the failed hook is not run again by the next unit."""
    async with flavor.unit():
        uow.on_commit(lambda: notes.notify("error"), database=flavor.db)
    async with flavor.unit() as session:
        await notes.do(session, 1)
    await notes.assert_done([1])


async def test_db_query_in_hook(flavor: Flavor, notes: Notes) -> None:
    """test_db_query_in_hook: a hook reads what its unit committed (in a unit of its own)."""

    async def read_back() -> None:
        for name in await flavor.names():
            notes.notify(int(name))

    async with flavor.unit() as session:
        await flavor.add(session, "1")
        uow.on_commit(flavor.hook(read_back), database=flavor.db)
    await notes.assert_done([1])


async def test_transaction_in_hook(flavor: Flavor, notes: Notes) -> None:
    """test_transaction_in_hook: a hook runs a unit of its own, which commits."""

    async def write() -> None:
        async with flavor.unit() as session:
            item = await flavor.add(session, "1")
            notes.notify(int(item.name))

    async with flavor.unit():
        uow.on_commit(flavor.hook(write), database=flavor.db)
    await notes.assert_done([1])


async def test_hook_in_hook(flavor: Flavor, notes: Notes) -> None:
    """test_hook_in_hook: a hook's own unit registers a hook, which runs when that unit commits."""

    def on_commit(number: int, add_hook: bool) -> Any:
        async def body() -> None:
            async with flavor.unit() as session:
                if add_hook:
                    uow.on_commit(on_commit(number + 10, False), database=flavor.db)
                item = await flavor.add(session, str(number))
                notes.notify(int(item.name))

        return flavor.hook(body)

    async with flavor.unit():
        uow.on_commit(on_commit(1, True), database=flavor.db)
        uow.on_commit(on_commit(2, True), database=flavor.db)
    await notes.assert_done([1, 11, 2, 12])


async def test_raises_exception_non_callable(flavor: Flavor) -> None:
    """test_raises_exception_non_callable: the callback must be callable."""
    async with flavor.unit():
        with pytest.raises(TypeError, match="needs a callable"):
            uow.on_commit(None, database=flavor.db)  # type: ignore[arg-type]
