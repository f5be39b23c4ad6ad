"""A to-do API on Litestar and SQLite: one unit of work per request, services injected by uow.

    pip install "uow[litestar,advanced-alchemy]"
    python examples/litestar_app.py                      # a short self-demo through Litestar's TestClient
    uvicorn examples.litestar_app:app                    # serve it (DATABASE_URL to use another database)

Handlers and guards are decorated with ``@with_services``; ``UnitOfWorkPlugin`` commits the
request's unit before the response starts (status below 400) and rolls it back otherwise.
The app also has advanced-alchemy's ``SQLAlchemyPlugin``, linked to uow's: the request unit's
session is the plugin's request session, so ``db_session``, the guard and the handlers share
one session and one transaction.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig, SQLAlchemyPlugin
from litestar import Litestar, Request, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, NotFoundException
from litestar.handlers import BaseRouteHandler
from litestar.params import FromPath
from litestar.testing import TestClient
from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import uow
from uow.integrations.litestar import UnitOfWorkPlugin, provide_service

DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///litestar_example.db")


class Base(DeclarativeBase):
    pass


class Todo(Base):
    __tablename__ = "todos"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200), unique=True)
    done: Mapped[bool] = mapped_column(default=False)


@dataclass
class TodoIn:
    title: str


@dataclass
class TodoOut:
    id: int
    title: str
    done: bool


def to_out(todo: Todo) -> TodoOut:
    return TodoOut(id=todo.id, title=todo.title, done=todo.done)


class TodoService:
    """The application's own service: it takes the session and never commits."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, title: str) -> Todo:
        if await self.session.scalar(select(Todo.id).where(Todo.title == title)) is not None:
            raise HTTPException(status_code=409, detail=f"{title!r} is already on the list")
        todo = Todo(title=title)
        self.session.add(todo)
        await self.session.flush()
        return todo

    async def all(self) -> list[Todo]:
        return list((await self.session.scalars(select(Todo).order_by(Todo.id))).all())


alchemy = SQLAlchemyAsyncConfig(connection_string=DATABASE_URL, before_send_handler="autocommit")
database = uow.Database(engine=alchemy.get_engine())


@post("/todos")
@uow.with_services(TodoService)
async def create_todo(todos: TodoService, data: TodoIn) -> TodoOut:
    return to_out(await todos.add(data.title))


@uow.with_services(TodoService)
async def todo_exists(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler, todos: TodoService) -> None:
    """A decorated guard: Litestar passes `connection`, which finds the request's unit."""
    todo = await todos.session.get(Todo, connection.path_params["todo_id"])
    if todo is None:
        raise NotFoundException(f"no to-do {connection.path_params['todo_id']}")
    connection.state.todo = todo


@post("/todos/{todo_id:int}/done", status_code=200, guards=[todo_exists])
async def finish_todo(request: Request[Any, Any, Any], db_session: AsyncSession, todo_id: FromPath[int]) -> TodoOut:
    # advanced-alchemy's db_session is the request unit's session: the guard's object belongs to it.
    todo: Todo = request.state.todo
    assert todo in db_session
    todo.done = True
    return to_out(todo)


@get("/todos", dependencies={"todos": provide_service(TodoService)})
async def list_todos(todos: TodoService) -> list[TodoOut]:
    return [to_out(todo) for todo in await todos.all()]


async def create_tables() -> None:
    engine = database.engine
    assert isinstance(engine, AsyncEngine)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)


app = Litestar(
    [create_todo, finish_todo, list_todos],
    plugins=[SQLAlchemyPlugin(config=alchemy), UnitOfWorkPlugin(database, alchemy=alchemy)],
    on_startup=[create_tables],
)


def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with TestClient(app) as client:
        for title in ("write the docs", "write the docs"):
            response = client.post("/todos", json={"title": title})
            print("POST /todos", response.status_code, response.json())
        response = client.post("/todos/1/done")
        print("POST /todos/1/done", response.status_code, response.json())
        response = client.get("/todos")
        print("GET /todos", response.status_code, response.json())
        operation = client.get("/schema/openapi.json").json()["paths"]["/todos/{todo_id}/done"]["post"]
        print("OpenAPI parameters of POST /todos/{todo_id}/done:", [p["name"] for p in operation["parameters"]])


if __name__ == "__main__":
    main()
