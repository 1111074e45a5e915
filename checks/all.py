"""Importing this module registers every check (each module registers itself on import)."""

from checks import (  # noqa: F401
    blur,
    color,
    exposure,
    halo,
    mirror,
    perspective,
    spill,
)
