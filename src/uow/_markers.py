"""`injected()`: the optional default that marks a parameter as filled by uow.

``users: UserService = injected()`` says "uow passes this one" where the parameter is: the
decorators (`with_services`, `unit_of_work`) inject it whatever its position, and, because the
parameter has a default, type checkers see the decorated function's own signature with that
parameter optional, exact in every layout (docs/typing.md).
"""

from __future__ import annotations

from typing import Any, TypeVar, overload

from uow._providers import describe

__all__ = ["Injected", "injected"]

T = TypeVar("T")


class Injected:
    """The value `injected()` returns; the decorators recognise it as a parameter's default."""

    __slots__ = ("provider",)

    def __init__(self, provider: Any) -> None:
        self.provider = provider

    def __repr__(self) -> str:
        return "injected()" if self.provider is None else f"injected({describe(self.provider)})"


@overload
def injected() -> Any: ...
@overload
def injected(provider: type[T], /) -> T: ...
@overload
def injected(provider: Any, /) -> Any: ...
def injected(provider: Any = None, /) -> Any:
    """Mark a parameter as injected: ``users: UserService = injected()``.

    The service is the parameter's annotation (a class, built as ``cls(session=...)``), or the
    provider given: ``users: UserService = injected(provide_users)``. On a parameter annotated
    ``Session`` / ``AsyncSession`` it receives the unit's session. A caller may still pass the
    parameter by keyword (a fake in a test), exactly as for a listed service.
    """
    return Injected(provider)
