"""`Retry` policies and `is_transient`: which failures are worth running a whole unit again for.

Also how failures are named without their text: `describe_error` (for logs and spans) and
`sqlstate` (the SQLSTATE of a PostgreSQL driver's error).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError

from uow.errors import ConfigurationError, UnitTimeoutError

__all__ = ["Retry", "describe_error", "is_transient", "parse_retry", "sqlstate"]

_PG_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected
_MYSQL_TRANSIENT_CODES = frozenset({1213, 1205})  # ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT
_SQLITE_TRANSIENT_MESSAGES = ("database is locked", "database table is locked")


def is_transient(exc: BaseException) -> bool:
    """True for failures worth re-running the whole unit for.

    Serialization failures and deadlocks (PostgreSQL 40001/40P01, MySQL/MariaDB 1213/1205),
    SQLite's "database is locked", and connections the driver reported as dropped.
    A constraint violation, a unit that ran out of time (`UnitTimeoutError`), or anything else, is not
    transient.
    """
    if isinstance(exc, UnitTimeoutError):
        return False
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:  # pyright: ignore[reportAttributeAccessIssue]
        return True
    return any(_is_transient_driver_error(error) for error in _driver_errors(exc))


def _driver_errors(exc: BaseException) -> Iterator[BaseException]:
    """The exception, the driver error SQLAlchemy wrapped, and what that driver error was raised from."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        orig = getattr(error, "orig", None)
        pending.extend([orig if isinstance(orig, BaseException) else None, error.__cause__])


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE a PostgreSQL driver's error carries, else None.

    asyncpg and psycopg 3 call it ``sqlstate``, psycopg2 ``pgcode``.
    """
    for attribute in ("sqlstate", "pgcode"):
        code = getattr(error, attribute, None)
        if isinstance(code, str) and code:
            return code
    return None


def _is_transient_driver_error(error: BaseException) -> bool:
    if sqlstate(error) in _PG_TRANSIENT_SQLSTATES:
        return True
    module = type(error).__module__
    if module.startswith(("pymysql", "aiomysql", "asyncmy", "MySQLdb", "mysql")) or _looks_like_mysql(error):
        args = getattr(error, "args", ())
        if args and isinstance(args[0], int) and args[0] in _MYSQL_TRANSIENT_CODES:
            return True
    if module.startswith(("sqlite3", "aiosqlite")) or type(error).__name__ == "OperationalError":
        message = str(error).lower()
        if any(text in message for text in _SQLITE_TRANSIENT_MESSAGES):
            return True
    return False


def describe_error(exc: BaseException) -> str:
    """What failed, for a log line: the error classes and the database's code, never the message.

    A SQLAlchemy error's text holds the SQL and its bound parameters (``[parameters: {...}]``), and a
    driver's message can quote values too, so neither goes into a log: ``sqlalchemy.exc.OperationalError
    (psycopg.errors.SerializationFailure, SQLSTATE 40001)``.
    """
    parts: list[str] = []
    orig = getattr(exc, "orig", None)
    driver = orig if isinstance(orig, BaseException) else None
    if driver is not None:
        parts.append(_class_path(driver))
    code = _error_code(driver) if driver is not None else None
    if code is None:
        code = _error_code(exc)
    if code is not None:
        parts.append(code)
    known = _known_transient_message(driver if driver is not None else exc)
    if known is not None:
        parts.append(known)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:  # pyright: ignore[reportAttributeAccessIssue]
        parts.append("connection invalidated")
    return _class_path(exc) + (f" ({', '.join(parts)})" if parts else "")


def _known_transient_message(error: BaseException) -> str | None:
    """SQLite's "database is locked": a fixed text with nothing of the statement in it."""
    message = str(error).strip().lower()
    return message if message in _SQLITE_TRANSIENT_MESSAGES else None


def _class_path(error: BaseException) -> str:
    cls = type(error)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _error_code(error: BaseException, depth: int = 0) -> str | None:
    code = sqlstate(error)
    if code is not None:
        return f"SQLSTATE {code}"
    name = getattr(error, "sqlite_errorname", None)  # sqlite3 on Python 3.11+
    if isinstance(name, str):
        return name
    args = getattr(error, "args", ())
    if args and isinstance(args[0], int) and not isinstance(args[0], bool):  # MySQL / MariaDB drivers
        return f"error {args[0]}"
    cause = error.__cause__  # SQLAlchemy's async adapters raise their own class from the driver's
    if cause is not None and depth < 3:
        return _error_code(cause, depth + 1)
    return None


def _looks_like_mysql(error: BaseException) -> bool:
    # SQLAlchemy's async adapters re-raise driver errors as their own classes carrying the driver's args.
    return "mysql" in type(error).__module__ or "asyncmy" in repr(type(error))


@dataclass(frozen=True)
class Retry:
    """Run a unit that owns its transaction again when it fails with a transient error.

    Waits ``backoff * 2**(attempt-1)`` seconds (at most ``max_backoff``) between attempts,
    scattered by jitter so that competing units do not collide again in step.
    """

    attempts: int = 3
    backoff: float = 0.05
    max_backoff: float = 2.0
    jitter: bool = True
    retry_on: Callable[[BaseException], bool] = field(default=is_transient)

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ConfigurationError(
                f"Retry(attempts={self.attempts!r}): attempts must be a whole number of at least 1 (1 means no retry)"
            )
        if self.backoff < 0 or self.max_backoff < 0:
            raise ConfigurationError(
                f"Retry(backoff={self.backoff!r}, max_backoff={self.max_backoff!r}): delays cannot be negative"
            )
        if not callable(self.retry_on):
            raise ConfigurationError("Retry(retry_on=...) needs a callable taking the exception and returning bool")

    def should_retry(self, exc: BaseException, attempt: int) -> bool:
        """Whether to run again after `attempt` (1-based) failed with `exc`."""
        return attempt < self.attempts and isinstance(exc, Exception) and bool(self.retry_on(exc))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed `attempt` (1-based)."""
        delay = float(min(self.max_backoff, self.backoff * (2 ** (attempt - 1))))
        if self.jitter:
            delay *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not cryptography
        return delay


def parse_retry(retry: Retry | int | None, *, label: str) -> Retry | None:
    """`retry=` as given to a decorator: a `Retry`, an attempt count, or None."""
    if retry is None or isinstance(retry, Retry):
        return retry
    if isinstance(retry, int) and not isinstance(retry, bool):
        if retry < 1:
            raise ConfigurationError(f"{label}: retry={retry} must be at least 1 (the number of attempts)")
        return Retry(attempts=retry)
    raise ConfigurationError(f"{label}: retry= needs a uow.Retry(...) or a number of attempts, got {retry!r}")
