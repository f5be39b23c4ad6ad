"""Case: a real server. uvicorn on 127.0.0.1 serves one application on PostgreSQL (asyncpg)
with a route per variant, and a load generator in another process drives it over loopback.

    python -m benchmarks.server serve --app fastapi --url postgresql+asyncpg://... --port 8123
    python -m benchmarks.server load --port 8123 --pid 4242 --plan '{"paths": [...], ...}'

The benchmark process creates a database of its own, starts the server (``serve``), waits
until it accepts connections, then runs the load generator (``load``): a small asyncio
HTTP/1.1 client keeping a fixed number of connections alive, each sending its next
``POST /<route>?name=x`` as soon as the previous response is in. The routes take turns
in phases (A B C, B C A, ...; one untimed warm-up phase each first); a phase sends a fixed
number of requests and waits for every response. Around each phase the load generator
reads the server's CPU time (utime + stime of its process, ``/proc/<pid>/stat``) and the
wall clock, so the figures are: requests/s (wall) and server CPU per request, for each
route against the hand-written route, median over the rounds of the per-round ratios.
The server is always terminated (and the database dropped), also on errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/server.py` or `-m benchmarks.server`
    sys.path.insert(0, str(ROOT))

from sqlalchemy.ext.asyncio import AsyncSession  # noqa: E402

from benchmarks.common import AsyncItems, Base, async_factory, postgres_database  # noqa: E402
from benchmarks.harness import Case, CaseResult, Options, Setup, Variant, collect, measured_elsewhere  # noqa: E402
from benchmarks.imports import child_env  # noqa: E402
from uow import Database, with_services  # noqa: E402

# The route handlers' annotations are resolved in this module's namespace (Litestar, FastAPI).

CONNECTIONS = 8  # the load generator's keep-alive connections (requests in flight at once)
# The server's CPU time comes in clock ticks (10 ms): a phase is never shorter than this many requests
# (about 0.1 s of CPU), so even a smoke run measures a CPU time above zero.
MIN_REQUESTS = 100
POOL_SIZE = 10  # the server's connection pool: every request in flight gets a connection
MAX_ROUNDS = 15  # a phase takes a second or two: the server cases run at most this many rounds (Case.max_rounds)
STARTUP_TIMEOUT = 60.0  # seconds for the server to accept connections (imports on a loaded machine)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# -- the applications (built in the server process) -------------------------------------------


def fastapi_app(url: str) -> Any:
    """One FastAPI application: the hand-written route (also flushing first), `@with_services`, `Depends()`."""
    from fastapi import Depends, FastAPI

    engine, lifespan = _engine_and_lifespan(url)
    factory = async_factory(engine)
    db = Database(session_factory=factory)
    app = FastAPI(lifespan=lifespan)

    @app.post("/hand")
    async def hand(name: str) -> dict[str, int]:
        async with factory() as session:
            item = AsyncItems(session).add(name)
            await session.commit()
        return {"id": item.id}

    @app.post("/flush")
    async def flush_first(name: str) -> dict[str, int]:
        async with factory() as session:
            item = AsyncItems(session).add(name)
            await session.flush()
            await session.commit()
        return {"id": item.id}

    @app.post("/uow")
    @with_services(AsyncItems, database=db)
    async def decorated(name: str, items: AsyncItems) -> dict[str, int]:
        item = items.add(name)
        await items.session.flush()
        return {"id": item.id}

    async def provide_items() -> AsyncIterator[AsyncItems]:
        async with factory() as session:
            yield AsyncItems(session)

    @app.post("/depends")
    async def depends(name: str, items: AsyncItems = Depends(provide_items)) -> dict[str, int]:  # noqa: B008
        item = items.add(name)
        await items.session.commit()
        return {"id": item.id}

    return app


def litestar_app(url: str) -> Any:
    """One Litestar application: hand-written, `@with_services`, `Provide()`, advanced-alchemy's plugin session."""
    from advanced_alchemy.extensions.litestar import AsyncSessionConfig, SQLAlchemyAsyncConfig, SQLAlchemyPlugin
    from litestar import Litestar, post
    from litestar.di import Provide

    engine, lifespan = _engine_and_lifespan(url)
    factory = async_factory(engine)
    db = Database(session_factory=factory)

    @post("/hand", status_code=200)
    async def hand(name: str) -> dict[str, int]:
        async with factory() as session:
            item = AsyncItems(session).add(name)
            await session.commit()
        return {"id": item.id}

    @post("/flush", status_code=200)
    async def flush_first(name: str) -> dict[str, int]:
        async with factory() as session:
            item = AsyncItems(session).add(name)
            await session.flush()
            await session.commit()
        return {"id": item.id}

    @post("/uow", status_code=200)
    @with_services(AsyncItems, database=db)
    async def decorated(name: str, items: AsyncItems) -> dict[str, int]:
        item = items.add(name)
        await items.session.flush()
        return {"id": item.id}

    async def provide_items() -> AsyncIterator[AsyncItems]:
        async with factory() as session:
            yield AsyncItems(session)

    @post("/provide", status_code=200, dependencies={"items": Provide(provide_items)})
    async def provided(name: str, items: AsyncItems) -> dict[str, int]:
        item = items.add(name)
        await items.session.commit()
        return {"id": item.id}

    @post("/alchemy", status_code=200)
    async def alchemy(name: str, db_session: AsyncSession) -> dict[str, int]:
        item = AsyncItems(db_session).add(name)
        await db_session.flush()
        return {"id": item.id}

    config = SQLAlchemyAsyncConfig(
        engine_instance=engine,
        session_config=AsyncSessionConfig(expire_on_commit=False),
        before_send_handler="autocommit",
    )
    return Litestar(
        [hand, flush_first, decorated, provided, alchemy],
        plugins=[SQLAlchemyPlugin(config=config)],
        lifespan=[lifespan],
        logging_config=None,
    )


def _engine_and_lifespan(url: str) -> tuple[Any, Any]:
    from sqlalchemy.ext.asyncio import create_async_engine

    # synchronous_commit off: a COMMIT does not wait for the WAL to reach the disk, whose pace (shared with
    # every other job on the machine) would otherwise set the requests/s of every route alike.
    engine = create_async_engine(
        url,
        pool_size=POOL_SIZE,
        max_overflow=0,
        connect_args={"server_settings": {"synchronous_commit": "off"}},
    )

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        try:
            yield
        finally:
            await engine.dispose()

    return engine, lifespan


APPS = {"fastapi": fastapi_app, "litestar": litestar_app}


def serve(app_name: str, url: str, port: int) -> None:
    import uvicorn

    uvicorn.run(APPS[app_name](url), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- the load generator (its own process) ----------------------------------------------------


def server_cpu(pid: int) -> float:
    """The CPU time (user + system, all threads) the process `pid` has used so far, in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()  # after "pid (comm)": fields 3.. of proc(5)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


class Connection:
    """One HTTP/1.1 keep-alive connection sending bodiless POSTs and reading whole responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def post(self, request: bytes) -> None:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *headers = head.decode("latin-1").split("\r\n")
        length = 0
        for header in headers:
            name, _, value = header.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        if status_line.split(" ", 2)[1] != "200" or b'"id"' not in body:
            raise RuntimeError(f"unexpected response: {status_line} {body[:200]!r}")

    def close(self) -> None:
        self.writer.close()


async def phase(connections: list[Connection], path: str, requests: int) -> int:
    """Send `requests` requests to `path` over all connections at once; returns how many were answered."""
    request = f"POST {path}?name=x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode("ascii")
    left = requests

    async def drive(connection: Connection) -> int:
        nonlocal left
        done = 0
        while left > 0:
            left -= 1
            await connection.post(request)
            done += 1
        return done

    return sum(await asyncio.gather(*(drive(c) for c in connections)))


async def load(port: int, pid: int, plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the plan's phases; one record (path, round, requests, wall and server CPU seconds) per timed phase."""
    paths: list[str] = plan["paths"]
    connections = [await Connection.open(port) for _ in range(plan["connections"])]
    records = []
    try:
        for path in paths:  # warm-up
            await phase(connections, path, plan["requests"])
        for r in range(plan["rounds"]):
            shift = r % len(paths)
            for path in paths[shift:] + paths[:shift]:
                cpu, wall = server_cpu(pid), time.perf_counter()
                answered = await phase(connections, path, plan["requests"])
                wall, cpu = time.perf_counter() - wall, server_cpu(pid) - cpu
                records.append({"path": path, "round": r, "requests": answered, "wall": wall, "cpu": cpu})
    finally:
        for c in connections:
            c.close()
    return records


# -- the benchmark process: database, server, load generator ---------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}): {log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the server did not listen on port {port} within {STARTUP_TIMEOUT:g} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _child(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.server", *args]


def run_against_server(app_name: str, routes: list[tuple[str, str, str]], rounds: int, requests: int) -> Any:
    """Serve `app_name` on a database of its own and drive its `routes` (name, path, kind); the load records."""
    per_phase = max(requests, MIN_REQUESTS)
    plan: dict[str, Any] = {
        "paths": [path for _, path, _ in routes],
        "rounds": rounds,
        "requests": per_phase,
        "connections": CONNECTIONS,
    }
    env = child_env()
    with postgres_database() as url, tempfile.TemporaryDirectory() as tmp:  # `Unavailable` without a server
        port = free_port()
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                _child("serve", "--app", app_name, "--url", url, "--port", str(port)),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )
        try:
            wait_until_listening(server, port, log)
            started = time.monotonic()
            # Bounded: a phase of `requests` requests takes seconds; a hung server ends the run here.
            timeout = 120 + 2 * len(routes) * (rounds + 1) * per_phase * 0.02
            done = subprocess.run(
                _child("load", "--port", str(port), "--pid", str(server.pid), "--plan", json.dumps(plan)),
                capture_output=True,
                text=True,
                env=env,
                cwd=ROOT,
                timeout=timeout,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"the load generator failed ({done.returncode}): {done.stderr[-2000:]}")
            records: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
            return records, time.monotonic() - started, rounds
        finally:
            stop(server)


def _measure(app_name: str, routes: list[tuple[str, str, str]]) -> Any:
    def measure(case: Case, options: Options) -> CaseResult:
        records, elapsed, rounds = run_against_server(app_name, routes, case.rounds(options), options.number_for(case))
        name_of = {path: name for name, path, _ in routes}
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in routes}
        for record in sorted(records, key=lambda rec: rec["round"]):
            per = record["requests"]
            samples[name_of[record["path"]]].append((record["wall"] / per, record["cpu"] / per))
        base = routes[0][0]
        metrics: dict[str, float] = {}
        notes = []
        for name, _, _ in routes:
            rps = statistics.median(b[0] / m[0] for m, b in zip(samples[name], samples[base], strict=True))
            cpu = statistics.median(m[1] / b[1] for m, b in zip(samples[name], samples[base], strict=True))
            metrics[f"rps_ratio:{name}"] = rps
            metrics[f"cpu_ratio:{name}"] = cpu
            metrics[f"rps:{name}"] = statistics.median(1 / s[0] for s in samples[name])
            notes.append(
                f"{name}: {metrics[f'rps:{name}']:,.0f} requests/s, requests/s ratio {rps:.3f}, "
                f"server CPU per request ratio {cpu:.3f}"
            )
        per_phase = records[0]["requests"] if records else 0
        notes.append(
            f"{rounds} rounds of {per_phase} requests per route over {CONNECTIONS} keep-alive connections, "
            f"{elapsed:.0f} s; uvicorn's CPU from /proc (resolution {1000 / CLOCK_TICKS:g} ms)"
        )
        ready = Setup(
            [Variant(name, lambda: None, kind=kind) for name, _, kind in routes],
            notes=notes,
            metrics=metrics,
        )
        return collect(case, ready, samples, options.clock)

    return measure


_MEASURES = (
    "one POST request (insert a row, commit, return its id) to uvicorn on loopback from a load generator in "
    "another process; the ratio is the server's CPU per request"
)

CASES = [
    Case(
        "server-fastapi-asyncpg",
        "real server, FastAPI on uvicorn, PostgreSQL/asyncpg",
        _MEASURES,
        measured_elsewhere,
        False,
        1000,
        "request, server CPU",
        ("fastapi", "uvicorn", "asyncpg"),
        max_rounds=MAX_ROUNDS,
        measure=_measure(
            "fastapi",
            [
                ("hand-written", "/hand", "baseline"),
                ("hand-written, flush then commit", "/flush", "control"),
                ("@with_services", "/uow", "uow"),
                ("Depends()", "/depends", "alternative"),
            ],
        ),
    ),
    Case(
        "server-litestar-asyncpg",
        "real server, Litestar on uvicorn, PostgreSQL/asyncpg",
        _MEASURES,
        measured_elsewhere,
        False,
        1000,
        "request, server CPU",
        ("litestar", "uvicorn", "asyncpg", "advanced_alchemy"),
        max_rounds=MAX_ROUNDS,
        measure=_measure(
            "litestar",
            [
                ("hand-written", "/hand", "baseline"),
                ("hand-written, flush then commit", "/flush", "control"),
                ("@with_services", "/uow", "uow"),
                ("Provide()", "/provide", "alternative"),
                ("advanced-alchemy SQLAlchemyPlugin", "/alchemy", "alternative"),
            ],
        ),
    ),
]


def exit_with_parent() -> None:
    """End this process as soon as the benchmark process that started it is gone, even killed outright."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="run the application under uvicorn")
    serving.add_argument("--app", choices=sorted(APPS), required=True)
    serving.add_argument("--url", required=True)
    serving.add_argument("--port", type=int, required=True)
    loading = commands.add_parser("load", help="drive a running server and print the phases as JSON")
    loading.add_argument("--port", type=int, required=True)
    loading.add_argument("--pid", type=int, required=True)
    loading.add_argument("--plan", required=True)
    args = parser.parse_args(argv)
    exit_with_parent()
    if args.command == "serve":
        serve(args.app, args.url, args.port)
    else:
        print(json.dumps(asyncio.run(load(args.port, args.pid, json.loads(args.plan)))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
