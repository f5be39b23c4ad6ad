"""A to-do list on an SQLite file, as a click command-line program with async commands.

    python examples/cli.py add "buy milk" "call mum"
    python examples/cli.py done 1
    python examples/cli.py list
    python examples/cli.py --db other.sqlite3 list

Each command is one unit of work: it commits when the command returns and rolls back when
it fails (`done 42` for a missing note exits with status 1 and changes nothing).
"""

from __future__ import annotations

import click
from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import uow
from uow.integrations.click import run_async


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(200))
    done: Mapped[bool] = mapped_column(default=False)


class NoteService:
    """The notes, in the session of the unit that built the service."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, text: str) -> Note:
        note = Note(text=text)
        self.session.add(note)
        await self.session.flush()
        return note

    async def finish(self, note_id: int) -> Note:
        note = await self.session.get(Note, note_id)
        if note is None:
            raise click.ClickException(f"no note {note_id}")
        note.done = True
        return note

    async def all(self) -> list[Note]:
        return list((await self.session.scalars(select(Note).order_by(Note.id))).all())


@click.group()
@click.option("--db", default="notes.sqlite3", show_default=True, help="The SQLite file to keep the notes in.")
@run_async
async def cli(db: str) -> None:
    """Keep notes in an SQLite file."""
    database = uow.configure(uow.Database(f"sqlite+aiosqlite:///{db}"))
    assert isinstance(database.engine, AsyncEngine)
    async with database.engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)


@cli.command()
@click.argument("texts", nargs=-1, required=True)
@run_async
@uow.with_services(NoteService)
async def add(notes: NoteService, texts: tuple[str, ...]) -> None:
    """Add one note per argument."""
    for text in texts:
        note = await notes.add(text)
        click.echo(f"added #{note.id}: {note.text}")


@cli.command()
@click.argument("note_ids", nargs=-1, type=int, required=True)
@run_async
@uow.with_services(NoteService)
async def done(notes: NoteService, note_ids: tuple[int, ...]) -> None:
    """Mark notes as done: all of them, or none if one is missing."""
    for note_id in note_ids:
        note = await notes.finish(note_id)
        click.echo(f"done #{note.id}: {note.text}")


@cli.command(name="list")
@run_async
@uow.with_services(NoteService, read_only=True)
async def list_notes(notes: NoteService) -> None:
    """Show every note."""
    for note in await notes.all():
        click.echo(f"[{'x' if note.done else ' '}] #{note.id} {note.text}")


if __name__ == "__main__":
    cli()
