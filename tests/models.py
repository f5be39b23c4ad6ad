"""Tables and small services the tests share. Each test creates and drops the tables itself."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "uow_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)


class Counter(Base):
    __tablename__ = "uow_counters"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(default=0)


class Tag(Base):
    __tablename__ = "uow_tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("uow_items.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(100))


class ItemService:
    """A sync service the way users write them: it takes the session and works in it."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, name: str) -> Item:
        item = Item(name=name)
        self.session.add(item)
        self.session.flush()
        return item

    def names(self) -> list[str]:
        return list(self.session.scalars(select(Item.name).order_by(Item.name)))

    def count(self) -> int:
        return int(self.session.scalar(select(func.count()).select_from(Item)) or 0)


class TagService:
    def __init__(self, session: Session) -> None:
        self.session = session

    def tag(self, item: Item, label: str) -> Tag:
        tag = Tag(item_id=item.id, label=label)
        self.session.add(tag)
        self.session.flush()
        return tag


class AsyncItemService:
    """The async twin of `ItemService`."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, name: str) -> Item:
        item = Item(name=name)
        self.session.add(item)
        await self.session.flush()
        return item

    async def names(self) -> list[str]:
        return list((await self.session.scalars(select(Item.name).order_by(Item.name))).all())

    async def count(self) -> int:
        return int(await self.session.scalar(select(func.count()).select_from(Item)) or 0)


class AsyncTagService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def tag(self, item: Item, label: str) -> Tag:
        tag = Tag(item_id=item.id, label=label)
        self.session.add(tag)
        await self.session.flush()
        return tag
