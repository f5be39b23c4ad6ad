"""Testing support: every test runs in a transaction that is rolled back, with overrides and captured hooks.

Installing uow registers this module as a pytest plugin (entry point ``pytest11``, name ``uow.testing``).
It adds fixtures and changes nothing for tests that do not ask for them:

- ``uow_database``: the Database to bind (override it, set the ini option ``uow_database``, or
  call ``uow.configure()``);
- ``uow_transaction`` / ``uow_async_transaction``: run the test inside an outer transaction
  rolled back afterwards; every unit commits into a savepoint (``@pytest.mark.uow_commit`` opts out);
- ``uow_override``: ``uow_override(UserService, FakeUserService)`` for one test;
- ``uow_captured_hooks``: the ``on_commit`` hooks of the test, captured instead of run;
- ``uow_outbox_messages``: the `uow.outbox` messages of the test, captured instead of delivered.

The context managers behind them work without pytest: `bound_to_transaction`,
`capture_on_commit`, and `uow.override`.
"""

from __future__ import annotations

from uow._providers import override
from uow._testing import (
    CapturedCompletion,
    CapturedHooks,
    HookList,
    UnitLeftOpenError,
    bound_to_transaction,
    capture_on_commit,
)

__all__ = [
    "CapturedCompletion",
    "CapturedHooks",
    "HookList",
    "UnitLeftOpenError",
    "bound_to_transaction",
    "capture_on_commit",
    "override",
]

try:
    from uow._pytest_plugin import (
        pytest_addoption,
        pytest_configure,
        uow_async_transaction,
        uow_captured_hooks,
        uow_database,
        uow_outbox_messages,
        uow_override,
        uow_transaction,
    )
except ModuleNotFoundError as error:  # the context managers need no pytest; the fixtures do
    if error.name != "pytest":
        raise
else:
    __all__ += [
        "pytest_addoption",
        "pytest_configure",
        "uow_async_transaction",
        "uow_captured_hooks",
        "uow_database",
        "uow_outbox_messages",
        "uow_override",
        "uow_transaction",
    ]
