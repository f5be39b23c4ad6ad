"""The error types, and what ``import uow`` needs and loads."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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


def test_runtime_dependencies_include_greenlet() -> None:
    # uow imports sqlalchemy.ext.asyncio at import time; SQLAlchemy 2.1 only brings greenlet with [asyncio].
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    dependencies = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.M | re.S)
    assert dependencies is not None
    assert re.search(r'"sqlalchemy\[asyncio\]>=2\.0"', dependencies.group(1))
