"""Case 5: how the cost per call grows with the number of injected services and with nesting depth.

Every call joins a unit already active, so only the machinery is measured. Each uow
variant is compared with the same call written by hand (the services built on the
session and passed in); the ``+µs`` column is uow's own cost, which must stay flat or
grow linearly with a small constant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session

from benchmarks.common import sqlite_engine, sync_factory
from benchmarks.harness import Case, Setup, Variant
from uow import Database, unit_of_work, with_services


class _Service:
    def __init__(self, session: Session) -> None:
        self.session = session


class S0(_Service): ...


class S1(_Service): ...


class S2(_Service): ...


class S3(_Service): ...


class S4(_Service): ...


class S5(_Service): ...


class S6(_Service): ...


class S7(_Service): ...


class S8(_Service): ...


class S9(_Service): ...


SERVICES: tuple[type[_Service], ...] = (S0, S1, S2, S3, S4, S5, S6, S7, S8, S9)


def one(s0: S0) -> int:
    return 1


def two(s0: S0, s1: S1) -> int:
    return 2


def five(s0: S0, s1: S1, s2: S2, s3: S3, s4: S4) -> int:
    return 5


def ten(s0: S0, s1: S1, s2: S2, s3: S3, s4: S4, s5: S5, s6: S6, s7: S7, s8: S8, s9: S9) -> int:
    return 10


TARGETS: dict[int, Callable[..., int]] = {1: one, 2: two, 5: five, 10: ten}


def _by_hand(fn: Callable[..., int], count: int, session: Session) -> Callable[[], int]:
    classes = SERVICES[:count]
    return lambda: fn(*[cls(session) for cls in classes])


def _chain_by_hand(depth: int, session: Session) -> Callable[[], int]:
    """`depth` plain functions, each building its service on the session and calling the next."""
    inner: Callable[[Session], int] | None = None
    for _ in range(depth):

        def level(session: Session, _next: Callable[[Session], int] | None = inner) -> int:
            S0(session)
            return 1 if _next is None else _next(session) + 1

        inner = level
    assert inner is not None
    outer = inner
    return lambda: outer(session)


def _chain_decorated(depth: int, db: Database) -> Callable[[], int]:
    """`depth` functions decorated with @with_services(S0), each calling the next (each joins the outer unit)."""
    inner: Callable[[], int] | None = None
    for _ in range(depth):

        def level(s0: S0, _next: Callable[[], int] | None = inner) -> int:
            return 1 if _next is None else _next() + 1

        inner = with_services(S0, database=db)(level)
    assert inner is not None
    return inner


@contextmanager
def services_scale() -> Iterator[Setup]:
    engine = sqlite_engine()
    db = Database(session_factory=sync_factory(engine))
    try:
        with unit_of_work(database=db) as session:
            variants: list[Variant] = []
            for count, fn in TARGETS.items():
                hand = f"by hand, {count} service{'s' if count > 1 else ''}"
                decorated: Any = with_services(*SERVICES[:count], database=db)(fn)
                variants.append(Variant(hand, _by_hand(fn, count, session), kind="baseline"))
                variants.append(Variant(f"@with_services, {count}", decorated, baseline=hand))
            yield Setup(variants)
    finally:
        engine.dispose()


@contextmanager
def depth_scale() -> Iterator[Setup]:
    engine = sqlite_engine()
    db = Database(session_factory=sync_factory(engine))
    try:
        with unit_of_work(database=db) as session:
            variants: list[Variant] = []
            for depth in (1, 5, 20):
                hand = f"by hand, depth {depth}"
                variants.append(Variant(hand, _chain_by_hand(depth, session), calls=depth, kind="baseline"))
                variants.append(
                    Variant(f"@with_services, depth {depth}", _chain_decorated(depth, db), baseline=hand, calls=depth)
                )
            yield Setup(variants)
    finally:
        engine.dispose()


CASES = [
    Case(
        "scale-services",
        "cost per call by number of injected services (joined unit)",
        "a joined call injecting 1, 2, 5 and 10 services, against the same call with the services built by hand",
        services_scale,
        False,
        3000,
        "call",
    ),
    Case(
        "scale-depth",
        "cost per call by nesting depth (each level a decorated call)",
        "decorated functions calling each other 1, 5 and 20 deep inside one unit, per call, "
        "against plain functions passing the session down",
        depth_scale,
        False,
        300,
        "call",
    ),
]
