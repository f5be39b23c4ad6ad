"""The demo of the README's `python3 dev.py demo` runs and reports what it committed and rolled back."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_demo_tour(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("uow_demo", EXAMPLES / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["uow_demo"] = module
    try:
        spec.loader.exec_module(module)
        module.main(tmp_path)
    finally:
        sys.modules.pop("uow_demo", None)
    out = capsys.readouterr().out
    assert "on_commit: welcome mail queued for ada@example.com" in out
    assert "HTTP 201" in out
    assert "HTTP 500" in out
    assert "failed: IntegrityError" in out
    assert "granted 2 roles" in out
    assert out.rstrip().endswith("committed: users=['ada@example.com', 'grace@example.com'] roles=2")
