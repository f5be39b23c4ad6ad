"""Planning a decorated function, once, when decorating: `plan_function` and the `FunctionPlan` it makes.

A decorated call does no `inspect` work: `plan_function` decides here which parameter gets
which service (by annotation, `_match`, else by snake-case name, `_match_by_name`; parameters
marked ``= injected()``, `_marked`), which parameters get the session, what signature
frameworks see (`_visible_signature`), how injected values are placed among the caller's
arguments (`layout`, `marked_tail`), and refuses what a unit cannot honour
(`check_unit_options`, the session classes, positional-only and reserved parameters).
The call path that runs a plan is `uow._calling`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session
from sqlalchemy.orm import Session, scoped_session

from uow._database import Database
from uow._failures import mismatch_error
from uow._markers import Injected
from uow._providers import (
    SESSION_PARAM_NAMES,
    DirectBuilder,
    ServicePlan,
    SessionNeed,
    describe,
    direct_builder,
    import_path,
    is_session_annotation,
    plan_service,
    session_classes,
    single_positional,
    underlying_function,
    unwrap_annotated,
)
from uow._retry import Retry, parse_retry
from uow._stack import Propagation, UnitSpec, spec_database
from uow._timeout import parse_timeout
from uow.errors import ConfigurationError, InjectionError

__all__ = [
    "PLAN_ATTRIBUTE",
    "FunctionPlan",
    "check_late_session_classes",
    "check_unit_options",
    "database_of",
    "layout",
    "marked_tail",
    "plan_function",
    "plan_of",
]

RESERVED_KEYWORDS = ("session", "connection")

# A function's own parameter of one of these names is the framework's (Litestar calls
# `retrieve_user_handler(token, connection)`, guards `guard(connection, handler)`): it is passed
# through untouched, and its value finds the request's unit the way `connection=` does.
FRAMEWORK_CONNECTION_NAMES = ("connection", "request")

PLAN_ATTRIBUTE = "__uow_plan__"
"""The attribute of a decorated function that holds its `FunctionPlan` (read it with `plan_of`)."""


def plan_of(fn: object) -> FunctionPlan | None:
    """The plan of a function decorated by uow (`with_services`, `unit_of_work`), or None for any other."""
    plan = getattr(fn, PLAN_ATTRIBUTE, None)
    return plan if isinstance(plan, FunctionPlan) else None


def database_of(plan: FunctionPlan) -> Database | None:
    """The Database the plan's units open on: its own, else the configured default (None when neither is set)."""
    return spec_database(plan.spec)


class FunctionPlan:
    """Everything a decorated call needs, decided at decoration time."""

    __slots__ = (
        "build_on_session",
        "caller_names",
        "checked_database",
        "connection_param",
        "fn",
        "is_async",
        "label",
        "layout_after",
        "positional_targets",
        "retry",
        "session_classes",
        "session_params",
        "sole_service",
        "spec",
        "target_names",
        "targets",
        "visible_annotations",
        "visible_signature",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        is_async: bool,
        targets: list[tuple[str, ServicePlan]],
        session_params: tuple[str, ...],
        positional_targets: tuple[tuple[int, str], ...],
        visible_signature: inspect.Signature,
        visible_annotations: dict[str, Any],
        spec: UnitSpec,
        retry: Retry | None,
        session_classes: tuple[SessionNeed, ...] = (),
        connection_param: tuple[str, int | None] | None = None,
    ) -> None:
        self.fn = fn
        self.label = spec.label
        self.is_async = is_async
        self.targets = targets
        self.target_names = frozenset(name for name, _ in targets)
        self.session_params = session_params
        self.positional_targets = positional_targets
        # `layout` places a value positionally only when the caller passed more positional arguments than this.
        self.layout_after = positional_targets[0][0] if positional_targets else sys.maxsize
        self.visible_signature = visible_signature
        self.visible_annotations = visible_annotations
        self.spec = spec
        self.retry = retry
        # The function's own framework connection parameter: (name, index among the caller's positional arguments).
        self.connection_param = connection_param
        # Keywords a caller may pass that need the general path (they change the unit or the injected values).
        self.caller_names = frozenset((*RESERVED_KEYWORDS, *self.target_names, *session_params))
        # Session subclasses the function or its services were annotated with, still to be checked against
        # the Database when it is only known at call time (see `check_late_session_classes`).
        self.session_classes = session_classes
        self.checked_database: Database | None = None
        # The direct path (the wrappers of `uow._calling`) is the general path (`call_sync` / `call_async`)
        # minus the steps that would do nothing: taken when there is no retry policy, timeout or commit_on=,
        # every service is a class built from the session alone, no `override` block is active and the
        # caller passed none of `caller_names`. `build_on_session(session)` builds the services then;
        # None: every call takes the general path. A function with its own framework connection parameter
        # takes it too, joining the request unit that parameter points at without `_decide`.
        general = retry is not None or bool(session_classes) or spec.timeout is not None or bool(spec.commit_on)
        self.build_on_session: DirectBuilder | None = None if general else direct_builder(targets, session_params)
        # The commonest direct case, built inline by the wrappers: (parameter, class) for the one service,
        # a class taking the session as its first argument; else None.
        self.sole_service = single_positional(targets, session_params) if self.build_on_session is not None else None


def _function_label(fn: Callable[..., Any]) -> str:
    if isinstance(fn, functools.partial):
        return f"functools.partial({_function_label(fn.func)[:-2]})()"
    if not inspect.isroutine(fn) and not isinstance(fn, type) and callable(fn):
        return f"{describe(type(fn))}.__call__()"
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}()"


ISOLATION_LEVELS = ("READ COMMITTED", "READ UNCOMMITTED", "REPEATABLE READ", "SERIALIZABLE", "SNAPSHOT")


def check_unit_options(*, read_only: object, isolation_level: object, label: str) -> None:
    """Refuse, when declared, `read_only=` / `isolation_level=` values a unit cannot honour."""
    if not isinstance(read_only, bool):
        raise ConfigurationError(f"{label}: read_only= needs True or False, got {read_only!r}")
    if isolation_level is None:
        return
    level = isolation_level.replace("_", " ").upper() if isinstance(isolation_level, str) else None
    if level == "AUTOCOMMIT":
        raise ConfigurationError(
            f"{label}: isolation_level='AUTOCOMMIT' would commit every statement on its own, so the unit "
            "could not roll back; leave isolation_level unset, or run the statement outside a unit of work"
        )
    if level not in ISOLATION_LEVELS:
        raise ConfigurationError(
            f"{label}: unknown isolation_level {isolation_level!r}: use one of "
            + ", ".join(map(repr, ISOLATION_LEVELS[:4]))
            + " ('SNAPSHOT' on SQL Server), or leave it unset for the database's default"
        )


def _refuse_descriptor(fn: Any, decorator: str) -> None:
    getter = getattr(fn, "fget", None) or getattr(fn, "func", None)
    name = f"{getattr(getter, '__module__', '?')}.{getattr(getter, '__qualname__', '?')}"
    raise InjectionError(
        f"@{decorator} cannot decorate the {type(fn).__name__} {name}: a {type(fn).__name__} is read as an "
        f"attribute, not called; put @{decorator} below @{type(fn).__name__} so that it decorates the getter, "
        "or make it a method"
    )


def _is_async_callable(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(underlying_function(fn))


def _is_generator_callable(fn: Any) -> bool:
    target = underlying_function(fn)
    return any(check(f) for f in (fn, target) for check in (inspect.isasyncgenfunction, inspect.isgeneratorfunction))


def plan_function(
    fn: Callable[..., Any],
    services: Sequence[Any],
    *,
    database: Database | None,
    propagation: Propagation | str,
    read_only: bool,
    isolation_level: str | None,
    retry: Retry | int | None,
    decorator: str,
    timeout: float | None = None,
    **events: Any,
) -> FunctionPlan:
    """Decide, once, how to call `fn` with `services` injected."""
    if isinstance(fn, (property, functools.cached_property)):
        _refuse_descriptor(fn, decorator)
    if not callable(fn):
        raise TypeError(f"@{decorator} must decorate a function, got {fn!r}")
    label = _function_label(fn)
    if services and getattr(fn, "__name__", "") == "<lambda>":
        raise InjectionError(
            f"@{decorator} cannot decorate a lambda ({label}): a lambda has no annotations to match services "
            "against; write a 'def' function"
        )
    is_async = _is_async_callable(fn)
    if not is_async and _is_generator_callable(fn):
        raise InjectionError(
            f"@{decorator} cannot decorate the generator function {label}: a unit must end when the call returns; "
            "return a list instead, or open 'with provide_services(...)' inside the generator"
        )
    check_unit_options(read_only=read_only, isolation_level=isolation_level, label=label)
    spec = UnitSpec(
        database=database,
        propagation=propagation,
        read_only=read_only,
        isolation_level=isolation_level,
        label=label,
        timeout=parse_timeout(timeout, label=label),
        **events,
    )
    retry_policy = parse_retry(retry, label=label)
    if spec.database is not None and spec.database.is_async != is_async:
        raise mismatch_error(label, spec.database, function_is_async=is_async)
    _check_duplicates(services, label)
    _check_stacked(fn, services, label, decorator)
    plans = [plan_service(service, for_async=is_async, owner=label) for service in services]
    signature = inspect.signature(fn)
    parameters = signature.parameters
    hints = _resolved_hints(fn)

    targets = _match(plans, parameters, hints, label)
    targets += _marked(parameters, hints, targets, is_async=is_async, label=label)
    taken = {name for name, _ in targets}
    session_params = tuple(
        name
        for name, parameter in parameters.items()
        if name not in taken and _wants_session(parameter, hints.get(name, parameter.annotation))
    )
    hidden = taken | set(session_params)
    for name in hidden:
        if parameters[name].kind is inspect.Parameter.POSITIONAL_ONLY:
            raise InjectionError(
                f"{label}: parameter {name!r} is positional-only, but uow passes services and the session by keyword; "
                "remove the '/' before it"
            )
    for reserved in RESERVED_KEYWORDS:
        if reserved in parameters and reserved not in hidden and reserved not in FRAMEWORK_CONNECTION_NAMES:
            raise InjectionError(
                f"{label}: parameter {reserved!r} clashes with the {reserved}= keyword that uow reserves for callers; "
                + _rename_hint(reserved)
            )
    needs: list[SessionNeed] = [
        (f"parameter {name!r}", session_classes(hints.get(name, parameters[name].annotation)))
        for name in session_params
    ]
    for _, service_plan in targets:
        needs.extend(service_plan.sessions)
    required = _session_requirements(needs, label=label, is_async=is_async)
    if required and spec.database is not None:
        _check_session_classes(required, spec.database, label=label)
    positional = [
        name
        for name, parameter in parameters.items()
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    positional_targets = tuple((positional.index(name), name) for name in positional if name in hidden)
    connection_param = _connection_parameter(parameters, [name for name in positional if name not in hidden], hidden)
    visible = _visible_signature(signature, hidden, hints)
    annotations = {
        k: v
        for k, v in (getattr(underlying_function(fn), "__annotations__", None) or {}).items()
        if k not in hidden and (k == "return" or k in parameters)
    }
    return FunctionPlan(
        fn,
        is_async=is_async,
        targets=targets,
        session_params=session_params,
        positional_targets=positional_targets,
        visible_signature=visible,
        visible_annotations=annotations,
        spec=spec,
        retry=retry_policy,
        session_classes=required if spec.database is None else (),
        connection_param=connection_param,
    )


_BASE_SESSION_TYPES: tuple[type, ...] = (Session, AsyncSession, scoped_session, async_scoped_session)


def _session_requirements(needs: list[SessionNeed], *, label: str, is_async: bool) -> tuple[SessionNeed, ...]:
    """Refuse a session annotation of the other kind (AsyncSession in a sync function, or the reverse);
    return those naming a Session subclass, which the Database's sessions must be instances of."""
    required: list[SessionNeed] = []
    for where, classes in needs:
        if not classes:
            continue
        fitting = tuple(c for c in classes if issubclass(c, (AsyncSession, async_scoped_session)) == is_async)
        if not fitting:
            names = " | ".join(c.__name__ for c in classes)
            raise InjectionError(
                f"{label} is {'async' if is_async else 'sync'}, so its unit's session is "
                f"{'an AsyncSession' if is_async else 'a Session'}, but {where} is annotated {names}: "
                + (
                    "annotate it AsyncSession (sqlalchemy.ext.asyncio), or make the function a plain 'def'"
                    if is_async
                    else "annotate it Session (sqlalchemy.orm), or make the function 'async def'"
                )
            )
        if not any(c in _BASE_SESSION_TYPES for c in fitting):
            required.append((where, fitting))
    return tuple(required)


def _check_session_classes(required: tuple[SessionNeed, ...], database: Database, *, label: str) -> None:
    for factory in (database.session_factory, *database.replica_factories):
        made: type = factory.class_
        for where, classes in required:
            if not issubclass(made, classes):
                wanted = import_path(classes[0])
                raise ConfigurationError(
                    f"{label}: {where} is annotated {wanted}, but {database!r} makes {_made_label(made)} sessions: "
                    f'create it with Database(..., session_options={{"class_": {wanted}}}) '
                    f"(or pass class_={wanted} to your sessionmaker)"
                )


def _made_label(made: type) -> str:
    # sessionmaker subclasses the class it is given, under the same name: name the user's class.
    base = made.__bases__[0] if made.__bases__ else made
    return describe(base if base.__name__ == made.__name__ else made)


def check_late_session_classes(plan: FunctionPlan) -> None:
    """At call time, for a plan decorated before its Database was known: check the configured one, once."""
    database = database_of(plan)
    if database is None or database is plan.checked_database:
        return
    _check_session_classes(plan.session_classes, database, label=plan.label)
    plan.checked_database = database


def _connection_parameter(
    parameters: typing.Mapping[str, inspect.Parameter], visible_positional: list[str], hidden: set[str]
) -> tuple[str, int | None] | None:
    """The function's own `connection` / `request` parameter, and where a caller passes it positionally."""
    for name in FRAMEWORK_CONNECTION_NAMES:
        parameter = parameters.get(name)
        if parameter is None or name in hidden:
            continue
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        return name, visible_positional.index(name) if name in visible_positional else None
    return None


def _visible_signature(signature: inspect.Signature, hidden: set[str], hints: dict[str, Any]) -> inspect.Signature:
    """`signature` without the injected parameters, its annotations evaluated where they can be.

    Under ``from __future__ import annotations`` the annotations are strings, and frameworks
    evaluate them in the globals of the function they inspect: the wrapper's are uow's, so
    typer would lose ``Annotated[str, typer.Option(...)]`` and FastAPI could not find the types.
    """

    def resolved(name: str, annotation: Any) -> Any:
        hint = hints.get(name, annotation)
        return annotation if isinstance(hint, str) else hint

    parameters = [
        parameter.replace(annotation=resolved(name, parameter.annotation))
        for name, parameter in signature.parameters.items()
        if name not in hidden
    ]
    return signature.replace(parameters=parameters, return_annotation=resolved("return", signature.return_annotation))


def _rename_hint(reserved: str) -> str:
    if reserved == "session":
        return "rename the parameter, or annotate it Session/AsyncSession to receive the unit's session"
    return "rename the parameter"


def _check_duplicates(services: Sequence[Any], label: str) -> None:
    seen: set[Any] = set()
    for service in services:
        try:
            duplicate = service in seen
            seen.add(service)
        except TypeError:
            continue
        if duplicate:
            raise InjectionError(f"{label}: service {describe(service)} is listed twice; list each service once")


def _check_stacked(fn: Any, services: Sequence[Any], label: str, decorator: str) -> None:
    """`@with_services(A)` over a function already decorated with `@with_services(A)`."""
    inner = plan_of(fn)
    if inner is None:
        return
    for service in services:
        for _, plan in inner.targets:
            if plan.provider is service or (isinstance(service, type) and plan.service_type is service):
                raise InjectionError(
                    f"{label}: service {plan.label} is already injected by the @with_services below this "
                    f"@{decorator}: the same service is stacked twice; list it in one decorator"
                )


def _resolved_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """Type hints of `fn`, evaluating what can be evaluated now and keeping the rest as strings."""
    target = underlying_function(fn)
    with contextlib.suppress(Exception):
        return typing.get_type_hints(target, include_extras=True)
    namespace = dict(getattr(inspect.unwrap(target), "__globals__", {}))
    annotations = getattr(target, "__annotations__", None) or {}
    return {name: _evaluate_one(annotation, namespace) for name, annotation in annotations.items()}


def _evaluate_one(annotation: Any, namespace: dict[str, Any]) -> Any:
    """An annotation evaluated if it is a string that can be; an unresolvable forward reference stays text."""
    if not isinstance(annotation, str):
        return annotation
    try:
        return eval(annotation, namespace)  # noqa: S307 - the user's own annotation
    except Exception:
        return annotation


def _annotation_matches(annotation: Any, plan: ServicePlan) -> bool:
    annotation = unwrap_annotated(annotation)
    service_type = plan.service_type
    if service_type is None or annotation is inspect.Parameter.empty:
        return False
    if annotation is service_type:
        return True
    if isinstance(service_type, str) and isinstance(annotation, type):
        # A provider's return type imported under TYPE_CHECKING stays text; the parameter's is the class.
        text = service_type.strip("'\"")
        return text.split(".")[-1] == annotation.__name__ and text in (annotation.__name__, annotation.__qualname__)
    if isinstance(annotation, str):
        name = service_type if isinstance(service_type, str) else getattr(service_type, "__name__", None)
        text = annotation.strip("'\"")
        return name is not None and (text == name or text.endswith("." + name) or text.startswith("Annotated[" + name))
    return False


def _type_label(plan: ServicePlan) -> str:
    service_type = plan.service_type
    return describe(service_type) if isinstance(service_type, type) else plan.label


def _match(
    plans: list[ServicePlan], parameters: typing.Mapping[str, inspect.Parameter], hints: dict[str, Any], label: str
) -> list[tuple[str, ServicePlan]]:
    injectable = {
        name: p
        for name, p in parameters.items()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }
    targets: list[tuple[str, ServicePlan]] = []
    owner: dict[str, ServicePlan] = {}
    for plan in plans:
        by_type = [n for n, p in injectable.items() if _annotation_matches(hints.get(n, p.annotation), plan)]
        if len(by_type) > 1:
            raise InjectionError(
                f"{label}: parameters {', '.join(map(repr, by_type))} are all annotated {_type_label(plan)}; "
                "uow cannot tell which one to fill: keep one"
            )
        if by_type and isinstance(plan.service_type, str):
            annotation = unwrap_annotated(hints.get(by_type[0], injectable[by_type[0]].annotation))
            if isinstance(annotation, type):
                plan.resolve_type(annotation)
        chosen = by_type[0] if by_type else _match_by_name(plan, injectable, hints)
        if chosen is None:
            raise InjectionError(
                f"{label} has no parameter for service {plan.label}: add a parameter annotated "
                f"with it, or named {plan.names[0]!r}" + _variadic_hint(parameters)
            )
        if chosen in owner:
            raise InjectionError(
                f"{label}: services {owner[chosen].label} and {plan.label} both want parameter {chosen!r}; "
                "give each its own parameter"
            )
        owner[chosen] = plan
        targets.append((chosen, plan))
    return targets


def _marked(
    parameters: typing.Mapping[str, inspect.Parameter],
    hints: dict[str, Any],
    targets: list[tuple[str, ServicePlan]],
    *,
    is_async: bool,
    label: str,
) -> list[tuple[str, ServicePlan]]:
    """The services of the parameters marked ``= injected()`` that no listed service took."""
    listed = dict(targets)
    marked: list[tuple[str, ServicePlan]] = []
    for name, parameter in parameters.items():
        marker = parameter.default
        if not isinstance(marker, Injected):
            continue
        annotation = hints.get(name, parameter.annotation)
        if name in listed:
            plan = listed[name]
            if marker.provider is not None and marker.provider is not plan.provider:
                raise InjectionError(
                    f"{label}: parameter {name!r} is marked {marker!r}, but the decorator's service {plan.label} "
                    "fills it: name its service in one place"
                )
            continue
        if marker.provider is None and _wants_session(parameter, annotation):
            continue  # the unit's session, as for any parameter annotated Session/AsyncSession
        service = marker.provider if marker.provider is not None else unwrap_annotated(annotation)
        not_a_class = (
            annotation is inspect.Parameter.empty or not isinstance(service, type) or service.__module__ == "builtins"
        )
        if not callable(service) or (marker.provider is None and not_a_class):
            shown = (
                "it has no annotation"
                if annotation is inspect.Parameter.empty
                else f"its annotation {annotation!r} is not a service class"
            )
            raise InjectionError(
                f"{label}: parameter {name!r} is marked injected(), but {shown}: "
                "annotate it with the service class (imported at run time, not only under TYPE_CHECKING), "
                "or name the provider: injected(provide_service)"
            )
        marked.append((name, plan_service(service, for_async=is_async, owner=label)))
    return marked


def _variadic_hint(parameters: typing.Mapping[str, inspect.Parameter]) -> str:
    kinds = {p.kind for p in parameters.values()}
    if kinds & {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}:
        return " (*args and **kwargs cannot receive a service: uow passes each one by keyword to its own parameter)"
    return ""


def _match_by_name(
    plan: ServicePlan, injectable: typing.Mapping[str, inspect.Parameter], hints: dict[str, Any]
) -> str | None:
    for name in plan.names:
        parameter = injectable.get(name)
        if parameter is None:
            continue
        annotation = hints.get(name, parameter.annotation)
        if annotation is inspect.Parameter.empty or annotation is Any:
            return name
        if plan.service_type is None and not is_session_annotation(annotation):
            # A provider that does not say what it returns (provide_widgets -> widgets): its name is all
            # uow has, and the parameter's annotation is the user's word for that type.
            return name
    return None


def _wants_session(parameter: inspect.Parameter, annotation: Any) -> bool:
    if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
        return False
    if annotation is inspect.Parameter.empty:
        return parameter.name in SESSION_PARAM_NAMES
    return is_session_annotation(annotation)


def layout(
    plan: FunctionPlan, args: tuple[Any, ...], kwargs: dict[str, Any], values: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Place injected values: positionally where the caller's positional arguments come after them, else by keyword."""
    kwargs = {**kwargs, **values} if values else kwargs
    if args and plan.positional_targets:
        call_args = list(args)
        for index, name in plan.positional_targets:
            if len(call_args) > index:
                call_args.insert(index, kwargs.pop(name))
            else:
                break
        return tuple(call_args), kwargs
    return args, kwargs


def marked_tail(plan: FunctionPlan) -> tuple[int, tuple[str, ...]] | None:
    """The positional parameters marked ``= injected()`` that end the function's positional ones.

    Type checkers see a marked function's own signature, so they accept a fake service passed
    positionally there (``add("ann", fake)``); returns how many positional parameters the caller
    sees before them and their names, or None when there are none.
    """
    injected_names = plan.target_names | set(plan.session_params)
    positional = [
        parameter
        for parameter in inspect.signature(plan.fn).parameters.values()
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    tail: list[str] = []
    for parameter in reversed(positional):
        if not (isinstance(parameter.default, Injected) and parameter.name in injected_names):
            break
        tail.insert(0, parameter.name)
    if not tail:
        return None
    visible = sum(1 for parameter in positional if parameter.name not in injected_names)
    return visible, tuple(tail)
