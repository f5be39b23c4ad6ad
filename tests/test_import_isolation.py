"""`import uow` pulls in no framework, no task queue, no CLI library and no OpenTelemetry.

Each check runs in a fresh interpreter, so what other tests imported does not count.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = (
    "litestar",
    "fastapi",
    "starlette",
    "flask",
    "click",
    "typer",
    "saq",
    "arq",
    "celery",
    "apscheduler",
    "advanced_alchemy",
    "opentelemetry",
)


def loaded_after(statement: str) -> set[str]:
    """Top-level names of every module in sys.modules after `statement` in a fresh interpreter."""
    code = f"import sys\n{statement}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=True)
    return set(done.stdout.split())


def test_import_uow_loads_no_optional_integration() -> None:
    loaded = loaded_after("import uow")
    assert "uow" in loaded and "sqlalchemy" in loaded
    assert loaded & set(OPTIONAL) == set()


def test_the_public_names_load_nothing_optional_either() -> None:
    # Touching every public name would trip a lazy import that reaches for a framework.
    loaded = loaded_after("import uow\nfor name in uow.__all__: getattr(uow, name)")
    assert loaded & set(OPTIONAL) == set()


def test_the_check_sees_a_framework_when_one_is_imported() -> None:
    pytest.importorskip("fastapi")
    assert "fastapi" in loaded_after("import uow.integrations.fastapi") & set(OPTIONAL)
