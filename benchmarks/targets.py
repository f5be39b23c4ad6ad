"""The issue's targets, checked against a run's results."""

from __future__ import annotations

from typing import Any


def evaluate(results: Any) -> list[dict[str, Any]]:
    return []


def render(targets: list[dict[str, Any]]) -> str:
    return ""
