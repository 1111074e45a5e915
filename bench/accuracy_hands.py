"""bench.accuracy rows for hand_malformed: cases and builders of their own, kept apart from the
other kinds' rows so that each can grow without touching the rest."""

from __future__ import annotations

from typing import Callable


def specs() -> list:
    """More ``bench.accuracy.Spec`` rows (none yet)."""
    return []


def builders() -> dict[str, Callable]:
    """More case builders by name: (image, amount) -> tests.defects.Case."""
    return {}
