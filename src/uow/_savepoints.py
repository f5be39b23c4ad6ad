"""Savepoints: how a ``nested`` unit ends (docs/design.md, "Propagation").

A ``nested`` unit is a savepoint in the active unit (`uow._stack` begins it with ``begin_nested()``).
On exit (`exit_savepoint_sync` / `_async`, both thin shells over `_end_savepoint`) it is released
on success, or rolled back to on failure, on a swallowed inner failure or on `set_rollback_only`;
a failed release rolls back to it too. Either way the enclosing unit can go on: only when rolling
back to the savepoint fails as well, or the connection was lost, is the enclosing block marked
rollback-only (`_mark_failed`). A rolled-back savepoint is also released (`_release_rolled_back`),
so failed nested units do not pile up savepoints on the server. The hooks registered inside a
rolled-back savepoint are dropped; its ``on_rollback`` / ``on_completion`` ones run at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Connection
from sqlalchemy.exc import UnboundExecutionError
from sqlalchemy.ext.asyncio import AsyncSessionTransaction
from sqlalchemy.orm import Session, SessionTransaction

from uow._database import forget_savepoint_end, savepoint_end, track_savepoint_ends
from uow._failures import is_interrupt, note_secondary
from uow._retry import sqlstate
from uow._transaction import Outcome, rollback_only_error
from uow.errors import RollbackOnlyError

if TYPE_CHECKING:
    from uow._stack import ActiveUnit
    from uow._transaction import AnyHook, Block, Transaction


def track_savepoints(session: Session) -> None:
    """Have the Database note how each savepoint on this session's engine ends (`_release_rolled_back` reads it)."""
    try:
        bind = session.get_bind()
    except UnboundExecutionError:
        return  # several binds and no default: rolled-back savepoints stay until the transaction ends
    track_savepoint_ends(bind)


def exit_savepoint_sync(unit: ActiveUnit, exc: BaseException | None) -> None:
    """Leave a ``nested`` unit: `_end_savepoint`, then the hooks of a rolled-back savepoint."""
    savepoint = unit.block.savepoint
    assert isinstance(savepoint, SessionTransaction)  # pyright: ignore[reportUnnecessaryIsInstance]
    dropped: list[tuple[AnyHook, Block, int]] = []
    try:
        _end_savepoint(unit, savepoint, exc, dropped)
    finally:
        if dropped:  # rolled back: its on_rollback / on_completion hooks run now, its on_commit ones never
            unit.transaction.run_hooks_sync(Outcome.ROLLED_BACK, dropped)


async def exit_savepoint_async(unit: ActiveUnit, exc: BaseException | None) -> None:
    """`exit_savepoint_sync` for an async unit: the same `_end_savepoint`, run on the sync session."""
    savepoint = unit.block.savepoint
    assert isinstance(savepoint, AsyncSessionTransaction)
    sync_savepoint = savepoint.sync_transaction
    assert sync_savepoint is not None
    dropped: list[tuple[AnyHook, Block, int]] = []
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
    dropped: list[tuple[AnyHook, Block, int]],
) -> None:
    """Release the savepoint, or roll back to it; either way the enclosing unit can go on afterwards.

    A failed release (the flush before RELEASE hit a constraint, or RELEASE itself failed) rolls
    back to the savepoint, as Django's atomic does, and the caller sees that failure. Only when
    the savepoint cannot be rolled back either, or its connection was lost, is the enclosing
    block marked rollback-only.
    """
    block = unit.block
    if exc is None and not block.rollback_only:
        # Savepoint, success: release it; its hooks now belong to the enclosing block.
        _forget_savepoint_ends(savepoint)
        try:
            savepoint.commit()
        except BaseException as failure:
            # Savepoint, failed release: roll back to it, forget its hooks, raise the failure.
            dropped.extend(unit.transaction.drop_hooks_within(block))
            _roll_back_savepoint(unit, savepoint, failure)
            if _refused_after_a_swallowed_error(failure):
                raise _release_refused_error(unit.transaction) from failure
            raise
        _forget_savepoint_ends(savepoint)  # released: nothing left to finish on its connection
        return
    # Savepoint, failure, swallowed inner failure or set_rollback_only(): roll back to it, forget its hooks.
    dropped.extend(unit.transaction.drop_hooks_within(block))
    _roll_back_savepoint(unit, savepoint, exc)
    if exc is None and not block.quiet:
        raise rollback_only_error(unit.transaction, savepoint=True)


def _roll_back_savepoint(unit: ActiveUnit, savepoint: SessionTransaction, primary: BaseException | None) -> None:
    """Roll back to the savepoint and release it; if that fails, or the connection is lost, the enclosing block is doomed.

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
        if primary is None or is_interrupt(error):
            raise
        note_secondary(primary, "rolling back to the savepoint", error)
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
        if sqlstate(error) == _FAILED_TRANSACTION_SQLSTATE:
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
    parent = unit.block.parent
    if parent is not None:
        parent.rollback_only = True
