"""typer commands decorated with `@with_services`, run through typer's own CliRunner."""

from __future__ import annotations

import inspect
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

import uow
from tests.models import AsyncItemService, ItemService
from uow.integrations.typer import run_async


def names_in(database: uow.Database) -> list[str]:
    with uow.provide_services(ItemService, database=database) as (items,):
        return items.names()


def sync_app(database: uow.Database) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @uow.with_services(ItemService, database=database)
    def add(
        items: ItemService,
        name: str,
        suffix: Annotated[str, typer.Option("--suffix", "-s", help="Appended to the name.")] = "",
        fail: bool = False,
    ) -> None:
        """Add an item."""
        items.add(name + suffix)
        typer.echo(f"added {name}{suffix}")
        if fail:
            raise RuntimeError("failed after adding")

    @app.command()
    @uow.with_services(ItemService, database=database)
    def add_then_exit(items: ItemService, code: int = 0) -> None:
        items.add("exit")
        raise typer.Exit(code)

    return app


def async_app(database: uow.Database) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @run_async
    @uow.with_services(AsyncItemService, database=database)
    async def add(
        items: AsyncItemService,
        names: list[str],
        fail: Annotated[bool, typer.Option(help="Fail after adding.")] = False,
    ) -> None:
        """Add items."""
        for name in names:
            await items.add(name)
        typer.echo(f"added {len(names)}")
        if fail:
            raise RuntimeError("failed after adding")

    @app.command()
    @run_async
    @uow.with_services(AsyncItemService, database=database)
    async def count(items: AsyncItemService) -> None:
        typer.echo(f"count: {await items.count()}")

    return app


def test_sync_command_commits(sync_db: uow.Database) -> None:
    result = CliRunner().invoke(sync_app(sync_db), ["add", "a", "-s", "1"])
    assert result.exit_code == 0, result.output
    assert result.output == "added a1\n"
    assert names_in(sync_db) == ["a1"]


def test_sync_command_failure_exits_non_zero_and_rolls_back(sync_db: uow.Database) -> None:
    result = CliRunner().invoke(sync_app(sync_db), ["add", "a", "--fail"])
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)
    assert names_in(sync_db) == []


def test_exit_rolls_back_whatever_the_code(sqlite_db: uow.Database) -> None:
    app = sync_app(sqlite_db)
    assert CliRunner().invoke(app, ["add-then-exit", "--code", "4"]).exit_code == 4
    assert CliRunner().invoke(app, ["add-then-exit"]).exit_code == 0
    assert names_in(sqlite_db) == []


def test_help_never_mentions_an_injected_service(sqlite_db: uow.Database) -> None:
    result = CliRunner().invoke(sync_app(sqlite_db), ["add", "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Add an item." in result.output
    assert "{name}" in result.output
    assert "--suffix" in result.output and "-s" in result.output and "Appended to the name." in result.output
    assert "--fail" in result.output
    assert "items" not in result.output.lower()
    assert "ItemService" not in result.output


def test_injected_service_cannot_be_given_on_the_command_line(sqlite_db: uow.Database) -> None:
    result = CliRunner().invoke(sync_app(sqlite_db), ["add", "a", "--items", "x"])
    assert result.exit_code == 2
    assert "No such option" in result.output


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_async_command_runs_and_commits(runner_async_db: uow.Database) -> None:
    app = async_app(runner_async_db)
    runner = CliRunner()
    first = runner.invoke(app, ["add", "a", "b"])
    assert first.exit_code == 0, first.output
    assert first.output == "added 2\n"
    second = runner.invoke(app, ["add", "c"])
    assert second.exit_code == 0, second.output
    assert runner.invoke(app, ["count"]).output == "count: 3\n"


def test_async_command_failure_exits_non_zero_and_rolls_back(runner_async_db: uow.Database) -> None:
    app = async_app(runner_async_db)
    result = CliRunner().invoke(app, ["add", "a", "--fail"])
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)
    assert CliRunner().invoke(app, ["count"]).output == "count: 0\n"


def test_async_help(runner_async_db: uow.Database) -> None:
    result = CliRunner().invoke(async_app(runner_async_db), ["add", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "{names}" in result.output and "Fail after adding." in result.output
    assert "items" not in result.output.lower().replace("add items.", "")


def test_without_run_async_typer_drops_the_coroutine() -> None:
    # Why run_async exists: typer calls the command, exits 0, and the coroutine never runs.
    app = typer.Typer()

    @app.command()
    @uow.with_services(AsyncItemService, database=uow.Database("sqlite+aiosqlite://"))
    async def add(items: AsyncItemService, name: str) -> None:
        await items.add(name)

    result = CliRunner().invoke(app, ["never"], standalone_mode=False)
    assert result.exit_code == 0
    assert inspect.iscoroutine(result.return_value)
    result.return_value.close()
