"""The vocabulary every check speaks: defect kinds, findings, and the check registry.

A check is a plain function ``(ctx: CheckContext, params) -> list[Finding]`` registered under the
name of the defect kind it reports. Its thresholds and priority come from the policy file
(``checks/policy.py``); its stage comes from the failure library and never changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from fixloop.checks.registry import Registry


class Stage(str, Enum):
    """Repairs run in this order: a detail repair built on a broken structure is wasted."""

    structure = "structure"
    light = "light"
    detail = "detail"


class Priority(str, Enum):
    """P0: cannot ship. P1: visible defect. P2: polish."""

    P0 = "P0"
    P1 = "P1"
    P2 = "P2"


STAGE_ORDER = {Stage.structure: 0, Stage.light: 1, Stage.detail: 2}
PRIORITY_ORDER = {Priority.P0: 0, Priority.P1: 1, Priority.P2: 2}


@dataclass(frozen=True)
class DefectKind:
    """One row of the failure library: the defect's stage and the repair template that fixes it."""

    name: str
    stage: Stage
    template: str


# The failure library's defect kinds, with the same names in code, reports and docs.
DEFECT_KINDS: dict[str, DefectKind] = {
    kind.name: kind
    for kind in [
        DefectKind("mask_spill", Stage.structure, "narrow-edit"),
        DefectKind("subject_cropped", Stage.structure, "recompose"),
        DefectKind("perspective_broken", Stage.structure, "perspective"),
        DefectKind("mirrored", Stage.structure, "recompose"),
        DefectKind("subjects_swapped", Stage.structure, "two-subjects"),
        DefectKind("sticker_object", Stage.light, "contact-shadow"),
        DefectKind("exposure_drift", Stage.light, "exposure-color"),
        DefectKind("color_temperature_drift", Stage.light, "exposure-color"),
        DefectKind("light_direction_mismatch", Stage.light, "light-direction"),
        DefectKind("identity_drift", Stage.detail, "face"),
        DefectKind("hand_malformed", Stage.detail, "hands"),
        DefectKind("texture_blur", Stage.detail, "texture-edge"),
        DefectKind("edge_halo", Stage.detail, "texture-edge"),
    ]
}

KindName = Literal[
    "mask_spill",
    "subject_cropped",
    "perspective_broken",
    "mirrored",
    "subjects_swapped",
    "sticker_object",
    "exposure_drift",
    "color_temperature_drift",
    "light_direction_mismatch",
    "identity_drift",
    "hand_malformed",
    "texture_blur",
    "edge_halo",
]


class Region(BaseModel):
    """Where a defect is, in the candidate's own pixel coordinates.

    ``box`` is ``[x0, y0, x1, y1]`` (x1/y1 exclusive). ``mask_file`` names a PNG written next to the
    report when the report is saved with ``--out`` (white = the defect's pixels).
    """

    model_config = ConfigDict(extra="forbid")

    box: list[int] | None = Field(default=None, min_length=4, max_length=4)
    area_fraction: float | None = Field(default=None, description="share of the image the region covers")
    mask_file: str | None = None

    @classmethod
    def of_mask(cls, full: np.ndarray, box: list[int] | None = None) -> "Region":
        """The region of a candidate-resolution bool mask: ``box`` (the mask's own bounding box when
        not given) and the share of the image the mask covers."""
        if box is None:
            ys, xs = np.nonzero(full)
            box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if xs.size else None
        return cls(box=box, area_fraction=round(np.count_nonzero(full) / full.size, 5))


class Finding(BaseModel):
    """One defect found by one check."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    kind: KindName
    stage: Stage
    priority: Priority
    score: float = Field(description="the measured value, in `unit`")
    threshold: float = Field(description="the policy limit the score crossed, in `unit`")
    unit: str
    message: str = Field(description="one sentence for a person")
    repair_template: str
    region: Region | None = None
    evidence: dict[str, Any] = Field(default_factory=dict, description="the numbers behind the finding")
    check: str = Field(description="registry name of the check that reported it")
    inherited: bool = Field(default=False, description="the source has this defect in the same way (its own "
                            "framing, a hand it already had): not the edit's doing, so it does not count "
                            "toward the verdict unless the policy's gate.count_inherited says so")
    # Full-resolution mask of the region (candidate pixels); written to a PNG by the report writer.
    mask: SkipJsonSchema[np.ndarray | None] = Field(default=None, exclude=True, repr=False)

    @property
    def sort_key(self) -> tuple[int, int, float]:
        return (STAGE_ORDER[self.stage], PRIORITY_ORDER[self.priority], -abs(self.score))


class CheckParams(BaseModel):
    """Settings every check has. Each check extends this with its own thresholds."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    priority: Priority


class CheckSkipped(Exception):
    """Raised by a check that cannot measure this input (the reason goes into the report)."""


CheckFunction = Callable[[Any, Any], "list[Finding]"]


@dataclass(frozen=True)
class CheckSpec:
    """A registered check: its name (= the defect kind it reports), its function and its settings."""

    name: str
    function: CheckFunction
    params_model: type[CheckParams]
    requires: tuple[str, ...] = ()
    description: str = ""
    # Judge the source alone too, and mark a finding the source has at the same place as inherited
    # (for checks that judge the candidate on its own, such as hands; checks that compare with the
    # source already know what the source had).
    inheritable: bool = False
    judge_source_alone: bool = True  # with ``inheritable``: also run the check on the source alone

    @property
    def kind(self) -> DefectKind:
        return DEFECT_KINDS[self.name]


class CheckRegistry(Registry[CheckSpec]):
    """Stable check names -> checks; a check's name must be a defect kind of the failure library."""

    def __init__(self) -> None:
        super().__init__("check", "checks")

    def register(self, spec: CheckSpec) -> None:
        if spec.name not in self and spec.name not in DEFECT_KINDS:
            raise ValueError(
                f"check name {spec.name!r} is not a defect kind of the failure library "
                f"({', '.join(DEFECT_KINDS)})"
            )
        super().register(spec)


REGISTRY = CheckRegistry()


def register_check(
    name: str,
    params: type[CheckParams],
    requires: tuple[str, ...] = (),
    inheritable: bool = False,
    judge_source_alone: bool = True,
) -> Callable[[CheckFunction], CheckFunction]:
    """Decorator: register ``function`` as the check for defect kind ``name``.

    ``requires`` lists inputs the check cannot run without (``"source"``, ``"mask"``,
    ``"references"``, ``"history"``); when one is missing the check is reported as skipped.
    ``inheritable``: with a source, the engine marks as ``inherited`` the candidate's findings whose
    region keeps the source's pixels and, unless ``judge_source_alone`` is false (a check that already
    compares with the source), those the check finds at the same place on the source alone.
    """

    def decorate(function: CheckFunction) -> CheckFunction:
        REGISTRY.register(
            CheckSpec(
                name=name,
                function=function,
                params_model=params,
                requires=requires,
                inheritable=inheritable,
                judge_source_alone=judge_source_alone,
                description=(function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else "",
            )
        )
        return function

    return decorate


def make_finding(
    name: str,
    params: CheckParams,
    *,
    score: float,
    threshold: float,
    unit: str,
    message: str,
    region: Region | None = None,
    evidence: dict[str, Any] | None = None,
    mask: np.ndarray | None = None,
    inherited: bool = False,
) -> Finding:
    """Build a finding for defect kind ``name`` with the stage and template of the failure library."""
    kind = DEFECT_KINDS[name]
    return Finding(
        kind=name,
        stage=kind.stage,
        priority=params.priority,
        score=round(float(score), 4),
        threshold=float(threshold),
        unit=unit,
        message=message,
        repair_template=kind.template,
        region=region,
        evidence=evidence or {},
        check=name,
        mask=mask,
        inherited=inherited,
    )
