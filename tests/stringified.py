"""Functions decorated at import time, before any `configure()`, in a module whose annotations are strings.

`from __future__ import annotations` turns every annotation here into text; the decorator must
still match services by them and `typing.get_type_hints` must still resolve what frameworks see.
"""

from __future__ import annotations

from typing import Annotated

from sqlalchemy.orm import Session

import uow
from tests.models import AsyncItemService, Item, ItemService, TagService


@uow.with_services(ItemService, TagService)
def tag_item(items: ItemService, tags: Annotated[TagService, "injected"], name: str, label: str = "red") -> Item:
    """Add an item and tag it."""
    item = items.add(name)
    tags.tag(item, label)
    return item


@uow.with_services(ItemService)
def names_by_name(item_service, prefix: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Match by the parameter's snake-case name: it has no annotation."""
    return [name for name in item_service.names() if name.startswith(prefix)]


@uow.unit_of_work()
def count(db: Session) -> int:
    """The unit's session, matched by its (string) annotation."""
    return ItemService(db).count()


@uow.with_services(AsyncItemService)
async def async_count(items: AsyncItemService) -> int:
    """An async function decorated before any Database exists."""
    return await items.count()
