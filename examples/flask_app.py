"""A to-do app on Flask and SQLite: one unit of work per request, services injected by uow.

    python examples/flask_app.py                         # a short self-demo through Flask's test client
    flask --app examples/flask_app.py run                # serve it (DATABASE_URL to use another database)

Views are decorated with ``@with_services``; the ``UnitOfWork`` extension commits the
request's unit before the response is sent (status below 400) and rolls it back otherwise.
"""

from __future__ import annotations

import os

from flask import Flask, abort
from sqlalchemy import Engine, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import uow
from uow.integrations.flask import UnitOfWork

DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite:///flask_example.db")


class Base(DeclarativeBase):
    pass


class Todo(Base):
    __tablename__ = "todos"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200), unique=True)
    done: Mapped[bool] = mapped_column(default=False)

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "title": self.title, "done": self.done}


class TodoService:
    """The application's own service: it takes the session and never commits."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, title: str) -> Todo:
        if self.session.scalar(select(Todo.id).where(Todo.title == title)) is not None:
            abort(409, description=f"{title!r} is already on the list")
        todo = Todo(title=title)
        self.session.add(todo)
        self.session.flush()
        return todo

    def finish(self, todo_id: int) -> Todo:
        todo = self.session.get(Todo, todo_id)
        if todo is None:
            abort(404, description=f"no to-do {todo_id}")
        todo.done = True
        return todo

    def all(self) -> list[Todo]:
        return list(self.session.scalars(select(Todo).order_by(Todo.id)))


database = uow.Database(DATABASE_URL)
app = Flask(__name__)
UnitOfWork(app, database)

engine = database.engine
assert isinstance(engine, Engine)
Base.metadata.create_all(engine)


@app.post("/todos/<title>")
@uow.with_services(TodoService)
def create_todo(todos: TodoService, title: str) -> tuple[dict[str, object], int]:
    return todos.add(title).to_json(), 201


@app.post("/todos/<int:todo_id>/done")
@uow.with_services(TodoService)
def finish_todo(todos: TodoService, todo_id: int) -> dict[str, object]:
    return todos.finish(todo_id).to_json()


@app.get("/todos")
@uow.with_services(TodoService)
def list_todos(todos: TodoService) -> list[dict[str, object]]:
    return [todo.to_json() for todo in todos.all()]


def main() -> None:
    client = app.test_client()
    for title in ("write the docs", "write the docs"):
        response = client.post(f"/todos/{title}")
        print("POST /todos", response.status_code, response.json if response.is_json else response.status)
    response = client.post("/todos/1/done")
    print("POST /todos/1/done", response.status_code, response.json)
    response = client.get("/todos")
    print("GET /todos", response.status_code, response.json)


if __name__ == "__main__":
    main()
