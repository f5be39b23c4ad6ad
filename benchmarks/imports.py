"""Case: what ``import uow`` costs on its own, and that it imports no framework.

Every sample is a fresh interpreter (``sys.executable``), so nothing is cached in
``sys.modules``. The baseline imports the parts of SQLAlchemy uow uses; the measured
variant imports those first and then times ``import uow`` alone, so the figure is uow's
own modules plus whatever else (not SQLAlchemy) they pull in. Importing SQLAlchemy leaves a full
garbage collection due (no collection of the oldest generation runs during it, and its young
generations are at their thresholds): the first few hundred allocations after it, whoever makes
them, collect SQLAlchemy's whole heap, about 20 ms here. The measured variant runs that collection
before its clock starts (``gc.collect()``), since it is SQLAlchemy's; a control leaves it to land in
``import uow``, as it does in a process that imports nothing else in between. The timing is the child's
CPU time (``time.process_time``) around the import statement, wall time alongside; the
two variants take turns, the starting one rotating. One more child runs the import under
``-X importtime`` for the breakdown printed in the notes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import Case, CaseResult, Options, Setup, Variant, collect, measured_elsewhere

ROOT = Path(__file__).resolve().parent.parent
# What uow's modules import from SQLAlchemy at module level: imported before the clock starts.
SQLALCHEMY = ("sqlalchemy", "sqlalchemy.engine", "sqlalchemy.exc", "sqlalchemy.ext.asyncio", "sqlalchemy.orm")
# No module of these (nor any below them) may be in sys.modules after `import uow`.
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
    "advanced_alchemy",
    "opentelemetry",
)
BUDGET_MS = 15.0

_TIMED = """
import json, sys, time
{preload}
{settle}
sys.stderr.write("-- timed --\\n")
sys.stderr.flush()
before = set(sys.modules)
cpu, wall = time.process_time(), time.perf_counter()
{statement}
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
new = sorted(set(sys.modules) - before)
print(json.dumps({{"cpu": cpu, "wall": wall, "new": new, "all": sorted(sys.modules)}}))
"""


# Imports as users see them, from compiled bytecode: the children write and read it in a cache of
# their own (PYTHONPYCACHEPREFIX) even when PYTHONDONTWRITEBYTECODE is set here, and never in the tree.
PYCACHE = Path(tempfile.gettempdir()) / "uow-bench-pycache"


def child_env() -> dict[str, str]:
    """The environment of a child interpreter: this one's, with the source tree first on the path."""
    paths = [str(ROOT / "src"), str(ROOT)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONPYCACHEPREFIX": str(PYCACHE)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def timed_import(
    statement: str, preload: tuple[str, ...] = (), *, settle: bool = False, importtime: bool = False
) -> dict[str, Any]:
    """Run `statement` in a fresh interpreter after importing `preload` (then, with `settle`, running the
    garbage collection that import left due); its timing and modules."""
    code = _TIMED.format(
        preload="\n".join(f"import {m}" for m in preload),
        settle="import gc; gc.collect()" if settle else "",
        statement=statement,
    )
    flags = ["-X", "importtime"] if importtime else []
    done = subprocess.run(
        [sys.executable, *flags, "-c", code],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the child interpreter failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    report["importtime"] = parse_importtime(done.stderr) if importtime else []
    return report


def parse_importtime(stderr: str) -> list[tuple[str, int]]:
    """(module, self µs) for each line of ``-X importtime`` output, in import order."""
    rows = []
    for line in stderr.split("-- timed --", 1)[-1].splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = line[len("import time:") :].split("|", 2)
        rows.append((name.strip(), int(self_us)))
    return rows


def frameworks_in(modules: list[str]) -> list[str]:
    tops = {m.split(".", 1)[0] for m in modules}
    return sorted(tops & set(FRAMEWORKS))


def measure(case: Case, options: Options) -> CaseResult:
    variants = [
        ("import sqlalchemy (what uow uses of it)", "\n".join(f"import {m}" for m in SQLALCHEMY), (), False),
        ("import uow, SQLAlchemy's due collection landing in it (control)", "import uow", SQLALCHEMY, False),
        ("import uow, sqlalchemy already imported", "import uow", SQLALCHEMY, True),
    ]
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _, _ in variants}
    last: dict[str, Any] = {}
    timed_import("import uow", SQLALCHEMY)  # compiles what is not compiled yet into PYCACHE
    for r in range(options.rounds):
        shift = r % len(variants)
        for name, statement, preload, settle in variants[shift:] + variants[:shift]:
            report = timed_import(statement, preload, settle=settle)
            samples[name].append((report["wall"], report["cpu"]))
            if settle:
                last = report
    breakdown = timed_import("import uow", SQLALCHEMY, settle=True, importtime=True)["importtime"]
    own = sum(us for name, us in breakdown if name == "uow" or name.startswith("uow."))
    others = sorted(
        ((us, name) for name, us in breakdown if not (name == "uow" or name.startswith("uow."))), reverse=True
    )
    leaked_sqlalchemy = [m for m in last["new"] if m.split(".", 1)[0] == "sqlalchemy"]
    frameworks = frameworks_in(last["all"])
    notes = [
        f"-X importtime, once: uow's own modules {own / 1000:.1f} ms self time; the rest of what import uow "
        f"loads {sum(us for us, _ in others) / 1000:.1f} ms ("
        + ", ".join(f"{name} {us / 1000:.1f} ms" for us, name in others[:5])
        + ")",
        f"import uow loaded {len(last['new'])} modules; SQLAlchemy modules among them (lazily imported, counted "
        f"in the figure): {', '.join(leaked_sqlalchemy) or 'none'}",
        f"frameworks in sys.modules after import uow: {', '.join(frameworks) or 'none'}",
    ]
    ready = Setup(
        [
            Variant(variants[0][0], lambda: None, kind="baseline"),
            Variant(variants[1][0], lambda: None, kind="control"),
            Variant(variants[2][0], lambda: None, kind="import"),
        ],
        notes=notes,
        metrics={
            "uow_self_importtime_ms": own / 1000,
            "frameworks_imported": float(len(frameworks)),
            "modules_loaded": float(len(last["new"])),
        },
    )
    return collect(case, ready, samples, options.clock)


CASES = [
    Case(
        "imports",
        "import time of uow itself (SQLAlchemy excluded), fresh interpreters",
        "one `import uow` in a fresh interpreter with SQLAlchemy already imported, per import",
        measured_elsewhere,
        False,
        1,
        "import",
        measure=measure,
    ),
]
