"""What mypy --strict and pyright see of the public decorators. Checked by tests/test_typing.py, never run.

Every ``# type: ignore`` below marks an error the checkers must report: mypy --strict
(warn_unused_ignores) and pyright (reportUnnecessaryTypeIgnoreComment) both fail on one that is not needed.
"""
# pyright: reportUnnecessaryTypeIgnoreComment=true

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

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


async def calls() -> None:
    assert_type(await create_default_roles(5), str)
    assert_type(await create_default_roles(user_id=5), str)
    assert_type(sync_leading(1), int)
    assert_type(sync_leading(1, verbose=True), int)
    assert_type(await from_providers("x"), list[str])
    # ...and not the Callable[..., R] fallback: wrong calls are errors, the services cannot be passed positionally.
    await create_default_roles("five")  # type: ignore[arg-type]
    await create_default_roles(UserService(AsyncSession()), RoleService(AsyncSession()), 5)  # type: ignore[call-arg, arg-type]
    sync_leading()  # type: ignore[call-arg]
    sync_leading(1, verbose="yes")  # type: ignore[arg-type]
    await from_providers(1)  # type: ignore[arg-type]


# -- any other layout: calls still type-check and the return type is kept ----------------------------


@uow.with_services(UserService)
async def trailing(user_id: int, users: UserService) -> str:
    return str(user_id)


@uow.with_services(SyncUserService)
def keyword_only(user_id: int, *, users: SyncUserService) -> bytes:
    return b""


async def other_layouts() -> None:
    fallback: Callable[..., Coroutine[Any, Any, str]] = trailing
    assert_type(await fallback(5), str)
    assert_type(await trailing(5), str)
    assert_type(keyword_only(5), bytes)
    assert_type(keyword_only(5, users=SyncUserService(Session())), bytes)


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
