"""Signature planning and the decorators: `with_services`, `unit_of_work`, `provide_services`.

A decorated call does no `inspect` work: `plan_function` decides, once, which parameter
gets which service, what signature frameworks see, and how the call is laid out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import sys
import time
import typing
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session
from sqlalchemy.orm import Session, scoped_session

from uow import _observe
from uow._database import Database, get_default_database
from uow._failures import is_interrupt, note_secondary
from uow._markers import Injected
from uow._providers import (
    SESSION_PARAM_NAMES,
    DirectBuilder,
    ServicePlan,
    SessionNeed,
    build_async,
    build_sync,
    close_async,
    close_sync,
    current_overrides,
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
from uow._retry import Retry, describe_error, parse_retry
from uow._stack import (
    ActiveUnit,
    Propagation,
    UnitSpec,
    begin_async,
    begin_sync,
    enter_async,
    enter_sync,
    exit_async,
    exit_sync,
    find_frame,
    join_innermost,
    join_request,
)
from uow._timeout import begin_deadline, parse_timeout
from uow._transaction import Transaction
from uow.errors import ConfigurationError, InjectionError

if TYPE_CHECKING:
    from uow._observe import Observer

__all__ = ["FunctionPlan", "find_connection", "plan_function", "register_connection_resolver", "resolve_connection"]

logger = logging.getLogger("uow")

RESERVED_KEYWORDS = ("session", "connection")

# A function's own parameter of one of these names is the framework's (Litestar calls
# `retrieve_user_handler(token, connection)`, guards `guard(connection, handler)`): it is passed
# through untouched, and its value finds the request's unit the way `connection=` does.
FRAMEWORK_CONNECTION_NAMES = ("connection", "request")

BOTH_SESSION_AND_CONNECTION = "Cannot provide both 'session' and 'connection' - choose one"
NO_SERVICES = "At least one service provider is required"

# Framework integrations teach `connection=` how to find a request's transaction.
ConnectionResolver = Callable[[Any], "Transaction | None"]
_connection_resolvers: list[ConnectionResolver] = []


def register_connection_resolver(resolver: ConnectionResolver) -> None:
    """Called by a framework integration: `resolver(connection)` returns that request's transaction, or None."""
    if resolver not in _connection_resolvers:
        _connection_resolvers.append(resolver)


def find_connection(connection: Any) -> Transaction | None:
    """The request transaction a framework integration keeps for `connection`, or None."""
    for resolver in _connection_resolvers:
        tx = resolver(connection)
        if tx is not None:
            return tx
    return None


def resolve_connection(connection: Any, *, what: str) -> Transaction:
    """The request transaction a framework integration keeps for `connection`."""
    tx = find_connection(connection)
    if tx is not None:
        return tx
    raise ConfigurationError(
        f"{what} was given connection={type(connection).__name__}, but no framework integration knows it: "
        "install the request unit of your framework (uow.integrations.litestar.UnitOfWorkPlugin, "
        "uow.integrations.starlette.UnitOfWorkMiddleware, ...) or pass session= instead"
    )


class FunctionPlan:
    """Everything a decorated call needs, decided at decoration time."""

    __slots__ = (
        "caller_names",
        "checked_database",
        "connection_param",
        "direct",
        "fn",
        "is_async",
        "layout_after",
        "positional_targets",
        "retry",
        "session_classes",
        "session_params",
        "single",
        "spec",
        "target_names",
        "targets",
        "visible_annotations",
        "visible_signature",
        "what",
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
        self.what = spec.label
        self.is_async = is_async
        self.targets = targets
        self.target_names = frozenset(name for name, _ in targets)
        self.session_params = session_params
        self.positional_targets = positional_targets
        # `_layout` places a value positionally only when the caller passed more positional arguments than this.
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
        # the Database when it is only known at call time (see `_check_late_session_classes`).
        self.session_classes = session_classes
        self.checked_database: Database | None = None
        # The direct path of `call_sync`/`call_async` is the general path minus the steps that would do
        # nothing: it is taken when there is no retry policy, every service is a class built from the
        # session alone, no `override` block is active and the caller passed none of `caller_names`.
        # A function with its own framework connection parameter gets a direct path of its own (see
        # `_connection_sync_wrapper`): the request unit that parameter points at, joined without `_decide`.
        general = retry is not None or bool(session_classes) or spec.timeout is not None or bool(spec.commit_on)
        self.direct: DirectBuilder | None = None if general else direct_builder(targets, session_params)
        # The commonest direct case, built inline by the wrappers: one service class taking the session first.
        self.single = single_positional(targets, session_params) if self.direct is not None else None


def _function_label(fn: Callable[..., Any]) -> str:
    if isinstance(fn, functools.partial):
        return f"functools.partial({_function_label(fn.func)[:-2]})()"
    if not inspect.isroutine(fn) and not isinstance(fn, type) and callable(fn):
        return f"{describe(type(fn))}.__call__()"
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}()"


ISOLATION_LEVELS = ("READ COMMITTED", "READ UNCOMMITTED", "REPEATABLE READ", "SERIALIZABLE", "SNAPSHOT")


def check_unit_options(*, read_only: object, isolation_level: object, what: str) -> None:
    """Refuse, when declared, `read_only=` / `isolation_level=` values a unit cannot honour."""
    if not isinstance(read_only, bool):
        raise ConfigurationError(f"{what}: read_only= needs True or False, got {read_only!r}")
    if isolation_level is None:
        return
    level = isolation_level.replace("_", " ").upper() if isinstance(isolation_level, str) else None
    if level == "AUTOCOMMIT":
        raise ConfigurationError(
            f"{what}: isolation_level='AUTOCOMMIT' would commit every statement on its own, so the unit "
            "could not roll back; leave isolation_level unset, or run the statement outside a unit of work"
        )
    if level not in ISOLATION_LEVELS:
        raise ConfigurationError(
            f"{what}: unknown isolation_level {isolation_level!r}: use one of "
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
    what = _function_label(fn)
    if services and getattr(fn, "__name__", "") == "<lambda>":
        raise InjectionError(
            f"@{decorator} cannot decorate a lambda ({what}): a lambda has no annotations to match services "
            "against; write a 'def' function"
        )
    is_async = _is_async_callable(fn)
    if not is_async and _is_generator_callable(fn):
        raise InjectionError(
            f"@{decorator} cannot decorate the generator function {what}: a unit must end when the call returns; "
            "return a list instead, or open 'with provide_services(...)' inside the generator"
        )
    check_unit_options(read_only=read_only, isolation_level=isolation_level, what=what)
    spec = UnitSpec(
        database=database,
        propagation=propagation,
        read_only=read_only,
        isolation_level=isolation_level,
        label=what,
        timeout=parse_timeout(timeout, what=what),
        **events,
    )
    retry_policy = parse_retry(retry, what=what)
    if spec.database is not None and spec.database.is_async != is_async:
        raise ConfigurationError(
            f"{what} is {'async' if is_async else 'sync'} but {spec.database!r} is "
            f"{'async' if spec.database.is_async else 'sync'}: "
            + (
                "make the function 'async def' or give it an async Database"
                if spec.database.is_async
                else "make the function a plain 'def' or give it a sync Database (sqlite://, postgresql+psycopg://)"
            )
        )
    _check_duplicates(services, what)
    _check_stacked(fn, services, what, decorator)
    plans = [plan_service(service, for_async=is_async, owner=what) for service in services]
    signature = inspect.signature(fn)
    parameters = signature.parameters
    hints = _resolved_hints(fn)

    targets = _match(plans, parameters, hints, what)
    targets += _marked(parameters, hints, targets, is_async=is_async, what=what)
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
                f"{what}: parameter {name!r} is positional-only, but uow passes services and the session by keyword; "
                "remove the '/' before it"
            )
    for reserved in RESERVED_KEYWORDS:
        if reserved in parameters and reserved not in hidden and reserved not in FRAMEWORK_CONNECTION_NAMES:
            raise InjectionError(
                f"{what}: parameter {reserved!r} clashes with the {reserved}= keyword that uow reserves for callers; "
                + _rename_hint(reserved)
            )
    needs: list[SessionNeed] = [
        (f"parameter {name!r}", session_classes(hints.get(name, parameters[name].annotation)))
        for name in session_params
    ]
    for _, service_plan in targets:
        needs.extend(service_plan.sessions)
    required = _session_requirements(needs, what=what, is_async=is_async)
    if required and spec.database is not None:
        _check_session_classes(required, spec.database, what=what)
    positional = [
        name
        for name, parameter in parameters.items()
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    positional_targets = tuple((positional.index(name), name) for name in positional if name in hidden)
    connection_param = _framework_connection(parameters, [name for name in positional if name not in hidden], hidden)
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


def _session_requirements(needs: list[SessionNeed], *, what: str, is_async: bool) -> tuple[SessionNeed, ...]:
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
                f"{what} is {'async' if is_async else 'sync'}, so its unit's session is "
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


def _check_session_classes(required: tuple[SessionNeed, ...], database: Database, *, what: str) -> None:
    for factory in (database.session_factory, *database.replica_factories):
        made: type = factory.class_
        for where, classes in required:
            if not issubclass(made, classes):
                wanted = import_path(classes[0])
                raise ConfigurationError(
                    f"{what}: {where} is annotated {wanted}, but {database!r} makes {_made_label(made)} sessions: "
                    f'create it with Database(..., session_options={{"class_": {wanted}}}) '
                    f"(or pass class_={wanted} to your sessionmaker)"
                )


def _made_label(made: type) -> str:
    # sessionmaker subclasses the class it is given, under the same name: name the user's class.
    base = made.__bases__[0] if made.__bases__ else made
    return describe(base if base.__name__ == made.__name__ else made)


def _check_late_session_classes(plan: FunctionPlan) -> None:
    """At call time, for a plan decorated before its Database was known: check the configured one, once."""
    database = get_default_database()
    if database is None or database is plan.checked_database:
        return
    _check_session_classes(plan.session_classes, database, what=plan.what)
    plan.checked_database = database


def _framework_connection(
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


def _check_duplicates(services: Sequence[Any], what: str) -> None:
    seen: set[Any] = set()
    for service in services:
        try:
            duplicate = service in seen
            seen.add(service)
        except TypeError:
            continue
        if duplicate:
            raise InjectionError(f"{what}: service {describe(service)} is listed twice; list each service once")


def _check_stacked(fn: Any, services: Sequence[Any], what: str, decorator: str) -> None:
    """`@with_services(A)` over a function already decorated with `@with_services(A)`."""
    inner: FunctionPlan | None = getattr(fn, "__uow_plan__", None)
    if inner is None:
        return
    for service in services:
        for _, plan in inner.targets:
            if plan.provider is service or (isinstance(service, type) and plan.service_type is service):
                raise InjectionError(
                    f"{what}: service {plan.label} is already injected by the @with_services below this "
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
    plans: list[ServicePlan], parameters: typing.Mapping[str, inspect.Parameter], hints: dict[str, Any], what: str
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
                f"{what}: parameters {', '.join(map(repr, by_type))} are all annotated {_type_label(plan)}; "
                "uow cannot tell which one to fill: keep one"
            )
        if by_type and isinstance(plan.service_type, str):
            annotation = unwrap_annotated(hints.get(by_type[0], injectable[by_type[0]].annotation))
            if isinstance(annotation, type):
                plan.resolve_type(annotation)
        chosen = by_type[0] if by_type else _match_by_name(plan, injectable, hints)
        if chosen is None:
            raise InjectionError(
                f"{what} has no parameter for service {plan.label}: add a parameter annotated "
                f"with it, or named {plan.names[0]!r}" + _variadic_hint(parameters)
            )
        if chosen in owner:
            raise InjectionError(
                f"{what}: services {owner[chosen].label} and {plan.label} both want parameter {chosen!r}; "
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
    what: str,
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
                    f"{what}: parameter {name!r} is marked {marker!r}, but the decorator's service {plan.label} "
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
                f"{what}: parameter {name!r} is marked injected(), but {shown}: "
                "annotate it with the service class (imported at run time, not only under TYPE_CHECKING), "
                "or name the provider: injected(provide_service)"
            )
        marked.append((name, plan_service(service, for_async=is_async, owner=what)))
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


# -- calling ----------------------------------------------------------------------------------


def _pop_caller_keywords(
    plan: FunctionPlan, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, Transaction | None, dict[str, Any]]:
    session = kwargs.pop("session", None)
    request_tx = None
    if plan.connection_param is None:
        connection = kwargs.pop("connection", None)
        if connection is not None:
            if session is not None:
                raise ValueError(BOTH_SESSION_AND_CONNECTION)
            request_tx = resolve_connection(connection, what=plan.what)
    elif session is None:
        request_tx = _own_connection_unit(plan.connection_param, args, kwargs)
    supplied: dict[str, Any] = {}
    if kwargs:
        for name in plan.target_names:
            if name in kwargs:
                supplied[name] = kwargs.pop(name)
    return session, request_tx, supplied


def _own_connection_unit(
    connection_param: tuple[str, int | None], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Transaction | None:
    """The request unit the function's own connection parameter points at; None lets the active unit decide.

    The framework, not the user, passes it, so a value no integration knows (no request unit,
    or one already finished) is no error: the call joins or begins a unit as it would without it.
    """
    name, index = connection_param
    if name in kwargs:
        connection = kwargs[name]
    elif index is not None and len(args) > index:
        connection = args[index]
    else:
        return None
    tx = find_connection(connection) if connection is not None else None
    return tx if tx is not None and not tx.finished else None


def _layout(
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


def _seed_cache(plan: FunctionPlan, supplied: dict[str, Any]) -> dict[Any, Any]:
    cache: dict[Any, Any] = {}
    for name, service_plan in plan.targets:
        if name in supplied:
            key = service_plan.service_type if service_plan.service_type is not None else service_plan.provider
            cache[key] = supplied[name]
    return cache


def _can_retry(plan: FunctionPlan, session: Any, request_tx: Transaction | None) -> bool:
    if plan.retry is None or session is not None or request_tx is not None:
        return False
    if plan.spec.propagation is Propagation.REQUIRES_NEW:
        return True
    database = _database_of(plan)
    return database is not None and find_frame(database) is None


def _database_of(plan: FunctionPlan) -> Database | None:
    return plan.spec.database if plan.spec.database is not None else get_default_database()


def _observe_retries(observer: Observer, plan: FunctionPlan) -> contextlib.AbstractContextManager[None]:
    """One record (one span) for all the attempts of a retried unit: see `uow._observe`."""
    spec = plan.spec
    return observer.retrying(
        function=spec.label,
        database=_database_of(plan),
        propagation=spec.propagation.value,
        read_only=spec.read_only,
        isolation_level=spec.isolation_level,
    )


def _log_retry(plan: FunctionPlan, attempt: int, exc: BaseException, delay: float) -> None:
    assert plan.retry is not None
    # Never the exception's text: SQLAlchemy's carries the statement and its bound parameters.
    logger.warning(
        "uow: %s failed on attempt %d of %d with %s; running it again in %.3fs",
        plan.what,
        attempt,
        plan.retry.attempts,
        describe_error(exc),
        delay,
    )
    if _observe.observer is not None:
        _observe.observer.unit_retried(attempt, exc)


def call_sync(plan: FunctionPlan, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    session, request_tx, supplied = _pop_caller_keywords(plan, args, kwargs)
    if not _can_retry(plan, session, request_tx):
        return _attempt_sync(plan, args, kwargs, session, request_tx, supplied)
    if _observe.observer is not None:
        with _observe_retries(_observe.observer, plan):
            return _retry_sync(plan, args, kwargs, supplied)
    return _retry_sync(plan, args, kwargs, supplied)


def _retry_sync(plan: FunctionPlan, args: tuple[Any, ...], kwargs: dict[str, Any], supplied: dict[str, Any]) -> Any:
    assert plan.retry is not None
    attempt = 1
    while True:
        try:
            return _attempt_sync(plan, args, kwargs, None, None, supplied)
        except Exception as exc:
            if not plan.retry.should_retry(exc, attempt) or plan.spec.commits(exc):
                raise
            delay = plan.retry.delay(attempt)
            _log_retry(plan, attempt, exc, delay)
            time.sleep(delay)
            attempt += 1


def _attempt_sync(
    plan: FunctionPlan,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    session: Any,
    request_tx: Transaction | None,
    supplied: dict[str, Any],
) -> Any:
    unit, unit_session = enter_sync(plan.spec, session=session, request_tx=request_tx)
    deadline = begin_deadline(plan.spec, unit, unit_session, is_async=False) if plan.spec.timeout is not None else None
    closers: list[Any] = []
    try:
        values = _values_sync(plan, unit_session, supplied, closers)
        call_args, call_kwargs = _layout(plan, args, kwargs, values)
        result = plan.fn(*call_args, **call_kwargs)
    except BaseException as exc:
        ending = exc if deadline is None else (deadline.leave(exc) or exc)
        if ending is exc and plan.spec.commits(exc):  # commit_on=: the unit commits, the exception still propagates
            _succeed_sync(unit, closers)
            raise
        _fail_sync(unit, closers, ending)
        if ending is exc:
            raise
        raise ending from exc
    if deadline is not None and (expired := deadline.leave(None)) is not None:
        _fail_sync(unit, closers, expired)
        raise expired
    _succeed_sync(unit, closers)
    return result


def _values_sync(plan: FunctionPlan, session: Any, supplied: dict[str, Any], closers: list[Any]) -> dict[str, Any]:
    values: dict[str, Any] = dict.fromkeys(plan.session_params, session)
    if not plan.targets:
        return values
    cache = _seed_cache(plan, supplied) if supplied else {}
    pending = [(name, p) for name, p in plan.targets if name not in supplied]
    built = build_sync([p for _, p in pending], session, cache, closers)
    values.update(zip((name for name, _ in pending), built, strict=True))
    values.update(supplied)
    return values


def _fail_sync(unit: ActiveUnit, closers: list[Any], exc: BaseException) -> None:
    if closers:
        try:
            close_sync(closers, exc)
        except BaseException as close_error:
            if is_interrupt(close_error):
                exit_sync(unit, close_error)
                raise
            note_secondary(exc, "finishing a provider", close_error)
    exit_sync(unit, exc)


def _succeed_sync(unit: ActiveUnit, closers: list[Any]) -> None:
    if closers:
        try:
            close_sync(closers, None)
        except BaseException as exc:
            exit_sync(unit, exc)
            raise
    exit_sync(unit, None)


async def call_async(plan: FunctionPlan, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    session, request_tx, supplied = _pop_caller_keywords(plan, args, kwargs)
    if not _can_retry(plan, session, request_tx):
        return await _attempt_async(plan, args, kwargs, session, request_tx, supplied)
    if _observe.observer is not None:
        with _observe_retries(_observe.observer, plan):
            return await _retry_async(plan, args, kwargs, supplied)
    return await _retry_async(plan, args, kwargs, supplied)


async def _retry_async(
    plan: FunctionPlan, args: tuple[Any, ...], kwargs: dict[str, Any], supplied: dict[str, Any]
) -> Any:
    assert plan.retry is not None
    attempt = 1
    while True:
        try:
            return await _attempt_async(plan, args, kwargs, None, None, supplied)
        except Exception as exc:
            if not plan.retry.should_retry(exc, attempt) or plan.spec.commits(exc):
                raise
            delay = plan.retry.delay(attempt)
            _log_retry(plan, attempt, exc, delay)
            await asyncio.sleep(delay)
            attempt += 1


async def _attempt_async(
    plan: FunctionPlan,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    session: Any,
    request_tx: Transaction | None,
    supplied: dict[str, Any],
) -> Any:
    unit, unit_session = await enter_async(plan.spec, session=session, request_tx=request_tx)
    deadline = begin_deadline(plan.spec, unit, unit_session, is_async=True) if plan.spec.timeout is not None else None
    closers: list[Any] = []
    try:
        values = await _values_async(plan, unit_session, supplied, closers)
        call_args, call_kwargs = _layout(plan, args, kwargs, values)
        result = await plan.fn(*call_args, **call_kwargs)
    except BaseException as exc:
        ending = exc if deadline is None else (deadline.leave(exc) or exc)
        if ending is exc and plan.spec.commits(exc):  # commit_on=: the unit commits, the exception still propagates
            await _succeed_async(unit, closers)
            raise
        await _fail_async(unit, closers, ending)
        if ending is exc:
            raise
        raise ending from exc
    if deadline is not None and (expired := deadline.leave(None)) is not None:
        await _fail_async(unit, closers, expired)
        raise expired
    await _succeed_async(unit, closers)
    return result


async def _values_async(
    plan: FunctionPlan, session: Any, supplied: dict[str, Any], closers: list[Any]
) -> dict[str, Any]:
    values: dict[str, Any] = dict.fromkeys(plan.session_params, session)
    if not plan.targets:
        return values
    cache = _seed_cache(plan, supplied) if supplied else {}
    pending = [(name, p) for name, p in plan.targets if name not in supplied]
    built = await build_async([p for _, p in pending], session, cache, closers)
    values.update(zip((name for name, _ in pending), built, strict=True))
    values.update(supplied)
    return values


async def _fail_async(unit: ActiveUnit, closers: list[Any], exc: BaseException) -> None:
    if closers:
        try:
            await close_async(closers, exc)
        except BaseException as close_error:
            if is_interrupt(close_error):
                await exit_async(unit, close_error)
                raise
            note_secondary(exc, "finishing a provider", close_error)
    await exit_async(unit, exc)


async def _succeed_async(unit: ActiveUnit, closers: list[Any]) -> None:
    if closers:
        try:
            await close_async(closers, None)
        except BaseException as exc:
            await exit_async(unit, exc)
            raise
    await exit_async(unit, None)


# -- wrapping ---------------------------------------------------------------------------------


def wrap(plan: FunctionPlan) -> Callable[..., Any]:
    """A new function with `plan.fn`'s metadata and its visible signature; the original is left untouched."""
    fn = plan.fn
    wrapper = _async_wrapper(plan) if plan.is_async else _sync_wrapper(plan)
    tail = _marked_tail(plan)
    if tail is not None:
        wrapper = _spreading(wrapper, plan, *tail)
    if inspect.isroutine(fn):
        functools.update_wrapper(wrapper, fn)
    else:
        # A partial or a callable instance: named after the function it runs, without copying its __dict__.
        functools.update_wrapper(wrapper, underlying_function(fn), updated=())
        wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    wrapper.__annotations__ = dict(plan.visible_annotations)
    vars(wrapper).update(__signature__=plan.visible_signature, __uow_plan__=plan)
    return wrapper


def _marked_tail(plan: FunctionPlan) -> tuple[int, tuple[str, ...]] | None:
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


def _spreading(wrapper: Callable[..., Any], plan: FunctionPlan, visible: int, tail: tuple[str, ...]) -> Any:
    """`wrapper`, taking the values a caller passed positionally to the marked tail as its keywords."""
    what = plan.what

    def move(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        extra = args[visible:]
        if len(extra) > len(tail):
            raise InjectionError(f"{what} takes at most {visible + len(tail)} positional arguments ({len(args)} given)")
        for name, value in zip(tail, extra, strict=False):  # extra may be shorter than tail
            if name in kwargs:
                raise InjectionError(f"{what} got multiple values for argument {name!r}")
            kwargs[name] = value
        return args[:visible]

    if plan.is_async:

        async def spreading_async(*args: Any, **kwargs: Any) -> Any:
            if len(args) > visible:
                args = move(args, kwargs)
            return await wrapper(*args, **kwargs)

        return spreading_async

    def spreading(*args: Any, **kwargs: Any) -> Any:
        if len(args) > visible:
            args = move(args, kwargs)
        return wrapper(*args, **kwargs)

    return spreading


# The wrappers below take a direct path when `plan.direct` allows it and the call passes none of
# `plan.caller_names`: the general path (`call_sync` / `call_async`) minus the steps that would do
# nothing there. It is written out here, not in a helper, because every call pays for each frame.


def _sync_wrapper(plan: FunctionPlan) -> Callable[..., Any]:
    direct, caller_names, spec, fn = plan.direct, plan.caller_names, plan.spec, plan.fn
    single_name, single_cls = plan.single if plan.single is not None else ("", None)
    layout_after = plan.layout_after
    if direct is None and plan.session_classes:

        def checked(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("session") is None:
                _check_late_session_classes(plan)
            return call_sync(plan, args, kwargs)

        return checked
    if direct is None:

        def general(*args: Any, **kwargs: Any) -> Any:
            return call_sync(plan, args, kwargs)

        return general
    if plan.connection_param is not None:
        return _connection_sync_wrapper(plan)

    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        if (kwargs and not caller_names.isdisjoint(kwargs)) or current_overrides() is not None:
            return call_sync(plan, args, kwargs)
        joined = join_innermost(spec, False)
        session: Any
        if joined is None:
            unit, session = begin_sync(spec)  # not `enter_sync`: the join was just ruled out
        else:
            unit, tx = joined, joined.transaction
            session = tx.session if tx.session is not None else tx.open_sync()
        try:
            values = {single_name: single_cls(session)} if single_cls is not None else direct(session)
            if kwargs:
                values = {**kwargs, **values}
            if len(args) > layout_after:
                args, values = _layout(plan, args, values, {})
            result = fn(*args, **values)
        except BaseException as exc:
            exit_sync(unit, exc)
            raise
        if joined is None:  # leaving a plain join without an error does nothing (see exit_sync)
            exit_sync(unit, None)
        return result

    return sync_wrapper


def _async_wrapper(plan: FunctionPlan) -> Callable[..., Any]:
    direct, caller_names, spec, fn = plan.direct, plan.caller_names, plan.spec, plan.fn
    single_name, single_cls = plan.single if plan.single is not None else ("", None)
    layout_after = plan.layout_after
    if direct is None and plan.session_classes:

        async def checked(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("session") is None:
                _check_late_session_classes(plan)
            return await call_async(plan, args, kwargs)

        return checked
    if direct is None:

        async def general(*args: Any, **kwargs: Any) -> Any:
            return await call_async(plan, args, kwargs)

        return general
    if plan.connection_param is not None:
        return _connection_async_wrapper(plan)

    async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
        if (kwargs and not caller_names.isdisjoint(kwargs)) or current_overrides() is not None:
            return await call_async(plan, args, kwargs)
        joined = join_innermost(spec, True)
        session: Any
        if joined is None:
            unit, session = await begin_async(spec)  # not `enter_async`: the join was just ruled out
        else:
            unit, tx = joined, joined.transaction
            session = tx.session if tx.session is not None else await tx.open_async()
        try:
            values = {single_name: single_cls(session)} if single_cls is not None else direct(session)
            if kwargs:
                values = {**kwargs, **values}
            if len(args) > layout_after:
                args, values = _layout(plan, args, values, {})
            result = await fn(*args, **values)
        except BaseException as exc:
            await exit_async(unit, exc)
            raise
        if joined is None:  # leaving a plain join without an error does nothing (see exit_async)
            await exit_async(unit, None)
        return result

    return async_wrapper


# A function with its own framework connection parameter (a Starlette endpoint's `request`, a Litestar
# guard's `connection`): the general path reads that parameter and, when it points at a request unit that
# has not finished, decides with ``request_tx=`` that unit. These wrappers take the same steps directly when
# that unit is the innermost one (`join_request`: a plain join of it) or when the parameter points at no
# unit (then as `sync_wrapper`: `join_innermost` or `begin_sync`); everything else goes the general way.


def _request_of(name: str, index: int | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Transaction | None:
    """The unfinished request transaction the connection parameter points at, as `_own_connection_unit` finds it."""
    if name in kwargs:
        connection = kwargs[name]
    elif index is not None and len(args) > index:
        connection = args[index]
    else:
        return None
    tx = find_connection(connection) if connection is not None else None
    return tx if tx is not None and not tx.finished else None


def _connection_sync_wrapper(plan: FunctionPlan) -> Callable[..., Any]:
    direct, spec, fn = plan.direct, plan.spec, plan.fn
    assert direct is not None and plan.connection_param is not None
    connection_name, connection_index = plan.connection_param
    # The parameter is the function's own: passing it by keyword is the framework's doing, not a caller's ask.
    caller_names = plan.caller_names - {connection_name}
    single_name, single_cls = plan.single if plan.single is not None else ("", None)
    layout_after = plan.layout_after

    def connection_sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        if (kwargs and not caller_names.isdisjoint(kwargs)) or current_overrides() is not None:
            return call_sync(plan, args, kwargs)
        request_tx = _request_of(connection_name, connection_index, args, kwargs)
        session: Any
        if request_tx is not None:
            joined = join_request(spec, request_tx, False)
            if joined is None:
                return call_sync(plan, args, kwargs)
        else:
            joined = join_innermost(spec, False)
        if joined is None:
            unit, session = begin_sync(spec)
        else:
            unit, tx = joined, joined.transaction
            session = tx.session if tx.session is not None else tx.open_sync()
        try:
            values = {single_name: single_cls(session)} if single_cls is not None else direct(session)
            if kwargs:
                values = {**kwargs, **values}
            if len(args) > layout_after:
                args, values = _layout(plan, args, values, {})
            result = fn(*args, **values)
        except BaseException as exc:
            exit_sync(unit, exc)
            raise
        if joined is None:
            exit_sync(unit, None)
        return result

    return connection_sync_wrapper


def _connection_async_wrapper(plan: FunctionPlan) -> Callable[..., Any]:
    direct, spec, fn = plan.direct, plan.spec, plan.fn
    assert direct is not None and plan.connection_param is not None
    connection_name, connection_index = plan.connection_param
    caller_names = plan.caller_names - {connection_name}
    single_name, single_cls = plan.single if plan.single is not None else ("", None)
    layout_after = plan.layout_after

    async def connection_async_wrapper(*args: Any, **kwargs: Any) -> Any:
        if (kwargs and not caller_names.isdisjoint(kwargs)) or current_overrides() is not None:
            return await call_async(plan, args, kwargs)
        request_tx = _request_of(connection_name, connection_index, args, kwargs)
        session: Any
        if request_tx is not None:
            joined = join_request(spec, request_tx, True)
            if joined is None:
                return await call_async(plan, args, kwargs)
        else:
            joined = join_innermost(spec, True)
        if joined is None:
            unit, session = await begin_async(spec)
        else:
            unit, tx = joined, joined.transaction
            session = tx.session if tx.session is not None else await tx.open_async()
        try:
            values = {single_name: single_cls(session)} if single_cls is not None else direct(session)
            if kwargs:
                values = {**kwargs, **values}
            if len(args) > layout_after:
                args, values = _layout(plan, args, values, {})
            result = await fn(*args, **values)
        except BaseException as exc:
            await exit_async(unit, exc)
            raise
        if joined is None:
            await exit_async(unit, None)
        return result

    return connection_async_wrapper


def decorate(
    target: Any,
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
) -> Any:
    """Decorate a function, method, classmethod or staticmethod (`events`: `UnitSpec`'s durable=, commit_on=, rollback_on=)."""
    if isinstance(target, (classmethod, staticmethod)):
        inner = decorate(
            target.__func__,
            services,
            database=database,
            propagation=propagation,
            read_only=read_only,
            isolation_level=isolation_level,
            retry=retry,
            decorator=decorator,
            timeout=timeout,
            **events,
        )
        return type(target)(inner)
    plan = plan_function(
        target,
        services,
        database=database,
        propagation=propagation,
        read_only=read_only,
        isolation_level=isolation_level,
        retry=retry,
        decorator=decorator,
        timeout=timeout,
        **events,
    )
    return wrap(plan)
