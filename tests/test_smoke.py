from __future__ import annotations

import pytest

import uow
from tests.models import AsyncItemService, ItemService


def test_commit_sync(sync_db: uow.Database) -> None:
    @uow.with_services(ItemService, database=sync_db)
    def add(items: ItemService, name: str) -> None:
        items.add(name)

    add("a")
    with uow.provide_services(ItemService, database=sync_db) as (items,):
        assert items.names() == ["a"]


async def test_rollback_async(async_db: uow.Database) -> None:
    @uow.with_services(AsyncItemService, database=async_db)
    async def add(items: AsyncItemService, name: str) -> None:
        await items.add(name)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await add("a")
    async with uow.provide_services(AsyncItemService, database=async_db) as (items,):
        assert await items.names() == []
