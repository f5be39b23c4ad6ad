"""The stack: the active units of each context, and how a unit enters and leaves it.

Every active unit is a *frame* (`Frame`) on a per-context stack (a `ContextVar`, so asyncio tasks
and threads never see each other's units; tasks and threads started inside a unit inherit it, see
`uow._sharing`). A frame points at its `Transaction` (one session and the database transaction in
it) and at a `Block` of it: the transaction's root, or a savepoint. Blocks carry the rollback-only
marks.

Entering a unit decides one of four things (`_decide`, a `Decision`):

- BEGIN: no unit to join (or ``requires_new``): make a transaction (its session is opened lazily),
  push a frame. On exit: commit on success, roll back on any exception, close (`uow._transaction`).
- JOIN: a unit for the same database is active (``required`` / ``mandatory``), or the call points
  at a request's unit: share its session. On exit with an exception the shared block is marked
  rollback-only; nothing else happens.
- SAVEPOINT: ``nested`` inside an active unit: ``begin_nested()``, push a frame with a new block.
  On exit: release, or roll back to the savepoint (`uow._savepoints`).
- EXTERNAL: the caller passed ``session=``: the caller owns it; uow never commits, rolls back or
  closes it.

A block marked rollback-only that is left without an exception (the failure was swallowed) is
rolled back and `RollbackOnlyError` is raised instead of a commit. While an owned transaction
runs, its session refuses the user's own commit and reports their rollback or close
(`uow._ownership`).

The life of a call
------------------
The steps one call of ``@with_services(UserService) def register(users, email)`` takes, in order
(async: the same with ``_async`` in the names):

1. **Wrapper** (`uow._calling`): the fast wrapper `wrap` built when decorating checks that the call
   passes none of ``session=``, ``connection=`` or a service by name and that no `override` is
   active; otherwise it goes the general way, `call_sync`, which reads those arguments (and a
   request's unit behind ``connection=``) and runs the retry attempts.
2. **Plan**: what the call needs was decided once, when decorating (`uow._planning.plan_function`:
   the services, the parameters they fill, the `UnitSpec` with database, propagation, read_only,
   isolation_level, timeout).
3. **Enter, begin or join** (here):
   - a ``required`` call inside a unit of the same database joins it at once: `join_innermost`
     (one identity compare for the frame's task or thread; the wrappers of `uow._calling` make
     its comparisons inline);
   - a function with its own framework connection parameter (a Starlette endpoint's ``request``)
     whose request unit is the innermost one joins it the same way: `join_request`;
   - with no unit active at all, the direct begin: `begin_sync` makes a `Transaction` and pushes
     its frame without `_decide`;
   - everything else is decided in full: `enter_sync` -> `_enter_sync` -> `_decide` (-> the
     concurrency rule's `uow._sharing.enter_foreign` for a join from another task or thread, a
     savepoint for ``nested``, the caller's session for ``session=``).
4. **Session, lazily**: `Transaction.open_sync` makes the session on first use
   (`uow._dialect.new_session`, read-only and isolation options, the timeout's watch) and guards
   it (`uow._ownership`); the services are built on it.
5. **User code** runs. `current_session`, `on_commit` and friends (`uow._ambient`) find this frame.
6. **Exit decision**: the general path first ends through a `uow._calling.UnitRun` (`settle`
   decides which error the unit ends with, then the generator providers are finished); then
   `exit_sync(unit, exc)`. BEGIN finishes the transaction; the others go through
   `_leave` (pop the frame; a failed JOIN marks the shared block rollback-only; EXTERNAL leaves the
   caller's session alone), then a savepoint is ended (`uow._savepoints.exit_savepoint_sync`) or a
   foreign join handed back (`_exit_foreign_sync`).
7. **Commit, roll back, close**: `Transaction.finish_sync(exc)`: ``before_commit`` hooks, refuse
   to commit under a unit still running elsewhere, lift the guard, commit (or roll back, raising
   `RollbackOnlyError` for a swallowed failure), close.
8. **Hooks**: `Transaction.run_hooks_sync(outcome)` runs the ``on_commit`` / ``on_rollback`` /
   ``on_completion`` hooks due after the `Outcome`.

A request unit takes the same steps with the integration as the owner: the ASGI middleware or the
Flask extension makes one lazy `Transaction` per request (`uow._request_unit.RequestUnit`), pushes
its frame (`push_transaction`), and finishes it when the response starts.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import os
from collections.abc import Callable, Generator
from threading import get_ident
from typing import TYPE_CHECKING, NamedTuple, Union

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from uow import _observe
from uow._database import Database, get_default_database
from uow._failures import mismatch_error, to_completion
from uow._savepoints import exit_savepoint_async, exit_savepoint_sync, track_savepoints
from uow._sharing import enter_foreign, hold, leave_foreign, mark_busy, prune, running_loop, task_on
from uow._timeout import Deadline
from uow._transaction import Block, Transaction
from uow.errors import ConfigurationError, PropagationError, RollbackOnlyError

if TYPE_CHECKING:
    from uow._observe import Observer, UnitRecord
    from uow._sharing import ForeignJoin

AnySession = Union[Session, AsyncSession]


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


def parse_propagation(value: Propagation | str, *, label: str) -> Propagation:
    """`value` as a `Propagation`, or a `ConfigurationError` listing the valid names."""
    try:
        found = _PROPAGATIONS.get(value)  # a member finds itself too: it is the str it stands for
    except TypeError:  # unhashable
        found = None
    if found is not None:
        return found
    valid = ", ".join(repr(p.value) for p in Propagation)
    raise ConfigurationError(f"{label}: unknown propagation {value!r}; use one of {valid}")


# `Propagation(value)` is Python code in the enum machinery; provide_services parses on every call.
_PROPAGATIONS: dict[object, Propagation] = {p.value: p for p in Propagation}


_REQUIRED, _REQUIRES_NEW, _NESTED, _MANDATORY, _NEVER = (
    Propagation.REQUIRED,
    Propagation.REQUIRES_NEW,
    Propagation.NESTED,
    Propagation.MANDATORY,
    Propagation.NEVER,
)


class Frame:
    """An active unit on the context's stack."""

    __slots__ = ("block", "database", "joined", "loop", "owner", "parent", "transaction")

    def __init__(self, database: Database | None, transaction: Transaction, block: Block, parent: Frame | None) -> None:
        self.database = database
        self.transaction = transaction
        self.block = block
        self.parent = parent
        # The unit every plain join of this frame enters (it holds nothing per call, so one serves them all).
        self.joined: ActiveUnit | None = None
        # The task (async) or thread (sync) that pushed the frame. Tasks and threads started inside the
        # unit inherit the frame with the context; a join from one of them is told apart by this.
        if transaction.is_async:
            # `current_user(True)` without its calls: the running loop's current task, None without a loop.
            loop = self.loop = running_loop()
            self.owner = None if loop is None else task_on(loop)
        else:
            self.owner = get_ident()  # current_user(False), without the call
            self.loop = None


_current: contextvars.ContextVar[Frame | None] = contextvars.ContextVar("uow_current_unit", default=None)


def _forget_parent_units() -> None:
    """In a forked child, start with no active unit: the parent's sessions hold the parent's sockets."""
    _current.set(None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_units)


current_frame: Callable[[], Frame | None] = _current.get
"""`innermost_frame` as a C call, for the wrappers' inline join (`uow._calling`)."""


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


pop_frame: Callable[[contextvars.Token[Frame | None]], None] = _current.reset
"""Undo `push_transaction` (a C call, not a Python one: request units pop once per request)."""


def push_transaction(tx: Transaction) -> contextvars.Token[Frame | None]:
    """Make `tx` the innermost active unit (its root block), as a request unit does while its request runs."""
    return _current.set(Frame(tx.database, tx, tx.root, _current.get()))


def forget_frames_above(frame: Frame | None) -> None:
    """Make `frame` the innermost unit again, dropping every frame pushed above it (units a test left open)."""
    _current.set(frame)


# -- the decision ----------------------------------------------------------------------------


class Kind(enum.Enum):
    """How an entered unit relates to the transaction it runs in: the first field of a `Decision`."""

    BEGIN = "begin"
    """It begins (and owns) a transaction of its own."""
    JOIN = "join"
    """It shares the active unit's transaction (or a request's); the owner commits."""
    SAVEPOINT = "savepoint"
    """A ``nested`` unit: a savepoint in the active unit's transaction."""
    EXTERNAL = "external"
    """It runs in the session the caller passed with ``session=``: the caller commits."""


# Reading an enum member costs about 0.2 µs on CPython 3.11 (a descriptor on the class); a module global
# a tenth of that. The hot paths compare against these.
_BEGIN, _JOIN, _SAVEPOINT, _EXTERNAL = Kind.BEGIN, Kind.JOIN, Kind.SAVEPOINT, Kind.EXTERNAL

ExceptionClasses = Union[type[BaseException], tuple[type[BaseException], ...], None]
"""What ``commit_on=`` / ``rollback_on=`` take: an exception class, a tuple of them, or None."""


def parse_exception_classes(value: object, *, option: str, label: str) -> tuple[type[BaseException], ...]:
    """`value` as a tuple of exception classes, or a `ConfigurationError` saying what is wrong."""
    if value is None:
        return ()
    given: tuple[object, ...] = tuple(value) if isinstance(value, (tuple, list, set, frozenset)) else (value,)
    classes: list[type[BaseException]] = []
    for cls in given:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise ConfigurationError(
                f"{label}: {option}= needs exception classes (a class such as ValueError, or a tuple of them), "
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
        "label",
        "propagation",
        "read_only",
        "required",
        "rollback_on",
        "timeout",
    )

    def __init__(
        self,
        *,
        database: Database | None,
        propagation: Propagation | str,
        read_only: bool,
        isolation_level: str | None,
        label: str,
        timeout: float | None = None,
        durable: bool = False,
        commit_on: ExceptionClasses = None,
        rollback_on: ExceptionClasses = None,
    ) -> None:
        if database is not None and not isinstance(database, Database):
            raise ConfigurationError(f"{label}: database= needs a uow.Database, got {type(database).__name__}")
        self.database = database
        self.propagation = parse_propagation(propagation, label=label)
        if not isinstance(durable, bool):
            raise ConfigurationError(f"{label}: durable= needs True or False, got {durable!r}")
        self.durable = durable
        if durable:
            if self.propagation not in (Propagation.REQUIRED, Propagation.NEVER):
                raise ConfigurationError(
                    f"{label}: durable=True refuses to run inside another unit, but propagation="
                    f"{self.propagation.value!r} is about running inside one; drop one of the two "
                    "(durable=True is propagation='never' with Django's name and error)"
                )
            self.propagation = Propagation.NEVER
        # Both empty unless asked for: `commits` is then one falsy check on the failure path.
        self.commit_on = (
            () if commit_on is None else parse_exception_classes(commit_on, option="commit_on", label=label)
        )
        self.rollback_on = (
            () if rollback_on is None else parse_exception_classes(rollback_on, option="rollback_on", label=label)
        )
        # Precomputed for `join_innermost`: reading an enum member costs more than the rest of a join check.
        self.required = self.propagation is _REQUIRED
        self.read_only = bool(read_only)
        self.isolation_level = isolation_level
        self.timeout = timeout  # seconds, checked by `parse_timeout` before it gets here
        self.label = label
        # Whether `begin_sync` / `begin_async` may BEGIN this unit without `_decide` when no unit is active:
        # every propagation but 'mandatory' begins then. The one place a unit option that changes how a
        # unit begins (a timeout, an instrumentation check) turns the direct begin off, or adds its step.
        self.direct_begin = self.propagation is not _MANDATORY and timeout is None

    def commits(self, exc: BaseException) -> bool:
        """Whether the unit commits although `exc` leaves it (it matches commit_on=, not rollback_on=)."""
        return bool(self.commit_on) and isinstance(exc, self.commit_on) and not isinstance(exc, self.rollback_on)


class Decision(NamedTuple):
    """What entering a unit decided (`_decide`), before anything is touched."""

    kind: Kind
    database: Database | None
    """The unit's database: its own, the configured default, or the one of the unit it joins."""
    frame: Frame | None
    """The active unit it joins, nests a savepoint in, or begins beside (``requires_new``)."""
    request_tx: Transaction | None
    """The request's transaction a JOIN enters when that unit is not on this context's stack."""


class ActiveUnit:
    """One entered unit: what was decided and what must be undone on exit."""

    __slots__ = ("block", "foreign", "kind", "token", "transaction")

    def __init__(
        self,
        kind: Kind,
        transaction: Transaction,
        block: Block,
        token: contextvars.Token[Frame | None] | None,
        foreign: ForeignJoin | None = None,
    ) -> None:
        self.kind = kind
        self.transaction = transaction
        self.block = block
        self.token = token
        self.foreign = foreign  # entered from another task/thread: hand the session back on exit

    @property
    def owns_transaction(self) -> bool:
        """Whether this unit began the transaction (`uow._timeout.begin_deadline` arms its deadline)."""
        return self.kind is _BEGIN


def spec_database(spec: UnitSpec) -> Database | None:
    return spec.database if spec.database is not None else get_default_database()


def _check_kind(spec: UnitSpec, database: Database | None, want_async: bool) -> None:
    if database is not None and database.is_async != want_async:
        raise mismatch_error(spec.label, database, function_is_async=want_async)


def _check_active_kind(spec: UnitSpec, tx: Transaction, want_async: bool) -> None:
    # With no database to go by, the active unit decides, and a sync unit cannot share an AsyncSession.
    if tx.is_async != want_async:
        raise ConfigurationError(
            f"{spec.label} is {'async' if want_async else 'sync'} but the active unit it would join is "
            f"{'async' if tx.is_async else 'sync'}: pass database=... with a "
            f"{'async' if want_async else 'sync'} Database, or call it the same way as the active unit"
        )


def _check_session_kind(spec: UnitSpec, session: object, want_async: bool) -> None:
    if want_async and not isinstance(session, AsyncSession):
        raise ConfigurationError(
            f"{spec.label} is async: session= must be an AsyncSession, got {type(session).__name__}"
        )
    if not want_async and not isinstance(session, Session):
        raise ConfigurationError(f"{spec.label} is sync: session= must be a Session, got {type(session).__name__}")


def check_join(spec: UnitSpec, tx: Transaction) -> None:
    # `join_innermost` skips this unless the transaction is read-only or the unit asks for an
    # isolation level: a new reason to refuse a join must widen that condition too.
    if tx.read_only and not spec.read_only:
        raise PropagationError(
            f"{spec.label} is read-write but the active unit is read_only=True: "
            "pass read_only=True to it, or use propagation='requires_new' to write in a unit of its own"
        )
    if spec.isolation_level is not None and spec.isolation_level != tx.isolation_level:
        raise PropagationError(
            f"{spec.label} asks for isolation_level={spec.isolation_level!r} but the active unit runs at "
            f"{tx.isolation_level or 'the default level'}: a joined unit cannot change it; "
            "set the level on the outermost unit, or use propagation='requires_new'"
        )


def _decide(spec: UnitSpec, session: AnySession | None, request_tx: Transaction | None, want_async: bool) -> Decision:
    """Which of BEGIN/JOIN/SAVEPOINT/EXTERNAL this entry is, before anything is touched."""
    database = spec_database(spec)
    if request_tx is not None:
        _check_kind(spec, request_tx.database, want_async)
        frame = find_frame(request_tx.database)
        if frame is not None and frame.transaction is request_tx:
            return _decide_with_active(spec, frame, request_tx.database)
        if spec.propagation is Propagation.NEVER:
            raise _never_error(spec, request_tx, request_tx.database)
        check_join(spec, request_tx)
        return Decision(_JOIN, request_tx.database, None, request_tx)
    frame = find_frame(database)
    if session is not None:
        _check_session_kind(spec, session, want_async)
        if frame is not None and frame.transaction.session is session:
            return _decide_with_active(spec, frame, database)
        if spec.durable:
            raise PropagationError(
                f"{spec.label} is durable=True, so it must begin its own transaction, but it was given a session "
                "with session=, whose transaction the caller commits; drop session= or durable=True"
            )
        if spec.propagation in (_REQUIRES_NEW, _NEVER):
            raise PropagationError(
                f"{spec.label}: propagation={spec.propagation.value!r} cannot use the session passed with session=; "
                "drop session= or use propagation='required'/'nested'"
            )
        return Decision(_EXTERNAL, database, frame, None)
    if database is None:
        if frame is not None:
            _check_active_kind(spec, frame.transaction, want_async)
            return _decide_with_active(spec, frame, frame.database)
        raise ConfigurationError(
            f"{spec.label} has no database: call uow.configure(Database(url)) at start-up, "
            "pass database=... to the decorator, or pass session=..."
        )
    _check_kind(spec, database, want_async)
    if frame is None:
        if spec.propagation is _MANDATORY:
            raise PropagationError(
                f"{spec.label} has propagation='mandatory' but no unit of work is active for {database!r}: "
                "call it from inside a unit, or use propagation='required'"
            )
        return Decision(_BEGIN, database, None, None)
    return _decide_with_active(spec, frame, database)


def _decide_with_active(spec: UnitSpec, frame: Frame, database: Database | None) -> Decision:
    propagation = spec.propagation
    if propagation is _NEVER:
        raise _never_error(spec, frame.transaction, database)
    if propagation is _REQUIRES_NEW:
        return Decision(_BEGIN, database, frame, None)
    check_join(spec, frame.transaction)
    if propagation is _NESTED:
        return Decision(_SAVEPOINT, database, frame, None)
    return Decision(_JOIN, database, frame, None)


def _never_error(spec: UnitSpec, active: Transaction, database: Database | None) -> PropagationError:
    outer = active.label or "a request's unit of work"
    if spec.durable:
        return PropagationError(
            f"{spec.label} is durable=True, so it must be the outermost unit of work, but it was called "
            f"inside {outer} on {database!r}: its commit would be part of that unit's transaction. Call it "
            "outside any unit, or drop durable=True to let it join"
        )
    return PropagationError(
        f"{spec.label} has propagation='never' but a unit of work is already active for "
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
        if task_on(frame.loop) is not frame.owner:
            return None  # another task: `enter_async` admits it or refuses it (see `enter_foreign`)
    elif frame.owner != get_ident():
        return None
    if tx.read_only or spec.isolation_level is not None:
        check_join(spec, tx)  # what `_decide` would check here; it can only refuse in these two cases
    unit = frame.joined
    if unit is None:
        unit = frame.joined = ActiveUnit(_JOIN, tx, frame.block, None)
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
        if task_on(frame.loop) is not frame.owner:
            return None  # another task: `enter_foreign` admits it or refuses it
    elif frame.owner != get_ident():
        return None
    if tx.read_only or spec.isolation_level is not None:
        check_join(spec, tx)  # what `_decide_with_active` would check here
    unit = frame.joined
    if unit is None:
        unit = frame.joined = ActiveUnit(_JOIN, tx, frame.block, None)
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
            tx = Transaction(database, read_only=spec.read_only, isolation_level=spec.isolation_level, label=spec.label)
            opened = tx.open_sync()
            root = tx.root
            return ActiveUnit(_BEGIN, tx, root, _current.set(Frame(database, tx, root, None))), opened
    return _enter_sync(spec, None, None)


def _enter_sync(spec: UnitSpec, session: Session | None, request_tx: Transaction | None) -> tuple[ActiveUnit, Session]:
    """`enter_sync` decided in full: `_decide`, then the I/O the decision needs (the steps without I/O are
    shared with `_enter_async`: `_push`, `_new_transaction`, `_holding_for_savepoint`, `_enter_external`)."""
    kind, database, frame, request = _decide(spec, session, request_tx, want_async=False)
    if kind is _JOIN:
        if request is not None:
            unit = _push(kind, request, request.root, request.database)
            return unit, request.open_sync()
        assert frame is not None
        tx = frame.transaction
        foreign = enter_foreign(spec, frame)
        if foreign is None:
            return ActiveUnit(kind, tx, frame.block, None), tx.open_sync()
        unit = _push(kind, tx, frame.block, database, foreign)
        try:
            return unit, tx.open_sync()
        except BaseException as failure:
            exit_sync(unit, failure)
            raise
    if kind is _BEGIN:
        tx = _new_transaction(spec, database)
        observer = _observe.observer  # None unless uow.otel / uow.logs watch units
        opened = tx.open_sync() if observer is None else _open_observed_sync(observer, tx, spec)
        return _push(kind, tx, tx.root, database), opened
    if kind is _SAVEPOINT:
        assert frame is not None
        tx = frame.transaction
        with _holding_for_savepoint(spec, frame) as foreign:
            outer = tx.open_sync()
            track_savepoints(outer)
            block = Block(frame.block, outer.begin_nested())
        return _push(kind, tx, block, database, foreign), outer
    assert session is not None
    return _enter_external(spec, database, session), session


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
            tx = Transaction(database, read_only=spec.read_only, isolation_level=spec.isolation_level, label=spec.label)
            opened = await tx.open_async()
            root = tx.root
            return ActiveUnit(_BEGIN, tx, root, _current.set(Frame(database, tx, root, None))), opened
    return await _enter_async(spec, None, None)


async def _enter_async(
    spec: UnitSpec, session: AsyncSession | None, request_tx: Transaction | None
) -> tuple[ActiveUnit, AsyncSession]:
    """`_enter_sync`, awaiting the I/O."""
    kind, database, frame, request = _decide(spec, session, request_tx, want_async=True)
    if kind is _JOIN:
        if request is not None:
            opened = await request.open_async()
            return _push(kind, request, request.root, request.database), opened
        assert frame is not None
        tx = frame.transaction
        foreign = enter_foreign(spec, frame)
        if foreign is None:
            return ActiveUnit(kind, tx, frame.block, None), await tx.open_async()
        unit = _push(kind, tx, frame.block, database, foreign)
        try:
            return unit, await tx.open_async()
        except BaseException as failure:
            await exit_async(unit, failure)
            raise
    if kind is _BEGIN:
        tx = _new_transaction(spec, database)
        observer = _observe.observer  # None unless uow.otel / uow.logs watch units
        opened = await tx.open_async() if observer is None else await _open_observed_async(observer, tx, spec)
        return _push(kind, tx, tx.root, database), opened
    if kind is _SAVEPOINT:
        assert frame is not None
        tx = frame.transaction
        with _holding_for_savepoint(spec, frame) as foreign:
            outer = await tx.open_async()
            track_savepoints(outer.sync_session)
            block = Block(frame.block, await outer.begin_nested())
        return _push(kind, tx, block, database, foreign), outer
    assert session is not None
    return _enter_external(spec, database, session), session


def _push(
    kind: Kind, tx: Transaction, block: Block, database: Database | None, foreign: ForeignJoin | None = None
) -> ActiveUnit:
    """The entered unit, its frame pushed on this context's stack."""
    return ActiveUnit(kind, tx, block, _current.set(Frame(database, tx, block, _current.get())), foreign)


def _new_transaction(spec: UnitSpec, database: Database | None) -> Transaction:
    """The transaction a BEGIN makes (decided in full: the direct begin makes its own, without a timeout)."""
    tx = Transaction(database, read_only=spec.read_only, isolation_level=spec.isolation_level, label=spec.label)
    if spec.timeout is not None:
        tx.deadline = Deadline(spec.label, spec.timeout, owner=True)
    return tx


@contextlib.contextmanager
def _holding_for_savepoint(spec: UnitSpec, frame: Frame) -> Generator[ForeignJoin | None, None, None]:
    """Around opening the session and SAVEPOINT (a statement outside the Session's events): refused as a
    statement would be, with the session held meanwhile; a join from another task or thread, admitted
    for the savepoint (the `ForeignJoin` given), is handed back when that fails."""
    tx = frame.transaction
    foreign = enter_foreign(spec, frame)
    previous = hold(tx, spec)
    try:
        yield foreign
    except BaseException:
        if foreign is not None:
            leave_foreign(ActiveUnit(_SAVEPOINT, tx, frame.block, None, foreign))
        raise
    finally:
        tx.busy = previous


def _enter_external(spec: UnitSpec, database: Database | None, session: AnySession) -> ActiveUnit:
    """A unit in the session the caller passed with ``session=``: a transaction uow never commits, rolls back or closes."""
    tx = Transaction(database, session=session, owned=False, read_only=spec.read_only)
    return _push(_EXTERNAL, tx, tx.root, database)


def exit_sync(unit: ActiveUnit, exc: BaseException | None) -> None:
    """Leave a sync unit. Never swallows `exc` (the caller re-raises it); may raise `RollbackOnlyError`."""
    if unit.kind is _BEGIN:
        # The owner: commit or roll back, close, run hooks. Nearly every call ends here, so without
        # `_leave`'s call (benchmarks/calls.py counts it); a BEGIN unit is never foreign and has a token.
        _current.reset(unit.token)  # type: ignore[arg-type]
        tx = unit.transaction
        if tx.observed is None:
            tx.finish_sync(exc)
        else:
            tx.observed.finish_sync(tx.finish_sync, exc)
    elif _leave(unit, exc):
        if unit.foreign is not None:
            _exit_foreign_sync(unit, exc)
        else:
            exit_savepoint_sync(unit, exc)


async def exit_async(unit: ActiveUnit, exc: BaseException | None) -> None:
    """Leave an async unit: `exit_sync`, awaiting the transaction's or the savepoint's end."""
    if unit.kind is _BEGIN:
        _current.reset(unit.token)  # type: ignore[arg-type]
        tx = unit.transaction
        if tx.observed is None:
            await tx.finish_async(exc)
        else:
            await tx.observed.finish_async(tx.finish_async, exc)
    elif _leave(unit, exc):
        if unit.foreign is not None:
            await _exit_foreign_async(unit, exc)
        else:
            await exit_savepoint_async(unit, exc)


def _leave(unit: ActiveUnit, exc: BaseException | None) -> bool:
    """Leave a unit that did not begin its transaction, as far as that is the same sync and async and
    needs no I/O: pop its frame; a JOIN that fails dooms the shared block (the owner decides the rest);
    an EXTERNAL unit leaves the caller's session alone. Whether I/O is left: a savepoint to release or
    roll back to, or a join from another task or thread to hand back (then `_exit_foreign_*`)."""
    if unit.foreign is not None:
        _pop_foreign_frame(unit)
        return True
    if unit.token is not None:
        _current.reset(unit.token)
    kind = unit.kind
    if kind is _SAVEPOINT:
        return True
    if kind is _JOIN:
        if exc is not None:
            unit.block.rollback_only = True
    else:  # EXTERNAL: the caller's session, the caller's commit
        _exit_external(unit, exc)
    return False


def _observe_unit(observer: Observer, tx: Transaction, spec: UnitSpec) -> UnitRecord:
    """Give an owning unit its record (`uow._observe`) before it opens, so what opening runs is part of it."""
    record = tx.observed = observer.unit_began(
        function=spec.label,
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


def _exit_foreign_sync(unit: ActiveUnit, exc: BaseException | None) -> None:
    # A join or savepoint entered from another thread: end it like any other, then hand the session back.
    try:
        if unit.kind is _SAVEPOINT and not unit.transaction.finished:
            # Releasing or rolling back is a statement too: nobody may end the unit under it.
            previous = mark_busy(unit)
            try:
                exit_savepoint_sync(unit, exc)
            finally:
                unit.transaction.busy = previous
        elif exc is not None:
            unit.block.rollback_only = True
    finally:
        late = leave_foreign(unit)
        tx = unit.transaction
        if tx.abandoned and not prune(tx):
            tx.close_abandoned_sync()
    if late is not None and exc is None:
        raise late


async def _exit_foreign_async(unit: ActiveUnit, exc: BaseException | None) -> None:
    try:
        if unit.kind is _SAVEPOINT and not unit.transaction.finished:
            previous = mark_busy(unit)
            try:
                await exit_savepoint_async(unit, exc)
            finally:
                unit.transaction.busy = previous
        elif exc is not None:
            unit.block.rollback_only = True
    finally:
        late = leave_foreign(unit)
        tx = unit.transaction
        cancellation = None
        if tx.abandoned and not prune(tx):
            _, cancellation = await to_completion(tx.close_abandoned_async())
    if cancellation is not None:
        raise cancellation
    if late is not None and exc is None:
        raise late


def _exit_external(unit: ActiveUnit, exc: BaseException | None) -> None:
    if exc is None and unit.block.rollback_only:
        raise RollbackOnlyError(
            "an inner unit failed inside the session passed with session=, and its error was swallowed: "
            "roll that session back instead of committing it, or run the inner unit with propagation='nested'"
        )
