"""Packaging: users get extras for frameworks and drivers only, and an integration without its framework says which extra.

The wheel itself is built and installed into a fresh virtual environment by .ci/wheel-check in CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

import dev

ROOT = Path(__file__).resolve().parents[1]

# integration module, a package it needs, how the message names the framework (the extra is the module's name)
INTEGRATIONS = [
    # the middleware runs on anyio, which Starlette brings
    ("starlette", "anyio", "Starlette"),
    ("fastapi", "anyio", "FastAPI"),
    ("litestar", "litestar", "Litestar"),
    ("fastapi", "fastapi", "FastAPI"),
    ("flask", "flask", "Flask"),
    ("click", "click", "click"),
    ("typer", "typer", "typer"),
]


def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def run_without(blocked: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter in which importing `blocked` fails as if it were not installed."""
    prelude = f"import sys; sys.modules[{blocked!r}] = None\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, env=env, check=False, timeout=60
    )


@pytest.mark.parametrize(("module", "package", "display"), INTEGRATIONS)
def test_an_integration_without_its_framework_names_the_extra(module: str, package: str, display: str) -> None:
    code = f"""
import uow
try:
    import uow.integrations.{module}
except uow.MissingDependencyError as error:
    assert isinstance(error, ImportError) and isinstance(error, uow.UowError)
    assert error.name == {package!r}, error.name
    print(error)
else:
    raise SystemExit("imported without its framework")
"""
    result = run_without(package, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"uow.integrations.{module} needs {display}: pip install 'uow[{module}]'"


def test_a_broken_framework_installation_is_not_hidden() -> None:
    # Litestar is installed but a module of its own is missing: that error, not "install uow[litestar]".
    result = run_without("litestar.di", "import uow.integrations.litestar")
    assert result.returncode == 1
    assert "ModuleNotFoundError" in result.stderr
    assert "litestar.di" in result.stderr
    assert "MissingDependencyError" not in result.stderr


def test_the_starlette_middleware_is_plain_asgi() -> None:
    # It needs Starlette only to link advanced-alchemy's extension, so it imports without it (with anyio).
    result = run_without("starlette", "import uow.integrations.starlette as m; print(m.UnitOfWorkMiddleware.__name__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "UnitOfWorkMiddleware"


def test_extras_are_frameworks_and_drivers_only() -> None:
    extras = set(pyproject()["project"]["optional-dependencies"])
    assert extras == {*dev.FRAMEWORKS, *dev.DRIVERS}
    # The development set used to be the "test" extra: installing uow[test] upgraded users' pytest.
    assert not extras & {"test", "dev", "lint", "bench", "demo", "integrations"}


def test_each_framework_extra_installs_that_framework_only() -> None:
    extras = pyproject()["project"]["optional-dependencies"]
    for name in dev.FRAMEWORKS:
        assert len(extras[name]) == 1, (name, extras[name])


def test_development_tools_are_dependency_groups() -> None:
    groups = pyproject()["dependency-groups"]
    assert set(groups) >= {"test", "lint", "bench", "demo", "build", "dev"}
    for _, (extras, wanted) in dev.SETUPS.items():
        assert set(wanted) <= set(groups)
        assert set(extras) <= {*dev.FRAMEWORKS, *dev.DRIVERS}
    plain = {name: [r for r in requirements if isinstance(r, str)] for name, requirements in groups.items()}
    assert any(r.startswith("pytest>=") for r in plain["test"])
    assert {"include-group": "bench"} in groups["test"]  # the suite smoke-runs the benchmarks
    assert any(r.startswith("ruff") for r in plain["lint"])


def test_the_plugin_is_registered_without_an_extra() -> None:
    project = pyproject()["project"]
    assert project["entry-points"]["pytest11"] == {"uow.testing": "uow.testing"}
    assert not any(r.startswith("pytest") for r in project["dependencies"])
