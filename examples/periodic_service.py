"""A periodic background service: every tick is one unit of work; failures are counted, health is reported.

    python examples/periodic_service.py --ticks 6 --interval 0.1 --fail-every 3

Each tick expires the reservations whose time is up and records what it did, in one unit:
both writes commit together, or (the tick raised) neither does. The loop survives a failed
tick, counts it, waits a little longer before the next one, and reports its health: ``ok``,
``degraded`` after a failure, ``failing`` after `failing_after` failures in a row. A web app
would serve `health()` from its health-check route; this program prints it after each tick
and exits with status 0 when the last health is ``ok``, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ForeignKey, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import uow


class Base(DeclarativeBase):
    pass


class Reservation(Base):
    __tablename__ = "reservations"

    id: Mapped[int] = mapped_column(primary_key=True)
    expires_at: Mapped[dt.datetime]
    status: Mapped[str] = mapped_column(default="held")


class SweepRecord(Base):
    """One row per successful tick: how many reservations it expired."""

    __tablename__ = "sweeps"

    id: Mapped[int] = mapped_column(primary_key=True)
    expired: Mapped[int]
    last_reservation_id: Mapped[int | None] = mapped_column(ForeignKey("reservations.id"))


class ReservationService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def expire_due(self, now: dt.datetime) -> int:
        due = select(Reservation.id).where(Reservation.status == "held", Reservation.expires_at <= now)
        ids = list((await self.session.scalars(due.order_by(Reservation.id))).all())
        if ids:
            await self.session.execute(update(Reservation).where(Reservation.id.in_(ids)).values(status="expired"))
        return len(ids)

    async def record_sweep(self, expired: int) -> None:
        last = await self.session.scalar(select(func.max(Reservation.id)))
        self.session.add(SweepRecord(expired=expired, last_reservation_id=last))
        await self.session.flush()


@dataclass
class Health:
    """What the service reports about itself; `status` is what a health check looks at."""

    ticks: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    last_success: float | None = None  # time.monotonic() of the last tick that committed
    history: list[str] = field(default_factory=list)  # "ok" / "failed" per tick, newest last

    def status(self, failing_after: int) -> str:
        if self.consecutive_failures >= failing_after:
            return "failing"
        return "degraded" if self.consecutive_failures else "ok"


class PeriodicSweeper:
    """Runs `tick` every `interval` seconds until stopped (or for `ticks` ticks), each tick one unit of work."""

    def __init__(
        self,
        database: uow.Database,
        *,
        interval: float = 1.0,
        max_backoff: float = 30.0,
        failing_after: int = 3,
        fail_every: int = 0,
    ) -> None:
        self.database = database
        self.interval = interval
        self.max_backoff = max_backoff
        self.failing_after = failing_after
        self.fail_every = fail_every  # for the demonstration: every n-th tick raises after writing
        self.state = Health()
        self._stop = asyncio.Event()
        # Decorated per instance, so each sweeper runs on its own Database.
        self._tick = uow.with_services(ReservationService, database=database)(self._sweep)

    async def _sweep(self, reservations: ReservationService) -> int:
        expired = await reservations.expire_due(dt.datetime.now())
        await reservations.record_sweep(expired)
        if self.fail_every and (self.state.ticks + 1) % self.fail_every == 0:
            raise RuntimeError(f"tick {self.state.ticks + 1} failed after writing (demonstration)")
        return expired

    async def tick(self) -> int | None:
        """One unit: the sweep commits, or it rolls back and the failure is counted. Never raises an Exception."""
        try:
            expired = await self._tick()
        except Exception as error:  # the unit has rolled back: count it, keep the loop alive
            self.state.failures += 1
            self.state.consecutive_failures += 1
            self.state.last_error = f"{type(error).__name__}: {error}"
            self.state.history.append("failed")
            return None
        else:
            self.state.consecutive_failures = 0
            self.state.last_success = time.monotonic()
            self.state.history.append("ok")
            return expired
        finally:
            self.state.ticks += 1

    def delay(self) -> float:
        """The wait before the next tick: the interval, doubled per failure in a row, at most `max_backoff`."""
        backoff: float = self.interval * 2.0**self.state.consecutive_failures
        return min(backoff, self.max_backoff)

    async def run(self, ticks: int | None = None, on_tick: Callable[[int | None], None] | None = None) -> None:
        """Tick until `stop()` is called, or `ticks` times. Cancellation during a tick rolls that tick back."""
        while not self._stop.is_set() and (ticks is None or self.state.ticks < ticks):
            expired = await self.tick()
            if on_tick is not None:
                on_tick(expired)
            if ticks is not None and self.state.ticks >= ticks:
                break
            with contextlib.suppress(asyncio.TimeoutError):  # the interval passed without a stop()
                await asyncio.wait_for(self._stop.wait(), timeout=self.delay())

    def stop(self) -> None:
        self._stop.set()

    def health(self) -> dict[str, Any]:
        """The report a health-check route would return (and answer 503 for when status is "failing")."""
        since = None if self.state.last_success is None else round(time.monotonic() - self.state.last_success, 3)
        return {
            "status": self.state.status(self.failing_after),
            "ticks": self.state.ticks,
            "failures": self.state.failures,
            "consecutive_failures": self.state.consecutive_failures,
            "last_error": self.state.last_error,
            "seconds_since_success": since,
        }


async def seed(database: uow.Database, expired: int, later: int) -> None:
    async with database.engine.begin() as connection:  # type: ignore[union-attr]
        await connection.run_sync(Base.metadata.create_all)
    now = dt.datetime.now()

    @uow.unit_of_work(database=database)
    async def add(session: AsyncSession) -> None:
        if await session.scalar(select(func.count()).select_from(Reservation)):
            return  # seeded by an earlier run
        session.add_all(Reservation(expires_at=now - dt.timedelta(minutes=i + 1)) for i in range(expired))
        session.add_all(Reservation(expires_at=now + dt.timedelta(hours=i + 1)) for i in range(later))

    await add()


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="A periodic background service, one unit of work per tick.")
    parser.add_argument("--url", default="sqlite+aiosqlite:///periodic_service.sqlite3")
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--fail-every", type=int, default=0)
    options = parser.parse_args(argv)

    database = uow.Database(options.url)
    try:
        await seed(database, expired=3, later=2)
        sweeper = PeriodicSweeper(database, interval=options.interval, fail_every=options.fail_every)

        def report(expired: int | None) -> None:
            print(f"tick {sweeper.state.ticks}: expired={expired} health={json.dumps(sweeper.health())}", flush=True)

        await sweeper.run(ticks=options.ticks, on_tick=report)
        return 0 if sweeper.health()["status"] == "ok" else 1
    finally:
        await database.dispose_async()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
