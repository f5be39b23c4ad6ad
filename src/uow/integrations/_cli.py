"""Running `async def` commands from command-line frameworks that only call plain functions."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine
from typing_extensions import ParamSpec

from uow._database import Database, engines_of, get_default_database
from uow._planning import database_of, plan_of

__all__ = ["run_async"]

P = ParamSpec("P")
R = TypeVar("R")


def run_async(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, R]:
    """A plain function with `fn`'s name, help and visible signature that runs `fn` to completion with `asyncio.run`.

    Click and typer call a command and drop what it returns; an `async def` command would
    leave its coroutine un-awaited and silently do nothing. Put this between the framework's
    decorators and `@with_services`. The pools of the command's async Database are emptied
    before the event loop closes, so the next command in the same process (a test runner
    invoking it again) does not reuse connections bound to a closed loop.
    """
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"run_async() needs an 'async def' command, got {getattr(fn, '__qualname__', fn)!r}: "
            "a plain 'def' command needs no wrapper"
        )

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return asyncio.run(_run_then_release(fn, args, kwargs))

    return run


async def _run_then_release(fn: Callable[..., Coroutine[Any, Any, R]], args: Any, kwargs: Any) -> R:
    try:
        return await fn(*args, **kwargs)
    finally:
        await _release_pools(_database_of(fn))


def _database_of(fn: Callable[..., Any]) -> Database | None:
    """The Database the decorated command opens its units on: the decorator's own, else the configured default."""
    plan = plan_of(fn)
    return database_of(plan) if plan is not None else get_default_database()


async def _release_pools(database: Database | None) -> None:
    # Connections of async drivers belong to the event loop that opened them, and asyncio.run
    # closes that loop on return: SQLAlchemy's advice is to dispose the engine before it does.
    if database is None or not database.is_async:
        return
    for engine in engines_of(database):
        if isinstance(engine, AsyncEngine):
            await engine.dispose()
