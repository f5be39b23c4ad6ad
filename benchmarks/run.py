#!/usr/bin/env python3
"""Run the benchmarks: ``python benchmarks/run.py`` (``--quick`` for a fast pass, ``--case KEY`` to pick).

Prints a table per case and writes benchmarks/results.json. Ratios compare each variant
with its hand-written baseline measured in the same run (>1 means slower).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if importlib.util.find_spec("uow") is None:  # a fresh clone run without installing: use the source tree
    sys.path.insert(0, str(ROOT / "src"))

from benchmarks.harness import (  # noqa: E402
    Case,
    CaseResult,
    Options,
    as_json,
    compare_markdown,
    markdown,
    results_from_json,
    run_case,
    table,
)

DEFAULT_JSON = ROOT / "benchmarks" / "results.json"


def all_cases() -> list[Case]:
    """Every case, in the order they run; a case whose module needs a missing package is left out."""
    from benchmarks import concurrency, dispatch, imports, observability, outbox, scale, server, units, web

    return [
        *units.CASES,
        *dispatch.CASES,
        *web.CASES,
        *scale.CASES,
        *outbox.CASES,
        *observability.CASES,
        *concurrency.CASES,
        *server.CASES,
        *imports.CASES,
    ]


def uow_source() -> dict[str, str | None]:
    """Which uow the run measured: its directory and, in a git checkout, the last commit that changed it (``+``
    when it has changes not committed), so a branch whose commits touch only benchmarks/ names main's commit."""
    import subprocess

    import uow

    where = Path(uow.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "log", "-1", "--format=%h", "--", "."], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--", "."], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"path": str(where), "commit": None}
    return {"path": str(where), "commit": commit + ("+" if dirty else "")}


def missing_modules(case: Case) -> list[str]:
    return [name for name in case.requires if importlib.util.find_spec(name) is None]


def run(cases: list[Case], options: Options, *, echo: bool = True) -> list[CaseResult]:
    results: list[CaseResult] = []
    for case in cases:
        missing = missing_modules(case)
        if missing:
            result = CaseResult(case, skipped=f"needs {', '.join(missing)} (pip install 'uow[bench]')")
        else:
            if echo:
                print(f"running {case.key} ...", file=sys.stderr, flush=True)
            result = run_case(case, options)
        results.append(result)
    return results


def profiled(cases: list[Case], options: Options) -> list[CaseResult]:
    """`run` under pyinstrument, its call tree printed to stderr (how the hot paths of src/uow were found)."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0002)
    profiler.start()
    try:
        return run(cases, options)
    finally:
        profiler.stop()
        print(profiler.output_text(unicode=True, show_all=False), file=sys.stderr)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny counts: a fast, noisy pass")
    parser.add_argument("--rounds", type=int, help="timed rounds per case (default 41, --quick 3)")
    parser.add_argument("--number", type=int, help="operations per round for every case (overrides the defaults)")
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="cpu: this process's CPU time, steady on a shared machine (default); wall: elapsed time",
    )
    parser.add_argument("--case", action="append", default=[], help="run only cases whose key starts with this")
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"where to write results (default {DEFAULT_JSON})"
    )
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument(
        "--markdown",
        type=Path,
        nargs="+",
        metavar="RESULTS_JSON",
        help="print the ratio tables of an earlier results.json and exit; given two (before, after) or more "
        "(before, then each later run): the table of all of them side by side, judged by the targets as they are now",
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile the run with pyinstrument and print where time goes"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.markdown:
        reports = [json.loads(path.read_text(encoding="utf-8")) for path in args.markdown]
        from benchmarks.targets import evaluate

        if len(reports) >= 2:
            print(compare_markdown(reports, evaluate))
        else:  # judged by the targets as they are now, as the two-run table is
            print(markdown({**reports[0], "targets": evaluate(results_from_json(reports[0]))}))
        return 0
    cases = all_cases()
    if args.list:
        for case in cases:
            print(f"{case.key:<28} {case.title}")
        return 0
    if args.case:
        cases = [c for c in cases if any(c.key.startswith(prefix) for prefix in args.case)]
        if not cases:
            print(f"no case matches {args.case}", file=sys.stderr)
            return 2
    options = Options(
        rounds=args.rounds or (3 if args.quick else 41),
        scale=0.05 if args.quick else 1.0,
        number=args.number,
        clock=args.clock,
    )
    results = profiled(cases, options) if args.profile else run(cases, options)
    from benchmarks.targets import evaluate, render

    targets = evaluate(results)
    print(table(results, options))
    print()
    print(render(targets))
    report: dict[str, Any] = as_json(results, options, targets)
    report["uow"] = uow_source()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
