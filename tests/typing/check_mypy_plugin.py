"""What mypy --strict sees with the optional plugin ``uow.mypy``. Checked by tests/test_typing.py, never run.

The plugin makes every layout exact by parameter name, also those PEP 612 cannot express
(keyword-only services, services out of order, ``Any`` in the signature). Every
``# type: ignore`` below marks an error mypy must report (warn_unused_ignores).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import saq.types
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from typing_extensions import assert_type

import uow


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


# -- what the overloads express stays exact, now with names ------------------------------------------


@uow.with_services(UserService, RoleService)
async def leading(users: UserService, roles: RoleService, user_id: int) -> str:
    return str(user_id)


class Jobs:
    @uow.with_services(UserService)
    async def run(self, users: UserService, user_id: int) -> str:
        return str(user_id)

    @classmethod
    @uow.with_services(UserService)
    async def for_class(cls, users: UserService, user_id: int) -> str:
        return cls.__name__

    @uow.with_services(UserService)
    @staticmethod
    async def static(user_id: int, users: UserService) -> str:
        return str(user_id)


@uow.with_services(SyncUserService)
def add_user(name: str, admin: bool, users: SyncUserService) -> str:
    return name


async def exact(session: AsyncSession, sync_session: Session) -> None:
    users = UserService(session)
    assert_type(await leading(5), str)
    assert_type(await leading(5, session=session), str)
    assert_type(await leading(5, users=users, roles=RoleService(session)), str)
    assert_type(await Jobs().run(5), str)
    assert_type(await Jobs().run(5, users=users), str)
    assert_type(await Jobs.for_class(user_id=5), str)
    assert_type(await Jobs.static(user_id=5), str)
    assert_type(add_user(name="ann", admin=True), str)
    assert_type(add_user("ann", True, session=sync_session), str)
    await leading("5")  # type: ignore[arg-type]
    await leading(5, session="s")  # type: ignore[arg-type]
    await leading(users, RoleService(session), 5)  # type: ignore[call-arg, arg-type]
    await Jobs().run()  # type: ignore[call-arg]
    await Jobs().run(5, users=RoleService(session))  # type: ignore[arg-type]
    await Jobs.for_class("5")  # type: ignore[arg-type]
    add_user("ann")  # type: ignore[call-arg]
    add_user("ann", True, extra=1)  # type: ignore[call-arg]


# -- and what they cannot ------------------------------------------------------------------------------


@uow.with_services(UserService)
async def saq_job(ctx: dict[str, object], *, user_id: int, users: UserService) -> int:
    return user_id


@uow.with_services(UserService)
async def saq_positional(ctx: saq.types.Context, users: UserService, *, user_id: int) -> int:
    return user_id


@uow.with_services(UserService)
async def arq_job(ctx: dict[Any, Any], users: UserService, *, user_id: int) -> int:
    return user_id


@uow.with_services(UserService, RoleService)
async def reordered(roles: RoleService, user_id: int, users: UserService) -> str:
    return str(user_id)


@uow.with_services(SyncUserService, provide_clock)
def with_session(clock: Clock, session: Session, users: SyncUserService, *, name: str) -> str:
    return name


@uow.with_services(UserService)
async def object_before(x: int, data: object, users: UserService) -> dict[str, Any]:
    return {}


async def beyond_pep_612(session: AsyncSession, saq_ctx: saq.types.Context) -> None:
    assert_type(await object_before(1, object()), dict[str, Any])
    await object_before(1)  # type: ignore[call-arg]
    assert_type(await saq_positional(saq_ctx, user_id=1), int)
    await saq_positional(saq_ctx, user_id="1")  # type: ignore[arg-type]
    assert_type(await saq_job({}, user_id=1), int)
    assert_type(await saq_job({}, user_id=1, users=UserService(session)), int)
    assert_type(await arq_job({}, user_id=1), int)
    assert_type(await reordered(5), str)
    assert_type(with_session(name="x"), str)
    await saq_job({}, user_id="1")  # type: ignore[arg-type]
    await saq_job({})  # type: ignore[call-arg]
    await saq_job({}, user_id=1, retries=2)  # type: ignore[call-arg]
    await arq_job({}, user_id="1")  # type: ignore[arg-type]
    await reordered("5")  # type: ignore[arg-type]
    with_session()  # type: ignore[call-arg]
