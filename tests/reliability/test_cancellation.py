"""Cancellation at every await point of an async unit, under timeouts, and KeyboardInterrupt in sync units.

`Stepper` drives the unit's coroutine and counts each time it suspends; a run with
``cancel_at=n`` calls ``task.cancel()`` at the n-th suspension, exactly as a timeout or a
cancelled TaskGroup would. Stepping n from 1 to the last suspension covers every await of
the unit's life: opening the session, building services, the body, flushes, the savepoint,
the commit, closing.

What must hold, precisely:
- always: the caller sees the cancellation, the connection is back in the pool, no server
  session is idle in a transaction, the next unit on the Database works, and the unit's work
  is committed entirely or not at all;
- cancelled before the body and its services are over: nothing is committed and no
  ``on_commit`` hook runs;
- cancelled while the unit is ending (COMMIT or ROLLBACK, handing the connection back): the
  ending runs to completion first; a unit whose body succeeded is committed, its hooks run,
  then the cancellation reaches the caller. ``again`` cancels at every later suspension too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import uow
from tests.conftest import Backend, finish_async_db, make_async_db
from tests.models import AsyncItemService, ItemService
from tests.reliability._checks import (
    assert_no_leak,
    clear_items_async,
    clear_items_sync,
    item_names_async,
    item_names_sync,
)

FIGURES: Counter[str] = Counter()


class Boom(Exception):
    pass


class Stepper:
    """Awaitable driving `coro`: counts its suspensions, cancels the running task at the `cancel_at`-th."""

    def __init__(self, coro: Awaitable[Any], cancel_at: int | None, probe: Probe, *, again: bool = False) -> None:
        self.coro = coro
        self.cancel_at = cancel_at
        self.again = again  # cancel again at every later suspension too: the most impatient caller
        self.probe = probe
        self.cancelled_in: str | None = None

    def __await__(self) -> Generator[Any, Any, Any]:
        inner = self.coro.__await__()
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                yielded = inner.throw(error) if error is not None else inner.send(value)
            except StopIteration as stop:
                return stop.value
            self.probe.suspensions += 1
            self.probe.phases.append(self.probe.phase)
            at = self.cancel_at
            if at is not None and (self.probe.suspensions == at or (self.again and self.probe.suspensions > at)):
                self.cancelled_in = self.cancelled_in or self.probe.phase
                task = asyncio.current_task()
                assert task is not None
                task.cancel()
            try:
                value, error = (yield yielded), None
            except BaseException as thrown:
                value, error = None, thrown


@dataclass
class Probe:
    """Where the unit is: updated by SQLAlchemy events and by the unit itself."""

    phase: str = "opening"
    suspensions: int = 0
    phases: list[str] = field(default_factory=list)
    commit_sent: int | None = None  # suspensions counted when COMMIT was about to be sent
    commit_done: int | None = None  # ... and when it had returned
    hooks: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.phase, self.suspensions, self.commit_sent, self.commit_done = "opening", 0, None, None
        self.phases.clear()
        self.hooks.clear()


PROBES: list[Probe] = []  # the probe of the running test; the listeners below report to it


def _probe_for(session: Session) -> Probe | None:
    return PROBES[-1] if PROBES and session.info.get("probed") else None


@event.listens_for(Engine, "commit")
def _commit_sent(_: Any) -> None:
    if PROBES and PROBES[-1].phase == "commit":
        PROBES[-1].commit_sent = PROBES[-1].suspensions


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    if (probe := _probe_for(session)) is not None:
        probe.phase = "savepoint" if session.in_nested_transaction() else "commit"


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if (probe := _probe_for(session)) is None:
        return
    if probe.commit_sent is None:  # a savepoint was released
        probe.phase = "body"
    else:
        probe.commit_done = probe.suspensions
        probe.phase = "close"


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, *_: Any) -> None:
    if (probe := _probe_for(session)) is not None and probe.phase == "body":
        probe.phase = "flush"


@event.listens_for(Session, "after_flush_postexec")
def _after_flush(session: Session, *_: Any) -> None:
    if (probe := _probe_for(session)) is not None and probe.phase == "flush":
        probe.phase = "body"


@pytest.fixture
def probe() -> Iterator[Probe]:
    PROBES.append(Probe())
    yield PROBES[-1]
    PROBES.pop()


def make_unit(database: uow.Database, probe: Probe, *, fail: bool) -> Callable[[], Awaitable[None]]:
    async def provide_resource(session: AsyncSession) -> AsyncIterator[Resource]:
        session.sync_session.info["probed"] = True
        probe.phase = "services"
        await asyncio.sleep(0)
        yield Resource()
        probe.phase = "services"
        await asyncio.sleep(0)
        # The body and its services are done: from here on the unit is ending (COMMIT or ROLLBACK, close).
        probe.phase = "ending"

    @uow.with_services(AsyncItemService, database=database, propagation="nested")
    async def inner(items: AsyncItemService) -> None:
        probe.phase = "body"
        await items.add("b")

    @uow.with_services(AsyncItemService, provide_resource, database=database, isolation_level="SERIALIZABLE")
    async def unit(items: AsyncItemService, resource: Resource) -> None:
        probe.phase = "body"
        await items.add("a")
        uow.on_commit(lambda: probe.hooks.append("a"), database=database)
        await inner()
        probe.phase = "body"
        await asyncio.sleep(0)
        if fail:
            raise Boom

    return unit


class Resource:
    pass


async def run_steps(database: uow.Database, backend: Backend, probe: Probe, *, fail: bool, again: bool) -> int:
    """Cancel the unit at its 1st, 2nd, ... suspension until runs end before being cancelled.

    The number of suspensions varies a little from run to run (asyncpg prepares a statement the
    first time a connection sees it), so stepping stops only after three runs in a row ended first.
    """
    unit = make_unit(database, probe, fail=fail)
    covered: set[str] = set()
    n = ended = 0
    while ended < 3:
        n += 1
        assert n < 200, "the unit never ran to its end"
        probe.reset()
        stepper = Stepper(unit(), n, probe, again=again)
        try:
            await stepper
        except asyncio.CancelledError:
            pass
        except Boom:
            assert fail and stepper.cancelled_in is None
        if stepper.cancelled_in is None:
            ended += 1
            await clear_items_async(database)
            continue
        ended = 0
        covered.add(stepper.cancelled_in)
        FIGURES[stepper.cancelled_in] += 1
        FIGURES["runs"] += 1
        await check_outcome(database, backend, probe, n, fail=fail, where=stepper.cancelled_in)
    expected = {"services", "flush", "savepoint", "body"} | (set() if fail else {"ending"})
    assert expected <= covered, f"await points never reached: {expected - covered}"
    return n - 3


async def check_outcome(
    database: uow.Database, backend: Backend, probe: Probe, n: int, *, fail: bool, where: str | None
) -> None:
    context = f"cancelled at suspension {n} ({where})"
    await asyncio.sleep(0)  # let nothing but the loop's own bookkeeping run before the checks
    assert_no_leak(database, backend, f"{context}: {probe}: ")
    names = await item_names_async(database)
    assert names in (set(), {"a", "b"}), f"{context}: half a unit committed: {names}"
    if not fail and where == "ending":
        # The body was over: the ending ran to completion, then the cancellation went on.
        assert names == {"a", "b"}, f"{context}: the unit was ending, yet it did not commit"
        assert probe.hooks == ["a"], f"{context}: committed, but the on_commit hooks did not run"
    else:
        assert names == set(), f"{context}: committed although cancelled before the body was over"
        assert probe.hooks == [], f"{context}: hooks ran without a commit"
    await assert_next_unit_works(database)


async def assert_next_unit_works(database: uow.Database) -> None:
    @uow.with_services(AsyncItemService, database=database)
    async def next_unit(items: AsyncItemService) -> None:
        await items.add("next")

    await next_unit()
    await clear_items_async(database)


@pytest.mark.parametrize("again", [False, True], ids=["once", "repeatedly"])
@pytest.mark.parametrize("fail", [False, True], ids=["succeeding", "failing"])
async def test_cancelled_at_every_await_point(backend: Backend, probe: Probe, fail: bool, again: bool) -> None:
    if backend.name == "postgresql":
        # asyncpg prepares a statement the first time a connection runs it; a cancellation can
        # cost the pool its connection, and the new one would need extra round trips. Without the
        # cache every run suspends at the same points, so stepping reaches every one of them.
        url = backend.async_url.update_query_dict({"prepared_statement_cache_size": "0"})
        backend = dataclasses.replace(backend, async_url=url)
    database = await make_async_db(backend)
    try:
        total = await run_steps(database, backend, probe, fail=fail, again=again)
    finally:
        await finish_async_db(database, backend)
    print(f"\n{backend.name} {'failing' if fail else 'succeeding'} unit: {total} await points; {dict(FIGURES)}")


# -- timeouts ------------------------------------------------------------------------------------

TIMEOUTS = [0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.008, 0.013, 0.021, 0.034]


async def _under_timeout(kind: str, awaitable: Awaitable[None], seconds: float) -> None:
    if kind == "wait_for":
        await asyncio.wait_for(awaitable, seconds)
    else:
        async with asyncio.timeout(seconds):  # type: ignore[attr-defined]
            await awaitable


@pytest.mark.parametrize(
    "kind",
    [
        "wait_for",
        pytest.param(
            "timeout",
            marks=pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is new in Python 3.11"),
        ),
    ],
)
async def test_timeouts_leave_nothing_half_done(
    backend: Backend, async_db: uow.Database, probe: Probe, kind: str
) -> None:
    unit = make_unit(async_db, probe, fail=False)
    timed_out = 0
    for seconds in TIMEOUTS:
        probe.reset()
        try:
            await _under_timeout(kind, Stepper(unit(), None, probe), seconds)
        except asyncio.TimeoutError:  # the builtin TimeoutError only from Python 3.11
            timed_out += 1
        else:
            assert probe.commit_done is not None
        assert_no_leak(async_db, backend)
        names = await item_names_async(async_db)
        assert names in (set(), {"a", "b"}), f"timeout {seconds}: half a unit committed: {names}"
        if probe.commit_sent is None:
            assert names == set() and probe.hooks == []
        if probe.commit_done is not None:
            assert names == {"a", "b"} and probe.hooks == ["a"], f"timeout {seconds}: commit returned, hooks missing"
        await clear_items_async(async_db)
        FIGURES[f"timeouts ({kind})"] += 1
    assert timed_out >= 1, "no timeout landed inside the unit"


# -- KeyboardInterrupt in sync units ---------------------------------------------------------------


@pytest.mark.parametrize("where", ["body", "flush", "savepoint", "commit", "close", "rollback"])
def test_keyboard_interrupt_in_a_sync_unit(backend: Backend, sync_db: uow.Database, where: str) -> None:
    engine = sync_db.engine
    assert isinstance(engine, Engine)
    hooks: list[str] = []
    armed = {where}

    def interrupt(point: str) -> None:
        if point in armed:
            armed.discard(point)
            raise KeyboardInterrupt(point)

    @event.listens_for(Session, "before_flush")
    def _flush(session: Session, *_: Any) -> None:
        if session.info.get("interrupt"):
            interrupt("flush")

    @event.listens_for(Session, "before_commit")
    def _commit(session: Session) -> None:
        if session.info.get("interrupt"):
            interrupt("commit")

    @event.listens_for(Session, "after_commit")
    def _after_commit(session: Session) -> None:
        if session.info.get("interrupt"):
            # Closing comes next: interrupting it is what an impatient Ctrl-C after the commit does.
            session.info["close_next"] = True

    original_close = Session.close
    original_rollback = Session.rollback

    def close(session: Session) -> None:
        if session.info.get("close_next"):
            interrupt("close")
        original_close(session)

    def rollback(session: Session) -> None:
        if session.info.get("interrupt"):
            interrupt("rollback")
        original_rollback(session)

    @uow.with_services(ItemService, database=sync_db, propagation="nested")
    def inner(items: ItemService) -> None:
        interrupt("savepoint")
        items.add("b")

    @uow.with_services(ItemService, database=sync_db)
    def unit(items: ItemService) -> None:
        items.session.info["interrupt"] = True
        items.add("a")
        uow.on_commit(lambda: hooks.append("a"), database=sync_db)
        inner()
        interrupt("body")
        if where == "rollback":
            # The body fails; Ctrl-C lands while the unit rolls back: the interrupt must win.
            raise Boom

    Session.close = close  # type: ignore[method-assign]
    Session.rollback = rollback  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            unit()
    finally:
        Session.close = original_close  # type: ignore[method-assign]
        Session.rollback = original_rollback  # type: ignore[method-assign]
        event.remove(Session, "before_flush", _flush)
        event.remove(Session, "before_commit", _commit)
        event.remove(Session, "after_commit", _after_commit)
    assert not armed, f"the interrupt at {where} never fired"
    assert_no_leak(sync_db, backend)
    if where == "close":
        # The commit had gone through: the work stands and its hooks ran before the interrupt went on.
        assert item_names_sync(sync_db) == {"a", "b"}
        assert hooks == ["a"]
    else:
        assert item_names_sync(sync_db) == set()
        assert hooks == []
    clear_items_sync(sync_db)
