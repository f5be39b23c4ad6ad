#!/usr/bin/env python3
"""Function calls per request (cProfile), the web cases' figure that does not depend on how busy the machine is.

``python benchmarks/web_calls.py [--requests N] [--diff] [--framework NAME]`` serves
``POST /items?name=x`` (insert a row, commit, return its id) through FastAPI, Starlette and
Litestar with `benchmarks/web.py`'s applications, on in-memory aiosqlite, through httpx's
``ASGITransport``, and prints how many calls (Python and C, as cProfile counts them) one
request makes: the hand-written route, the hand-written route flushing first (the control:
a decorated route flushes for the id), the ``@with_services`` route beginning its own unit,
and the ``@with_services`` route inside the integration's request unit (the middleware or
plugin). Beside each total, the calls made in uow's own code (``src/uow``). ``--diff`` lists,
per function, what each uow variant calls beyond the control.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.util
import logging
import pstats
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if importlib.util.find_spec("uow") is None:  # a fresh clone run without installing: use the source tree
    sys.path.insert(0, str(ROOT / "src"))

import httpx  # noqa: E402
from litestar import Litestar  # noqa: E402

from benchmarks import web  # noqa: E402
from benchmarks.common import aiosqlite_engine, async_factory, clear_async  # noqa: E402
from uow import Database  # noqa: E402

Key = tuple[str, int, str]
Factory = web.Factory
UOW_SOURCE = str(ROOT / "src" / "uow")


AppFactory = Callable[[Factory, Database], Any]
FRAMEWORKS: dict[str, list[tuple[str, AppFactory]]] = {
    "fastapi": [
        ("hand-written", web.fastapi_by_hand),
        ("hand-written, flush first", web.fastapi_flush_first),
        ("@with_services", web.fastapi_with_services),
        ("@with_services, request unit", web.fastapi_request_unit),
    ],
    "starlette": [
        ("hand-written", web.starlette_by_hand),
        ("hand-written, flush first", web.starlette_flush_first),
        ("@with_services", web.starlette_with_services),
        ("@with_services, request unit", web.starlette_request_unit),
    ],
    "litestar": [
        ("hand-written", web.litestar_by_hand),
        ("hand-written, flush first", web.litestar_flush_first),
        ("@with_services", web.litestar_with_services),
        ("@with_services, request unit", web.litestar_request_unit),
    ],
}
CONTROL = "hand-written, flush first"


async def _count(post_one: Callable[[], Awaitable[None]], requests: int) -> dict[Key, float]:
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(requests):
        await post_one()
    profile.disable()
    stats: dict[Key, tuple[int, ...]] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    return {key: value[1] / requests for key, value in stats.items()}


def _uow_share(per_function: dict[Key, float]) -> float:
    return sum(n for (file, _, _), n in per_function.items() if file.startswith(UOW_SOURCE) or "/uow/" in file)


async def _serve(apps: list[tuple[str, AppFactory]], requests: int) -> dict[str, dict[Key, float]]:
    counts: dict[str, dict[Key, float]] = {}
    async with aiosqlite_engine() as engine, AsyncExitStack() as stack:
        factory = async_factory(engine)
        db = Database(session_factory=factory)
        clients: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        for name, make_app in apps:
            app = make_app(factory, db)
            if isinstance(app, Litestar):
                await stack.enter_async_context(app.lifespan())
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")
            )
            clients.append((name, _poster(client)))
        for _, post_one in clients:
            for _ in range(20):
                await post_one()
        for name, post_one in clients:
            await clear_async(engine)
            counts[name] = await _count(post_one, requests)
    return counts


def _poster(client: httpx.AsyncClient) -> Callable[[], Awaitable[None]]:
    async def post_one() -> None:
        response = await client.post("/items", params={"name": "x"})
        if response.status_code != 200 or "id" not in response.json():
            raise RuntimeError(f"unexpected response {response.status_code}: {response.text[:200]}")

    return post_one


def report(framework: str, counts: dict[str, dict[Key, float]], *, diff: bool) -> None:
    print(f"{framework}:")
    base = counts["hand-written"]
    base_total = sum(base.values())
    control = counts[CONTROL]
    for name, per_function in counts.items():
        total = sum(per_function.values())
        print(
            f"  {name:<30} {total:7.1f} calls per request ({total - base_total:+6.1f} over hand-written), "
            f"{_uow_share(per_function):5.1f} in uow"
        )
        if diff and name.startswith("@"):
            more = {key: n - control.get(key, 0.0) for key, n in per_function.items()}
            for (file, line, function), n in sorted(more.items(), key=lambda item: -item[1]):
                if n >= 0.5:
                    print(f"      {n:+5.1f}  {function}  ({Path(file).name}:{line})")


async def amain(frameworks: list[str], requests: int, *, diff: bool) -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for framework in frameworks:
        report(framework, await _serve(FRAMEWORKS[framework], requests), diff=diff)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests counted per variant (default 200)")
    parser.add_argument("--framework", action="append", choices=sorted(FRAMEWORKS), help="default: all three")
    parser.add_argument("--diff", action="store_true", help="list the calls the uow variants make beyond the control")
    args = parser.parse_args(argv)
    asyncio.run(amain(args.framework or list(FRAMEWORKS), args.requests, diff=args.diff))
    return 0


if __name__ == "__main__":
    sys.exit(main())
