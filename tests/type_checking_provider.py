"""A provider whose return type is imported only for type checkers, so its annotation stays a string."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from tests.models import ItemService


def make_items(session: Session) -> ItemService:
    from tests.models import ItemService

    return ItemService(session)
