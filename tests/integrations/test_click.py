"""click commands decorated with `@with_services`, run through click's own CliRunner."""

from __future__ import annotations

import inspect

import click
import pytest
from click.testing import CliRunner

import uow
from tests.models import AsyncItemService, ItemService
from uow.integrations.click import run_async


def names_in(database: uow.Database) -> list[str]:
    with uow.provide_services(ItemService, database=database) as (items,):
        return items.names()


async def async_names_in(database: uow.Database) -> list[str]:
    async with uow.provide_services(AsyncItemService, database=database) as (items,):
        return await items.names()


def sync_cli(database: uow.Database) -> click.Group:
    @click.group()
    def cli() -> None:
        """Items."""

    @cli.command()
    @click.argument("names", nargs=-1)
    @click.option("--fail", is_flag=True, help="Fail after adding.")
    @uow.with_services(ItemService, database=database)
    def add(names: tuple[str, ...], fail: bool, items: ItemService) -> None:
        """Add items."""
        for name in names:
            items.add(name)
        click.echo(f"added {len(names)}")
        if fail:
            raise RuntimeError("failed after adding")

    @cli.command()
    @click.option("--code", type=int, default=0)
    @uow.with_services(ItemService, database=database)
    def add_then_exit(code: int, items: ItemService) -> None:
        items.add("exit")
        raise click.exceptions.Exit(code)

    return cli


def async_cli(database: uow.Database) -> click.Group:
    @click.group()
    def cli() -> None:
        """Items, async."""

    @cli.command()
    @click.argument("names", nargs=-1)
    @click.option("--fail", is_flag=True)
    @run_async
    @uow.with_services(AsyncItemService, database=database)
    async def add(names: tuple[str, ...], fail: bool, items: AsyncItemService) -> None:
        """Add items."""
        for name in names:
            await items.add(name)
        click.echo(f"added {len(names)}")
        if fail:
            raise RuntimeError("failed after adding")

    @cli.command()
    @click.pass_context
    @run_async
    @uow.with_services(AsyncItemService, database=database)
    async def count(ctx: click.Context, items: AsyncItemService) -> None:
        click.echo(f"{ctx.info_name}: {await items.count()}")

    return cli


def test_sync_command_commits(sync_db: uow.Database) -> None:
    result = CliRunner().invoke(sync_cli(sync_db), ["add", "a", "b"])
    assert result.exit_code == 0, result.output
    assert result.output == "added 2\n"
    assert names_in(sync_db) == ["a", "b"]


def test_sync_command_failure_exits_non_zero_and_rolls_back(sync_db: uow.Database) -> None:
    result = CliRunner().invoke(sync_cli(sync_db), ["add", "a", "--fail"])
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)
    assert names_in(sync_db) == []


def test_exit_with_code_rolls_back(sqlite_db: uow.Database) -> None:
    result = CliRunner().invoke(sync_cli(sqlite_db), ["add-then-exit", "--code", "3"])
    assert result.exit_code == 3
    assert names_in(sqlite_db) == []


def test_exit_zero_still_rolls_back(sqlite_db: uow.Database) -> None:
    # click.exceptions.Exit is an exception like any other to the unit: return from the command to commit.
    result = CliRunner().invoke(sync_cli(sqlite_db), ["add-then-exit"])
    assert result.exit_code == 0
    assert names_in(sqlite_db) == []


def test_help_shows_only_the_commands_own_parameters(sqlite_db: uow.Database) -> None:
    result = CliRunner().invoke(sync_cli(sqlite_db), ["add", "--help"])
    assert result.exit_code == 0
    assert "Add items." in result.output
    assert "--fail" in result.output
    assert "items" not in result.output.replace("Add items.", "")


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_async_command_runs_and_commits(runner_async_db: uow.Database) -> None:
    cli = async_cli(runner_async_db)
    runner = CliRunner()
    first = runner.invoke(cli, ["add", "a", "b"])
    assert first.exit_code == 0, first.output
    # A second command in the same process: its event loop must not meet connections of the first one's.
    second = runner.invoke(cli, ["add", "c"])
    assert second.exit_code == 0, second.output
    counted = runner.invoke(cli, ["count"])
    assert counted.output == "count: 3\n", counted.output
    assert first.output == "added 2\n"


def test_async_command_failure_exits_non_zero_and_rolls_back(runner_async_db: uow.Database) -> None:
    cli = async_cli(runner_async_db)
    result = CliRunner().invoke(cli, ["add", "a", "--fail"])
    assert result.exit_code == 1
    assert isinstance(result.exception, RuntimeError)
    assert CliRunner().invoke(cli, ["count"]).output == "count: 0\n"


def test_without_run_async_click_drops_the_coroutine() -> None:
    # Why run_async exists: click calls the command and exits 0 with its coroutine never run.
    database = uow.Database("sqlite+aiosqlite://")

    @click.command()
    @uow.with_services(AsyncItemService, database=database)
    async def add(items: AsyncItemService) -> None:
        await items.add("never")

    result = CliRunner().invoke(add, [], standalone_mode=False)
    assert result.exit_code == 0
    assert inspect.iscoroutine(result.return_value)
    result.return_value.close()


def test_run_async_refuses_a_plain_function() -> None:
    def command() -> None: ...

    with pytest.raises(TypeError, match="needs an 'async def' command"):
        run_async(command)  # type: ignore[arg-type]


def test_run_async_keeps_name_help_and_visible_signature(sqlite_db: uow.Database) -> None:
    database = uow.Database("sqlite+aiosqlite://")

    @uow.with_services(AsyncItemService, database=database)
    async def add(name: str, items: AsyncItemService) -> None:
        """Add one item."""

    runner = run_async(add)
    assert runner.__name__ == "add"
    assert runner.__doc__ == "Add one item."
    assert list(inspect.signature(runner).parameters) == ["name"]


def test_importing_the_cli_integrations_imports_no_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, uow, uow.integrations.click, uow.integrations.typer; "
        "loaded = {'click', 'typer', 'celery', 'saq', 'arq', 'apscheduler', 'advanced_alchemy'} & set(sys.modules); "
        "assert not loaded, loaded"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
