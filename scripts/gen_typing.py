"""Write src/uow/_typing.py: the overloads type checkers read for `with_services` (N services x K leading parameters).

    python scripts/gen_typing.py          # rewrite src/uow/_typing.py
    python scripts/gen_typing.py --check  # exit 1 if the committed file is not what this script writes

The module is regular (one capture protocol per number of services and layout, one `DecoratorN`
per number of services), so it is written by this script, wrapped the way ``ruff format`` wraps it
(line length 120); edit this script, not the module. tests/test_typing.py checks they agree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "src" / "uow" / "_typing.py"

MAX_SERVICES = 6
MAX_LEADING = 3  # positional parameters before the services (`self`, `cls`, a job's `ctx`, a command's options)

DOCSTRING = '''\
"""What type checkers see of `with_services` and `unit_of_work`: the decorators and the decorated functions.

Nothing here runs: at run time `with_services` returns a `_ServicesDecorator` and the decorated
function is a plain function (see `uow._calling.wrap`). These classes only teach mypy and pyright
the shapes (docs/typing.md has the table of layouts).

PEP 612 can strip only leading positional parameters, so each layout the checkers can follow is
one `__call__` overload of `DecoratorN`:

- the services first: ``(users, roles, *rest)`` becomes `Bound` ``(*rest)``;
- after 1-3 positional parameters (``self``, ``cls``, a job's ``ctx``, a command's options):
  ``(a, users, *rest)`` becomes `After1` ``(a, /, *rest)``, a descriptor that binds ``a`` like a
  method does (`Bound` once bound), and so on for `After2` / `After3`;
- a ``Session``/``AsyncSession`` parameter right before the services (first, or after ``self``)
  receives the unit's session, so it is removed with them (`SS`). Not one right after them: a
  parameter typed ``object`` or ``Any`` there would be taken for it, and pyright cannot tell;
- anything else falls back to ``Callable[..., R]``: calls type-check and the return type is kept.

A function whose injected parameters are marked ``= injected()`` needs none of that: those
parameters have defaults, so its own signature is already what callers may pass. `unit_of_work`
returns it as `Kept` (`KeptMethod` when it has a first positional parameter, which binds like a
method's ``self``), which adds the ``session=`` / ``connection=`` calls. `with_services(...)`
cannot do the same: an overload cannot tell a marked function from an unmarked one (a default's
value is not part of a callable's type), and an unmarked function kept as it is would make its
callers pass its services.

The overloads go from the most specific layout to the least: the first that matches wins.

Each `_FnN_<form>` protocol captures a function twice, with the services removed (``P``) and
with them (``PB``: the parameters after the first K and a session before the services), so the
decorated function also accepts a service passed by keyword under its own name (how tests pass
fakes), checked against the parameter's type. A call passing ``session=`` or ``connection=``
matches a looser overload: its other arguments are not checked (PEP 612 cannot add a keyword to
``P``), its return type is kept.
"""
'''

PRELUDE = """
# This module follows one regular pattern (N services x K leading parameters); keep it so.
# It is written by scripts/gen_typing.py: edit that script and run it, not this file.
# pyright infers the capture protocols' variance from their ParamSpec overloads as covariant where
# mypy (rightly) wants the parameters contravariant; and it calls the ``connection=`` overload
# shadowed by the ``session=`` one, which it is not (each needs its own keyword). mypy checks both.
# pyright: reportInvalidTypeVarUse=false, reportOverlappingOverload=false

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar, overload

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from typing_extensions import ParamSpec, Self
"""

# The layouts, most specific first: (name suffix, leading positional parameters, a session before the services).
FORMS = (("S0", 0, True), ("0", 0, False), ("1S0", 1, True), ("1", 1, False), ("2", 2, False), ("3", 3, False))
# Forms whose overload mypy reports as overlapping the next one with incompatible types (it is not, for
# the functions it can match: the first overload that matches wins).
OVERLAP_IGNORED = ("0", "1", "2")

LOOSE_CALLS = """\
    @overload
    def __call__(self, *args: Any, session: Session | AsyncSession, **kwargs: Any) -> R: ...
    @overload
    def __call__(self, *args: Any, connection: object, **kwargs: Any) -> R: ...
"""

GET_DOC = """\
    # An instance method through an instance; a classmethod (its `cls` is the owner); else unbound
    # (a method through its class, a staticmethod).
"""


WIDTH = 120


def signature(indent: str, head: str, params: list[str], tail: str) -> str:
    """``{head}{params}{tail}`` on one line, else wrapped as ruff format wraps a call or a def."""
    one = indent + head + ", ".join(params) + tail
    if len(one) <= WIDTH:
        return one
    inner = indent + "    "
    middle = inner + ", ".join(params)
    if len(middle) <= WIDTH:
        return f"{indent}{head}\n{middle}\n{indent}{tail}"
    return f"{indent}{head}\n" + "".join(f"{inner}{param},\n" for param in params) + f"{indent}{tail}"


def class_header(name: str, base: str, items: list[str]) -> str:
    one = f"class {name}({base}[{', '.join(items)}]):"
    if len(one) <= WIDTH:
        return one
    middle = f"    {base}[{', '.join(items)}]"
    if len(middle) <= WIDTH:
        return f"class {name}(\n{middle}\n):"
    return f"class {name}(\n    {base}[\n        " + ", ".join(items) + "\n    ]\n):"


def _plural(k: int) -> str:
    return "parameter" if k == 1 else "parameters"


def kept() -> str:
    return (
        "class Kept(Generic[P, R]):\n"
        '    """A function whose injected parameters are marked ``= injected()``: its own signature ``(*P) -> R``."""\n'
        "\n"
        "    @overload\n"
        "    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...\n"
        + LOOSE_CALLS
        + "    def __call__(self, *args: Any, **kwargs: Any) -> Any:\n"
        "        raise NotImplementedError\n"
    )


def kept_method() -> str:
    return (
        "class KeptMethod(Generic[A0, P, PB, R]):\n"
        '    """`Kept` for a function with a first positional parameter (``A0``, then ``P``); binds like a method."""\n'
        "\n"
        "    @overload\n"
        "    def __call__(self, *args: PB.args, **kwargs: PB.kwargs) -> R: ...\n"
        + LOOSE_CALLS
        + "    def __call__(self, *args: Any, **kwargs: Any) -> Any:\n"
        "        raise NotImplementedError\n"
        "\n" + GET_DOC + "    @overload\n"
        "    def __get__(self, obj: A0, owner: Any, /) -> Kept[P, R]: ...\n"
        "    @overload\n"
        "    def __get__(self, obj: Any, owner: A0, /) -> Kept[P, R]: ...\n"
        "    @overload\n"
        "    def __get__(self, obj: Any, owner: Any, /) -> Self: ...\n"
        "    def __get__(self, obj: Any, owner: Any, /) -> Any:\n"
        "        raise NotImplementedError\n"
    )


def first_protocol() -> str:
    return (
        "class FnFirst(Protocol[A0_contra, P, PB, R_co]):\n"
        '    """A function with a first positional parameter, captured without it (``P``) and with it (``PB``)."""\n'
        "\n"
        "    @overload\n"
        "    def __call__(self, a0: A0_contra, /, *args: P.args, **kwargs: P.kwargs) -> R_co: ...\n"
        "    @overload\n"
        "    def __call__(self, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...\n"
    )


def typevars() -> str:
    out = ['P = ParamSpec("P")', 'PB = ParamSpec("PB")', 'R = TypeVar("R")', 'R_co = TypeVar("R_co", covariant=True)']
    out += [f'S{i} = TypeVar("S{i}")' for i in range(1, MAX_SERVICES + 1)]
    out += [f'S{i}_contra = TypeVar("S{i}_contra", contravariant=True)' for i in range(1, MAX_SERVICES + 1)]
    out.append('SS = TypeVar("SS", bound="Session | AsyncSession")')
    out.append('SS_contra = TypeVar("SS_contra", bound="Session | AsyncSession", contravariant=True)')
    out += [f'A{i} = TypeVar("A{i}")' for i in range(MAX_LEADING)]
    out += [f'A{i}_contra = TypeVar("A{i}_contra", contravariant=True)' for i in range(MAX_LEADING)]
    return "\n".join(out) + "\n"


def all_names() -> str:
    names = [f"After{k}" for k in range(1, MAX_LEADING + 1)]
    names += ["Bound", "Kept", "KeptMethod", "AnyDecorator"]
    names += [f"Decorator{n}" for n in range(1, MAX_SERVICES + 1)]
    names.append("FnFirst")
    return "__all__ = [\n" + "".join(f'    "{name}",\n' for name in sorted(names)) + "]\n"


def bound() -> str:
    return (
        "class Bound(Generic[P, PB, R]):\n"
        '    """A decorated function with its services removed: ``(*P) -> R``; a service may be passed by its name."""\n'
        "\n"
        "    @overload\n"
        "    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...\n"
        "    @overload\n"
        "    def __call__(self, *args: PB.args, **kwargs: PB.kwargs) -> R: ...\n"
        + LOOSE_CALLS
        + "    def __call__(self, *args: Any, **kwargs: Any) -> Any:\n"
        "        raise NotImplementedError\n"
    )


def after(k: int) -> str:
    leading = [f"A{i}" for i in range(k)]
    params = ", ".join(f"a{i}: A{i}" for i in range(k))
    rest = "Bound[P, PB, R]" if k == 1 else f"After{k - 1}[{', '.join(leading[1:])}, P, PB, R]"
    return (
        f"class After{k}(Generic[{', '.join(leading)}, P, PB, R]):\n"
        f'    """A decorated function whose services follow {k} positional {_plural(k)}; binds like a method."""\n'
        "\n"
        "    @overload\n"
        f"    def __call__(self, {params}, /, *args: P.args, **kwargs: P.kwargs) -> R: ...\n"
        "    @overload\n"
        f"    def __call__(self, {params}, /, *args: PB.args, **kwargs: PB.kwargs) -> R: ...\n"
        + LOOSE_CALLS
        + "    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]  # mypy: positional-only + P.args\n"
        "        raise NotImplementedError\n"
        "\n" + GET_DOC + "    @overload\n"
        f"    def __get__(self, obj: A0, owner: Any, /) -> {rest}: ...\n"
        "    @overload\n"
        f"    def __get__(self, obj: Any, owner: A0, /) -> {rest}: ...\n"
        "    @overload\n"
        "    def __get__(self, obj: Any, owner: Any, /) -> Self: ...\n"
        "    def __get__(self, obj: Any, owner: Any, /) -> Any:\n"
        "        raise NotImplementedError\n"
    )


def protocol(n: int, form: str, k: int, session: bool) -> str:
    leading = [f"A{i}_contra" for i in range(k)]
    services = [f"S{i}_contra" for i in range(1, n + 1)]
    head = [*leading, *(["SS_contra"] if session else []), *services]
    captured = [f"a{i}: A{i}_contra" for i in range(k)] + (["session: SS_contra"] if session else [])
    removed = captured + [f"s{i}: S{i}_contra" for i in range(1, n + 1)]
    kept = [*captured, "/"] if captured else []
    return (
        class_header(f"_Fn{n}_{form}", "Protocol", [*head, "P", "PB", "R_co"])
        + "\n    @overload\n"
        + signature(
            "    ", "def __call__(", ["self", *removed, "/", "*args: P.args", "**kwargs: P.kwargs"], ") -> R_co: ..."
        )
        + "\n    @overload\n"
        + signature("    ", "def __call__(", ["self", *kept, "*args: PB.args", "**kwargs: PB.kwargs"], ") -> R_co: ...")
        + "\n"
    )


def any_decorator() -> str:
    return (
        "class AnyDecorator:\n"
        '    """Typing of a decorator whose services type checkers could not follow: the return type is kept."""\n'
        "\n"
        "    def __call__(self, fn: Callable[..., R], /) -> Callable[..., R]:\n"
        "        raise NotImplementedError\n"
    )


def decorator(n: int) -> str:
    services = [f"S{i}" for i in range(1, n + 1)]
    lines = [f"class Decorator{n}(Generic[{', '.join(services)}]):"]
    for form, k, session in FORMS:
        leading = [f"A{i}" for i in range(k)]
        args = ", ".join([*leading, *(["SS"] if session else []), *services, "P", "PB", "R"])
        result = "Bound[P, PB, R]" if k == 0 else f"After{k}[{', '.join([*leading, 'P', 'PB', 'R'])}]"
        ignore = "  # type: ignore[overload-overlap]" if form in OVERLAP_IGNORED else ""
        lines += ["    @overload", f"    def __call__(self, fn: _Fn{n}_{form}[{args}], /) -> {result}: ...{ignore}"]
    lines += [
        "    @overload",
        "    def __call__(self, fn: Callable[..., R], /) -> Callable[..., R]: ...",
        "    def __call__(self, fn: Any, /) -> Any:",
        "        raise NotImplementedError",
    ]
    return "\n".join(lines) + "\n"


def source() -> str:
    blocks = [bound(), *(after(k) for k in range(1, MAX_LEADING + 1)), kept(), kept_method(), first_protocol()]
    blocks += [protocol(n, form, k, session) for n in range(1, MAX_SERVICES + 1) for form, k, session in FORMS]
    blocks += [any_decorator(), *(decorator(n) for n in range(1, MAX_SERVICES + 1))]
    return DOCSTRING + PRELUDE + "\n" + all_names() + "\n" + typevars() + "\n\n" + "\n\n".join(blocks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if src/uow/_typing.py differs")
    options = parser.parse_args(argv)
    text = source()
    if options.check:
        if TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} is not what scripts/gen_typing.py writes: run it", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
