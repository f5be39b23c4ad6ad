#!/usr/bin/env python3
"""The project's two set-up commands, needing only Python 3.10+:

    python3 dev.py demo     # a tour on an SQLite file: a job, a CLI command, a route handler
    python3 dev.py test     # the whole test suite
    python3 dev.py bench    # the benchmarks (benchmarks/README.md); --quick for a fast pass
    python3 dev.py lint     # ruff, mypy --strict, pyright
    python3 dev.py docs     # the documentation site, built --strict into site/; --serve to serve it

Each makes (or reuses) a virtual environment in .venv (UOW_VENV to put it elsewhere),
installs what it needs into it (uow with the extras of the frameworks and drivers it uses,
and our development tools from pyproject.toml's PEP 735 dependency groups, after upgrading
pip to a version that installs those), and runs. Arguments after ``test`` go to pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# The user-facing extras of pyproject.toml (tests/test_packaging.py checks these lists against it).
FRAMEWORKS = (
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
    "advanced-alchemy",
    "sqlmodel",
    "otel",  # not a framework: uow.otel's OpenTelemetry API, one package like the others
)
DRIVERS = ("aiosqlite", "asyncpg", "psycopg", "psycopg2", "pymysql", "aiomysql", "asyncmy")
# What each command installs: uow with these extras, plus these PEP 735 dependency groups (our
# development tools, which no extra carries). The suite smoke-runs the benchmarks, so "test"
# includes the "bench" group.
SETUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "demo": (("aiosqlite", "click", "starlette"), ("demo",)),
    "test": ((*FRAMEWORKS, *DRIVERS), ("test",)),
    "lint": ((*FRAMEWORKS, *DRIVERS), ("test", "lint")),
    "bench": ((*FRAMEWORKS, *DRIVERS), ("bench",)),
    "docs": ((), ("docs",)),
}
# pip installs dependency groups (--group) from 25.1 on.
PIP_FOR_GROUPS = "pip>=25.1"


def ensure_venv(command: str) -> Path:
    """The virtual environment's python, with what `command` needs installed (once per command and pyproject.toml)."""
    if sys.version_info < (3, 10):
        sys.exit(f"uow needs Python 3.10 or newer; this is {sys.version.split()[0]}")
    extras, groups = SETUPS[command]
    where = Path(os.environ.get("UOW_VENV", ROOT / ".venv"))
    python = where / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not python.exists():
        print(f"creating virtual environment in {where}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(where)
    marker = where / f".uow-installed-{command}"
    stamp = str((ROOT / "pyproject.toml").stat().st_mtime_ns)
    if not marker.exists() or marker.read_text() != stamp:
        target = f".[{','.join(extras)}]" if extras else "."
        print(f"installing uow{target[1:]} and the groups {', '.join(groups)} into {where}", flush=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "--upgrade", PIP_FOR_GROUPS], check=True)
        # --group reads the pyproject.toml of the working directory: ours.
        group_args = [arg for group in groups for arg in ("--group", group)]
        subprocess.run([*pip, "-e", target, *group_args], check=True, cwd=ROOT)
        marker.write_text(stamp)
    return python


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in SETUPS:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    python = str(ensure_venv(command))
    if command == "demo":
        return subprocess.call([python, str(ROOT / "examples" / "demo.py"), *rest], cwd=ROOT)
    if command == "test":
        return subprocess.call([python, "-m", "pytest", *rest], cwd=ROOT)
    if command == "bench":
        return subprocess.call([python, str(ROOT / "benchmarks" / "run.py"), *rest], cwd=ROOT)
    if command == "docs":
        return docs(python, rest)
    return lint(python)


def docs(python: str, rest: list[str]) -> int:
    """Build the site strict into site/ (a broken link, a bad reference or a page left out of the nav fails),
    or with --serve serve it with live reload; other arguments go to mkdocs."""
    os.environ.setdefault("NO_MKDOCS_2_WARNING", "1")  # Material's banner about its successor, on every build
    if rest[:1] == ["--serve"]:
        return subprocess.call([python, "-m", "mkdocs", "serve", "--strict", *rest[1:]], cwd=ROOT)
    return subprocess.call([python, "-m", "mkdocs", "build", "--strict", "--site-dir", "site", *rest], cwd=ROOT)


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
