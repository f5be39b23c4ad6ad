"""An optional mypy plugin: the decorated function's exact type for every layout, by parameter name.

Enable it with ``plugins = ["uow.mypy"]`` under ``[tool.mypy]`` (or ``plugins = uow.mypy`` in
mypy.ini). Without it mypy and pyright see what the overloads in `uow._typing` express (docs/typing.md); with it mypy also follows what PEP 612 cannot: keyword-only services and services in
any position or order, and parameter names before the services stay usable by keyword. It also
keeps a signature that mentions ``Any`` (arq's ``ctx: dict[Any, Any]``) exact, where mypy's overload
rules would give up and infer ``Any``.

The decorated function is the original minus its injected parameters (the services, and a
``Session``/``AsyncSession`` parameter), plus the keywords a caller may pass: ``session=``,
``connection=`` and each service under its parameter name (the way tests pass fakes). The plugin
mirrors the matching `uow._planning` does at run time (by annotated type, else by snake-case name);
where it cannot tell, it leaves mypy's own answer alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mypy.nodes import ARG_NAMED_OPT, ARG_STAR, ARG_STAR2, ArgKind, TypeInfo
from mypy.plugin import MethodContext, Plugin
from mypy.subtypes import is_same_type
from mypy.types import (
    AnyType,
    CallableType,
    Instance,
    NoneType,
    ProperType,
    Type,
    TypeOfAny,
    UnionType,
    get_proper_type,
)

__all__ = ["plugin"]

_DECORATOR = re.compile(r"^uow\._typing\.Decorator[1-9]\.__call__$")
_SESSION_TYPES = ("sqlalchemy.orm.session.Session", "sqlalchemy.ext.asyncio.session.AsyncSession")
_SESSION_NAMES = ("session", "db_session")
_RESERVED = ("session", "connection")


def _snake_case(name: str) -> str:
    # The same rule as uow._providers.snake_case.
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def _is_untyped(typ: ProperType) -> bool:
    return isinstance(typ, AnyType) and typ.type_of_any in (TypeOfAny.unannotated, TypeOfAny.explicit)


def _is_session(typ: ProperType, name: str | None) -> bool:
    if isinstance(typ, AnyType) and typ.type_of_any == TypeOfAny.unannotated:
        return name in _SESSION_NAMES
    if isinstance(typ, UnionType):
        members = [get_proper_type(item) for item in typ.items]
        members = [m for m in members if not isinstance(m, NoneType)]
        return bool(members) and all(_is_session(m, None) for m in members)
    return isinstance(typ, Instance) and any(typ.type.has_base(base) for base in _SESSION_TYPES)


def _service_params(fn: CallableType, services: list[ProperType]) -> list[int] | None:
    """The index of the parameter each service goes to, in the order given; None when one has none."""
    injectable = [i for i, kind in enumerate(fn.arg_kinds) if kind not in (ARG_STAR, ARG_STAR2)]
    chosen: list[int] = []
    for service in services:
        by_type = [
            i
            for i in injectable
            if i not in chosen
            and not _is_untyped(get_proper_type(fn.arg_types[i]))
            and is_same_type(fn.arg_types[i], service)
        ]
        if len(by_type) == 1:
            chosen.append(by_type[0])
            continue
        if by_type or not isinstance(service, Instance):
            return None
        wanted = _snake_case(service.type.name)
        by_name = [
            i
            for i in injectable
            if i not in chosen and fn.arg_names[i] == wanted and _is_untyped(get_proper_type(fn.arg_types[i]))
        ]
        if not by_name:
            return None
        chosen.append(by_name[0])
    return chosen


def _session_instances(ctx: MethodContext) -> list[Type]:
    found: list[Type] = []
    modules = getattr(ctx.api, "modules", {})
    for fullname in _SESSION_TYPES:
        module, _, name = fullname.rpartition(".")
        symbol = modules[module].names.get(name) if module in modules else None
        if symbol is not None and isinstance(symbol.node, TypeInfo):
            found.append(Instance(symbol.node, []))
    return found or [ctx.api.named_generic_type("builtins.object", [])]


def _decorated(ctx: MethodContext) -> Type:
    fn = get_proper_type(ctx.arg_types[0][0]) if ctx.arg_types and ctx.arg_types[0] else None
    decorator = get_proper_type(ctx.type)
    if not isinstance(fn, CallableType) or not isinstance(decorator, Instance) or fn.is_ellipsis_args:
        return ctx.default_return_type
    services = [get_proper_type(arg) for arg in decorator.args]
    if any(isinstance(service, AnyType) for service in services):
        return ctx.default_return_type  # a provider without a return annotation: nothing to match by type
    chosen = _service_params(fn, services)
    if chosen is None:
        return ctx.default_return_type
    hidden = set(chosen)
    hidden.update(
        i
        for i, kind in enumerate(fn.arg_kinds)
        if i not in hidden
        and kind not in (ARG_STAR, ARG_STAR2)
        and _is_session(get_proper_type(fn.arg_types[i]), fn.arg_names[i])
    )
    if any(fn.arg_names[i] in _RESERVED for i in range(len(fn.arg_kinds)) if i not in hidden):
        return ctx.default_return_type  # uow refuses such a function at decoration time

    kept = [i for i in range(len(fn.arg_kinds)) if i not in hidden]
    kinds: list[ArgKind] = [fn.arg_kinds[i] for i in kept]
    names: list[str | None] = [fn.arg_names[i] for i in kept]
    types: list[Type] = [fn.arg_types[i] for i in kept]
    session_type = UnionType([*_session_instances(ctx), NoneType()])
    extra: list[tuple[str, Type]] = [
        *((fn.arg_names[i] or "", fn.arg_types[i]) for i in chosen),
        ("session", session_type),
        ("connection", ctx.api.named_generic_type("builtins.object", [])),
    ]
    at = kinds.index(ARG_STAR2) if ARG_STAR2 in kinds else len(kinds)
    for offset, (name, typ) in enumerate(extra):
        kinds.insert(at + offset, ARG_NAMED_OPT)
        names.insert(at + offset, name)
        types.insert(at + offset, typ)
    return fn.copy_modified(arg_types=types, arg_kinds=kinds, arg_names=names)


class _UowPlugin(Plugin):
    def get_method_hook(self, fullname: str) -> Callable[[MethodContext], Type] | None:
        return _decorated if _DECORATOR.match(fullname) else None


def plugin(version: str) -> type[Plugin]:
    """mypy's entry point."""
    return _UowPlugin
