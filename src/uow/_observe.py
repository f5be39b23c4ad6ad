"""The seam between the life of an owning unit and whoever watches it (spans, metrics, log records).

`observer` is None until `uow.otel.instrument()` or `uow.logs.instrument()` installs a sink, and
None again once every sink is uninstalled. The owning-unit path reads it in a handful of places,
each behind one ``is not None`` check, so a process that watches nothing pays a global read per
unit and nothing else. Only owning units are observed: a unit that joins, takes a savepoint or
uses the caller's session is part of its owner's record.

A call with ``retry=`` is one record across its attempts: the retry loop opens it with
`Observer.retrying`, each attempt's transaction claims it in turn, and it is finished when the
loop is over, with the last attempt's outcome and the number of attempts run again.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Protocol, TypedDict

from sqlalchemy.exc import DBAPIError
from typing_extensions import Unpack

from uow._retry import describe_error

if TYPE_CHECKING:
    from uow._database import Database

__all__ = [
    "COMMITTED",
    "READ_ONLY",
    "ROLLED_BACK",
    "UNKNOWN",
    "Observer",
    "Sink",
    "UnitFacts",
    "UnitRecord",
    "install",
    "observer",
    "uninstall",
]

logger = logging.getLogger("uow")

COMMITTED = "committed"
"""COMMIT went through."""
ROLLED_BACK = "rolled_back"
"""The unit rolled back: it raised, was marked rollback-only, or its COMMIT failed."""
READ_ONLY = "read_only"
"""A ``read_only=True`` unit ended without an error (it rolls back by design: nothing to commit)."""
UNKNOWN = "unknown"
"""COMMIT was sent but the connection was lost before its answer: the database may or may not have it."""


class Sink(Protocol):
    """One way of watching units, installed by `uow.otel` or `uow.logs`."""

    def unit_started(self, unit: UnitRecord) -> object:
        """An owning unit began; the value returned comes back to the other two calls."""

    def unit_retried(self, unit: UnitRecord, state: object, attempt: int, error: BaseException) -> None:
        """Attempt `attempt` (1-based) failed with a transient `error` and the unit runs again."""

    def unit_finished(self, unit: UnitRecord, state: object) -> None:
        """The unit is over; its outcome, error and timings are set."""


class UnitFacts(TypedDict):
    """What is fixed about an owning unit when it begins: the keywords of `Observer.unit_began` and `.retrying`."""

    function: str
    database: Database | None
    propagation: str
    read_only: bool
    isolation_level: str | None


class UnitRecord:
    """What is known about one owning unit: fixed when it begins, completed when it ends.

    ``error`` is the exception the unit ended with, if any; ``error_description`` names its class
    and the database's error code, never its message (SQLAlchemy's carries the bound parameters).
    """

    __slots__ = (
        "attempting",
        "commit_seconds",
        "commit_started",
        "database",
        "duration",
        "error",
        "error_description",
        "function",
        "isolation_level",
        "outcome",
        "propagation",
        "read_only",
        "retries",
        "retrying",
        "sinks",
        "started",
        "states",
    )

    def __init__(
        self,
        sinks: tuple[Sink, ...],
        *,
        function: str,
        database: Database | None,
        propagation: str,
        read_only: bool,
        isolation_level: str | None,
        retrying: bool = False,
    ) -> None:
        self.sinks = sinks
        self.function = function
        self.database = database
        self.propagation = propagation
        self.read_only = read_only
        self.isolation_level = isolation_level
        self.retrying = retrying  # owned by a retry loop: attempts claim it, the loop finishes it
        self.attempting = False
        self.retries = 0
        self.outcome = ROLLED_BACK
        self.error: BaseException | None = None
        self.error_description: str | None = None
        self.commit_started: float | None = None
        self.commit_seconds: float | None = None
        self.duration = 0.0
        self.started = time.perf_counter()
        self.states: list[object] = []
        for sink in sinks:
            try:
                self.states.append(sink.unit_started(self))
            except Exception:
                _sink_failed(sink, "unit_started")
                self.states.append(_LEFT_OUT)

    @property
    def name(self) -> str:
        """The function's qualified name (``app.jobs.cleanup``), or the context manager's (``unit_of_work``)."""
        return self.function.removesuffix("()")

    @property
    def database_name(self) -> str:
        """The Database's name: the one it was given, or its URL without the password."""
        return self.database.name if self.database is not None else "unknown"

    # -- called by the owning unit -----------------------------------------------------------

    def committing(self) -> None:
        self.commit_started = time.perf_counter()
        self.commit_seconds = None

    def committed(self) -> None:
        assert self.commit_started is not None
        self.commit_seconds = time.perf_counter() - self.commit_started

    def finish_sync(self, finish: Callable[[BaseException | None], None], exc: BaseException | None) -> None:
        """Run the transaction's ending (`finish`) and record how it went."""
        self.commit_started = self.commit_seconds = None  # a retry loop's record: this attempt's COMMIT only
        try:
            finish(exc)
        except BaseException as error:
            self._ended(error)
            raise
        self._ended(exc)

    async def finish_async(
        self, finish: Callable[[BaseException | None], Awaitable[None]], exc: BaseException | None
    ) -> None:
        """Await the transaction's ending (`finish`) and record how it went."""
        self.commit_started = self.commit_seconds = None  # a retry loop's record: this attempt's COMMIT only
        try:
            await finish(exc)
        except BaseException as error:
            self._ended(error)
            raise
        self._ended(exc)

    def failed(self, error: BaseException) -> None:
        """The unit failed before its body ran (opening its session, applying its options)."""
        self.commit_started = self.commit_seconds = None
        self._ended(error)

    def _ended(self, error: BaseException | None) -> None:
        self.outcome = _outcome(self, error)
        if self.commit_started is not None and self.commit_seconds is None:
            self.commit_seconds = time.perf_counter() - self.commit_started  # a COMMIT that failed
        self.error = error
        self.error_description = describe_error(error) if error is not None else None
        if self.retrying:
            self.attempting = False  # the retry loop finishes it once it knows there is no next attempt
            return
        self._finish()

    def _finish(self) -> None:
        self.duration = time.perf_counter() - self.started
        for sink, state in zip(self.sinks, self.states, strict=True):
            if state is not _LEFT_OUT:
                try:
                    sink.unit_finished(self, state)
                except Exception:
                    _sink_failed(sink, "unit_finished")

    def retried(self, attempt: int, error: BaseException) -> None:
        self.retries += 1
        for sink, state in zip(self.sinks, self.states, strict=True):
            if state is not _LEFT_OUT:
                try:
                    sink.unit_retried(self, state, attempt, error)
                except Exception:
                    _sink_failed(sink, "unit_retried")


_LEFT_OUT = object()  # the state of a sink whose unit_started failed: it hears nothing more of the unit


def _sink_failed(sink: Sink, method: str) -> None:
    # Watching a unit must never change how it ends: the unit goes on, the failure is logged.
    logger.exception("uow: %s.%s failed; the unit is not affected", type(sink).__qualname__, method)


def _outcome(unit: UnitRecord, error: BaseException | None) -> str:
    if unit.commit_seconds is not None:
        return COMMITTED  # an interrupt after COMMIT went through does not undo it
    if unit.commit_started is not None and isinstance(error, DBAPIError) and error.connection_invalidated:
        return UNKNOWN
    if error is None and unit.read_only:
        return READ_ONLY
    return ROLLED_BACK


class Observer:
    """The installed sinks, and the entry points the owning-unit path calls."""

    __slots__ = ("sinks",)

    def __init__(self, sinks: tuple[Sink, ...]) -> None:
        self.sinks = sinks

    def unit_began(self, **facts: Unpack[UnitFacts]) -> UnitRecord:
        """The record of an owning unit that is beginning: its retry loop's, else a new one."""
        loop = _retry_loop.get()
        if loop is not None and not loop.attempting and loop.function == facts["function"]:
            loop.attempting = True
            if loop.database is None:
                loop.database = facts["database"]
            return loop
        return UnitRecord(self.sinks, **facts)

    @contextlib.contextmanager
    def retrying(self, **facts: Unpack[UnitFacts]) -> Generator[None, None, None]:
        """Around a retry loop: one record for all its attempts, finished when the loop is over."""
        record = UnitRecord(self.sinks, retrying=True, **facts)
        token = _retry_loop.set(record)
        try:
            yield
        except BaseException as error:
            if record.error is not error:  # raised outside an attempt's ending (say, building a service)
                record.error = error
                record.error_description = describe_error(error)
                if record.outcome is not COMMITTED:
                    record.outcome = ROLLED_BACK
            raise
        finally:
            _retry_loop.reset(token)
            record._finish()

    def unit_retried(self, attempt: int, error: BaseException) -> None:
        """The retry loop runs its unit again after `attempt` failed with `error`."""
        record = _retry_loop.get()
        if record is not None:
            record.retried(attempt, error)


_retry_loop: contextvars.ContextVar[UnitRecord | None] = contextvars.ContextVar("uow_retry_loop", default=None)

observer: Observer | None = None
"""The installed sinks, or None when nothing watches units (the zero-cost case)."""

_sinks: dict[str, Sink] = {}


def install(key: str, sink: Sink) -> None:
    """Install `sink` under `key` (replacing the one installed under it); units that begin from now on see it."""
    global observer
    _sinks[key] = sink
    observer = Observer(tuple(_sinks.values()))


def uninstall(key: str) -> bool:
    """Remove the sink installed under `key`; whether there was one. Units already running finish with it."""
    global observer
    removed = _sinks.pop(key, None) is not None
    observer = Observer(tuple(_sinks.values())) if _sinks else None
    return removed
