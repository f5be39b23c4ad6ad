"""Sharing: tasks and threads using one unit, one at a time (docs/design.md, "The concurrency rule").

A unit's frame is inherited by every task and thread started inside it (they copy the context).
A join from the task/thread that pushed the frame is the common case and costs one identity
compare (`uow._stack.join_innermost`). A join from another one, a *foreign join*, takes the slow
path here (`enter_foreign`): it is admitted only while nobody else uses the session (the frame's
owner is then waiting for it: Starlette running the endpoint in a task of its own, a sync endpoint
in a worker thread, ``await wait_for(child(), 5)``), and holds the session until it leaves
(`leave_foreign`). A second task joining meanwhile (gather, TaskGroup, create_task) is refused with
`PropagationError` and the whole unit is marked rollback-only; so is a statement from any task but
the holder (a parent querying while its child runs): the statement checks are Session events, in
`uow._ownership`. A unit never commits while a joined one is still running (`prune`,
`busy_elsewhere`, `straggler_error`, asked by `Transaction.finish_sync` / `finish_async`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from uow._failures import finished_error
from uow.errors import PropagationError

if TYPE_CHECKING:
    from uow._stack import ActiveUnit, Frame, UnitSpec
    from uow._transaction import Transaction

logger = logging.getLogger("uow")


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop, None outside one."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# `join_innermost` asks "is this the frame's task?" on every joined call. Python 3.12 answers with C
# code; before it, asyncio.current_task() is Python code asking for the running loop, ten times the
# cost: there, look the task up by the frame's loop (a session belongs to one loop anyway).
if sys.version_info >= (3, 12):
    task_on: Callable[[asyncio.AbstractEventLoop | None], object] = asyncio.current_task
else:  # pragma: no cover - the CI's other Pythons
    task_on = vars(asyncio.tasks)["_current_tasks"].get


def current_user(is_async: bool) -> object:
    """Who is running: the asyncio task for an async session, the thread for a sync one."""
    if is_async:
        try:
            return task_on(asyncio.get_running_loop())  # `asyncio.current_task()`, without a Python call
        except RuntimeError:  # no running loop: nothing can share the session with us
            return None
    return threading.get_ident()


def mark_busy(unit: ActiveUnit) -> object:
    """Mark the foreign unit's task/thread as in a statement on the session; what was marked before (to restore)."""
    tx, joined = unit.transaction, unit.foreign
    assert joined is not None
    previous, tx.busy = tx.busy, joined.user
    return previous


class ForeignJoin:
    """A unit entered from a task or thread other than the one that pushed the frame it joined."""

    __slots__ = ("label", "user")

    def __init__(self, user: object, label: str) -> None:
        self.user = user
        self.label = label


lock = threading.Lock()  # the slow path and the statement checks of sync sessions (threads)


def who(user: object) -> str:
    """A task or thread, for messages."""
    if isinstance(user, asyncio.Task):
        return f"task {user.get_name()!r}"
    return f"thread {user}"


def enter_foreign(spec: UnitSpec, frame: Frame) -> ForeignJoin | None:
    """None when this task/thread pushed `frame`; else admit it (a `ForeignJoin`) or refuse it."""
    tx = frame.transaction
    me = current_user(tx.is_async)
    if frame.owner == me:
        return None
    with lock:
        if tx.finished:
            raise finished_error(tx)
        _refuse_if_taken(spec, tx, holder=frame.owner, me=me)
        joined = ForeignJoin(me, spec.label)
        tx.inside = [*tx.inside, joined]  # a new list: `inside` starts as the empty tuple (see Transaction)
    return joined


def hold(tx: Transaction, spec: UnitSpec) -> object:
    """Before SAVEPOINT (a statement outside the Session's events): refuse it as a statement would be
    refused, then mark this task/thread as in a statement; what was marked before (to restore)."""
    me = current_user(tx.is_async)
    with lock:
        busy = tx.busy
        _refuse_if_taken(spec, tx, holder=me, me=me)
        tx.busy = me
    return busy


def _refuse_if_taken(spec: UnitSpec, tx: Transaction, *, holder: object, me: object) -> None:
    """Refuse `spec`'s unit when a join from a task/thread other than `holder` is running, or another
    task/thread than `me` is in a statement on the session (call with `lock` held)."""
    inside = prune(tx)
    if inside and inside[-1].user != holder:
        raise _concurrent_join_error(spec, tx, f"{inside[-1].label} (joined from {who(inside[-1].user)})")
    busy = tx.busy
    if busy is not None and busy != me:
        raise _concurrent_join_error(spec, tx, f"{who(busy)}, in a statement on it right now")


def leave_foreign(unit: ActiveUnit) -> PropagationError | None:
    """Hand the session back; the error a straggler gets when its unit ended while it ran."""
    joined = unit.foreign
    assert joined is not None
    tx = unit.transaction
    with lock:
        inside = prune(tx)
        if inside and inside[-1] is joined:
            tx.inside = inside[:-1]
        elif joined in inside:
            # Something that joined through this unit is still running after it: the unit is doomed.
            tx.root.rollback_only = True
            tx.inside = [j for j in inside if j is not joined]
    if _task_finished(joined.user):
        return None  # left open by a task that has finished (a generator dependency): nobody used it meanwhile
    if tx.finished:
        return PropagationError(
            f"{joined.label} was still running in {who(joined.user)} when the unit of work it joined on "
            f"{tx.database!r} ended (begun by {tx.label or 'a request'}): that unit rolled back, and so "
            "did this work. Await the task before the unit returns, or give the function "
            "propagation='requires_new' so it has a session of its own"
        )
    return None


def _task_finished(user: object) -> bool:
    return isinstance(user, asyncio.Task) and user.done()


def prune(tx: Transaction) -> Sequence[ForeignJoin]:
    """`tx.inside` without the joins whose task has finished.

    A task can finish while a unit it entered is still open: a framework resolves a generator
    dependency in a task of its own, which ends at the ``yield``, and closes the generator later
    from the request's task. Such a join uses the session no longer: it neither refuses other
    users nor stops the unit from committing.
    """
    inside = tx.inside
    if inside and any(_task_finished(joined.user) for joined in inside):
        tx.inside = inside = [joined for joined in inside if not _task_finished(joined.user)]
    return inside


def _concurrent_join_error(spec: UnitSpec, tx: Transaction, holder: str) -> PropagationError:
    tx.root.rollback_only = True
    return PropagationError(
        f"{spec.label} was called from {who(current_user(tx.is_async))} while {holder} is using the unit "
        f"of work on {tx.database!r} (begun by {tx.label or 'a request'}): two tasks or threads never "
        "use one session at the same time, so the whole unit will roll back. Await the calls one after "
        f"another, or give {spec.label} propagation='requires_new' so each call has a session of its own"
    )


def straggler_error(tx: Transaction) -> PropagationError:
    if not tx.inside:
        return PropagationError(
            f"the unit of work on {tx.database!r} (begun by {tx.label or 'a request'}) ended while "
            f"{who(tx.busy)} was in a statement on its session: it rolled back instead of committing. "
            "Await every task that uses the unit's session (or its services) before the unit returns"
        )
    running = ", ".join(f"{j.label} in {who(j.user)}" for j in tx.inside)
    return PropagationError(
        f"the unit of work on {tx.database!r} (begun by {tx.label or 'a request'}) ended while a unit that "
        f"joined it was still running ({running}): it rolled back instead of committing. Await every "
        "task that uses the unit before it returns, or give those functions propagation='requires_new'"
    )


def note_straggler(exc: BaseException, straggler: PropagationError) -> None:
    # The unit was failing anyway: its own error stays the one raised, and says a child still ran.
    add_note = getattr(exc, "add_note", None)
    if add_note is not None:
        add_note(f"uow: {straggler}")
    logger.warning("uow: %s", straggler)


def busy_elsewhere(tx: Transaction, ender: object = None) -> bool:
    """Whether a task/thread other than this one (and than `ender`) is in a statement on the session."""
    busy = tx.busy
    return busy is not None and busy is not ender and busy != current_user(tx.is_async)


_closing: set[asyncio.Task[Any]] = set()  # cleanups scheduled by `close_abandoned_soon`, kept alive


def close_abandoned_soon(tx: Transaction) -> None:
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
