"""The error an integration module raises when the package it integrates is not installed."""

from __future__ import annotations

import contextlib
from collections.abc import Generator

from uow.errors import MissingDependencyError

__all__ = ["requires"]


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
        raise MissingDependencyError(
            f"uow.integrations.{integration} needs {display}: pip install 'uow[{integration}]'", name=error.name
        ) from error
