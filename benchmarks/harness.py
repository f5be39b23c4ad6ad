"""Timing in interleaved rounds, the results table and the JSON file.

Every case yields a list of variants. After one warm-up round of each, the runner times
``rounds`` rounds; in each round every variant runs ``number`` operations back to back,
the variants taking turns (A B C, B C A, C A B, ...) so that a slow patch of a shared
machine lands on all of them alike. A variant's figure is the median per-operation time
over the rounds; min and max show the spread.
"""

from __future__ import annotations

import asyncio
import gc
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Union

from benchmarks.common import Unavailable


@dataclass
class Variant:
    """One way of doing the case's operation. `body()` does one operation (returns an awaitable in async cases)."""

    name: str
    body: Callable[[], Any]
    baseline: str | None = None  # variant to compare with; None: the case's first variant
    calls: int = 1  # decorated calls per operation (nesting depth), to report the cost per call
    kind: str = "uow"  # "baseline", "control", "uow" or "alternative": which targets the variant counts for


@dataclass
class Setup:
    """What a case's set-up yields: its variants, and what to run (untimed) after each round."""

    variants: list[Variant]
    reset: Callable[[], Any] | None = None
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # figures other than timings (bytes per unit, ...)


SyncSetup = Callable[[], AbstractContextManager[Setup]]
AsyncSetup = Callable[[], AbstractAsyncContextManager[Setup]]


@contextmanager
def measured_elsewhere() -> Iterator[Setup]:
    """The `setup` of a case that times itself (`Case.measure`): never entered."""
    raise RuntimeError("this case times itself through Case.measure")
    yield  # pragma: no cover


@dataclass
class Case:
    key: str
    title: str
    measures: str
    setup: Union[SyncSetup, AsyncSetup]
    is_async: bool
    number: int  # operations per round (full run)
    per: str = "call"  # what one operation is: "call", "unit" or "request"
    requires: tuple[str, ...] = ()  # importable modules the case needs
    # A case that measures outside this process (a server, fresh interpreters) times itself:
    # given the options it returns the samples per variant; `setup` is then not used.
    measure: Callable[[Case, Options], CaseResult] | None = None
    # False: the suite's smoke run leaves the case out, because a smaller case runs the same code
    # (concurrency-1000 is concurrency-100 with a larger batch, and takes 15 s even once).
    smoke: bool = True
    max_rounds: int | None = None  # at most this many rounds, for a case whose one round takes seconds

    def rounds(self, options: Options) -> int:
        return options.rounds if self.max_rounds is None else min(options.rounds, self.max_rounds)


@dataclass
class Options:
    rounds: int = 41
    scale: float = 1.0  # multiplies every case's `number`
    number: int | None = None  # overrides every case's `number`
    clock: str = "cpu"  # "cpu": this process's CPU time; "wall": elapsed time

    def number_for(self, case: Case) -> int:
        if self.number is not None:
            return self.number
        return max(1, round(case.number * self.scale))


@dataclass
class Result:
    name: str
    baseline: str
    kind: str
    samples: list[float]  # seconds per call on the chosen clock, one per round
    other: list[float]  # the same rounds on the other clock
    median: float = 0.0
    other_median: float = 0.0
    min: float = 0.0
    max: float = 0.0
    ratio: float = 1.0
    overhead: float = 0.0  # seconds per call over the baseline's median

    def summarise(self) -> None:
        self.median = statistics.median(self.samples)
        self.other_median = statistics.median(self.other)
        self.min = min(self.samples)
        self.max = max(self.samples)


@dataclass
class CaseResult:
    case: Case
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


# -- timing ---------------------------------------------------------------------------------


def _time_sync(body: Callable[[], Any], number: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for `number` operations."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(number):
        body()
    return time.perf_counter() - wall, time.process_time() - cpu


async def _time_async(body: Callable[[], Awaitable[Any]], number: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(number):
        await body()
    return time.perf_counter() - wall, time.process_time() - cpu


def _rotations(variants: list[Variant], rounds: int) -> Iterator[list[Variant]]:
    for r in range(rounds):
        shift = r % len(variants)
        yield variants[shift:] + variants[:shift]


def run_sync_case(case: Case, options: Options) -> CaseResult:
    setup: SyncSetup = case.setup  # type: ignore[assignment]
    number = options.number_for(case)
    try:
        with setup() as ready, _frozen_heap():
            samples: dict[str, list[tuple[float, float]]] = {v.name: [] for v in ready.variants}
            for v in ready.variants:  # warm-up
                _time_sync(v.body, number)
            _reset_sync(ready)
            for order in _rotations(ready.variants, case.rounds(options)):
                for v in order:
                    gc.collect()
                    samples[v.name].append(_per_call(_time_sync(v.body, number), number * v.calls))
                _reset_sync(ready)
            return _collect(case, ready, samples, options.clock)
    except Unavailable as why:
        return CaseResult(case, skipped=str(why))


@contextmanager
def _frozen_heap() -> Iterator[None]:
    """Move everything alive now out of the collector's sight, so the collections between samples stay short."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _reset_sync(ready: Setup) -> None:
    if ready.reset is not None:
        ready.reset()


async def run_async_case(case: Case, options: Options) -> CaseResult:
    setup: AsyncSetup = case.setup  # type: ignore[assignment]
    number = options.number_for(case)
    try:
        async with setup() as ready:
            with _frozen_heap():
                return await _measure_async(case, ready, number, options)
    except Unavailable as why:
        return CaseResult(case, skipped=str(why))


async def _measure_async(case: Case, ready: Setup, number: int, options: Options) -> CaseResult:
    samples: dict[str, list[tuple[float, float]]] = {v.name: [] for v in ready.variants}
    for v in ready.variants:  # warm-up
        await _time_async(v.body, number)
    await _reset_async(ready)
    for order in _rotations(ready.variants, case.rounds(options)):
        for v in order:
            gc.collect()
            samples[v.name].append(_per_call(await _time_async(v.body, number), number * v.calls))
        await _reset_async(ready)
    return _collect(case, ready, samples, options.clock)


async def _reset_async(ready: Setup) -> None:
    if ready.reset is not None:
        result = ready.reset()
        if result is not None:
            await result


def run_case(case: Case, options: Options) -> CaseResult:
    if case.measure is not None:
        try:
            return case.measure(case, options)
        except Unavailable as why:
            return CaseResult(case, skipped=str(why))
    if case.is_async:
        return asyncio.run(run_async_case(case, options))
    return run_sync_case(case, options)


def _per_call(elapsed: tuple[float, float], calls: int) -> tuple[float, float]:
    return elapsed[0] / calls, elapsed[1] / calls


def collect(case: Case, ready: Setup, samples: dict[str, list[tuple[float, float]]], clock: str) -> CaseResult:
    """The results of `samples` (per variant, one (wall, CPU) pair of seconds per operation for each round)."""
    return _collect(case, ready, samples, clock)


def _collect(case: Case, ready: Setup, samples: dict[str, list[tuple[float, float]]], clock: str) -> CaseResult:
    first = ready.variants[0].name
    pick = 1 if clock == "cpu" else 0
    results = [
        Result(
            v.name,
            v.baseline or first,
            v.kind,
            [s[pick] for s in samples[v.name]],
            [s[1 - pick] for s in samples[v.name]],
        )
        for v in ready.variants
    ]
    for r in results:
        r.summarise()
    by_name = {r.name: r for r in results}
    for r in results:
        base = by_name[r.baseline]
        # Each round's ratio compares two samples taken moments apart, so a slow patch of the machine cancels out.
        r.ratio = statistics.median(mine / theirs for mine, theirs in zip(r.samples, base.samples, strict=True))
        r.overhead = r.median - base.median
    return CaseResult(case, results, list(ready.notes), metrics=dict(ready.metrics))


# -- reporting ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        model = platform.processor() or "unknown"
    return {
        "cpu": model,
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def _us(seconds: float) -> str:
    value = seconds * 1e6
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(case_results: list[CaseResult], options: Options) -> str:
    clock = "CPU time of this process" if options.clock == "cpu" else "wall-clock time"
    lines: list[str] = [
        f"{options.rounds} interleaved rounds per case, {clock}; ratio = median over rounds of (variant / baseline in the same round)"
    ]
    header = f"{'variant':<40} {'median µs':>11} {'min µs':>10} {'max µs':>10} {'ratio':>7} {'+µs':>9}"
    for cr in case_results:
        case = cr.case
        lines.append("")
        capped = f", {case.rounds(options)} rounds" if case.rounds(options) != options.rounds else ""
        lines.append(f"== {case.key}: {case.title} (per {case.per}{capped})")
        if cr.skipped:
            lines.append(f"   skipped: {cr.skipped}")
            continue
        extra = "     req/s" if case.per == "request" else ""
        lines.append(header + extra)
        for r in cr.results:
            rps = f" {1 / r.median:>9,.0f}" if case.per == "request" else ""
            versus = "" if r.baseline == cr.results[0].name or r.name == r.baseline else f"  (vs {r.baseline})"
            lines.append(
                f"{r.name:<40} {_us(r.median):>11} {_us(r.min):>10} {_us(r.max):>10} "
                f"{r.ratio:>7.3f} {_us(r.overhead):>9}{rps}{versus}"
            )
        lines.extend(f"   note: {note}" for note in cr.notes)
    return "\n".join(lines)


def as_json(case_results: list[CaseResult], options: Options, targets: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "machine": machine(),
        "rounds": options.rounds,
        "clock": options.clock,
        "targets": targets,
        "cases": [
            {
                "key": cr.case.key,
                "title": cr.case.title,
                "per": cr.case.per,
                "number": options.number_for(cr.case),
                "rounds": cr.case.rounds(options),
                "skipped": cr.skipped,
                "notes": cr.notes,
                "metrics": cr.metrics,
                "variants": [
                    {
                        "name": r.name,
                        "baseline": r.baseline,
                        "kind": r.kind,
                        "median_us": r.median * 1e6,
                        "min_us": r.min * 1e6,
                        "max_us": r.max * 1e6,
                        "ratio": r.ratio,
                        "overhead_us": r.overhead * 1e6,
                        "other_clock_median_us": r.other_median * 1e6,
                    }
                    for r in cr.results
                ],
            }
            for cr in case_results
        ],
    }


def results_from_json(report: dict[str, Any]) -> list[CaseResult]:
    """The case results of a results.json, as far as the JSON keeps them (no samples): to judge an earlier
    run against the targets as they are now."""
    case_results = []
    for case in report["cases"]:
        shell = Case(case["key"], case["title"], "", measured_elsewhere, False, case["number"], case["per"])
        results = []
        for v in case["variants"]:
            r = Result(v["name"], v["baseline"], v["kind"], [], [])
            r.median, r.min, r.max = v["median_us"] / 1e6, v["min_us"] / 1e6, v["max_us"] / 1e6
            r.other_median, r.ratio, r.overhead = v["other_clock_median_us"] / 1e6, v["ratio"], v["overhead_us"] / 1e6
            results.append(r)
        case_results.append(CaseResult(shell, results, case["notes"], case["skipped"], dict(case["metrics"])))
    return case_results


def _label(report: dict[str, Any], fallback: str) -> str:
    uow = report.get("uow") or {}
    return str(uow.get("commit") or fallback)


def compare_markdown(reports: list[dict[str, Any]], targets: Callable[[list[CaseResult]], list[dict[str, Any]]]) -> str:
    """Runs side by side (the before/after table of benchmarks/README.md; more than two: before, then each
    later run): every variant's ratio and cost over its baseline, then every target, every run judged by
    `targets` (the targets as they are now)."""
    labels = [_label(report, "before" if i == 0 else f"run {i}") for i, report in enumerate(reports)]
    # The same commit measured more than once: number the runs.
    names = [
        f"{label}, run {labels[:i].count(label) + 1}" if labels.count(label) > 1 else label
        for i, label in enumerate(labels)
    ]
    roles = (
        ["before"] + ["after"] * (len(reports) - 1) if len(reports) == 2 else ["before"] + ["then"] * (len(reports) - 1)
    )
    described = "; ".join(
        f"{role}: {name}, {report['rounds']} rounds, clock: {report['clock']}"
        for role, name, report in zip(roles, names, reports, strict=True)
    )
    heads = " | ".join(f"{role} ({name})" for role, name in zip(roles, names, strict=True))
    lines = [
        f"{described[0].upper()}{described[1:]}. "
        "Ratio: median over rounds of (variant / baseline in the same round); +µs: median cost over the baseline.",
        "",
        f"| case | variant | vs | {heads} |",
        "|---|---|---|" + "---:|" * len(reports),
    ]
    runs = [{c["key"]: c for c in report["cases"]} for report in reports]
    keys: list[str] = []
    for run in runs:
        keys += [key for key in run if key not in keys]
    for key in keys:
        cases = [run.get(key) for run in runs]
        variants: dict[str, str] = {}
        for case in cases:
            for v in (case or {}).get("variants", []):
                if v["name"] != v["baseline"]:
                    variants.setdefault(v["name"], v["baseline"])
        for name, baseline in variants.items():
            cells = " | ".join(_compare_cell(case, name) for case in cases)
            lines.append(f"| {key} | {name} | {baseline} | {cells} |")
    judged = [{(t["case"], t["target"]): t for t in targets(results_from_json(report))} for report in reports]
    lines += ["", f"| target | {heads} |", "|---|" + "---|" * len(reports)]
    checks: list[tuple[str, str]] = []
    for run in judged:
        checks += [check for check in run if check not in checks]
    for check in checks:
        cells = " | ".join(_target_cell(run.get(check)) for run in judged)
        lines.append(f"| {check[0]}: {check[1]} | {cells} |")
    return "\n".join(lines)


def _compare_cell(case: dict[str, Any] | None, name: str) -> str:
    if case is None:
        return "n/a"
    if case["skipped"]:
        return "skipped"
    v = next((v for v in case["variants"] if v["name"] == name), None)
    if v is None:
        return "n/a"
    cost = v["overhead_us"] / 1e6
    return f"{v['ratio']:.3f} ({'+' if cost >= 0 else ''}{_us(cost)} µs)"


def _target_cell(check: dict[str, Any] | None) -> str:
    if check is None:
        return "n/a"
    return f"{check['detail']}: {'met' if check['met'] else '**missed**'}"


def markdown(report: dict[str, Any]) -> str:
    """The ratio tables of a results.json, for benchmarks/README.md (ratios only: absolute times vary by machine)."""
    m = report["machine"]
    measured = f"uow {_label(report, 'of an unnamed commit')}; "
    lines = [
        f"{measured}Machine: {m['cpu']}, {m['nproc']} CPUs (`nproc`), {m['implementation']} {m['python']}; "
        f"{report['rounds']} rounds, clock: {report['clock']}.",
    ]
    for case in report["cases"]:
        lines += ["", f"**{case['key']}**: {case['title']} (per {case['per']})", ""]
        if case["skipped"]:
            lines.append(f"skipped: {case['skipped']}")
            continue
        lines += ["| variant | ratio | vs |", "|---|---:|---|"]
        lines += [f"| {v['name']} | {v['ratio']:.3f} | {v['baseline']} |" for v in case["variants"]]
    lines += ["", "| target | figure | met |", "|---|---|---|"]
    lines += [
        f"| {t['case']}: {t['target']} | {t['detail']} | {'yes' if t['met'] else '**no**'} |" for t in report["targets"]
    ]
    return "\n".join(lines)
