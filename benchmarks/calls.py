#!/usr/bin/env python3
"""Function calls per unit (cProfile), the figure that does not depend on how busy the machine is.

``python benchmarks/calls.py [--units N] [--diff]`` runs the sync in-memory SQLite unit of
`benchmarks/units.py` (insert a row, commit) by hand, with ``@with_services`` and with
``provide_services``, and prints how many calls (Python and C, as cProfile counts them) each
makes per unit; ``--diff`` also lists, per function, what the uow variants call more than the
hand-written one; ``--own`` lists the functions of uow itself the ``@with_services`` unit runs,
with their own time per unit under cProfile (inflated by the profiler alike for every function:
read the shares, not the microseconds). Every variant runs a few times before counting, so listeners and compiled
statements are set up for all of them alike.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import pstats
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if importlib.util.find_spec("uow") is None:  # a fresh clone run without installing: use the source tree
    sys.path.insert(0, str(ROOT / "src"))

from benchmarks.common import Items, clear_sync, sqlite_engine, sync_factory  # noqa: E402
from uow import Database, provide_services, with_services  # noqa: E402

UOW_DIR = Path(importlib.util.find_spec("uow").origin or "").parent  # type: ignore[union-attr]

Key = tuple[str, int, str]


def _profile(fn: Callable[[], None], units: int) -> dict[Key, tuple[Any, ...]]:
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(units):
        fn()
    profile.disable()
    stats: dict[Key, tuple[Any, ...]] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    return stats


def _count(fn: Callable[[], None], units: int) -> tuple[float, dict[Key, float]]:
    per_function = {key: value[1] / units for key, value in _profile(fn, units).items()}
    return sum(per_function.values()), per_function


def _own_time(decorated: Callable[[], None], hand: Callable[[], None], units: int) -> None:
    """uow's own functions in the decorated units: own time per unit (µs, cProfile), its share of all the
    time, and what of it the hand-written units run too (the listeners a `Database` puts on its engine
    and on `Session`, which every session of the process pays)."""
    totals: list[float] = []
    own: list[dict[Key, tuple[float, float]]] = []
    for fn in (decorated, hand):
        stats = _profile(fn, units)
        totals.append(sum(value[2] for value in stats.values()))
        own.append({key: (value[2], value[1]) for key, value in stats.items() if key[0].startswith(str(UOW_DIR))})
    ours, theirs = own
    print(
        f"uow's own functions: {sum(t for t, _ in ours.values()) / totals[0]:.1%} of the profiled time of an "
        f"@with_services unit, {sum(t for t, _ in theirs.values()) / totals[1]:.1%} of a hand-written one"
    )
    print("    µs/unit  share  calls  (in a hand-written unit: µs, calls)")
    for key, (time, calls) in sorted(ours.items(), key=lambda item: -item[1][0]):
        file, line, function = key
        hand_time, hand_calls = theirs.get(key, (0.0, 0.0))
        also = f"  ({hand_time / units * 1e6:.2f} µs, {hand_calls / units:.1f}x)" if hand_calls else ""
        where = f"{function} ({Path(file).name}:{line})"
        print(f"    {time / units * 1e6:6.2f}  {time / totals[0]:5.1%}  {calls / units:4.1f}x  {where}{also}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=300, help="units counted per variant (default 300)")
    parser.add_argument(
        "--diff", action="store_true", help="list the calls the uow variants make beyond the hand-written one"
    )
    parser.add_argument("--own", action="store_true", help="list uow's own functions with their own time per unit")
    args = parser.parse_args(argv)

    engine = sqlite_engine()
    factory = sync_factory(engine)
    db = Database(session_factory=factory)

    def hand() -> None:
        with factory() as session:
            Items(session).add("x")
            session.commit()

    @with_services(Items, database=db)
    def decorated(items: Items) -> None:
        items.add("x")

    def provided() -> None:
        with provide_services(Items, database=db) as (items,):
            items.add("x")

    variants: list[tuple[str, Callable[[], None]]] = [
        ("hand-written", hand),
        ("@with_services", decorated),
        ("provide_services", provided),
    ]
    for _, fn in variants:
        for _ in range(20):
            fn()
    counts = {}
    for name, fn in variants:
        clear_sync(engine)
        counts[name] = _count(fn, args.units)
    base_total, base = counts["hand-written"]
    for name, (total, per_function) in counts.items():
        print(f"{name:<18} {total:7.1f} calls per unit  ({total - base_total:+.1f} over hand-written)")
        if args.diff and name != "hand-written":
            more = {key: n - base.get(key, 0.0) for key, n in per_function.items()}
            for (file, line, function), n in sorted(more.items(), key=lambda item: -item[1]):
                if n >= 0.5:
                    print(f"    {n:+5.1f}  {function}  ({Path(file).name}:{line})")
    if args.own:
        clear_sync(engine)
        _own_time(decorated, hand, args.units)
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
