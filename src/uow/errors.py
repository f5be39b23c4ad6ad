"""The exceptions uow raises itself. Every one of them derives from `UowError`."""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DatabaseUnavailable",
    "InjectionError",
    "MissingDependencyError",
    "NoActiveUnitOfWork",
    "OwnershipError",
    "PropagationError",
    "RollbackOnlyError",
    "UnitTimeoutError",
    "UowError",
]


class UowError(Exception):
    """Base class of every error raised by uow itself."""


class ConfigurationError(UowError):
    """The toolkit is set up wrongly: no database, a sync/async mismatch, a bad option."""


class InjectionError(UowError, TypeError):
    """A service cannot be matched to a parameter, or a parameter cannot be satisfied."""


class MissingDependencyError(ConfigurationError, ImportError):
    """An optional part of uow (an integration, `uow.otel`) was imported without the package it needs; the message names the extra to install."""


class NoActiveUnitOfWork(UowError):
    """Something that needs an active unit of work was used outside of one."""


class OwnershipError(UowError):
    """Code inside a unit of work committed, rolled back or closed the session the unit owns."""


class PropagationError(UowError):
    """A unit cannot start or join with the propagation or options it was given."""


class RollbackOnlyError(UowError):
    """The unit was marked rollback-only by a failed inner unit, so it rolled back instead of committing."""


class UnitTimeoutError(UowError, TimeoutError):
    """A unit declared with ``timeout=`` ran out of time; it was rolled back.

    ``what`` names the unit whose deadline expired (the owner's, when a joiner ran into it),
    ``timeout`` is its timeout and ``elapsed`` how long it had run, both in seconds.
    """

    def __init__(self, message: str, *, what: str, timeout: float, elapsed: float) -> None:
        super().__init__(message)
        self.what = what
        self.timeout = timeout
        self.elapsed = elapsed


class DatabaseUnavailable(UowError):
    """`Database.ping()` could not reach the database, or the round trip took longer than its timeout.

    ``database`` names it without credentials; ``timeout`` is the ping's timeout in seconds.
    """

    def __init__(self, message: str, *, database: str, timeout: float) -> None:
        super().__init__(message)
        self.database = database
        self.timeout = timeout
