"""uow: a decorator-based unit of work for SQLAlchemy 2.x, sync and async.

``@with_services(UserService)`` opens a session (or joins the active one), builds the
services the function asks for, and commits or rolls back when it returns or raises.
"""

from __future__ import annotations

from uow._ambient import (
    before_commit,
    current_session,
    current_session_async,
    on_commit,
    on_completion,
    on_rollback,
    set_rollback_only,
)
from uow._database import Database, configure, get_default_database
from uow._decorators import provide_services, unit_of_work, with_services
from uow._markers import injected
from uow._providers import override
from uow._retry import Retry, is_transient
from uow._stack import Propagation
from uow._transaction import Outcome
from uow.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    InjectionError,
    MissingDependencyError,
    NoActiveUnitOfWork,
    OwnershipError,
    PropagationError,
    RollbackOnlyError,
    UnitTimeoutError,
    UowError,
)

__all__ = [
    "ConfigurationError",
    "Database",
    "DatabaseUnavailable",
    "InjectionError",
    "MissingDependencyError",
    "NoActiveUnitOfWork",
    "Outcome",
    "OwnershipError",
    "Propagation",
    "PropagationError",
    "Retry",
    "RollbackOnlyError",
    "UnitTimeoutError",
    "UowError",
    "before_commit",
    "configure",
    "current_session",
    "current_session_async",
    "get_default_database",
    "injected",
    "is_transient",
    "on_commit",
    "on_completion",
    "on_rollback",
    "override",
    "provide_services",
    "set_rollback_only",
    "unit_of_work",
    "with_services",
]

__version__ = "0.1.0"
