"""docs/events.md and docs/recipes/dry-run.md: every ```python block runs as it stands, in order, in one namespace per page.

The way the docs pages are checked (a temporary working directory, SQLite only), for these two
pages; a page whose blocks stop running, or whose assertions stop holding, fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["docs/events.md", "docs/recipes/dry-run.md"]


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M)


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_runs(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(ROOT / page)
    assert len(blocks) >= 3, f"{page} should show its features in runnable blocks"
    namespace: dict[str, object] = {"__name__": f"docs_{Path(page).stem.replace('-', '_')}"}
    for number, block in enumerate(blocks, 1):
        code = compile(block, f"{page} (python block {number})", "exec", dont_inherit=True)
        exec(code, namespace)  # noqa: S102 - the page's own examples, run as a reader would
    database = namespace.get("database")
    engine = getattr(database, "engine", None)
    if engine is not None:
        engine.dispose()
