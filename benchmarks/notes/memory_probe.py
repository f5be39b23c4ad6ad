"""Where the bytes of one in-flight unit go: uow's held unit against the hand-written one (benchmarks/concurrency.py's units).

PYTHONPATH=<tree>/src .venv/bin/python benchmarks/notes/memory_probe.py [--db asyncpg|aiosqlite] [--level N] [--top K] [--frames F]
Prints bytes per unit of each variant (the benchmark's measurement) and, from snapshots,
the allocations per unit by the line that made them (by the innermost frame in src/uow or the
benchmark, else the innermost frame), uow minus hand-written.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tracemalloc
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository (this file is in benchmarks/notes/)
sys.path.insert(0, str(ROOT))

from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

import uow  # noqa: E402
from benchmarks.common import Base, async_factory, postgres_database  # noqa: E402
from benchmarks.concurrency import Gate, units  # noqa: E402
from uow import Database  # noqa: E402

print("uow from", uow.__file__, file=sys.stderr)


async def held_snapshot(held, level, frames):
    gate = Gate(level)
    gc.collect()
    tracemalloc.start(frames)
    before_bytes = tracemalloc.get_traced_memory()[0]
    snap0 = tracemalloc.take_snapshot()
    tasks = [asyncio.ensure_future(held(gate)) for _ in range(level)]
    await gate.all_in.wait()
    gc.collect()
    during_bytes = tracemalloc.get_traced_memory()[0]
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    gate.release.set()
    await asyncio.gather(*tasks)
    return (during_bytes - before_bytes) / level, snap0, snap1


def _short(frame: tracemalloc.Frame) -> str:
    """`dir/file.py:line` of a traceback frame."""
    return "/".join(frame.filename.split("/")[-2:]) + f":{frame.lineno}"


def attribute(snap0, snap1, level):
    """bytes and count per unit by the chosen frame of each allocation's traceback."""
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    stats = snap1.compare_to(snap0, "traceback")
    for st in stats:
        tb = st.traceback
        chosen = None
        frames = list(tb)[::-1]  # tracemalloc.Traceback is oldest first: make it most recent first
        for fr in frames:
            if "/src/uow/" in fr.filename or "benchmarks/concurrency" in fr.filename:
                chosen = fr
                break
        if chosen is None:
            chosen = frames[0]
        key = _short(frames[0]) if MODE == "inner" else f"{_short(chosen)}  [{_short(frames[0])}]"
        out[key][0] += st.size_diff / level
        out[key][1] += st.count_diff / level
    return out


MODE = "inner"


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--db", default="asyncpg")
    p.add_argument("--level", type=int, default=100)
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--mode", default="inner")
    a = p.parse_args()
    global MODE
    MODE = a.mode
    if a.db == "asyncpg":
        cm = postgres_database()
        url = cm.__enter__()
        engine = create_async_engine(url, pool_size=8, max_overflow=16)
    else:
        cm = None
        from sqlalchemy.pool import StaticPool

        engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    try:
        async with engine.begin() as c:
            await c.run_sync(Base.metadata.create_all)
        factory = async_factory(engine)
        db = Database(session_factory=factory)
        made = units(factory, db)
        held = {name: h for name, (_, h) in made.items()}
        for h in held.values():  # warm-up
            await held_snapshot(h, a.level, 1)
        for h in held.values():
            await held_snapshot(h, a.level, 1)
        results = {}
        for name, h in held.items():
            per, s0, s1 = await held_snapshot(h, a.level, a.frames)
            results[name] = (per, attribute(s0, s1, a.level))
        # plain figure without snapshot overhead, min of 2 like the benchmark
        plain = {}
        for name, h in held.items():
            vals = []
            for _ in range(2):
                gate = Gate(a.level)
                gc.collect()
                tracemalloc.start()
                b = tracemalloc.get_traced_memory()[0]
                tasks = [asyncio.ensure_future(h(gate)) for _ in range(a.level)]
                await gate.all_in.wait()
                gc.collect()
                d = tracemalloc.get_traced_memory()[0]
                tracemalloc.stop()
                gate.release.set()
                await asyncio.gather(*tasks)
                vals.append((d - b) / a.level)
            plain[name] = min(vals)
        hw, ours = plain["hand-written"], plain["@with_services"]
        print(
            f"bytes per unit: hand-written {hw:,.0f}  @with_services {ours:,.0f}  ratio {ours / hw:.3f}  (+{ours - hw:,.0f})"
        )
        base = results["hand-written"][1]
        mine = results["@with_services"][1]
        keys = set(base) | set(mine)
        rows = []
        for k in keys:
            d = mine.get(k, [0, 0])[0] - base.get(k, [0, 0])[0]
            n = mine.get(k, [0, 0])[1] - base.get(k, [0, 0])[1]
            if abs(d) >= 4:
                rows.append((d, n, k, mine.get(k, [0, 0])[0], base.get(k, [0, 0])[0]))
        rows.sort(reverse=True)
        print(f"{'+B/unit':>8} {'+blocks':>7}  uow  hand  where")
        for d, n, k, m, b in rows[: a.top]:
            print(f"{d:8.0f} {n:7.2f}  {m:5.0f} {b:5.0f}  {k}")
        print(f"sum of listed diffs: {sum(r[0] for r in rows):.0f}")
    finally:
        await engine.dispose()
        if cm is not None:
            cm.__exit__(None, None, None)


asyncio.run(main())
