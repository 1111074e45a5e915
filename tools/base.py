"""What every repair tool takes and returns, and the registry of tools.

A repair tool is one entry call ``(request: RepairRequest) -> RepairResult``. It validates its
inputs first (raising :class:`RepairError` with a one-line message), never writes over its inputs
(it works on copies and returns a new image), and reports what it cost in seconds and US dollars.
The agent (``agent/``) wires checks, templates and tools together; ``tools/`` never imports
``agent/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from fixloop.checks.registry import Registry


class RepairError(Exception):
    """A repair that cannot run or failed: a one-line message that says what to do."""


class ModerationBlocked(RepairError):
    """The backend refused the request on content grounds; retrying the same request will not help."""


@dataclass
class RepairRequest:
    """One repair to run.

    ``image`` is the picture to repair (H x W x 3 uint8 RGB); ``mask`` where the repair may change
    pixels (H x W bool, True = may change), when the tool uses one; ``source`` the picture before the
    broken edit, for tools that restore or match it; ``references`` identity or style images;
    ``prompt`` / ``negative_prompt`` the rendered template for generative tools; ``parameters`` the
    tool's own settings (strength, guidance, steps, seed, size, quality, ...).
    """

    image: np.ndarray
    mask: np.ndarray | None = None
    source: np.ndarray | None = None
    references: list[np.ndarray] = field(default_factory=list)
    prompt: str | None = None
    negative_prompt: str | None = None
    template: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class RepairResult:
    """What a tool produced: the new image, the mask it used, its settings, time and money spent."""

    image: np.ndarray  # H x W x 3 uint8 RGB, the input's geometry
    tool: str
    mask: np.ndarray | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    cost_usd: float = 0.0
    notes: list[str] = field(default_factory=list)
    control: np.ndarray | None = None  # the control map a generative tool conditioned on (for the review sheet)


RepairFunction = Callable[[RepairRequest], RepairResult]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    function: RepairFunction
    paid: bool = False  # a call that spends money (the loop asks before it when --approve is set)
    description: str = ""


TOOLS: Registry[ToolSpec] = Registry("repair tool", "tools")

# The module that registers each tool family (the part of a tool's name before the first dot).
TOOL_MODULES = {"local": "fixloop.tools.local", "openai": "fixloop.tools.openai_images", "diffusers": "fixloop.tools.diffusion"}


def load_tool(name: str) -> ToolSpec:
    """The tool ``name``, importing the module that registers it first (heavy libraries load only
    for the tools a run uses). An unknown family imports every installed one, so the error can
    suggest the closest name."""
    import importlib
    import importlib.util

    family = name.split(".", 1)[0]
    modules = [TOOL_MODULES[family]] if family in TOOL_MODULES else list(TOOL_MODULES.values())
    for module in modules:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    return TOOLS.get(name)


def register_tool(name: str, paid: bool = False) -> Callable[[RepairFunction], RepairFunction]:
    """Decorator: register ``function`` as the repair tool ``name``."""

    def decorate(function: RepairFunction) -> RepairFunction:
        doc = (function.__doc__ or "").strip().splitlines()
        TOOLS.register(ToolSpec(name=name, function=function, paid=paid, description=doc[0] if doc else ""))
        return function

    return decorate


def check_image(image: np.ndarray, role: str = "image") -> np.ndarray:
    """Validate an RGB uint8 image array; returns it unchanged."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        raise RepairError(f"{role} must be an H x W x 3 uint8 RGB array, got {shape}: decode it with checks.images first")
    return image


def check_mask(mask: np.ndarray | None, image: np.ndarray, required: bool = True, role: str = "mask") -> np.ndarray | None:
    """Validate a bool mask of the image's size; returns it as bool."""
    if mask is None:
        if required:
            raise RepairError(f"this repair needs a {role}: pass one, or let the matching check's finding provide it")
        return None
    mask = np.asarray(mask)
    if mask.shape != image.shape[:2]:
        raise RepairError(f"{role} is {mask.shape[1]}x{mask.shape[0]} but the image is "
                          f"{image.shape[1]}x{image.shape[0]}: export the mask at the image's size")
    mask = mask.astype(bool)
    if not mask.any():
        raise RepairError(f"{role} is empty: paint the area to repair in white")
    return mask
