"""The error types: one base class, and the standard types callers may already catch."""

from __future__ import annotations

import subprocess
import sys

import pytest

import uow


@pytest.mark.parametrize(
    "error",
    [
        uow.ConfigurationError,
        uow.InjectionError,
        uow.NoActiveUnitOfWork,
        uow.PropagationError,
        uow.RollbackOnlyError,
    ],
)
def test_every_error_derives_from_uow_error(error: type[Exception]) -> None:
    assert issubclass(error, uow.UowError)
    assert issubclass(error, Exception)


def test_injection_error_is_a_type_error() -> None:
    assert issubclass(uow.InjectionError, TypeError)


def test_import_uow_loads_no_framework() -> None:
    frameworks = ["litestar", "fastapi", "starlette", "flask", "click", "typer", "saq", "arq", "celery", "apscheduler"]
    code = f"import sys, uow; print(','.join(m for m in {frameworks!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
