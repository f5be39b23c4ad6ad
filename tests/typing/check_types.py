"""What mypy --strict and pyright see of the public decorators. Checked by tests/test_typing.py, never run.

Every ``# type: ignore`` below marks an error the checkers must report: mypy --strict
(warn_unused_ignores) and pyright (reportUnnecessaryTypeIgnoreComment) both fail on one that is not needed.
"""
# pyright: reportUnnecessaryTypeIgnoreComment=true

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import click
import litestar
import saq.types
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from typing_extensions import assert_type

import uow
from uow._decorators import UnitOfWork


class UserService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session


class RoleService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session


class SyncUserService:
    def __init__(self, session: Session) -> None:
        self.session = session


class Clock:
    pass


def provide_clock(session: Session) -> Iterator[Clock]:
    yield Clock()


async def provide_roles(session: AsyncSession) -> AsyncIterator[RoleService]:
    yield RoleService(session)


async def make_users(session: AsyncSession) -> UserService:
    return UserService(session)


# -- services as the leading parameters: the decorated function is the original minus them ----------


@uow.with_services(UserService, RoleService)
async def create_default_roles(users: UserService, roles: RoleService, user_id: int) -> str:
    return str(user_id)


# Assignable to the exact form (the checkers keep the parameter's name, so assert_type cannot spell it)...
exact: Callable[[int], Coroutine[Any, Any, str]] = create_default_roles


@uow.with_services(SyncUserService, provide_clock)
def sync_leading(users: SyncUserService, clock: Clock, user_id: int, *, verbose: bool = False) -> int:
    return user_id


@uow.with_services(make_users, provide_roles)
async def from_providers(users: UserService, roles: RoleService, name: str) -> list[str]:
    return [name]


async def calls(session: AsyncSession, sync_session: Session) -> None:
    assert_type(await create_default_roles(5), str)
    assert_type(await create_default_roles(user_id=5), str)
    assert_type(sync_leading(1), int)
    assert_type(sync_leading(1, verbose=True), int)
    assert_type(await from_providers("x"), list[str])
    # ...and not the Callable[..., R] fallback: wrong, missing and unknown arguments are errors.
    await create_default_roles("five")  # type: ignore[call-overload]
    await create_default_roles()  # type: ignore[call-overload]
    await create_default_roles(5, user=1)  # type: ignore[call-overload]
    sync_leading()  # type: ignore[call-overload]
    sync_leading(1, verbose="yes")  # type: ignore[call-overload]
    await from_providers(1)  # type: ignore[call-overload]
    # A caller's session (its other arguments are not checked), or a service by keyword, checked by type.
    assert_type(await create_default_roles(5, session=session), str)
    assert_type(sync_leading(1, session=sync_session), int)
    fake = RoleService(session)
    assert_type(await create_default_roles(user_id=5, users=UserService(session), roles=fake), str)
    await create_default_roles(user_id=5, users=UserService(session), roles="fake")  # type: ignore[call-overload]


# -- methods: services after `self` (a service class's method, a Litestar controller's handler) ----------


class Jobs:
    @uow.with_services(UserService)
    async def run(self, users: UserService, user_id: int) -> str:
        return str(user_id)

    @uow.with_services(SyncUserService, provide_clock)
    def sync_run(self, users: SyncUserService, clock: Clock, *, user_id: int) -> int:
        return user_id

    @classmethod
    @uow.with_services(UserService)
    async def for_class(cls, users: UserService, user_id: int) -> str:
        return cls.__name__

    @uow.with_services(UserService)  # above @classmethod works the same
    @classmethod
    async def for_class_outer(cls, users: UserService, user_id: int) -> str:
        return cls.__name__

    @staticmethod
    @uow.with_services(UserService)
    async def static(users: UserService, user_id: int) -> str:
        return str(user_id)

    @uow.with_services(UserService)
    @staticmethod
    async def static_outer(user_id: int, users: UserService) -> str:
        return str(user_id)


class TodoController(litestar.Controller):
    path = "/todos"

    @litestar.get("/{todo_id:int}")
    @uow.with_services(UserService)
    async def get_todo(self, users: UserService, todo_id: int) -> dict[str, int]:
        return {"id": todo_id}

    @uow.with_services(UserService)
    async def helper(self, users: UserService, todo_id: int) -> int:
        return todo_id


async def methods(session: AsyncSession, sync_session: Session) -> None:
    jobs = Jobs()
    assert_type(await jobs.run(5), str)
    assert_type(await jobs.run(user_id=5), str)
    assert_type(await Jobs.run(jobs, 5), str)
    assert_type(jobs.sync_run(user_id=1), int)
    assert_type(await Jobs.for_class(5), str)
    assert_type(await jobs.for_class(5), str)
    assert_type(await Jobs.for_class_outer(5), str)
    assert_type(await Jobs.static(5), str)
    assert_type(await jobs.static(5), str)
    assert_type(await Jobs.static_outer(5), str)
    assert_type(await jobs.run(5, session=session), str)
    assert_type(await jobs.run(5, connection=object()), str)
    assert_type(await jobs.run(user_id=5, users=UserService(session)), str)
    assert_type(jobs.sync_run(user_id=1, users=SyncUserService(sync_session), clock=Clock()), int)
    await jobs.run("five")  # type: ignore[call-overload]
    await jobs.run()  # type: ignore[call-overload]
    await jobs.run(5, extra=1)  # type: ignore[call-overload]
    await jobs.run(user_id=5, users=RoleService(session))  # type: ignore[call-overload]
    await Jobs.run(5)  # type: ignore[call-overload]
    jobs.sync_run(1)  # type: ignore[call-overload]
    jobs.sync_run(user_id="1")  # type: ignore[call-overload]
    await Jobs.for_class("five")  # type: ignore[call-overload]
    await jobs.for_class()  # type: ignore[call-overload]
    await Jobs.for_class_outer("five")  # type: ignore[call-overload]
    await Jobs.static("five")  # type: ignore[call-overload]
    await Jobs.static_outer(5, 6)  # type: ignore[call-overload]
    assert_type(await TodoController(owner=litestar.Router("/", route_handlers=[])).helper(3), int)
    await TodoController(owner=litestar.Router("/", route_handlers=[])).helper("3")  # type: ignore[call-overload]


# -- jobs: the runner's `ctx` first (SAQ, arq), then the services, then the job's own arguments ---------------


@uow.with_services(UserService)
async def job(ctx: dict[str, object], users: UserService, *, user_id: int) -> int:
    return user_id


@uow.with_services(SyncUserService)
def sync_job(ctx: dict[str, object], users: SyncUserService, user_id: int, note: str = "") -> int:
    return user_id


@uow.with_services(UserService)
async def saq_job(ctx: saq.types.Context, users: UserService, *, user_id: int) -> dict[str, int]:
    return {"user_id": user_id}


async def jobs(session: AsyncSession, saq_ctx: saq.types.Context) -> None:
    # mypy (not pyright) infers Any for a decorated function whose signature mentions Any, as SAQ's
    # Context does: given an argument containing Any, its overload rule gives up when two overloads
    # match (the exact one and the fallback). So these lines are errors for pyright only; the
    # uow.mypy plugin makes mypy exact here (check_mypy_plugin.py).
    result: dict[str, int] = await saq_job(saq_ctx, user_id=1)
    await saq_job(saq_ctx, user_id="1")  # pyright: ignore[reportArgumentType]
    await saq_job({"nope": 1}, user_id=1)  # pyright: ignore[reportArgumentType]
    assert result
    assert_type(await job({}, user_id=1), int)
    assert_type(sync_job({}, 1, note="x"), int)
    assert_type(await job({}, user_id=1, session=session), int)
    assert_type(await job({}, user_id=1, connection=object()), int)
    assert_type(await job({}, users=UserService(session), user_id=1), int)
    await job({}, user_id="1")  # type: ignore[call-overload]
    await job({})  # type: ignore[call-overload]
    await job({}, user_id=1, retries=3)  # type: ignore[call-overload]
    await job(user_id=1)  # type: ignore[call-overload]
    sync_job({}, "1")  # type: ignore[call-overload]


# -- commands: options first (click, typer), then the services -------------------------------------------


@uow.with_services(SyncUserService)
def add_user(name: str, admin: bool, users: SyncUserService, *, quiet: bool = False) -> str:
    return name


@click.command()
@click.option("--name")
@uow.with_services(SyncUserService)
def click_command(name: str, users: SyncUserService) -> None:
    pass


@uow.with_services(SyncUserService, provide_clock)
def three_first(a: int, b: int, c: int, users: SyncUserService, clock: Clock) -> int:
    return a + b + c


def commands(sync_session: Session) -> None:
    assert_type(add_user("ann", True), str)
    assert_type(add_user("ann", False, quiet=True), str)
    assert_type(add_user("ann", True, session=sync_session), str)
    assert_type(three_first(1, 2, 3), int)
    assert_type(click_command, click.Command)
    add_user("ann")  # type: ignore[call-overload]
    add_user("ann", "yes")  # type: ignore[call-overload]
    add_user("ann", True, loud=True)  # type: ignore[call-overload]
    three_first(1, 2, "3")  # type: ignore[call-overload]


# -- services after positional parameters ----------------------------------------------------------------


@uow.with_services(UserService)
async def trailing(user_id: int, users: UserService) -> str:
    return str(user_id)


async def after_positional(session: AsyncSession) -> None:
    assert_type(await trailing(5), str)
    assert_type(await trailing(5, users=UserService(session)), str)
    await trailing("5")  # type: ignore[call-overload]
    await trailing()  # type: ignore[call-overload]
    # The parameters before the services are positional-only to the checkers (PEP 612).
    await trailing(user_id=5)  # type: ignore[call-overload]


# -- a Session / AsyncSession parameter next to the services receives the unit's session: hidden too -------


@uow.with_services(UserService)
async def session_first(session: AsyncSession, users: UserService, user_id: int) -> str:
    return str(user_id)


@uow.with_services(SyncUserService, provide_clock)
def session_after(users: SyncUserService, clock: Clock, session: Session, *, name: str) -> str:
    return name


@uow.with_services(SyncUserService)
def object_after(users: SyncUserService, payload: object, count: int) -> int:
    return 1


class WithSession:
    @uow.with_services(UserService)
    async def session_then_services(self, session: AsyncSession, users: UserService, user_id: int) -> str:
        return str(user_id)


async def sessions(session: AsyncSession) -> None:
    assert_type(await session_first(5), str)
    assert_type(await WithSession().session_then_services(5), str)
    # Only a session before the services is taken away: one after them stays for the caller to pass
    # (an `object` or `Any` parameter there must not be mistaken for it).
    assert_type(session_after(Session(), name="x"), str)
    assert_type(object_after(1, 2), int)
    session_after(name="x")  # type: ignore[call-overload]
    object_after()  # type: ignore[call-overload]
    assert_type(await session_first(5, session=session), str)
    assert_type(await session_first(user_id=5, users=UserService(session)), str)
    assert_type(await WithSession().session_then_services(user_id=5, users=UserService(session)), str)
    await session_first(user_id=5, users=RoleService(session))  # type: ignore[call-overload]
    await session_first("5")  # type: ignore[call-overload]
    await WithSession().session_then_services()  # type: ignore[call-overload]


# -- what PEP 612 cannot express falls back to Callable[..., R]: calls type-check, the return type is kept ----


@uow.with_services(SyncUserService)
def keyword_only(user_id: int, *, users: SyncUserService) -> bytes:
    return b""


@uow.with_services(UserService, RoleService)
async def reordered(roles: RoleService, users: UserService, user_id: int) -> str:
    return str(user_id)


async def fallbacks() -> None:
    fallback: Callable[..., bytes] = keyword_only
    assert_type(fallback(5), bytes)
    assert_type(keyword_only(5), bytes)
    assert_type(keyword_only(5, users=SyncUserService(Session())), bytes)
    assert_type(keyword_only("not checked"), bytes)
    assert_type(await reordered(5), str)


# -- unit_of_work as a decorator keeps the function's type ------------------------------------------------


@uow.unit_of_work()
def bare(user_id: int, *, verbose: bool = False) -> int:
    return user_id


@uow.unit_of_work()
async def with_session(session: AsyncSession, user_id: int) -> int:
    return user_id


class Units:
    @uow.unit_of_work()
    def sync_method(self, session: Session, user_id: int) -> int:
        return user_id

    @uow.unit_of_work()
    async def method(self, session: AsyncSession, *, user_id: int) -> int:
        return user_id


async def units(session: AsyncSession) -> None:
    assert_type(bare(1, verbose=True), int)
    assert_type(await with_session(1), int)
    assert_type(Units().sync_method(1), int)
    assert_type(await Units().method(user_id=1), int)
    bare("1")  # type: ignore[call-overload]
    await with_session()  # type: ignore[call-overload]
    Units().sync_method("1")  # type: ignore[call-overload]
    await Units().method()  # type: ignore[call-overload]
    # Its own signature stays assignable to that callable type, and a caller's session= type-checks.
    exact: Callable[[int], Coroutine[Any, Any, int]] = with_session
    assert_type(await exact(1), int)
    assert_type(bare(1, session=Session()), int)
    assert_type(await Units().method(user_id=1, session=session), int)


# -- provide_services: each element has its service's type --------------------------------------------


def sync_block() -> None:
    with uow.provide_services(SyncUserService, provide_clock) as (users, clock):
        assert_type(users, SyncUserService)
        assert_type(clock, Clock)
    with uow.provide_services(SyncUserService) as services:
        assert_type(services, tuple[SyncUserService])


async def async_block() -> None:
    async with uow.provide_services(UserService, provide_roles, make_users) as (users, roles, made):
        assert_type(users, UserService)
        assert_type(roles, RoleService)
        assert_type(made, UserService)


# -- the rest of the public surface ---------------------------------------------------------------------


def surface(database: uow.Database) -> None:
    assert_type(uow.configure(database), uow.Database)
    assert_type(uow.unit_of_work(database=database, propagation="nested"), UnitOfWork)
    uow.on_commit(lambda: None)
    uow.with_services(SyncUserService, propagation=uow.Propagation.REQUIRES_NEW, retry=3)


# -- timeout= and ping ----------------------------------------------------------------------------------


@uow.with_services(SyncUserService, timeout=2.5)
def timed(users: SyncUserService, user_id: int) -> int:
    return user_id


async def timeouts(database: uow.Database) -> None:
    assert_type(timed(1), int)
    assert_type(uow.unit_of_work(timeout=1), UnitOfWork)
    with uow.provide_services(SyncUserService, timeout=0.5) as (users,):
        assert_type(users, SyncUserService)
    uow.with_services(SyncUserService, timeout="1")  # type: ignore[call-overload]
    uow.unit_of_work(timeout="1")  # type: ignore[arg-type]
    assert_type(database.ping(timeout=1), float)
    assert_type(await database.ping_async(timeout=0.5), float)
    error = uow.UnitTimeoutError("x", what="f()", timeout=1.0, elapsed=1.2)
    assert_type(error.elapsed, float)


# -- transaction events and unit controls (docs/events.md) ----------------------------------------------


class RetryLater(Exception):
    pass


def events_surface(database: uow.Database) -> None:
    uow.before_commit(lambda: None, database=database)
    uow.on_rollback(lambda: None)
    uow.on_completion(lambda outcome: assert_type(outcome, uow.Outcome))
    uow.set_rollback_only(database)
    uow.set_rollback_only()
    uow.on_completion(lambda: None)  # type: ignore[arg-type, misc]
    outcomes: list[uow.Outcome] = [uow.Outcome.COMMITTED, uow.Outcome.ROLLED_BACK, uow.Outcome.UNKNOWN]
    uow.on_completion(outcomes.append)
    assert_type(uow.unit_of_work(durable=True, commit_on=RetryLater, rollback_on=(KeyError, ValueError)), UnitOfWork)
    uow.unit_of_work(durable="yes")  # type: ignore[arg-type]
    uow.unit_of_work(commit_on=3)  # type: ignore[arg-type]
    uow.with_services(SyncUserService, durable=True, commit_on=(RetryLater,), rollback_on=KeyError)
    uow.with_services(SyncUserService, SyncUserService, commit_on="RetryLater")  # type: ignore[call-overload]


@uow.with_services(SyncUserService, commit_on=RetryLater)
def commits_on_retry_later(user_id: int, users: SyncUserService) -> int:
    return user_id


def committed_call() -> None:
    assert_type(commits_on_retry_later(1), int)
    with uow.provide_services(SyncUserService, durable=True, commit_on=RetryLater) as (users,):
        assert_type(users, SyncUserService)
