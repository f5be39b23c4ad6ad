"""Failures: the errors several steps of a unit raise, and how one failure is kept while handling another.

- `is_interrupt`: cancellation, KeyboardInterrupt and SystemExit are never folded into another error;
- `note_secondary`: an error raised while cleaning up after another is attached to the first (a note,
  its ``__context__``, the log), never raised in its place;
- `to_completion`: an async ending runs to its end even when the task is cancelled meanwhile;
- `mismatch_error`: the one message for a sync function meeting an async Database, or the reverse;
- `no_unit_error`: a helper called outside any unit.

Errors that belong to one step live with it: the propagation refusals in `uow._stack`, the
concurrency rule's in `uow._sharing`, the ownership refusals in `uow._ownership`, the
rolled-back-instead-of-committed ones in `uow._transaction` and `uow._savepoints`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from uow.errors import ConfigurationError, NoActiveUnitOfWork

if TYPE_CHECKING:
    from uow._database import Database
    from uow._transaction import Transaction

logger = logging.getLogger("uow")

T = TypeVar("T")


def mismatch_error(label: str, database: Database, *, function_is_async: bool) -> ConfigurationError:
    """`label` (a function or unit) is async and `database` sync, or the reverse."""
    if function_is_async:
        return ConfigurationError(
            f"{label} is async but {database!r} is sync: use an async driver URL "
            "(sqlite+aiosqlite://, postgresql+asyncpg://, mysql+aiomysql://) or make the function a plain 'def'"
        )
    return ConfigurationError(
        f"{label} is sync but {database!r} is async: make the function 'async def' "
        "or give it a Database with a sync driver (sqlite://, postgresql+psycopg://, mysql+pymysql://)"
    )


def finished_error(tx: Transaction) -> NoActiveUnitOfWork:
    return NoActiveUnitOfWork(
        f"the unit of work on {tx.database!r} has already committed or rolled back (a request's unit ends "
        "when its response starts): open a unit of its own for this work instead of joining that one"
    )


def no_unit_error(label: str, database: Database | None) -> NoActiveUnitOfWork:
    target = f" for {database!r}" if database is not None else ""
    return NoActiveUnitOfWork(
        f"{label} was called outside a unit of work{target}: call it from a function decorated with "
        "@with_services/@unit_of_work or inside 'with unit_of_work():'"
    )


class _Ending(asyncio.Task):  # type: ignore[type-arg]
    """A task that refuses to be cancelled: the ending of a unit, which must run to its end.

    The task awaiting it, when cancelled, cannot pass the cancellation on (`asyncio.Task.cancel`
    cancels the future a task waits on first, and this one declines): the cancellation is kept for
    it instead and arrives once the ending is done. `asyncio.shield` gives the same guarantee with
    an outer future, two callbacks and one more turn of the event loop per unit.
    """

    def cancel(self, msg: Any = None) -> bool:
        return False


async def to_completion(work: Coroutine[Any, Any, T]) -> tuple[T, BaseException | None]:
    """Run `work` to its end even if this task is cancelled meanwhile: its result, and that cancellation.

    If `work` fails while a cancellation is pending, the cancellation is raised (the task must stop),
    with the failure noted on it.
    """
    task: asyncio.Task[T] = _Ending(work)
    cancellation: BaseException | None = None
    while True:
        try:
            result = await task
        except asyncio.CancelledError as cancelled:
            if task.cancelled():  # `work` itself raised CancelledError
                raise
            # This task was cancelled, not the work: the cancellation arrives once the work is done, and
            # awaiting the done task again hands over its result or its failure (below) without a pause.
            cancellation = cancellation or cancelled
            continue
        except BaseException as failure:
            if cancellation is None:
                raise
            note_secondary(cancellation, "ending the unit", failure)
            raise cancellation from None
        return result, cancellation


def is_interrupt(error: BaseException) -> bool:
    """Cancellation, KeyboardInterrupt, SystemExit: never folded into another error as a mere note."""
    return not isinstance(error, Exception)


def note_secondary(primary: BaseException, doing: str, secondary: BaseException) -> None:
    """Keep `primary` the error the caller sees; record `secondary` on it and in the log."""
    logger.error("uow: %s failed while handling %r", doing, primary, exc_info=secondary)
    add_note = getattr(primary, "add_note", None)
    if add_note is not None:
        add_note(f"uow: {doing} also failed: {secondary!r}")
    if primary.__context__ is None:
        primary.__context__ = secondary


def name_of(obj: object) -> str:
    """A callable's name for messages."""
    return getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)
