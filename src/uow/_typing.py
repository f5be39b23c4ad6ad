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

__all__ = [
    "After1",
    "After2",
    "After3",
    "AnyDecorator",
    "Bound",
    "Decorator1",
    "Decorator2",
    "Decorator3",
    "Decorator4",
    "Decorator5",
    "Decorator6",
    "FnFirst",
    "Kept",
    "KeptMethod",
]

P = ParamSpec("P")
PB = ParamSpec("PB")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
S1 = TypeVar("S1")
S2 = TypeVar("S2")
S3 = TypeVar("S3")
S4 = TypeVar("S4")
S5 = TypeVar("S5")
S6 = TypeVar("S6")
S1_contra = TypeVar("S1_contra", contravariant=True)
S2_contra = TypeVar("S2_contra", contravariant=True)
S3_contra = TypeVar("S3_contra", contravariant=True)
S4_contra = TypeVar("S4_contra", contravariant=True)
S5_contra = TypeVar("S5_contra", contravariant=True)
S6_contra = TypeVar("S6_contra", contravariant=True)
SS = TypeVar("SS", bound="Session | AsyncSession")
SS_contra = TypeVar("SS_contra", bound="Session | AsyncSession", contravariant=True)
A0 = TypeVar("A0")
A1 = TypeVar("A1")
A2 = TypeVar("A2")
A0_contra = TypeVar("A0_contra", contravariant=True)
A1_contra = TypeVar("A1_contra", contravariant=True)
A2_contra = TypeVar("A2_contra", contravariant=True)


class Bound(Generic[P, PB, R]):
    """A decorated function with its services removed: ``(*P) -> R``; a service may be passed by its name."""

    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...
    @overload
    def __call__(self, *args: PB.args, **kwargs: PB.kwargs) -> R: ...
    @overload
    def __call__(self, *args: Any, session: Session | AsyncSession, **kwargs: Any) -> R: ...
    @overload
    def __call__(self, *args: Any, connection: object, **kwargs: Any) -> R: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


class After1(Generic[A0, P, PB, R]):
    """A decorated function whose services follow 1 positional parameter; binds like a method."""

    @overload
    def __call__(self, a0: A0, /, *args: P.args, **kwargs: P.kwargs) -> R: ...
    @overload
    def __call__(self, a0: A0, /, *args: PB.args, **kwargs: PB.kwargs) -> R: ...
    @overload
    def __call__(self, *args: Any, session: Session | AsyncSession, **kwargs: Any) -> R: ...
    @overload
    def __call__(self, *args: Any, connection: object, **kwargs: Any) -> R: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]  # mypy: positional-only + P.args
        raise NotImplementedError

    # An instance method through an instance; a classmethod (its `cls` is the owner); else unbound
    # (a method through its class, a staticmethod).
    @overload
    def __get__(self, obj: A0, owner: Any, /) -> Bound[P, PB, R]: ...
    @overload
    def __get__(self, obj: Any, owner: A0, /) -> Bound[P, PB, R]: ...
    @overload
    def __get__(self, obj: Any, owner: Any, /) -> Self: ...
    def __get__(self, obj: Any, owner: Any, /) -> Any:
        raise NotImplementedError


class After2(Generic[A0, A1, P, PB, R]):
    """A decorated function whose services follow 2 positional parameters; binds like a method."""

    @overload
    def __call__(self, a0: A0, a1: A1, /, *args: P.args, **kwargs: P.kwargs) -> R: ...
    @overload
    def __call__(self, a0: A0, a1: A1, /, *args: PB.args, **kwargs: PB.kwargs) -> R: ...
    @overload
    def __call__(self, *args: Any, session: Session | AsyncSession, **kwargs: Any) -> R: ...
    @overload
    def __call__(self, *args: Any, connection: object, **kwargs: Any) -> R: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]  # mypy: positional-only + P.args
        raise NotImplementedError

    # An instance method through an instance; a classmethod (its `cls` is the owner); else unbound
    # (a method through its class, a staticmethod).
    @overload
    def __get__(self, obj: A0, owner: Any, /) -> After1[A1, P, PB, R]: ...
    @overload
    def __get__(self, obj: Any, owner: A0, /) -> After1[A1, P, PB, R]: ...
    @overload
    def __get__(self, obj: Any, owner: Any, /) -> Self: ...
    def __get__(self, obj: Any, owner: Any, /) -> Any:
        raise NotImplementedError


class After3(Generic[A0, A1, A2, P, PB, R]):
    """A decorated function whose services follow 3 positional parameters; binds like a method."""

    @overload
    def __call__(self, a0: A0, a1: A1, a2: A2, /, *args: P.args, **kwargs: P.kwargs) -> R: ...
    @overload
    def __call__(self, a0: A0, a1: A1, a2: A2, /, *args: PB.args, **kwargs: PB.kwargs) -> R: ...
    @overload
    def __call__(self, *args: Any, session: Session | AsyncSession, **kwargs: Any) -> R: ...
    @overload
    def __call__(self, *args: Any, connection: object, **kwargs: Any) -> R: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]  # mypy: positional-only + P.args
        raise NotImplementedError

    # An instance method through an instance; a classmethod (its `cls` is the owner); else unbound
    # (a method through its class, a staticmethod).
    @overload
    def __get__(self, obj: A0, owner: Any, /) -> After2[A1, A2, P, PB, R]: ...
    @overload
    def __get__(self, obj: Any, owner: A0, /) -> After2[A1, A2, P, PB, R]: ...
    @overload
    def __get__(self, obj: Any, owner: Any, /) -> Self: ...
    def __get__(self, obj: Any, owner: Any, /) -> Any:
        raise NotImplementedError


class Kept(Generic[P, R]):
    """A function whose injected parameters are marked ``= injected()``: its own signature ``(*P) -> R``."""

    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...
    @overload
    def __call__(self, *args: Any, session: Session | AsyncSession, **kwargs: Any) -> R: ...
    @overload
    def __call__(self, *args: Any, connection: object, **kwargs: Any) -> R: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


class KeptMethod(Generic[A0, P, PB, R]):
    """`Kept` for a function with a first positional parameter (``A0``, then ``P``); binds like a method."""

    @overload
    def __call__(self, *args: PB.args, **kwargs: PB.kwargs) -> R: ...
    @overload
    def __call__(self, *args: Any, session: Session | AsyncSession, **kwargs: Any) -> R: ...
    @overload
    def __call__(self, *args: Any, connection: object, **kwargs: Any) -> R: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    # An instance method through an instance; a classmethod (its `cls` is the owner); else unbound
    # (a method through its class, a staticmethod).
    @overload
    def __get__(self, obj: A0, owner: Any, /) -> Kept[P, R]: ...
    @overload
    def __get__(self, obj: Any, owner: A0, /) -> Kept[P, R]: ...
    @overload
    def __get__(self, obj: Any, owner: Any, /) -> Self: ...
    def __get__(self, obj: Any, owner: Any, /) -> Any:
        raise NotImplementedError


class FnFirst(Protocol[A0_contra, P, PB, R_co]):
    """A function with a first positional parameter, captured without it (``P``) and with it (``PB``)."""

    @overload
    def __call__(self, a0: A0_contra, /, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    @overload
    def __call__(self, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn1_S0(Protocol[SS_contra, S1_contra, P, PB, R_co]):
    @overload
    def __call__(self, session: SS_contra, s1: S1_contra, /, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    @overload
    def __call__(self, session: SS_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn1_0(Protocol[S1_contra, P, PB, R_co]):
    @overload
    def __call__(self, s1: S1_contra, /, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    @overload
    def __call__(self, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn1_1S0(Protocol[A0_contra, SS_contra, S1_contra, P, PB, R_co]):
    @overload
    def __call__(
        self, a0: A0_contra, session: SS_contra, s1: S1_contra, /, *args: P.args, **kwargs: P.kwargs
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, session: SS_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn1_1(Protocol[A0_contra, S1_contra, P, PB, R_co]):
    @overload
    def __call__(self, a0: A0_contra, s1: S1_contra, /, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn1_2(Protocol[A0_contra, A1_contra, S1_contra, P, PB, R_co]):
    @overload
    def __call__(self, a0: A0_contra, a1: A1_contra, s1: S1_contra, /, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, a1: A1_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn1_3(Protocol[A0_contra, A1_contra, A2_contra, S1_contra, P, PB, R_co]):
    @overload
    def __call__(
        self, a0: A0_contra, a1: A1_contra, a2: A2_contra, s1: S1_contra, /, *args: P.args, **kwargs: P.kwargs
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, a1: A1_contra, a2: A2_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn2_S0(Protocol[SS_contra, S1_contra, S2_contra, P, PB, R_co]):
    @overload
    def __call__(
        self, session: SS_contra, s1: S1_contra, s2: S2_contra, /, *args: P.args, **kwargs: P.kwargs
    ) -> R_co: ...
    @overload
    def __call__(self, session: SS_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn2_0(Protocol[S1_contra, S2_contra, P, PB, R_co]):
    @overload
    def __call__(self, s1: S1_contra, s2: S2_contra, /, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    @overload
    def __call__(self, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn2_1S0(Protocol[A0_contra, SS_contra, S1_contra, S2_contra, P, PB, R_co]):
    @overload
    def __call__(
        self, a0: A0_contra, session: SS_contra, s1: S1_contra, s2: S2_contra, /, *args: P.args, **kwargs: P.kwargs
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, session: SS_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn2_1(Protocol[A0_contra, S1_contra, S2_contra, P, PB, R_co]):
    @overload
    def __call__(self, a0: A0_contra, s1: S1_contra, s2: S2_contra, /, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn2_2(Protocol[A0_contra, A1_contra, S1_contra, S2_contra, P, PB, R_co]):
    @overload
    def __call__(
        self, a0: A0_contra, a1: A1_contra, s1: S1_contra, s2: S2_contra, /, *args: P.args, **kwargs: P.kwargs
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, a1: A1_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn2_3(Protocol[A0_contra, A1_contra, A2_contra, S1_contra, S2_contra, P, PB, R_co]):
    @overload
    def __call__(
        self,
        a0: A0_contra,
        a1: A1_contra,
        a2: A2_contra,
        s1: S1_contra,
        s2: S2_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, a1: A1_contra, a2: A2_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn3_S0(Protocol[SS_contra, S1_contra, S2_contra, S3_contra, P, PB, R_co]):
    @overload
    def __call__(
        self, session: SS_contra, s1: S1_contra, s2: S2_contra, s3: S3_contra, /, *args: P.args, **kwargs: P.kwargs
    ) -> R_co: ...
    @overload
    def __call__(self, session: SS_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn3_0(Protocol[S1_contra, S2_contra, S3_contra, P, PB, R_co]):
    @overload
    def __call__(self, s1: S1_contra, s2: S2_contra, s3: S3_contra, /, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    @overload
    def __call__(self, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn3_1S0(Protocol[A0_contra, SS_contra, S1_contra, S2_contra, S3_contra, P, PB, R_co]):
    @overload
    def __call__(
        self,
        a0: A0_contra,
        session: SS_contra,
        s1: S1_contra,
        s2: S2_contra,
        s3: S3_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, session: SS_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn3_1(Protocol[A0_contra, S1_contra, S2_contra, S3_contra, P, PB, R_co]):
    @overload
    def __call__(
        self, a0: A0_contra, s1: S1_contra, s2: S2_contra, s3: S3_contra, /, *args: P.args, **kwargs: P.kwargs
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn3_2(Protocol[A0_contra, A1_contra, S1_contra, S2_contra, S3_contra, P, PB, R_co]):
    @overload
    def __call__(
        self,
        a0: A0_contra,
        a1: A1_contra,
        s1: S1_contra,
        s2: S2_contra,
        s3: S3_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, a1: A1_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn3_3(Protocol[A0_contra, A1_contra, A2_contra, S1_contra, S2_contra, S3_contra, P, PB, R_co]):
    @overload
    def __call__(
        self,
        a0: A0_contra,
        a1: A1_contra,
        a2: A2_contra,
        s1: S1_contra,
        s2: S2_contra,
        s3: S3_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, a1: A1_contra, a2: A2_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn4_S0(Protocol[SS_contra, S1_contra, S2_contra, S3_contra, S4_contra, P, PB, R_co]):
    @overload
    def __call__(
        self,
        session: SS_contra,
        s1: S1_contra,
        s2: S2_contra,
        s3: S3_contra,
        s4: S4_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, session: SS_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn4_0(Protocol[S1_contra, S2_contra, S3_contra, S4_contra, P, PB, R_co]):
    @overload
    def __call__(
        self, s1: S1_contra, s2: S2_contra, s3: S3_contra, s4: S4_contra, /, *args: P.args, **kwargs: P.kwargs
    ) -> R_co: ...
    @overload
    def __call__(self, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn4_1S0(Protocol[A0_contra, SS_contra, S1_contra, S2_contra, S3_contra, S4_contra, P, PB, R_co]):
    @overload
    def __call__(
        self,
        a0: A0_contra,
        session: SS_contra,
        s1: S1_contra,
        s2: S2_contra,
        s3: S3_contra,
        s4: S4_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, session: SS_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn4_1(Protocol[A0_contra, S1_contra, S2_contra, S3_contra, S4_contra, P, PB, R_co]):
    @overload
    def __call__(
        self,
        a0: A0_contra,
        s1: S1_contra,
        s2: S2_contra,
        s3: S3_contra,
        s4: S4_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn4_2(Protocol[A0_contra, A1_contra, S1_contra, S2_contra, S3_contra, S4_contra, P, PB, R_co]):
    @overload
    def __call__(
        self,
        a0: A0_contra,
        a1: A1_contra,
        s1: S1_contra,
        s2: S2_contra,
        s3: S3_contra,
        s4: S4_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, a1: A1_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn4_3(Protocol[A0_contra, A1_contra, A2_contra, S1_contra, S2_contra, S3_contra, S4_contra, P, PB, R_co]):
    @overload
    def __call__(
        self,
        a0: A0_contra,
        a1: A1_contra,
        a2: A2_contra,
        s1: S1_contra,
        s2: S2_contra,
        s3: S3_contra,
        s4: S4_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, a1: A1_contra, a2: A2_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn5_S0(Protocol[SS_contra, S1_contra, S2_contra, S3_contra, S4_contra, S5_contra, P, PB, R_co]):
    @overload
    def __call__(
        self,
        session: SS_contra,
        s1: S1_contra,
        s2: S2_contra,
        s3: S3_contra,
        s4: S4_contra,
        s5: S5_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, session: SS_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn5_0(Protocol[S1_contra, S2_contra, S3_contra, S4_contra, S5_contra, P, PB, R_co]):
    @overload
    def __call__(
        self,
        s1: S1_contra,
        s2: S2_contra,
        s3: S3_contra,
        s4: S4_contra,
        s5: S5_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn5_1S0(Protocol[A0_contra, SS_contra, S1_contra, S2_contra, S3_contra, S4_contra, S5_contra, P, PB, R_co]):
    @overload
    def __call__(
        self,
        a0: A0_contra,
        session: SS_contra,
        s1: S1_contra,
        s2: S2_contra,
        s3: S3_contra,
        s4: S4_contra,
        s5: S5_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, session: SS_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn5_1(Protocol[A0_contra, S1_contra, S2_contra, S3_contra, S4_contra, S5_contra, P, PB, R_co]):
    @overload
    def __call__(
        self,
        a0: A0_contra,
        s1: S1_contra,
        s2: S2_contra,
        s3: S3_contra,
        s4: S4_contra,
        s5: S5_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn5_2(Protocol[A0_contra, A1_contra, S1_contra, S2_contra, S3_contra, S4_contra, S5_contra, P, PB, R_co]):
    @overload
    def __call__(
        self,
        a0: A0_contra,
        a1: A1_contra,
        s1: S1_contra,
        s2: S2_contra,
        s3: S3_contra,
        s4: S4_contra,
        s5: S5_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, a1: A1_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn5_3(
    Protocol[A0_contra, A1_contra, A2_contra, S1_contra, S2_contra, S3_contra, S4_contra, S5_contra, P, PB, R_co]
):
    @overload
    def __call__(
        self,
        a0: A0_contra,
        a1: A1_contra,
        a2: A2_contra,
        s1: S1_contra,
        s2: S2_contra,
        s3: S3_contra,
        s4: S4_contra,
        s5: S5_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, a1: A1_contra, a2: A2_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn6_S0(Protocol[SS_contra, S1_contra, S2_contra, S3_contra, S4_contra, S5_contra, S6_contra, P, PB, R_co]):
    @overload
    def __call__(
        self,
        session: SS_contra,
        s1: S1_contra,
        s2: S2_contra,
        s3: S3_contra,
        s4: S4_contra,
        s5: S5_contra,
        s6: S6_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, session: SS_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn6_0(Protocol[S1_contra, S2_contra, S3_contra, S4_contra, S5_contra, S6_contra, P, PB, R_co]):
    @overload
    def __call__(
        self,
        s1: S1_contra,
        s2: S2_contra,
        s3: S3_contra,
        s4: S4_contra,
        s5: S5_contra,
        s6: S6_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn6_1S0(
    Protocol[A0_contra, SS_contra, S1_contra, S2_contra, S3_contra, S4_contra, S5_contra, S6_contra, P, PB, R_co]
):
    @overload
    def __call__(
        self,
        a0: A0_contra,
        session: SS_contra,
        s1: S1_contra,
        s2: S2_contra,
        s3: S3_contra,
        s4: S4_contra,
        s5: S5_contra,
        s6: S6_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, session: SS_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn6_1(Protocol[A0_contra, S1_contra, S2_contra, S3_contra, S4_contra, S5_contra, S6_contra, P, PB, R_co]):
    @overload
    def __call__(
        self,
        a0: A0_contra,
        s1: S1_contra,
        s2: S2_contra,
        s3: S3_contra,
        s4: S4_contra,
        s5: S5_contra,
        s6: S6_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn6_2(
    Protocol[A0_contra, A1_contra, S1_contra, S2_contra, S3_contra, S4_contra, S5_contra, S6_contra, P, PB, R_co]
):
    @overload
    def __call__(
        self,
        a0: A0_contra,
        a1: A1_contra,
        s1: S1_contra,
        s2: S2_contra,
        s3: S3_contra,
        s4: S4_contra,
        s5: S5_contra,
        s6: S6_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, a1: A1_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class _Fn6_3(
    Protocol[
        A0_contra, A1_contra, A2_contra, S1_contra, S2_contra, S3_contra, S4_contra, S5_contra, S6_contra, P, PB, R_co
    ]
):
    @overload
    def __call__(
        self,
        a0: A0_contra,
        a1: A1_contra,
        a2: A2_contra,
        s1: S1_contra,
        s2: S2_contra,
        s3: S3_contra,
        s4: S4_contra,
        s5: S5_contra,
        s6: S6_contra,
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R_co: ...
    @overload
    def __call__(self, a0: A0_contra, a1: A1_contra, a2: A2_contra, /, *args: PB.args, **kwargs: PB.kwargs) -> R_co: ...


class AnyDecorator:
    """Typing of a decorator whose services type checkers could not follow: the return type is kept."""

    def __call__(self, fn: Callable[..., R], /) -> Callable[..., R]:
        raise NotImplementedError


class Decorator1(Generic[S1]):
    @overload
    def __call__(self, fn: _Fn1_S0[SS, S1, P, PB, R], /) -> Bound[P, PB, R]: ...
    @overload
    def __call__(self, fn: _Fn1_0[S1, P, PB, R], /) -> Bound[P, PB, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: _Fn1_1S0[A0, SS, S1, P, PB, R], /) -> After1[A0, P, PB, R]: ...
    @overload
    def __call__(self, fn: _Fn1_1[A0, S1, P, PB, R], /) -> After1[A0, P, PB, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: _Fn1_2[A0, A1, S1, P, PB, R], /) -> After2[A0, A1, P, PB, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: _Fn1_3[A0, A1, A2, S1, P, PB, R], /) -> After3[A0, A1, A2, P, PB, R]: ...
    @overload
    def __call__(self, fn: Callable[..., R], /) -> Callable[..., R]: ...
    def __call__(self, fn: Any, /) -> Any:
        raise NotImplementedError


class Decorator2(Generic[S1, S2]):
    @overload
    def __call__(self, fn: _Fn2_S0[SS, S1, S2, P, PB, R], /) -> Bound[P, PB, R]: ...
    @overload
    def __call__(self, fn: _Fn2_0[S1, S2, P, PB, R], /) -> Bound[P, PB, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: _Fn2_1S0[A0, SS, S1, S2, P, PB, R], /) -> After1[A0, P, PB, R]: ...
    @overload
    def __call__(self, fn: _Fn2_1[A0, S1, S2, P, PB, R], /) -> After1[A0, P, PB, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: _Fn2_2[A0, A1, S1, S2, P, PB, R], /) -> After2[A0, A1, P, PB, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: _Fn2_3[A0, A1, A2, S1, S2, P, PB, R], /) -> After3[A0, A1, A2, P, PB, R]: ...
    @overload
    def __call__(self, fn: Callable[..., R], /) -> Callable[..., R]: ...
    def __call__(self, fn: Any, /) -> Any:
        raise NotImplementedError


class Decorator3(Generic[S1, S2, S3]):
    @overload
    def __call__(self, fn: _Fn3_S0[SS, S1, S2, S3, P, PB, R], /) -> Bound[P, PB, R]: ...
    @overload
    def __call__(self, fn: _Fn3_0[S1, S2, S3, P, PB, R], /) -> Bound[P, PB, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: _Fn3_1S0[A0, SS, S1, S2, S3, P, PB, R], /) -> After1[A0, P, PB, R]: ...
    @overload
    def __call__(self, fn: _Fn3_1[A0, S1, S2, S3, P, PB, R], /) -> After1[A0, P, PB, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: _Fn3_2[A0, A1, S1, S2, S3, P, PB, R], /) -> After2[A0, A1, P, PB, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: _Fn3_3[A0, A1, A2, S1, S2, S3, P, PB, R], /) -> After3[A0, A1, A2, P, PB, R]: ...
    @overload
    def __call__(self, fn: Callable[..., R], /) -> Callable[..., R]: ...
    def __call__(self, fn: Any, /) -> Any:
        raise NotImplementedError


class Decorator4(Generic[S1, S2, S3, S4]):
    @overload
    def __call__(self, fn: _Fn4_S0[SS, S1, S2, S3, S4, P, PB, R], /) -> Bound[P, PB, R]: ...
    @overload
    def __call__(self, fn: _Fn4_0[S1, S2, S3, S4, P, PB, R], /) -> Bound[P, PB, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: _Fn4_1S0[A0, SS, S1, S2, S3, S4, P, PB, R], /) -> After1[A0, P, PB, R]: ...
    @overload
    def __call__(self, fn: _Fn4_1[A0, S1, S2, S3, S4, P, PB, R], /) -> After1[A0, P, PB, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: _Fn4_2[A0, A1, S1, S2, S3, S4, P, PB, R], /) -> After2[A0, A1, P, PB, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: _Fn4_3[A0, A1, A2, S1, S2, S3, S4, P, PB, R], /) -> After3[A0, A1, A2, P, PB, R]: ...
    @overload
    def __call__(self, fn: Callable[..., R], /) -> Callable[..., R]: ...
    def __call__(self, fn: Any, /) -> Any:
        raise NotImplementedError


class Decorator5(Generic[S1, S2, S3, S4, S5]):
    @overload
    def __call__(self, fn: _Fn5_S0[SS, S1, S2, S3, S4, S5, P, PB, R], /) -> Bound[P, PB, R]: ...
    @overload
    def __call__(self, fn: _Fn5_0[S1, S2, S3, S4, S5, P, PB, R], /) -> Bound[P, PB, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: _Fn5_1S0[A0, SS, S1, S2, S3, S4, S5, P, PB, R], /) -> After1[A0, P, PB, R]: ...
    @overload
    def __call__(self, fn: _Fn5_1[A0, S1, S2, S3, S4, S5, P, PB, R], /) -> After1[A0, P, PB, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: _Fn5_2[A0, A1, S1, S2, S3, S4, S5, P, PB, R], /) -> After2[A0, A1, P, PB, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: _Fn5_3[A0, A1, A2, S1, S2, S3, S4, S5, P, PB, R], /) -> After3[A0, A1, A2, P, PB, R]: ...
    @overload
    def __call__(self, fn: Callable[..., R], /) -> Callable[..., R]: ...
    def __call__(self, fn: Any, /) -> Any:
        raise NotImplementedError


class Decorator6(Generic[S1, S2, S3, S4, S5, S6]):
    @overload
    def __call__(self, fn: _Fn6_S0[SS, S1, S2, S3, S4, S5, S6, P, PB, R], /) -> Bound[P, PB, R]: ...
    @overload
    def __call__(self, fn: _Fn6_0[S1, S2, S3, S4, S5, S6, P, PB, R], /) -> Bound[P, PB, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: _Fn6_1S0[A0, SS, S1, S2, S3, S4, S5, S6, P, PB, R], /) -> After1[A0, P, PB, R]: ...
    @overload
    def __call__(self, fn: _Fn6_1[A0, S1, S2, S3, S4, S5, S6, P, PB, R], /) -> After1[A0, P, PB, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: _Fn6_2[A0, A1, S1, S2, S3, S4, S5, S6, P, PB, R], /) -> After2[A0, A1, P, PB, R]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(self, fn: _Fn6_3[A0, A1, A2, S1, S2, S3, S4, S5, S6, P, PB, R], /) -> After3[A0, A1, A2, P, PB, R]: ...
    @overload
    def __call__(self, fn: Callable[..., R], /) -> Callable[..., R]: ...
    def __call__(self, fn: Any, /) -> Any:
        raise NotImplementedError
