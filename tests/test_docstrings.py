"""A missing docstring fails CI: every public name has one, so the API reference (docs/reference/) renders it.

Public means: the names in `__all__` of `uow`, `uow.errors`, `uow.testing`, `uow.outbox` and every
`uow.integrations.<framework>` module, the modules themselves, and the public methods and properties
those classes define themselves (mkdocstrings renders them on the reference pages).
"""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType

import pytest

MODULES = [
    "uow",
    "uow.errors",
    "uow.testing",
    "uow.outbox",
    "uow.integrations",
    "uow.integrations.litestar",
    "uow.integrations.fastapi",
    "uow.integrations.starlette",
    "uow.integrations.flask",
    "uow.integrations.click",
    "uow.integrations.typer",
]


def public_names(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            name for name, value in vars(module).items() if not name.startswith("_") and not inspect.ismodule(value)
        ]
    return sorted(names)


def own_members(cls: type) -> list[tuple[str, object]]:
    """The public functions, methods and properties `cls` defines in its own body."""
    members = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if inspect.isfunction(value) or isinstance(value, property):
            members.append((name, value))
    return members


def missing_docstrings(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    missing = [] if (module.__doc__ or "").strip() else [f"{module_name} (the module)"]
    for name in public_names(module):
        value = getattr(module, name)
        if not (inspect.isclass(value) or inspect.isfunction(value) or callable(value)):
            continue  # constants are documented by the module's docstring
        if not (getattr(value, "__doc__", None) or "").strip() or (
            not inspect.isclass(value) and not inspect.isfunction(value) and type(value).__doc__ == value.__doc__
        ):
            missing.append(f"{module_name}.{name}")
        if inspect.isclass(value) and value.__module__.startswith("uow"):
            for member, attribute in own_members(value):
                if not (attribute.__doc__ or "").strip():
                    missing.append(f"{module_name}.{name}.{member}")
    return missing


@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_name_has_a_docstring(module_name: str) -> None:
    assert missing_docstrings(module_name) == []


def test_the_check_finds_a_missing_docstring() -> None:
    """The check itself can fail: a module with an undocumented public function is reported."""
    module = ModuleType("uow_fake_module", "A module.")

    def documented() -> None:
        """Has one."""

    def undocumented() -> None:
        pass

    module.documented = documented  # type: ignore[attr-defined]
    module.undocumented = undocumented  # type: ignore[attr-defined]
    module.__all__ = ["documented", "undocumented"]  # type: ignore[attr-defined]
    import sys

    sys.modules["uow_fake_module"] = module
    try:
        assert missing_docstrings("uow_fake_module") == ["uow_fake_module.undocumented"]
    finally:
        del sys.modules["uow_fake_module"]
