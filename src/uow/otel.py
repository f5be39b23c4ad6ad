"""OpenTelemetry spans and metrics for units of work: ``uow.otel.instrument()`` turns them on.

One span per owning unit (the unit that began the transaction; units that join it, savepoints and
units on a caller's session belong to their owner's span), current while the unit runs, so the
SQLAlchemy instrumentation's query spans and any span started in the function nest under it.
Metrics: ``uow.units.committed``, ``uow.units.rolled_back``, ``uow.units.retried`` (counters) and
``uow.unit.duration`` (a histogram, in seconds). docs/observability.md lists every attribute.

Needs ``opentelemetry-api`` (``pip install 'uow[otel]'``); the SDK and exporters are the
application's choice. Without ``instrument()``, uow does no OpenTelemetry work at all.
"""

from __future__ import annotations

import traceback

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as missing:  # pragma: no cover - the test environment has it; tests import this in a subprocess
    from uow.errors import MissingDependencyError

    raise MissingDependencyError(
        "uow.otel needs the OpenTelemetry API: install it with pip install 'uow[otel]' (or opentelemetry-api)"
    ) from missing

from uow import __version__, _observe
from uow._observe import COMMITTED, ROLLED_BACK, UNKNOWN, UnitRecord
from uow._retry import describe_error

__all__ = ["instrument", "is_instrumented", "uninstrument"]

_KEY = "otel"

ATTRIBUTE_FUNCTION = "code.function.name"
ATTRIBUTE_DATABASE = "uow.database"
ATTRIBUTE_DB_SYSTEM = "db.system.name"
ATTRIBUTE_DB_NAMESPACE = "db.namespace"
ATTRIBUTE_PROPAGATION = "uow.propagation"
ATTRIBUTE_READ_ONLY = "uow.read_only"
ATTRIBUTE_ISOLATION_LEVEL = "uow.isolation_level"
ATTRIBUTE_OUTCOME = "uow.outcome"
ATTRIBUTE_RETRIES = "uow.retries"
ATTRIBUTE_COMMIT_DURATION = "uow.commit.duration"
ATTRIBUTE_ERROR_TYPE = "error.type"


def instrument(
    tracer_provider: trace.TracerProvider | None = None, meter_provider: metrics.MeterProvider | None = None
) -> None:
    """Give every owning unit that begins from now on a span and metrics.

    Without providers, the global ones (``trace.set_tracer_provider`` / ``metrics.set_meter_provider``)
    are used. Calling it again replaces the providers; `uninstrument` turns it off.
    """
    _observe.install(_KEY, _OtelSink(tracer_provider, meter_provider))


def uninstrument() -> None:
    """Stop: units that begin from now on get no span and count in no metric (running ones still finish theirs)."""
    _observe.uninstall(_KEY)


def is_instrumented() -> bool:
    """Whether `instrument` is in force."""
    return _observe.observer is not None and any(isinstance(sink, _OtelSink) for sink in _observe.observer.sinks)


class _Span:
    """A unit's span and the context token that makes it current, while the unit runs."""

    __slots__ = ("span", "token")

    def __init__(self, span: trace.Span, token: object) -> None:
        self.span = span
        self.token = token


class _OtelSink:
    """Spans and metrics for `uow._observe`."""

    def __init__(self, tracer_provider: trace.TracerProvider | None, meter_provider: metrics.MeterProvider | None):
        self.tracer = trace.get_tracer("uow", __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter("uow", __version__, meter_provider=meter_provider)
        self.committed = meter.create_counter(
            "uow.units.committed", unit="{unit}", description="Owning units of work that committed"
        )
        self.rolled_back = meter.create_counter(
            "uow.units.rolled_back", unit="{unit}", description="Owning units of work that rolled back"
        )
        self.retried = meter.create_counter(
            "uow.units.retried",
            unit="{attempt}",
            description="Attempts of units of work run again after a transient error",
        )
        self.duration = meter.create_histogram(
            "uow.unit.duration",
            unit="s",
            description="Duration of owning units of work, retries and commit included",
        )

    def unit_started(self, unit: UnitRecord) -> object:
        attributes: dict[str, str | bool] = {
            ATTRIBUTE_FUNCTION: unit.name,
            ATTRIBUTE_DATABASE: unit.database_name,
            ATTRIBUTE_PROPAGATION: unit.propagation,
            ATTRIBUTE_READ_ONLY: unit.read_only,
        }
        engine = unit.database.engine if unit.database is not None else None
        if engine is not None:
            attributes[ATTRIBUTE_DB_SYSTEM] = engine.dialect.name
            if engine.url.database:
                attributes[ATTRIBUTE_DB_NAMESPACE] = engine.url.database
        if unit.isolation_level is not None:
            attributes[ATTRIBUTE_ISOLATION_LEVEL] = unit.isolation_level
        span = self.tracer.start_span(unit.name, kind=SpanKind.INTERNAL, attributes=attributes)
        return _Span(span, otel_context.attach(trace.set_span_in_context(span)))

    def unit_retried(self, unit: UnitRecord, state: object, attempt: int, error: BaseException) -> None:
        assert isinstance(state, _Span)
        # Never the error's message: SQLAlchemy's carries the statement's bound parameters.
        state.span.add_event("uow.retry", {"uow.attempt": attempt, ATTRIBUTE_ERROR_TYPE: describe_error(error)})
        self.retried.add(1, {ATTRIBUTE_DATABASE: unit.database_name})

    def unit_finished(self, unit: UnitRecord, state: object) -> None:
        assert isinstance(state, _Span)
        span = state.span
        try:
            span.set_attribute(ATTRIBUTE_OUTCOME, unit.outcome)
            span.set_attribute(ATTRIBUTE_RETRIES, unit.retries)
            if unit.commit_seconds is not None:
                span.set_attribute(ATTRIBUTE_COMMIT_DURATION, unit.commit_seconds)
            if unit.error is not None and unit.outcome != COMMITTED:
                _record_error(span, unit.error, unit.error_description or type(unit.error).__name__)
            elif unit.outcome == UNKNOWN:
                span.set_status(Status(StatusCode.ERROR, "COMMIT's result is unknown"))
            span.end()
        finally:
            otel_context.detach(state.token)  # type: ignore[arg-type]
        database = {ATTRIBUTE_DATABASE: unit.database_name}
        if unit.outcome == COMMITTED:
            self.committed.add(1, database)
        elif unit.outcome == ROLLED_BACK:
            self.rolled_back.add(1, database)
        self.duration.record(unit.duration, {**database, ATTRIBUTE_OUTCOME: unit.outcome})


def _record_error(span: trace.Span, error: BaseException, description: str) -> None:
    """Error status and an exception event, without the error's message (it may quote bound parameters)."""
    span.set_attribute(ATTRIBUTE_ERROR_TYPE, _class_path(error))
    span.set_status(Status(StatusCode.ERROR, description))
    span.add_event(
        "exception",
        {
            "exception.type": _class_path(error),
            "exception.message": description,
            "exception.stacktrace": "".join(traceback.format_list(traceback.extract_tb(error.__traceback__))),
        },
    )


def _class_path(error: BaseException) -> str:
    cls = type(error)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
