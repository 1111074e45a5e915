"""What every repair tool takes and returns, and the registries of tools and backends.

A repair tool is one entry call ``(request: RepairRequest) -> RepairResult``. It validates its
inputs first (raising :class:`RepairError` with a one-line message), never writes over its inputs
(it works on copies and returns a new image), and reports what it cost in seconds and US dollars.

A backend (``--backend local | openai | diffusers``) is one module: it registers its tool with
:func:`register_tool` and declares a :class:`BackendSpec` with :func:`register_backend` (what it
needs before it can run, the environment variables and policy keys it reads, what a call costs).
The agent and the front ends ask :func:`load_backend` instead of naming backends; adding one is
its module, one line of :data:`BACKEND_MODULES` and the README.

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
    """A registered repair tool and what it needs: declared by the module that defines it."""

    name: str
    function: RepairFunction
    paid: bool = False  # a call that spends money (the loop asks before it when --approve is set)
    description: str = ""
    needs_mask: str = ""  # what mask the tool cannot run without, in words; "" = a mask is optional
    region_check: str | None = None  # the check whose finding supplies the region (and mask) when none is given


TOOLS: Registry[ToolSpec] = Registry("repair tool", "tools")

# The module that declares each backend and registers its tools: adding a backend is its module,
# this line and the README.
BACKEND_MODULES = {"local": "fixloop.tools.local", "openai": "fixloop.tools.openai_images",
                   "diffusers": "fixloop.tools.diffusion"}
# A tool's family (the part of its name before the first dot) is the backend whose module registers it.
TOOL_MODULES = BACKEND_MODULES


def load_tool(name: str) -> ToolSpec:
    """The tool ``name``, importing the module that registers it first (heavy libraries load only
    for the tools a run uses). An unknown family imports every installed one, so the error can
    suggest the closest name."""
    family = name.split(".", 1)[0]
    _import_modules([TOOL_MODULES[family]] if family in TOOL_MODULES else list(TOOL_MODULES.values()))
    return TOOLS.get(name)


def register_tool(name: str, paid: bool = False, needs_mask: str = "",
                  region_check: str | None = None) -> Callable[[RepairFunction], RepairFunction]:
    """Decorator: register ``function`` as the repair tool ``name``."""

    def decorate(function: RepairFunction) -> RepairFunction:
        doc = (function.__doc__ or "").strip().splitlines()
        TOOLS.register(ToolSpec(name=name, function=function, paid=paid, description=doc[0] if doc else "",
                                needs_mask=needs_mask, region_check=region_check))
        return function

    return decorate


def _import_modules(modules: list[str]) -> None:
    import importlib
    import importlib.util

    for module in modules:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


# ---- backends -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvVar:
    """An environment variable a backend reads, and what for."""

    name: str
    description: str


@dataclass(frozen=True)
class BackendSetting:
    """A policy key of a backend (``[repair.backends.NAME]`` in the policy TOML) with its default."""

    name: str
    default: str
    description: str


@dataclass(frozen=True)
class BackendSpec:
    """A repair backend (``--backend NAME``): what the run's generative rungs use, what it needs
    before it can run and what one call costs. Declared by the backend's own module with
    :func:`register_backend`; everyone else asks :func:`load_backend`.

    ``check`` raises :class:`RepairError` (one line: what to set or install) when the backend
    cannot run with the already resolved ``model``; it must be cheap (no heavy import, no model
    load). ``estimate`` gives the US dollars of one call on a ``(width, height)`` input at a
    quality, or None when the model has no price.
    """

    name: str
    module: str  # the module that declares it (and registers its tool)
    tool: str | None  # the generative repair tool its rungs run; None = no generative repair (local)
    description: str = ""
    paid: bool = False  # its calls spend money: estimated before, booked after, asked for with --approve
    needs_mask: bool = False  # its tool cannot run without a mask (none today: without one they redraw the image)
    keeps_unmasked: bool = True  # pixels outside the mask come back exactly (GPT Image treats the mask as a hint)
    strength: bool = False  # a denoise strength the ladder can raise (diffusion)
    control: bool = False  # takes a control map (ControlNet) on the control-map rung
    prompt_style: str | None = None  # "gpt_image" (one instruction prompt) or "diffusion" (positive + negative
    #                                  prompt and the template's diffusion parameters); None = no prompt
    default_model: str | None = None  # the model used when neither the caller nor model_env names one
    model_env: str | None = None  # the environment variable that names the model
    env: tuple[EnvVar, ...] = ()  # every environment variable it reads
    settings: tuple[BackendSetting, ...] = ()  # its policy keys
    check: Callable[[str | None], None] | None = field(default=None, repr=False)
    estimate: Callable[[str | None, tuple[int, int], str], float | None] | None = field(default=None, repr=False)

    def resolve_model(self, model: str | None = None) -> str | None:
        """The model a call uses: ``model``, else the one ``model_env`` names, else ``default_model``."""
        import os

        return model or (os.environ.get(self.model_env) if self.model_env else None) or self.default_model

    def ready(self, model: str | None = None) -> None:
        """Raise :class:`RepairError` (one line saying what to set or install) when the backend
        cannot run with ``model`` (None: the environment's or the default)."""
        if self.check is not None:
            self.check(self.resolve_model(model))

    def is_ready(self, model: str | None = None) -> bool:
        """True when :meth:`ready` would not raise."""
        try:
            self.ready(model)
        except RepairError:
            return False
        return True

    def estimate_usd(self, model: str | None, size: tuple[int, int], quality: str) -> float | None:
        """US dollars of one call on a ``size`` (w, h) input: 0 for a free backend; None when a paid
        one has no price for the model (its calls cannot be kept within a dollar budget)."""
        if not self.paid:
            return 0.0
        if self.estimate is None:
            return None
        return self.estimate(self.resolve_model(model), size, quality)

    def settings_from(self, values: dict[str, Any] | None = None) -> dict[str, str]:
        """This backend's policy settings: its defaults with ``values`` laid over them; an unknown
        key is a one-line :class:`RepairError` naming the closest known one."""
        import difflib

        known = {s.name: s.default for s in self.settings}
        merged = dict(known)
        for key, value in (values or {}).items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known) or 'none'}"
                raise RepairError(f"unknown setting {key!r} for the {self.name} backend: {hint}")
            merged[key] = str(value)
        return merged


BACKENDS: Registry[BackendSpec] = Registry("repair backend", "backends")


def backend_names() -> list[str]:
    """Every backend's name, without importing any backend module (cheap enough for ``--help``)."""
    return list(BACKEND_MODULES)


def load_backend(name: str) -> BackendSpec:
    """The backend ``name``, importing its module first. An unknown name imports every backend
    module, so the KeyError can suggest the closest name."""
    _import_modules([BACKEND_MODULES[name]] if name in BACKEND_MODULES else list(BACKEND_MODULES.values()))
    return BACKENDS.get(name)


def all_backends() -> list[BackendSpec]:
    """Every backend, in :data:`BACKEND_MODULES` order (imports their modules)."""
    return [load_backend(name) for name in BACKEND_MODULES]


def backend_for_tool(tool: str) -> BackendSpec | None:
    """The backend whose generative tool is ``tool`` (None for a tool no backend runs, e.g. local.*)."""
    return next((spec for spec in all_backends() if spec.tool == tool), None)


def register_backend(spec: BackendSpec) -> BackendSpec:
    """Register a backend (called once, at the import of the module that declares it)."""
    BACKENDS.register(spec)
    return spec


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
