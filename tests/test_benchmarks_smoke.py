"""Every benchmark case runs once with tiny counts, so the benchmarks cannot rot. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run
from benchmarks.harness import Options, as_json, table
from benchmarks.targets import evaluate, render
from tests import servers

CASES = {case.key: case for case in run.all_cases() if case.smoke}
TINY = Options(rounds=1, number=1)


@pytest.mark.parametrize("key", list(CASES))
def test_case_runs_once(key: str) -> None:
    case = CASES[key]
    for module in case.requires:
        pytest.importorskip(module)
    (result,) = run.run([case], TINY, echo=False)
    if result.skipped:
        if key.endswith("asyncpg"):
            servers.unavailable("PostgreSQL", RuntimeError(result.skipped))
        pytest.fail(f"{key} was skipped: {result.skipped}")
    assert [r.name for r in result.results], key
    assert all(r.median > 0 and r.ratio > 0 for r in result.results)
    text = table([result], TINY)
    assert all(r.name in text for r in result.results)
    render(evaluate([result]))


def test_every_case_left_out_of_the_smoke_run_has_a_smaller_twin_that_runs() -> None:
    left_out = [case.key for case in run.all_cases() if not case.smoke]
    assert left_out == ["concurrency-1000-asyncpg"]
    assert "concurrency-100-asyncpg" in CASES


def test_the_runner_writes_its_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.json"
    assert run.main(["--quick", "--rounds", "1", "--number", "1", "--case", "scale-depth", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {c["key"] for c in report["cases"]} == {"scale-depth"}
    assert report["machine"]["python"]
    assert "targets:" in capsys.readouterr().out
    assert as_json([], TINY, [])["cases"] == []
    assert run.main(["--markdown", str(out)]) == 0
    assert "| variant | ratio | vs |" in capsys.readouterr().out


def test_profile_flag(tmp_path: Path) -> None:
    pytest.importorskip("pyinstrument")
    out = tmp_path / "results.json"
    assert run.main(["--profile", "--rounds", "1", "--number", "1", "--case", "scale-depth", "--json", str(out)]) == 0


def test_observability_case_compares_with_uow_before_the_seam_and_leaves_nothing_behind() -> None:
    import sys

    from uow import _observe

    (result,) = run.run([CASES["observe-sync-empty"]], TINY, echo=False)
    names = [r.name for r in result.results]
    assert any(name.startswith("uow before the seam (") for name in names), (names, result.notes)
    assert {"observability off", "uow.otel on (SDK, in-memory)", "uow.logs on, one record per unit"} <= set(names)
    assert not any(name.startswith("uow_seamless") for name in sys.modules)
    assert _observe.observer is None
