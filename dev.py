#!/usr/bin/env python3
"""The project's two set-up commands, needing only Python 3.10+:

    python3 dev.py demo     # a tour on an SQLite file: a job, a CLI command, a route handler
    python3 dev.py test     # the whole test suite
    python3 dev.py bench    # the benchmarks (benchmarks/README.md); --quick for a fast pass

Each makes (or reuses) a virtual environment in .venv (UOW_VENV to put it elsewhere),
installs what it needs into it, and runs. Arguments after ``test`` go to pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# The test suite smoke-runs the benchmarks, so it installs their extra (which includes test and integrations).
EXTRAS = {"demo": "demo", "test": "bench", "lint": "bench,lint", "bench": "bench"}


def ensure_venv(extras: str) -> Path:
    """The virtual environment's python, with uow and `extras` installed (once per set of extras)."""
    if sys.version_info < (3, 10):
        sys.exit(f"uow needs Python 3.10 or newer; this is {sys.version.split()[0]}")
    where = Path(os.environ.get("UOW_VENV", ROOT / ".venv"))
    python = where / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not python.exists():
        print(f"creating virtual environment in {where}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(where)
    marker = where / f".uow-installed-{extras.replace(',', '-')}"
    stamp = str((ROOT / "pyproject.toml").stat().st_mtime_ns)
    if not marker.exists() or marker.read_text() != stamp:
        print(f"installing uow[{extras}] into {where}", flush=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-e", f"{ROOT}[{extras}]"], check=True)
        marker.write_text(stamp)
    return python


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in EXTRAS:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    python = str(ensure_venv(EXTRAS[command]))
    if command == "demo":
        return subprocess.call([python, str(ROOT / "examples" / "demo.py"), *rest], cwd=ROOT)
    if command == "test":
        return subprocess.call([python, "-m", "pytest", *rest], cwd=ROOT)
    if command == "bench":
        return subprocess.call([python, str(ROOT / "benchmarks" / "run.py"), *rest], cwd=ROOT)
    return lint(python)


def lint(python: str) -> int:
    paths = [p for p in ("src", "examples", "tests", "benchmarks", "scripts", "dev.py") if (ROOT / p).exists()]
    checks = [
        [python, "-m", "ruff", "check", *paths],
        [python, "-m", "ruff", "format", "--check", *paths],
        [python, "-m", "mypy"],
        [python, "-m", "pyright", "--pythonpath", python],
    ]
    failed = 0
    for check in checks:
        print("$", " ".join(check[1:]), flush=True)
        failed |= subprocess.call(check, cwd=ROOT)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
