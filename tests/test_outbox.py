"""The transactional outbox on SQLite, PostgreSQL and MariaDB: what is delivered, when, and how often.

The runners here are the user's side of the contract (they record what they were handed, or
fail on purpose); the real SAQ, arq and Celery runners are in tests/integrations/test_outbox_runners.py.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session, sessionmaker

import uow
from tests.conftest import Backend, finish_async_db, make_async_db
from tests.models import AsyncItemService, ItemService
from uow.outbox import CapturedMessages, Message, Outbox, PayloadError, capture_messages, outbox_table
from uow.testing import bound_to_transaction

metadata = MetaData()
table = outbox_table(metadata, "test_outbox")


class Recorder:
    """An async runner that keeps what it was handed (and lets other tasks run while it does)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def deliver(self, message: Message, /) -> None:
        await asyncio.sleep(0)
        self.messages.append(message)

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.messages]


class SyncRecorder:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    def deliver(self, message: Message, /) -> None:
        self.messages.append(message)


class Refusing:
    """A runner whose broker is down for the first `failures` calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.messages: list[Message] = []

    async def deliver(self, message: Message, /) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"broker unreachable (call {self.calls})")
        self.messages.append(message)


@pytest.fixture
async def adb(async_db: uow.Database) -> AsyncIterator[uow.Database]:
    """`async_db` with the outbox table, emptied afterwards."""
    engine = async_db.engine
    assert isinstance(engine, AsyncEngine)
    async with engine.begin() as connection:
        await connection.run_sync(lambda sync: metadata.create_all(sync, checkfirst=True))
    yield async_db
    async with engine.begin() as connection:
        await connection.execute(table.delete())


@pytest.fixture
def sdb(sync_db: uow.Database) -> Iterator[uow.Database]:
    engine = sync_db.engine
    assert isinstance(engine, Engine)
    metadata.create_all(engine, checkfirst=True)
    yield sync_db
    with engine.begin() as connection:
        connection.execute(table.delete())


async def rows(database: uow.Database) -> list[dict[str, Any]]:
    engine = database.engine
    assert isinstance(engine, AsyncEngine)
    async with engine.connect() as connection:
        return [dict(r._mapping) for r in await connection.execute(select(table).order_by(table.c.created_at))]


def sync_rows(database: uow.Database) -> list[dict[str, Any]]:
    engine = database.engine
    assert isinstance(engine, Engine)
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(select(table))]


# -- enqueue: the row lives and dies with the unit ------------------------------------------


async def test_a_committed_unit_delivers_at_once_and_deletes_the_row(adb: uow.Database) -> None:
    runner = Recorder()
    outbox = Outbox(adb, runner, table=table)

    @uow.with_services(AsyncItemService, database=adb)
    async def register(items: AsyncItemService, name: str) -> str:
        await items.add(name)
        message_id = outbox.enqueue("send_welcome_mail", name=name, tags=["a", 1, None])
        assert runner.messages == []  # nothing leaves before COMMIT
        return message_id

    message_id = await register("ada")
    assert runner.messages == [Message(message_id, "send_welcome_mail", {"name": "ada", "tags": ["a", 1, None]})]
    assert await rows(adb) == []
    assert await outbox.relay_once() == 0
    assert len(runner.messages) == 1


async def test_a_rolled_back_unit_never_delivers(adb: uow.Database) -> None:
    runner = Recorder()
    outbox = Outbox(adb, runner, table=table, lease=0.01)

    @uow.unit_of_work(database=adb)
    async def fails() -> None:
        outbox.enqueue("never", x=1)
        raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        await fails()
    await asyncio.sleep(0.05)  # any lease is over: a relay would take a surviving row now
    assert await outbox.relay_once() == 0
    assert runner.messages == []
    assert await rows(adb) == []


async def test_a_rolled_back_savepoint_takes_its_message_with_it(adb: uow.Database) -> None:
    runner = Recorder()
    outbox = Outbox(adb, runner, table=table, lease=0.01)

    @uow.unit_of_work(database=adb, propagation="nested")
    async def inner(flush: bool) -> None:
        outbox.enqueue("inner", flushed=flush)
        if flush:
            await uow.current_session(adb).flush()
        raise ValueError("inner fails")

    async with uow.unit_of_work(database=adb):
        outer_id = outbox.enqueue("outer")
        for flush in (False, True):
            with pytest.raises(ValueError):
                await inner(flush)
    await asyncio.sleep(0.05)
    assert await outbox.relay_once() == 0
    assert runner.ids == [outer_id]
    assert await rows(adb) == []


def test_sync_units_commit_and_roll_back_their_messages(sdb: uow.Database) -> None:
    runner = SyncRecorder()
    outbox = Outbox(sdb, runner, table=table)

    @uow.with_services(ItemService, database=sdb)
    def register(items: ItemService, name: str, fail: bool = False) -> str:
        items.add(name)
        message_id = outbox.enqueue("welcome", name=name)
        if fail:
            raise RuntimeError("rolled back")
        return message_id

    kept = register("ada")
    with pytest.raises(RuntimeError):
        register("bob", fail=True)
    with uow.unit_of_work(database=sdb):
        outbox.enqueue("outer")
        with pytest.raises(KeyError), uow.unit_of_work(database=sdb, propagation="nested"):
            outbox.enqueue("in a savepoint")
            raise KeyError("savepoint rolled back")
    assert [(m.job, m.payload) for m in runner.messages] == [("welcome", {"name": "ada"}), ("outer", {})]
    assert runner.messages[0].id == kept
    assert sync_rows(sdb) == []


async def test_outside_a_unit_enqueue_raises(adb: uow.Database) -> None:
    outbox = Outbox(adb, Recorder(), table=table)
    with pytest.raises(uow.NoActiveUnitOfWork, match="outside a unit of work"):
        outbox.enqueue("job")
    with pytest.raises(uow.NoActiveUnitOfWork):
        await outbox.enqueue_async("job")


async def test_a_payload_that_is_not_json_fails_enqueue_not_the_relay(adb: uow.Database) -> None:
    runner = Recorder()
    outbox = Outbox(adb, runner, table=table)
    async with uow.unit_of_work(database=adb):
        with pytest.raises(PayloadError, match=r"enqueue\('job'\).*JSON") as raised:
            outbox.enqueue("job", when=object())
        assert isinstance(raised.value, uow.UowError)
        with pytest.raises(PayloadError, match="JSON"):
            outbox.enqueue("job", ratio=float("nan"))
        with pytest.raises(PayloadError, match="job name"):
            outbox.enqueue("")
        outbox.enqueue("job", fine=True)
    assert [m.payload for m in runner.messages] == [{"fine": True}]
    assert await rows(adb) == []


async def test_enqueue_async_opens_a_lazy_unit_and_the_message_commits_with_it(adb: uow.Database) -> None:
    runner = Recorder()
    outbox = Outbox(adb, runner, table=table)
    async with uow.unit_of_work(database=adb):
        message_id = await outbox.enqueue_async("job", n=1)
    assert runner.ids == [message_id]


# -- the relay: what the fast path did not deliver -------------------------------------------


async def test_a_runner_that_raised_is_retried_by_the_relay(
    adb: uow.Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="uow.outbox")
    runner = Refusing(failures=1)
    outbox = Outbox(adb, runner, table=table, backoff=0.0)
    async with uow.unit_of_work(database=adb):
        message_id = outbox.enqueue("job", n=1)
    assert runner.messages == []
    (row,) = await rows(adb)
    assert (row["status"], row["attempts"], row["claim"]) == ("pending", 1, None)
    assert "broker unreachable (call 1)" in row["last_error"]
    assert "builtins.ConnectionError" in row["last_error"]
    assert any("attempt 1 of 10" in r.getMessage() for r in caplog.records if r.name == "uow.outbox")
    assert await outbox.relay_once() == 1
    assert runner.messages == [Message(message_id, "job", {"n": 1}, attempts=1)]
    assert await rows(adb) == []


async def test_failed_deliveries_back_off_then_park_and_requeue_brings_them_back(adb: uow.Database) -> None:
    runner = Refusing(failures=3)
    outbox = Outbox(adb, runner, table=table, max_attempts=3, backoff=0.8, max_backoff=0.8, jitter=False)
    async with uow.unit_of_work(database=adb):
        message_id = outbox.enqueue("job", n=1)  # attempt 1 fails on the fast path
    (row,) = await rows(adb)
    waited = row["available_at"] - row["created_at"]
    # Backed off, not due at once (0.8 s: long enough that a busy machine reaches the next line in time).
    assert 0.6 < waited.total_seconds() < 2.0
    assert await outbox.relay_once() == 0  # not due yet: the runner is not called
    assert runner.calls == 1
    for attempt in (2, 3):
        await asyncio.sleep(0.85)
        assert await outbox.relay_once() == 0
        assert runner.calls == attempt
    assert await outbox.counts() == {"pending": 0, "failed": 1}
    (failed,) = await outbox.failed()
    assert (failed.id, failed.job, failed.payload, failed.attempts) == (message_id, "job", {"n": 1}, 3)
    assert "call 3" in (failed.last_error or "")
    await asyncio.sleep(0.85)
    assert await outbox.relay_once() == 0  # parked: the relay leaves it alone
    assert runner.calls == 3
    assert await outbox.requeue(["unknown"]) == 0
    assert await outbox.requeue([message_id]) == 1
    assert await outbox.relay_once() == 1
    assert [m.id for m in runner.messages] == [message_id]
    assert await outbox.counts() == {"pending": 0, "failed": 0}


async def test_a_killed_fast_path_is_delivered_by_the_relay_once_the_lease_ends(adb: uow.Database) -> None:
    # The committing process may die between COMMIT and delivery: with fast_path=False nothing
    # delivers after the commit, which is what a relay sees of a process killed there.
    committing = Outbox(adb, Recorder(), table=table, lease=0.3, fast_path=False)
    async with uow.unit_of_work(database=adb):
        message_id = committing.enqueue("job")
    runner = Recorder()
    relay = Outbox(adb, runner, table=table, lease=0.3)
    assert await relay.relay_once() == 0  # still the committing process's to deliver
    await asyncio.sleep(0.35)
    assert await relay.relay_once() == 1
    assert runner.ids == [message_id]


async def test_a_fast_path_whose_lease_ran_out_leaves_the_row_to_the_relay_that_took_it(adb: uow.Database) -> None:
    fast = Recorder()
    relayed = Recorder()
    outbox = Outbox(adb, fast, table=table, lease=0.1)
    relay = Outbox(adb, relayed, table=table, lease=10.0)

    async def relay_first() -> None:
        assert await relay.relay_once() == 1

    async with uow.unit_of_work(database=adb):
        uow.on_commit(relay_first, database=adb)  # hooks run in order: the relay gets there first
        message_id = outbox.enqueue("job")
        await asyncio.sleep(0.15)  # a slow unit: the row's lease is over when it commits
    assert relayed.ids == [message_id]
    assert fast.messages == []


async def test_a_fast_path_with_little_lease_left_takes_it_again_first(adb: uow.Database) -> None:
    runner = Recorder()
    relay = Outbox(adb, Recorder(), table=table, lease=0.2)
    seen: list[dict[str, Any]] = []

    class Slow:
        async def deliver(self, message: Message, /) -> None:
            seen.extend(await rows(adb))
            assert await relay.relay_once() == 0  # the renewed lease keeps the relay off
            await runner.deliver(message)

    outbox = Outbox(adb, Slow(), table=table, lease=0.2)
    async with uow.unit_of_work(database=adb):
        message_id = outbox.enqueue("job")
        await asyncio.sleep(0.15)
    assert runner.ids == [message_id]
    (row,) = seen
    assert (row["available_at"] - row["created_at"]).total_seconds() > 0.3


@pytest.mark.parametrize("relays", [4])
async def test_parallel_relays_deliver_each_row_once(adb: uow.Database, backend: Backend, relays: int) -> None:
    count = 2000 if backend.name != "sqlite" else 200
    writer = Outbox(adb, Recorder(), table=table, fast_path=False, lease=0.001)
    async with uow.unit_of_work(database=adb):
        ids = {writer.enqueue("job", n=n) for n in range(count)}
    await asyncio.sleep(0.01)
    runner = Recorder()
    outboxes = [Outbox(adb, runner, table=table, batch_size=50, lease=60.0) for _ in range(relays)]

    async def drain(outbox: Outbox) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if await outbox.relay_once() == 0:
                    if (await outbox.counts())["pending"] == 0:
                        return
                    await asyncio.sleep(0.01)  # the rest is claimed by the other relays
            except Exception as error:
                # SQLite has one writer: a claim can meet "database is locked" and is simply tried again.
                assert backend.name == "sqlite" and uow.is_transient(error), error
        raise AssertionError("relays did not drain the outbox within 60 s")

    await asyncio.wait_for(asyncio.gather(*(drain(o) for o in outboxes)), timeout=90)
    assert len(runner.ids) == count
    assert set(runner.ids) == ids
    assert await rows(adb) == []


async def test_the_relay_loop_starts_and_stops(adb: uow.Database) -> None:
    writer = Outbox(adb, Recorder(), table=table, fast_path=False, lease=0.001)
    async with uow.unit_of_work(database=adb):
        ids = [writer.enqueue("job", n=n) for n in range(3)]
    runner = Recorder()
    relay = Outbox(adb, runner, table=table)
    relay.start(interval=0.02)
    with pytest.raises(uow.ConfigurationError, match="running already"):
        relay.start()

    async def all_delivered() -> None:
        while len(runner.ids) < 3:
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(all_delivered(), timeout=10)
    finally:
        await relay.stop()
    await relay.stop()
    assert sorted(runner.ids) == sorted(ids)


def test_relay_on_a_sync_database(sdb: uow.Database) -> None:
    writer = Outbox(sdb, SyncRecorder(), table=table, fast_path=False, lease=0.001)
    with uow.unit_of_work(database=sdb):
        message_id = writer.enqueue("job", n=1)
    runner = SyncRecorder()
    relay = Outbox(sdb, runner, table=table)
    time.sleep(0.01)
    assert asyncio.run(relay.relay_once()) == 1
    assert [m.id for m in runner.messages] == [message_id]
    assert sync_rows(sdb) == []


# -- set-up ----------------------------------------------------------------------------------


async def test_create_table_makes_the_default_table(backend: Backend) -> None:
    database = await make_async_db(backend)
    try:
        outbox = Outbox(database, Recorder())
        assert outbox.table.name == "uow_outbox"
        await outbox.create_table()
        await outbox.create_table()  # once there, left alone
        async with uow.unit_of_work(database=database):
            outbox.enqueue("job")
        assert len(outbox.runner.messages) == 1  # type: ignore[attr-defined]
    finally:
        engine = database.engine
        assert isinstance(engine, AsyncEngine)
        async with engine.begin() as connection:
            await connection.execute(text("DROP TABLE uow_outbox"))
        await finish_async_db(database, backend)


def test_the_table_sits_on_the_users_metadata() -> None:
    own = MetaData()
    mine = outbox_table(own, "jobs_outbox", schema=None)
    assert own.tables["jobs_outbox"] is mine
    assert {index.name for index in mine.indexes} == {"ix_jobs_outbox_due"}


def test_bad_configuration_is_refused_at_construction(sqlite_db: uow.Database) -> None:
    with pytest.raises(uow.ConfigurationError, match="runner is async but the Database is sync"):
        Outbox(sqlite_db, Recorder())
    with pytest.raises(uow.ConfigurationError, match="no deliver"):
        Outbox(sqlite_db, object())  # type: ignore[arg-type]
    with pytest.raises(uow.ConfigurationError, match="needs a uow.Database"):
        Outbox("sqlite://", SyncRecorder())  # type: ignore[arg-type]
    with pytest.raises(uow.ConfigurationError, match="lacks the columns"):
        from sqlalchemy import Column, Integer, Table

        Outbox(sqlite_db, SyncRecorder(), table=Table("t", MetaData(), Column("id", Integer, primary_key=True)))
    with pytest.raises(uow.ConfigurationError, match="max_attempts"):
        Outbox(sqlite_db, SyncRecorder(), max_attempts=0)
    with pytest.raises(uow.ConfigurationError, match=r"Outbox\(backoff=-1"):
        Outbox(sqlite_db, SyncRecorder(), backoff=-1)
    with pytest.raises(uow.ConfigurationError, match="needs a running event loop"):
        Outbox(sqlite_db, SyncRecorder()).start()
    unbound = uow.Database(session_factory=sessionmaker())
    with pytest.raises(uow.ConfigurationError, match="session factory has no bind"):
        asyncio.run(Outbox(unbound, SyncRecorder()).create_table())


async def test_logs_name_the_message_not_the_payload(adb: uow.Database, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="uow.outbox")
    outbox = Outbox(adb, Refusing(failures=1), table=table, backoff=0.0)
    async with uow.unit_of_work(database=adb):
        outbox.enqueue("job", secret="hunter2")
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "ConnectionError" in logged
    assert "hunter2" not in logged
    assert "broker unreachable" not in logged


async def test_count_query_sees_only_this_outbox(adb: uow.Database) -> None:
    one = Outbox(adb, Recorder(), table=table, fast_path=False, name="one")
    two = Outbox(adb, Recorder(), table=table, fast_path=False, name="two", lease=0.001)
    async with uow.unit_of_work(database=adb):
        one.enqueue("a")
        two.enqueue("b")
    assert await one.counts() == {"pending": 1, "failed": 0}
    await asyncio.sleep(0.01)
    assert await one.relay_once() == 0
    assert await two.relay_once() == 1
    engine = adb.engine
    assert isinstance(engine, AsyncEngine)
    async with engine.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(table)) == 1


# -- test support ----------------------------------------------------------------------------


def test_the_plugin_captures_committed_messages_and_delivers_them_on_demand(
    sdb: uow.Database, uow_outbox_messages: CapturedMessages
) -> None:
    runner = SyncRecorder()
    outbox = Outbox(sdb, runner, table=table)
    with uow.unit_of_work(database=sdb):
        kept = outbox.enqueue("welcome", n=1)
    with pytest.raises(RuntimeError), uow.unit_of_work(database=sdb):
        outbox.enqueue("rolled back")
        raise RuntimeError("the unit fails")
    assert uow_outbox_messages == [Message(kept, "welcome", {"n": 1})]
    assert runner.messages == []
    with pytest.raises(uow.ConfigurationError, match="deliver_async"):
        uow_outbox_messages.deliver(Recorder())
    uow_outbox_messages.deliver(runner)
    assert [m.id for m in runner.messages] == [kept]
    assert uow_outbox_messages == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
async def test_capture_inside_the_rolled_back_test_transaction(adb: uow.Database) -> None:
    runner = Recorder()
    outbox = Outbox(adb, runner, table=table)
    async with bound_to_transaction(adb):
        with capture_messages() as messages:

            @uow.unit_of_work(database=adb, propagation="nested")
            async def fails() -> None:
                outbox.enqueue("in a rolled-back savepoint")
                raise ValueError("savepoint")

            async with uow.unit_of_work(database=adb):
                message_id = outbox.enqueue("job", n=2)
                with pytest.raises(ValueError):
                    await fails()
        assert [m.id for m in messages] == [message_id]
        await messages.deliver_async(runner)
    assert runner.ids == [message_id]
    assert await rows(adb) == []  # the test's transaction took the row with it


def test_a_session_the_caller_owns_delivers_when_the_caller_commits(sdb: uow.Database) -> None:
    runner = SyncRecorder()
    outbox = Outbox(sdb, runner, table=table)

    @uow.unit_of_work(database=sdb)
    def register(session: Session) -> str:
        return outbox.enqueue("job", n=1)

    factory = sdb.session_factory
    assert isinstance(factory, sessionmaker)
    with factory() as session:
        message_id = register(session=session)
        assert runner.messages == []
        session.commit()
    with factory() as session:
        register(session=session)
        session.rollback()
    assert [m.id for m in runner.messages] == [message_id]
    assert sync_rows(sdb) == []


async def test_a_requires_new_unit_delivers_on_its_own_commit(adb: uow.Database) -> None:
    runner = Recorder()
    outbox = Outbox(adb, runner, table=table)

    @uow.unit_of_work(database=adb, propagation="requires_new")
    async def audit() -> str:
        return outbox.enqueue("audit")

    with pytest.raises(RuntimeError):
        async with uow.unit_of_work(database=adb):
            outbox.enqueue("rolled back with the outer unit")
            audit_id = await audit()
            assert runner.ids == [audit_id]  # delivered when the inner unit committed
            raise RuntimeError("the outer unit fails")
    assert runner.ids == [audit_id]


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"], indirect=True)
def test_relays_in_parallel_threads_deliver_each_row_once(sdb: uow.Database) -> None:
    count, relays = 2000, 4
    writer = Outbox(sdb, SyncRecorder(), table=table, fast_path=False, lease=0.001)
    with uow.unit_of_work(database=sdb):
        ids = {writer.enqueue("job", n=n) for n in range(count)}
    time.sleep(0.01)
    delivered: list[str] = []
    lock = threading.Lock()

    class Shared:
        def deliver(self, message: Message, /) -> None:
            with lock:
                delivered.append(message.id)

    def drain() -> None:
        outbox = Outbox(sdb, Shared(), table=table, batch_size=25)

        async def loop() -> None:
            while await outbox.relay_once() or (await outbox.counts())["pending"]:
                await asyncio.sleep(0)

        asyncio.run(asyncio.wait_for(loop(), timeout=90))

    threads = [threading.Thread(target=drain) for _ in range(relays)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert len(delivered) == count
    assert set(delivered) == ids
    assert sync_rows(sdb) == []
