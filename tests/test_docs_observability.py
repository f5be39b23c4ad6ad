"""docs/observability.md runs as it stands: its ```python blocks, in order, in one namespace, in a temporary directory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import uow.logs
import uow.otel
from uow import _observe

PAGE = Path(__file__).resolve().parent.parent / "docs" / "observability.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def test_every_python_block_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = BLOCK.findall(PAGE.read_text(encoding="utf-8"))
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "docs_observability"}
    try:
        for number, block in enumerate(blocks, 1):
            exec(compile(block, f"{PAGE.name} block {number}", "exec", dont_inherit=True), namespace)
    finally:
        uow.otel.uninstrument()
        uow.logs.uninstrument()
        db = namespace.get("db")
        if isinstance(db, uow.Database):
            db.dispose()
    assert _observe.observer is None
