"""Parameters marked ``= injected()``: the decorated function keeps its own signature in every layout.

Checked by tests/test_typing.py with mypy --strict and pyright strict, never run (tests/test_markers.py
runs the same layouts). Every ``# type: ignore`` marks an error both checkers must report (an unneeded
one fails either checker).
"""
# pyright: reportUnnecessaryTypeIgnoreComment=true

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Protocol

import click
import litestar
import saq.types
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from typing_extensions import assert_type

import uow
from uow import injected


class UserService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session


class FakeUsers(UserService):
    def __init__(self) -> None:
        pass


class RoleService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session


class SyncUserService:
    def __init__(self, session: Session) -> None:
        self.session = session


async def provide_roles(session: AsyncSession) -> AsyncIterator[RoleService]:
    yield RoleService(session)


class JobShape(Protocol):
    def __call__(
        self, ctx: dict[str, object], *, user_id: int, users: UserService = ...
    ) -> Coroutine[Any, Any, int]: ...


# -- a SAQ / arq job: the runner's ctx first, keyword-only services at the end -----------------------------


@uow.unit_of_work()
async def job(ctx: dict[str, object], *, user_id: int, users: UserService = injected()) -> int:
    return user_id


# Signatures that mention Any (SAQ's Context, arq's ctx, a dict[str, Any] result) stay exact in mypy
# too: a call without session= matches one overload only, so mypy's rule for Any arguments never
# has two to choose from (the listed form's overloads make it infer Any there; check_types.py).
@uow.unit_of_work()
async def saq_job(ctx: saq.types.Context, *, user_id: int, users: UserService = injected()) -> dict[str, Any]:
    return {"user_id": user_id}


@uow.unit_of_work()
async def arq_job(ctx: dict[Any, Any], user_id: int, *, users: UserService = injected()) -> int:
    return user_id


async def any_in_signatures(saq_ctx: saq.types.Context, session: AsyncSession) -> None:
    assert_type(await saq_job(saq_ctx, user_id=1), dict[str, Any])
    assert_type(await saq_job(saq_ctx, user_id=1, session=session), dict[str, Any])
    assert_type(await arq_job({}, 1), int)
    assert_type(await arq_job({}, 1, users=FakeUsers()), int)
    await saq_job(saq_ctx, user_id="1")  # type: ignore[call-overload]
    await saq_job({"nope": 1}, user_id=1)  # type: ignore[call-overload]
    await arq_job({}, "1")  # type: ignore[call-overload]
    await arq_job({})  # type: ignore[call-overload]


# -- services after positional parameters, anywhere (after 4 of them, between them, in any order) -------


@uow.unit_of_work()
def command(a: int, b: int, c: int, d: int, users: SyncUserService = injected(), *, name: str = "") -> str:
    return name


@uow.unit_of_work()
async def between(
    name: str, roles: RoleService = injected(provide_roles), *, admin: bool, users: UserService = injected()
) -> list[str]:
    return [name]


@uow.unit_of_work()
def with_session(session: Session = injected(), *, user_id: int) -> int:
    return user_id


@uow.unit_of_work()
async def keyword_only_only(*, user_id: int, users: UserService = injected()) -> str:
    return str(user_id)


async def functions(session: AsyncSession, sync_session: Session) -> None:
    assert_type(await job({}, user_id=1), int)
    assert_type(await job({}, user_id=1, session=session), int)
    assert_type(await job({}, user_id=1, connection=object()), int)
    assert_type(await job({}, user_id=1, users=FakeUsers()), int)
    assert_type(command(1, 2, 3, 4, name="x"), str)
    assert_type(command(a=1, b=2, c=3, d=4), str)
    assert_type(command(1, 2, 3, 4, session=sync_session), str)
    # A marked tail also takes a fake positionally, as at run time (tests/test_markers.py).
    assert_type(command(1, 2, 3, 4, SyncUserService(sync_session)), str)
    assert_type(await between("x", admin=True), list[str])
    assert_type(await between(name="x", admin=False, users=FakeUsers()), list[str])
    assert_type(with_session(user_id=1), int)
    assert_type(with_session(user_id=1, session=sync_session), int)
    assert_type(await keyword_only_only(user_id=1), str)
    assert_type(await keyword_only_only(user_id=1, session=session), str)
    # Its own signature: assignable to a callable type of that shape, and not to another one.
    shaped: JobShape = job
    wrong: Callable[[dict[str, object]], Coroutine[Any, Any, int]] = job  # type: ignore[assignment]
    del shaped, wrong
    await job({}, user_id="1")  # type: ignore[call-overload]
    await job({})  # type: ignore[call-overload]
    await job({}, user_id=1, retries=3)  # type: ignore[call-overload]
    await job(user_id=1)  # type: ignore[call-overload]
    await job({}, user_id=1, users=RoleService(session))  # type: ignore[call-overload]
    command(1, 2, 3)  # type: ignore[call-overload]
    command(1, 2, 3, "4")  # type: ignore[call-overload]
    command(1, 2, 3, 4, nme="x")  # type: ignore[call-overload]
    await between("x")  # type: ignore[call-overload]
    await between("x", admin="yes")  # type: ignore[call-overload]
    await between("x", admin=True, roles=FakeUsers())  # type: ignore[call-overload]
    with_session(user_id="1")  # type: ignore[call-overload]
    await keyword_only_only()  # type: ignore[call-overload]
    await keyword_only_only(user_id=1, extra=2)  # type: ignore[call-overload]


# -- more services than the listed form's six ---------------------------------------------------------


class A(UserService): ...


class B(UserService): ...


class C(UserService): ...


class D(UserService): ...


class E(UserService): ...


class F(UserService): ...


class G(UserService): ...


@uow.unit_of_work()
async def seven(
    n: int,
    *,
    a: A = injected(),
    b: B = injected(),
    c: C = injected(),
    d: D = injected(),
    e: E = injected(),
    f: F = injected(),
    g: G = injected(),
) -> int:
    return n


async def many() -> None:
    assert_type(await seven(1), int)
    await seven("1")  # type: ignore[call-overload]
    await seven(1, h=2)  # type: ignore[call-overload]


# -- methods, classmethods, staticmethods, controllers ---------------------------------------------------


class Jobs:
    @uow.unit_of_work()
    async def run(self, user_id: int, *, users: UserService = injected()) -> str:
        return str(user_id)

    @classmethod
    @uow.unit_of_work()
    async def for_class(cls, user_id: int, users: UserService = injected()) -> str:
        return cls.__name__

    @staticmethod
    @uow.unit_of_work()
    async def static(user_id: int, *, users: UserService = injected()) -> str:
        return str(user_id)

    @uow.unit_of_work()  # above @classmethod / @staticmethod works the same
    @classmethod
    async def for_class_outer(cls, user_id: int, *, users: UserService = injected()) -> str:
        return cls.__name__

    @uow.unit_of_work()
    @staticmethod
    async def static_outer(user_id: int, *, users: UserService = injected()) -> str:
        return str(user_id)


class TodoController(litestar.Controller):
    path = "/todos"

    @litestar.get("/{todo_id:int}")
    @uow.unit_of_work()
    async def get_todo(self, todo_id: int, users: UserService = injected()) -> dict[str, int]:
        return {"id": todo_id}

    @uow.unit_of_work()
    async def helper(self, todo_id: int, *, users: UserService = injected()) -> int:
        return todo_id


@click.command()
@click.option("--name")
@uow.unit_of_work()
def click_command(name: str, *, users: SyncUserService = injected()) -> None:
    pass


async def methods(session: AsyncSession) -> None:
    jobs = Jobs()
    assert_type(await jobs.run(5), str)
    assert_type(await jobs.run(user_id=5, users=FakeUsers()), str)
    assert_type(await jobs.run(5, session=session), str)
    assert_type(await Jobs.run(jobs, 5), str)
    assert_type(await Jobs.for_class(5), str)
    assert_type(await jobs.for_class(user_id=5), str)
    assert_type(await Jobs.static(5), str)
    assert_type(await jobs.static(5, users=FakeUsers()), str)
    assert_type(click_command, click.Command)
    assert_type(await Jobs.for_class_outer(5), str)
    assert_type(await jobs.for_class_outer(user_id=5), str)
    assert_type(await Jobs.static_outer(5), str)
    await Jobs.for_class_outer("5")  # type: ignore[call-overload]
    await Jobs.static_outer(5, 6)  # type: ignore[call-overload]
    await jobs.run("5")  # type: ignore[call-overload]
    await jobs.run()  # type: ignore[call-overload]
    await jobs.run(5, extra=1)  # type: ignore[call-overload]
    await jobs.run(5, users=RoleService(session))  # type: ignore[call-overload]
    await Jobs.run(5)  # type: ignore[call-overload]
    await Jobs.for_class("5")  # type: ignore[call-overload]
    await Jobs.static()  # type: ignore[call-overload]
    controller = TodoController(owner=litestar.Router("/", route_handlers=[]))
    assert_type(await controller.helper(3), int)
    await controller.helper("3")  # type: ignore[call-overload]
