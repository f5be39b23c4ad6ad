"""The `--dry-run` recipe (docs/recipes/dry-run.md): real click and typer commands through their CliRunners.

``set_rollback_only()`` at the end of a decorated command: the command prints what it did and
exits 0, nothing is committed, ``on_commit`` hooks do not run and ``on_rollback`` ones do; without
the flag the same command commits. Sync and async commands, on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

from typing import Annotated

import click
import typer
from click.testing import CliRunner
from typer.testing import CliRunner as TyperRunner

import uow
from tests.models import AsyncItemService, ItemService
from uow.integrations.click import run_async


def names_in(database: uow.Database) -> list[str]:
    with uow.provide_services(ItemService, database=database) as (items,):
        return items.names()


def click_cli(database: uow.Database) -> click.Command:
    @click.command()
    @click.argument("names", nargs=-1)
    @click.option("--dry-run", is_flag=True, help="Show the changes, then roll them back.")
    @uow.with_services(ItemService, database=database)
    def add(names: tuple[str, ...], dry_run: bool, items: ItemService) -> None:
        """Add items."""
        for name in names:
            items.add(name)
        click.echo(f"added {len(items.names())}")
        uow.on_commit(lambda: click.echo("committed"), database=database)
        uow.on_rollback(lambda: click.echo("rolled back"), database=database)
        if dry_run:
            uow.set_rollback_only(database)

    return add


def test_click_dry_run_rolls_back_and_exits_zero(sync_db: uow.Database) -> None:
    cli = click_cli(sync_db)
    runner = CliRunner()
    result = runner.invoke(cli, ["a", "b", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert result.output == "added 2\nrolled back\n"
    assert names_in(sync_db) == []
    result = runner.invoke(cli, ["a", "b"])
    assert result.exit_code == 0, result.output
    assert result.output == "added 2\ncommitted\n"
    assert names_in(sync_db) == ["a", "b"]
    help_text = runner.invoke(cli, ["--help"]).output
    assert "--dry-run" in help_text and "items" not in help_text.replace("Add items.", "")


def test_async_click_dry_run(runner_async_db: uow.Database) -> None:
    database = runner_async_db

    @click.command()
    @click.argument("name")
    @click.option("--dry-run", is_flag=True)
    @run_async
    @uow.with_services(AsyncItemService, database=database)
    async def add(name: str, dry_run: bool, items: AsyncItemService) -> None:
        await items.add(name)
        click.echo(f"seen {await items.count()}")
        if dry_run:
            uow.set_rollback_only(database)

    runner = CliRunner()
    result = runner.invoke(add, ["a", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output == "seen 1\n"
    result = runner.invoke(add, ["b"])
    assert result.exit_code == 0, result.output
    assert result.output == "seen 1\n"  # "a" was rolled back


def test_typer_dry_run(sync_db: uow.Database) -> None:
    app = typer.Typer()

    @app.command()
    @uow.with_services(ItemService, database=sync_db)
    def add(
        items: ItemService,
        name: str,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Roll back at the end.")] = False,
    ) -> None:
        items.add(name)
        typer.echo(f"added {name}")
        if dry_run:
            uow.set_rollback_only(sync_db)

    runner = TyperRunner()
    result = runner.invoke(app, ["a", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "added a" in result.output
    assert names_in(sync_db) == []
    assert runner.invoke(app, ["b"]).exit_code == 0
    assert names_in(sync_db) == ["b"]
