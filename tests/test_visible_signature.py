"""The signature frameworks see carries evaluated annotations, also under `from __future__ import annotations`."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Annotated

from sqlalchemy.orm import Session

import uow
from tests.models import ItemService

if TYPE_CHECKING:
    from decimal import Decimal


def test_string_annotations_are_evaluated_in_the_functions_module() -> None:
    # typer reads Annotated[..., typer.Option()] and FastAPI the types from inspect.signature; both
    # would evaluate strings in the wrapper's globals (uow's), which do not know the user's names.
    @uow.with_services(ItemService)
    def command(items: ItemService, name: Annotated[str, "meta"], session: Session) -> list[ItemService]:
        return []

    signature = inspect.signature(command)
    assert list(signature.parameters) == ["name"]
    assert signature.parameters["name"].annotation == Annotated[str, "meta"]
    assert signature.return_annotation == list[ItemService]


def test_an_annotation_that_cannot_be_evaluated_stays_text() -> None:
    @uow.with_services(ItemService)
    def command(items: ItemService, amount: Decimal) -> None: ...

    assert inspect.signature(command).parameters["amount"].annotation == "Decimal"
