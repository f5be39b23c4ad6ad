"""What code inside a unit calls: the session of the active unit, hooks, and the rollback-only mark.

`current_session` / `current_session_async`, `on_commit`, `before_commit`, `on_rollback`,
`on_completion` and `set_rollback_only` (all re-exported by `uow`) find the innermost active unit
for a database (`uow._stack.find_frame`) and act on its transaction (`uow._transaction`);
outside any unit they raise `NoActiveUnitOfWork`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from uow._failures import name_of, no_unit_error
from uow._stack import find_frame
from uow._transaction import AFTER_COMMIT, AFTER_COMPLETION, AFTER_ROLLBACK, BEFORE_COMMIT, PHASE_NAMES, Outcome
from uow.errors import ConfigurationError, NoActiveUnitOfWork

if TYPE_CHECKING:
    from uow._database import Database
    from uow._transaction import AnyHook, Hook

__all__ = [
    "before_commit",
    "current_session",
    "current_session_async",
    "on_commit",
    "on_completion",
    "on_rollback",
    "set_rollback_only",
]


def current_session(database: Database | None = None) -> Any:
    """The session of the innermost active unit for `database`; `NoActiveUnitOfWork` if there is none.

    Returns a `Session` in sync units and an `AsyncSession` in async ones. A request unit
    whose session was not opened yet opens it now when it is sync; call
    ``await current_session_async()`` for a lazily opened async request unit.
    """
    frame = find_frame(database)
    if frame is None:
        raise no_unit_error("current_session()", database)
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
        raise no_unit_error("current_session_async()", database)
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
    label = PHASE_NAMES[phase]
    if not callable(callback):
        raise TypeError(f"{label}() needs a callable, got {type(callback).__name__}")
    frame = find_frame(database)
    if frame is None:
        raise no_unit_error(f"{label}({name_of(callback)})", database)
    frame.transaction.add_hook(callback, frame.block, phase)


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
        raise no_unit_error("set_rollback_only()", database)
    if not frame.transaction.owned:
        raise ConfigurationError(
            "set_rollback_only(): the unit runs in a session passed with session=, whose transaction its "
            "caller commits or rolls back; roll that session back instead, or drop session="
        )
    block = frame.block
    block.rollback_only = block.quiet = True
