"""Type checkers see decorated functions the way docs/typing.md says: tests/typing/ checked by mypy --strict and pyright.

The checked files are never imported or collected by pytest; its ``assert_type`` calls and its
``# type: ignore`` comments (each must be needed) are the assertions.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ROOT / "tests" / "typing" / "check_types.py"
# Parameters marked `= injected()`: the same lines must hold with and without the mypy plugin.
MARKED = ROOT / "tests" / "typing" / "check_marked.py"
PLUGIN_CHECKED = ROOT / "tests" / "typing" / "check_mypy_plugin.py"
PLUGIN_CONFIG = ROOT / "tests" / "typing" / "mypy_plugin.ini"
GENERATOR = ROOT / "scripts" / "gen_typing.py"


def _run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_mypy_strict() -> None:
    # MYPYPATH puts this checkout's src/ ahead of whatever uow the environment has installed.
    checked = [str(path.relative_to(ROOT)) for path in (CHECKED, MARKED)]
    result = _run("mypy", "--strict", *checked, env={"MYPYPATH": str(ROOT / "src")})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found in 2 source files" in result.stdout


def test_mypy_strict_with_the_plugin() -> None:
    # The plugin is imported by mypy itself: from this checkout, which the environment has installed editable.
    result = _run(
        "mypy",
        "--config-file",
        str(PLUGIN_CONFIG.relative_to(ROOT)),
        str(PLUGIN_CHECKED.relative_to(ROOT)),
        str(MARKED.relative_to(ROOT)),
        env={"MYPYPATH": str(ROOT / "src")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found in 2 source files" in result.stdout


def test_pyright() -> None:
    # With no extraPaths configured pyright puts ./src first on its import path.
    checked = [str(path.relative_to(ROOT)) for path in (CHECKED, MARKED)]
    result = _run("pyright", "--pythonpath", sys.executable, *checked)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 errors" in result.stdout


def test_typing_module_is_what_the_generator_writes(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_typing", GENERATOR)
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    committed = (ROOT / "src" / "uow" / "_typing.py").read_text(encoding="utf-8")
    assert generator.source() == committed, (
        "src/uow/_typing.py was edited by hand: edit scripts/gen_typing.py and run it"
    )
    assert _run_script("--check").returncode == 0
    # --check fails on a module that differs from what it writes.
    edited = tmp_path / "_typing.py"
    edited.write_text(committed.replace("class Bound(", "class Bound2("), encoding="utf-8")
    generator.TARGET = edited
    assert generator.main(["--check"]) == 1
    generator.main([])
    assert edited.read_text(encoding="utf-8") == committed


def _run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
