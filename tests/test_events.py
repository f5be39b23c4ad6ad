"""Transaction events (docs/events.md): before_commit, on_commit, on_rollback, on_completion, set_rollback_only.

Every scenario runs on pysqlite, psycopg, aiosqlite and asyncpg (`tests.flavors`); the
connection killed during COMMIT runs on PostgreSQL (psycopg and asyncpg).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import exc, select
from sqlalchemy.orm import Session

import uow
from tests import drivers
from tests.models import Item
from uow import Outcome
from uow.testing import CapturedCompletion, capture_on_commit

if TYPE_CHECKING:
    from tests.flavors import Flavor

pytest_plugins = ["tests.flavors"]


class Trail:
    """What the hooks of a scenario did, in order."""

    def __init__(self, flavor: Flavor) -> None:
        self.flavor = flavor
        self.events: list[str] = []

    def all_phases(self, tag: str) -> None:
        """Register one hook of every phase, each noting `tag` and its phase."""
        db = self.flavor.db
        uow.before_commit(lambda: self.events.append(f"{tag}:before"), database=db)
        uow.on_commit(lambda: self.events.append(f"{tag}:commit"), database=db)
        uow.on_rollback(lambda: self.events.append(f"{tag}:rollback"), database=db)
        uow.on_completion(lambda outcome: self.events.append(f"{tag}:{outcome.value}"), database=db)


@pytest.fixture
def trail(flavor: Flavor) -> Trail:
    return Trail(flavor)


# -- the phases of one unit ----------------------------------------------------------------------


async def test_a_committed_unit_runs_before_commit_then_on_commit_then_on_completion(
    flavor: Flavor, trail: Trail
) -> None:
    async with flavor.unit() as session:
        await flavor.add(session, "a")
        trail.all_phases("u")
        trail.all_phases("v")
        assert trail.events == []
    assert trail.events == ["u:before", "v:before", "u:commit", "v:commit", "u:committed", "v:committed"]
    assert await flavor.names() == ["a"]


async def test_a_rolled_back_unit_runs_on_rollback_then_on_completion(flavor: Flavor, trail: Trail) -> None:
    with pytest.raises(ValueError, match="boom"):
        async with flavor.unit() as session:
            await flavor.add(session, "a")
            trail.all_phases("u")
            raise ValueError("boom")
    assert trail.events == ["u:rollback", "u:rolled_back"]
    assert await flavor.names() == []


async def test_before_commit_writes_inside_the_unit(flavor: Flavor, trail: Trail) -> None:
    async def audit() -> None:
        # The hook runs inside the unit: current_session() and decorated functions join it.
        session = await uow.current_session_async(flavor.db) if flavor.is_async else uow.current_session(flavor.db)
        await flavor.add(session, "audit")

    async with flavor.unit() as session:
        await flavor.add(session, "a")
        uow.before_commit(flavor.hook(audit), database=flavor.db)
    assert await flavor.names() == ["a", "audit"]


async def test_a_before_commit_hook_that_raises_vetoes_the_commit(flavor: Flavor, trail: Trail) -> None:
    def veto() -> None:
        raise PermissionError("not today")

    with pytest.raises(PermissionError, match="not today"):
        async with flavor.unit() as session:
            await flavor.add(session, "a")
            uow.before_commit(veto, database=flavor.db)
            trail.all_phases("u")
    assert trail.events == ["u:rollback", "u:rolled_back"]  # the later before_commit hook never ran
    assert await flavor.names() == []


async def test_before_commit_hooks_registered_by_before_commit_hooks_run_too(flavor: Flavor, trail: Trail) -> None:
    def first() -> None:
        trail.events.append("first")
        uow.before_commit(lambda: trail.events.append("second"), database=flavor.db)

    async with flavor.unit():
        uow.before_commit(first, database=flavor.db)
    assert trail.events == ["first", "second"]


async def test_a_failing_after_hook_is_logged_and_the_rest_still_run(
    flavor: Flavor, trail: Trail, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> None:
        raise RuntimeError("hook failed")

    with pytest.raises(ValueError):
        async with flavor.unit():
            uow.on_rollback(broken, database=flavor.db)
            uow.on_rollback(lambda: trail.events.append("after"), database=flavor.db)
            raise ValueError
    assert trail.events == ["after"]
    assert any("on_rollback hook" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


async def test_hooks_of_a_joined_unit_follow_the_owner(flavor: Flavor, trail: Trail) -> None:
    async with flavor.unit():
        async with flavor.unit() as session:
            await flavor.add(session, "a")
            trail.all_phases("inner")
        assert trail.events == []
    assert trail.events == ["inner:before", "inner:commit", "inner:committed"]


async def test_async_hooks_are_awaited_in_async_units_and_refused_in_sync_ones(flavor: Flavor, trail: Trail) -> None:
    async def hook() -> None:
        pass

    if not flavor.is_async:
        async with flavor.unit():
            for register in (uow.before_commit, uow.on_rollback, uow.on_completion):
                with pytest.raises(uow.ConfigurationError, match="async callback needs an async unit"):
                    register(hook, database=flavor.db)
        return

    async def note(what: str) -> None:
        trail.events.append(what)

    async def completed(outcome: Outcome) -> None:
        trail.events.append(outcome.value)

    async with flavor.unit():
        uow.before_commit(lambda: note("before"), database=flavor.db)
        uow.on_commit(lambda: note("commit"), database=flavor.db)
        uow.on_completion(completed, database=flavor.db)
    with pytest.raises(KeyError):
        async with flavor.unit():
            uow.on_rollback(lambda: note("rollback"), database=flavor.db)
            uow.on_completion(completed, database=flavor.db)
            raise KeyError
    assert trail.events == ["before", "commit", "committed", "rollback", "rolled_back"]


def test_hooks_outside_a_unit_and_not_callable(sqlite_db: uow.Database) -> None:
    for register in (uow.before_commit, uow.on_rollback, uow.on_completion):
        with pytest.raises(uow.NoActiveUnitOfWork, match="outside a unit of work"):
            register(lambda *_: None, database=sqlite_db)
        with uow.unit_of_work(database=sqlite_db), pytest.raises(TypeError, match="needs a callable"):
            register(42, database=sqlite_db)  # type: ignore[arg-type]


def test_hooks_other_than_on_commit_are_refused_in_a_callers_session(sqlite_db: uow.Database) -> None:
    with sqlite_db.session_factory() as session:

        @uow.unit_of_work(database=sqlite_db)
        def work(unit_session: Session) -> None:
            uow.on_rollback(lambda: None, database=sqlite_db)

        with pytest.raises(uow.ConfigurationError, match="session passed with session="):
            work(session=session)


# -- savepoints ---------------------------------------------------------------------------------


async def test_hooks_of_a_released_savepoint_move_to_the_enclosing_unit(flavor: Flavor, trail: Trail) -> None:
    with pytest.raises(ValueError):
        async with flavor.unit():
            async with flavor.unit(propagation="nested") as session:
                await flavor.add(session, "a")
                trail.all_phases("sp")
            assert trail.events == []  # released: nothing ran, they belong to the outer unit now
            raise ValueError
    assert trail.events == ["sp:rollback", "sp:rolled_back"]


async def test_a_rolled_back_savepoint_runs_its_rollback_hooks_at_once_and_drops_the_rest(
    flavor: Flavor, trail: Trail
) -> None:
    async with flavor.unit() as outer:
        await flavor.add(outer, "kept")
        trail.all_phases("outer")
        with pytest.raises(ValueError):
            async with flavor.unit(propagation="nested") as session:
                await flavor.add(session, "undone")
                trail.all_phases("sp")
                raise ValueError
        assert trail.events == ["sp:rollback", "sp:rolled_back"]
    assert trail.events[2:] == ["outer:before", "outer:commit", "outer:committed"]
    assert await flavor.names() == ["kept"]


async def test_set_rollback_only_in_a_savepoint_rolls_back_only_the_savepoint(flavor: Flavor, trail: Trail) -> None:
    async with flavor.unit() as outer:
        await flavor.add(outer, "kept")
        async with flavor.unit(propagation="nested") as session:
            await flavor.add(session, "previewed")
            trail.all_phases("sp")
            uow.set_rollback_only(flavor.db)
        assert trail.events == ["sp:rollback", "sp:rolled_back"]
    assert await flavor.names() == ["kept"]


# -- set_rollback_only ---------------------------------------------------------------------------


async def test_set_rollback_only_rolls_back_without_an_exception(flavor: Flavor, trail: Trail) -> None:
    async with flavor.unit() as session:
        await flavor.add(session, "a")
        trail.all_phases("u")
        uow.set_rollback_only(flavor.db)
    assert trail.events == ["u:rollback", "u:rolled_back"]
    assert await flavor.names() == []


async def test_set_rollback_only_in_a_joined_unit_marks_the_unit_it_joined(flavor: Flavor) -> None:
    async def inner(session: Any) -> None:
        await flavor.add(session, "a")
        uow.set_rollback_only(flavor.db)

    async with flavor.unit():
        await flavor.decorated(inner)()  # joins, marks the outer unit, returns normally
    assert await flavor.names() == []


async def test_set_rollback_only_also_quiets_a_swallowed_inner_failure(flavor: Flavor) -> None:
    async def fails(session: Any) -> None:
        raise ValueError

    async with flavor.unit():
        with pytest.raises(ValueError):
            await flavor.decorated(fails)()
        uow.set_rollback_only(flavor.db)  # the rollback was asked for: no RollbackOnlyError
    assert await flavor.names() == []


def test_set_rollback_only_needs_a_unit_it_owns(sqlite_db: uow.Database) -> None:
    with pytest.raises(uow.NoActiveUnitOfWork, match="set_rollback_only"):
        uow.set_rollback_only(sqlite_db)
    with sqlite_db.session_factory() as session:

        @uow.unit_of_work(database=sqlite_db)
        def work(unit_session: Session) -> None:
            uow.set_rollback_only(sqlite_db)

        with pytest.raises(uow.ConfigurationError, match="roll that session back"):
            work(session=session)


def test_a_read_only_unit_reports_a_rollback(sqlite_db: uow.Database) -> None:
    outcomes: list[Outcome] = []
    with uow.unit_of_work(database=sqlite_db, read_only=True) as session:
        session.scalars(select(Item.name)).all()
        uow.before_commit(lambda: outcomes.append(Outcome.COMMITTED), database=sqlite_db)
        uow.on_completion(outcomes.append, database=sqlite_db)
    assert outcomes == [Outcome.ROLLED_BACK]


# -- outcomes of a failed COMMIT ----------------------------------------------------------------


async def test_a_commit_whose_flush_fails_is_rolled_back(flavor: Flavor) -> None:
    async with flavor.unit() as session:
        await flavor.add(session, "taken")
    outcomes: list[Outcome] = []
    with pytest.raises(exc.IntegrityError):
        async with flavor.unit() as session:
            session.add(Item(name="taken"))  # not flushed: COMMIT's flush fails
            uow.on_completion(outcomes.append, database=flavor.db)
    assert outcomes == [Outcome.ROLLED_BACK]


@pytest.mark.parametrize("flavor", ["postgresql+psycopg", "postgresql+asyncpg"], indirect=True)
async def test_a_connection_killed_during_commit_leaves_the_outcome_unknown(flavor: Flavor, trail: Trail) -> None:
    server = flavor.target.server  # the backend is killed with pg_terminate_backend from another connection
    assert server is not None
    outcomes: list[Outcome] = []
    with pytest.raises(exc.DBAPIError) as failure:
        async with flavor.unit() as session:
            await flavor.add(session, "a")  # flushed: the next thing the connection sends is COMMIT
            pid = (await flavor.execute(session, drivers.backend_id_query("postgresql"))).scalar()
            trail.all_phases("u")
            uow.before_commit(lambda: drivers.kill(server, int(pid)), database=flavor.db)
            uow.on_completion(outcomes.append, database=flavor.db)
    assert failure.value.connection_invalidated
    assert outcomes == [Outcome.UNKNOWN]
    assert trail.events == ["u:before", "u:unknown"]  # neither on_commit nor on_rollback: nobody knows
    assert await flavor.names() == []  # the server rolled it back: COMMIT never reached it


# -- uow.testing captures them ------------------------------------------------------------------


async def test_capture_on_commit_captures_every_after_phase(flavor: Flavor, trail: Trail) -> None:
    async with capture_on_commit() as hooks:
        async with flavor.unit() as session:
            await flavor.add(session, "a")
            trail.all_phases("c")
        with pytest.raises(ValueError):
            async with flavor.unit():
                trail.all_phases("r")
                raise ValueError
    assert trail.events == ["c:before"]  # before_commit is part of the unit's work: it ran
    assert len(hooks) == 1 and len(hooks.rollback) == 1
    assert [(type(h), h.outcome) for h in hooks.completion if isinstance(h, CapturedCompletion)] == [
        (CapturedCompletion, Outcome.COMMITTED),
        (CapturedCompletion, Outcome.ROLLED_BACK),
    ]
    if flavor.is_async:
        await hooks.run_all_async()
    else:
        hooks.run_all()
    assert trail.events == ["c:before", "c:commit", "r:rollback", "c:committed", "r:rolled_back"]


def test_capture_with_execute_runs_them_all(sqlite_db: uow.Database) -> None:
    ran: list[str] = []
    with capture_on_commit(execute=True):
        with uow.unit_of_work(database=sqlite_db):
            uow.on_commit(lambda: ran.append("commit"), database=sqlite_db)
            uow.set_rollback_only(sqlite_db)
            uow.on_rollback(lambda: ran.append("rollback"), database=sqlite_db)
        assert ran == []
    assert ran == ["rollback"]
