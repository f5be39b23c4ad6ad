"""The transactional outbox: a job is handed to its runner if and only if the unit that enqueued it committed.

Life of a message
-----------------
1. ``outbox.enqueue(job, **payload)`` inside a unit adds one row to the outbox table through
   the unit's session. The row is *pre-claimed* by the enqueuing process: its ``claim`` is a
   fresh token and ``available_at`` lies one ``lease`` ahead, so no relay takes it while the
   committing process is still about to deliver it. It commits or rolls back with the unit
   (and with a rolled-back ``nested`` savepoint), because it is just another row of the unit.
2. Fast path: an ``on_commit`` hook (dropped with the unit or savepoint, like any hook) hands
   the message to the runner at once, then deletes the row in a short transaction of its own.
   If the lease ran low meanwhile it first takes it again, so a relay cannot deliver it too.
3. Relay: ``relay_once()`` claims due rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL and
   MariaDB/MySQL, a conditional UPDATE everywhere, so two relays never claim one row) in a
   short transaction, delivers them outside any transaction, then deletes the delivered rows
   and reschedules the failed ones with backoff and jitter in another short transaction.
   After ``max_attempts`` failures a row is parked as ``failed`` with its last error until
   ``requeue()``. A process killed after COMMIT leaves its rows pre-claimed: the relay takes
   them when the lease runs out.

Delivery is therefore at-least-once: a process that dies after the runner accepted a job but
before the row was deleted delivers it again. The row id is the runner's job key, so a runner
that deduplicates by key makes a repeat harmless.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import inspect
import itertools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import Column, DateTime, Index, Integer, MetaData, String, Table, Text, delete, func, select, update
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Session, registry

from uow import ConfigurationError, Database, Retry, UowError, current_session, current_session_async, on_commit
from uow import unit_of_work as _unit_of_work

__all__ = [
    "CapturedMessages",
    "FailedMessage",
    "Message",
    "Outbox",
    "PayloadError",
    "Runner",
    "capture_messages",
    "outbox_table",
]

logger = logging.getLogger("uow.outbox")

T = TypeVar("T")

PENDING = "pending"
FAILED = "failed"
_DEFAULT_TABLE = "uow_outbox"
_REQUIRED_COLUMNS = frozenset(
    {"id", "outbox", "job", "payload", "status", "attempts", "available_at", "claim", "created_at", "last_error"}
)
# MySQL/MariaDB keep seconds only unless told otherwise; backoff and leases need finer times.
_Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
_Payload = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
_ERROR_LIMIT = 2000
# The outbox's own short transactions: a deadlock or "database is locked" is met again a moment later.
_DATABASE_RETRY = Retry(attempts=8, backoff=0.02, max_backoff=1.0)
_IN_CHUNK = 500  # ids per IN (...) list when deleting many delivered rows at once


class PayloadError(UowError, TypeError):
    """``enqueue`` was given a job name or payload that cannot be stored (not JSON, too long a name)."""


@dataclass(frozen=True)
class Message:
    """One enqueued job as the runner receives it: ``id`` is the job key to deduplicate on."""

    id: str
    job: str
    payload: dict[str, Any]
    attempts: int = 0


@dataclass(frozen=True)
class FailedMessage:
    """A message parked after ``max_attempts`` failed deliveries, with the last error."""

    id: str
    job: str
    payload: dict[str, Any]
    attempts: int
    last_error: str | None
    created_at: dt.datetime


class Runner(Protocol):
    """Hands a message to a job runner: ``deliver`` is a plain or an ``async`` method.

    It returns once the runner accepted the job; raising means "not delivered" (the outbox
    retries later). The runners of `uow.outbox` use ``message.id`` as the job's key. A runner
    may also have ``check(job, payload)``, called by ``enqueue`` to refuse what it could never deliver.
    """

    def deliver(self, message: Message, /) -> Awaitable[None] | None:
        """Hand `message` to the job queue; return (or finish awaiting) once it is accepted, raise otherwise."""
        ...


class CapturedMessages(list[Message]):
    """The messages of units committed inside `capture_messages`, in commit order, not delivered."""

    def deliver(self, runner: Runner) -> None:
        """Hand the captured messages to a sync `runner` now, in order, and forget them."""
        if inspect.iscoroutinefunction(getattr(runner, "deliver", None)):
            raise ConfigurationError(f"{type(runner).__name__} is async: use 'await messages.deliver_async(runner)'")
        for message in self._take():
            runner.deliver(message)

    async def deliver_async(self, runner: Runner) -> None:
        """Hand the captured messages to `runner` (sync or async) now, in order, and forget them."""
        for message in self._take():
            result = runner.deliver(message)
            if inspect.isawaitable(result):
                await result

    def _take(self) -> list[Message]:
        messages = list(self)
        self.clear()
        return messages


_capture: contextvars.ContextVar[CapturedMessages | None] = contextvars.ContextVar("uow_outbox_capture", default=None)


@contextmanager
def capture_messages() -> Generator[CapturedMessages, None, None]:
    """Inside the block, a committed unit's messages are collected instead of delivered (rows are still written).

    Messages of units or savepoints that roll back are never collected. The capture follows
    the context, like `uow.testing.capture_on_commit`.
    """
    captured = CapturedMessages()
    token = _capture.set(captured)
    try:
        yield captured
    finally:
        _capture.reset(token)


def outbox_table(metadata: MetaData, name: str = _DEFAULT_TABLE, *, schema: str | None = None) -> Table:
    """The outbox table on `metadata` (your own, so Alembic autogenerate sees it); pass it to ``Outbox(table=...)``."""
    return Table(
        name,
        metadata,
        Column("id", String(32), primary_key=True),
        Column("outbox", String(64), nullable=False),
        Column("job", String(255), nullable=False),
        Column("payload", _Payload, nullable=False),
        Column("status", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("available_at", _Timestamp, nullable=False),
        Column("claim", String(32), nullable=True),
        Column("created_at", _Timestamp, nullable=False),
        Column("last_error", Text, nullable=True),
        Index(f"ix_{name}_due", "outbox", "status", "available_at"),
        schema=schema,
    )


_default_metadata = MetaData()
_mapped_rows: dict[Table, type[Any]] = {}


def _row_class(table: Table) -> type[Any]:
    """A class mapped to `table`, so a row can be added to a sync or an async session without awaiting."""
    cls = _mapped_rows.get(table)
    if cls is None:
        cls = type("OutboxRow", (), {"__module__": __name__})
        registry().map_imperatively(cls, table)
        _mapped_rows[table] = cls
    return cls


def _now() -> dt.datetime:
    # Naive UTC: every backend stores it the same way (MariaDB and SQLite have no zone).
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _always(_: BaseException) -> bool:
    return True


def _error_text(error: BaseException) -> str:
    return f"{type(error).__module__}.{type(error).__qualname__}: {error}"[:_ERROR_LIMIT]


def _error_class(error: BaseException) -> str:
    """What failed, for a log line: class names only (a driver's message can quote bound values)."""
    orig = getattr(error, "orig", None)
    names = [type(error).__qualname__] + ([type(orig).__qualname__] if isinstance(orig, BaseException) else [])
    return " / ".join(names)


class Outbox:
    """Enqueue jobs inside a unit; they reach `runner` only once the unit committed, even if the process dies.

    ``enqueue`` writes a row through the unit's session; after COMMIT the committing process
    delivers it at once, and ``relay_once()`` / ``start()`` deliver what that did not (crash,
    runner down, runner raised), with ``max_attempts`` tries spaced by ``backoff`` (doubling up
    to ``max_backoff``, with jitter) before a row is parked as failed. ``lease`` is how long a
    claimed row is left to whoever claimed it; ``name`` keeps several outboxes (say, one per
    runner) apart in one table.
    """

    def __init__(
        self,
        database: Database,
        runner: Runner,
        *,
        table: Table | None = None,
        name: str = "default",
        max_attempts: int = 10,
        backoff: float = 1.0,
        max_backoff: float = 300.0,
        jitter: bool = True,
        lease: float = 60.0,
        batch_size: int = 100,
        fast_path: bool = True,
    ) -> None:
        if not isinstance(database, Database):
            raise ConfigurationError(f"Outbox(database=...) needs a uow.Database, got {type(database).__name__}")
        deliver = getattr(runner, "deliver", None)
        if not callable(deliver):
            raise ConfigurationError(
                f"Outbox(runner=...): {type(runner).__name__} has no deliver(message) method; "
                "use SaqRunner, ArqRunner, CeleryRunner or a class of your own with one"
            )
        self.runner_is_async = inspect.iscoroutinefunction(deliver)
        if self.runner_is_async and not database.is_async:
            raise ConfigurationError(
                f"Outbox({database!r}, runner={type(runner).__name__}): the runner is async but the Database "
                "is sync, so a sync unit could not deliver after its commit; use an async Database "
                "(e.g. sqlite+aiosqlite, postgresql+asyncpg) or a sync runner such as CeleryRunner"
            )
        if table is None:
            table = _default_metadata.tables.get(_DEFAULT_TABLE)
            if table is None:
                table = outbox_table(_default_metadata)
        missing = _REQUIRED_COLUMNS - set(table.c.keys())
        if missing:
            raise ConfigurationError(
                f"Outbox(table={table.name!r}): the table lacks the columns {sorted(missing)}; "
                "make it with uow.outbox.outbox_table(metadata)"
            )
        if not 1 <= len(name) <= 64:
            raise ConfigurationError(f"Outbox(name={name!r}): the name must be 1 to 64 characters")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ConfigurationError(f"Outbox(max_attempts={max_attempts!r}): needs a whole number of at least 1")
        if backoff < 0 or max_backoff < 0:
            raise ConfigurationError(
                f"Outbox(backoff={backoff!r}, max_backoff={max_backoff!r}): delays cannot be negative"
            )
        if lease <= 0 or batch_size < 1:
            raise ConfigurationError(
                f"Outbox(lease={lease!r}, batch_size={batch_size!r}): both must be positive (seconds, rows)"
            )
        self.database = database
        self.runner = runner
        self.table = table
        self.name = name
        self.max_attempts = max_attempts
        self.lease = dt.timedelta(seconds=lease)
        self.batch_size = batch_size
        self.fast_path = fast_path
        self._backoff = Retry(
            attempts=max_attempts, backoff=backoff, max_backoff=max_backoff, jitter=jitter, retry_on=_always
        )
        self._row = _row_class(table)
        check: Any = getattr(runner, "check", None)
        self._check: Callable[[str, dict[str, Any]], object] | None = check if callable(check) else None
        self._relay_task: asyncio.Task[None] | None = None
        engine = database.engine
        dialect = engine.dialect.name if engine is not None else ""
        self._isolation_level = "READ COMMITTED" if dialect in ("mysql", "mariadb") else None

    def __repr__(self) -> str:
        return (
            f"<Outbox {self.name!r} table={self.table.name!r} runner={type(self.runner).__name__} on {self.database!r}>"
        )

    # -- enqueueing (inside a unit) ----------------------------------------------------------

    def enqueue(self, job: str, /, **payload: Any) -> str:
        """Write `job` with its JSON `payload` into the active unit; returns the message id (the job key).

        The runner gets it after the unit commits; never if it rolls back. Outside a unit:
        `NoActiveUnitOfWork`; a payload that is not JSON: `PayloadError`, here and now.
        """
        return self._add(current_session(self.database), job, payload)

    async def enqueue_async(self, job: str, /, **payload: Any) -> str:
        """`enqueue` for an async request unit whose session may not be open yet."""
        return self._add(await current_session_async(self.database), job, payload)

    def _add(self, session: Any, job: str, payload: dict[str, Any]) -> str:
        text = _dumps(job, payload)
        if self._check is not None:
            self._check(job, payload)
        message_id, claim, now = uuid.uuid4().hex, uuid.uuid4().hex, _now()
        deadline = now + self.lease
        session.add(
            self._row(
                id=message_id,
                outbox=self.name,
                job=job,
                payload=text,
                status=PENDING,
                attempts=0,
                available_at=deadline,
                claim=claim,
                created_at=now,
                last_error=None,
            )
        )
        captured = _capture.get()
        if captured is not None:
            message = Message(message_id, job, json.loads(text))

            def capture() -> None:
                captured.append(message)

            on_commit(capture, self.database)
        elif self.fast_path:
            message = Message(message_id, job, json.loads(text))
            if self.database.is_async:

                async def deliver_now() -> None:
                    await self._deliver_after_commit(message, claim, deadline)

                on_commit(deliver_now, self.database)
            else:

                def deliver_now_sync() -> None:
                    self._deliver_after_commit_sync(message, claim, deadline)

                on_commit(deliver_now_sync, self.database)
        return message_id

    # -- the fast path (an on_commit hook of the enqueuing unit) -----------------------------

    def _lease_runs_low(self, deadline: dt.datetime) -> bool:
        return _now() >= deadline - self.lease / 2

    def _deliver_after_commit_sync(self, message: Message, claim: str, deadline: dt.datetime) -> None:
        try:
            if self._lease_runs_low(deadline) and not self._own(self._renew, message.id, claim):
                return  # a relay took it over
            self.runner.deliver(message)
        except Exception as error:
            self._after_failures_sync([(message, claim, error)])
            return
        self._after_delivery_sync([message.id])

    async def _deliver_after_commit(self, message: Message, claim: str, deadline: dt.datetime) -> None:
        try:
            if self._lease_runs_low(deadline) and not await self._own_async(self._renew, message.id, claim):
                return  # a relay took it over
            await self._hand_over(message)
        except Exception as error:
            await self._after_failures([(message, claim, error)])
            return
        await self._after_delivery([message.id])

    def _after_delivery_sync(self, ids: list[str]) -> None:
        try:
            self._own(self._delete, ids)
        except Exception as error:
            # The jobs went out: the rows are delivered again once their lease ends (at-least-once).
            logger.error(
                "outbox %s: could not delete %d delivered row(s): %s", self.name, len(ids), _error_class(error)
            )

    async def _after_delivery(self, ids: list[str]) -> None:
        try:
            await self._own_async(self._delete, ids)
        except Exception as error:
            logger.error(
                "outbox %s: could not delete %d delivered row(s): %s", self.name, len(ids), _error_class(error)
            )

    def _after_failures_sync(self, failures: list[tuple[Message, str, BaseException]]) -> None:
        self._log_failures(failures)
        try:
            self._own(self._reschedule, failures)
        except Exception as error:
            # The rows stay claimed until their lease ends; the relay tries them then.
            logger.error("outbox %s: could not record a failed delivery: %s", self.name, _error_class(error))

    async def _after_failures(self, failures: list[tuple[Message, str, BaseException]]) -> None:
        self._log_failures(failures)
        try:
            await self._own_async(self._reschedule, failures)
        except Exception as error:
            logger.error("outbox %s: could not record a failed delivery: %s", self.name, _error_class(error))

    def _log_failures(self, failures: list[tuple[Message, str, BaseException]]) -> None:
        for message, _, error in failures:
            attempt = message.attempts + 1
            parked = attempt >= self.max_attempts
            logger.log(
                logging.ERROR if parked else logging.WARNING,
                "outbox %s: delivering %s (job %s) failed, attempt %d of %d%s: %s",
                self.name,
                message.id,
                message.job,
                attempt,
                self.max_attempts,
                "; parked as failed" if parked else "",
                _error_class(error),
            )

    async def _hand_over(self, message: Message) -> None:
        if self.runner_is_async:
            await self.runner.deliver(message)  # type: ignore[misc]
        else:
            await asyncio.to_thread(self.runner.deliver, message)

    # -- the relay -------------------------------------------------------------------------

    async def relay_once(self) -> int:
        """Deliver up to ``batch_size`` due rows; returns how many were delivered."""
        claim = uuid.uuid4().hex
        messages = await self._own_async(self._claim_due, claim)
        delivered: list[str] = []
        failures: list[tuple[Message, str, BaseException]] = []
        for message in messages:
            try:
                await self._hand_over(message)
            except Exception as error:
                failures.append((message, claim, error))
            else:
                delivered.append(message.id)
        if delivered:
            await self._after_delivery(delivered)
        if failures:
            await self._after_failures(failures)
        return len(delivered)

    async def run(self, *, interval: float = 1.0) -> None:
        """Relay until cancelled: at once again after a full batch, else every `interval` seconds."""
        while True:
            try:
                delivered = await self.relay_once()
            except Exception as error:
                # The database may be away for a while: keep going, the rows wait for us.
                logger.error("outbox %s: relay pass failed: %s", self.name, _error_class(error))
                delivered = 0
            if delivered < self.batch_size:
                await asyncio.sleep(interval)

    def start(self, *, interval: float = 1.0) -> None:
        """Run the relay as a task of the running event loop (an app's or a worker's start-up hook)."""
        if self._relay_task is not None and not self._relay_task.done():
            raise ConfigurationError(f"{self!r}: the relay is running already; call 'await outbox.stop()' first")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigurationError(
                f"{self!r}: start() needs a running event loop; call it from an async start-up hook "
                "(an app's lifespan, a SAQ/arq worker's startup), or run 'python -m uow.outbox relay'"
            ) from None
        self._relay_task = loop.create_task(self.run(interval=interval))

    async def stop(self) -> None:
        """Stop the relay task `start` began (a pass in progress is cancelled; its rows wait for their lease)."""
        task, self._relay_task = self._relay_task, None
        if task is None:
            return
        task.cancel()
        # gather hands back the task's own CancelledError, and still raises when stop() itself is cancelled.
        await asyncio.gather(task, return_exceptions=True)

    # -- inspecting and repairing ------------------------------------------------------------

    async def failed(self, *, limit: int = 100) -> list[FailedMessage]:
        """The messages parked after ``max_attempts`` failures, oldest first."""
        return await self._own_async(self._failed, limit)

    async def requeue(self, ids: Iterable[str] | None = None) -> int:
        """Put failed messages (those in `ids`, else all) back to be delivered now; returns how many."""
        return await self._own_async(self._requeue, None if ids is None else list(ids))

    async def counts(self) -> dict[str, int]:
        """Rows of this outbox by status (``pending``, ``failed``): delivered rows are deleted."""
        return await self._own_async(self._counts)

    async def create_table(self) -> None:
        """Create the outbox table if it is missing (or put it on your MetaData with `outbox_table`)."""
        table = self.table
        if self.database.engine is None:
            raise ConfigurationError(
                f"{self!r}: create_table() needs the Database's engine, and its session factory has no bind; "
                "create the table with your migrations (outbox_table(metadata)) instead"
            )
        if self.database.is_async:
            async with self.database.engine.begin() as connection:  # type: ignore[union-attr]
                await connection.run_sync(lambda sync: table.create(sync, checkfirst=True))
        else:
            await asyncio.to_thread(self._create_table_sync)

    def _create_table_sync(self) -> None:
        with self.database.engine.begin() as connection:  # type: ignore[union-attr]
            self.table.create(connection, checkfirst=True)

    # -- the short transactions (sync functions of a Session, run sync or through run_sync) --

    def _own(self, work: Callable[..., T], *args: Any) -> T:
        for attempt in itertools.count(1):
            try:
                with self._short_transaction() as session:
                    return work(session, *args)
            except Exception as error:
                if not _DATABASE_RETRY.should_retry(error, attempt):
                    raise
            time.sleep(_DATABASE_RETRY.delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _own_async(self, work: Callable[..., T], *args: Any) -> T:
        if not self.database.is_async:
            return await asyncio.to_thread(self._own, work, *args)
        for attempt in itertools.count(1):
            try:
                async with self._short_transaction() as session:
                    result: T = await session.run_sync(work, *args)
                    return result
            except Exception as error:
                if not _DATABASE_RETRY.should_retry(error, attempt):
                    raise
            await asyncio.sleep(_DATABASE_RETRY.delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _short_transaction(self) -> Any:
        # Deleting a delivered row must not be lost to a deadlock (the row would go out again), so these
        # transactions are retried; on MySQL/MariaDB READ COMMITTED also spares them InnoDB's gap locks.
        return _unit_of_work(database=self.database, propagation="requires_new", isolation_level=self._isolation_level)

    def _claim_due(self, session: Session, claim: str) -> list[Message]:
        t, now = self.table, _now()
        due = (t.c.outbox == self.name, t.c.status == PENDING, t.c.available_at <= now)
        query = (
            select(t.c.id, t.c.job, t.c.payload, t.c.attempts)
            .where(*due)
            .order_by(t.c.available_at)
            .limit(self.batch_size)
            # Ignored on SQLite, whose single writer the conditional UPDATE below relies on.
            .with_for_update(skip_locked=True)
        )
        rows = session.execute(query).all()
        if not rows:
            return []
        ids = [row.id for row in rows]
        taken = session.execute(
            update(t).where(t.c.id.in_(ids), *due).values(claim=claim, available_at=now + self.lease)
        ).rowcount  # type: ignore[attr-defined]
        if taken != len(rows):
            claimed = set(session.scalars(select(t.c.id).where(t.c.id.in_(ids), t.c.claim == claim)))
            rows = [row for row in rows if row.id in claimed]
        return [Message(row.id, row.job, json.loads(row.payload), row.attempts) for row in rows]

    def _renew(self, session: Session, message_id: str, claim: str) -> bool:
        t = self.table
        result = session.execute(
            update(t)
            .where(t.c.id == message_id, t.c.claim == claim, t.c.status == PENDING)
            .values(available_at=_now() + self.lease)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def _delete(self, session: Session, ids: Sequence[str]) -> None:
        # By id alone: once a job went out, nobody should deliver that row again.
        for start in range(0, len(ids), _IN_CHUNK):
            session.execute(delete(self.table).where(self.table.c.id.in_(ids[start : start + _IN_CHUNK])))

    def _reschedule(self, session: Session, failures: Sequence[tuple[Message, str, BaseException]]) -> None:
        t, now = self.table, _now()
        for message, claim, error in failures:
            attempts = message.attempts + 1
            parked = attempts >= self.max_attempts
            session.execute(
                update(t)
                .where(t.c.id == message.id, t.c.claim == claim)
                .values(
                    attempts=attempts,
                    status=FAILED if parked else PENDING,
                    claim=None,
                    last_error=_error_text(error),
                    available_at=now + dt.timedelta(seconds=self._backoff.delay(attempts)),
                )
            )

    def _failed(self, session: Session, limit: int) -> list[FailedMessage]:
        t = self.table
        rows = session.execute(
            select(t).where(t.c.outbox == self.name, t.c.status == FAILED).order_by(t.c.created_at).limit(limit)
        ).all()
        return [
            FailedMessage(row.id, row.job, json.loads(row.payload), row.attempts, row.last_error, row.created_at)
            for row in rows
        ]

    def _requeue(self, session: Session, ids: list[str] | None) -> int:
        t = self.table
        query = update(t).where(t.c.outbox == self.name, t.c.status == FAILED)
        if ids is not None:
            if not ids:
                return 0
            query = query.where(t.c.id.in_(ids))
        result = session.execute(query.values(status=PENDING, attempts=0, claim=None, available_at=_now()))
        return int(result.rowcount)  # type: ignore[attr-defined]

    def _counts(self, session: Session) -> dict[str, int]:
        t = self.table
        rows = session.execute(
            select(t.c.status, func.count()).where(t.c.outbox == self.name).group_by(t.c.status)
        ).all()
        counts = {PENDING: 0, FAILED: 0}
        counts.update({row[0]: int(row[1]) for row in rows})
        return counts


def _dumps(job: str, payload: dict[str, Any]) -> str:
    if not isinstance(job, str) or not 1 <= len(job) <= 255:
        raise PayloadError(f"outbox.enqueue({job!r}): the job name must be a str of 1 to 255 characters")
    try:
        return json.dumps(payload, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise PayloadError(
            f"outbox.enqueue({job!r}): the payload cannot be stored as JSON ({error}); pass str, int, float, "
            "bool, None, and lists and dicts of them (ids rather than ORM objects, ISO strings rather than datetimes)"
        ) from None
