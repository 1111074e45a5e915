"""Shared fixtures: the real photo set in ../shared/data/photos and its manifest labels."""

from __future__ import annotations

import csv
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PHOTOS = Path(os.environ.get("FIXLOOP_PHOTOS", REPO.parent / "shared" / "data" / "photos"))


@lru_cache(maxsize=None)
def manifest() -> dict[str, dict[str, str]]:
    """file name -> manifest row (labels checked by hand)."""
    with open(PHOTOS / "manifest.csv", newline="", encoding="utf-8") as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}


def photo_names(category: str | None = None) -> list[str]:
    return sorted(name for name, row in manifest().items() if category in (None, row["category"]))


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    from fixloop.checks.images import load_image, to_uint8

    return to_uint8(load_image(PHOTOS / name).pixels)


def photo(name: str) -> np.ndarray:
    """A shared photo as an H x W x 3 uint8 RGB array (a fresh copy each call)."""
    return _photo(name).copy()


def pytest_collection_modifyitems(config, items):
    if not (PHOTOS / "manifest.csv").is_file():
        raise pytest.UsageError(f"the shared photo set is missing at {PHOTOS}: set FIXLOOP_PHOTOS")


@pytest.fixture(scope="session")
def policy():
    from fixloop.checks.policy import load_policy

    return load_policy()


def sigint_at_default() -> None:
    """``preexec_fn`` for a child a test interrupts with SIGINT: Ctrl-C at its default action, as a
    command started at a terminal has it. A test run started in the background of a non-interactive
    shell (``nohup make test &``, as CI may) ignores SIGINT, and its children would inherit that:
    Python then installs no KeyboardInterrupt handler and the signal does nothing."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
