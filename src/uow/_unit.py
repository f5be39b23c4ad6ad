"""The unit of work: who opens, commits, rolls back and closes a session.

State machine
-------------
A *transaction* (`Transaction`) is one session and the database transaction in it.
Every active unit is a *frame* on a per-context stack (a `ContextVar`, so asyncio
tasks and threads never see each other's units). A frame points at its
transaction and at a *scope*: the transaction's root, or a savepoint.

Entering a unit decides one of four things (`_decide`):

- BEGIN: no unit to join (or ``requires_new``): make a session from the Database,
  push a frame. On exit: commit on success, roll back on any exception, close.
- JOIN: a unit for the same database is active (``required``/``mandatory``), or
  the caller handed us a request transaction: share its session. On exit with an
  exception the shared scope is marked rollback-only; nothing else happens.
- SAVEPOINT: ``nested`` inside an active unit: ``begin_nested()``, push a frame
  with a new scope. On exit: release, or roll back to the savepoint (dropping the
  ``on_commit`` hooks registered inside it).
- EXTERNAL: the caller passed ``session=``: the caller owns it; we never commit,
  roll back or close it.

A scope marked rollback-only that is left without an exception (the failure was
swallowed) is rolled back and `RollbackOnlyError` is raised instead of a commit.
While an owned transaction runs, its session refuses the user's own commit and reports
their rollback or close (`OwnershipError`), marking the unit rollback-only: nobody
commits behind the unit's back (the listeners near the end of this module).
``on_commit`` hooks run, in registration order, after the owning unit commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import inspect
import logging
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine
from threading import get_ident
from typing import TYPE_CHECKING, Any, TypeVar, Union

from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import DBAPIError, UnboundExecutionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, AsyncSessionTransaction
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from uow import _observe
from uow._database import Database, forget_savepoint_end, get_default_database, savepoint_end, track_savepoint_ends
from uow._timeout import Deadline, watch_owner_async, watch_owner_sync
from uow.errors import (
    ConfigurationError,
    NoActiveUnitOfWork,
    OwnershipError,
    PropagationError,
    RollbackOnlyError,
)

if TYPE_CHECKING:
    from uow._observe import Observer, UnitRecord

__all__ = [
    "Frame",
    "Outcome",
    "Propagation",
    "Scope",
    "Transaction",
    "before_commit",
    "current_session",
    "join_innermost",
    "join_request",
    "on_commit",
    "on_completion",
    "on_rollback",
    "set_rollback_only",
]

logger = logging.getLogger("uow")

if TYPE_CHECKING:
    from uow._testing import CapturedHooks

AnySession = Union[Session, AsyncSession]
Hook = Callable[[], Any]
AnyHook = Callable[..., Any]  # a Hook, or an on_completion hook taking the `Outcome`
T = TypeVar("T")


class Propagation(str, enum.Enum):
    """How a unit relates to a unit that is already active for the same database."""

    REQUIRED = "required"
    """Join the active unit, else begin one (the default)."""
    REQUIRES_NEW = "requires_new"
    """Always begin a unit of its own, in a second session."""
    NESTED = "nested"
    """A savepoint in the active unit, else begin one."""
    MANDATORY = "mandatory"
    """Join the active unit; `PropagationError` if there is none."""
    NEVER = "never"
    """Begin a unit of its own; `PropagationError` if one is already active."""


def parse_propagation(value: Propagation | str, *, what: str) -> Propagation:
    """`value` as a `Propagation`, or a `ConfigurationError` listing the valid names."""
    try:
        found = _PROPAGATIONS.get(value)  # a member finds itself too: it is the str it stands for
    except TypeError:  # unhashable
        found = None
    if found is not None:
        return found
    valid = ", ".join(repr(p.value) for p in Propagation)
    raise ConfigurationError(f"{what}: unknown propagation {value!r}; use one of {valid}")


# `Propagation(value)` is Python code in the enum machinery; provide_services parses on every call.
_PROPAGATIONS: dict[object, Propagation] = {p.value: p for p in Propagation}


_REQUIRED, _REQUIRES_NEW, _NESTED, _MANDATORY, _NEVER = (
    Propagation.REQUIRED,
    Propagation.REQUIRES_NEW,
    Propagation.NESTED,
    Propagation.MANDATORY,
    Propagation.NEVER,
)


class Outcome(str, enum.Enum):
    """How a unit of work ended, as `on_completion` hooks are told."""

    COMMITTED = "committed"
    """COMMIT went through: the work is in the database."""
    ROLLED_BACK = "rolled_back"
    """The work was rolled back (an exception, `set_rollback_only`, read-only, a vetoing hook, a refused COMMIT)."""
    UNKNOWN = "unknown"
    """COMMIT was sent but its result could not be known: the connection dropped (or the unit was interrupted) during it."""


# The phases a hook can be registered for (`Transaction.hooks` holds (callback, scope, phase)).
BEFORE_COMMIT, AFTER_COMMIT, AFTER_ROLLBACK, AFTER_COMPLETION = 0, 1, 2, 3
_PHASE_NAMES = ("before_commit", "on_commit", "on_rollback", "on_completion")


class Scope:
    """The root of a transaction or one savepoint in it; carries the rollback-only marks.

    ``rollback_only``: an inner failure doomed it (leaving it without an exception raises
    `RollbackOnlyError`); ``quiet``: `set_rollback_only` asked for a rollback (no error).
    """

    __slots__ = ("parent", "quiet", "rollback_only", "savepoint")

    def __init__(self, parent: Scope | None, savepoint: SessionTransaction | AsyncSessionTransaction | None) -> None:
        self.parent = parent
        self.savepoint = savepoint
        self.rollback_only = False
        self.quiet = False

    def is_within(self, other: Scope) -> bool:
        scope: Scope | None = self
        while scope is not None:
            if scope is other:
                return True
            scope = scope.parent
        return False


class Transaction:
    """One session and its transaction, shared by every unit that joins it.

    ``owned`` transactions are committed, rolled back and closed by uow (by the unit
    that began them, or by a framework integration for a request); the session is
    created lazily by `open_sync` / `open_async`. Once finished, it cannot be opened again.
    """

    __slots__ = (
        "abandoned",
        "busy",
        "database",
        "deadline",
        "finished",
        "hooks",
        "inside",
        "is_async",
        "isolation_level",
        "observed",
        "owned",
        "read_only",
        "root",
        "session",
        "unknown",
        "what",
    )

    def __init__(
        self,
        database: Database | None,
        *,
        session: AnySession | None = None,
        owned: bool = True,
        read_only: bool = False,
        isolation_level: str | None = None,
        what: str | None = None,
    ) -> None:
        self.database = database
        self.session = session
        self.what = what  # the unit that began it, for error messages (uow.testing names leaked units)
        self.owned = owned
        self.read_only = read_only
        self.isolation_level = isolation_level
        self.is_async = (
            isinstance(session, AsyncSession) if session is not None else bool(database and database.is_async)
        )
        self.root = Scope(None, None)
        self.hooks: list[tuple[Hook, Scope, int]] = []
        self.unknown = False  # COMMIT failed in a way that leaves its result unknown (a dropped connection)
        self.finished = False
        if session is not None and owned:
            _guard(session, self)
        # Who uses the session across tasks/threads (see "One task at a time" below): the units that
        # joined from another task and are still running, innermost last; and who is in a statement.
        self.inside: list[ForeignJoin] = []
        self.busy: object = None
        # Ended while a joined unit was in a statement on the session: the last of those to leave closes it.
        self.abandoned = False
        self.deadline: Deadline | None = None  # the owning unit's timeout= (see uow._timeout)
        # The owning unit's record when something watches units (uow.otel, uow.logs): see `_observe`.
        self.observed: UnitRecord | None = None

    # -- opening -----------------------------------------------------------------------------

    def open_sync(self) -> Session:
        """The session, made from the Database on first use with the transaction's options applied."""
        if self.finished:
            raise _finished_error(self)
        if self.session is None:
            assert self.database is not None
            session = _new_session(self.database, self.read_only, self.isolation_level)
            assert isinstance(session, Session)
            info = session.info
            info[OPENED_BY_KEY] = self.what
            info[_TX_KEY] = self
            if self.read_only or self.isolation_level is not None or self.deadline is not None:
                try:
                    _apply_begin_options_sync(session, self.read_only, self.isolation_level)
                    if self.deadline is not None:
                        watch_owner_sync(session, self.deadline)
                except BaseException:
                    session.close()
                    raise
            info[_GUARD_KEY] = self  # `_guard`, inline
            self.session = session
        return self.session  # type: ignore[return-value]

    async def open_async(self) -> AsyncSession:
        """The session, made from the Database on first use with the transaction's options applied."""
        if self.finished:
            raise _finished_error(self)
        if self.session is None:
            assert self.database is not None
            session = _new_session(self.database, self.read_only, self.isolation_level)
            assert isinstance(session, AsyncSession)
            info = session.info
            info[OPENED_BY_KEY] = self.what
            info[_TX_KEY] = self
            if self.read_only or self.isolation_level is not None or self.deadline is not None:
                # Applying options checks a connection out: a cancellation midway must not strand it.
                _, cancellation = await _to_completion(
                    _open_or_close_async(session, self.read_only, self.isolation_level, self.deadline)
                )
                if cancellation is not None:
                    await _to_completion(_close_async(session))
                    raise cancellation
            info[_GUARD_KEY] = self  # `_guard`, inline
            self.session = session
        return self.session  # type: ignore[return-value]

    # -- finishing (owned transactions) ------------------------------------------------------

    def finish_sync(self, exc: BaseException | None) -> None:
        """Commit (no exception, not rollback-only, not read-only) or roll back; always close; then run hooks.

        ``before_commit`` hooks run first, inside the unit; one that raises vetoes the commit (the unit
        rolls back and that error is raised). Once COMMIT went through, the unit's work is done: a
        failure while releasing or closing afterwards is logged, not raised, and the hooks still run
        (an interrupt is re-raised after them).
        """
        if self.hooks and exc is None and not (self.root.rollback_only or self.read_only):
            veto = self._before_commit_sync()
            if veto is not None:
                self.finish_sync(veto)
                raise veto
        me = get_ident()
        with _lock:  # a thread joining right now either sees the unit finished or is seen inside
            self.finished = True
            busy = self.busy
            # `_prune(self) or _busy_elsewhere(self)`, asked only when someone else may be using the session.
            if (self.inside or (busy is not None and busy != me)) and (_prune(self) or _busy_elsewhere(self)):
                straggler: PropagationError | None = _straggler_error(self)
            else:
                straggler = None
                # Ending is a statement too: another thread using the session meanwhile is refused.
                self.busy = me
        try:
            try:
                session = self.session
                if (
                    straggler is not None
                    or session is None
                    or exc is not None
                    or self.root.rollback_only
                    or self.read_only
                ):
                    committed, interrupt = self._end_without_commit_sync(session, exc, straggler), None
                else:
                    # The commit, written out here: every owning sync unit that succeeds comes this way.
                    assert isinstance(session, Session)
                    info = session.info
                    info.pop(_GUARD_KEY, None)  # `_release_guard`: from here on it is uow ending the session
                    transaction = session.get_transaction()
                    if transaction is not None and not transaction.is_active:  # a failed flush rolled it back
                        self._roll_back_sync(session, None)
                        raise _flush_failed_error(self)
                    observed = self.observed
                    if observed is not None:
                        observed.committing()
                    try:
                        interrupt = _commit_sync(session)
                    except BaseException as failure:
                        # The commit failed: that failure is what the caller sees, not a close error.
                        self.unknown = _commit_result_unknown(failure)
                        _close_preserving_sync(session, failure)
                        raise
                    if observed is not None:
                        observed.committed()
                    try:  # a failure to close is logged (the commit stands), an interrupt handed back
                        session.close()
                    except BaseException as failure:
                        interrupt = _close_failed_after_commit_sync(session, failure) or interrupt
                    if _TX_KEY in info:  # `_seal`
                        info[_CLOSED_KEY] = True
                    committed = True
            finally:
                if straggler is None:
                    self.busy = None
        except BaseException:
            if self.hooks:
                self.run_hooks_sync(Outcome.UNKNOWN if self.unknown else Outcome.ROLLED_BACK)
            raise
        # The one place an owning sync unit decides whether anything follows its end: with no hook
        # registered nothing does (`run_hooks_sync` of no hooks hands nothing on, even to a test capture).
        if self.hooks:
            self.run_hooks_sync(Outcome.COMMITTED if committed else Outcome.ROLLED_BACK)
        if interrupt is not None:
            raise interrupt

    def _end_without_commit_sync(
        self, session: AnySession | None, exc: BaseException | None, straggler: PropagationError | None
    ) -> bool:
        """Roll back (or abandon to a straggler) and close; whether the unit counts as committed."""
        if session is None:
            if straggler is not None:
                if exc is None:
                    raise straggler
                return False
            return self._finish_without_session(exc)
        assert isinstance(session, Session)
        _release_guard(session.info)
        if straggler is not None:
            self._abandon_sync(session, exc, straggler)
            return False
        self._roll_back_sync(session, exc)
        return False

    def _roll_back_sync(self, session: Session, exc: BaseException | None) -> None:
        try:
            _end_read_only_sync(session, self.read_only)
            _rollback_preserving_sync(session, exc)
        except BaseException as failure:
            _invalidate_sync(session, failure)
            raise
        _close_preserving_sync(session, exc)
        if exc is None and self.root.rollback_only and not self.root.quiet:
            raise _rollback_only_error(self)

    def _abandon_sync(self, session: Session, exc: BaseException | None, straggler: PropagationError) -> None:
        # A unit that joined from another thread is still running: never commit under it.
        if self._seal_for_straggler(session):
            self._roll_back_sync(session, exc or straggler)
        if exc is None:
            raise straggler
        _note_straggler(exc, straggler)

    async def finish_async(self, exc: BaseException | None) -> None:
        """Commit (no exception, not rollback-only, not read-only) or roll back; always close; then run hooks.

        The ending runs to completion even if the task is cancelled meanwhile: a cancellation that
        arrives once the body is over cannot leave a connection checked out or a COMMIT half-known;
        it is re-raised afterwards (after the hooks, when the unit committed). Once COMMIT went
        through, a failure to close is logged, not raised. ``before_commit`` hooks run first, as in
        `finish_sync`.
        """
        if self.hooks and exc is None and not (self.root.rollback_only or self.read_only):
            veto = await self._before_commit_async()
            if veto is not None:
                await self.finish_async(veto)
                raise veto
        self.finished = True
        session = self.session
        if session is None:
            try:
                if _prune(self):
                    if exc is None:
                        raise _straggler_error(self)
                    committed = False
                else:
                    committed = self._finish_without_session(exc)
            except BaseException:
                if self.hooks:
                    await self.run_hooks_async(Outcome.ROLLED_BACK)
                raise
            if self.hooks:
                await self.run_hooks_async(Outcome.COMMITTED if committed else Outcome.ROLLED_BACK)
            return
        assert isinstance(session, AsyncSession)
        _release_guard(session.info)
        ender = _task_on(asyncio.get_running_loop())  # `asyncio.current_task()`, without a Python call
        try:
            (committed, interrupt), cancellation = await _to_completion(self._end_or_abandon_async(session, exc, ender))
        except BaseException:
            if self.hooks:
                await self.run_hooks_async(Outcome.UNKNOWN if self.unknown else Outcome.ROLLED_BACK)
            raise
        # The one place an owning async unit decides whether anything follows its end: with no hook
        # registered nothing does (`run_hooks_async` of no hooks hands nothing on, even to a test capture).
        if self.hooks:
            await self.run_hooks_async(Outcome.COMMITTED if committed else Outcome.ROLLED_BACK)
        if cancellation is not None:
            raise cancellation
        if interrupt is not None:
            raise interrupt

    async def _end_or_abandon_async(
        self, session: AsyncSession, exc: BaseException | None, ender: object
    ) -> tuple[bool, BaseException | None]:
        # Decided here, in the task that ends the unit: a task scheduled before it may be in a statement.
        # Not `ender`, the task awaiting this ending: it cannot be in a statement meanwhile.
        # `_prune(self) or _busy_elsewhere(self, ender)`, asked only when someone else may be using the session.
        if (self.inside or self.busy is not None) and (_prune(self) or _busy_elsewhere(self, ender)):
            straggler: PropagationError | None = _straggler_error(self)
        else:
            straggler = None
        if straggler is not None:
            await self._abandon_async(session, exc, straggler)
            if exc is None:
                raise straggler
            _note_straggler(exc, straggler)
            return False, None
        # Ending is a statement too: another task using the session meanwhile is refused.
        self.busy = _task_on(asyncio.get_running_loop())  # `asyncio.current_task()`, without a Python call
        try:
            # Commit or roll back, then close: (whether COMMIT went through, an interrupt to re-raise after
            # hooks). Written out here rather than in a coroutine of its own: every owning async unit comes
            # this way, and each coroutine layer is resumed at every await below it.
            if exc is not None or self.root.rollback_only or self.read_only:
                await self._roll_back_async(session, exc)
                return False, None
            transaction = session.sync_session.get_transaction()
            if transaction is not None and not transaction.is_active:  # a failed flush rolled it back
                await self._roll_back_async(session, None)
                raise _flush_failed_error(self)
            observed = self.observed
            if observed is not None:
                observed.committing()
            try:
                interrupt = await _commit_async(session)
            except BaseException as failure:
                # The commit failed: that failure is what the caller sees, not a close error.
                self.unknown = _commit_result_unknown(failure)
                await _close_preserving_async(session, failure)
                raise
            if observed is not None:
                observed.committed()
            return True, await _close_after_commit_async(session) or interrupt
        finally:
            self.busy = None

    async def _roll_back_async(self, session: AsyncSession, exc: BaseException | None) -> None:
        try:
            await _end_read_only_async(session, self.read_only)
            await _rollback_preserving_async(session, exc)
        except BaseException as failure:
            await _invalidate_async(session, failure)
            raise
        await _close_preserving_async(session, exc)
        if exc is None and self.root.rollback_only and not self.root.quiet:
            raise _rollback_only_error(self)

    async def _abandon_async(
        self, session: AsyncSession, exc: BaseException | None, straggler: PropagationError
    ) -> None:
        # A unit that joined from another task is still running: never commit under it.
        if self._seal_for_straggler(session):
            await self._roll_back_async(session, exc or straggler)

    def _seal_for_straggler(self, session: AnySession) -> bool:
        """Seal the session so the straggler's next statement fails; whether it is ours to roll back now.

        If the straggler is in a statement right now, touching the session would race it (asyncpg's
        "another operation is in progress", SQLAlchemy's illegal state change), even to invalidate it:
        it is left to the straggler, which rolls back and closes it as it leaves.
        """
        with _lock:
            _seal(session)
            if _busy_elsewhere(self):
                self.abandoned = True
                return False
            return True

    def close_abandoned_sync(self) -> None:
        """Roll back and close what `_seal_for_straggler` left; the last straggler calls it as it leaves."""
        session = self.session
        if not self.abandoned:
            return
        self.abandoned = False
        assert isinstance(session, Session)
        try:
            session.rollback()
            session.close()
        except Exception:
            logger.warning("uow: rolling back an abandoned session failed; invalidating its connection")
            _invalidate_sync(session, None)

    async def close_abandoned_async(self) -> None:
        session = self.session
        if not self.abandoned:
            return
        self.abandoned = False
        assert isinstance(session, AsyncSession)
        try:
            await session.rollback()
            await session.close()
        except Exception:
            logger.warning("uow: rolling back an abandoned session failed; invalidating its connection")
            await _invalidate_async(session, None)

    def _finish_without_session(self, exc: BaseException | None) -> bool:
        """Nothing touched the database: nothing to commit, but the outcome still counts. Whether it "committed"."""
        if exc is None and self.root.rollback_only and not self.root.quiet:
            raise _rollback_only_error(self)
        return exc is None and not self.root.rollback_only

    # -- hooks -------------------------------------------------------------------------------

    def add_hook(self, callback: AnyHook, scope: Scope, phase: int = AFTER_COMMIT) -> None:
        if not self.is_async and inspect.iscoroutinefunction(callback):
            raise ConfigurationError(
                f"{_PHASE_NAMES[phase]}({_name(callback)}): an async callback needs an async unit; "
                "make the hook a plain function or run the unit with an async Database"
            )
        if not self.owned:
            if phase != AFTER_COMMIT:
                raise ConfigurationError(
                    f"{_PHASE_NAMES[phase]}({_name(callback)}): the unit runs in a session passed with session=, "
                    "whose transaction its caller commits or rolls back, so uow cannot run the hook at that "
                    "phase; register it inside a unit uow begins (drop session=), or use on_commit()"
                )
            _attach_to_caller_session(self, callback)
            return
        self.hooks.append((callback, scope, phase))

    def drop_hooks_within(self, scope: Scope) -> list[tuple[AnyHook, Scope, int]]:
        """Forget the hooks registered in `scope` or inside it (it rolled back); those that were dropped."""
        hooks = self.hooks
        if not hooks:
            return []
        dropped = [hook for hook in hooks if hook[1].is_within(scope)]
        if dropped:
            self.hooks = [hook for hook in hooks if not hook[1].is_within(scope)]
        return dropped

    def _take_before_commit(self) -> list[AnyHook]:
        due = [callback for callback, _, phase in self.hooks if phase == BEFORE_COMMIT]
        if due:
            self.hooks = [hook for hook in self.hooks if hook[2] != BEFORE_COMMIT]
        return due

    def _before_commit_sync(self) -> BaseException | None:
        """Run the before_commit hooks inside the unit (under a frame of their own, so code in them joins
        it), those they register too; the error of the first that raises (it vetoes the commit)."""
        token = _current.set(Frame(self.database, self, self.root, _current.get()))
        try:
            while due := self._take_before_commit():
                for callback in due:
                    result = callback()
                    if inspect.isawaitable(result):
                        _discard_awaitable(result)
                        raise ConfigurationError(
                            f"before_commit hook {_name(callback)} returned an awaitable in a sync unit; it was not run"
                        )
        except BaseException as veto:
            return veto
        finally:
            _current.reset(token)
        return None

    async def _before_commit_async(self) -> BaseException | None:
        token = _current.set(Frame(self.database, self, self.root, _current.get()))
        try:
            while due := self._take_before_commit():
                for callback in due:
                    result = callback()
                    if inspect.isawaitable(result):
                        await result
        except BaseException as veto:
            return veto
        finally:
            _current.reset(token)
        return None

    def run_hooks_sync(self, outcome: Outcome, hooks: list[tuple[AnyHook, Scope, int]] | None = None) -> None:
        """Run the hooks due after `outcome` (all the unit's, or `hooks`): a failing one is logged."""
        if hooks is None:
            hooks, self.hooks = self.hooks, []
        for callback, phase in _due(hooks, outcome):
            try:
                result = callback(outcome) if phase == AFTER_COMPLETION else callback()
                if inspect.isawaitable(result):
                    _discard_awaitable(result)
                    raise ConfigurationError(
                        f"{_PHASE_NAMES[phase]} hook {_name(callback)} returned an awaitable in a sync unit; "
                        "it was not run"
                    )
            except Exception:
                logger.exception("%s hook %s failed", _PHASE_NAMES[phase], _name(callback))

    async def run_hooks_async(self, outcome: Outcome, hooks: list[tuple[AnyHook, Scope, int]] | None = None) -> None:
        if hooks is None:
            hooks, self.hooks = self.hooks, []
        for callback, phase in _due(hooks, outcome):
            try:
                result = callback(outcome) if phase == AFTER_COMPLETION else callback()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("%s hook %s failed", _PHASE_NAMES[phase], _name(callback))


def _due(hooks: list[tuple[AnyHook, Scope, int]], outcome: Outcome) -> list[tuple[AnyHook, int]]:
    """The hooks to run after `outcome`, in order: on_commit (or on_rollback) ones, then on_completion ones.

    Handed to `uow.testing`'s capture instead when one is active (then nothing is left to run here).
    """
    first = AFTER_COMMIT if outcome is Outcome.COMMITTED else AFTER_ROLLBACK if outcome is Outcome.ROLLED_BACK else -1
    due = [(cb, phase) for cb, _, phase in hooks if phase == first]
    due.extend((cb, phase) for cb, _, phase in hooks if phase == AFTER_COMPLETION)
    captured = hook_capture.get()
    if captured is None or not due:
        return due
    captured.take(due, outcome)
    return []


def _commit_result_unknown(failure: BaseException) -> bool:
    """Whether a failed commit may have gone through: interrupted, or the connection dropped during COMMIT.

    SQLAlchemy reports a failure of COMMIT itself with no statement (a failed flush names its
    statement: nothing was committed then), and a lost connection as `connection_invalidated`.
    """
    if _is_interrupt(failure):
        return True
    return isinstance(failure, DBAPIError) and failure.connection_invalidated and failure.statement is None


class Frame:
    """An active unit on the context's stack."""

    __slots__ = ("database", "joined", "loop", "owner", "parent", "scope", "transaction")

    def __init__(self, database: Database | None, transaction: Transaction, scope: Scope, parent: Frame | None) -> None:
        self.database = database
        self.transaction = transaction
        self.scope = scope
        self.parent = parent
        # The unit every plain join of this frame enters (it holds nothing per call, so one serves them all).
        self.joined: ActiveUnit | None = None
        # The task (async) or thread (sync) that pushed the frame. Tasks and threads started inside the
        # unit inherit the frame with the context; a join from one of them is told apart by this.
        if transaction.is_async:
            # `current_user(True)` without its calls: the running loop's current task, None without a loop.
            loop = self.loop = _running_loop()
            self.owner = None if loop is None else _task_on(loop)
        else:
            self.owner = get_ident()  # current_user(False), without the call
            self.loop = None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# `join_innermost` asks "is this the frame's task?" on every joined call. Python 3.12 answers with C
# code; before it, asyncio.current_task() is Python code asking for the running loop, ten times the
# cost: there, look the task up by the frame's loop (a session belongs to one loop anyway).
if sys.version_info >= (3, 12):
    _task_on: Callable[[asyncio.AbstractEventLoop | None], object] = asyncio.current_task
else:  # pragma: no cover - the CI's other Pythons
    _task_on = vars(asyncio.tasks)["_current_tasks"].get


def current_user(is_async: bool) -> object:
    """Who is running: the asyncio task for an async session, the thread for a sync one."""
    if is_async:
        try:
            return _task_on(asyncio.get_running_loop())  # `asyncio.current_task()`, without a Python call
        except RuntimeError:  # no running loop: nothing can share the session with us
            return None
    return threading.get_ident()


_current: contextvars.ContextVar[Frame | None] = contextvars.ContextVar("uow_current_unit", default=None)

# Where `session.info` records which unit made a session (uow.testing reports units left open by it).
OPENED_BY_KEY = "uow_opened_by"

# Set by `uow.testing.capture_on_commit`: hooks due to run after a unit ends are handed to it instead.
hook_capture: contextvars.ContextVar[CapturedHooks | None] = contextvars.ContextVar("uow_hook_capture", default=None)


def _forget_parent_units() -> None:
    """In a forked child, start with no active unit: the parent's sessions hold the parent's sockets."""
    _current.set(None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_units)


def innermost_frame() -> Frame | None:
    """The innermost active unit of this context, whatever its database."""
    return _current.get()


def find_frame(database: Database | None) -> Frame | None:
    """The innermost active unit for `database` (for None: the configured default, else any).

    A finished transaction's frame is skipped: a request unit commits when the response
    starts, and code still running afterwards (a streamed body) must not join it.
    """
    frame = _current.get()
    while frame is not None and frame.transaction.finished:
        frame = frame.parent
    if frame is None:
        return None
    if database is None:
        database = get_default_database()
        if database is None:
            return frame
    while frame is not None:
        if frame.database is database and not frame.transaction.finished:
            return frame
        frame = frame.parent
    return None


def push_frame(frame: Frame) -> contextvars.Token[Frame | None]:
    return _current.set(frame)


pop_frame: Callable[[contextvars.Token[Frame | None]], None] = _current.reset  # a C call: request units pop per request


def push_transaction(tx: Transaction) -> contextvars.Token[Frame | None]:
    """Make `tx` the innermost active unit (its root scope), as a request unit does while its request runs."""
    return _current.set(Frame(tx.database, tx, tx.root, _current.get()))


def forget_frames_above(frame: Frame | None) -> None:
    """Make `frame` the innermost unit again, dropping every frame pushed above it (units a test left open)."""
    _current.set(frame)


def start_capturing_hooks(hooks: CapturedHooks) -> contextvars.Token[CapturedHooks | None]:
    """Hand the hooks due after units end in this context to `hooks` instead of running them (uow.testing)."""
    return hook_capture.set(hooks)


def stop_capturing_hooks(token: contextvars.Token[CapturedHooks | None]) -> None:
    """Undo `start_capturing_hooks`."""
    hook_capture.reset(token)


# -- public helpers -------------------------------------------------------------------------


def current_session(database: Database | None = None) -> Any:
    """The session of the innermost active unit for `database`; `NoActiveUnitOfWork` if there is none.

    Returns a `Session` in sync units and an `AsyncSession` in async ones. A request unit
    whose session was not opened yet opens it now when it is sync; call
    ``await current_session_async()`` for a lazily opened async request unit.
    """
    frame = find_frame(database)
    if frame is None:
        raise _no_unit("current_session()", database)
    tx = frame.transaction
    if tx.session is None:
        if tx.is_async:
            raise NoActiveUnitOfWork(
                "current_session(): the active async request unit has not opened its session yet; "
                "use 'await uow.current_session_async()'"
            )
        return tx.open_sync()
    return tx.session


async def current_session_async(database: Database | None = None) -> AsyncSession:
    """The session of the innermost active async unit, opening a lazy request unit's session if needed."""
    frame = find_frame(database)
    if frame is None:
        raise _no_unit("current_session_async()", database)
    tx = frame.transaction
    if not tx.is_async:
        raise ConfigurationError("current_session_async(): the active unit is sync; use current_session()")
    return await tx.open_async()


def on_commit(callback: Hook, database: Database | None = None) -> None:
    """Run `callback` after the outermost unit commits.

    Dropped if that unit, or the savepoint it was registered in, rolls back.
    """
    _register(callback, database, AFTER_COMMIT)


def before_commit(callback: Hook, database: Database | None = None) -> None:
    """Run `callback` inside the outermost unit, just before it commits (not when it rolls back).

    It may still write (`current_session()` and decorated functions join the unit); raising
    vetoes the commit: the unit rolls back and the error propagates. Dropped if the savepoint
    it was registered in rolls back. Hooks run in registration order, with those they register.
    """
    _register(callback, database, BEFORE_COMMIT)


def on_rollback(callback: Hook, database: Database | None = None) -> None:
    """Run `callback` after the outermost unit rolls back, or at once when the savepoint it was registered in does."""
    _register(callback, database, AFTER_ROLLBACK)


def on_completion(callback: Callable[[Outcome], Any], database: Database | None = None) -> None:
    """Run ``callback(outcome)`` after the outermost unit ends, whatever the `Outcome`.

    `Outcome.UNKNOWN` when COMMIT was sent but its result could not be known (the connection
    dropped during it). Runs at once, with `Outcome.ROLLED_BACK`, when the savepoint it was
    registered in rolls back.
    """
    _register(callback, database, AFTER_COMPLETION)


def _register(callback: AnyHook, database: Database | None, phase: int) -> None:
    what = _PHASE_NAMES[phase]
    if not callable(callback):
        raise TypeError(f"{what}() needs a callable, got {type(callback).__name__}")
    frame = find_frame(database)
    if frame is None:
        raise _no_unit(f"{what}({_name(callback)})", database)
    frame.transaction.add_hook(callback, frame.scope, phase)


def set_rollback_only(database: Database | None = None) -> None:
    """Make the current unit end with a rollback instead of a commit, and no exception.

    The mark goes on the innermost unit that can roll back on its own: the unit that began the
    transaction, or the innermost ``propagation='nested'`` unit (its savepoint rolls back, the
    enclosing unit goes on), as Django's ``set_rollback(True)`` does. A unit that joined another
    marks the one it joined. Hooks follow the rollback: ``on_rollback`` / ``on_completion`` run,
    ``before_commit`` / ``on_commit`` do not.
    """
    frame = find_frame(database)
    if frame is None:
        raise _no_unit("set_rollback_only()", database)
    if not frame.transaction.owned:
        raise ConfigurationError(
            "set_rollback_only(): the unit runs in a session passed with session=, whose transaction its "
            "caller commits or rolls back; roll that session back instead, or drop session="
        )
    scope = frame.scope
    scope.rollback_only = scope.quiet = True


def _no_unit(what: str, database: Database | None) -> NoActiveUnitOfWork:
    target = f" for {database!r}" if database is not None else ""
    return NoActiveUnitOfWork(
        f"{what} was called outside a unit of work{target}: call it from a function decorated with "
        "@with_services/@unit_of_work or inside 'with unit_of_work():'"
    )


# -- the unit --------------------------------------------------------------------------------


class Kind(enum.Enum):
    BEGIN = "begin"
    JOIN = "join"
    SAVEPOINT = "savepoint"
    EXTERNAL = "external"


# Reading an enum member costs about 0.2 µs on CPython 3.11 (a descriptor on the class); a module global
# a tenth of that. The hot paths compare against these.
_BEGIN, _JOIN, _SAVEPOINT, _EXTERNAL = Kind.BEGIN, Kind.JOIN, Kind.SAVEPOINT, Kind.EXTERNAL

ExceptionClasses = Union[type[BaseException], tuple[type[BaseException], ...], None]
"""What ``commit_on=`` / ``rollback_on=`` take: an exception class, a tuple of them, or None."""


def parse_exception_classes(value: object, *, option: str, what: str) -> tuple[type[BaseException], ...]:
    """`value` as a tuple of exception classes, or a `ConfigurationError` saying what is wrong."""
    if value is None:
        return ()
    given: tuple[object, ...] = tuple(value) if isinstance(value, (tuple, list, set, frozenset)) else (value,)
    classes: list[type[BaseException]] = []
    for cls in given:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise ConfigurationError(
                f"{what}: {option}= needs exception classes (a class such as ValueError, or a tuple of them), "
                f"got {cls!r}"
            )
        classes.append(cls)
    return tuple(classes)


class UnitSpec:
    """What a unit asks for, fixed when it is declared (decoration time)."""

    __slots__ = (
        "commit_on",
        "database",
        "direct_begin",
        "durable",
        "isolation_level",
        "propagation",
        "read_only",
        "required",
        "rollback_on",
        "timeout",
        "what",
    )

    def __init__(
        self,
        *,
        database: Database | None,
        propagation: Propagation | str,
        read_only: bool,
        isolation_level: str | None,
        what: str,
        timeout: float | None = None,
        durable: bool = False,
        commit_on: ExceptionClasses = None,
        rollback_on: ExceptionClasses = None,
    ) -> None:
        if database is not None and not isinstance(database, Database):
            raise ConfigurationError(f"{what}: database= needs a uow.Database, got {type(database).__name__}")
        self.database = database
        self.propagation = parse_propagation(propagation, what=what)
        if not isinstance(durable, bool):
            raise ConfigurationError(f"{what}: durable= needs True or False, got {durable!r}")
        self.durable = durable
        if durable:
            if self.propagation not in (Propagation.REQUIRED, Propagation.NEVER):
                raise ConfigurationError(
                    f"{what}: durable=True refuses to run inside another unit, but propagation="
                    f"{self.propagation.value!r} is about running inside one; drop one of the two "
                    "(durable=True is propagation='never' with Django's name and error)"
                )
            self.propagation = Propagation.NEVER
        # Both empty unless asked for: `commits` is then one falsy check on the failure path.
        self.commit_on = () if commit_on is None else parse_exception_classes(commit_on, option="commit_on", what=what)
        self.rollback_on = (
            () if rollback_on is None else parse_exception_classes(rollback_on, option="rollback_on", what=what)
        )
        # Precomputed for `join_innermost`: reading an enum member costs more than the rest of a join check.
        self.required = self.propagation is _REQUIRED
        self.read_only = bool(read_only)
        self.isolation_level = isolation_level
        self.timeout = timeout  # seconds, checked by `parse_timeout` before it gets here
        self.what = what
        # Whether `begin_sync` / `begin_async` may BEGIN this unit without `_decide` when no unit is active:
        # every propagation but 'mandatory' begins then. The one place a unit option that changes how a
        # unit begins (a timeout, an instrumentation check) turns the direct begin off, or adds its step.
        self.direct_begin = self.propagation is not _MANDATORY and timeout is None

    def commits(self, exc: BaseException) -> bool:
        """Whether the unit commits although `exc` leaves it (it matches commit_on=, not rollback_on=)."""
        return bool(self.commit_on) and isinstance(exc, self.commit_on) and not isinstance(exc, self.rollback_on)


class ActiveUnit:
    """One entered unit: what was decided and what must be undone on exit."""

    __slots__ = ("foreign", "kind", "scope", "token", "transaction")

    def __init__(
        self,
        kind: Kind,
        transaction: Transaction,
        scope: Scope,
        token: contextvars.Token[Frame | None] | None,
        foreign: ForeignJoin | None = None,
    ) -> None:
        self.kind = kind
        self.transaction = transaction
        self.scope = scope
        self.token = token
        self.foreign = foreign  # entered from another task/thread: hand the session back on exit

    @property
    def owns_transaction(self) -> bool:
        return self.kind is _BEGIN


def _resolve_database(spec: UnitSpec) -> Database | None:
    return spec.database if spec.database is not None else get_default_database()


def _check_kind(spec: UnitSpec, database: Database | None, want_async: bool) -> None:
    if database is not None and database.is_async != want_async:
        if want_async:
            raise ConfigurationError(
                f"{spec.what} is async but {database!r} is sync: use an async driver URL "
                "(sqlite+aiosqlite://, postgresql+asyncpg://, mysql+aiomysql://) or make the function a plain def"
            )
        raise ConfigurationError(
            f"{spec.what} is sync but {database!r} is async: make the function 'async def' "
            "or give it a Database with a sync driver (sqlite://, postgresql+psycopg://, mysql+pymysql://)"
        )


def _check_active_kind(spec: UnitSpec, tx: Transaction, want_async: bool) -> None:
    # With no database to go by, the active unit decides, and a sync unit cannot share an AsyncSession.
    if tx.is_async != want_async:
        raise ConfigurationError(
            f"{spec.what} is {'async' if want_async else 'sync'} but the active unit it would join is "
            f"{'async' if tx.is_async else 'sync'}: pass database=... with a "
            f"{'async' if want_async else 'sync'} Database, or call it the same way as the active unit"
        )


def _check_session_kind(spec: UnitSpec, session: object, want_async: bool) -> None:
    if want_async and not isinstance(session, AsyncSession):
        raise ConfigurationError(
            f"{spec.what} is async: session= must be an AsyncSession, got {type(session).__name__}"
        )
    if not want_async and not isinstance(session, Session):
        raise ConfigurationError(f"{spec.what} is sync: session= must be a Session, got {type(session).__name__}")


def _check_join(spec: UnitSpec, tx: Transaction) -> None:
    # `join_innermost` skips this unless the transaction is read-only or the unit asks for an
    # isolation level: a new reason to refuse a join must widen that condition too.
    if tx.read_only and not spec.read_only:
        raise PropagationError(
            f"{spec.what} is read-write but the active unit is read_only=True: "
            "pass read_only=True to it, or use propagation='requires_new' to write in a unit of its own"
        )
    if spec.isolation_level is not None and spec.isolation_level != tx.isolation_level:
        raise PropagationError(
            f"{spec.what} asks for isolation_level={spec.isolation_level!r} but the active unit runs at "
            f"{tx.isolation_level or 'the default level'}: a joined unit cannot change it; "
            "set the level on the outermost unit, or use propagation='requires_new'"
        )


def _decide(
    spec: UnitSpec, session: AnySession | None, request_tx: Transaction | None, want_async: bool
) -> tuple[Kind, Database | None, Frame | None, Transaction | None]:
    """Which of BEGIN/JOIN/SAVEPOINT/EXTERNAL this entry is, before anything is touched."""
    database = _resolve_database(spec)
    if request_tx is not None:
        _check_kind(spec, request_tx.database, want_async)
        frame = find_frame(request_tx.database)
        if frame is not None and frame.transaction is request_tx:
            return _decide_with_active(spec, frame, request_tx.database)
        if spec.propagation is Propagation.NEVER:
            raise _never_error(spec, request_tx, request_tx.database)
        _check_join(spec, request_tx)
        return _JOIN, request_tx.database, None, request_tx
    frame = find_frame(database)
    if session is not None:
        _check_session_kind(spec, session, want_async)
        if frame is not None and frame.transaction.session is session:
            return _decide_with_active(spec, frame, database)
        if spec.durable:
            raise PropagationError(
                f"{spec.what} is durable=True, so it must begin its own transaction, but it was given a session "
                "with session=, whose transaction the caller commits; drop session= or durable=True"
            )
        if spec.propagation in (_REQUIRES_NEW, _NEVER):
            raise PropagationError(
                f"{spec.what}: propagation={spec.propagation.value!r} cannot use the session passed with session=; "
                "drop session= or use propagation='required'/'nested'"
            )
        return _EXTERNAL, database, frame, None
    if database is None:
        if frame is not None:
            _check_active_kind(spec, frame.transaction, want_async)
            return _decide_with_active(spec, frame, frame.database)
        raise ConfigurationError(
            f"{spec.what} has no database: call uow.configure(Database(url)) at start-up, "
            "pass database=... to the decorator, or pass session=..."
        )
    _check_kind(spec, database, want_async)
    if frame is None:
        if spec.propagation is _MANDATORY:
            raise PropagationError(
                f"{spec.what} has propagation='mandatory' but no unit of work is active for {database!r}: "
                "call it from inside a unit, or use propagation='required'"
            )
        return _BEGIN, database, None, None
    return _decide_with_active(spec, frame, database)


def _decide_with_active(
    spec: UnitSpec, frame: Frame, database: Database | None
) -> tuple[Kind, Database | None, Frame | None, Transaction | None]:
    propagation = spec.propagation
    if propagation is _NEVER:
        raise _never_error(spec, frame.transaction, database)
    if propagation is _REQUIRES_NEW:
        return _BEGIN, database, frame, None
    _check_join(spec, frame.transaction)
    if propagation is _NESTED:
        return _SAVEPOINT, database, frame, None
    return _JOIN, database, frame, None


def _never_error(spec: UnitSpec, active: Transaction, database: Database | None) -> PropagationError:
    outer = active.what or "a request's unit of work"
    if spec.durable:
        return PropagationError(
            f"{spec.what} is durable=True, so it must be the outermost unit of work, but it was called "
            f"inside {outer} on {database!r}: its commit would be part of that unit's transaction. Call it "
            "outside any unit, or drop durable=True to let it join"
        )
    return PropagationError(
        f"{spec.what} has propagation='never' but a unit of work is already active for "
        f"{database!r} (begun by {outer}): call it outside any unit, or use propagation='requires_new'"
    )


def join_innermost(spec: UnitSpec, want_async: bool) -> ActiveUnit | None:
    """The JOIN `_decide` would choose for a unit with ``propagation='required'`` whose database is the
    innermost active unit's, without the rest of `_decide` (the common case of a nested call).

    None for every other situation, which `enter_sync` / `enter_async` then decide in full. Leave the
    unit with `exit_sync` / `exit_async` like any other.
    """
    frame = _current.get()
    if frame is None or not spec.required:
        return None
    database = spec.database
    if database is None:
        database = get_default_database()
        if database is None:
            return None
    if frame.database is not database or database.is_async != want_async:
        return None
    tx = frame.transaction
    if tx.finished:
        return None  # a request unit that has committed already: `find_frame` skips it, so must we
    if want_async:
        if _task_on(frame.loop) is not frame.owner:
            return None  # another task: `enter_async` admits it or refuses it (see `_enter_foreign`)
    elif frame.owner != get_ident():
        return None
    if tx.read_only or spec.isolation_level is not None:
        _check_join(spec, tx)  # what `_decide` would check here; it can only refuse in these two cases
    unit = frame.joined
    if unit is None:
        unit = frame.joined = ActiveUnit(_JOIN, tx, frame.scope, None)
    return unit


def join_request(spec: UnitSpec, tx: Transaction, want_async: bool) -> ActiveUnit | None:
    """The JOIN `_decide` would choose for a unit given ``request_tx=tx`` (the request unit a function's own
    framework connection parameter points at) when `tx` is the innermost active unit's transaction.

    `join_innermost` for the request's transaction: the database is the request unit's, whatever the
    unit's own (as `_decide` does for ``request_tx``). None for every other situation, which
    `enter_sync` / `enter_async` with ``request_tx=tx`` then decide in full.
    """
    frame = _current.get()
    if frame is None or frame.transaction is not tx or not spec.required:
        return None
    database = tx.database
    # `find_frame(database)` is this frame only when it carries the request's database (not None), and
    # `_check_kind` would refuse a unit of the other kind.
    if database is None or frame.database is not database or database.is_async != want_async:
        return None
    if tx.finished or tx.is_async != want_async:
        return None
    if want_async:
        if _task_on(frame.loop) is not frame.owner:
            return None  # another task: `_enter_foreign` admits it or refuses it
    elif frame.owner != get_ident():
        return None
    if tx.read_only or spec.isolation_level is not None:
        _check_join(spec, tx)  # what `_decide_with_active` would check here
    unit = frame.joined
    if unit is None:
        unit = frame.joined = ActiveUnit(_JOIN, tx, frame.scope, None)
    return unit


def enter_sync(
    spec: UnitSpec, *, session: Session | None = None, request_tx: Transaction | None = None
) -> tuple[ActiveUnit, Session]:
    """Enter a sync unit: decide, open or join, and return it with its session."""
    if session is None and request_tx is None:
        if _current.get() is not None:
            joined = join_innermost(spec, False)
            if joined is not None:
                tx = joined.transaction
                return joined, tx.session if tx.session is not None else tx.open_sync()  # type: ignore[return-value]
        return begin_sync(spec)
    return _enter_sync(spec, session, request_tx)


def begin_sync(spec: UnitSpec) -> tuple[ActiveUnit, Session]:
    """`enter_sync(spec)` once `join_innermost` found no plain join: the BEGIN `_decide` would choose
    when no unit is active at all, without the rest of `_decide`; every other case decided in full."""
    if spec.direct_begin and _current.get() is None and _observe.observer is None:
        database = spec.database
        if database is None:
            database = get_default_database()
        if database is not None and not database.is_async:
            tx = Transaction(database, read_only=spec.read_only, isolation_level=spec.isolation_level, what=spec.what)
            opened = tx.open_sync()
            root = tx.root
            return ActiveUnit(_BEGIN, tx, root, _current.set(Frame(database, tx, root, None))), opened
    return _enter_sync(spec, None, None)


def _enter_sync(spec: UnitSpec, session: Session | None, request_tx: Transaction | None) -> tuple[ActiveUnit, Session]:
    kind, database, frame, request = _decide(spec, session, request_tx, want_async=False)
    if kind is _JOIN:
        if request is not None:
            token = _current.set(Frame(request.database, request, request.root, _current.get()))
            return ActiveUnit(kind, request, request.root, token), request.open_sync()
        assert frame is not None
        tx = frame.transaction
        foreign = _enter_foreign(spec, frame)
        if foreign is None:
            return ActiveUnit(kind, tx, frame.scope, None), tx.open_sync()
        token = _current.set(Frame(database, tx, frame.scope, _current.get()))
        unit = ActiveUnit(kind, tx, frame.scope, token, foreign)
        try:
            return unit, tx.open_sync()
        except BaseException as failure:
            exit_sync(unit, failure)
            raise
    if kind is _BEGIN:
        tx = Transaction(database, read_only=spec.read_only, isolation_level=spec.isolation_level, what=spec.what)
        if spec.timeout is not None:
            tx.deadline = Deadline(spec.what, spec.timeout, owner=True)
        observer = _observe.observer  # None unless uow.otel / uow.logs watch units
        opened = tx.open_sync() if observer is None else _open_observed_sync(observer, tx, spec)
        token = _current.set(Frame(database, tx, tx.root, _current.get()))
        return ActiveUnit(kind, tx, tx.root, token), opened
    if kind is _SAVEPOINT:
        assert frame is not None
        tx = frame.transaction
        foreign = _enter_foreign(spec, frame)
        previous = _hold(tx, spec)
        try:
            outer = tx.open_sync()
            _track_savepoints(outer)
            scope = Scope(frame.scope, outer.begin_nested())
        except BaseException:
            if foreign is not None:
                _leave_foreign(ActiveUnit(kind, tx, frame.scope, None, foreign))
            raise
        finally:
            tx.busy = previous
        token = _current.set(Frame(database, tx, scope, _current.get()))
        return ActiveUnit(kind, tx, scope, token, foreign), outer
    assert session is not None
    tx = Transaction(database, session=session, owned=False, read_only=spec.read_only)
    token = _current.set(Frame(database, tx, tx.root, _current.get()))
    return ActiveUnit(kind, tx, tx.root, token), session


async def enter_async(
    spec: UnitSpec, *, session: AsyncSession | None = None, request_tx: Transaction | None = None
) -> tuple[ActiveUnit, AsyncSession]:
    """Enter an async unit: decide, open or join, and return it with its session."""
    if session is None and request_tx is None:
        if _current.get() is not None:
            joined = join_innermost(spec, True)
            if joined is not None:
                tx = joined.transaction
                return joined, tx.session if tx.session is not None else await tx.open_async()  # type: ignore[return-value]
        return await begin_async(spec)
    return await _enter_async(spec, session, request_tx)


async def begin_async(spec: UnitSpec) -> tuple[ActiveUnit, AsyncSession]:
    """`begin_sync`'s async twin: `enter_async(spec)` once `join_innermost` found no plain join."""
    if spec.direct_begin and _current.get() is None and _observe.observer is None:
        database = spec.database
        if database is None:
            database = get_default_database()
        if database is not None and database.is_async:
            tx = Transaction(database, read_only=spec.read_only, isolation_level=spec.isolation_level, what=spec.what)
            opened = await tx.open_async()
            root = tx.root
            return ActiveUnit(_BEGIN, tx, root, _current.set(Frame(database, tx, root, None))), opened
    return await _enter_async(spec, None, None)


async def _enter_async(
    spec: UnitSpec, session: AsyncSession | None, request_tx: Transaction | None
) -> tuple[ActiveUnit, AsyncSession]:
    kind, database, frame, request = _decide(spec, session, request_tx, want_async=True)
    if kind is _JOIN:
        if request is not None:
            opened = await request.open_async()
            token = _current.set(Frame(request.database, request, request.root, _current.get()))
            return ActiveUnit(kind, request, request.root, token), opened
        assert frame is not None
        tx = frame.transaction
        foreign = _enter_foreign(spec, frame)
        if foreign is None:
            return ActiveUnit(kind, tx, frame.scope, None), await tx.open_async()
        token = _current.set(Frame(database, tx, frame.scope, _current.get()))
        unit = ActiveUnit(kind, tx, frame.scope, token, foreign)
        try:
            return unit, await tx.open_async()
        except BaseException as failure:
            await exit_async(unit, failure)
            raise
    if kind is _BEGIN:
        tx = Transaction(database, read_only=spec.read_only, isolation_level=spec.isolation_level, what=spec.what)
        if spec.timeout is not None:
            tx.deadline = Deadline(spec.what, spec.timeout, owner=True)
        observer = _observe.observer  # None unless uow.otel / uow.logs watch units
        opened = await tx.open_async() if observer is None else await _open_observed_async(observer, tx, spec)
        token = _current.set(Frame(database, tx, tx.root, _current.get()))
        return ActiveUnit(kind, tx, tx.root, token), opened
    if kind is _SAVEPOINT:
        assert frame is not None
        tx = frame.transaction
        foreign = _enter_foreign(spec, frame)
        previous = _hold(tx, spec)
        try:
            outer = await tx.open_async()
            _track_savepoints(outer.sync_session)
            scope = Scope(frame.scope, await outer.begin_nested())
        except BaseException:
            if foreign is not None:
                _leave_foreign(ActiveUnit(kind, tx, frame.scope, None, foreign))
            raise
        finally:
            tx.busy = previous
        token = _current.set(Frame(database, tx, scope, _current.get()))
        return ActiveUnit(kind, tx, scope, token, foreign), outer
    assert session is not None
    tx = Transaction(database, session=session, owned=False, read_only=spec.read_only)
    token = _current.set(Frame(database, tx, tx.root, _current.get()))
    return ActiveUnit(kind, tx, tx.root, token), session


def exit_sync(unit: ActiveUnit, exc: BaseException | None) -> None:
    """Leave a sync unit. Never swallows `exc` (the caller re-raises it); may raise `RollbackOnlyError`."""
    if unit.foreign is not None:
        _pop_foreign_frame(unit)
        _exit_foreign_sync(unit, exc)
        return
    if unit.token is not None:
        _current.reset(unit.token)
    kind = unit.kind
    if kind is _JOIN:
        # Joined: the owner decides; a failure here dooms the shared scope.
        if exc is not None:
            unit.scope.rollback_only = True
        return
    if kind is _BEGIN:
        # Owner: commit or roll back, close, run hooks.
        tx = unit.transaction
        if tx.observed is None:
            tx.finish_sync(exc)
        else:
            tx.observed.finish_sync(tx.finish_sync, exc)
        return
    if kind is _SAVEPOINT:
        _exit_savepoint_sync(unit, exc)
        return
    # External: the caller's session, the caller's commit.
    _exit_external(unit, exc)


async def exit_async(unit: ActiveUnit, exc: BaseException | None) -> None:
    """Leave an async unit. Never swallows `exc` (the caller re-raises it); may raise `RollbackOnlyError`."""
    if unit.foreign is not None:
        _pop_foreign_frame(unit)
        await _exit_foreign_async(unit, exc)
        return
    if unit.token is not None:
        _current.reset(unit.token)
    kind = unit.kind
    if kind is _JOIN:
        # Joined: the owner decides; a failure here dooms the shared scope.
        if exc is not None:
            unit.scope.rollback_only = True
        return
    if kind is _BEGIN:
        # Owner: commit or roll back, close, run hooks.
        tx = unit.transaction
        if tx.observed is None:
            await tx.finish_async(exc)
        else:
            await tx.observed.finish_async(tx.finish_async, exc)
        return
    if kind is _SAVEPOINT:
        await _exit_savepoint_async(unit, exc)
        return
    # External: the caller's session, the caller's commit.
    _exit_external(unit, exc)


def _observe_unit(observer: Observer, tx: Transaction, spec: UnitSpec) -> UnitRecord:
    """Give an owning unit its record (`uow._observe`) before it opens, so what opening runs is part of it."""
    record = tx.observed = observer.unit_began(
        function=spec.what,
        database=tx.database,
        propagation=spec.propagation.value,
        read_only=spec.read_only,
        isolation_level=spec.isolation_level,
    )
    return record


def _open_observed_sync(observer: Observer, tx: Transaction, spec: UnitSpec) -> Session:
    record = _observe_unit(observer, tx, spec)
    try:
        return tx.open_sync()
    except BaseException as failure:
        record.failed(failure)
        raise


async def _open_observed_async(observer: Observer, tx: Transaction, spec: UnitSpec) -> AsyncSession:
    record = _observe_unit(observer, tx, spec)
    try:
        return await tx.open_async()
    except BaseException as failure:
        record.failed(failure)
        raise


def _pop_foreign_frame(unit: ActiveUnit) -> None:
    token = unit.token
    if token is None:
        return
    # ValueError: entered in a context that is gone (a framework resolved a generator dependency in a
    # task of its own and closes it from the request's task); the frame went with that task's context.
    with contextlib.suppress(ValueError):
        _current.reset(token)


def _mark_busy(unit: ActiveUnit) -> object:
    tx, joined = unit.transaction, unit.foreign
    assert joined is not None
    previous, tx.busy = tx.busy, joined.user
    return previous


def _exit_foreign_sync(unit: ActiveUnit, exc: BaseException | None) -> None:
    # A join or savepoint entered from another thread: end it like any other, then hand the session back.
    try:
        if unit.kind is _SAVEPOINT and not unit.transaction.finished:
            # Releasing or rolling back is a statement too: nobody may end the unit under it.
            previous = _mark_busy(unit)
            try:
                _exit_savepoint_sync(unit, exc)
            finally:
                unit.transaction.busy = previous
        elif exc is not None:
            unit.scope.rollback_only = True
    finally:
        late = _leave_foreign(unit)
        tx = unit.transaction
        if tx.abandoned and not _prune(tx):
            tx.close_abandoned_sync()
    if late is not None and exc is None:
        raise late


async def _exit_foreign_async(unit: ActiveUnit, exc: BaseException | None) -> None:
    try:
        if unit.kind is _SAVEPOINT and not unit.transaction.finished:
            previous = _mark_busy(unit)
            try:
                await _exit_savepoint_async(unit, exc)
            finally:
                unit.transaction.busy = previous
        elif exc is not None:
            unit.scope.rollback_only = True
    finally:
        late = _leave_foreign(unit)
        tx = unit.transaction
        cancellation = None
        if tx.abandoned and not _prune(tx):
            _, cancellation = await _to_completion(tx.close_abandoned_async())
    if cancellation is not None:
        raise cancellation
    if late is not None and exc is None:
        raise late


def _track_savepoints(session: Session) -> None:
    try:
        bind = session.get_bind()
    except UnboundExecutionError:
        return  # several binds and no default: rolled-back savepoints stay until the transaction ends
    track_savepoint_ends(bind)


def _exit_savepoint_sync(unit: ActiveUnit, exc: BaseException | None) -> None:
    savepoint = unit.scope.savepoint
    assert isinstance(savepoint, SessionTransaction)  # pyright: ignore[reportUnnecessaryIsInstance]
    dropped: list[tuple[AnyHook, Scope, int]] = []
    try:
        _end_savepoint(unit, savepoint, exc, dropped)
    finally:
        if dropped:  # rolled back: its on_rollback / on_completion hooks run now, its on_commit ones never
            unit.transaction.run_hooks_sync(Outcome.ROLLED_BACK, dropped)


async def _exit_savepoint_async(unit: ActiveUnit, exc: BaseException | None) -> None:
    savepoint = unit.scope.savepoint
    assert isinstance(savepoint, AsyncSessionTransaction)
    sync_savepoint = savepoint.sync_transaction
    assert sync_savepoint is not None
    dropped: list[tuple[AnyHook, Scope, int]] = []
    # The same steps as the sync twin, run where SQLAlchemy's async layer runs its sync core.
    try:
        await savepoint.session.run_sync(lambda _: _end_savepoint(unit, sync_savepoint, exc, dropped))
    finally:
        if dropped:
            await unit.transaction.run_hooks_async(Outcome.ROLLED_BACK, dropped)


def _end_savepoint(
    unit: ActiveUnit,
    savepoint: SessionTransaction,
    exc: BaseException | None,
    dropped: list[tuple[AnyHook, Scope, int]],
) -> None:
    """Release the savepoint, or roll back to it; either way the enclosing unit can go on afterwards.

    A failed release (the flush before RELEASE hit a constraint, or RELEASE itself failed) rolls
    back to the savepoint, as Django's atomic does, and the caller sees that failure. Only when
    the savepoint cannot be rolled back either, or its connection was lost, is the enclosing
    scope marked rollback-only.
    """
    scope = unit.scope
    if exc is None and not scope.rollback_only:
        # Savepoint, success: release it; its hooks now belong to the enclosing scope.
        _forget_savepoint_ends(savepoint)
        try:
            savepoint.commit()
        except BaseException as failure:
            # Savepoint, failed release: roll back to it, forget its hooks, raise the failure.
            dropped.extend(unit.transaction.drop_hooks_within(scope))
            _roll_back_savepoint(unit, savepoint, failure)
            if _refused_after_a_swallowed_error(failure):
                raise _release_refused_error(unit.transaction) from failure
            raise
        _forget_savepoint_ends(savepoint)  # released: nothing left to finish on its connection
        return
    # Savepoint, failure, swallowed inner failure or set_rollback_only(): roll back to it, forget its hooks.
    dropped.extend(unit.transaction.drop_hooks_within(scope))
    _roll_back_savepoint(unit, savepoint, exc)
    if exc is None and not scope.quiet:
        raise _rollback_only_error(unit.transaction, savepoint=True)


def _roll_back_savepoint(unit: ActiveUnit, savepoint: SessionTransaction, primary: BaseException | None) -> None:
    """Roll back to the savepoint and release it; if that fails, or the connection is lost, the enclosing scope is doomed.

    A savepoint whose flush failed is already rolled back in the database (SQLAlchemy did it and
    deactivated it): closing it here is what makes the session usable again. Releasing a
    rolled-back savepoint frees it on the server (Django ticket #23074): PostgreSQL keeps it until
    the transaction ends otherwise, so a long unit with many failed nested units would pile them up.
    """
    try:
        if _is_open(savepoint):
            if savepoint.is_active:
                _forget_savepoint_ends(savepoint)
            savepoint.rollback()
        _release_rolled_back(savepoint)
    except BaseException as error:
        _mark_failed(unit)
        if primary is None or _is_interrupt(error):
            raise
        _note_secondary(primary, "rolling back to the savepoint", error)
        return
    if _connection_lost(savepoint):
        # The connection died (its transaction with it): the enclosing unit cannot commit either.
        _mark_failed(unit)


def _connection_lost(savepoint: SessionTransaction) -> bool:
    try:
        connections = _savepoint_connections(savepoint)
    except Exception:
        return True  # asking for the connection failed: it is in no state to go on
    return any(connection.invalidated or connection.closed for connection in connections)


def _is_open(savepoint: SessionTransaction) -> bool:
    """Whether the savepoint is still in the session's chain of transactions (active or awaiting rollback)."""
    transaction = savepoint.session.get_nested_transaction()
    while transaction is not None:
        if transaction is savepoint:
            return True
        transaction = transaction.parent
    return False


def _savepoint_connections(savepoint: SessionTransaction) -> frozenset[Connection]:
    connections: frozenset[Connection] | None = getattr(savepoint, "connections", None)
    if connections is not None:
        return connections
    # SessionTransaction.connections is public from SQLAlchemy 2.1.7 on. Before, the session's
    # connection is the one (uow's sessions have one bind); it is asked for once the savepoint is
    # closed, when the enclosing transaction, which holds it, is the session's again.
    session = savepoint.session
    if _is_open(savepoint) or not session.in_transaction():
        return frozenset()
    return frozenset({session.connection()})


def _forget_savepoint_ends(savepoint: SessionTransaction) -> None:
    for connection in _savepoint_connections(savepoint):
        forget_savepoint_end(connection)


def _release_rolled_back(savepoint: SessionTransaction) -> None:
    """Finish in the database what SQLAlchemy's rollback of the savepoint leaves undone.

    SQLAlchemy emitted ROLLBACK TO SAVEPOINT: emit RELEASE too. Its RELEASE failed, so it did not
    roll back (it never does after a failed RELEASE): emit ROLLBACK TO SAVEPOINT, then RELEASE.
    """
    for connection in _savepoint_connections(savepoint):
        ended = savepoint_end(connection)
        if ended is None:
            continue
        how, name = ended
        if how == "release":
            connection.dialect.do_rollback_to_savepoint(connection, name)
        connection.dialect.do_release_savepoint(connection, name)


# PostgreSQL's in_failed_sql_transaction: a statement failed earlier and only ROLLBACK is accepted now.
_FAILED_TRANSACTION_SQLSTATE = "25P02"


def _refused_after_a_swallowed_error(failure: BaseException) -> bool:
    """Whether RELEASE was refused because a statement inside the savepoint failed and the body went on."""
    error: BaseException | None = failure
    for _ in range(3):  # SQLAlchemy's error, the driver's (or its async adapter's), what that came from
        if error is None:
            return False
        for attribute in ("sqlstate", "pgcode"):  # asyncpg and psycopg 3 / psycopg2
            if getattr(error, attribute, None) == _FAILED_TRANSACTION_SQLSTATE:
                return True
        orig = getattr(error, "orig", None)
        error = orig if isinstance(orig, BaseException) else error.__cause__
    return False


def _release_refused_error(tx: Transaction) -> RollbackOnlyError:
    return RollbackOnlyError(
        f"a savepoint on {tx.database!r} was rolled back instead of released: a statement inside the "
        "nested unit failed and its error was swallowed, so the database refused RELEASE. Let the "
        "error propagate out of the nested unit (the enclosing unit can catch it and go on)"
    )


def _mark_failed(unit: ActiveUnit) -> None:
    # The savepoint could not be rolled back: the enclosing transaction is in an unknown state,
    # so it must not commit.
    parent = unit.scope.parent
    if parent is not None:
        parent.rollback_only = True


def _exit_external(unit: ActiveUnit, exc: BaseException | None) -> None:
    if exc is None and unit.scope.rollback_only:
        raise RollbackOnlyError(
            "an inner unit failed inside the session passed with session=, and its error was swallowed: "
            "roll that session back instead of committing it, or run the inner unit with propagation='nested'"
        )


def _finished_error(tx: Transaction) -> NoActiveUnitOfWork:
    return NoActiveUnitOfWork(
        f"the unit of work on {tx.database!r} has already committed or rolled back (a request's unit ends "
        "when its response starts): open a unit of its own for this work instead of joining that one"
    )


def _flush_failed_error(tx: Transaction) -> RollbackOnlyError:
    return RollbackOnlyError(
        f"the unit of work on {tx.database!r} was rolled back instead of committed: a flush inside it failed "
        "(SQLAlchemy rolled the transaction back) and the error was swallowed. Let the error propagate, "
        "or run the statements that may fail in a unit with propagation='nested' to recover from it"
    )


def _rollback_only_error(tx: Transaction, *, savepoint: bool = False) -> RollbackOnlyError:
    where = "savepoint" if savepoint else f"unit of work on {tx.database!r}"
    refused = tx.session.info.get(_REFUSED_KEY) if tx.session is not None and not savepoint else None
    if refused is not None and refused[0] is tx.root:
        return RollbackOnlyError(
            f"the {where} was rolled back instead of committed: code inside it caught this error and "
            f"carried on: {refused[1]}"
        )
    return RollbackOnlyError(
        f"the {where} was rolled back instead of committed: an inner unit that joined it raised, "
        "and the exception was swallowed. Let the exception propagate, or run the inner unit with "
        "propagation='nested' so its failure can be recovered from"
    )


# -- one task at a time on a session ----------------------------------------------------------
#
# A unit's frame is inherited by every task and thread started inside it (they copy the context).
# A join from the task/thread that pushed the frame is the common case and costs one identity
# compare (`join_innermost`). A join from another one takes the slow path below: it is admitted only
# while nobody else uses the session (the frame's owner is then waiting for it: Starlette running the
# endpoint in a task of its own, a sync endpoint in a worker thread, `await wait_for(child(), 5)`),
# and holds the session until it leaves. A second task joining meanwhile (gather, TaskGroup,
# create_task) is refused with `PropagationError` and the whole unit is marked rollback-only; so is
# a statement from any task but the holder (a parent querying while its child runs). Statements are
# checked by Session events, per statement; a unit never commits while a joined one is still running.


class ForeignJoin:
    """A unit entered from a task or thread other than the one that pushed the frame it joined."""

    __slots__ = ("user", "what")

    def __init__(self, user: object, what: str) -> None:
        self.user = user
        self.what = what


_TX_KEY = "uow_transaction"  # session.info: the Transaction of a session uow made
_CLOSED_KEY = "uow_closed"  # session.info: uow has closed that session; it may never begin again
_lock = threading.Lock()  # the slow path and the statement checks of sync sessions (threads)
_NOT_FLUSHING: Any = object()


def _who(user: object) -> str:
    if isinstance(user, asyncio.Task):
        return f"task {user.get_name()!r}"
    return f"thread {user}"


def _enter_foreign(spec: UnitSpec, frame: Frame) -> ForeignJoin | None:
    """None when this task/thread pushed `frame`; else admit it (a `ForeignJoin`) or refuse it."""
    tx = frame.transaction
    me = current_user(tx.is_async)
    if frame.owner == me:
        return None
    with _lock:
        if tx.finished:
            raise _finished_error(tx)
        _refuse_if_taken(spec, tx, holder=frame.owner, me=me)
        joined = ForeignJoin(me, spec.what)
        tx.inside.append(joined)
    return joined


def _hold(tx: Transaction, spec: UnitSpec) -> object:
    """Before SAVEPOINT (a statement outside the Session's events): refuse it as a statement would be
    refused, then mark this task/thread as in a statement; what was marked before (to restore)."""
    me = current_user(tx.is_async)
    with _lock:
        busy = tx.busy
        _refuse_if_taken(spec, tx, holder=me, me=me)
        tx.busy = me
    return busy


def _refuse_if_taken(spec: UnitSpec, tx: Transaction, *, holder: object, me: object) -> None:
    """Refuse `spec`'s unit when a join from a task/thread other than `holder` is running, or another
    task/thread than `me` is in a statement on the session (call with `_lock` held)."""
    inside = _prune(tx)
    if inside and inside[-1].user != holder:
        raise _concurrent_join_error(spec, tx, f"{inside[-1].what} (joined from {_who(inside[-1].user)})")
    busy = tx.busy
    if busy is not None and busy != me:
        raise _concurrent_join_error(spec, tx, f"{_who(busy)}, in a statement on it right now")


def _leave_foreign(unit: ActiveUnit) -> PropagationError | None:
    """Hand the session back; the error a straggler gets when its unit ended while it ran."""
    joined = unit.foreign
    assert joined is not None
    tx = unit.transaction
    with _lock:
        inside = _prune(tx)
        if inside and inside[-1] is joined:
            inside.pop()
        elif joined in inside:
            # Something that joined through this unit is still running after it: the unit is doomed.
            tx.root.rollback_only = True
            inside.remove(joined)
    if _task_finished(joined.user):
        return None  # left open by a task that has finished (a generator dependency): nobody used it meanwhile
    if tx.finished:
        return PropagationError(
            f"{joined.what} was still running in {_who(joined.user)} when the unit of work it joined on "
            f"{tx.database!r} ended (begun by {tx.what or 'a request'}): that unit rolled back, and so "
            "did this work. Await the task before the unit returns, or give the function "
            "propagation='requires_new' so it has a session of its own"
        )
    return None


def _task_finished(user: object) -> bool:
    return isinstance(user, asyncio.Task) and user.done()


def _prune(tx: Transaction) -> list[ForeignJoin]:
    """`tx.inside` without the joins whose task has finished.

    A task can finish while a unit it entered is still open: a framework resolves a generator
    dependency in a task of its own, which ends at the ``yield``, and closes the generator later
    from the request's task. Such a join uses the session no longer: it neither refuses other
    users nor stops the unit from committing.
    """
    inside = tx.inside
    if inside and any(_task_finished(joined.user) for joined in inside):
        inside[:] = [joined for joined in inside if not _task_finished(joined.user)]
    return inside


def _concurrent_join_error(spec: UnitSpec, tx: Transaction, holder: str) -> PropagationError:
    tx.root.rollback_only = True
    return PropagationError(
        f"{spec.what} was called from {_who(current_user(tx.is_async))} while {holder} is using the unit "
        f"of work on {tx.database!r} (begun by {tx.what or 'a request'}): two tasks or threads never "
        "use one session at the same time, so the whole unit will roll back. Await the calls one after "
        f"another, or give {spec.what} propagation='requires_new' so each call has a session of its own"
    )


def _straggler_error(tx: Transaction) -> PropagationError:
    if not tx.inside:
        return PropagationError(
            f"the unit of work on {tx.database!r} (begun by {tx.what or 'a request'}) ended while "
            f"{_who(tx.busy)} was in a statement on its session: it rolled back instead of committing. "
            "Await every task that uses the unit's session (or its services) before the unit returns"
        )
    running = ", ".join(f"{j.what} in {_who(j.user)}" for j in tx.inside)
    return PropagationError(
        f"the unit of work on {tx.database!r} (begun by {tx.what or 'a request'}) ended while a unit that "
        f"joined it was still running ({running}): it rolled back instead of committing. Await every "
        "task that uses the unit before it returns, or give those functions propagation='requires_new'"
    )


def _note_straggler(exc: BaseException, straggler: PropagationError) -> None:
    # The unit was failing anyway: its own error stays the one raised, and says a child still ran.
    add_note = getattr(exc, "add_note", None)
    if add_note is not None:
        add_note(f"uow: {straggler}")
    logger.warning("uow: %s", straggler)


def _busy_elsewhere(tx: Transaction, ender: object = None) -> bool:
    busy = tx.busy
    return busy is not None and busy is not ender and busy != current_user(tx.is_async)


def _closed_error(tx: Transaction) -> NoActiveUnitOfWork:
    return NoActiveUnitOfWork(
        f"this session belonged to the unit of work {tx.what or 'of a request'} on {tx.database!r}, "
        "which has ended and closed it: a service or session kept after its unit (on self, in a "
        "closure, in a task still running) cannot be used. Call a decorated function, or open "
        "'with unit_of_work()', to work in a new unit"
    )


def _seal(session: AnySession) -> None:
    info = session.info
    if _TX_KEY in info:
        info[_CLOSED_KEY] = True


def _claim(tx: Transaction, info: dict[Any, Any]) -> object:
    """Mark this task/thread as in a statement on the session: what was marked before (to restore).

    `_check_statement` can only refuse, or prune, when a join from elsewhere is inside, someone else
    is in a statement or the session is sealed: in the common case (only the unit's own task or thread
    uses the session) the check is these few reads.
    """
    if tx.is_async:
        me = current_user(True)
        busy = tx.busy
        if tx.inside or (busy is not None and busy != me) or _CLOSED_KEY in info:
            _check_statement(tx, info)
        tx.busy = me
        return busy
    me = get_ident()
    with _lock:
        busy = tx.busy
        if tx.inside or (busy is not None and busy != me) or _CLOSED_KEY in info:
            _check_statement(tx, info)
        tx.busy = me
    return busy


def _check_statement(tx: Transaction, info: dict[Any, Any]) -> object:
    """Who runs the statement, if it may run now; else a uow error (and the unit rolls back)."""
    if _CLOSED_KEY in info:
        raise _closed_error(tx)
    me = current_user(tx.is_async)
    inside = _prune(tx)
    if inside and inside[-1].user != me:
        holder = inside[-1]
        tx.root.rollback_only = True
        raise PropagationError(
            f"{_who(me)} used the session of the unit of work on {tx.database!r} (begun by "
            f"{tx.what or 'a request'}) while {holder.what}, which joined it from {_who(holder.user)}, "
            "is running: two tasks or threads never use one session at the same time, so the whole unit "
            "will roll back. Await that call before using the session again"
        )
    busy = tx.busy
    if busy is not None and busy != me:
        tx.root.rollback_only = True
        raise PropagationError(
            f"{_who(me)} used the session of the unit of work on {tx.database!r} (begun by "
            f"{tx.what or 'a request'}) while {_who(busy)} is in a statement on it: two tasks or threads "
            "never use one session at the same time, so the whole unit will roll back. Await one "
            "call before making the next, or give each its own unit with propagation='requires_new'"
        )
    return me


def _guard_execute(state: Any) -> Any:
    """Session `do_orm_execute`: check who runs the statement, and say who is in one until it returns."""
    session = state.session
    info = session.info
    tx = info.get(_TX_KEY)
    if tx is None:
        return None
    previous = _claim(tx, info)
    try:
        return state.invoke_statement()
    except Exception as failure:
        if _CLOSED_KEY in info:
            # The unit ended under this statement (a straggler task): its connection was thrown away.
            raise _closed_error(tx) from failure
        raise
    finally:
        tx.busy = previous
        if tx.abandoned and previous is None and not _prune(tx):
            _close_abandoned_soon(tx)


def _guard_flush(session: Session, flush_context: Any, instances: Any) -> None:
    info = session.info
    tx = info.get(_TX_KEY)
    if tx is None:
        return
    if not session.is_active:  # the innermost transaction (savepoint or root) is not active
        # SQLAlchemy raises PendingRollbackError right after this event, before the flush begins, and
        # neither flush event that releases a claim follows: check who flushes, claim nothing.
        with _lock:
            _check_statement(tx, info)
        return
    info[_FLUSH_PREVIOUS_KEY] = _claim(tx, info)


_FLUSH_PREVIOUS_KEY = "uow_busy_before_flush"


def _flush_ended(session: Session, *_: Any) -> None:
    info = session.info
    previous = info.pop(_FLUSH_PREVIOUS_KEY, _NOT_FLUSHING)
    if previous is not _NOT_FLUSHING:
        tx = info[_TX_KEY]
        tx.busy = previous
        if tx.abandoned and previous is None and not _prune(tx) and tx.is_async:
            _close_abandoned_soon(tx)


_closing: set[asyncio.Task[Any]] = set()  # cleanups scheduled by `_close_abandoned_soon`, kept alive


def _close_abandoned_soon(tx: Transaction) -> None:
    """The unit ended while a task that never joined it (a plain coroutine on its session) was in a
    statement: that statement is over now, so roll back and close the session (sealed already).

    Not from here, inside SQLAlchemy's execute or flush: async, in a task of its own; sync, at once
    (an execute's result is then closed too, and the thread's next use gets the sealed-session error).
    """
    if not tx.is_async:
        tx.close_abandoned_sync()
        return
    task = asyncio.get_running_loop().create_task(tx.close_abandoned_async())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


def _refuse_reopening(session: Session, transaction: SessionTransaction) -> None:
    """Session `after_transaction_create`: a session uow closed never begins again (a kept service)."""
    info = session.info
    if _CLOSED_KEY in info and transaction.parent is None:
        transaction.close()  # undo the autobegin: nothing may be left for the next call to reuse
        raise _closed_error(info[_TX_KEY])


_GUARDS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("do_orm_execute", _guard_execute),
    ("before_flush", _guard_flush),
    ("after_flush_postexec", _flush_ended),
    ("after_soft_rollback", _flush_ended),
    ("after_transaction_create", _refuse_reopening),
)
_guarded: set[type[Session]] = set()


class GuardedSession(Session):
    """The sync half of the AsyncSessions uow makes when the factory names no class of its own.

    The statement checks are Session events on a class; listening on `Session` itself would cost
    every session in the process (a `do_orm_execute` listener makes SQLAlchemy build an execute
    state per statement), so they go on the classes uow's sessions are made of: each sync
    sessionmaker's own subclass, an async factory's sync_session_class, or this class.
    """


def _guard_class(cls: type[Session]) -> None:
    if cls in _guarded:
        return
    with _lock:
        if cls not in _guarded:
            for name, listener in _GUARDS:
                event.listen(cls, name, listener)
            _guarded.add(cls)


# -- session effects --------------------------------------------------------------------------


def _new_session(database: Database, read_only: bool, isolation_level: str | None) -> AnySession:
    """A session for a unit that begins its own transaction (on a replica when it is read-only).

    With an isolation level, the session is bound to the engine with that level as an execution
    option, so every connection it takes runs at it: also after a commit or rollback inside the unit.
    """
    factory = database.session_factory_for(read_only=True) if read_only else database.session_factory
    options: dict[str, Any] = {}
    if isolation_level is not None:
        bind = factory.kw.get("bind")
        if isinstance(bind, (Engine, AsyncEngine)):
            options["bind"] = bind.execution_options(isolation_level=isolation_level)
    if isinstance(factory, sessionmaker):
        if factory.class_ not in _guarded:
            _guard_class(factory.class_)  # its own subclass: only the sessions it makes
        return factory(**options) if options else factory()
    sync_class = factory.kw.get("sync_session_class") or factory.class_.sync_session_class
    if sync_class is Session:
        options["sync_session_class"] = sync_class = GuardedSession
    if sync_class not in _guarded:
        _guard_class(sync_class)
    return factory(**options)


def _apply_begin_options_sync(session: Session, read_only: bool, isolation_level: str | None) -> None:
    if isolation_level is None and not read_only:
        return
    if read_only:
        event.listen(session, "after_begin", _refuse_writes)
    session.connection(execution_options=_isolation_option(session, isolation_level))


async def _apply_begin_options_async(session: AsyncSession, read_only: bool, isolation_level: str | None) -> None:
    if isolation_level is None and not read_only:
        return
    if read_only:
        event.listen(session.sync_session, "after_begin", _refuse_writes)
    await session.connection(execution_options=_isolation_option(session.sync_session, isolation_level))


def _isolation_option(session: Session, isolation_level: str | None) -> dict[str, Any]:
    # Connecting now surfaces a bad level at the unit's start. A session made from a factory without an
    # engine bind (`_new_session` could not bind the level) gets it on this first connection only.
    if isolation_level is None or _bound_level(session) == isolation_level:
        return {}
    return {"isolation_level": isolation_level}


def _bound_level(session: Session) -> object:
    bind = session.bind
    return bind.get_execution_options().get("isolation_level") if isinstance(bind, Engine) else None


def _refuse_writes(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    """Ask the database to refuse writes in every transaction a read-only unit's session begins.

    Every one, not just the first: code that commits or rolls back inside the unit gets a new
    transaction, and MySQL's ``SET TRANSACTION READ ONLY`` covers a single transaction only.
    """
    if transaction.nested:
        return
    dialect = connection.dialect.name
    statement = _read_only_statement(dialect)
    if statement is None:
        return
    on_callers_connection = isinstance(session.bind, Connection)
    if dialect == "sqlite" and not on_callers_connection:
        _switch_query_only_off_on_return(connection)
    elif dialect in ("mysql", "mariadb") and on_callers_connection:
        return  # the caller's transaction is running, and MySQL cannot make a running transaction read-only
    connection.exec_driver_sql(statement)


def _end_read_only_sync(session: Session, read_only: bool) -> None:
    # A caller's connection (uow.testing binds units to one) does not go back to the pool when the unit
    # ends, so the pool cannot undo SQLite's query_only on it: undo it here. On a pooled connection the
    # pool's reset hook undoes it too; doing it here as well does not depend on how the pool gets it back.
    if not read_only:
        return
    bind = session.bind
    if isinstance(bind, Connection):
        if bind.dialect.name == "sqlite":
            bind.exec_driver_sql("PRAGMA query_only = OFF")
        return
    if session.in_transaction() and session.get_bind().dialect.name == "sqlite":
        try:
            session.connection().exec_driver_sql("PRAGMA query_only = OFF")
        except Exception:
            logger.debug("uow: could not switch query_only off; the pool's reset hook will", exc_info=True)


async def _end_read_only_async(session: AsyncSession, read_only: bool) -> None:
    if not read_only:
        return
    bind = session.bind
    if isinstance(bind, AsyncConnection):
        if bind.dialect.name == "sqlite":
            await bind.exec_driver_sql("PRAGMA query_only = OFF")
        return
    if session.in_transaction() and session.get_bind().dialect.name == "sqlite":
        try:
            await (await session.connection()).exec_driver_sql("PRAGMA query_only = OFF")
        except Exception:
            logger.debug("uow: could not switch query_only off; the pool's reset hook will", exc_info=True)


def _read_only_statement(dialect_name: str) -> str | None:
    if dialect_name == "sqlite":
        return "PRAGMA query_only = ON"
    if dialect_name in ("postgresql", "mysql", "mariadb"):
        return "SET TRANSACTION READ ONLY"
    return None


_QUERY_ONLY_KEY = "uow_query_only"


def _switch_query_only_off_on_return(connection: Connection) -> None:
    # SQLite's query_only belongs to the connection, not the transaction: undo it when the pool takes the
    # connection back, whatever the unit did with its session (commit, rollback, close) before that.
    connection.connection.info[_QUERY_ONLY_KEY] = True
    pool = connection.engine.pool
    if not event.contains(pool, "reset", _reset_query_only):
        event.listen(pool, "reset", _reset_query_only)


def _reset_query_only(dbapi_connection: Any, record: Any, reset_state: Any) -> None:
    info = getattr(record, "info", None)
    if not info or not info.pop(_QUERY_ONLY_KEY, False):
        return
    if reset_state.terminate_only or not reset_state.asyncio_safe:
        return  # the connection is being thrown away
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA query_only = OFF")
    finally:
        cursor.close()


def _rollback_preserving_sync(session: Session, exc: BaseException | None) -> None:
    try:
        session.rollback()
    except BaseException as rollback_error:
        if exc is None or _is_interrupt(rollback_error):
            raise
        _note_secondary(exc, "rolling back", rollback_error)
        _invalidate_sync(session, exc)


async def _rollback_preserving_async(session: AsyncSession, exc: BaseException | None) -> None:
    try:
        await session.rollback()
    except BaseException as rollback_error:
        if exc is None or _is_interrupt(rollback_error):
            raise
        _note_secondary(exc, "rolling back", rollback_error)
        await _invalidate_async(session, exc)


def _rollback_quietly_sync(session: Session) -> None:
    try:
        session.rollback()
    except Exception:
        logger.exception("rollback after a failed commit failed")
        _invalidate_sync(session, None)


async def _rollback_quietly_async(session: AsyncSession) -> None:
    try:
        await session.rollback()
    except Exception:
        logger.exception("rollback after a failed commit failed")
        await _invalidate_async(session, None)


def _close_preserving_sync(session: Session, exc: BaseException | None) -> None:
    try:
        session.close()
    except BaseException as close_error:
        _invalidate_sync(session, None)
        if exc is None or _is_interrupt(close_error):
            raise
        _note_secondary(exc, "closing the session", close_error)
    finally:
        _seal(session)


async def _close_preserving_async(session: AsyncSession, exc: BaseException | None) -> None:
    try:
        await _close_async(session)
    except BaseException as close_error:
        await _invalidate_async(session, None)
        if exc is None or _is_interrupt(close_error):
            raise
        _note_secondary(exc, "closing the session", close_error)
    finally:
        _seal(session)


def _invalidate_sync(session: Session, exc: BaseException | None) -> None:
    """Throw the session's connections away: what is left when rolling back or closing failed.

    The connection may be busy (another thread in a statement) or dead (a dropped socket); either
    way it must neither go back to the pool nor stay checked out with a transaction open on the
    server. Invalidating closes it; the server rolls back what it held.
    """
    try:
        session.invalidate()
    except Exception as failure:
        if exc is not None:
            _note_secondary(exc, "invalidating the connection", failure)
        else:
            logger.exception("uow: invalidating the session's connection failed")
    finally:
        _seal(session)


async def _invalidate_async(session: AsyncSession, exc: BaseException | None) -> None:
    try:
        await session.invalidate()
    except Exception as failure:
        if exc is not None:
            _note_secondary(exc, "invalidating the connection", failure)
        else:
            logger.exception("uow: invalidating the session's connection failed")
    finally:
        _seal(session)


_COMMITTED = "uow_committed"


@event.listens_for(Session, "after_commit")
def _note_commit(session: Session) -> None:
    # Fires once COMMIT has returned, before the session releases its connection (which can still fail).
    info = session.info
    if _COMMITTED in info and not session.in_nested_transaction():
        info[_COMMITTED] = True


# -- nobody commits behind the unit's back -----------------------------------------------------
#
# A session uow owns carries its Transaction in ``session.info`` while the unit runs (`_guard`); the
# unit's ending removes it (`_release_guard`) before uow commits, rolls back and closes, so only
# user code meets the listeners below. They are registered on the Session class (an AsyncSession's
# calls reach its sync_session), so sessions from any factory, request units and uow.testing's
# bound sessions are all covered, and a session passed with ``session=`` (never guarded) is not.
# SQLAlchemy has an event before a commit but none before a rollback or a close: a commit is refused
# before anything is written; a rollback or close is reported right after it happened, and the unit
# is marked rollback-only so that what is left of it can never be committed.

_GUARD_KEY = "uow_guarded_by"
# The first refusal, as (the scope it marked rollback-only, its message): the RollbackOnlyError that
# ends a unit whose code caught the refusal and carried on repeats it.
_REFUSED_KEY = "uow_refused"


def _guard(session: AnySession, tx: Transaction) -> None:
    session.info[_GUARD_KEY] = tx


def _release_guard(info: dict[Any, Any]) -> None:
    info.pop(_GUARD_KEY, None)


def release_guard(session: AnySession) -> None:
    """Let uow's own code (uow.testing closing sessions a test left open) end a guarded session."""
    _release_guard(session.info)


@event.listens_for(Session, "before_commit")
def _refuse_commit(session: Session) -> None:
    tx: Transaction | None = session.info.get(_GUARD_KEY)
    if tx is None:
        return
    nested = session.get_nested_transaction()
    if nested is not None and not _is_unit_savepoint(tx, nested):
        return  # releasing a savepoint the user's own code began ('with session.begin_nested():')
    # The root, or a savepoint of a `nested` unit still running (uow releases its own only after the
    # unit's frame is gone): either way part of the unit would be committed behind its back.
    error = _commit_refused(tx, advanced_alchemy=_called_from("advanced_alchemy."))
    scope = _innermost_scope(tx)
    scope.rollback_only = True
    session.info.setdefault(_REFUSED_KEY, (scope, str(error)))
    raise error


@event.listens_for(Session, "after_transaction_end")
def _report_end(session: Session, transaction: SessionTransaction) -> None:
    tx: Transaction | None = session.info.get(_GUARD_KEY)
    if tx is None or transaction.parent is not None:  # the dict read first: most sessions are not guarded
        return
    # User code rolled back or closed the unit's transaction: all of its work so far is gone.
    scope: Scope | None = _innermost_scope(tx)
    while scope is not None:
        scope.rollback_only = True
        scope = scope.parent
    if isinstance(sys.exc_info()[1], OwnershipError):
        # A refusal is on its way already: SQLAlchemy rolling back the 'with session.begin():' block
        # whose commit was refused, or an 'except: session.rollback(); raise' around a refused commit.
        # (Across the asyncio bridge the refusal being handled is not visible: this is reported too.)
        return
    error = _end_reported(tx)
    session.info[_REFUSED_KEY] = (tx.root, str(error))
    raise error


def _is_unit_savepoint(tx: Transaction, nested: SessionTransaction) -> bool:
    frame = _current.get()
    while frame is not None:
        savepoint = frame.scope.savepoint
        if frame.transaction is tx and savepoint is not None:
            sync = savepoint.sync_transaction if isinstance(savepoint, AsyncSessionTransaction) else savepoint
            if sync is nested:
                return True
        frame = frame.parent
    return False


def _innermost_scope(tx: Transaction) -> Scope:
    frame = _current.get()
    while frame is not None:
        if frame.transaction is tx:
            return frame.scope
        frame = frame.parent
    return tx.root


def _unit_label(tx: Transaction) -> str:
    return tx.what or "the request's unit of work"


def _commit_refused(tx: Transaction, *, advanced_alchemy: bool) -> OwnershipError:
    what = _unit_label(tx)
    hint = (
        " The commit came from advanced-alchemy: a service or repository made with auto_commit=True "
        "commits on every call; leave auto_commit off inside a unit."
        if advanced_alchemy
        else ""
    )
    return OwnershipError(
        f"{what}: session.commit() (or the end of a 'with session.begin():' block) inside its unit of work "
        "is refused: uow commits when the unit ends, and committing here would make part of the unit "
        "permanent before the rest, where a later error could no longer undo it. Use session.flush() to "
        "send the changes now (it also fills in generated ids) and let the unit commit them; the unit "
        f"will roll back now.{hint}"
    )


def _end_reported(tx: Transaction) -> OwnershipError:
    what = _unit_label(tx)
    return OwnershipError(
        f"{what}: the session of its unit of work was rolled back or closed (session.rollback(), "
        "session.close() or similar) by code inside the unit, which ends the transaction itself. "
        "The unit's work so far is discarded, and the unit will roll back. To undo everything, raise "
        "and let the unit roll back; to undo a part and carry on, run that part with propagation='nested' "
        "or inside 'with session.begin_nested():'; leave closing the session to uow"
    )


def _called_from(package: str) -> bool:
    """Whether a frame of `package` is on the stack, also across SQLAlchemy's asyncio greenlet bridge."""
    frames: list[Any] = [sys._getframe(1)]
    greenlet = sys.modules.get("greenlet")
    if greenlet is not None:
        parent = greenlet.getcurrent().parent
        if parent is not None and parent.gr_frame is not None:
            frames.append(parent.gr_frame)  # an AsyncSession call: its awaiting coroutines are up there
    for innermost in frames:
        frame = innermost
        for _ in range(_STACK_LIMIT):
            if frame is None:
                break
            if str(frame.f_globals.get("__name__", "")).startswith(package):
                return True
            frame = frame.f_back
    return False


_STACK_LIMIT = 200


def _commit_sync(session: Session) -> BaseException | None:
    """Commit; raises if COMMIT failed (after rolling back), hands back an interrupt that came after it."""
    session.info[_COMMITTED] = False
    try:
        session.commit()
    except BaseException as failure:
        if not session.info.get(_COMMITTED):
            _rollback_quietly_sync(session)
            raise
        return _after_commit_failure(failure)
    finally:
        session.info.pop(_COMMITTED, None)
    return None


async def _commit_async(session: AsyncSession) -> BaseException | None:
    """Commit; raises if COMMIT failed (after rolling back), hands back a cancellation that came after it."""
    info = session.sync_session.info
    info[_COMMITTED] = False
    try:
        await session.commit()
    except BaseException as failure:
        if not info.get(_COMMITTED):
            await _rollback_quietly_async(session)
            raise
        return _after_commit_failure(failure)
    finally:
        info.pop(_COMMITTED, None)
    return None


def _after_commit_failure(failure: BaseException) -> BaseException | None:
    # COMMIT went through; releasing the connection failed. The work stands: log it, keep only interrupts.
    if isinstance(failure, Exception):
        logger.error("uow: releasing the connection after COMMIT failed; the commit stands", exc_info=failure)
        return None
    return failure


def _close_failed_after_commit_sync(session: Session, failure: BaseException) -> BaseException | None:
    """Closing a committed session failed: log it (the commit stands), or hand an interrupt back."""
    if isinstance(failure, Exception):
        logger.exception("uow: closing the session after its commit failed; the commit stands", exc_info=failure)
        _invalidate_sync(session, None)
        return None
    _invalidate_sync(session, None)
    return failure


async def _close_after_commit_async(session: AsyncSession) -> BaseException | None:
    """Close a committed session; a failure is logged (the commit stands), a cancellation handed back."""
    try:
        await _close_async(session)
    except Exception:
        logger.exception("uow: closing the session after its commit failed; the commit stands")
        await _invalidate_async(session, None)
    except BaseException as interrupt:
        await _invalidate_async(session, None)
        return interrupt
    finally:
        _seal(session)
    return None


async def _to_completion(work: Coroutine[Any, Any, T]) -> tuple[T, BaseException | None]:
    """Run `work` to its end even if this task is cancelled meanwhile: its result, and that cancellation.

    If `work` fails while a cancellation is pending, the cancellation is raised (the task must stop),
    with the failure noted on it.
    """
    task = asyncio.get_running_loop().create_task(work)  # `asyncio.ensure_future(work)`, without its Python calls
    cancellation: BaseException | None = None
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError as cancelled:
            if task.cancelled():
                raise
            # Our task was cancelled, not the work (it may even have just finished): wait it out.
            cancellation = cancellation or cancelled
            continue
        except BaseException as failure:
            if cancellation is None:
                raise
            _note_secondary(cancellation, "ending the unit", failure)
            raise cancellation from None
        return result, cancellation


async def _open_or_close_async(
    session: AsyncSession, read_only: bool, isolation_level: str | None, deadline: Deadline | None
) -> None:
    try:
        await _apply_begin_options_async(session, read_only, isolation_level)
        if deadline is not None:
            await watch_owner_async(session, deadline)
    except BaseException:
        await _close_async(session)
        raise


async def _close_async(session: AsyncSession) -> None:
    try:
        await session.close()
    except asyncio.CancelledError:
        # Cancelled while handing the connection back: finish that shielded, then let the cancellation through.
        await asyncio.shield(session.close())
        raise


def _is_interrupt(error: BaseException) -> bool:
    """Cancellation, KeyboardInterrupt, SystemExit: never folded into another error as a mere note."""
    return not isinstance(error, Exception)


def _note_secondary(primary: BaseException, doing: str, secondary: BaseException) -> None:
    """Keep `primary` the error the caller sees; record `secondary` on it and in the log."""
    logger.error("uow: %s failed while handling %r", doing, primary, exc_info=secondary)
    add_note = getattr(primary, "add_note", None)
    if add_note is not None:
        add_note(f"uow: {doing} also failed: {secondary!r}")
    if primary.__context__ is None:
        primary.__context__ = secondary


def _discard_awaitable(result: Awaitable[Any]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


def _name(obj: object) -> str:
    return getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)


_CALLER_HOOKS_KEY = "uow_on_commit_hooks"


def _attach_to_caller_session(tx: Transaction, callback: Hook) -> None:
    """Hooks registered inside a caller-owned session run when the caller commits it (SQLAlchemy events).

    Each hook remembers the session transaction (root or savepoint) it was registered in: rolling
    that one back, or one enclosing it, drops the hook; releasing a savepoint does not run it.
    """
    session = tx.session
    assert session is not None
    sync_session = session.sync_session if isinstance(session, AsyncSession) else session
    if inspect.iscoroutinefunction(callback):
        raise ConfigurationError(
            f"on_commit({_name(callback)}): inside a session passed with session=, hooks run from "
            "SQLAlchemy's after_commit event and must be plain functions"
        )
    pending: list[tuple[Hook, SessionTransaction]] | None = sync_session.info.get(_CALLER_HOOKS_KEY)
    if pending is None:
        pending = []
        sync_session.info[_CALLER_HOOKS_KEY] = pending
        event.listen(sync_session, "after_commit", _run_caller_hooks)
        event.listen(sync_session, "after_soft_rollback", _drop_caller_hooks)
    # Begin now (what autobegin would do on first use) so a rollback before any statement still drops the hook.
    owner = sync_session.get_nested_transaction() or sync_session.get_transaction() or sync_session.begin()
    pending.append((callback, owner))


def _run_caller_hooks(sync_session: Session) -> None:
    if sync_session.get_nested_transaction() is not None:
        return  # a savepoint was released: the caller has not committed yet
    pending: list[tuple[Hook, SessionTransaction]] = sync_session.info.get(_CALLER_HOOKS_KEY, [])
    hooks = list(pending)
    pending.clear()
    captured = hook_capture.get()
    if captured is not None:
        captured.extend(callback for callback, _ in hooks)
        return
    for callback, _ in hooks:
        try:
            callback()
        except Exception:
            logger.exception("on_commit hook %s failed", _name(callback))


def _drop_caller_hooks(sync_session: Session, rolled_back: SessionTransaction) -> None:
    pending: list[tuple[Hook, SessionTransaction]] | None = sync_session.info.get(_CALLER_HOOKS_KEY)
    if pending:
        pending[:] = [(cb, owner) for cb, owner in pending if not _descends_from(owner, rolled_back)]


def _descends_from(transaction: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False
