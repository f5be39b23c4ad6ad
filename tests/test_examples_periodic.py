"""examples/periodic_service.py: every tick one unit, failures counted and backed off, health reported; bounded runs."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import create_engine, text

import uow

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "periodic_service.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("periodic_service_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


example = load()


def counts(path: Path) -> tuple[int, int]:
    """(expired reservations, sweep records) committed in the SQLite file."""
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            expired = connection.scalar(text("SELECT count(*) FROM reservations WHERE status = 'expired'"))
            sweeps = connection.scalar(text("SELECT count(*) FROM sweeps"))
        return int(expired or 0), int(sweeps or 0)
    finally:
        engine.dispose()


def test_the_program_runs_bounded_and_reports_health(tmp_path: Path) -> None:
    database = tmp_path / "periodic.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, str(SCRIPT), "--url", f"sqlite+aiosqlite:///{database}", "--interval", "0.01"]
    result = subprocess.run(
        [*command, "--ticks", "4", "--fail-every", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr  # the last tick failed: health is "degraded"
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["tick 1", "tick 2", "tick 3", "tick 4"]
    health = [json.loads(line.split("health=", 1)[1]) for line in lines]
    assert [h["status"] for h in health] == ["ok", "degraded", "ok", "degraded"]
    assert [h["failures"] for h in health] == [0, 1, 1, 2]
    assert health[-1]["last_error"] == "RuntimeError: tick 4 failed after writing (demonstration)"
    assert lines[0].startswith("tick 1: expired=3 ")
    # ticks 2 and 4 wrote a sweep record and then failed: only ticks 1 and 3 are committed
    assert counts(database) == (3, 2)

    again = subprocess.run([*command, "--ticks", "2"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert again.returncode == 0, again.stderr  # healthy run; the file is not seeded twice
    assert counts(database) == (3, 4)


@pytest.fixture
async def sweeper_db(tmp_path: Path) -> AsyncIterator[uow.Database]:
    database = uow.Database(f"sqlite+aiosqlite:///{tmp_path / 'sweeper.sqlite3'}")
    await example.seed(database, expired=2, later=1)
    yield database
    assert database.engine.sync_engine.pool.checkedout() == 0  # type: ignore[union-attr]
    await database.dispose_async()


async def test_failing_ticks_back_off_and_turn_the_health_to_failing(sweeper_db: uow.Database, tmp_path: Path) -> None:
    sweeper = example.PeriodicSweeper(sweeper_db, interval=0.01, max_backoff=0.05, failing_after=3, fail_every=1)
    delays = []
    await sweeper.run(ticks=4, on_tick=lambda _: delays.append(sweeper.delay()))
    assert sweeper.health()["status"] == "failing"
    assert sweeper.health()["failures"] == sweeper.health()["consecutive_failures"] == 4
    assert sweeper.health()["seconds_since_success"] is None
    assert delays == [0.02, 0.04, 0.05, 0.05]  # doubled per failure in a row, capped
    assert counts(tmp_path / "sweeper.sqlite3") == (0, 0)  # every tick rolled back

    sweeper.fail_every = 0
    assert await sweeper.tick() == 2
    assert sweeper.health()["status"] == "ok" and sweeper.delay() == 0.01
    assert counts(tmp_path / "sweeper.sqlite3") == (2, 1)


async def test_stop_ends_an_unbounded_run(sweeper_db: uow.Database) -> None:
    sweeper = example.PeriodicSweeper(sweeper_db, interval=10.0)
    task = asyncio.ensure_future(sweeper.run())
    while sweeper.state.ticks == 0:
        await asyncio.sleep(0.01)
    sweeper.stop()  # wakes the wait between ticks at once, long interval or not
    await asyncio.wait_for(task, timeout=5)
    assert sweeper.state.ticks == 1 and sweeper.health()["status"] == "ok"


async def test_a_cancelled_tick_rolls_back(sweeper_db: uow.Database, tmp_path: Path) -> None:
    sweeper = example.PeriodicSweeper(sweeper_db)
    started = asyncio.Event()
    original = sweeper._sweep

    async def slow_sweep(reservations: example.ReservationService) -> int:  # type: ignore[name-defined]
        expired: int = await original(reservations)  # both writes are flushed, not committed
        started.set()
        await asyncio.sleep(10)
        return expired

    sweeper._tick = uow.with_services(example.ReservationService, database=sweeper_db)(slow_sweep)
    task = asyncio.ensure_future(sweeper.tick())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task  # cancellation is not an Exception: it propagates, the unit rolled back
    assert counts(tmp_path / "sweeper.sqlite3") == (0, 0)
