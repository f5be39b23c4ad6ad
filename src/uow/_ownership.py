"""Ownership: the session guard, so nobody commits behind the unit's back (docs/design.md, "Ownership").

Two kinds of listeners live here.

*The statement claim.* A session uow made carries its `Transaction` in ``session.info[TX_KEY]``.
Each statement and flush on it claims the session for the running task/thread (`_claim`) and is
refused when another one holds it (`_check_statement`: the concurrency rule of `uow._sharing`), or
when uow has closed the session already (`seal`, `CLOSED_KEY`: a service kept after its unit).
These listeners (`GUARDS`) go on the classes uow's sessions are made of (`guard_class`,
`GuardedSession`), not on `Session` itself, so other sessions in the process pay nothing.

*The ownership guard.* While an owned unit runs, its session carries the Transaction in
``session.info[GUARD_KEY]`` too (`guard`); the unit's ending removes it (`lift_guard`) before uow
commits, rolls back and closes, so only user code meets these listeners. They are registered on
the Session class (an AsyncSession's calls reach its sync_session), so sessions from any factory,
request units and uow.testing's bound sessions are all covered, and a session passed with
``session=`` (never guarded) is not. SQLAlchemy has an event before a commit but none before a
rollback or a close: a commit is refused before anything is written (`_refuse_commit`); a rollback
or close is reported right after it happened (`_report_end`), and the unit is marked rollback-only
so that what is left of it can never be committed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from threading import get_ident
from typing import TYPE_CHECKING, Any, Union

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction
from sqlalchemy.orm import Session, SessionTransaction

from uow._sharing import close_abandoned_soon, current_user, lock, prune, who
from uow.errors import NoActiveUnitOfWork, OwnershipError, PropagationError

if TYPE_CHECKING:
    from uow._transaction import Block, Transaction

AnySession = Union[Session, AsyncSession]

TX_KEY = "uow_transaction"  # session.info: the Transaction of a session uow made
CLOSED_KEY = "uow_closed"  # session.info: uow has closed that session; it may never begin again
_NOT_FLUSHING: Any = object()


def _closed_error(tx: Transaction) -> NoActiveUnitOfWork:
    return NoActiveUnitOfWork(
        f"this session belonged to the unit of work {tx.label or 'of a request'} on {tx.database!r}, "
        "which has ended and closed it: a service or session kept after its unit (on self, in a "
        "closure, in a task still running) cannot be used. Call a decorated function, or open "
        "'with unit_of_work()', to work in a new unit"
    )


def seal(session: AnySession) -> None:
    """Mark a session uow made as closed by uow: it never begins again (`_refuse_reopening`)."""
    info = session.info
    if TX_KEY in info:
        info[CLOSED_KEY] = True


def _claim(tx: Transaction, info: dict[Any, Any]) -> object:
    """Mark this task/thread as in a statement on the session: what was marked before (to restore).

    `_check_statement` can only refuse, or prune, when a join from elsewhere is inside, someone else
    is in a statement or the session is sealed: in the common case (only the unit's own task or thread
    uses the session) the check is these few reads.
    """
    if tx.is_async:
        me = current_user(True)
        busy = tx.busy
        if tx.inside or (busy is not None and busy != me) or CLOSED_KEY in info:
            _check_statement(tx, info)
        tx.busy = me
        return busy
    me = get_ident()
    with lock:
        busy = tx.busy
        if tx.inside or (busy is not None and busy != me) or CLOSED_KEY in info:
            _check_statement(tx, info)
        tx.busy = me
    return busy


def _check_statement(tx: Transaction, info: dict[Any, Any]) -> object:
    """Who runs the statement, if it may run now; else a uow error (and the unit rolls back)."""
    if CLOSED_KEY in info:
        raise _closed_error(tx)
    me = current_user(tx.is_async)
    inside = prune(tx)
    if inside and inside[-1].user != me:
        holder = inside[-1]
        tx.root.rollback_only = True
        raise PropagationError(
            f"{who(me)} used the session of the unit of work on {tx.database!r} (begun by "
            f"{tx.label or 'a request'}) while {holder.label}, which joined it from {who(holder.user)}, "
            "is running: two tasks or threads never use one session at the same time, so the whole unit "
            "will roll back. Await that call before using the session again"
        )
    busy = tx.busy
    if busy is not None and busy != me:
        tx.root.rollback_only = True
        raise PropagationError(
            f"{who(me)} used the session of the unit of work on {tx.database!r} (begun by "
            f"{tx.label or 'a request'}) while {who(busy)} is in a statement on it: two tasks or threads "
            "never use one session at the same time, so the whole unit will roll back. Await one "
            "call before making the next, or give each its own unit with propagation='requires_new'"
        )
    return me


def _guard_execute(state: Any) -> Any:
    """Session `do_orm_execute`: check who runs the statement, and say who is in one until it returns."""
    session = state.session
    info = session.info
    tx = info.get(TX_KEY)
    if tx is None:
        return None
    previous = _claim(tx, info)
    try:
        return state.invoke_statement()
    except Exception as failure:
        if CLOSED_KEY in info:
            # The unit ended under this statement (a straggler task): its connection was thrown away.
            raise _closed_error(tx) from failure
        raise
    finally:
        tx.busy = previous
        if tx.abandoned and previous is None and not prune(tx):
            close_abandoned_soon(tx)


def _guard_flush(session: Session, flush_context: Any, instances: Any) -> None:
    info = session.info
    tx = info.get(TX_KEY)
    if tx is None:
        return
    if not session.is_active:  # the innermost transaction (savepoint or root) is not active
        # SQLAlchemy raises PendingRollbackError right after this event, before the flush begins, and
        # neither flush event that releases a claim follows: check who flushes, claim nothing.
        with lock:
            _check_statement(tx, info)
        return
    info[_FLUSH_PREVIOUS_KEY] = _claim(tx, info)


_FLUSH_PREVIOUS_KEY = "uow_busy_before_flush"


def _flush_ended(session: Session, *_: Any) -> None:
    info = session.info
    previous = info.pop(_FLUSH_PREVIOUS_KEY, _NOT_FLUSHING)
    if previous is not _NOT_FLUSHING:
        tx = info[TX_KEY]
        tx.busy = previous
        if tx.abandoned and previous is None and not prune(tx) and tx.is_async:
            close_abandoned_soon(tx)


def _refuse_reopening(session: Session, transaction: SessionTransaction) -> None:
    """Session `after_transaction_create`: a session uow closed never begins again (a kept service)."""
    info = session.info
    if CLOSED_KEY in info and transaction.parent is None:
        transaction.close()  # undo the autobegin: nothing may be left for the next call to reuse
        raise _closed_error(info[TX_KEY])


GUARDS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("do_orm_execute", _guard_execute),
    ("before_flush", _guard_flush),
    ("after_flush_postexec", _flush_ended),
    ("after_soft_rollback", _flush_ended),
    ("after_transaction_create", _refuse_reopening),
)
guarded: set[type[Session]] = set()


class GuardedSession(Session):
    """The sync half of the AsyncSessions uow makes when the factory names no class of its own.

    The statement checks are Session events on a class; listening on `Session` itself would cost
    every session in the process (a `do_orm_execute` listener makes SQLAlchemy build an execute
    state per statement), so they go on the classes uow's sessions are made of: each sync
    sessionmaker's own subclass, an async factory's sync_session_class, or this class.
    """


def guard_class(cls: type[Session]) -> None:
    """Put the statement checks (`GUARDS`) on a session class uow makes sessions of, once."""
    if cls in guarded:
        return
    with lock:
        if cls not in guarded:
            for name, listener in GUARDS:
                event.listen(cls, name, listener)
            guarded.add(cls)


GUARD_KEY = "uow_guarded_by"
# The first refusal, as (the block it marked rollback-only, its message): the RollbackOnlyError that
# ends a unit whose code caught the refusal and carried on repeats it.
REFUSED_KEY = "uow_refused"


def guard(session: AnySession, tx: Transaction) -> None:
    """Make the session refuse the user's commit and report their rollback or close, for `tx`."""
    session.info[GUARD_KEY] = tx


def lift_guard(info: dict[Any, Any]) -> None:
    """Undo `guard` (given the session's ``info``): from here on it is uow ending the session."""
    info.pop(GUARD_KEY, None)


def release_guard(session: AnySession) -> None:
    """Let uow's own code (uow.testing closing sessions a test left open) end a guarded session."""
    lift_guard(session.info)


@event.listens_for(Session, "before_commit")
def _refuse_commit(session: Session) -> None:
    tx: Transaction | None = session.info.get(GUARD_KEY)
    if tx is None:
        return
    nested = session.get_nested_transaction()
    if nested is not None and not _is_unit_savepoint(tx, nested):
        return  # releasing a savepoint the user's own code began ('with session.begin_nested():')
    # The root, or a savepoint of a `nested` unit still running (uow releases its own only after the
    # unit's frame is gone): either way part of the unit would be committed behind its back.
    error = _commit_refused(tx, advanced_alchemy=_called_from("advanced_alchemy."))
    block = _innermost_block(tx)
    block.rollback_only = True
    session.info.setdefault(REFUSED_KEY, (block, str(error)))
    raise error


@event.listens_for(Session, "after_transaction_end")
def _report_end(session: Session, transaction: SessionTransaction) -> None:
    tx: Transaction | None = session.info.get(GUARD_KEY)
    if tx is None or transaction.parent is not None:  # the dict read first: most sessions are not guarded
        return
    # User code rolled back or closed the unit's transaction: all of its work so far is gone.
    block: Block | None = _innermost_block(tx)
    while block is not None:
        block.rollback_only = True
        block = block.parent
    if isinstance(sys.exc_info()[1], OwnershipError):
        # A refusal is on its way already: SQLAlchemy rolling back the 'with session.begin():' block
        # whose commit was refused, or an 'except: session.rollback(); raise' around a refused commit.
        # (Across the asyncio bridge the refusal being handled is not visible: this is reported too.)
        return
    error = _end_reported(tx)
    session.info[REFUSED_KEY] = (tx.root, str(error))
    raise error


def _is_unit_savepoint(tx: Transaction, nested: SessionTransaction) -> bool:
    from uow._stack import innermost_frame  # the stack imports this module: asked only when user code commits

    frame = innermost_frame()
    while frame is not None:
        savepoint = frame.block.savepoint
        if frame.transaction is tx and savepoint is not None:
            sync = savepoint.sync_transaction if isinstance(savepoint, AsyncSessionTransaction) else savepoint
            if sync is nested:
                return True
        frame = frame.parent
    return False


def _innermost_block(tx: Transaction) -> Block:
    from uow._stack import innermost_frame  # the stack imports this module: asked only when user code ends it

    frame = innermost_frame()
    while frame is not None:
        if frame.transaction is tx:
            return frame.block
        frame = frame.parent
    return tx.root


def _unit_label(tx: Transaction) -> str:
    return tx.label or "the request's unit of work"


def _commit_refused(tx: Transaction, *, advanced_alchemy: bool) -> OwnershipError:
    label = _unit_label(tx)
    hint = (
        " The commit came from advanced-alchemy: a service or repository made with auto_commit=True "
        "commits on every call; leave auto_commit off inside a unit."
        if advanced_alchemy
        else ""
    )
    return OwnershipError(
        f"{label}: session.commit() (or the end of a 'with session.begin():' block) inside its unit of work "
        "is refused: uow commits when the unit ends, and committing here would make part of the unit "
        "permanent before the rest, where a later error could no longer undo it. Use session.flush() to "
        "send the changes now (it also fills in generated ids) and let the unit commit them; the unit "
        f"will roll back now.{hint}"
    )


def _end_reported(tx: Transaction) -> OwnershipError:
    label = _unit_label(tx)
    return OwnershipError(
        f"{label}: the session of its unit of work was rolled back or closed (session.rollback(), "
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
