"""Turning what was passed to `with_services` (classes or provider callables) into instances.

Everything that needs `inspect` happens in `plan_service`, once, at decoration time;
`build_sync` / `build_async` only call what the plan says, `close_sync` / `close_async` finish
the provider generators when the unit ends. `override` (and `apply_override` / `undo_overrides`
under it, for the ``uow_override`` fixture) swaps a service for a replacement in this context.
"""

from __future__ import annotations

import collections.abc
import contextlib
import contextvars
import enum
import functools
import inspect
import re
import sys
import types
import typing
from collections.abc import AsyncGenerator, Generator, Iterator, Mapping
from typing import Any, TypeVar, Union

from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session
from sqlalchemy.orm import Session, scoped_session

from uow.errors import InjectionError

__all__ = [
    "ServicePlan",
    "build_async",
    "build_sync",
    "close_async",
    "close_sync",
    "current_overrides",
    "direct_builder",
    "plan_service",
    "single_positional",
]

_SESSION_TYPES: tuple[type, ...] = (Session, AsyncSession, scoped_session, async_scoped_session)
SESSION_PARAM_NAMES = frozenset({"session", "db_session"})

_WRAPPER_ORIGINS = {
    collections.abc.Iterator: 0,
    collections.abc.Iterable: 0,
    collections.abc.Generator: 0,
    collections.abc.AsyncIterator: 0,
    collections.abc.AsyncIterable: 0,
    collections.abc.AsyncGenerator: 0,
    collections.abc.Awaitable: 0,
    collections.abc.Coroutine: 2,
}

# What tests and callers swap in: service type -> replacement class, provider or instance.
_overrides: contextvars.ContextVar[Mapping[Any, Any] | None] = contextvars.ContextVar("uow_overrides", default=None)


class ProviderKind(enum.IntEnum):
    """How a provider hands over its service, read once by `plan_service`."""

    CLASS = 0  # a class (or a partial of one): built with keyword arguments
    CALL = 1  # a function returning the service
    CORO = 2  # an async function returning it
    GEN = 3  # a generator yielding it once, finished when the unit ends
    AGEN = 4  # an async generator yielding it once


_ASYNC_KINDS = (ProviderKind.CORO, ProviderKind.AGEN)
# What the call-time builders compare with: a global read, where ``ProviderKind.CLASS`` (an
# attribute of an enum class, looked up through its metaclass) costs about a microsecond more.
_CLASS_KIND = ProviderKind.CLASS

_SESSION = object()  # marks a constructor argument that receives the unit's session


class ServicePlan:
    """How to build one service: its type, its name for matching, and how to call it."""

    __slots__ = ("arguments", "kind", "label", "names", "provider", "service_type", "sessions", "takes_session")

    def __init__(
        self,
        provider: Any,
        service_type: Any,
        names: tuple[str, ...],
        kind: ProviderKind,
        arguments: tuple[tuple[str, Any], ...] = (),
        takes_session: bool = True,
        sessions: tuple[SessionNeed, ...] = (),
    ) -> None:
        self.provider = provider
        self.service_type = service_type
        self.names = names
        self.kind = kind
        self.arguments = arguments  # for classes: (keyword, _SESSION or ServicePlan)
        self.takes_session = takes_session  # for providers: whether to pass the session positionally
        # Constructor parameters (here and in the services this one depends on) that receive the session,
        # with the session classes their annotations name: checked against the function's kind and Database.
        self.sessions = sessions
        self.label = provider_label(provider, service_type)

    def resolve_type(self, service_type: type) -> None:
        """The class a string return annotation named, once a parameter's annotation showed which it is."""
        self.service_type = service_type
        self.label = provider_label(self.provider, service_type)

    @property
    def is_async_only(self) -> bool:
        return self.kind in _ASYNC_KINDS or any(
            isinstance(source, ServicePlan) and source.is_async_only for _, source in self.arguments
        )


SessionNeed = tuple[str, tuple[type, ...]]
"""(which parameter, the session classes its annotation names), e.g. ("UserService(session)", (Session,))."""


def underlying_function(obj: Any) -> Any:
    """The function whose code runs when `obj` is called: through partials and callable instances."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.isfunction(obj) or inspect.ismethod(obj) or isinstance(obj, type):
        return obj
    call = getattr(type(obj), "__call__", None)  # noqa: B004 - an instance with __call__
    return getattr(obj, "__call__", obj) if call is not None else obj  # noqa: B004


def callable_name(obj: Any) -> str:
    """The `__name__` a callable answers to (a partial's function's; '' for a callable instance)."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    name = getattr(obj, "__name__", None)
    return name if isinstance(name, str) else ""


def describe(obj: object) -> str:
    """`module.QualName` of a class or function; partials and callable instances by what they wrap."""
    if isinstance(obj, functools.partial):
        keywords = "".join(f", {key}=..." for key in obj.keywords)
        positional = ", ..." * len(obj.args)
        return f"functools.partial({describe(obj.func)}{positional}{keywords})"
    if not isinstance(obj, type) and not inspect.isroutine(obj) and callable(obj):
        return f"{describe(type(obj))} instance"
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)
    return f"{module}.{name}" if module and module != "builtins" else str(name)


def provider_label(provider: Any, service_type: Any) -> str:
    """How messages name a provider: a factory's inner function (advanced-alchemy's
    ``create_service_provider.<locals>.provide_service_async``) by the service it provides."""
    qualname = getattr(provider, "__qualname__", "")
    if (
        isinstance(service_type, type)
        and ".<locals>." in qualname
        and getattr(provider, "__module__", None) != service_type.__module__
        and _closes_over(provider, service_type)
    ):
        factory = qualname.split(".<locals>.")[-2].split(".")[-1]
        return f"{factory}({describe(service_type)})"
    return describe(provider)


def _closes_over(function: Any, value: object) -> bool:
    """Whether `function` was made by a factory that was given `value` (it holds it in a closure cell)."""
    for cell in getattr(function, "__closure__", None) or ():
        with contextlib.suppress(ValueError):
            if cell.cell_contents is value:
                return True
    return False


def import_path(cls: type) -> str:
    """The shortest ``package.Name`` that imports `cls` (``sqlmodel.Session``), else its full path."""
    top = cls.__module__.split(".")[0]
    if getattr(sys.modules.get(top), cls.__qualname__, None) is cls:
        return f"{top}.{cls.__qualname__}"
    return describe(cls)


def snake_case(name: str) -> str:
    """`UserService` -> `user_service`, `HTTPClient` -> `http_client`."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


def is_session_annotation(annotation: Any) -> bool:
    """True for Session/AsyncSession (and subclasses, scoped sessions, unions and Annotated of them)."""
    annotation = unwrap_annotated(annotation)
    if isinstance(annotation, str):
        bare = annotation.replace("Optional[", "").rstrip("]").split("|")[0].strip().split(".")[-1]
        return bare in {"Session", "AsyncSession"}
    if isinstance(annotation, type):
        return issubclass(annotation, _SESSION_TYPES)
    if typing.get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(members) and all(is_session_annotation(a) for a in members)
    origin = typing.get_origin(annotation)
    return isinstance(origin, type) and issubclass(origin, _SESSION_TYPES)


def session_classes(annotation: Any) -> tuple[type, ...]:
    """The session classes a session annotation names (``Session | None`` -> (Session,)); () when unknown."""
    annotation = unwrap_annotated(annotation)
    if isinstance(annotation, type):
        return (annotation,) if issubclass(annotation, _SESSION_TYPES) else ()
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        found: list[type] = []
        for member in typing.get_args(annotation):
            if member is type(None):
                continue
            classes = session_classes(member)
            if not classes:
                return ()
            found.extend(classes)
        return tuple(found)
    if isinstance(origin, type) and issubclass(origin, _SESSION_TYPES):
        return (origin,)
    return ()


def unwrap_annotated(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def plan_service(provider: Any, *, for_async: bool, owner: str) -> ServicePlan:
    """Plan how to build `provider` (a class or a provider callable) at decoration time."""
    if isinstance(provider, type):
        return _plan_class(provider, for_async=for_async, owner=owner, stack=())
    if isinstance(provider, functools.partial) and isinstance(underlying_function(provider), type):
        # functools.partial(RoleService, statement=...): the class, configured for this use
        return _plan_class(provider, for_async=for_async, owner=owner, stack=())
    if not callable(provider):
        raise InjectionError(
            f"{owner}: {provider!r} is not a service: pass a service class or a provider callable "
            "that takes the session and returns (or yields) the service"
        )
    return _plan_provider(provider, for_async=for_async, owner=owner)


def _plan_provider(provider: Any, *, for_async: bool, owner: str) -> ServicePlan:
    kind = _provider_kind(provider)
    service_type = provider_type(provider)
    label = provider_label(provider, service_type)
    if kind in _ASYNC_KINDS and not for_async:
        raise InjectionError(
            f"{owner} is sync but its provider {label} is async: "
            "make the function 'async def' or give it a sync provider"
        )
    names: list[str] = []
    if isinstance(service_type, type):
        names.append(snake_case(service_type.__name__))
    elif isinstance(service_type, str):
        names.append(snake_case(service_type.split(".")[-1]))
    name = callable_name(provider)
    if name.startswith("provide_") and name not in _GENERIC_PROVIDER_NAMES:
        names.append(name[len("provide_") :])
    if not names:
        raise InjectionError(
            f"{owner}: cannot tell which service {label} provides: give it a return annotation "
            "(-> UserService, -> AsyncIterator[UserService]) or name it provide_<parameter_name>"
        )
    takes_session = _check_provider_parameters(provider, label=label, owner=owner)
    return ServicePlan(provider, service_type, tuple(dict.fromkeys(names)), kind, (), takes_session)


# advanced-alchemy's providers are all named like this: the name says nothing about the service.
_GENERIC_PROVIDER_NAMES = frozenset({"provide_service", "provide_service_async", "provide_service_sync"})


def _provider_kind(provider: Any) -> ProviderKind:
    target = underlying_function(provider)
    if inspect.isasyncgenfunction(target):
        return ProviderKind.AGEN
    if inspect.isgeneratorfunction(target):
        return ProviderKind.GEN
    if inspect.iscoroutinefunction(target):
        return ProviderKind.CORO
    return ProviderKind.CALL


def _check_provider_parameters(provider: Any, *, label: str, owner: str) -> bool:
    """Whether to pass the session (as the first positional argument); InjectionError for a parameter
    uow would leave empty, so that it fails now and not with a bare TypeError at the first call."""
    try:
        parameters = list(inspect.signature(provider).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    session_parameter = positional[0] if positional else None
    for parameter in parameters:
        if parameter is session_parameter or parameter.default is not parameter.empty:
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        raise InjectionError(
            f"{owner}: provider {label} has a required parameter {parameter.name!r} that uow cannot fill "
            "(it passes a provider the session as its only argument): give it a default, or bind it for this "
            f"use with functools.partial({callable_name(provider) or 'provider'}, {parameter.name}=...)"
        )
    return session_parameter is not None


def provider_type(provider: Any) -> Any:
    """The service type a provider returns, unwrapped from Iterator/AsyncIterator/Awaitable/...; None if unknown."""
    try:
        annotation = inspect.signature(provider).return_annotation
    except (TypeError, ValueError):
        return None
    if annotation is inspect.Signature.empty:
        return _closure_service_class(provider)
    if isinstance(annotation, str):
        annotation = _evaluate(annotation, provider)
    service_type = _unwrap_return(annotation)
    if isinstance(service_type, TypeVar) or (isinstance(service_type, str) and service_type.endswith("ServiceT_co")):
        return _closure_service_class(provider)
    return service_type


def _closure_service_class(provider: Any) -> Any:
    """The class a provider factory closed over (advanced-alchemy's ``create_service_provider(UserService)``
    keeps it in ``service_class``), for factories whose providers are annotated with a TypeVar."""
    function = underlying_function(provider)
    code, cells = getattr(function, "__code__", None), getattr(function, "__closure__", None)
    if code is None or not cells:
        return None
    for name, cell in zip(code.co_freevars, cells, strict=False):
        if name == "service_class":
            with contextlib.suppress(ValueError):
                value = cell.cell_contents
                if isinstance(value, type):
                    return value
    return None


def _unwrap_return(annotation: Any) -> Any:
    annotation = unwrap_annotated(annotation)
    origin = typing.get_origin(annotation)
    if origin in _WRAPPER_ORIGINS:
        args = typing.get_args(annotation)
        if args:
            return _unwrap_return(args[_WRAPPER_ORIGINS[origin]])
    if isinstance(annotation, str):
        for wrapper in ("AsyncGenerator", "AsyncIterator", "Generator", "Iterator", "Awaitable"):
            if annotation.startswith(wrapper + "["):
                return annotation[len(wrapper) + 1 :].split(",")[0].rstrip("]").strip()
    return annotation


def _evaluate(annotation: str, owner: Any) -> Any:
    namespace = getattr(inspect.unwrap(underlying_function(owner)), "__globals__", {})
    try:
        return eval(annotation, dict(namespace))  # noqa: S307 - evaluating the user's own annotation
    except Exception:
        return annotation


def _plan_class(
    target: Any, *, for_async: bool, owner: str, stack: tuple[type, ...], needs_unit: bool = True
) -> ServicePlan:
    """`target` is the class, or a ``functools.partial`` of it binding some constructor arguments."""
    cls: type = underlying_function(target)
    if cls in stack:
        chain = " -> ".join(c.__name__ for c in (*stack, cls))
        raise InjectionError(f"{owner}: services depend on each other in a cycle: {chain}")
    parameters, hints = _constructor_parameters(target, cls)
    arguments: list[tuple[str, Any]] = []
    sessions: list[SessionNeed] = []
    if parameters is None:
        arguments.append(("session", _SESSION))
    else:
        for parameter in parameters:
            source = _constructor_source(cls, parameter, hints, for_async=for_async, owner=owner, stack=(*stack, cls))
            if source is None:
                continue
            arguments.append((parameter.name, source))
            if source is _SESSION:
                annotation = hints.get(parameter.name, parameter.annotation)
                sessions.append((f"{describe(cls)}({parameter.name})", session_classes(annotation)))
            else:
                sessions.extend(source.sessions)
    if needs_unit and not arguments:
        raise InjectionError(
            f"{owner}: {describe(cls)}() takes neither a session nor another service, so uow would build it "
            "outside the unit: give its constructor a 'session: Session' (or 'AsyncSession') parameter, "
            "or pass a provider function that builds it"
        )
    return ServicePlan(
        target, cls, (snake_case(cls.__name__),), ProviderKind.CLASS, tuple(arguments), sessions=tuple(sessions)
    )


def _constructor_parameters(target: Any, cls: type) -> tuple[list[inspect.Parameter] | None, dict[str, Any]]:
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return None, {}
    init = cls.__init__  # type: ignore[misc]
    try:
        hints = typing.get_type_hints(init, include_extras=True)
    except Exception:
        hints = {}
    params = [p for p in signature.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return params, hints


def _constructor_source(
    cls: type,
    parameter: inspect.Parameter,
    hints: Mapping[str, Any],
    *,
    for_async: bool,
    owner: str,
    stack: tuple[type, ...],
) -> Any:
    annotation = hints.get(parameter.name, parameter.annotation)
    if parameter.kind is parameter.POSITIONAL_ONLY:
        if parameter.default is not parameter.empty:
            return None
        raise InjectionError(
            f"{owner}: {describe(cls)}() takes {parameter.name!r} positional-only; uow builds services with "
            "keyword arguments: make it a normal parameter, or pass a provider function instead of the class"
        )
    if annotation is parameter.empty:
        if parameter.name in SESSION_PARAM_NAMES:
            return _SESSION
        if parameter.default is not parameter.empty:
            return None
        raise InjectionError(
            f"{owner}: cannot build {describe(cls)}: its parameter {parameter.name!r} has no annotation, so uow "
            "cannot tell what to pass; annotate it with a service class (or Session), give it a default, or bind "
            f"it with functools.partial({cls.__name__}, {parameter.name}=...)"
        )
    if is_session_annotation(annotation) or (parameter.name in SESSION_PARAM_NAMES and _mentions_session(annotation)):
        return _SESSION
    dependency = unwrap_annotated(annotation)
    if parameter.default is not parameter.empty:
        return None
    if isinstance(dependency, type) and _is_buildable(dependency):
        return _plan_class(dependency, for_async=for_async, owner=owner, stack=stack)
    raise InjectionError(
        f"{owner}: cannot build {describe(cls)}: its parameter {parameter.name!r} "
        f"({_annotation_text(annotation)}) is neither a session nor a service uow can build; give it a default, "
        f"bind it with functools.partial({cls.__name__}, {parameter.name}=...), "
        "or pass a provider function that builds the service"
    )


def _mentions_session(annotation: Any) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return "Session" in text


def _is_buildable(cls: type) -> bool:
    return cls.__module__ != "builtins" and not issubclass(cls, _SESSION_TYPES)


def _annotation_text(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return "no annotation"
    return getattr(annotation, "__name__", None) or str(annotation)


# -- building at call time ------------------------------------------------------------------


def _override_for(plan: ServicePlan) -> Any:
    overrides = _overrides.get()
    if overrides is None:
        return _NO_OVERRIDE
    return overrides.get(plan.service_type, overrides.get(plan.provider, _NO_OVERRIDE))


_NO_OVERRIDE = object()


current_overrides: typing.Callable[[], Mapping[Any, Any] | None] = _overrides.get
"""The overrides active in this context, or None outside every `override` block (a C call: cheap per call)."""


DirectBuilder = typing.Callable[[Any], "dict[str, Any]"]


def direct_builder(
    targets: typing.Sequence[tuple[str, ServicePlan]], session_params: tuple[str, ...]
) -> DirectBuilder | None:
    """For services that are all classes taking only the session: a function from the session to the values
    to inject (session parameters first, then the services in order); None for any other service.

    Such services need no shared cache (each class is listed once), no generator to finish and no
    awaiting, so a call outside an `override` block can build them with no bookkeeping at all.
    """
    recipe: list[tuple[str, Any, tuple[str, ...] | None]] = []
    for name, plan in targets:
        if plan.kind is not ProviderKind.CLASS or any(source is not _SESSION for _, source in plan.arguments):
            return None
        keywords = tuple(keyword for keyword, _ in plan.arguments)
        positional = len(keywords) == 1 and _first_parameter_is(plan.provider, keywords[0])
        recipe.append((name, plan.provider, None if positional else keywords))
    steps = tuple(recipe)

    def build(session: Any) -> dict[str, Any]:
        values = dict.fromkeys(session_params, session)
        for name, cls, keywords in steps:
            # keywords None: ``cls(session)`` binds exactly like ``cls(session=session)`` (see _first_parameter_is)
            values[name] = cls(session) if keywords is None else cls(**dict.fromkeys(keywords, session))
        return values

    return build


def single_positional(
    targets: typing.Sequence[tuple[str, ServicePlan]], session_params: tuple[str, ...]
) -> tuple[str, type] | None:
    """(parameter, class) when the only thing to inject is one class whose first parameter takes the session,
    so ``{parameter: cls(session)}`` is all a call has to build; else None."""
    if session_params or len(targets) != 1:
        return None
    ((name, plan),) = targets
    if plan.kind is not ProviderKind.CLASS or len(plan.arguments) != 1 or plan.arguments[0][1] is not _SESSION:
        return None
    return (name, plan.provider) if _first_parameter_is(plan.provider, plan.arguments[0][0]) else None


def _first_parameter_is(cls: type, keyword: str) -> bool:
    """True when ``cls(x)`` binds `x` to `keyword` exactly as ``cls(keyword=x)`` does (and is cheaper)."""
    try:
        parameters = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        return False
    return (
        bool(parameters) and parameters[0].name == keyword and parameters[0].kind is parameters[0].POSITIONAL_OR_KEYWORD
    )


def build_sync(
    plans: typing.Sequence[ServicePlan], session: Any, cache: dict[Any, Any], closers: list[Any]
) -> list[Any]:
    """Instances for `plans`, sharing `cache` (type -> instance); generators to finish go to `closers`."""
    return [_build_one_sync(plan, session, cache, closers) for plan in plans]


def _build_one_sync(plan: ServicePlan, session: Any, cache: dict[Any, Any], closers: list[Any]) -> Any:
    key = plan.service_type if plan.service_type is not None else plan.provider
    if key in cache:
        return cache[key]
    replacement = _override_for(plan)
    if replacement is not _NO_OVERRIDE:
        instance = _build_replacement_sync(replacement, session, closers)
    elif plan.kind is _CLASS_KIND:
        kwargs = {
            name: session if source is _SESSION else _build_one_sync(source, session, cache, closers)
            for name, source in plan.arguments
        }
        instance = plan.provider(**kwargs)
    else:
        result = plan.provider(session) if plan.takes_session else plan.provider()
        instance = _unpack_sync(plan, result, closers)
    cache[key] = instance
    return instance


def _unpack_sync(plan: ServicePlan, result: Any, closers: list[Any]) -> Any:
    if isinstance(result, Generator):
        instance = next(result)
        closers.append(result)
        return instance
    if inspect.isawaitable(result) or isinstance(result, AsyncGenerator):
        close = getattr(result, "close", None)
        if close is not None:
            close()
        raise InjectionError(
            f"provider {plan.label} returned {type(result).__name__} inside a sync unit: "
            "use a sync provider, or make the decorated function 'async def'"
        )
    return result


def _build_replacement_sync(replacement: Any, session: Any, closers: list[Any]) -> Any:
    if isinstance(replacement, type):
        plan = _plan_class(replacement, for_async=False, owner="override", stack=(), needs_unit=False)
        return _build_one_sync(plan, session, {}, closers)
    return replacement


async def build_async(
    plans: typing.Sequence[ServicePlan], session: Any, cache: dict[Any, Any], closers: list[Any]
) -> list[Any]:
    """Instances for `plans`, sharing `cache` (type -> instance); generators to finish go to `closers`."""
    return [await _build_one_async(plan, session, cache, closers) for plan in plans]


async def _build_one_async(plan: ServicePlan, session: Any, cache: dict[Any, Any], closers: list[Any]) -> Any:
    key = plan.service_type if plan.service_type is not None else plan.provider
    if key in cache:
        return cache[key]
    replacement = _override_for(plan)
    if replacement is not _NO_OVERRIDE:
        instance = await _build_replacement_async(replacement, session, closers)
    elif plan.kind is _CLASS_KIND:
        kwargs = {}
        for name, source in plan.arguments:
            kwargs[name] = session if source is _SESSION else await _build_one_async(source, session, cache, closers)
        instance = plan.provider(**kwargs)
    else:
        result = plan.provider(session) if plan.takes_session else plan.provider()
        instance = await _unpack_async(result, closers)
    cache[key] = instance
    return instance


async def _unpack_async(result: Any, closers: list[Any]) -> Any:
    if isinstance(result, AsyncGenerator):
        instance = await result.__anext__()
        closers.append(result)
        return instance
    if isinstance(result, Generator):
        instance = next(result)
        closers.append(result)
        return instance
    if inspect.isawaitable(result):
        return await result
    return result


async def _build_replacement_async(replacement: Any, session: Any, closers: list[Any]) -> Any:
    if isinstance(replacement, type):
        plan = _plan_class(replacement, for_async=True, owner="override", stack=(), needs_unit=False)
        return await _build_one_async(plan, session, {}, closers)
    return replacement


# -- finishing generators -------------------------------------------------------------------


def close_sync(closers: list[Any], exc: BaseException | None) -> None:
    """Finish provider generators, last opened first: run to the end, or throw the unit's error into them."""
    failures: list[BaseException] = []
    for generator in reversed(closers):
        try:
            _finish_generator(generator, exc)
        except BaseException as failure:
            failures.append(failure)
    _closed(closers, failures, exc)


def _closed(closers: list[Any], failures: list[BaseException], exc: BaseException | None) -> None:
    """After finishing every generator: forget them, and raise the first failure that is not `exc`.

    A generator re-raising the unit's own error `exc` thrown into it is not a failure of its own:
    that error goes on as it is.
    """
    closers.clear()
    for failure in failures:
        if failure is not exc:
            raise failure


def _finish_generator(generator: Iterator[Any], exc: BaseException | None) -> None:
    assert isinstance(generator, Generator)
    try:
        if exc is None:
            next(generator)
        else:
            generator.throw(exc)
    except StopIteration:
        return
    generator.close()
    raise RuntimeError(f"provider generator {generator!r} yielded more than once; a provider must yield exactly once")


async def close_async(closers: list[Any], exc: BaseException | None) -> None:
    """Finish provider generators (sync and async), last opened first."""
    failures: list[BaseException] = []
    for generator in reversed(closers):
        try:
            if isinstance(generator, AsyncGenerator):
                await _finish_async_generator(generator, exc)
            else:
                _finish_generator(generator, exc)
        except BaseException as failure:
            failures.append(failure)
    _closed(closers, failures, exc)


async def _finish_async_generator(generator: AsyncGenerator[Any, None], exc: BaseException | None) -> None:
    try:
        if exc is None:
            await generator.__anext__()
        else:
            await generator.athrow(exc)
    except StopAsyncIteration:
        return
    await generator.aclose()
    raise RuntimeError(f"provider generator {generator!r} yielded more than once; a provider must yield exactly once")


# -- overrides --------------------------------------------------------------------------------


def apply_override(service: Any, replacement: Any) -> Mapping[Any, Any] | None:
    """From now on in this context, units build `replacement` wherever `service` is asked for.

    Returns the overrides that were active before, to hand to `undo_overrides` (after several
    in turn: what the first returned). `override` and the ``uow_override`` fixture both use it.
    """
    before = _overrides.get()
    _overrides.set({**(before or {}), service: replacement})
    return before


def undo_overrides(before: Mapping[Any, Any] | None) -> None:
    """Make `before` (what `apply_override` returned) the overrides of this context again."""
    _overrides.set(before)


@contextlib.contextmanager
def override(service: Any, replacement: Any) -> Generator[None, None, None]:
    """Within the block, every unit builds `replacement` wherever `service` was asked for.

    `replacement` is a class (built like a service, with the unit's session) or an
    instance (used as is). Works with ``with`` in sync and async code; the override is
    held in a context variable, so concurrent tasks each see their own.
    """
    before = apply_override(service, replacement)
    try:
        yield
    finally:
        undo_overrides(before)
