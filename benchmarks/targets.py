"""The issue's targets, checked against one run's results (printed after the table, stored in the JSON)."""

from __future__ import annotations

from typing import Any

from benchmarks.harness import CaseResult, Result

# The goals of issue 12 ("Performance: a decorated unit indistinguishable from hand-written code").
UNIT_TOLERANCE = 1.01  # an owning unit within 1% of the hand-written one (aiosqlite, psycopg, asyncpg)
UNIT_TOLERANCE_BY_CASE = {"unit-sync-sqlite": 1.02}  # in-memory SQLite, the most sensitive case: within 2%
DISPATCH_BUDGET_US = 0.8  # uow's own cost per joined call, at most
DISPATCH_REFERENCE = "functools.wraps decorator"  # and no more than the smallest hand-written decorator costs
DEPTH_FLATNESS = 1.2  # per-call cost 20 deep at most this times the cost 1 deep
PER_SERVICE_BUDGET_US = 0.5  # uow's own cost for each extra injected service, under this
WEB_TOLERANCE = 1.01  # a decorated route within 1% of the hand-written one, in-process
SERVER_RPS_FLOOR = 0.99  # real server: requests/s at least 99% of the hand-written route's
SERVER_CPU_TOLERANCE = 1.01  # real server: server CPU per request within 1%
CONCURRENCY_TOLERANCE = 1.02  # concurrent units: time per unit within 2% at every level
MEMORY_TOLERANCE = 1.10  # memory per in-flight unit within 10% of hand-written
IMPORT_BUDGET_MS = 15.0  # `import uow` with SQLAlchemy already imported


def evaluate(case_results: list[CaseResult]) -> list[dict[str, Any]]:
    """One entry per check: what was compared, the figure, and whether the target is met."""
    checks: list[dict[str, Any]] = []
    for cr in case_results:
        if cr.skipped or not cr.results:
            continue
        key = cr.case.key
        if key.startswith("unit-"):
            checks.extend(_unit_checks(key, cr.results))
        if key.startswith("dispatch-"):
            checks.extend(_dispatch_checks(key, cr.results))
        if key == "scale-services":
            checks.append(_services_check(cr.results))
        if key == "scale-depth":
            checks.append(_depth_check(cr.results))
        if key.startswith("web-"):
            checks.extend(_web_checks(key, cr.results))
        if key == "imports":
            checks.extend(_import_checks(cr))
        if key.startswith("server-"):
            checks.extend(_server_checks(cr))
        if key.startswith("concurrency-"):
            checks.extend(_concurrency_checks(cr))
        checks.extend(_ahead_checks(key, cr.results))
    return checks


def _check(case: str, target: str, detail: str, met: bool) -> dict[str, Any]:
    return {"case": case, "target": target, "detail": detail, "met": met}


def _unit_checks(key: str, results: list[Result]) -> list[dict[str, Any]]:
    control = next((r for r in results if r.kind == "control"), None)
    noise = f"; A/A control {control.ratio:.3f}" if control is not None else ""
    tolerance = UNIT_TOLERANCE_BY_CASE.get(key, UNIT_TOLERANCE)
    return [
        _check(
            key,
            f"{r.name} within {tolerance - 1:.0%} of {r.baseline}",
            f"ratio {r.ratio:.3f}{noise}",
            r.ratio <= tolerance,
        )
        for r in results
        if r.kind == "uow"
    ]


def _dispatch_checks(key: str, results: list[Result]) -> list[dict[str, Any]]:
    checks = []
    reference = next((r for r in results if r.name == DISPATCH_REFERENCE), None)
    for r in results:
        if r.kind != "uow":
            continue
        cost = r.overhead * 1e6
        checks.append(
            _check(
                key,
                f"{r.name}: at most {DISPATCH_BUDGET_US:g} µs per call over {r.baseline}",
                f"+{cost:.2f} µs",
                cost <= DISPATCH_BUDGET_US,
            )
        )
        if reference is not None and reference.baseline == r.baseline:
            theirs = reference.overhead * 1e6
            checks.append(
                _check(
                    key,
                    f"{r.name}: costs no more over {r.baseline} than the {reference.name}",
                    f"+{cost:.2f} µs vs +{theirs:.2f} µs",
                    cost <= theirs,
                )
            )
    return checks


def _ahead_checks(key: str, results: list[Result]) -> list[dict[str, Any]]:
    """Each uow variant against each alternative measured against the same baseline (lower ratio wins)."""
    checks = []
    for ours in (r for r in results if r.kind == "uow"):
        for theirs in (r for r in results if r.kind == "alternative" and r.baseline == ours.baseline):
            checks.append(
                _check(
                    key,
                    f"{ours.name} ahead of {theirs.name}",
                    f"ratio {ours.ratio:.3f} vs {theirs.ratio:.3f}",
                    ours.ratio < theirs.ratio,
                )
            )
    return checks


def _overheads(results: list[Result], prefix: str) -> dict[int, float]:
    """uow's own cost per call in µs, by the number at the end of each uow variant's name."""
    return {int(r.name.rsplit(" ", 1)[-1]): r.overhead * 1e6 for r in results if r.name.startswith(prefix)}


def _services_check(results: list[Result]) -> dict[str, Any]:
    by_count = _overheads(results, "@with_services, ")
    slope = _least_squares_slope(by_count)
    detail = ", ".join(f"{n}: +{v:.2f} µs" for n, v in sorted(by_count.items())) + f"; {slope:.2f} µs per extra service"
    return _check(
        "scale-services",
        f"cost grows at most linearly, under {PER_SERVICE_BUDGET_US:g} µs per extra service (least-squares slope)",
        detail,
        slope < PER_SERVICE_BUDGET_US,
    )


def _least_squares_slope(points: dict[int, float]) -> float:
    """The slope of the straight line that best fits `points` (less swayed by one noisy point than two ends)."""
    n = len(points)
    mean_x = sum(points) / n
    mean_y = sum(points.values()) / n
    spread = sum((x - mean_x) ** 2 for x in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points.items()) / spread


def _depth_check(results: list[Result]) -> dict[str, Any]:
    by_depth = _overheads(results, "@with_services, depth ")
    low, high = min(by_depth), max(by_depth)
    detail = ", ".join(f"depth {d}: +{v:.2f} µs per call" for d, v in sorted(by_depth.items()))
    return _check(
        "scale-depth",
        f"cost per call flat with depth (depth {high} at most {DEPTH_FLATNESS:g}x depth {low})",
        detail,
        by_depth[high] <= DEPTH_FLATNESS * max(by_depth[low], 0.05),
    )


def _web_checks(key: str, results: list[Result]) -> list[dict[str, Any]]:
    return [
        _check(
            key,
            f"{r.name} within {WEB_TOLERANCE - 1:.0%} of {r.baseline}",
            f"ratio {r.ratio:.3f}",
            r.ratio <= WEB_TOLERANCE,
        )
        for r in results
        if r.kind == "uow" and r.baseline == results[0].name
    ]


def _import_checks(cr: CaseResult) -> list[dict[str, Any]]:
    ours = cr.results[-1]
    frameworks = int(cr.metrics.get("frameworks_imported", 0))
    return [
        _check(
            cr.case.key,
            f"import uow under {IMPORT_BUDGET_MS:g} ms (SQLAlchemy excluded)",
            f"{ours.median * 1e3:.1f} ms",
            ours.median * 1e3 < IMPORT_BUDGET_MS,
        ),
        _check(cr.case.key, "import uow imports no framework", f"{frameworks} imported", frameworks == 0),
    ]


def _server_checks(cr: CaseResult) -> list[dict[str, Any]]:
    """Requests/s and server CPU per request of each uow route against the hand-written route (from the metrics)."""
    key, metrics, checks = cr.case.key, cr.metrics, []
    base = cr.results[0].name
    ours = [r.name for r in cr.results if r.kind == "uow"]
    theirs = [r.name for r in cr.results if r.kind == "alternative"]
    for name in ours:
        rps, cpu = metrics[f"rps_ratio:{name}"], metrics[f"cpu_ratio:{name}"]
        checks.append(
            _check(
                key, f"{name}: requests/s at least {SERVER_RPS_FLOOR:g}x {base}", f"{rps:.3f}", rps >= SERVER_RPS_FLOOR
            )
        )
        checks.append(
            _check(
                key,
                f"{name}: server CPU per request within {SERVER_CPU_TOLERANCE - 1:.0%} of {base}",
                f"{cpu:.3f}",
                cpu <= SERVER_CPU_TOLERANCE,
            )
        )
        for other in theirs:
            their_rps = metrics[f"rps_ratio:{other}"]
            checks.append(
                _check(key, f"{name} ahead of {other} in requests/s", f"{rps:.3f} vs {their_rps:.3f}", rps > their_rps)
            )
    return checks


def _concurrency_checks(cr: CaseResult) -> list[dict[str, Any]]:
    checks = []
    for r in cr.results:
        if r.kind != "uow":
            continue
        checks.append(
            _check(
                cr.case.key,
                f"{r.name}: time per unit within {CONCURRENCY_TOLERANCE - 1:.0%} of {r.baseline}",
                f"ratio {r.ratio:.3f}",
                r.ratio <= CONCURRENCY_TOLERANCE,
            )
        )
        mine, base = cr.metrics.get(f"bytes_per_unit:{r.name}"), cr.metrics.get(f"bytes_per_unit:{r.baseline}")
        if mine is not None and base:
            checks.append(
                _check(
                    cr.case.key,
                    f"{r.name}: memory per in-flight unit within {MEMORY_TOLERANCE - 1:.0%} of {r.baseline}",
                    f"{mine:,.0f} vs {base:,.0f} bytes ({mine / base:.3f})",
                    mine <= MEMORY_TOLERANCE * base,
                )
            )
    return checks


def render(checks: list[dict[str, Any]]) -> str:
    if not checks:
        return "targets: nothing to check (no case ran)"
    met = sum(c["met"] for c in checks)
    lines = [f"targets: {met} of {len(checks)} met"]
    lines.extend(f"  [{'met' if c['met'] else 'MISSED'}] {c['case']}: {c['target']} ({c['detail']})" for c in checks)
    return "\n".join(lines)
