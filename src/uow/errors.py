"""The exceptions uow raises itself. Every one of them derives from `UowError`."""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "InjectionError",
    "MissingDependencyError",
    "NoActiveUnitOfWork",
    "OwnershipError",
    "PropagationError",
    "RollbackOnlyError",
    "UowError",
]


class UowError(Exception):
    """Base class of every error raised by uow itself."""


class ConfigurationError(UowError):
    """The toolkit is set up wrongly: no database, a sync/async mismatch, a bad option."""


class InjectionError(UowError, TypeError):
    """A service cannot be matched to a parameter, or a parameter cannot be satisfied."""


class MissingDependencyError(UowError, ImportError):
    """An integration module was imported without the package it integrates; the message names the extra to install."""


class NoActiveUnitOfWork(UowError):
    """Something that needs an active unit of work was used outside of one."""


class OwnershipError(UowError):
    """Code inside a unit of work committed, rolled back or closed the session the unit owns."""


class PropagationError(UowError):
    """A unit cannot start or join with the propagation or options it was given."""


class RollbackOnlyError(UowError):
    """The unit was marked rollback-only by a failed inner unit, so it rolled back instead of committing."""
