"""`uow.otel` and `uow.logs`: one span, one set of metrics and one log record per owning unit.

Spans and metrics go through the OpenTelemetry SDK's in-memory exporters; the SQLAlchemy
instrumentation traces the same engine, so its query spans must have the unit's span as parent.
Each case runs on SQLite and PostgreSQL, sync and async. Retries are provoked for real: a
second connection holds SQLite's write lock, or commits a concurrent update under REPEATABLE READ
on PostgreSQL, during the first attempt only.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from sqlalchemy import Engine, create_engine, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import uow
import uow.logs
import uow.otel
from tests import drivers
from tests.drivers import Target
from tests.models import Counter, Item
from uow import _observe

TARGETS = ["sqlite", "sqlite+aiosqlite", "postgresql+psycopg", "postgresql+asyncpg"]
SECRET = "s3cret-bound-value"


class Telemetry:
    """The SDK side: spans and metrics of one test."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def unit_spans(self) -> list[ReadableSpan]:
        return [
            s for s in self.finished() if s.instrumentation_scope is not None and s.instrumentation_scope.name == "uow"
        ]

    def query_spans(self) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.attributes is not None and "db.statement" in s.attributes]

    def metrics(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        found: dict[str, list[Any]] = {}
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found

    def counted(self, name: str) -> int:
        return sum(point.value for point in self.metrics().get(name, []))


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    seen = Telemetry()
    uow.otel.instrument(tracer_provider=seen.tracer_provider, meter_provider=seen.meter_provider)
    yield seen
    uow.otel.uninstrument()
    SQLAlchemyInstrumentor().uninstrument()
    assert _observe.observer is None


@pytest.fixture(params=TARGETS)
async def database(request: pytest.FixtureRequest, tmp_path: Path, telemetry: Telemetry) -> AsyncIterator[uow.Database]:
    target = drivers.target(request, request.param, tmp_path)
    # SQLite: fail at once on a locked file (the retry tests hold its write lock from another connection).
    options: dict[str, Any] = {"connect_args": {"timeout": 0}} if target.dialect == "sqlite" else {}
    if target.is_async:
        db = await drivers.open_async(target, engine_options=options)
        assert isinstance(db.engine, AsyncEngine)
        async with db.engine.begin() as connection:
            await connection.execute(insert(Counter), [{"id": 1, "value": 0}])
        engine: Engine = db.engine.sync_engine
    else:
        db = drivers.open_sync(target, engine_options=options)
        assert isinstance(db.engine, Engine)
        with db.engine.begin() as connection:
            connection.execute(insert(Counter), [{"id": 1, "value": 0}])
        engine = db.engine
    # opentelemetry-instrumentation-sqlalchemy declares sqlalchemy < 2.1; its event hooks work on 2.1 as they are.
    SQLAlchemyInstrumentor().instrument(engine=engine, tracer_provider=telemetry.tracer_provider, skip_dep_check=True)
    telemetry.spans.clear()
    request.node.uow_target = target
    yield db
    if target.is_async:
        await drivers.close_async(db, target)
    else:
        drivers.close_sync(db, target)


def target_of(request: pytest.FixtureRequest) -> Target:
    found: Target = request.node.uow_target
    return found


async def run(db: uow.Database, body: Any, **options: Any) -> Any:
    """Run `body(session)` (a sync function, or an async one for an async Database) as a decorated unit."""
    if db.is_async:

        @uow.unit_of_work(database=db, **options)
        async def async_unit(session: AsyncSession) -> Any:
            return await body(session)

        return await async_unit()

    @uow.unit_of_work(database=db, **options)
    def sync_unit(session: Session) -> Any:
        return body(session)

    return sync_unit()


def bump() -> Any:
    return update(Counter).where(Counter.id == 1).values(value=Counter.value + 1)


async def counter(db: uow.Database) -> int:
    engine = db.engine
    if isinstance(engine, AsyncEngine):
        async with engine.connect() as connection:
            return int((await connection.execute(select(Counter.value))).scalar_one())
    assert isinstance(engine, Engine)
    with engine.connect() as connection:
        return int(connection.execute(select(Counter.value)).scalar_one())


def all_text(spans: list[ReadableSpan]) -> str:
    """Everything a span exports as text: name, attributes, status, events."""
    parts: list[str] = []
    for span in spans:
        parts.append(span.name)
        parts.append(repr(dict(span.attributes or {})))
        parts.append(repr(span.status.description))
        for event in span.events:
            parts.append(event.name + repr(dict(event.attributes or {})))
    return "\n".join(parts)


# -- spans ------------------------------------------------------------------------------------


async def test_one_span_per_owning_unit_with_query_spans_nested(
    database: uow.Database, telemetry: Telemetry, request: pytest.FixtureRequest
) -> None:
    target = target_of(request)
    if database.is_async:

        @uow.unit_of_work(database=database)
        async def joined(session: AsyncSession) -> None:
            await session.execute(bump())

        @uow.unit_of_work(database=database, isolation_level="SERIALIZABLE")
        async def owner(session: AsyncSession) -> None:
            await session.execute(select(Counter.value))
            await joined()
            await joined()

        await owner()
    else:

        @uow.unit_of_work(database=database)
        def joined_sync(session: Session) -> None:
            session.execute(bump())

        @uow.unit_of_work(database=database, isolation_level="SERIALIZABLE")
        def owner_sync(session: Session) -> None:
            session.execute(select(Counter.value))
            joined_sync()
            joined_sync()

        owner_sync()

    units = telemetry.unit_spans()
    assert len(units) == 1, [s.name for s in units]  # the two joined calls are part of the owner's span
    (unit,) = units
    assert unit.name.endswith("owner" if database.is_async else "owner_sync")
    attributes = dict(unit.attributes or {})
    assert attributes["code.function.name"] == unit.name
    assert attributes["uow.database"] == database.name
    assert attributes["db.system.name"] == target.dialect
    assert attributes["uow.propagation"] == "required"
    assert attributes["uow.read_only"] is False
    assert attributes["uow.isolation_level"] == "SERIALIZABLE"
    assert attributes["uow.outcome"] == "committed"
    assert attributes["uow.retries"] == 0
    commit_duration = attributes["uow.commit.duration"]
    assert isinstance(commit_duration, float)
    assert commit_duration > 0
    assert unit.status.status_code is StatusCode.UNSET
    assert unit.parent is None

    queries = telemetry.query_spans()
    statements = [str((q.attributes or {})["db.statement"]) for q in queries]
    assert any(s.startswith("SELECT") for s in statements), statements
    assert sum(s.startswith("UPDATE") for s in statements) == 2, statements
    for query in queries:
        assert query.parent is not None, query.name
        assert query.parent.span_id == unit.context.span_id, (query.name, statements)
        assert query.context.trace_id == unit.context.trace_id

    assert telemetry.counted("uow.units.committed") == 1
    assert telemetry.counted("uow.units.rolled_back") == 0
    (duration,) = telemetry.metrics()["uow.unit.duration"]
    assert duration.count == 1
    assert dict(duration.attributes) == {"uow.database": database.name, "uow.outcome": "committed"}
    assert duration.sum >= commit_duration
    assert await counter(database) == 2


async def test_a_rollback_is_an_error_span_without_bound_parameters(
    database: uow.Database, telemetry: Telemetry
) -> None:
    async def add_twice(session: Any) -> None:
        for _ in range(2):
            statement = insert(Item).values(name=SECRET)
            if database.is_async:
                await session.execute(statement)
            else:
                session.execute(statement)

    def add_twice_sync(session: Session) -> None:
        for _ in range(2):
            session.execute(insert(Item).values(name=SECRET))

    with pytest.raises(IntegrityError):
        await run(database, add_twice if database.is_async else add_twice_sync)

    (unit,) = telemetry.unit_spans()
    attributes = dict(unit.attributes or {})
    assert attributes["uow.outcome"] == "rolled_back"
    assert "uow.commit.duration" not in attributes
    assert attributes["error.type"] == "sqlalchemy.exc.IntegrityError"
    assert unit.status.status_code is StatusCode.ERROR
    assert unit.status.description is not None
    assert unit.status.description.startswith("sqlalchemy.exc.IntegrityError")
    (exception,) = [e for e in unit.events if e.name == "exception"]
    assert (exception.attributes or {})["exception.type"] == "sqlalchemy.exc.IntegrityError"
    assert "add_twice" in str((exception.attributes or {})["exception.stacktrace"])
    assert SECRET not in all_text([unit])
    assert telemetry.counted("uow.units.rolled_back") == 1
    assert telemetry.counted("uow.units.committed") == 0
    (duration,) = telemetry.metrics()["uow.unit.duration"]
    assert dict(duration.attributes)["uow.outcome"] == "rolled_back"
    assert await counter(database) == 0


async def test_a_retried_unit_is_one_span_counting_its_retries(
    database: uow.Database, telemetry: Telemetry, request: pytest.FixtureRequest
) -> None:
    """The first attempt fails for real (locked file / serialization failure), the second commits."""
    target = target_of(request)
    attempts: list[int] = []
    engine = database.engine

    def interfere_sqlite() -> sqlite3.Connection:
        blocker = sqlite3.connect(str(target.url.database), timeout=0)
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock: the unit's UPDATE gets "database is locked"
        return blocker

    def interfere_postgres_sync() -> None:
        assert isinstance(engine, Engine)
        with engine.begin() as other:
            other.execute(bump())

    async def body(session: AsyncSession) -> None:
        attempts.append(len(attempts) + 1)
        await session.execute(select(Counter.value))  # the snapshot under REPEATABLE READ starts here
        if len(attempts) == 1:
            if target.dialect == "sqlite":
                blocker = interfere_sqlite()
                try:
                    await session.execute(bump())
                finally:
                    blocker.rollback()
                    blocker.close()
            else:
                assert isinstance(engine, AsyncEngine)
                async with engine.begin() as other:
                    await other.execute(bump())
        await session.execute(bump())

    def body_sync(session: Session) -> None:
        attempts.append(len(attempts) + 1)
        session.execute(select(Counter.value))
        if len(attempts) == 1:
            if target.dialect == "sqlite":
                blocker = interfere_sqlite()
                try:
                    session.execute(bump())
                finally:
                    blocker.rollback()
                    blocker.close()
            else:
                interfere_postgres_sync()
        session.execute(bump())

    options: dict[str, Any] = {"retry": uow.Retry(attempts=3, backoff=0.001)}
    if target.dialect == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    await run(database, body if database.is_async else body_sync, **options)

    assert attempts == [1, 2]
    units = telemetry.unit_spans()
    assert len(units) == 1, [s.name for s in units]
    (unit,) = units
    attributes = dict(unit.attributes or {})
    assert attributes["uow.retries"] == 1
    assert attributes["uow.outcome"] == "committed"
    assert unit.status.status_code is StatusCode.UNSET
    (retry,) = [e for e in unit.events if e.name == "uow.retry"]
    assert (retry.attributes or {})["uow.attempt"] == 1
    expected = "SQLSTATE 40001" if target.dialect == "postgresql" else "database is locked"
    assert expected in str((retry.attributes or {})["error.type"])
    # Both attempts' statements are under the one span (the interfering connection's are not the unit's).
    nested = [q for q in telemetry.query_spans() if q.parent is not None and q.parent.span_id == unit.context.span_id]
    selects = [q for q in nested if str((q.attributes or {})["db.statement"]).startswith("SELECT")]
    assert len(selects) == 2
    assert telemetry.counted("uow.units.retried") == 1
    assert telemetry.counted("uow.units.committed") == 1
    assert telemetry.counted("uow.units.rolled_back") == 0
    expected_value = 2 if target.dialect == "postgresql" else 1
    assert await counter(database) == expected_value


async def test_requires_new_is_a_child_span_and_a_savepoint_is_none(
    database: uow.Database, telemetry: Telemetry
) -> None:
    if database.is_async:

        @uow.unit_of_work(database=database, propagation="requires_new")
        async def audit(session: AsyncSession) -> None:
            await session.execute(select(1))

        @uow.unit_of_work(database=database, propagation="nested")
        async def step(session: AsyncSession) -> None:
            await session.execute(bump())

        @uow.unit_of_work(database=database)
        async def outer(session: AsyncSession) -> None:
            await step()
            await audit()

        await outer()
    else:

        @uow.unit_of_work(database=database, propagation="requires_new")
        def audit_sync(session: Session) -> None:
            session.execute(select(1))

        @uow.unit_of_work(database=database, propagation="nested")
        def step_sync(session: Session) -> None:
            session.execute(bump())

        @uow.unit_of_work(database=database)
        def outer_sync(session: Session) -> None:
            step_sync()
            audit_sync()

        outer_sync()

    units = {span.name.rsplit(".", 1)[-1].removesuffix("_sync"): span for span in telemetry.unit_spans()}
    assert sorted(units) == ["audit", "outer"]
    assert units["audit"].parent is not None
    assert units["audit"].parent.span_id == units["outer"].context.span_id
    assert dict(units["audit"].attributes or {})["uow.propagation"] == "requires_new"
    assert telemetry.counted("uow.units.committed") == 2
    assert await counter(database) == 1


async def test_a_read_only_unit_ends_read_only(database: uow.Database, telemetry: Telemetry) -> None:
    async def read(session: AsyncSession) -> int:
        return int((await session.execute(select(Counter.value))).scalar_one())

    def read_sync(session: Session) -> int:
        return int(session.execute(select(Counter.value)).scalar_one())

    assert await run(database, read if database.is_async else read_sync, read_only=True) == 0
    (unit,) = telemetry.unit_spans()
    attributes = dict(unit.attributes or {})
    assert attributes["uow.read_only"] is True
    assert attributes["uow.outcome"] == "read_only"
    assert telemetry.counted("uow.units.committed") == 0
    assert telemetry.counted("uow.units.rolled_back") == 0


async def test_a_span_started_in_the_unit_nests_under_it(database: uow.Database, telemetry: Telemetry) -> None:
    tracer = telemetry.tracer_provider.get_tracer("app")

    async def body(session: AsyncSession) -> None:
        with tracer.start_as_current_span("app.step"):
            await session.execute(select(1))

    def body_sync(session: Session) -> None:
        with tracer.start_as_current_span("app.step"):
            session.execute(select(1))

    await run(database, body if database.is_async else body_sync)
    (unit,) = telemetry.unit_spans()
    (step,) = [s for s in telemetry.finished() if s.name == "app.step"]
    assert step.parent is not None
    assert step.parent.span_id == unit.context.span_id


@pytest.mark.parametrize("database", ["postgresql+psycopg", "postgresql+asyncpg"], indirect=True)
async def test_unknown_when_the_connection_drops_before_commit_answers(
    database: uow.Database, telemetry: Telemetry, request: pytest.FixtureRequest
) -> None:
    """An admin kills the unit's server session just before COMMIT: the outcome cannot be known."""
    target = target_of(request)
    killer = create_engine(target.url.set(drivername="postgresql+psycopg"))
    try:

        def terminate(pid: int) -> None:
            with killer.begin() as connection:
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

        async def body(session: AsyncSession) -> None:
            await session.execute(bump())
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            terminate(int(pid))

        def body_sync(session: Session) -> None:
            session.execute(bump())
            terminate(int(session.execute(text("SELECT pg_backend_pid()")).scalar_one()))

        with pytest.raises(Exception) as raised:
            await run(database, body if database.is_async else body_sync)
        assert uow.is_transient(raised.value)
    finally:
        killer.dispose()
    (unit,) = telemetry.unit_spans()
    attributes = dict(unit.attributes or {})
    assert attributes["uow.outcome"] == "unknown"
    assert unit.status.status_code is StatusCode.ERROR
    assert await counter(database) == 0


def test_a_with_block_is_a_unit_span_named_unit_of_work(sqlite_db: uow.Database, telemetry: Telemetry) -> None:
    with uow.unit_of_work(database=sqlite_db) as session:
        session.execute(bump())
    (unit,) = telemetry.unit_spans()
    assert unit.name == "unit_of_work"
    assert dict(unit.attributes or {})["uow.outcome"] == "committed"


class Broken:
    """A sink that fails at every call: the units it watches must end exactly as they would without it."""

    def __init__(self, where: str) -> None:
        self.where = where

    def unit_started(self, unit: _observe.UnitRecord) -> object:
        if self.where == "start":
            raise RuntimeError("broken sink")
        return None

    def unit_retried(self, unit: _observe.UnitRecord, state: object, attempt: int, error: BaseException) -> None:
        raise RuntimeError("broken sink")

    def unit_finished(self, unit: _observe.UnitRecord, state: object) -> None:
        raise RuntimeError("broken sink")


@pytest.mark.parametrize("where", ["start", "finish"])
def test_a_failing_sink_changes_nothing_for_the_unit(
    sqlite_db: uow.Database, telemetry: Telemetry, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    @uow.unit_of_work(database=sqlite_db)
    def work(session: Session) -> None:
        session.execute(insert(Item).values(name="kept"))

    _observe.install("broken", Broken(where))
    try:
        work()
    finally:
        _observe.uninstall("broken")
    assert len(telemetry.unit_spans()) == 1  # the other sink saw the unit through
    assert any(
        "broken sink" not in r.getMessage() and "the unit is not affected" in r.getMessage() for r in caplog.records
    )
    with sqlite_db.engine.connect() as connection:  # type: ignore[union-attr]
        assert connection.execute(select(Item.name)).scalars().all() == ["kept"]


# -- on and off -------------------------------------------------------------------------------


def test_uninstrument_restores_no_observer(sqlite_db: uow.Database) -> None:
    assert _observe.observer is None
    seen = Telemetry()
    uow.otel.instrument(tracer_provider=seen.tracer_provider, meter_provider=seen.meter_provider)
    uow.logs.instrument()
    assert uow.otel.is_instrumented()
    assert uow.logs.is_instrumented()
    uow.otel.uninstrument()
    assert not uow.otel.is_instrumented()
    assert uow.logs.is_instrumented()
    assert _observe.observer is not None
    uow.logs.uninstrument()
    assert _observe.observer is None

    @uow.unit_of_work(database=sqlite_db)
    def work(session: Session) -> None:
        session.execute(select(1))

    work()
    assert seen.finished() == []
    assert seen.metrics() == {}


def test_instrument_twice_replaces_the_providers(sqlite_db: uow.Database) -> None:
    first, second = Telemetry(), Telemetry()

    @uow.unit_of_work(database=sqlite_db)
    def work(session: Session) -> None:
        session.execute(select(1))

    try:
        uow.otel.instrument(tracer_provider=first.tracer_provider, meter_provider=first.meter_provider)
        uow.otel.instrument(tracer_provider=second.tracer_provider, meter_provider=second.meter_provider)
        work()
    finally:
        uow.otel.uninstrument()
    assert first.unit_spans() == []
    assert len(second.unit_spans()) == 1
    assert _observe.observer is None


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=False
    )


def test_import_uow_imports_no_opentelemetry() -> None:
    done = run_python(
        """
        import sys
        import uow, uow.logs
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        assert not loaded, loaded
        print("clean")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "clean"


def test_uow_otel_without_opentelemetry_names_the_extra() -> None:
    done = run_python(
        """
        import sys
        class NoOpenTelemetry:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None
        sys.meta_path.insert(0, NoOpenTelemetry())
        import uow
        try:
            import uow.otel
        except uow.UowError as error:
            assert isinstance(error, ImportError)
            print(error)
        """
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'uow[otel]'" in done.stdout
    assert "opentelemetry-api" in done.stdout


# -- logging ----------------------------------------------------------------------------------


@pytest.fixture
def unit_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    uow.logs.instrument()
    caplog.set_level(logging.DEBUG, logger="uow")
    yield caplog
    uow.logs.uninstrument()
    assert _observe.observer is None


def unit_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "uow" and hasattr(r, "uow_outcome")]


def test_one_debug_record_per_owning_unit(sqlite_db: uow.Database, unit_log: pytest.LogCaptureFixture) -> None:
    @uow.unit_of_work(database=sqlite_db)
    def joined(session: Session) -> None:
        session.execute(bump())

    @uow.unit_of_work(database=sqlite_db)
    def owner(session: Session) -> None:
        joined()
        joined()

    owner()
    (record,) = unit_records(unit_log)
    assert record.levelno == logging.DEBUG
    fields = {k: v for k, v in vars(record).items() if k.startswith("uow_")}
    assert fields["uow_function"].endswith("owner")
    assert fields["uow_database"] == sqlite_db.name
    assert fields["uow_outcome"] == "committed"
    assert fields["uow_retries"] == 0
    assert fields["uow_duration"] > 0
    assert fields["uow_commit_duration"] > 0
    assert fields["uow_error"] is None
    assert "committed" in record.getMessage()


async def test_a_failed_unit_logs_its_error_class_not_its_parameters(
    async_sqlite_db: uow.Database, unit_log: pytest.LogCaptureFixture
) -> None:
    @uow.unit_of_work(database=async_sqlite_db)
    async def add_twice(session: AsyncSession) -> None:
        await session.execute(insert(Item).values(name=SECRET))
        await session.execute(insert(Item).values(name=SECRET))

    with pytest.raises(IntegrityError):
        await add_twice()
    (record,) = unit_records(unit_log)
    assert vars(record)["uow_outcome"] == "rolled_back"
    assert str(vars(record)["uow_error"]).startswith("sqlalchemy.exc.IntegrityError")
    assert SECRET not in record.getMessage()
    assert SECRET not in repr(vars(record))


def test_the_logger_level_still_decides(sqlite_db: uow.Database, caplog: pytest.LogCaptureFixture) -> None:
    uow.logs.instrument()
    try:
        caplog.set_level(logging.INFO, logger="uow")

        @uow.unit_of_work(database=sqlite_db)
        def work(session: Session) -> None:
            session.execute(select(1))

        work()
        assert unit_records(caplog) == []
        caplog.set_level(logging.DEBUG, logger="uow")
        work()
        assert len(unit_records(caplog)) == 1
    finally:
        uow.logs.uninstrument()


def test_logs_instrument_refuses_a_level_that_is_not_one(sqlite_db: uow.Database) -> None:
    with pytest.raises(uow.ConfigurationError, match="logging level"):
        uow.logs.instrument(level="debug")  # type: ignore[arg-type]
    assert _observe.observer is None
