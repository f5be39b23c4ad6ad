"""Every code block of the documentation runs: docs/**/*.md and README.md, page by page.

Each page's ```python blocks run in order in one namespace, in a subprocess whose working directory
is a temporary directory, on SQLite only (tests/docs_blocks.py says how blocks are read). Blocks that
build a web app call it through the framework's own test client and assert what the reader should see,
so a page that stops being true fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs_blocks import blocks

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([*ROOT.glob("docs/**/*.md"), ROOT / "README.md"])
# Pages with something to run (the others hold prose, tables and ```bash / ```text blocks only).
RUNNABLE = [page for page in PAGES if any(block.executed for block in blocks(page.read_text()))]


# As in the suite (pyproject.toml's filterwarnings): code the docs teach must not use anything deprecated
# in SQLAlchemy or a framework. advanced-alchemy's own import-time use of declarative_mixin is not ours.
DEPRECATIONS_FAIL = [
    "-W",
    "error::DeprecationWarning",
    "-W",
    "error::PendingDeprecationWarning",
    "-W",
    "ignore:The declarative_mixin decorator:DeprecationWarning",
]


def page_id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("page", RUNNABLE, ids=page_id)
def test_page_code_runs(page: Path, tmp_path: Path) -> None:
    expected = sum(block.executed for block in blocks(page.read_text()))
    env = {key: value for key, value in os.environ.items() if not key.startswith("UOW_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT / "src")])
    result = subprocess.run(
        [sys.executable, *DEPRECATIONS_FAIL, str(ROOT / "tests" / "docs_blocks.py"), str(page)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{page_id(page)}: a code block failed\n{result.stdout}\n{result.stderr}"
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts["executed"] == expected


def test_blocks_are_read_as_the_page_shows_them() -> None:
    """Fences inside list items are dedented, titled blocks are files, other languages are not run."""
    text = (
        "intro\n"
        "```python\nx = 1\n```\n"
        "- item\n\n  ```python\n  y = x + 1\n  ```\n"
        '```python title="pkg/mod.py"\nZ = 3\n```\n'
        "```bash\necho hi\n```\n"
    )
    found = blocks(text)
    assert [(b.lang, b.title, b.code, b.executed) for b in found] == [
        ("python", None, "x = 1\n", True),
        ("python", None, "y = x + 1\n", True),
        ("python", "pkg/mod.py", "Z = 3\n", False),
        ("bash", None, "echo hi\n", False),
    ]
    assert found[0].line == 3


def test_a_failing_block_fails_its_page(tmp_path: Path) -> None:
    """The runner reports the page's own line number when a block raises."""
    page = tmp_path / "page.md"
    page.write_text("# t\n\n```python\nvalue = 1\n```\n\n```python\nassert value == 2, 'wrong'\n```\n")
    result = subprocess.run(
        [sys.executable, *DEPRECATIONS_FAIL, str(ROOT / "tests" / "docs_blocks.py"), str(page)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert f'File "{page}", line 8' in result.stderr
    assert "wrong" in result.stderr


def test_top_level_await_runs_on_one_loop(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nimport asyncio\nloop = asyncio.get_running_loop()\nawait asyncio.sleep(0)\n```\n"
        "```python\nawait asyncio.sleep(0)\nassert asyncio.get_running_loop() is loop\n```\n"
        "```python\nasyncio.run(asyncio.sleep(0))  # a block without await runs outside the loop\n```\n"
    )
    result = subprocess.run(
        [sys.executable, *DEPRECATIONS_FAIL, str(ROOT / "tests" / "docs_blocks.py"), str(page)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"executed": 3, "files": 0}
