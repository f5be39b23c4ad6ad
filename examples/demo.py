"""A tour of uow on an SQLite file: a job, a CLI command and a route handler, each decorated.

Run it with ``python3 dev.py demo``. Each step prints what was committed and what was
rolled back, read back from the database afterwards.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
from sqlalchemy import ForeignKey, String, create_engine, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from uow import Database, configure, on_commit, unit_of_work, with_services

# -- the application's own code: models and services ---------------------------------------


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)


class Role(Base):
    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(50))


class UserService:
    def __init__(self, session: Session) -> None:
        self.session = session

    def create(self, email: str) -> User:
        user = User(email=email)
        self.session.add(user)
        self.session.flush()  # a duplicate e-mail fails here, inside the unit
        return user


class AsyncUserService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def without_roles(self) -> list[User]:
        has_role = select(Role.user_id)
        return list((await self.session.scalars(select(User).where(User.id.not_in(has_role)))).all())


class AsyncRoleService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def grant(self, user: User, name: str) -> None:
        self.session.add(Role(user_id=user.id, name=name))


# -- a CLI command (click), sync ----------------------------------------------------------------


@click.group()
def cli() -> None:
    """The demo's command line."""


@cli.command("create-user")
@click.option("--email", required=True)
@with_services(UserService)
def create_user(users: UserService, email: str) -> None:
    """Create a user; the unit commits when the command returns."""
    user = users.create(email)
    on_commit(lambda: print(f"  on_commit: welcome mail queued for {user.email}"))


# -- a job (the shape SAQ and arq call: a context first), async ---------------------------------


def make_job(database: Database) -> Any:
    @with_services(AsyncUserService, AsyncRoleService, database=database)
    async def grant_default_roles(
        users: AsyncUserService, roles: AsyncRoleService, ctx: dict[str, Any], *, fail: bool = False
    ) -> int:
        """Give every user without a role the 'member' role; commits once at the end."""
        waiting = await users.without_roles()
        for user in waiting:
            await roles.grant(user, "member")
        if fail:
            raise RuntimeError(f"job {ctx['job_id']} crashed after granting {len(waiting)} roles")
        return len(waiting)

    return grant_default_roles


# -- a route handler (Starlette), sync Database in the threadpool -------------------------------


@with_services(UserService)
def post_user(users: UserService, request: Request) -> JSONResponse:
    user = users.create(request.query_params["email"])
    if not user.email.endswith("@example.com"):
        # Raising rolls back the insert above; a real app would map this to a 4xx with its framework.
        raise ValueError(f"refusing {user.email}: only example.com addresses")
    return JSONResponse({"id": user.id, "email": user.email}, status_code=201)


app = Starlette(routes=[Route("/users", post_user, methods=["POST"])])


# -- the tour ------------------------------------------------------------------------------------


def report(database: Database, title: str) -> None:
    with unit_of_work(database=database, read_only=True) as session:
        users = session.scalars(select(User.email).order_by(User.id)).all()
        roles = session.scalar(select(func.count()).select_from(Role))
    print(f"  {title}: users={list(users)} roles={roles}")


def main(directory: Path) -> None:
    path = directory / "demo.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    database = configure(Database(engine=engine))
    job_database = Database(f"sqlite+aiosqlite:///{path}")

    print("1. CLI command: create-user --email ada@example.com")
    cli.main(["create-user", "--email", "ada@example.com"], standalone_mode=False)
    report(database, "committed")

    print("2. CLI command with a duplicate e-mail: the flush fails, the unit rolls back")
    try:
        cli.main(["create-user", "--email", "ada@example.com"], standalone_mode=False)
    except Exception as error:
        print(f"  failed: {type(error).__name__}")
    report(database, "unchanged")

    print("3. Route handler: POST /users?email=grace@example.com")
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/users", params={"email": "grace@example.com"})
        print(f"  HTTP {response.status_code} {response.json()}")
        report(database, "committed")
        print("4. Route handler raising: POST /users?email=eve@elsewhere.org")
        response = client.post("/users", params={"email": "eve@elsewhere.org"})
        print(f"  HTTP {response.status_code}")
    report(database, "rolled back")

    asyncio.run(run_jobs(job_database, database))
    engine.dispose()


async def run_jobs(job_database: Database, database: Database) -> None:
    job = make_job(job_database)
    print("5. Job that crashes after granting roles: everything it did is rolled back")
    try:
        await job({"job_id": "job-1"}, fail=True)
    except RuntimeError as error:
        print(f"  failed: {error}")
    report(database, "rolled back")

    print("6. The same job, succeeding: one commit at the end")
    granted = await job({"job_id": "job-2"})
    print(f"  granted {granted} roles")
    report(database, "committed")
    await job_database.dispose_async()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp))
