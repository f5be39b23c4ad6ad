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
``on_commit`` hooks run, in registration order, after the owning unit commits.
"""

from __future__ import annotations

import contextvars
import enum
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Union

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction
from sqlalchemy.orm import Session, SessionTransaction

from uow._database import Database, get_default_database
from uow.errors import ConfigurationError, NoActiveUnitOfWork, PropagationError, RollbackOnlyError

__all__ = [
    "Frame",
    "Propagation",
    "Scope",
    "Transaction",
    "current_session",
    "join_innermost",
    "on_commit",
]

logger = logging.getLogger("uow")

AnySession = Union[Session, AsyncSession]
Hook = Callable[[], Any]


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
    if isinstance(value, Propagation):
        return value
    try:
        return Propagation(value)
    except ValueError:
        valid = ", ".join(repr(p.value) for p in Propagation)
        raise ConfigurationError(f"{what}: unknown propagation {value!r}; use one of {valid}") from None


class Scope:
    """The root of a transaction or one savepoint in it; carries the rollback-only mark."""

    __slots__ = ("parent", "rollback_only", "savepoint")

    def __init__(self, parent: Scope | None, savepoint: SessionTransaction | AsyncSessionTransaction | None) -> None:
        self.parent = parent
        self.savepoint = savepoint
        self.rollback_only = False

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
    created lazily by `open_sync` / `open_async`.
    """

    __slots__ = ("database", "hooks", "is_async", "isolation_level", "owned", "read_only", "root", "session")

    def __init__(
        self,
        database: Database | None,
        *,
        session: AnySession | None = None,
        owned: bool = True,
        read_only: bool = False,
        isolation_level: str | None = None,
    ) -> None:
        self.database = database
        self.session = session
        self.owned = owned
        self.read_only = read_only
        self.isolation_level = isolation_level
        self.is_async = (
            isinstance(session, AsyncSession) if session is not None else bool(database and database.is_async)
        )
        self.root = Scope(None, None)
        self.hooks: list[tuple[Hook, Scope]] = []

    # -- opening -----------------------------------------------------------------------------

    def open_sync(self) -> Session:
        """The session, made from the Database on first use with the transaction's options applied."""
        if self.session is None:
            assert self.database is not None
            session = self.database.session_factory_for(read_only=self.read_only)()
            assert isinstance(session, Session)
            try:
                _apply_begin_options_sync(session, self.read_only, self.isolation_level)
            except BaseException:
                session.close()
                raise
            self.session = session
        return self.session  # type: ignore[return-value]

    async def open_async(self) -> AsyncSession:
        """The session, made from the Database on first use with the transaction's options applied."""
        if self.session is None:
            assert self.database is not None
            session = self.database.session_factory_for(read_only=self.read_only)()
            assert isinstance(session, AsyncSession)
            try:
                await _apply_begin_options_async(session, self.read_only, self.isolation_level)
            except BaseException:
                await _close_async(session)
                raise
            self.session = session
        return self.session  # type: ignore[return-value]

    # -- finishing (owned transactions) ------------------------------------------------------

    def finish_sync(self, exc: BaseException | None) -> None:
        """Commit (no exception, not rollback-only, not read-only) or roll back; always close; then run hooks."""
        session = self.session
        if session is None:
            self._finish_without_session(exc)
            return
        assert isinstance(session, Session)
        committed = False
        try:
            if exc is None and not self.root.rollback_only and not self.read_only:
                try:
                    session.commit()
                    committed = True
                except BaseException:
                    _rollback_quietly_sync(session)
                    raise
            else:
                _end_read_only_sync(session, self.read_only)
                _rollback_preserving_sync(session, exc)
        finally:
            _close_preserving_sync(session, exc)
        if committed:
            self.run_hooks_sync()
        elif exc is None and self.root.rollback_only:
            raise _rollback_only_error(self)

    async def finish_async(self, exc: BaseException | None) -> None:
        """Commit (no exception, not rollback-only, not read-only) or roll back; always close; then run hooks."""
        session = self.session
        if session is None:
            self._finish_without_session(exc)
            if exc is None and not self.root.rollback_only:
                await self._run_async_hooks_only()
            return
        assert isinstance(session, AsyncSession)
        committed = False
        try:
            if exc is None and not self.root.rollback_only and not self.read_only:
                try:
                    await session.commit()
                    committed = True
                except BaseException:
                    await _rollback_quietly_async(session)
                    raise
            else:
                await _end_read_only_async(session, self.read_only)
                await _rollback_preserving_async(session, exc)
        finally:
            await _close_preserving_async(session, exc)
        if committed:
            await self.run_hooks_async()
        elif exc is None and self.root.rollback_only:
            raise _rollback_only_error(self)

    def _finish_without_session(self, exc: BaseException | None) -> None:
        # Nothing touched the database: there is nothing to commit, but hooks still follow the outcome.
        if exc is None and self.root.rollback_only:
            self.hooks.clear()
            raise _rollback_only_error(self)
        if exc is not None:
            self.hooks.clear()
        elif not self.is_async:
            self.run_hooks_sync()

    async def _run_async_hooks_only(self) -> None:
        await self.run_hooks_async()

    # -- hooks -------------------------------------------------------------------------------

    def add_hook(self, callback: Hook, scope: Scope) -> None:
        if not self.is_async and inspect.iscoroutinefunction(callback):
            raise ConfigurationError(
                f"on_commit({_name(callback)}): an async callback needs an async unit; "
                "make the hook a plain function or run the unit with an async Database"
            )
        if not self.owned:
            _attach_to_caller_session(self, callback)
            return
        self.hooks.append((callback, scope))

    def drop_hooks_within(self, scope: Scope) -> None:
        self.hooks = [(cb, s) for cb, s in self.hooks if not s.is_within(scope)]

    def run_hooks_sync(self) -> None:
        hooks, self.hooks = self.hooks, []
        for callback, _ in hooks:
            try:
                result = callback()
                if inspect.isawaitable(result):
                    _discard_awaitable(result)
                    raise ConfigurationError(
                        f"on_commit hook {_name(callback)} returned an awaitable in a sync unit; it was not run"
                    )
            except Exception:
                logger.exception("on_commit hook %s failed", _name(callback))

    async def run_hooks_async(self) -> None:
        hooks, self.hooks = self.hooks, []
        for callback, _ in hooks:
            try:
                result = callback()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("on_commit hook %s failed", _name(callback))


class Frame:
    """An active unit on the context's stack."""

    __slots__ = ("database", "joined", "parent", "scope", "transaction")

    def __init__(self, database: Database | None, transaction: Transaction, scope: Scope, parent: Frame | None) -> None:
        self.database = database
        self.transaction = transaction
        self.scope = scope
        self.parent = parent
        # The unit every plain join of this frame enters (it holds nothing per call, so one serves them all).
        self.joined: ActiveUnit | None = None


_current: contextvars.ContextVar[Frame | None] = contextvars.ContextVar("uow_current_unit", default=None)


def innermost_frame() -> Frame | None:
    """The innermost active unit of this context, whatever its database."""
    return _current.get()


def find_frame(database: Database | None) -> Frame | None:
    """The innermost active unit for `database` (for None: the configured default, else any)."""
    frame = _current.get()
    if frame is None:
        return None
    if database is None:
        database = get_default_database()
        if database is None:
            return frame
    while frame is not None:
        if frame.database is database:
            return frame
        frame = frame.parent
    return None


def push_frame(frame: Frame) -> contextvars.Token[Frame | None]:
    return _current.set(frame)


def pop_frame(token: contextvars.Token[Frame | None]) -> None:
    _current.reset(token)


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
    if not callable(callback):
        raise TypeError(f"on_commit() needs a callable, got {type(callback).__name__}")
    frame = find_frame(database)
    if frame is None:
        raise _no_unit(f"on_commit({_name(callback)})", database)
    frame.transaction.add_hook(callback, frame.scope)


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


class UnitSpec:
    """What a unit asks for, fixed when it is declared (decoration time)."""

    __slots__ = ("database", "isolation_level", "propagation", "read_only", "required", "what")

    def __init__(
        self,
        *,
        database: Database | None,
        propagation: Propagation | str,
        read_only: bool,
        isolation_level: str | None,
        what: str,
    ) -> None:
        if database is not None and not isinstance(database, Database):
            raise ConfigurationError(f"{what}: database= needs a uow.Database, got {type(database).__name__}")
        self.database = database
        self.propagation = parse_propagation(propagation, what=what)
        # Precomputed for `join_innermost`: reading an enum member costs more than the rest of a join check.
        self.required = self.propagation is Propagation.REQUIRED
        self.read_only = bool(read_only)
        self.isolation_level = isolation_level
        self.what = what


class ActiveUnit:
    """One entered unit: what was decided and what must be undone on exit."""

    __slots__ = ("kind", "scope", "token", "transaction")

    def __init__(
        self, kind: Kind, transaction: Transaction, scope: Scope, token: contextvars.Token[Frame | None] | None
    ) -> None:
        self.kind = kind
        self.transaction = transaction
        self.scope = scope
        self.token = token

    @property
    def owns_transaction(self) -> bool:
        return self.kind is Kind.BEGIN


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
        frame = find_frame(request_tx.database)
        if frame is not None and frame.transaction is request_tx:
            return _decide_with_active(spec, frame, request_tx.database)
        _check_join(spec, request_tx)
        return Kind.JOIN, request_tx.database, None, request_tx
    frame = find_frame(database)
    if session is not None:
        _check_session_kind(spec, session, want_async)
        if frame is not None and frame.transaction.session is session:
            return _decide_with_active(spec, frame, database)
        if spec.propagation in (Propagation.REQUIRES_NEW, Propagation.NEVER):
            raise PropagationError(
                f"{spec.what}: propagation={spec.propagation.value!r} cannot use the session passed with session=; "
                "drop session= or use propagation='required'/'nested'"
            )
        return Kind.EXTERNAL, database, frame, None
    if database is None:
        if frame is not None:
            return _decide_with_active(spec, frame, frame.database)
        raise ConfigurationError(
            f"{spec.what} has no database: call uow.configure(Database(url)) at start-up, "
            "pass database=... to the decorator, or pass session=..."
        )
    _check_kind(spec, database, want_async)
    if frame is None:
        if spec.propagation is Propagation.MANDATORY:
            raise PropagationError(
                f"{spec.what} has propagation='mandatory' but no unit of work is active for {database!r}: "
                "call it from inside a unit, or use propagation='required'"
            )
        return Kind.BEGIN, database, None, None
    return _decide_with_active(spec, frame, database)


def _decide_with_active(
    spec: UnitSpec, frame: Frame, database: Database | None
) -> tuple[Kind, Database | None, Frame | None, Transaction | None]:
    propagation = spec.propagation
    if propagation is Propagation.NEVER:
        raise PropagationError(
            f"{spec.what} has propagation='never' but a unit of work is already active for "
            f"{database!r}: call it outside any unit, or use propagation='requires_new'"
        )
    if propagation is Propagation.REQUIRES_NEW:
        return Kind.BEGIN, database, frame, None
    _check_join(spec, frame.transaction)
    if propagation is Propagation.NESTED:
        return Kind.SAVEPOINT, database, frame, None
    return Kind.JOIN, database, frame, None


def join_innermost(spec: UnitSpec, want_async: bool) -> ActiveUnit | None:
    """The JOIN `_decide` would choose for a unit with ``propagation='required'`` whose database is the
    innermost active unit's, without the rest of `_decide` (the common case of a nested call).

    None for every other situation, which `enter_sync` / `enter_async` then decide in full. Leave the
    unit with `exit_sync` / `exit_async` like any other.
    """
    frame = _current.get()
    if frame is None or not spec.required:
        return None
    database = spec.database if spec.database is not None else get_default_database()
    if database is None or frame.database is not database or database.is_async != want_async:
        return None
    tx = frame.transaction
    if tx.read_only or spec.isolation_level is not None:
        _check_join(spec, tx)  # what `_decide` would check here; it can only refuse in these two cases
    unit = frame.joined
    if unit is None:
        unit = frame.joined = ActiveUnit(Kind.JOIN, tx, frame.scope, None)
    return unit


def enter_sync(
    spec: UnitSpec, *, session: Session | None = None, request_tx: Transaction | None = None
) -> tuple[ActiveUnit, Session]:
    """Enter a sync unit: decide, open or join, and return it with its session."""
    if session is None and request_tx is None:
        joined = join_innermost(spec, False)
        if joined is not None:
            tx = joined.transaction
            return joined, tx.session if tx.session is not None else tx.open_sync()  # type: ignore[return-value]
    kind, database, frame, request = _decide(spec, session, request_tx, want_async=False)
    if kind is Kind.JOIN:
        if request is not None:
            token = _current.set(Frame(request.database, request, request.root, _current.get()))
            return ActiveUnit(kind, request, request.root, token), request.open_sync()
        assert frame is not None
        tx = frame.transaction
        return ActiveUnit(kind, tx, frame.scope, None), tx.open_sync()
    if kind is Kind.BEGIN:
        tx = Transaction(database, read_only=spec.read_only, isolation_level=spec.isolation_level)
        opened = tx.open_sync()
        token = _current.set(Frame(database, tx, tx.root, _current.get()))
        return ActiveUnit(kind, tx, tx.root, token), opened
    if kind is Kind.SAVEPOINT:
        assert frame is not None
        tx = frame.transaction
        outer = tx.open_sync()
        scope = Scope(frame.scope, outer.begin_nested())
        token = _current.set(Frame(database, tx, scope, _current.get()))
        return ActiveUnit(kind, tx, scope, token), outer
    assert session is not None
    tx = Transaction(database, session=session, owned=False, read_only=spec.read_only)
    token = _current.set(Frame(database, tx, tx.root, _current.get()))
    return ActiveUnit(kind, tx, tx.root, token), session


async def enter_async(
    spec: UnitSpec, *, session: AsyncSession | None = None, request_tx: Transaction | None = None
) -> tuple[ActiveUnit, AsyncSession]:
    """Enter an async unit: decide, open or join, and return it with its session."""
    if session is None and request_tx is None:
        joined = join_innermost(spec, True)
        if joined is not None:
            tx = joined.transaction
            return joined, tx.session if tx.session is not None else await tx.open_async()  # type: ignore[return-value]
    kind, database, frame, request = _decide(spec, session, request_tx, want_async=True)
    if kind is Kind.JOIN:
        if request is not None:
            opened = await request.open_async()
            token = _current.set(Frame(request.database, request, request.root, _current.get()))
            return ActiveUnit(kind, request, request.root, token), opened
        assert frame is not None
        tx = frame.transaction
        return ActiveUnit(kind, tx, frame.scope, None), await tx.open_async()
    if kind is Kind.BEGIN:
        tx = Transaction(database, read_only=spec.read_only, isolation_level=spec.isolation_level)
        opened = await tx.open_async()
        token = _current.set(Frame(database, tx, tx.root, _current.get()))
        return ActiveUnit(kind, tx, tx.root, token), opened
    if kind is Kind.SAVEPOINT:
        assert frame is not None
        tx = frame.transaction
        outer = await tx.open_async()
        scope = Scope(frame.scope, await outer.begin_nested())
        token = _current.set(Frame(database, tx, scope, _current.get()))
        return ActiveUnit(kind, tx, scope, token), outer
    assert session is not None
    tx = Transaction(database, session=session, owned=False, read_only=spec.read_only)
    token = _current.set(Frame(database, tx, tx.root, _current.get()))
    return ActiveUnit(kind, tx, tx.root, token), session


def exit_sync(unit: ActiveUnit, exc: BaseException | None) -> None:
    """Leave a sync unit. Never swallows `exc` (the caller re-raises it); may raise `RollbackOnlyError`."""
    if unit.token is not None:
        _current.reset(unit.token)
    kind = unit.kind
    if kind is Kind.JOIN:
        # Joined: the owner decides; a failure here dooms the shared scope.
        if exc is not None:
            unit.scope.rollback_only = True
        return
    if kind is Kind.BEGIN:
        # Owner: commit or roll back, close, run hooks.
        unit.transaction.finish_sync(exc)
        return
    if kind is Kind.SAVEPOINT:
        _exit_savepoint_sync(unit, exc)
        return
    # External: the caller's session, the caller's commit.
    _exit_external(unit, exc)


async def exit_async(unit: ActiveUnit, exc: BaseException | None) -> None:
    """Leave an async unit. Never swallows `exc` (the caller re-raises it); may raise `RollbackOnlyError`."""
    if unit.token is not None:
        _current.reset(unit.token)
    kind = unit.kind
    if kind is Kind.JOIN:
        # Joined: the owner decides; a failure here dooms the shared scope.
        if exc is not None:
            unit.scope.rollback_only = True
        return
    if kind is Kind.BEGIN:
        # Owner: commit or roll back, close, run hooks.
        await unit.transaction.finish_async(exc)
        return
    if kind is Kind.SAVEPOINT:
        await _exit_savepoint_async(unit, exc)
        return
    # External: the caller's session, the caller's commit.
    _exit_external(unit, exc)


def _exit_savepoint_sync(unit: ActiveUnit, exc: BaseException | None) -> None:
    scope = unit.scope
    savepoint = scope.savepoint
    assert isinstance(savepoint, SessionTransaction)  # pyright: ignore[reportUnnecessaryIsInstance]
    if exc is None and not scope.rollback_only:
        # Savepoint, success: release it; its hooks now belong to the enclosing scope.
        try:
            savepoint.commit()
        except BaseException:
            _mark_failed(unit)
            raise
        return
    # Savepoint, failure or swallowed inner failure: roll back to it, forget its hooks.
    unit.transaction.drop_hooks_within(scope)
    try:
        if savepoint.is_active:
            savepoint.rollback()
    except BaseException as rollback_error:
        _mark_failed(unit)
        if exc is None:
            raise
        _note_secondary(exc, "rolling back to the savepoint", rollback_error)
    if exc is None:
        raise _rollback_only_error(unit.transaction, savepoint=True)


async def _exit_savepoint_async(unit: ActiveUnit, exc: BaseException | None) -> None:
    scope = unit.scope
    savepoint = scope.savepoint
    assert isinstance(savepoint, AsyncSessionTransaction)
    if exc is None and not scope.rollback_only:
        # Savepoint, success: release it; its hooks now belong to the enclosing scope.
        try:
            await savepoint.commit()
        except BaseException:
            _mark_failed(unit)
            raise
        return
    # Savepoint, failure or swallowed inner failure: roll back to it, forget its hooks.
    unit.transaction.drop_hooks_within(scope)
    try:
        if savepoint.is_active:
            await savepoint.rollback()
    except BaseException as rollback_error:
        _mark_failed(unit)
        if exc is None:
            raise
        _note_secondary(exc, "rolling back to the savepoint", rollback_error)
    if exc is None:
        raise _rollback_only_error(unit.transaction, savepoint=True)


def _mark_failed(unit: ActiveUnit) -> None:
    # The savepoint could not be released or rolled back: the enclosing transaction is unusable.
    parent = unit.scope.parent
    if parent is not None:
        parent.rollback_only = True


def _exit_external(unit: ActiveUnit, exc: BaseException | None) -> None:
    if exc is None and unit.scope.rollback_only:
        raise RollbackOnlyError(
            "an inner unit failed inside the session passed with session=, and its error was swallowed: "
            "roll that session back instead of committing it, or run the inner unit with propagation='nested'"
        )


def _rollback_only_error(tx: Transaction, *, savepoint: bool = False) -> RollbackOnlyError:
    where = "savepoint" if savepoint else f"unit of work on {tx.database!r}"
    return RollbackOnlyError(
        f"the {where} was rolled back instead of committed: an inner unit that joined it raised, "
        "and the exception was swallowed. Let the exception propagate, or run the inner unit with "
        "propagation='nested' so its failure can be recovered from"
    )


# -- session effects --------------------------------------------------------------------------


def _apply_begin_options_sync(session: Session, read_only: bool, isolation_level: str | None) -> None:
    if isolation_level is None and not read_only:
        return
    options = {"isolation_level": isolation_level} if isolation_level is not None else {}
    connection = session.connection(execution_options=options)
    if read_only:
        statement = _read_only_statement(connection.dialect.name)
        if statement is not None:
            connection.exec_driver_sql(statement)


async def _apply_begin_options_async(session: AsyncSession, read_only: bool, isolation_level: str | None) -> None:
    if isolation_level is None and not read_only:
        return
    options = {"isolation_level": isolation_level} if isolation_level is not None else {}
    connection = await session.connection(execution_options=options)
    if read_only:
        statement = _read_only_statement(connection.dialect.name)
        if statement is not None:
            await connection.exec_driver_sql(statement)


def _read_only_statement(dialect_name: str) -> str | None:
    if dialect_name == "sqlite":
        return "PRAGMA query_only = ON"
    if dialect_name in ("postgresql", "mysql", "mariadb"):
        return "SET TRANSACTION READ ONLY"
    return None


def _end_read_only_sync(session: Session, read_only: bool) -> None:
    # SQLite's query_only outlives the transaction: switch it off before the connection goes back to the pool.
    if read_only and session.in_transaction() and session.get_bind().dialect.name == "sqlite":
        try:
            session.connection().execute(text("PRAGMA query_only = OFF"))
        except Exception:
            session.invalidate()


async def _end_read_only_async(session: AsyncSession, read_only: bool) -> None:
    if read_only and session.in_transaction() and session.get_bind().dialect.name == "sqlite":
        try:
            await (await session.connection()).execute(text("PRAGMA query_only = OFF"))
        except Exception:
            await session.invalidate()


def _rollback_preserving_sync(session: Session, exc: BaseException | None) -> None:
    try:
        session.rollback()
    except BaseException as rollback_error:
        if exc is None:
            raise
        _note_secondary(exc, "rolling back", rollback_error)


async def _rollback_preserving_async(session: AsyncSession, exc: BaseException | None) -> None:
    try:
        await session.rollback()
    except BaseException as rollback_error:
        if exc is None:
            raise
        _note_secondary(exc, "rolling back", rollback_error)


def _rollback_quietly_sync(session: Session) -> None:
    try:
        session.rollback()
    except Exception:
        logger.exception("rollback after a failed commit failed")


async def _rollback_quietly_async(session: AsyncSession) -> None:
    try:
        await session.rollback()
    except Exception:
        logger.exception("rollback after a failed commit failed")


def _close_preserving_sync(session: Session, exc: BaseException | None) -> None:
    try:
        session.close()
    except BaseException as close_error:
        if exc is None:
            raise
        _note_secondary(exc, "closing the session", close_error)


async def _close_preserving_async(session: AsyncSession, exc: BaseException | None) -> None:
    try:
        await _close_async(session)
    except BaseException as close_error:
        if exc is None:
            raise
        _note_secondary(exc, "closing the session", close_error)


async def _close_async(session: AsyncSession) -> None:
    import asyncio

    try:
        await session.close()
    except asyncio.CancelledError:
        # Cancelled while handing the connection back: finish that shielded, then let the cancellation through.
        await asyncio.shield(session.close())
        raise


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
    """Hooks registered inside a caller-owned session run when the caller commits it (SQLAlchemy events)."""
    session = tx.session
    assert session is not None
    sync_session = session.sync_session if isinstance(session, AsyncSession) else session
    if inspect.iscoroutinefunction(callback):
        raise ConfigurationError(
            f"on_commit({_name(callback)}): inside a session passed with session=, hooks run from "
            "SQLAlchemy's after_commit event and must be plain functions"
        )
    pending: list[Hook] | None = sync_session.info.get(_CALLER_HOOKS_KEY)
    if pending is None:
        pending = []
        sync_session.info[_CALLER_HOOKS_KEY] = pending
        event.listen(sync_session, "after_commit", _run_caller_hooks)
        event.listen(sync_session, "after_rollback", _drop_caller_hooks)
    pending.append(callback)


def _run_caller_hooks(sync_session: Session) -> None:
    pending: list[Hook] = sync_session.info.get(_CALLER_HOOKS_KEY, [])
    hooks = list(pending)
    pending.clear()
    for callback in hooks:
        try:
            callback()
        except Exception:
            logger.exception("on_commit hook %s failed", _name(callback))


def _drop_caller_hooks(sync_session: Session) -> None:
    pending: list[Hook] | None = sync_session.info.get(_CALLER_HOOKS_KEY)
    if pending is not None:
        pending.clear()
