"""Deadlines for units of work (``timeout=``): who enforces them, and what a unit that ran out of time raises.

A unit declared with ``timeout=`` gets a `Deadline` when it is entered. The deadline of the innermost
unit with a timeout is the session's (``session.info``), and every layer reads it from there:

- before each statement (a ``before_cursor_execute`` listener on the unit's connection): a unit out of
  time runs no further statement; on MariaDB the statement itself is limited to the time left
  (``SET STATEMENT max_statement_time=... FOR``), on MySQL a SELECT gets ``MAX_EXECUTION_TIME``;
- when the owning unit's transaction begins, on PostgreSQL: ``SET LOCAL statement_timeout`` and
  ``SET LOCAL idle_in_transaction_session_timeout`` (the time left), so the server ends what the client
  cannot (a statement it is stuck in, a session left idle in the transaction);
- at the deadline (an alarm): a running statement is interrupted where the driver allows it from
  another thread (sqlite3 ``interrupt()``, psycopg ``cancel()``), and an async unit's task is cancelled,
  the way ``asyncio.timeout`` does it; the cancellation becomes `UnitTimeoutError`;
- at the end, before COMMIT: a unit past its deadline rolls back and raises `UnitTimeoutError`.

A unit that joins another cannot extend the deadline: its own is the earlier of its timeout and the
deadline already running, and it is the session's only while the joiner runs.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from uow.errors import ConfigurationError, UnitTimeoutError

if TYPE_CHECKING:
    from uow._stack import ActiveUnit, UnitSpec

__all__ = [
    "Deadline",
    "begin_deadline",
    "parse_timeout",
    "start_deadline",
    "watch_owner_async",
    "watch_owner_sync",
    "watch_session",
]

_DEADLINE_KEY = "uow_deadline"  # session.info: the deadline in force on that session, or absent
_WATCHED_KEY = "uow_deadline_watched"  # session.info: the connections whose statements are checked
_CANCEL_GRACE = 0.1  # seconds an interrupted async statement has to fail before its task is cancelled
_STATEMENTS = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "REPLACE")


def parse_timeout(value: object, *, label: str) -> float | None:
    """`value` as seconds, or a `ConfigurationError` (decoration time) saying what a timeout must be."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(
            f"{label}: timeout= needs a number of seconds (int or float), got {type(value).__name__} {value!r}"
        )
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigurationError(
            f"{label}: timeout= must be a positive, finite number of seconds, got {value!r}; "
            "leave it unset (None) for no deadline"
        )
    return seconds


class Deadline:
    """The time a unit must be done by (``time.monotonic()``), and the alarm that enforces it."""

    __slots__ = (
        "_handle",
        "_lock",
        "_task",
        "at",
        "done",
        "expired",
        "info",
        "label",
        "limited",
        "owner",
        "passive",
        "previous",
        "seconds",
        "started",
    )

    def __init__(self, label: str, seconds: float, *, owner: bool) -> None:
        self.label = label
        self.seconds = seconds
        self.started = time.monotonic()
        self.at = self.started + seconds
        self.owner = owner  # the unit that began the transaction: the database-side limits are its own
        self.previous: Deadline | None = None
        self.info: dict[Any, Any] | None = None
        self.expired = False  # the alarm went off
        self.done = False
        self.passive = False  # a joiner's deadline that the one in force already covers: changes nothing
        self.limited = False  # the last statement ran under a limit this deadline set (MySQL, MariaDB)
        self._lock = threading.Lock()
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def error(self) -> UnitTimeoutError:
        elapsed = time.monotonic() - self.started
        return UnitTimeoutError(
            f"the unit of work {self.label} ran out of time: timeout={self.seconds:g}s, stopped after "
            f"{elapsed:.3f}s; its work was rolled back. Give it a larger timeout=, or do less in one unit",
            what=self.label,
            timeout=self.seconds,
            elapsed=elapsed,
        )

    # -- the alarm ---------------------------------------------------------------------------

    def arm(self, is_async: bool) -> None:
        delay = max(self.remaining(), 0.0)
        if is_async:
            loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            self._handle = loop.call_later(delay, self._ring)
            return
        _alarms.schedule(self)

    def _ring(self) -> None:
        with self._lock:  # `leave` takes it too: nothing is interrupted once the unit left its body
            if self.done:
                return
            self.expired = True
            interrupted = False
            for connection in list(self.info.get(_WATCHED_KEY, ())) if self.info is not None else ():
                interrupted = _interrupt(connection) or interrupted
            if self._task is None:
                return
            if not interrupted:
                self._task.cancel()
                return
        # A statement that was running fails now, in its own way, and the unit leaves with that error.
        # Cancelling the task as well would abandon aiosqlite's worker thread in the statement, holding
        # the file's lock: the task is cancelled only if it is still inside the unit a moment later
        # (it was awaiting something else).
        asyncio.get_running_loop().call_later(_CANCEL_GRACE, self._cancel_late)

    def _cancel_late(self) -> None:
        with self._lock:
            if not self.done and self._task is not None:
                self._task.cancel()

    def leave(self, exc: BaseException | None) -> BaseException | None:
        """Disarm; the exception the unit must end with: `exc`, or `UnitTimeoutError` if it ran out of time.

        Called when the body is over and before the owner commits: a COMMIT is never interrupted.
        """
        if self.passive:
            return exc
        with self._lock:
            self.done = True
        if self._handle is not None:
            self._handle.cancel()
        info, self.info = self.info, None  # the sync alarms' heap keeps this object until its time: not the session
        if not self.owner and info is not None:
            # A joiner hands the session back to the deadline that was in force before it.
            if self.previous is None:
                info.pop(_DEADLINE_KEY, None)
            else:
                info[_DEADLINE_KEY] = self.previous
        self.previous = None
        if isinstance(exc, UnitTimeoutError):
            return exc
        if self.expired and isinstance(exc, asyncio.CancelledError):
            uncancel = getattr(self._task, "uncancel", None)  # 3.11+: this cancellation was ours
            if uncancel is not None:
                uncancel()
            return _caused(self.error(), exc)
        if self.expired or time.monotonic() >= self.at or (self.limited and _stopped_by_limit(exc)):
            if exc is None:
                return self.error()
            if isinstance(exc, Exception):
                # The database stopped the statement at the deadline (statement_timeout, interrupt()):
                # the timeout is the cause the caller should see; the driver's error is chained.
                return _caused(self.error(), exc)
        return exc


class _Alarms:
    """One thread that rings the deadlines of sync units when they are due.

    A thread per unit (`threading.Timer`) would cost more than the unit itself; a ring that comes for
    a unit that has left since does nothing (`Deadline._ring` checks under the deadline's lock), so a
    deadline is never taken off the heap, only skipped when its time comes.
    """

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._wake = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None

    def schedule(self, deadline: Deadline) -> None:
        with self._wake:
            heapq.heappush(self._due, (deadline.at, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="uow-deadlines", daemon=True)
                self._thread.start()
            elif self._due[0][2] is deadline:
                self._wake.notify()  # due before everything the thread is waiting for

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._wake.wait(self._due[0][0] - time.monotonic() if self._due else None)
                deadline = heapq.heappop(self._due)[2]
            if not deadline.done:
                deadline._ring()

    def forget_thread(self) -> None:
        """In a forked child: the parent's thread is not there; the next schedule starts one."""
        self._wake = threading.Condition(threading.Lock())
        self._thread = None
        self._due.clear()


_alarms = _Alarms()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_alarms.forget_thread)


# The errors MySQL (ER_QUERY_TIMEOUT) and MariaDB (ER_STATEMENT_TIMEOUT) stop a statement with at
# the limit `_mysql_limit` / `_mariadb_limit` gave it. The server's clock is not ours: its error can
# arrive a fraction of a millisecond before `Deadline.at` by time.monotonic(), and it is still this
# deadline that stopped the statement.
_LIMIT_ERRORS = frozenset({3024, 1969})


def _stopped_by_limit(exc: BaseException | None) -> bool:
    """Whether `exc` (or what it was raised from) is the database stopping a statement at its limit."""
    seen = 0
    while exc is not None and seen < 8:
        original = getattr(exc, "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's error
        args = getattr(original if original is not None else exc, "args", ())
        if args and isinstance(args[0], int) and args[0] in _LIMIT_ERRORS:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _caused(error: UnitTimeoutError, cause: BaseException) -> UnitTimeoutError:
    error.__cause__ = cause
    return error


def _interrupt(connection: Connection) -> bool:
    """Stop what `connection` runs now, from another thread, where its driver allows it: whether it could."""
    try:
        driver_connection: Any = connection.connection.driver_connection
        module = type(driver_connection).__module__
        if module.startswith("sqlite3"):
            driver_connection.interrupt()
            return True
        if module.startswith("aiosqlite"):
            # aiosqlite's own interrupt() is a coroutine around this call: it must happen now, in this
            # callback, not in a task that could run once the connection serves another unit.
            driver_connection._conn.interrupt()
            return True
        if module.startswith("psycopg"):  # psycopg 3 and psycopg2: cancel() is safe from another thread
            driver_connection.cancel()
            return True
    except Exception:  # the connection may be closing: the checks before each statement still hold
        return False
    return False


# -- the session and its connections -------------------------------------------------------


def start_deadline(seconds: float, label: str, session: Session | AsyncSession, *, is_async: bool) -> Deadline:
    """Give a joining (or caller-owned) session the earlier of its deadline and `seconds` from now.

    A joiner whose deadline is not the earlier one changes nothing: the deadline in force stays, and
    so do its alarm and the unit it names (`leave` then hands back what the joiner raised, as is).
    """
    previous: Deadline | None = session.info.get(_DEADLINE_KEY)
    deadline = Deadline(label, seconds, owner=False)
    if previous is not None and previous.at <= deadline.at:
        deadline.done = deadline.passive = True
        return deadline
    deadline.previous = previous
    watch_session(session, deadline)
    deadline.arm(is_async)
    return deadline


def watch_session(session: Session | AsyncSession, deadline: Deadline) -> None:
    """Make a joiner's `deadline` the session's, and watch the statements of its connection."""
    sync_session = session.sync_session if isinstance(session, AsyncSession) else session
    info = _adopt(sync_session, deadline)
    if sync_session.in_transaction():
        # Joined after the transaction began: its connection is there already (no I/O to get it).
        _watch_connection(sync_session.connection(), info)
    elif not info[_WATCHED_KEY]:
        event.listen(sync_session, "after_begin", _on_begin)  # a request's unit that has run nothing yet


def watch_owner_sync(session: Session, deadline: Deadline) -> None:
    """The owning unit's new session: begin now, watch its connection, set the database's own limits."""
    connection = session.connection()
    _watch_connection(connection, _adopt(session, deadline))
    for statement in _transaction_limits(connection, session, deadline):
        connection.exec_driver_sql(statement)


async def watch_owner_async(session: AsyncSession, deadline: Deadline) -> None:
    """`watch_owner_sync` for an AsyncSession."""
    connection = await session.connection()
    _watch_connection(connection.sync_connection, _adopt(session.sync_session, deadline))  # type: ignore[arg-type]
    for statement in _transaction_limits(connection.sync_connection, session.sync_session, deadline):  # type: ignore[arg-type]
        await connection.exec_driver_sql(statement)


def _adopt(session: Session, deadline: Deadline) -> dict[Any, Any]:
    info = session.info
    info[_DEADLINE_KEY] = deadline
    deadline.info = info
    if _WATCHED_KEY not in info:
        info[_WATCHED_KEY] = {}
        if isinstance(session.bind, Connection):
            # A caller's connection (uow.testing binds units to the test's) outlives the session: when the
            # session's transaction ends, its statements must no longer be checked against this deadline.
            event.listen(session, "after_transaction_end", _on_end)
    return info


def _on_begin(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    if not transaction.nested:
        _watch_connection(connection, session.info)


def _on_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        info = session.info
        info.pop(_DEADLINE_KEY, None)
        watched: dict[Connection, Any] = info[_WATCHED_KEY]
        for connection, listener in list(watched.items()):
            if event.contains(connection, "before_cursor_execute", listener):
                event.remove(connection, "before_cursor_execute", listener)
        watched.clear()


def _watch_connection(connection: Connection, info: dict[Any, Any]) -> None:
    watched: dict[Connection, Any] = info[_WATCHED_KEY]
    if connection in watched:
        return
    dialect = connection.dialect
    if dialect.name in ("mysql", "mariadb"):
        limit = _mariadb_limit if getattr(dialect, "is_mariadb", False) else _mysql_limit
    else:
        limit = _no_limit

    def before_statement(
        _conn: Connection, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool
    ) -> tuple[str, Any]:
        deadline: Deadline | None = info.get(_DEADLINE_KEY)
        if deadline is None:
            return statement, parameters
        remaining = deadline.remaining()
        if remaining <= 0:
            raise deadline.error()
        limited = limit(statement, remaining)
        deadline.limited = limited is not statement
        return limited, parameters

    event.listen(connection, "before_cursor_execute", before_statement, retval=True)
    watched[connection] = before_statement


def _no_limit(statement: str, remaining: float) -> str:
    return statement


def _first_word(statement: str) -> str:
    return statement.lstrip()[:7].split(None, 1)[0].upper() if statement.strip() else ""


def _mariadb_limit(statement: str, remaining: float) -> str:
    # MariaDB counts max_statement_time in seconds (a fraction allowed); 0 would mean no limit.
    if _first_word(statement) not in _STATEMENTS:
        return statement
    # Rounded up to the millisecond, never down: the server must not stop it before the deadline.
    return f"SET STATEMENT max_statement_time={max(math.ceil(remaining * 1000), 1) / 1000:.3f} FOR {statement}"


def _mysql_limit(statement: str, remaining: float) -> str:
    # MySQL limits SELECTs only, in milliseconds, through an optimizer hint after the keyword.
    stripped = statement.lstrip()
    if stripped[:6].upper() != "SELECT":
        return statement
    return f"SELECT /*+ MAX_EXECUTION_TIME({max(math.ceil(remaining * 1000), 1)}) */{stripped[6:]}"


def _transaction_limits(connection: Connection, session: Session, deadline: Deadline) -> list[str]:
    """The statements that make the database itself hold the owning unit to its deadline."""
    remaining = deadline.remaining()
    if remaining <= 0:
        raise deadline.error()
    if connection.dialect.name != "postgresql" or isinstance(session.bind, Connection):
        return []  # on a caller's connection, SET LOCAL would outlive the unit in the caller's transaction
    milliseconds = max(math.ceil(remaining * 1000), 1)  # 0 would switch the limit off
    return [
        f"SET LOCAL statement_timeout = {milliseconds}",
        f"SET LOCAL idle_in_transaction_session_timeout = {milliseconds}",
    ]


def begin_deadline(spec: UnitSpec, unit: ActiveUnit, session: Session | AsyncSession, *, is_async: bool) -> Deadline:
    """Start enforcing the deadline of a unit just entered with ``timeout=`` (``spec.timeout`` is set)."""
    owned = unit.transaction.deadline if unit.owns_transaction else None
    if owned is not None:
        owned.arm(is_async)
        return owned
    assert spec.timeout is not None
    return start_deadline(spec.timeout, spec.label, session, is_async=is_async)
