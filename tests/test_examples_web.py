"""The web examples run as the programs they are: each does its self-demo on a fresh SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = [
    "POST /todos 201",
    "POST /todos 409",
    "POST /todos/1/done 200",
    "GET /todos 200",
]


@pytest.mark.parametrize("example", ["litestar_app.py", "fastapi_app.py", "flask_app.py"])
def test_example_runs(example: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / example)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for expected in EXPECTED:
        assert any(line.startswith(expected) for line in lines), (expected, result.stdout)
    assert "'done': True" in result.stdout
    # The 409 rolled back: the list holds the one to-do.
    assert result.stdout.count("'title': 'write the docs'") == 3
    assert list(tmp_path.glob("*.db")), "the example writes its SQLite file in the working directory"
