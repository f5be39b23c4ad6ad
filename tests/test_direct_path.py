"""The direct call path (`uow._calling._sync_wrapper` / `_async_wrapper`) behaves exactly like the general one.

A decorated call whose services are classes built from the session alone, with no retry, no
override and no keyword uow takes for itself, skips the general path's bookkeeping. These
tests walk each situation that path handles itself or must hand back to the general path.
"""

from __future__ import annotations

import contextvars
import sys
import threading
from types import FrameType
from typing import Any

import pytest
from sqlalchemy.orm import Session

import uow
import uow.testing
from tests.models import AsyncItemService, ItemService, TagService
from uow import _ownership, _stack
from uow._database import _default
from uow.errors import PropagationError, RollbackOnlyError


class KeywordOnlyService:
    """A service whose session is keyword-only, so it cannot be built positionally."""

    def __init__(self, *, session: Session) -> None:
        self.session = session


def _python_calls(fn: Any) -> int:
    """How many Python-level functions run during ``fn()`` (C functions are not counted)."""
    count = 0

    def profiler(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal count
        if event == "call":
            count += 1

    sys.setprofile(profiler)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count - 1  # the lambda itself


def test_a_joined_call_runs_few_python_functions(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sqlite_db)
    def handler(items: ItemService) -> ItemService:
        return items

    with uow.unit_of_work(database=sqlite_db) as session:
        handler()  # the first join of a unit sets up what later joins reuse
        calls = _python_calls(lambda: handler())
        assert handler().session is session
    # the wrapper (the join check is inline), ItemService.__init__ and the handler: nothing else
    assert calls <= 3, calls


def test_commits_on_return_and_rolls_back_on_raise(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sqlite_db)
    def add(items: ItemService, name: str, fail: bool = False) -> None:
        items.add(name)
        if fail:
            raise RuntimeError("boom")

    add("a")
    add(name="b")
    with pytest.raises(RuntimeError):
        add("c", fail=True)
    with uow.provide_services(ItemService, database=sqlite_db) as (items,):
        assert items.names() == ["a", "b"]


def test_joined_failure_marks_the_outer_unit_rollback_only(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sqlite_db)
    def fail(items: ItemService) -> None:
        items.add("inner")
        raise RuntimeError("boom")

    @uow.with_services(ItemService, database=sqlite_db)
    def outer(items: ItemService) -> None:
        items.add("outer")
        try:
            fail()
        except RuntimeError:
            pass

    with pytest.raises(RollbackOnlyError):
        outer()
    with uow.provide_services(ItemService, database=sqlite_db) as (items,):
        assert items.names() == []


def test_positional_arguments_after_the_service(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sqlite_db)
    def add(items: ItemService, name: str) -> str:
        return items.add(name).name

    with uow.unit_of_work(database=sqlite_db):
        assert add("p") == "p"
        assert add(name="k") == "k"


def test_several_services_and_a_session_parameter_share_the_session(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService, TagService, KeywordOnlyService, database=sqlite_db)
    def handler(items: ItemService, tags: TagService, other: KeywordOnlyService, session: Session) -> set[int]:
        return {id(items.session), id(tags.session), id(other.session), id(session)}

    with uow.unit_of_work(database=sqlite_db) as session:
        assert handler() == {id(session)}
    assert len(handler()) == 1


def test_a_keyword_only_session_service(sqlite_db: uow.Database) -> None:
    @uow.with_services(KeywordOnlyService, database=sqlite_db)
    def handler(service: KeywordOnlyService) -> Session:
        return service.session

    with uow.unit_of_work(database=sqlite_db) as session:
        assert handler() is session


def test_caller_keywords_take_the_general_path(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sqlite_db)
    def handler(items: ItemService) -> ItemService:
        return items

    fake = ItemService.__new__(ItemService)
    assert handler(items=fake) is fake
    with sqlite_db.session_factory() as mine:
        assert handler(session=mine).session is mine
    with pytest.raises(ValueError, match="choose one"):
        handler(session=object(), connection=object())


def test_a_session_keyword_for_a_session_parameter_is_replaced_as_before(sqlite_db: uow.Database) -> None:
    @uow.unit_of_work(database=sqlite_db)
    def handler(db_session: Session) -> Session:
        return db_session

    with uow.unit_of_work(database=sqlite_db) as session:
        assert handler(db_session="ignored") is session  # type: ignore[arg-type]


def test_an_override_takes_the_general_path(sqlite_db: uow.Database) -> None:
    class FakeItems(ItemService):
        pass

    @uow.with_services(ItemService, database=sqlite_db)
    def handler(items: ItemService) -> ItemService:
        return items

    with uow.override(ItemService, FakeItems):
        assert type(handler()) is FakeItems
    assert type(handler()) is ItemService


def test_joining_refuses_what_the_general_path_refuses(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sqlite_db)
    def writer(items: ItemService) -> None: ...

    @uow.with_services(ItemService, database=sqlite_db, isolation_level="SERIALIZABLE")
    def serializable(items: ItemService) -> None: ...

    with uow.unit_of_work(database=sqlite_db, read_only=True), pytest.raises(PropagationError, match="read_only"):
        writer()
    with uow.unit_of_work(database=sqlite_db), pytest.raises(PropagationError, match="isolation_level"):
        serializable()


def test_the_configured_default_database_is_joined(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService)
    def handler(items: ItemService) -> Session:
        return items.session

    uow.configure(sqlite_db)
    with uow.unit_of_work() as session:
        assert handler() is session


def test_other_propagations_take_the_general_path(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sqlite_db, propagation="requires_new")
    def separate(items: ItemService) -> Session:
        return items.session

    @uow.with_services(ItemService, database=sqlite_db, propagation="never")
    def never(items: ItemService) -> None: ...

    with uow.unit_of_work(database=sqlite_db) as session:
        assert separate() is not session
        with pytest.raises(PropagationError):
            never()


async def test_async_direct_path(async_sqlite_db: uow.Database) -> None:
    @uow.with_services(AsyncItemService, database=async_sqlite_db)
    async def add(items: AsyncItemService, name: str) -> AsyncItemService:
        await items.add(name)
        return items

    @uow.with_services(AsyncItemService, database=async_sqlite_db)
    async def outer(items: AsyncItemService) -> None:
        joined = await add("joined")
        assert joined.session is items.session
        try:
            await add("joined")  # unique name: fails inside the joined unit
        except Exception:
            pass

    await add("own")
    with pytest.raises(RollbackOnlyError):
        await outer()
    async with uow.provide_services(AsyncItemService, database=async_sqlite_db) as (items,):
        assert await items.names() == ["own"]


# -- beginning a unit: `begin_sync` / `begin_async` take the BEGIN `_decide` takes, or hand over --------


def _general_sync(spec: _stack.UnitSpec) -> tuple[_stack.ActiveUnit, Session]:
    return _stack._enter_sync(spec, None, None)


def _outcome_sync(enter: Any, spec: _stack.UnitSpec) -> tuple[Any, ...]:
    """What entering (then leaving without an error) decided: the kind and the frame's parent, or the error."""
    try:
        unit, session = enter(spec)
    except uow.UowError as error:
        return type(error), str(error)
    try:
        frame = _stack.innermost_frame()
        assert frame is not None and frame.transaction is unit.transaction
        parent = frame.parent.transaction if frame.parent is not None else None
        return unit.kind, type(session), parent, unit.transaction.read_only, unit.transaction.isolation_level
    finally:
        _stack.exit_sync(unit, None)


@pytest.mark.parametrize("propagation", [p.value for p in uow.Propagation])
@pytest.mark.parametrize("options", [{}, {"read_only": True}, {"isolation_level": "SERIALIZABLE"}])
def test_begin_decides_what_the_general_path_decides(
    sqlite_db: uow.Database, async_sqlite_db: uow.Database, propagation: str, options: dict[str, Any]
) -> None:
    other = uow.Database("sqlite://")
    try:
        for database in (sqlite_db, async_sqlite_db, None):
            spec = _stack.UnitSpec(
                database=database,
                propagation=propagation,
                read_only=bool(options.get("read_only")),
                isolation_level=options.get("isolation_level"),
                label="unit()",
            )
            for configured in (None, sqlite_db):
                _default.database = configured  # the autouse fixture clears it again after the test
                # No unit active at all, then a unit on another database.
                direct = _outcome_sync(_stack.begin_sync, spec)
                assert direct == _outcome_sync(_general_sync, spec), (database, configured)
                with uow.unit_of_work(database=other) as outer:
                    assert _outcome_sync(_stack.begin_sync, spec) == _outcome_sync(_general_sync, spec)
                    outer_tx = _stack.innermost_frame()
                    assert outer_tx is not None and outer.info[_ownership.TX_KEY] is outer_tx.transaction
    finally:
        other.dispose()


def test_the_direct_begin_is_taken_and_begins(sqlite_db: uow.Database, monkeypatch: pytest.MonkeyPatch) -> None:
    def spec(propagation: str) -> _stack.UnitSpec:
        return _stack.UnitSpec(
            database=sqlite_db, propagation=propagation, read_only=False, isolation_level=None, label="u"
        )

    assert spec("required").direct_begin and not spec("mandatory").direct_begin
    calls: list[str] = []
    decide = _stack._decide

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append("decide")
        return decide(*args, **kwargs)

    monkeypatch.setattr(_stack, "_decide", spy)
    unit, session = _stack.begin_sync(spec("required"))
    _stack.exit_sync(unit, None)
    assert calls == []  # no `_decide`: the direct begin
    assert unit.kind is _stack.Kind.BEGIN and session.info.get(_ownership.CLOSED_KEY) is True
    with uow.unit_of_work(database=sqlite_db), pytest.raises(PropagationError):
        _stack.begin_sync(spec("never"))
    assert calls == ["decide"]  # a unit is active: decided in full


def test_a_begun_unit_runs_few_python_functions_more_than_by_hand(sqlite_db: uow.Database) -> None:
    factory = sqlite_db.session_factory
    names = (f"item {n}" for n in range(100))

    def by_hand() -> None:
        with factory() as session:
            ItemService(session).add(next(names))
            session.commit()

    @uow.with_services(ItemService, database=sqlite_db)
    def decorated(items: ItemService) -> None:
        items.add(next(names))

    for _ in range(2):  # the first calls set up what later calls reuse (listeners, compiled statements)
        by_hand()
        decorated()
    hand_calls = _python_calls(by_hand)
    decorated_calls = _python_calls(decorated)
    # wrapper, begin, Transaction, Scope, open, new session, Frame, ActiveUnit, exit, finish, commit,
    # the flush's ownership claim and a few SQLAlchemy properties it reads: no `_decide`, no hook machinery
    assert decorated_calls - hand_calls <= 16, (decorated_calls, hand_calls)  # main before issue 12: 38


def test_the_commit_path_decides_as_before(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sqlite_db)
    def swallow_flush_failure(items: ItemService) -> None:
        items.add("dup")
        try:
            items.add("dup")  # unique name: the flush fails and SQLAlchemy rolls the transaction back
        except Exception:
            pass

    ran: list[str] = []

    @uow.with_services(ItemService, database=sqlite_db)
    def with_hook(items: ItemService, name: str) -> None:
        items.add(name)
        uow.on_commit(lambda: ran.append("after"))

    @uow.with_services(ItemService, database=sqlite_db)
    def plain(items: ItemService) -> None:
        items.add("plain")

    with pytest.raises(RollbackOnlyError, match="flush inside it failed"):
        swallow_flush_failure()
    with_hook("hooked")
    assert ran == ["after"]
    with uow.testing.capture_on_commit() as captured:
        plain()
        with_hook("captured")
    assert len(captured) == 1 and ran == ["after"]  # no hook: nothing handed on; one hook: captured, not run
    with uow.provide_services(ItemService, database=sqlite_db) as (items,):
        assert items.names() == ["captured", "hooked", "plain"]


# -- the statement check: a few reads while only the unit's own thread uses the session -------------------


def test_a_flush_while_another_thread_is_in_a_statement_is_refused(sqlite_db: uow.Database) -> None:
    other = threading.Thread(target=lambda: None)
    other.start()
    other.join()
    assert other.ident is not None and other.ident != threading.get_ident()

    @uow.with_services(ItemService, database=sqlite_db)
    def handler(items: ItemService) -> None:
        items.add("first")  # the fast path: only this thread uses the session
        tx = items.session.info[_ownership.TX_KEY]
        assert tx.busy is None  # the claim was handed back
        tx.busy = other.ident  # as if that thread were in a statement on the session right now
        try:
            with pytest.raises(PropagationError, match="is in a statement on it"):
                items.add("second")
        finally:
            tx.busy = None

    with pytest.raises(RollbackOnlyError):
        handler()  # refused statements doom the unit
    with uow.provide_services(ItemService, database=sqlite_db) as (items,):
        assert items.names() == []


def test_a_flush_while_a_join_from_another_thread_is_inside_is_refused(sqlite_db: uow.Database) -> None:
    inside, release = threading.Event(), threading.Event()

    @uow.with_services(ItemService, database=sqlite_db)
    def joined(items: ItemService) -> None:
        inside.set()
        release.wait(10)

    errors: list[BaseException] = []

    @uow.with_services(ItemService, database=sqlite_db)
    def owner(items: ItemService) -> None:
        context = contextvars.copy_context()
        thread = threading.Thread(target=lambda: context.run(joined))
        thread.start()
        try:
            assert inside.wait(10)
            try:
                items.add("owner")  # a join from another thread holds the session: the full check refuses
            except PropagationError as error:
                errors.append(error)
        finally:
            release.set()
            thread.join(10)

    with pytest.raises(RollbackOnlyError):
        owner()
    assert len(errors) == 1 and "joined it from thread" in str(errors[0])


def test_a_kept_service_is_refused_after_its_unit(sqlite_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sqlite_db)
    def keep(items: ItemService) -> ItemService:
        items.add("kept")
        return items

    kept = keep()
    with pytest.raises(uow.NoActiveUnitOfWork, match="has ended and closed it"):
        kept.add("late")


# -- provide_services: the direct tuple builds what the general path builds --------------------------------


def test_provide_services_direct_and_general_agree(sqlite_db: uow.Database) -> None:
    with uow.provide_services(ItemService, TagService, database=sqlite_db) as (items, tags):
        assert type(items) is ItemService and type(tags) is TagService and items.session is tags.session
        first = items
    with uow.provide_services(ItemService, database=sqlite_db) as (again,):
        assert again is not first and again.session is not first.session
    # One class listed twice: the general path builds it once and hands it out twice.
    with uow.provide_services(ItemService, ItemService, database=sqlite_db) as (a, b):
        assert a is b

    class FakeItems(ItemService):
        pass

    with uow.override(ItemService, FakeItems), uow.provide_services(ItemService, database=sqlite_db) as (faked,):
        assert type(faked) is FakeItems
    with uow.unit_of_work(database=sqlite_db) as session, uow.provide_services(ItemService) as (joined,):
        assert joined.session is session


async def test_async_provide_services_direct_and_begin(async_sqlite_db: uow.Database) -> None:
    async with uow.provide_services(AsyncItemService, database=async_sqlite_db) as (items,):
        await items.add("a")
        frame = _stack.innermost_frame()
        assert frame is not None and frame.parent is None and frame.transaction.session is items.session
    async with uow.provide_services(AsyncItemService, database=async_sqlite_db) as (items,):
        assert await items.names() == ["a"]
    spec = _stack.UnitSpec(
        database=async_sqlite_db, propagation="mandatory", read_only=False, isolation_level=None, label="u"
    )
    with pytest.raises(PropagationError, match="mandatory"):
        await _stack.begin_async(spec)


def test_propagation_names_parse_as_before() -> None:
    for member in uow.Propagation:
        assert _stack.parse_propagation(member, label="u") is member
        assert _stack.parse_propagation(member.value, label="u") is member
    for bad in ("Required", "", None, [], 3):
        with pytest.raises(uow.ConfigurationError, match="unknown propagation"):
            _stack.parse_propagation(bad, label="u")  # type: ignore[arg-type]


# -- joining: the wrappers' inline join joins exactly when `join_innermost` does ------------------


def _entered_sync(enter: Any) -> tuple[Any, ...]:
    """What entering decided, seen from inside the unit: whether it ran in the innermost unit's session,
    whether it pushed a frame of its own, or the error it raised."""
    frame = _stack.innermost_frame()
    outer = frame.transaction.session if frame is not None else None
    try:
        session, inner = enter()
    except uow.UowError as error:
        return "raised", type(error)
    return session is outer, inner is frame


def _general_entry_sync(spec: _stack.UnitSpec) -> Any:
    """`enter_sync` (the general path's entry, `_decide` behind `join_innermost`), left at once."""

    def enter() -> tuple[Any, Any]:
        unit, session = _stack.enter_sync(spec)
        try:
            return session, _stack.innermost_frame()
        finally:
            _stack.exit_sync(unit, None)

    return enter


def _enter_both_sync(probe: Any, spec: _stack.UnitSpec, seen: list[tuple[Any, ...]]) -> None:
    """In another thread: no plain join there, and the wrapper enters as the general path does."""
    if spec.required:
        assert _stack.join_innermost(spec, False) is None
    seen.append(_entered_sync(probe))
    seen.append(_entered_sync(_general_entry_sync(spec)))


def _check_sync_join(probe: Any, spec: _stack.UnitSpec) -> None:
    joins = _stack.join_innermost(spec, False) is not None if spec.required else False
    direct = _entered_sync(probe)
    assert direct == _entered_sync(_general_entry_sync(spec)), (spec.propagation, direct)
    if joins:
        assert direct == (True, True), direct  # the plain join: the unit's session, no frame pushed


@pytest.mark.parametrize("propagation", ["required", "nested", "requires_new", "mandatory"])
@pytest.mark.parametrize("options", [{}, {"read_only": True}, {"isolation_level": "SERIALIZABLE"}])
def test_the_inline_join_decides_what_join_innermost_decides(
    sqlite_db: uow.Database, propagation: str, options: dict[str, Any]
) -> None:
    other = uow.Database("sqlite://")
    try:
        for database, configured in ((sqlite_db, None), (None, sqlite_db), (None, other), (other, sqlite_db)):
            _default.database = configured  # the autouse fixture clears it again after the test
            spec = _stack.UnitSpec(
                database=database,
                propagation=propagation,
                read_only=bool(options.get("read_only")),
                isolation_level=options.get("isolation_level"),
                label="probe()",
            )

            @uow.with_services(ItemService, database=database, propagation=propagation, **options)
            def probe(items: ItemService) -> tuple[Session, Any]:
                return items.session, _stack.innermost_frame()

            for outer_options in ({}, {"read_only": True}):
                with uow.unit_of_work(database=sqlite_db, **outer_options) as session:
                    session.connection()
                    try:
                        _check_sync_join(probe, spec)
                    except uow.UowError:  # `join_innermost` refuses: so must both entries
                        with pytest.raises(uow.UowError):
                            probe()
                        with pytest.raises(uow.UowError):
                            _general_entry_sync(spec)()
                    frame = _stack.innermost_frame()
                    assert frame is not None
                    # The same unit seen from another thread: no plain join, whatever the options.
                    seen: list[tuple[Any, ...]] = []
                    context = contextvars.copy_context()
                    thread = threading.Thread(target=context.run, args=(_enter_both_sync, probe, spec, seen))
                    thread.start()
                    thread.join()
                    assert len(seen) == 2 and seen[0] == seen[1] and seen[0] != (True, True), seen
                    # A unit that has finished (a request unit after its commit) is not joined either.
                    frame.transaction.finished = True
                    try:
                        assert _stack.join_innermost(spec, False) is None
                        assert _entered_sync(probe) == _entered_sync(_general_entry_sync(spec))
                    finally:
                        frame.transaction.finished = False
    finally:
        other.dispose()


async def test_the_async_inline_join_decides_what_join_innermost_decides(async_sqlite_db: uow.Database) -> None:
    import asyncio

    spec = _stack.UnitSpec(
        database=async_sqlite_db, propagation="required", read_only=False, isolation_level=None, label="probe()"
    )

    @uow.with_services(AsyncItemService, database=async_sqlite_db)
    async def probe(items: AsyncItemService) -> tuple[Any, Any]:
        return items.session, _stack.innermost_frame()

    async with uow.unit_of_work(database=async_sqlite_db) as session:
        frame = _stack.innermost_frame()
        assert _stack.join_innermost(spec, True) is not None
        assert await probe() == (session, frame)  # the plain join: no frame of its own
        # From a task started inside the unit: `join_innermost` hands it to the full decision, and so
        # does the wrapper (the task's join is admitted as a join from elsewhere, with a frame of its own).
        assert await asyncio.create_task(_no_plain_join(spec)) is None
        joined_session, inner = await asyncio.create_task(probe())
        assert joined_session is session and inner is not frame
        # A unit that has finished (a request unit after its commit) is not joined: a unit of its own.
        assert frame is not None
        frame.transaction.finished = True
        try:
            assert _stack.join_innermost(spec, True) is None
            own_session, inner = await probe()
            assert own_session is not session and inner is not frame
        finally:
            frame.transaction.finished = False
    # Read-only outer unit, read-write probe: both refuse.
    async with uow.unit_of_work(database=async_sqlite_db, read_only=True):
        with pytest.raises(PropagationError):
            _stack.join_innermost(spec, True)
        with pytest.raises(PropagationError):
            await probe()


async def _no_plain_join(spec: _stack.UnitSpec) -> Any:
    return _stack.join_innermost(spec, True)
