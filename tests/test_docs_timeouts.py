"""docs/timeouts.md and docs/health.md run as they stand: every ```python block, in order, in one
namespace per page, in a temporary working directory, with SQLite only (what the docs promise)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["timeouts.md", "health.md"]


@pytest.mark.parametrize("page", PAGES)
def test_the_page_runs_as_it_stands(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "docs" / page).read_text(), re.S | re.M)
    assert blocks, f"docs/{page} has no python block"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{page[:-3]}"}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"docs/{page} block {number}", "exec", dont_inherit=True), namespace)  # noqa: S102
    assert os.getcwd() == str(tmp_path)
