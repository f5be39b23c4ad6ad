"""The error an integration module raises when the package it integrates is not installed."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Generator

from uow.errors import MissingDependencyError

__all__ = ["installed", "requires"]


def _missing(integration: str, display: str, name: str) -> MissingDependencyError:
    return MissingDependencyError(
        f"uow.integrations.{integration} needs {display}: pip install 'uow[{integration}]'", name=name
    )


@contextlib.contextmanager
def requires(integration: str, display: str, *packages: str) -> Generator[None, None, None]:
    """Turn a failed import of one of `packages` inside the block into `MissingDependencyError`.

    The message names the extra ``uow[<integration>]``, which installs `display` and with it
    every one of `packages`. Only a package itself missing is translated; a module missing inside
    an installed package (a broken installation) propagates as it is, so its message is not hidden.
    """
    try:
        yield
    except ModuleNotFoundError as error:
        if error.name not in packages:
            raise
        raise _missing(integration, display, error.name) from error


def installed(integration: str, display: str, package: str) -> None:
    """Raise `MissingDependencyError` unless `package` can be imported, without importing it.

    For the integrations that need nothing of their framework at import time (click, typer):
    importing them stays free of the framework, and a missing one is still a clear error.
    """
    if importlib.util.find_spec(package) is None:
        raise _missing(integration, display, package)
