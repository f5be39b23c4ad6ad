"""What observability costs a unit of work: nothing when it is off, and how much when it is on.

Each variant inserts a row and commits it through ``@with_services`` (or by hand), in one
in-memory SQLite database per uow copy. The variants:

- ``hand-written`` and its A/A control: no uow at all, the noise floor of the run;
- ``uow before the seam``: uow as it was before `uow._observe` existed, loaded from git (the
  parent of the commit that added ``src/uow/_observe.py``) as a package of its own, ``uow_seamless``;
  left out, with a note, where git or that history is not at hand;
- ``observability off``: this tree, nothing installed (what every user who does not opt in runs);
  compared with the copy before the seam, it is the cost of the seam itself;
- ``uow.logs on`` (logger filtered above the level, then emitting to a handler that drops records),
  ``uow.otel on`` (the SDK, a simple span processor into an in-memory exporter, an in-memory metric
  reader) and both: each compared with ``observability off``.

Installing is process-wide, so each variant sets the observer it stands for before its unit (the
hand-written and seam-free variants set it too, so every variant pays that store).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from io import BytesIO
from pathlib import Path
from types import ModuleType
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session, SessionEvents

import uow.logs
import uow.otel
from benchmarks.common import (
    AsyncItems,
    Items,
    aiosqlite_engine,
    async_factory,
    clear_async,
    clear_sync,
    sqlite_engine,
    sync_factory,
)
from benchmarks.harness import Case, Setup, Variant
from uow import Database, _observe, with_services

ROOT = Path(__file__).resolve().parent.parent
SEAMLESS = "uow_seamless"


# -- uow before the seam ----------------------------------------------------------------------


def _git(*args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=True, timeout=60).stdout


@contextmanager
def seam_free_uow() -> Iterator[tuple[ModuleType | None, str]]:
    """uow as it was before `uow._observe`, importable as `uow_seamless` while the case runs; or None and why not.

    Its Session-class listeners fire for every session in the process, so they are removed
    (and the copy forgotten) when the case is over: nothing of it outlives the case.
    """
    try:
        added = _git("log", "--diff-filter=A", "--format=%H", "--", "src/uow/_observe.py").split()
        if not added:
            yield None, "git history without the commit that added src/uow/_observe.py"
            return
        ref = added[-1].decode() + "^"
        short = _git("rev-parse", "--short", ref).decode().strip()
        archive = _git("archive", "--format=tar", ref, "src/uow")
    except (OSError, subprocess.SubprocessError) as error:
        yield None, f"git unavailable ({type(error).__name__})"
        return
    where = Path(tempfile.mkdtemp(prefix="uow-bench-seamless-"))
    try:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            if hasattr(tarfile, "data_filter"):  # 3.12+, and security releases of 3.10 / 3.11
                tar.extractall(where, filter="data")
            else:  # pragma: no cover
                tar.extractall(where)  # our own repository's tree
        package = where / SEAMLESS
        shutil.move(str(where / "src" / "uow"), package)
        imports = re.compile(r"^(\s*)(from|import) uow(?=[.\s])", re.MULTILINE)
        for source in package.rglob("*.py"):
            text = source.read_text(encoding="utf-8")
            source.write_text(imports.sub(rf"\1\2 {SEAMLESS}", text), encoding="utf-8")
        sys.path.insert(0, str(where))
        try:
            yield importlib.import_module(SEAMLESS), short
        finally:
            sys.path.remove(str(where))
            _forget(SEAMLESS)
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _forget(package: str) -> None:
    """Remove the copy's listeners on the Session class and drop its modules."""
    names = [n for n in dir(SessionEvents) if not n.startswith("_") and n != "dispatch"]
    modules = [m for key, m in list(sys.modules.items()) if key == package or key.startswith(package + ".")]
    for module in modules:
        for value in list(vars(module).values()):
            if inspect.isfunction(value) and value.__module__ == module.__name__:
                for name in names:
                    if event.contains(Session, name, value):
                        event.remove(Session, name, value)
        del sys.modules[module.__name__]


# -- observers ----------------------------------------------------------------------------------


class Observers:
    """The observer each variant stands for, made once with the public instrument() calls."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        self.logger = logging.getLogger("uow")
        self._saved = (self.logger.level, self.logger.propagate, list(self.logger.handlers))
        # Records at INFO reach a handler that drops them; DEBUG records are filtered out by the level.
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        self.logger.handlers = [logging.NullHandler()]
        self.logs_filtered = self._installed(lambda: uow.logs.instrument(logging.DEBUG))
        self.logs_emitted = self._installed(lambda: uow.logs.instrument(logging.INFO))
        self.otel = self._installed(lambda: uow.otel.instrument(tracer_provider, meter_provider))

        def both() -> None:
            uow.otel.instrument(tracer_provider, meter_provider)
            uow.logs.instrument(logging.INFO)

        self.both = self._installed(both)

    @staticmethod
    def _installed(install: Any) -> _observe.Observer:
        install()
        observer = _observe.observer
        uow.otel.uninstrument()
        uow.logs.uninstrument()
        assert observer is not None and _observe.observer is None
        return observer

    def close(self) -> None:
        _observe.observer = None
        level, propagate, handlers = self._saved
        self.logger.setLevel(level)
        self.logger.propagate = propagate
        self.logger.handlers = handlers


def _set(observer: _observe.Observer | None) -> None:
    _observe.observer = observer


# -- the cases ----------------------------------------------------------------------------------


@contextmanager
def sync_sqlite() -> Iterator[Setup]:
    with _sync_variants(insert=True) as setup:
        yield setup


@contextmanager
def sync_empty() -> Iterator[Setup]:
    """Units that run no statement: what is left is uow's own work, so the seam's share is at its largest."""
    with _sync_variants(insert=False) as setup:
        yield setup


@contextmanager
def _sync_variants(*, insert: bool) -> Iterator[Setup]:
    with contextlib.ExitStack() as stack:
        yield _sync_setup(stack, insert=insert)


def _sync_setup(stack: contextlib.ExitStack, *, insert: bool) -> Setup:
    engine, seamless_engine = sqlite_engine(), sqlite_engine()
    factory = sync_factory(engine)
    db = Database(session_factory=factory)
    observers = Observers()
    seamless, ref = stack.enter_context(seam_free_uow())

    name = "x" if insert else ""

    def hand() -> None:
        _set(None)
        with factory() as session:
            items = Items(session)
            if name:
                items.add(name)
            session.commit()

    @with_services(Items, database=db)
    def decorated(items: Items) -> None:
        if name:
            items.add(name)

    def run_with(observer: _observe.Observer | None) -> Any:
        def body() -> None:
            _set(observer)
            decorated()

        return body

    variants = [
        Variant("hand-written", hand, kind="baseline"),
        Variant("hand-written again (A/A control)", hand, kind="control"),
    ]
    off_baseline = "hand-written"
    notes: list[str] = []
    if seamless is not None:
        seamless_db = seamless.Database(session_factory=sync_factory(seamless_engine))

        @seamless.with_services(Items, database=seamless_db)
        def decorated_seamless(items: Items) -> None:
            if name:
                items.add(name)

        def before_seam() -> None:
            _set(None)
            decorated_seamless()

        variants.append(Variant(f"uow before the seam ({ref})", before_seam, kind="alternative"))
        off_baseline = f"uow before the seam ({ref})"
    else:
        notes.append(f"uow before the seam left out: {ref}")
    variants += [
        Variant("observability off", run_with(None), baseline=off_baseline, kind="alternative"),
        Variant(
            "uow.logs on, DEBUG filtered out",
            run_with(observers.logs_filtered),
            baseline="observability off",
            kind="alternative",
        ),
        Variant(
            "uow.logs on, one record per unit",
            run_with(observers.logs_emitted),
            baseline="observability off",
            kind="alternative",
        ),
        Variant(
            "uow.otel on (SDK, in-memory)", run_with(observers.otel), baseline="observability off", kind="alternative"
        ),
        Variant("uow.otel and uow.logs on", run_with(observers.both), baseline="observability off", kind="alternative"),
    ]

    def reset() -> None:
        _set(None)
        clear_sync(engine)
        clear_sync(seamless_engine)
        observers.spans.clear()

    stack.callback(seamless_engine.dispose)
    stack.callback(engine.dispose)
    stack.callback(observers.close)
    return Setup(variants, reset=reset, notes=notes)


@asynccontextmanager
async def async_aiosqlite() -> AsyncIterator[Setup]:
    with contextlib.ExitStack() as stack:
        async with aiosqlite_engine() as engine, aiosqlite_engine() as seamless_engine:
            yield _async_variants(stack, engine, seamless_engine)


def _async_variants(stack: contextlib.ExitStack, engine: AsyncEngine, seamless_engine: AsyncEngine) -> Setup:
    factory = async_factory(engine)
    db = Database(session_factory=factory)
    observers = Observers()
    seamless, ref = stack.enter_context(seam_free_uow())

    async def hand() -> None:
        _set(None)
        async with factory() as session:
            AsyncItems(session).add("x")
            await session.commit()

    @with_services(AsyncItems, database=db)
    async def decorated(items: AsyncItems) -> None:
        items.add("x")

    def run_with(observer: _observe.Observer | None) -> Any:
        async def body() -> None:
            _set(observer)
            await decorated()

        return body

    variants = [
        Variant("hand-written", hand, kind="baseline"),
        Variant("hand-written again (A/A control)", hand, kind="control"),
    ]
    off_baseline = "hand-written"
    notes: list[str] = []
    if seamless is not None:
        seamless_db = seamless.Database(session_factory=async_factory(seamless_engine))

        @seamless.with_services(AsyncItems, database=seamless_db)
        async def decorated_seamless(items: AsyncItems) -> None:
            items.add("x")

        async def before_seam() -> None:
            _set(None)
            await decorated_seamless()

        variants.append(Variant(f"uow before the seam ({ref})", before_seam, kind="alternative"))
        off_baseline = f"uow before the seam ({ref})"
    else:
        notes.append(f"uow before the seam left out: {ref}")
    variants += [
        Variant("observability off", run_with(None), baseline=off_baseline, kind="alternative"),
        Variant(
            "uow.logs on, DEBUG filtered out",
            run_with(observers.logs_filtered),
            baseline="observability off",
            kind="alternative",
        ),
        Variant(
            "uow.logs on, one record per unit",
            run_with(observers.logs_emitted),
            baseline="observability off",
            kind="alternative",
        ),
        Variant(
            "uow.otel on (SDK, in-memory)", run_with(observers.otel), baseline="observability off", kind="alternative"
        ),
        Variant("uow.otel and uow.logs on", run_with(observers.both), baseline="observability off", kind="alternative"),
    ]

    async def reset() -> None:
        _set(None)
        await clear_async(engine)
        await clear_async(seamless_engine)
        observers.spans.clear()

    stack.callback(observers.close)
    return Setup(variants, reset=reset, notes=notes)


_MEASURES = (
    "one unit of work that inserts a row and commits: by hand; through uow as it was before the "
    "observability seam; through this uow with nothing installed; with uow.logs, uow.otel, or both installed"
)

CASES = [
    Case(
        "observe-sync-sqlite",
        "observability, sync, in-memory SQLite",
        _MEASURES,
        sync_sqlite,
        False,
        40,
        "unit",
        ("opentelemetry.sdk",),
    ),
    Case(
        "observe-sync-empty",
        "observability, sync, a unit that runs no statement",
        "the same variants around a unit whose body adds nothing, so uow's own work is most of what is timed",
        sync_empty,
        False,
        400,
        "unit",
        ("opentelemetry.sdk",),
    ),
    Case(
        "observe-async-aiosqlite",
        "observability, async, in-memory aiosqlite",
        _MEASURES,
        async_aiosqlite,
        True,
        200,
        "unit",
        ("opentelemetry.sdk",),
    ),
]
