"""Each integration imports its own framework only, and `import uow` imports none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = {"litestar", "fastapi", "starlette", "flask", "advanced_alchemy"}


def imported_frameworks(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return set(result.stdout.split()) & FRAMEWORKS


@pytest.mark.parametrize(
    ("module", "framework"),
    [
        ("uow", None),
        ("uow.integrations", None),
        ("uow.integrations._request", None),
        ("uow.integrations.starlette", None),
        ("uow.integrations.fastapi", "fastapi"),
        ("uow.integrations.litestar", "litestar"),
        ("uow.integrations.flask", "flask"),
    ],
)
def test_imports_only_its_framework(module: str, framework: str | None) -> None:
    # What the framework pulls in itself is allowed (litestar imports advanced_alchemy, for one).
    allowed = imported_frameworks(framework) if framework else set()
    assert imported_frameworks(module) <= allowed
