"""A to-do API on FastAPI and SQLite: one unit of work per request, services injected by uow.

    python examples/fastapi_app.py                       # a short self-demo through FastAPI's TestClient
    uvicorn examples.fastapi_app:app                     # serve it (DATABASE_URL to use another database)

Path operations are decorated with ``@with_services`` (FastAPI still parses their path,
query and body parameters) or take a service through ``Service(...)``; the middleware
commits the request's unit before the response starts and rolls it back on errors.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import uow
from uow.integrations.fastapi import Service, UnitOfWorkMiddleware

DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///fastapi_example.db")


class Base(DeclarativeBase):
    pass


class Todo(Base):
    __tablename__ = "todos"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200), unique=True)
    done: Mapped[bool] = mapped_column(default=False)


class TodoIn(BaseModel):
    title: str


class TodoOut(BaseModel):
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

    async def finish(self, todo_id: int) -> Todo:
        todo = await self.session.get(Todo, todo_id)
        if todo is None:
            raise HTTPException(status_code=404, detail=f"no to-do {todo_id}")
        todo.done = True
        return todo

    async def all(self) -> list[Todo]:
        return list((await self.session.scalars(select(Todo).order_by(Todo.id))).all())


database = uow.Database(DATABASE_URL)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncGenerator[None, None]:
    engine = database.engine
    assert isinstance(engine, AsyncEngine)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    yield
    await database.dispose_async()


app = FastAPI(lifespan=lifespan)
app.add_middleware(UnitOfWorkMiddleware, database=database)


@app.post("/todos", status_code=201)
@uow.with_services(TodoService)
async def create_todo(todos: TodoService, todo: TodoIn) -> TodoOut:
    return to_out(await todos.add(todo.title))


@app.post("/todos/{todo_id}/done")
@uow.with_services(TodoService)
async def finish_todo(todos: TodoService, todo_id: int) -> TodoOut:
    return to_out(await todos.finish(todo_id))


@app.get("/todos")
async def list_todos(todos: Annotated[TodoService, Service(TodoService)]) -> list[TodoOut]:
    return [to_out(todo) for todo in await todos.all()]


def main() -> None:
    with TestClient(app) as client:
        for title in ("write the docs", "write the docs"):
            response = client.post("/todos", json={"title": title})
            print("POST /todos", response.status_code, response.json())
        response = client.post("/todos/1/done")
        print("POST /todos/1/done", response.status_code, response.json())
        response = client.get("/todos")
        print("GET /todos", response.status_code, response.json())
        operation = client.get("/openapi.json").json()["paths"]["/todos/{todo_id}/done"]["post"]
        print("OpenAPI parameters of POST /todos/{todo_id}/done:", [p["name"] for p in operation["parameters"]])


if __name__ == "__main__":
    main()
