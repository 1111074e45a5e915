"""The quality policy: every threshold, priority and gate rule, read from TOML.

The defaults ship as ``checks/default_policy.toml``. A user policy file is laid over the defaults
(only the keys it names change), so a stricter or looser gate is a short TOML file, never code.
Each check validates its own section with its pydantic params model (unknown keys are errors).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fixloop.checks.base import REGISTRY, CheckParams, Priority
from fixloop.checks.images import MAX_PIXELS, InputError

DEFAULT_POLICY_PATH = Path(__file__).with_name("default_policy.toml")


class GateRules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fail_on: list[Priority] = Field(description="priorities that make the verdict 'fail'")
    count_inherited: bool = Field(default=False, description="let findings the source already had "
                                  "(inherited) make the verdict 'fail' too")

    def counts(self, finding: Any) -> bool:
        """Whether ``finding`` (a Finding or a loop record) counts toward the verdict."""
        priority = getattr(finding.priority, "value", finding.priority)
        return priority in self.fail_on and (self.count_inherited or not getattr(finding, "inherited", False))


class AnalysisSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_side: int = Field(ge=64, le=16384, description="long side, in pixels, at which checks measure")
    max_pixels: int = Field(default=MAX_PIXELS, ge=1_000_000, le=268_000_000,
                            description="decoded pixels at most per input: a larger JPEG is decoded reduced, "
                            "any other larger image refused")


class RepairSettings(BaseModel):
    """How the repair loop (``fixloop repair``) spends its budget and judges its attempts."""

    model_config = ConfigDict(extra="forbid")

    max_passes: int = Field(ge=0, le=100, description="repair attempts at most per run")
    max_usd: float = Field(ge=0, le=10_000, description="US dollars at most per run")
    max_seconds: float = Field(gt=0, le=604_800, description="wall seconds at most per run")
    max_attempts_per_defect: int = Field(ge=1, le=10, description="attempts on one defect before it is left open")
    min_improvement: float = Field(gt=0, le=1, description="share of a finding's excess past its limit a repair must remove")
    worse_factor: float = Field(gt=1, le=100, description="a finding whose severity grows by this factor was made worse")
    polish: bool = Field(description="also repair P2 findings once no P0/P1 is left")
    seed: int = Field(ge=0, le=2**32 - 1, description="seed locked for every generative attempt of a run")
    wider_mask: float = Field(gt=0, le=0.2, description="share of the image diagonal a mask grows on the wider-mask rung")
    backends: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="per backend ([repair.backends.NAME]): its settings (model, quality, "
        "controlnet, ...), laid over the defaults its module declares; the agent validates them")


class Policy(BaseModel):
    """A validated policy: gate rules, analysis settings and one params object per check."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str
    gate: GateRules
    analysis: AnalysisSettings
    repair: RepairSettings
    checks: dict[str, CheckParams]
    raw: dict[str, Any] = Field(repr=False, description="the merged TOML, for reports")

    def params(self, check: str) -> CheckParams:
        return self.checks[check]


def _merge(base: dict[str, Any], override: dict[str, Any], where: str = "") -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            merged[key] = value
    return merged


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"policy {str(path)!r} does not exist: check the path")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"policy {str(path)!r} is not valid TOML ({exc}): fix the file") from None


SECTIONS = ("gate", "analysis", "repair", "checks")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_structure(raw: dict[str, Any], label: str) -> None:
    """Top-level sections known (a typo such as ``[gates]`` names the closest), each section a table,
    and no number that is not finite anywhere (TOML allows nan and inf)."""
    import difflib
    import math

    for key in raw:
        if key not in SECTIONS:
            close = difflib.get_close_matches(key, SECTIONS, n=1, cutoff=0.5)
            hint = f"did you mean [{close[0]}]?" if close else f"use {', '.join(f'[{s}]' for s in SECTIONS)}"
            raise InputError(f"{label}: unknown section [{key}]: {hint}")
    for key in SECTIONS:
        if key in raw and not isinstance(raw[key], dict):
            raise InputError(f"{label}: {key} = {_short(raw[key])} must be a table ([{key}])")
    for name, table in raw.get("checks", {}).items():
        if not isinstance(table, dict):
            raise InputError(f"{label}: checks.{name} = {_short(table)} must be a table ([checks.{name}])")

    def walk(value: Any, where: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"{label}: {where} = {value!r}: give a finite number")
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{where}.{key}" if where else str(key))
        elif isinstance(value, list):
            for index, inner in enumerate(value):
                walk(inner, f"{where}[{index}]")

    walk(raw, "")


def load_policy(path: str | Path | None = None) -> Policy:
    """The default policy, with the file at ``path`` (if any) laid over it."""
    if path is None:
        return _build({}, "default", "default policy")
    return _build(_read_toml(Path(path)), str(path), f"policy {str(path)!r}")


def load_policy_text(text: str, name: str = "policy") -> Policy:
    """A policy given as TOML text (an upload, a chat setting), laid over the defaults exactly as
    :func:`load_policy` lays a file; ``name`` stands for it in messages."""
    try:
        override = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{name} is not valid TOML ({exc}): fix the text") from None
    return _build(override, name, name)


def _build(override: dict[str, Any], name: str, label: str) -> Policy:
    """The defaults with ``override`` laid over them, validated section by section."""
    import fixloop.checks.all  # noqa: F401  (registers every check)

    raw = _merge(_read_toml(DEFAULT_POLICY_PATH), override)
    _check_structure(raw, label)
    unknown = sorted(set(raw.get("checks", {})) - set(REGISTRY.names()))
    if unknown:
        try:
            REGISTRY.get(unknown[0])
        except KeyError as exc:
            raise InputError(f"{label}: [checks.{unknown[0]}] names {exc.args[0]}") from None
    section = "gate"
    try:
        checks: dict[str, CheckParams] = {}
        for spec in REGISTRY:
            section = f"checks.{spec.name}"
            checks[spec.name] = spec.params_model.model_validate(raw.get("checks", {}).get(spec.name, {}))
        section = "gate"
        gate = GateRules.model_validate(raw.get("gate", {}))
        section = "analysis"
        analysis = AnalysisSettings.model_validate(raw.get("analysis", {}))
        section = "repair"
        repair = RepairSettings.model_validate(raw.get("repair", {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join([section, *(str(p) for p in first["loc"])])
        message = " ".join(str(first["msg"]).split())
        raise InputError(f"{label}: {where} = {_short(first.get('input'))}: {message}: fix the value") from None
    return Policy(name=name, gate=gate, analysis=analysis, repair=repair, checks=checks, raw=raw)
