"""Importing this module registers every check (each module registers itself on import)."""

from fixloop.checks import (  # noqa: F401
    blur,
    color,
    crop,
    exposure,
    halo,
    hands,
    identity,
    mirror,
    perspective,
    spill,
    swap,
)
