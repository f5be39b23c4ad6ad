"""One log record per finished owning unit on logger ``uow``: ``uow.logs.instrument()`` turns it on.

For services that use no OpenTelemetry: each record carries the unit's facts as ``extra=``
fields (``uow_function``, ``uow_database``, ``uow_outcome``, ``uow_duration``, ``uow_retries``,
``uow_commit_duration``, ``uow_error``), ready for a JSON formatter. The error is named by its
class and the database's code, never by its message, and no bound parameter is ever logged.

It is opt-in, like `uow.otel`: without ``instrument()`` a unit does no logging work at all. Once
on, the logger's level still decides: a record is made only when ``uow`` is enabled for ``level``.
"""

from __future__ import annotations

import logging

from uow import _observe
from uow._observe import UnitRecord

__all__ = ["instrument", "is_instrumented", "uninstrument"]

_KEY = "logs"

logger = logging.getLogger("uow")


def instrument(level: int = logging.DEBUG) -> None:
    """Log every owning unit that begins from now on when it ends, at `level` (DEBUG unless told)."""
    if not isinstance(level, int) or isinstance(level, bool):
        from uow.errors import ConfigurationError

        raise ConfigurationError(
            f"uow.logs.instrument(level={level!r}): level must be a logging level such as logging.INFO"
        )
    _observe.install(_KEY, _LogSink(level))


def uninstrument() -> None:
    """Stop logging units (units already running still log when they end)."""
    _observe.uninstall(_KEY)


def is_instrumented() -> bool:
    """Whether `instrument` is in force."""
    return _observe.observer is not None and any(isinstance(sink, _LogSink) for sink in _observe.observer.sinks)


class _LogSink:
    """Log records for `uow._observe`."""

    def __init__(self, level: int) -> None:
        self.level = level

    def unit_started(self, unit: UnitRecord) -> object:
        return None

    def unit_retried(self, unit: UnitRecord, state: object, attempt: int, error: BaseException) -> None:
        # Each retry is already logged at WARNING, with the error's class and code, by the retry loop.
        return

    def unit_finished(self, unit: UnitRecord, state: object) -> None:
        if not logger.isEnabledFor(self.level):
            return
        logger.log(
            self.level,
            "uow: %s %s in %.1f ms (%d retries)%s",
            unit.name,
            unit.outcome.replace("_", " "),
            unit.duration * 1000,
            unit.retries,
            f" after {unit.error_description}" if unit.error_description is not None else "",
            extra={
                "uow_function": unit.name,
                "uow_database": unit.database_name,
                "uow_outcome": unit.outcome,
                "uow_duration": unit.duration,
                "uow_retries": unit.retries,
                "uow_commit_duration": unit.commit_seconds,
                "uow_error": unit.error_description,
            },
        )
