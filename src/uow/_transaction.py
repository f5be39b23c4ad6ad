"""The transaction: one session and its database transaction, from opening to the hooks after its end.

A `Transaction` is shared by every unit that joins it; the unit that began it (or a framework
integration, for a request) owns it: opens it, finishes it, and runs its hooks.

- **Open** (`open_sync` / `open_async`): the session is made lazily, on first use, from the
  Database (`uow._dialect.new_session`), with the read-only / isolation options and the timeout
  applied, and guarded against the user's own commit (`uow._ownership`).
- **Finish** (`finish_sync` / `finish_async`), readable top-down:
  1. ``before_commit`` hooks run inside the unit; one that raises vetoes the commit;
  2. the transaction is marked finished; a unit that joined it from another task or thread and is
     still running (`uow._sharing`) makes it roll back instead of committing;
  3. the guard is lifted (`uow._ownership.lift_guard`): from here on it is uow ending the session;
  4. commit (no exception, not rollback-only, not read-only: `_commit_sync`) or roll back
     (`_roll_back_sync`, raising `RollbackOnlyError` for a swallowed failure), then close;
     once COMMIT went through, a failure to close is logged, not raised;
  5. the hooks due after the `Outcome` run (`run_hooks_sync`, choosing with `_due`).
  The async ending runs to completion even when its task is cancelled meanwhile
  (`uow._failures.to_completion`) and re-raises the cancellation afterwards.
- **Hooks**: registered on a `Block` (the root, or a savepoint) with a phase (``before_commit``,
  ``on_commit``, ``on_rollback``, ``on_completion``); a rolled-back savepoint drops its own
  (`drop_hooks_within`). Inside a session the caller owns (``session=``), ``on_commit`` hooks
  ride on SQLAlchemy's events instead (`_attach_to_caller_session`). `uow.testing` can capture
  the hooks due instead of running them (`start_capturing_hooks`).
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from threading import get_ident
from typing import TYPE_CHECKING, Any, Union

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction
from sqlalchemy.orm import Session, SessionTransaction

from uow._dialect import (
    apply_begin_options_async,
    apply_begin_options_sync,
    end_read_only_async,
    end_read_only_sync,
    new_session,
)
from uow._failures import finished_error, is_interrupt, name_of, note_secondary, to_completion
from uow._ownership import CLOSED_KEY, GUARD_KEY, REFUSED_KEY, TX_KEY, guard, lift_guard, seal
from uow._sharing import busy_elsewhere, lock, note_straggler, prune, straggler_error, task_on
from uow._timeout import watch_owner_async, watch_owner_sync
from uow.errors import ConfigurationError, PropagationError, RollbackOnlyError

if TYPE_CHECKING:
    from uow._database import Database
    from uow._observe import UnitRecord
    from uow._sharing import ForeignJoin
    from uow._testing import CapturedHooks
    from uow._timeout import Deadline

logger = logging.getLogger("uow")

AnySession = Union[Session, AsyncSession]
Hook = Callable[[], Any]
AnyHook = Callable[..., Any]  # a Hook, or an on_completion hook taking the `Outcome`


class Outcome(str, enum.Enum):
    """How a unit of work ended, as `on_completion` hooks are told."""

    COMMITTED = "committed"
    """COMMIT went through: the work is in the database."""
    ROLLED_BACK = "rolled_back"
    """The work was rolled back (an exception, `set_rollback_only`, read-only, a vetoing hook, a refused COMMIT)."""
    UNKNOWN = "unknown"
    """COMMIT was sent but its result could not be known: the connection dropped (or the unit was interrupted) during it."""


# The phases a hook can be registered for (`Transaction.hooks` holds (callback, block, phase)).
BEFORE_COMMIT, AFTER_COMMIT, AFTER_ROLLBACK, AFTER_COMPLETION = 0, 1, 2, 3
PHASE_NAMES = ("before_commit", "on_commit", "on_rollback", "on_completion")


class Block:
    """The root of a transaction or one savepoint in it; carries the rollback-only marks.

    ``rollback_only``: an inner failure doomed it (leaving it without an exception raises
    `RollbackOnlyError`); ``quiet``: `set_rollback_only` asked for a rollback (no error).
    """

    __slots__ = ("parent", "quiet", "rollback_only", "savepoint")

    def __init__(self, parent: Block | None, savepoint: SessionTransaction | AsyncSessionTransaction | None) -> None:
        self.parent = parent
        self.savepoint = savepoint
        self.rollback_only = False
        self.quiet = False

    def is_within(self, other: Block) -> bool:
        block: Block | None = self
        while block is not None:
            if block is other:
                return True
            block = block.parent
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
        "label",
        "observed",
        "owned",
        "read_only",
        "root",
        "session",
        "unknown",
    )

    def __init__(
        self,
        database: Database | None,
        *,
        session: AnySession | None = None,
        owned: bool = True,
        read_only: bool = False,
        isolation_level: str | None = None,
        label: str | None = None,
    ) -> None:
        self.database = database
        self.session = session
        self.label = label  # the unit that began it, for error messages (uow.testing names leaked units)
        self.owned = owned
        self.read_only = read_only
        self.isolation_level = isolation_level
        self.is_async = (
            isinstance(session, AsyncSession) if session is not None else bool(database and database.is_async)
        )
        self.root = Block(None, None)
        # No list until a hook is registered (or a join comes from another task): most units have neither,
        # and the empty tuple is a singleton, where each empty list would be 56 bytes per unit in flight.
        self.hooks: Sequence[tuple[AnyHook, Block, int]] = ()
        self.unknown = False  # COMMIT failed in a way that leaves its result unknown (a dropped connection)
        self.finished = False
        if session is not None and owned:
            guard(session, self)
        # Who uses the session across tasks/threads (see "One task at a time" below): the units that
        # joined from another task and are still running, innermost last; and who is in a statement.
        self.inside: Sequence[ForeignJoin] = ()
        self.busy: object = None
        # Ended while a joined unit was in a statement on the session: the last of those to leave closes it.
        self.abandoned = False
        self.deadline: Deadline | None = None  # the owning unit's timeout= (see uow._timeout)
        # The owning unit's record when something watches units (uow.otel, uow.logs): see `_observe`.
        self.observed: UnitRecord | None = None

    # -- opening -----------------------------------------------------------------------------
    # `open_sync` and `open_async` repeat their steps on purpose: every unit that begins comes this way,
    # and a helper of their own would add a call to each (benchmarks/calls.py and web_calls.py count them).

    def open_sync(self) -> Session:
        """The session, made from the Database on first use with the transaction's options applied."""
        if self.finished:
            raise finished_error(self)
        if self.session is None:
            assert self.database is not None
            session = new_session(self.database, self.read_only, self.isolation_level)
            assert isinstance(session, Session)
            info = session.info
            info[OPENED_BY_KEY] = self.label
            info[TX_KEY] = self
            if self.read_only or self.isolation_level is not None or self.deadline is not None:
                try:
                    apply_begin_options_sync(session, self.read_only, self.isolation_level)
                    if self.deadline is not None:
                        watch_owner_sync(session, self.deadline)
                except BaseException:
                    session.close()
                    raise
            info[GUARD_KEY] = self  # `guard`, inline
            self.session = session
        return self.session  # type: ignore[return-value]

    async def open_async(self) -> AsyncSession:
        """The session, made from the Database on first use with the transaction's options applied."""
        if self.finished:
            raise finished_error(self)
        if self.session is None:
            assert self.database is not None
            session = new_session(self.database, self.read_only, self.isolation_level)
            assert isinstance(session, AsyncSession)
            info = session.info
            info[OPENED_BY_KEY] = self.label
            info[TX_KEY] = self
            if self.read_only or self.isolation_level is not None or self.deadline is not None:
                # Applying options checks a connection out: a cancellation midway must not strand it.
                _, cancellation = await to_completion(
                    _open_or_close_async(session, self.read_only, self.isolation_level, self.deadline)
                )
                if cancellation is not None:
                    await to_completion(_close_async(session))
                    raise cancellation
            info[GUARD_KEY] = self  # `guard`, inline
            self.session = session
        return self.session  # type: ignore[return-value]

    # -- finishing (owned transactions) ------------------------------------------------------
    # `finish_sync` and `finish_async` take the same steps (module docstring), each with the commit
    # written out: every owning unit that succeeds comes this way. What they share without I/O is in
    # functions of its own: `_finish_without_session`, `_seal_for_straggler`, `_due`, `rollback_only_error`.

    def finish_sync(self, exc: BaseException | None) -> None:
        """Commit (no exception, not rollback-only, not read-only) or roll back; always close; then run hooks.

        ``before_commit`` hooks run first, inside the unit; one that raises vetoes the commit (the unit
        rolls back and that error is raised). Once COMMIT went through, the unit's work is done: a
        failure while releasing or closing afterwards is logged, not raised, and the hooks still run
        (an interrupt is re-raised after them).
        """
        try:
            if self.hooks and exc is None and not (self.root.rollback_only or self.read_only):
                veto = self._before_commit_sync()
                if veto is not None:
                    self.finish_sync(veto)
                    raise veto
            me = get_ident()
            with lock:  # a thread joining right now either sees the unit finished or is seen inside
                self.finished = True
                busy = self.busy
                # `prune(self) or busy_elsewhere(self)`, asked only when someone else may be using the session.
                if (self.inside or (busy is not None and busy != me)) and (prune(self) or busy_elsewhere(self)):
                    straggler: PropagationError | None = straggler_error(self)
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
                        info.pop(GUARD_KEY, None)  # `lift_guard`: from here on it is uow ending the session
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
                        if TX_KEY in info:  # `seal`
                            info[CLOSED_KEY] = True
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
        finally:
            if not self.abandoned:
                # No cycle left (the session's info names this transaction): the session and its
                # identity map go with their last reference, not with the next garbage collection.
                self.session = None

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
        lift_guard(session.info)
        if straggler is not None:
            self._abandon_sync(session, exc, straggler)
            return False
        self._roll_back_sync(session, exc)
        return False

    def _roll_back_sync(self, session: Session, exc: BaseException | None) -> None:
        try:
            end_read_only_sync(session, self.read_only)
            _rollback_preserving_sync(session, exc)
        except BaseException as failure:
            _invalidate_sync(session, failure)
            raise
        _close_preserving_sync(session, exc)
        if exc is None and self.root.rollback_only and not self.root.quiet:
            raise rollback_only_error(self)

    def _abandon_sync(self, session: Session, exc: BaseException | None, straggler: PropagationError) -> None:
        # A unit that joined from another thread is still running: never commit under it.
        if self._seal_for_straggler(session):
            self._roll_back_sync(session, exc or straggler)
        if exc is None:
            raise straggler
        note_straggler(exc, straggler)

    async def finish_async(self, exc: BaseException | None) -> None:
        """Commit (no exception, not rollback-only, not read-only) or roll back; always close; then run hooks.

        The ending runs to completion even if the task is cancelled meanwhile: a cancellation that
        arrives once the body is over cannot leave a connection checked out or a COMMIT half-known;
        it is re-raised afterwards (after the hooks, when the unit committed). Once COMMIT went
        through, a failure to close is logged, not raised. ``before_commit`` hooks run first, as in
        `finish_sync`.
        """
        try:
            if self.hooks and exc is None and not (self.root.rollback_only or self.read_only):
                veto = await self._before_commit_async()
                if veto is not None:
                    await self.finish_async(veto)
                    raise veto
            self.finished = True
            session = self.session
            if session is None:
                try:
                    if prune(self):
                        if exc is None:
                            raise straggler_error(self)
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
            lift_guard(session.info)
            ender = task_on(asyncio.get_running_loop())  # `asyncio.current_task()`, without a Python call
            try:
                (committed, interrupt), cancellation = await to_completion(
                    self._end_or_abandon_async(session, exc, ender)
                )
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
        finally:
            if not self.abandoned:
                # No cycle left (the session's info names this transaction): the session and its
                # identity map go with their last reference, not with the next garbage collection.
                self.session = None

    async def _end_or_abandon_async(
        self, session: AsyncSession, exc: BaseException | None, ender: object
    ) -> tuple[bool, BaseException | None]:
        # Decided here, in the task that ends the unit: a task scheduled before it may be in a statement.
        # Not `ender`, the task awaiting this ending: it cannot be in a statement meanwhile.
        # `prune(self) or busy_elsewhere(self, ender)`, asked only when someone else may be using the session.
        if (self.inside or self.busy is not None) and (prune(self) or busy_elsewhere(self, ender)):
            straggler: PropagationError | None = straggler_error(self)
        else:
            straggler = None
        if straggler is not None:
            await self._abandon_async(session, exc, straggler)
            if exc is None:
                raise straggler
            note_straggler(exc, straggler)
            return False, None
        # Ending is a statement too: another task using the session meanwhile is refused.
        self.busy = task_on(asyncio.get_running_loop())  # `asyncio.current_task()`, without a Python call
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
            await end_read_only_async(session, self.read_only)
            await _rollback_preserving_async(session, exc)
        except BaseException as failure:
            await _invalidate_async(session, failure)
            raise
        await _close_preserving_async(session, exc)
        if exc is None and self.root.rollback_only and not self.root.quiet:
            raise rollback_only_error(self)

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
        with lock:
            seal(session)
            if busy_elsewhere(self):
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
            raise rollback_only_error(self)
        return exc is None and not self.root.rollback_only

    # -- hooks -------------------------------------------------------------------------------

    def add_hook(self, callback: AnyHook, block: Block, phase: int = AFTER_COMMIT) -> None:
        if not self.is_async and inspect.iscoroutinefunction(callback):
            raise ConfigurationError(
                f"{PHASE_NAMES[phase]}({name_of(callback)}): an async callback needs an async unit; "
                "make the hook a plain function or run the unit with an async Database"
            )
        if not self.owned:
            if phase != AFTER_COMMIT:
                raise ConfigurationError(
                    f"{PHASE_NAMES[phase]}({name_of(callback)}): the unit runs in a session passed with session=, "
                    "whose transaction its caller commits or rolls back, so uow cannot run the hook at that "
                    "phase; register it inside a unit uow begins (drop session=), or use on_commit()"
                )
            _attach_to_caller_session(self, callback)
            return
        self.hooks = [*self.hooks, (callback, block, phase)]

    def drop_hooks_within(self, block: Block) -> list[tuple[AnyHook, Block, int]]:
        """Forget the hooks registered in `block` or inside it (it rolled back); those that were dropped."""
        hooks = self.hooks
        if not hooks:
            return []
        dropped = [hook for hook in hooks if hook[1].is_within(block)]
        if dropped:
            self.hooks = [hook for hook in hooks if not hook[1].is_within(block)]
        return dropped

    def _take_before_commit(self) -> list[AnyHook]:
        due = [callback for callback, _, phase in self.hooks if phase == BEFORE_COMMIT]
        if due:
            self.hooks = [hook for hook in self.hooks if hook[2] != BEFORE_COMMIT]
        return due

    def _before_commit_sync(self) -> BaseException | None:
        """Run the before_commit hooks inside the unit (under a frame of their own, so code in them joins
        it), those they register too; the error of the first that raises (it vetoes the commit)."""
        from uow._stack import pop_frame, push_transaction  # the stack imports this module; hooks are rare

        token = push_transaction(self)
        try:
            while due := self._take_before_commit():
                for callback in due:
                    result = callback()
                    if inspect.isawaitable(result):
                        _discard_awaitable(result)
                        raise ConfigurationError(
                            f"before_commit hook {name_of(callback)} returned an awaitable in a sync unit; it was not run"
                        )
        except BaseException as veto:
            return veto
        finally:
            pop_frame(token)
        return None

    async def _before_commit_async(self) -> BaseException | None:
        from uow._stack import pop_frame, push_transaction  # the stack imports this module; hooks are rare

        token = push_transaction(self)
        try:
            while due := self._take_before_commit():
                for callback in due:
                    result = callback()
                    if inspect.isawaitable(result):
                        await result
        except BaseException as veto:
            return veto
        finally:
            pop_frame(token)
        return None

    def run_hooks_sync(self, outcome: Outcome, hooks: Sequence[tuple[AnyHook, Block, int]] | None = None) -> None:
        """Run the hooks due after `outcome` (all the unit's, or `hooks`): a failing one is logged."""
        if hooks is None:
            hooks, self.hooks = self.hooks, ()
        for callback, phase in _due(hooks, outcome):
            try:
                result = callback(outcome) if phase == AFTER_COMPLETION else callback()
                if inspect.isawaitable(result):
                    _discard_awaitable(result)
                    raise ConfigurationError(
                        f"{PHASE_NAMES[phase]} hook {name_of(callback)} returned an awaitable in a sync unit; "
                        "it was not run"
                    )
            except Exception:
                logger.exception("%s hook %s failed", PHASE_NAMES[phase], name_of(callback))

    async def run_hooks_async(
        self, outcome: Outcome, hooks: Sequence[tuple[AnyHook, Block, int]] | None = None
    ) -> None:
        if hooks is None:
            hooks, self.hooks = self.hooks, ()
        for callback, phase in _due(hooks, outcome):
            try:
                result = callback(outcome) if phase == AFTER_COMPLETION else callback()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("%s hook %s failed", PHASE_NAMES[phase], name_of(callback))


def _due(hooks: Sequence[tuple[AnyHook, Block, int]], outcome: Outcome) -> list[tuple[AnyHook, int]]:
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
    if is_interrupt(failure):
        return True
    return isinstance(failure, DBAPIError) and failure.connection_invalidated and failure.statement is None


# Where `session.info` records which unit made a session (uow.testing reports units left open by it).
OPENED_BY_KEY = "uow_opened_by"

# Set by `uow.testing.capture_on_commit`: hooks due to run after a unit ends are handed to it instead.
hook_capture: contextvars.ContextVar[CapturedHooks | None] = contextvars.ContextVar("uow_hook_capture", default=None)


def start_capturing_hooks(hooks: CapturedHooks) -> contextvars.Token[CapturedHooks | None]:
    """Hand the hooks due after units end in this context to `hooks` instead of running them (uow.testing)."""
    return hook_capture.set(hooks)


def stop_capturing_hooks(token: contextvars.Token[CapturedHooks | None]) -> None:
    """Undo `start_capturing_hooks`."""
    hook_capture.reset(token)


def _flush_failed_error(tx: Transaction) -> RollbackOnlyError:
    return RollbackOnlyError(
        f"the unit of work on {tx.database!r} was rolled back instead of committed: a flush inside it failed "
        "(SQLAlchemy rolled the transaction back) and the error was swallowed. Let the error propagate, "
        "or run the statements that may fail in a unit with propagation='nested' to recover from it"
    )


def rollback_only_error(tx: Transaction, *, savepoint: bool = False) -> RollbackOnlyError:
    where = "savepoint" if savepoint else f"unit of work on {tx.database!r}"
    refused = tx.session.info.get(REFUSED_KEY) if tx.session is not None and not savepoint else None
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


def _rollback_preserving_sync(session: Session, exc: BaseException | None) -> None:
    try:
        session.rollback()
    except BaseException as rollback_error:
        if exc is None or is_interrupt(rollback_error):
            raise
        note_secondary(exc, "rolling back", rollback_error)
        _invalidate_sync(session, exc)


async def _rollback_preserving_async(session: AsyncSession, exc: BaseException | None) -> None:
    try:
        await session.rollback()
    except BaseException as rollback_error:
        if exc is None or is_interrupt(rollback_error):
            raise
        note_secondary(exc, "rolling back", rollback_error)
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
        if exc is None or is_interrupt(close_error):
            raise
        note_secondary(exc, "closing the session", close_error)
    finally:
        seal(session)


async def _close_preserving_async(session: AsyncSession, exc: BaseException | None) -> None:
    try:
        await _close_async(session)
    except BaseException as close_error:
        await _invalidate_async(session, None)
        if exc is None or is_interrupt(close_error):
            raise
        note_secondary(exc, "closing the session", close_error)
    finally:
        seal(session)


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
            note_secondary(exc, "invalidating the connection", failure)
        else:
            logger.exception("uow: invalidating the session's connection failed")
    finally:
        seal(session)


async def _invalidate_async(session: AsyncSession, exc: BaseException | None) -> None:
    try:
        await session.invalidate()
    except Exception as failure:
        if exc is not None:
            note_secondary(exc, "invalidating the connection", failure)
        else:
            logger.exception("uow: invalidating the session's connection failed")
    finally:
        seal(session)


_COMMITTED = "uow_committed"


@event.listens_for(Session, "after_commit")
def _note_commit(session: Session) -> None:
    # Fires once COMMIT has returned, before the session releases its connection (which can still fail).
    info = session.info
    if _COMMITTED in info and not session.in_nested_transaction():
        info[_COMMITTED] = True


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
        seal(session)
    return None


async def _open_or_close_async(
    session: AsyncSession, read_only: bool, isolation_level: str | None, deadline: Deadline | None
) -> None:
    try:
        await apply_begin_options_async(session, read_only, isolation_level)
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


def _discard_awaitable(result: Awaitable[Any]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


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
            f"on_commit({name_of(callback)}): inside a session passed with session=, hooks run from "
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
            logger.exception("on_commit hook %s failed", name_of(callback))


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
