"""Judging one attempt: keep it, or roll back to the image before it.

An attempt is accepted only when all of these hold:

1. every check ran (a crashed check on the output is never read as a clean output);
2. a repair with a mask left the pixels outside its mask alone: the ``mask_spill`` measure, run
   with the image before the attempt as the source and the repair's mask as the edit mask, finds
   nothing (GPT Image treats its mask as a hint, so this is where its drift is caught);
3. its target is gone, or clearly improved: at least ``min_improvement`` of the finding's excess
   past its limit was removed, on the same measure (a finding now judged against another limit, say
   a soft region that became a soft picture, is not counted as improved);
4. the repair caused no new P0/P1 defect, and no P0/P1 finding already there (the pass's other
   targets included; not one the source has, ``inherited``) got ``worse_factor`` times worse.

A defect is new only if the repair caused it. A finding after the attempt is the same defect as one
before it when it has the same kind at the same place (regions matched by overlap, not by exact
key: :func:`agent.findings.match_keys`). A finding with no such partner is judged by these rules,
in order, and the attempt records which one decided (:class:`~agent.state.SideEffect`):

- ``inherited``: the source has it in the same way (the check says so): not the edit's, nor the repair's;
- ``in_input``: the run's input had it at the same place (a soft patch the input already had is
  not the repair's doing, even when an earlier pass hid it for a while);
- ``untouched``: the repair changed less than ``UNTOUCHED_SHARE`` of the pixels of its region (outside
  its mask, say), not counting pixels it put back to the source's exactly (composite-back): a repair
  cannot create a defect where it did not change the picture, or only restored the original;
- ``clipped_in_input``: a loss of detail (``texture_blur``) where at least ``CLIPPED_SHARE`` of the
  region was clipped in the run's input (a channel at ``CLIPPED_LEVEL`` or more): the detail was gone
  before the run; darkening a blown-out sky shows its flatness, it does not make it;
- ``detail_kept``: a loss of detail (``texture_blur``, measured against the source) in a region where
  the attempt's output holds at least ``DETAIL_KEPT`` of the detail the image before it held (mean
  |Laplacian| of the grey image): the repair removed no detail there. After composite-back, a soft
  edit the user allowed inside the mask reads as soft beside the restored original, but it is the
  same edit as before;
- ``traded``: it is a P2 (or a P2 that got worse): the repair removed a P0/P1 target, so the P2 is
  accepted and reported as the price of the fix;
- ``caused``: otherwise. A P0/P1 the repair caused rolls the attempt back (``new_defect``).

A generative repair whose outside could not be checked is not accepted either: when the
``mask_spill`` measure cannot run (no mask, a mask that leaves too little of the picture to compare,
or one that does not fit it), the attempt is rolled back as ``unverified``, since a skipped measure
never reads as "nothing spilled". The one exception is a whole-image repair by design (a redraw of
the whole picture, or the repair of a whole-image finding) whose mask leaves nothing outside it:
nothing there is to protect, and the attempt's notes say so.

Otherwise the run keeps the image before the attempt, and the reason goes into the report, typed
(:class:`~agent.state.AttemptCause`) and in words. A rejection for ``spilled`` lets the planner
salvage the output (composite it back inside its mask) instead of paying for another call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Sequence

import numpy as np

from fixloop.agent.findings import same_place, severity
from fixloop.agent.state import AttemptCause, FindingRecord, MaskSource, RepairPlan, SideEffect, SideEffectRule
from fixloop.checks.policy import Policy

# A mask covering at least this share of the picture leaves nothing worth comparing outside it.
WHOLE_IMAGE_SHARE = 0.98
WHOLE_IMAGE_NOTE = "whole-image repair: nothing outside the mask to protect"
# A pixel changed when one of its channels moved by more than this (8-bit levels; PNG steps are exact).
CHANGED_LEVEL = 2
# A region the repair changed less than this share of is untouched by it.
UNTOUCHED_SHARE = 0.01
# Clipped pixels: a channel at this level or more (8-bit; JPEG rings just below 255).
CLIPPED_LEVEL = 250
# A detail loss on a region at least this clipped in the run's input was there before the run. On the
# shared photos brightened 1 EV, the regions whose flatness an exposure pass then showed were 67-94 %
# clipped (max channel >= 250), against 0-19 % in the photos themselves.
CLIPPED_SHARE = 0.5
DETAIL_KINDS = ("texture_blur",)
# The output holds at least this share of the detail the image before the attempt had in a region.
DETAIL_KEPT = 0.95


@dataclass
class Judgement:
    accepted: bool
    cause: AttemptCause
    reason: str
    notes: list[str] = field(default_factory=list)
    side_effects: list[SideEffect] = field(default_factory=list)


class SpillStatus(str, Enum):
    held = "held"  # measured: the pixels outside the mask held
    spilled = "spilled"  # measured: pixels outside the mask changed
    unmeasured = "unmeasured"  # the measure could not run; ``message`` says why
    whole_image = "whole_image"  # no mask, or one that leaves (nearly) nothing outside it to compare


@dataclass(frozen=True)
class Spill:
    """What the ``mask_spill`` measure says about the pixels outside a repair's mask."""

    status: SpillStatus
    message: str = ""


def whole_image_by_design(plan: RepairPlan) -> bool:
    """The plan repairs the whole picture on purpose: a redraw with no mask, or a whole-image finding."""
    return plan.mask_source == MaskSource.none or plan.target.box is None


def outside_change(before: np.ndarray, after: np.ndarray, mask: np.ndarray | None, policy: Policy) -> Spill:
    """How the attempt changed the pixels outside ``mask``, by the mask_spill measure (``mask`` None:
    the tool had no mask, so the whole picture was open to it)."""
    from fixloop.checks.base import CheckSkipped, REGISTRY
    from fixloop.checks.context import CheckContext

    if before.shape != after.shape:
        return Spill(SpillStatus.spilled,
                     f"the output is {after.shape[1]}x{after.shape[0]} but the image was "
                     f"{before.shape[1]}x{before.shape[0]}, so nothing outside the mask can be kept")
    if mask is None:
        return Spill(SpillStatus.whole_image, "the repair had no mask: the whole picture was open to it")
    if mask.shape != before.shape[:2]:
        return Spill(SpillStatus.unmeasured, f"the mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                                             f"{before.shape[1]}x{before.shape[0]}")
    if mask.mean() >= WHOLE_IMAGE_SHARE:
        return Spill(SpillStatus.whole_image, f"the mask covers {mask.mean():.0%} of the picture")
    ctx = CheckContext.from_arrays(after, before, mask, max_side=policy.analysis.max_side)
    try:
        found = REGISTRY.get("mask_spill").function(ctx, policy.params("mask_spill"))
    except CheckSkipped as exc:  # the measure's one skip: too little of the picture left outside the mask
        return Spill(SpillStatus.whole_image, str(exc))
    if not found:
        return Spill(SpillStatus.held)
    return Spill(SpillStatus.spilled, found[0].message)


def changed_pixels(before: np.ndarray, after: np.ndarray, source: np.ndarray | None = None) -> np.ndarray | None:
    """Where the attempt changed the picture (bool, after's size), or None when the two do not line
    up pixel for pixel (a grown canvas): then every pixel counts as changed. Pixels the attempt put
    back to the ``source``'s exactly (composite-back) are not counted: restoring the original cannot
    create a defect measured against it."""
    if before.shape[:2] != after.shape[:2]:
        return None
    a, b = before[..., :3].astype(np.int16), after[..., :3].astype(np.int16)
    changed = np.abs(a - b).max(axis=2) > CHANGED_LEVEL
    if source is not None and source.shape[:2] == after.shape[:2]:
        changed &= np.abs(source[..., :3].astype(np.int16) - b).max(axis=2) > CHANGED_LEVEL
    return changed


def _share(box: list[int] | None, where: np.ndarray) -> float | None:
    """The share of ``box`` (the whole image when None) that ``where`` marks; None for an empty box."""
    if box is None:
        return float(where.mean())
    x0, y0, x1, y1 = (int(v) for v in box)
    patch = where[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)]
    return float(patch.mean()) if patch.size else None


def _touched(box: list[int] | None, changed: np.ndarray | None) -> bool:
    share = None if changed is None else _share(box, changed)
    return share is None or share >= UNTOUCHED_SHARE


def clipped_pixels(image: np.ndarray) -> np.ndarray:
    """Where ``image`` (uint8) is clipped: a channel at ``CLIPPED_LEVEL`` or more."""
    return image[..., :3].max(axis=2) >= CLIPPED_LEVEL


def _clipped(box: list[int] | None, clipped: np.ndarray | None) -> bool:
    share = None if clipped is None else _share(box, clipped)
    return share is not None and share >= CLIPPED_SHARE


def detail_ratio(before: np.ndarray, after: np.ndarray, box: list[int] | None) -> float | None:
    """Detail (mean |Laplacian| of the grey image) of ``after`` over ``before`` inside ``box`` (the whole
    image when None); None when the two do not line up or the region has no detail before."""
    import cv2

    if before.shape[:2] != after.shape[:2]:
        return None
    h, w = before.shape[:2]
    x0, y0, x1, y1 = (0, 0, w, h) if box is None else (max(int(box[0]), 0), max(int(box[1]), 0),
                                                        min(int(box[2]), w), min(int(box[3]), h))
    if x1 - x0 < 3 or y1 - y0 < 3:
        return None

    def detail(image: np.ndarray) -> float:
        grey = cv2.cvtColor(np.ascontiguousarray(image[y0:y1, x0:x1, :3]), cv2.COLOR_RGB2GRAY).astype(np.float32)
        return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F)).mean())

    base = detail(before)
    return detail(after) / base if base > 0 else None


def side_effect_rule(finding: FindingRecord, fail_on: list[str], input_findings: Sequence[FindingRecord],
                     changed: np.ndarray | None, input_clipped: np.ndarray | None = None,
                     images: tuple[np.ndarray, np.ndarray] | None = None) -> SideEffectRule:
    """Which rule decides about ``finding``, found after an attempt and not before it (module docstring)."""
    if finding.inherited:
        return SideEffectRule.inherited
    if any(f.kind == finding.kind and same_place(f.box, finding.box) for f in input_findings):
        return SideEffectRule.in_input
    if not _touched(finding.box, changed):
        return SideEffectRule.untouched
    if finding.kind in DETAIL_KINDS and _clipped(finding.box, input_clipped):
        return SideEffectRule.clipped_in_input
    if finding.kind in DETAIL_KINDS and images is not None:
        ratio = detail_ratio(images[0], images[1], finding.box)
        if ratio is not None and ratio >= DETAIL_KEPT:
            return SideEffectRule.detail_kept
    if finding.priority not in fail_on:
        return SideEffectRule.traded
    return SideEffectRule.caused


def judge(plan: RepairPlan, before: Sequence[FindingRecord], after: Sequence[FindingRecord], fail_on: list[str],
          min_improvement: float, worse_factor: float, verdict: str, spill: Spill | None,
          input_findings: Sequence[FindingRecord] = (), changed: np.ndarray | None = None,
          input_clipped: np.ndarray | None = None, images: tuple[np.ndarray, np.ndarray] | None = None) -> Judgement:
    """Accept or reject one attempt (see the module docstring for the rules, in order). ``spill`` is
    None when the repair was not asked to keep the pixels outside a mask (a local, deterministic tool);
    ``input_findings`` are the run input's findings placed on this image; ``changed`` is where the
    attempt changed the picture (:func:`changed_pixels`; None: everywhere); ``input_clipped`` is where
    the run's input was clipped, placed on this image (:func:`clipped_pixels`; None: unknown);
    ``images`` are the pictures before and after the attempt (None: not compared)."""
    if verdict == "error":
        return Judgement(False, AttemptCause.check_error, "a check failed on the output, so it cannot be judged")
    notes: list[str] = []
    if spill is not None and spill.status == SpillStatus.spilled:
        return Judgement(False, AttemptCause.spilled,
                         f"spilled: the repair changed pixels outside its mask ({spill.message})")
    if spill is not None and spill.status in (SpillStatus.unmeasured, SpillStatus.whole_image):
        if spill.status == SpillStatus.whole_image and whole_image_by_design(plan):
            notes.append(WHOLE_IMAGE_NOTE)
        else:
            return Judgement(False, AttemptCause.unverified,
                             f"unverified: whether the repair changed pixels outside its mask could not be "
                             f"measured ({spill.message})")

    before_by_key = {f.key: f for f in before}
    after_by_key = {f.key: f for f in after}
    targets = [plan.target.key, *plan.also_fixes]
    progress = []
    for key in targets:
        old = before_by_key.get(key)
        new = after_by_key.get(key)
        if old is None:
            continue
        if new is None:
            progress.append(f"{old.kind} gone")
            continue
        if (new.threshold, new.unit) != (old.threshold, old.unit):
            continue  # measured another way now (a soft patch became a soft picture): no claim of progress
        excess = severity(old) - 1.0
        removed = severity(old) - severity(new)
        if excess > 0 and removed >= min_improvement * excess:
            progress.append(f"{old.kind} improved {old.score:g} -> {new.score:g} {new.unit}")
    target = before_by_key.get(plan.target.key, plan.target)
    if not progress:
        new = after_by_key.get(plan.target.key)
        now = "unchanged" if new is None else f"{target.score:g} -> {new.score:g} {new.unit}"
        return Judgement(False, AttemptCause.no_progress,
                         f"no progress: {target.kind} {now}, not {min_improvement:.0%} of the way back "
                         "inside its limit", notes)

    effects = [SideEffect(key=f.key, kind=f.kind, priority=f.priority,
                          rule=side_effect_rule(f, fail_on, input_findings, changed, input_clipped, images))
               for f in after if f.key not in before_by_key]
    worse = [(before_by_key[f.key], f) for f in after
             if f.key in before_by_key and not f.inherited and (f.threshold, f.unit) == (before_by_key[f.key].threshold, before_by_key[f.key].unit)
             and severity(f) > worse_factor * severity(before_by_key[f.key])]
    effects += [SideEffect(key=new.key, kind=new.kind, priority=new.priority, worse=True,
                           rule=SideEffectRule.caused if new.priority in fail_on else SideEffectRule.traded)
                for old, new in worse]
    notes += [_effect_note(e) for e in effects if e.rule != SideEffectRule.caused]
    caused = [f for f in after if f.key not in before_by_key and f.priority in fail_on
              and any(e.key == f.key and e.rule == SideEffectRule.caused and not e.worse for e in effects)]
    if caused:
        names = ", ".join(f"{f.kind} ({f.priority}, {f.score:g} {f.unit})" for f in caused)
        return Judgement(False, AttemptCause.new_defect, f"new defect: {names} appeared ({'; '.join(progress)})",
                         notes, effects)
    made_worse = [(old, new) for old, new in worse if new.priority in fail_on]
    if made_worse:
        names = ", ".join(f"{old.kind} {old.score:g} -> {new.score:g} {new.unit}" for old, new in made_worse)
        return Judgement(False, AttemptCause.made_worse, f"made worse: {names} ({'; '.join(progress)})", notes, effects)
    return Judgement(True, AttemptCause.accepted, "; ".join(progress), notes, effects)


EFFECT_WORDS = {
    SideEffectRule.inherited: "not counted: the source has it in the same way",
    SideEffectRule.in_input: "not counted: the run's input already had it there",
    SideEffectRule.untouched: "not counted: the repair did not change the pixels of its region",
    SideEffectRule.clipped_in_input: "not counted: the run's input was already clipped there, its detail gone",
    SideEffectRule.detail_kept: "not counted: the repair left as much detail there as the image before it had",
    SideEffectRule.traded: "accepted as the price of the fix (a P2 side effect)",
}


def _effect_note(effect: SideEffect) -> str:
    what = "got worse" if effect.worse else "appeared"
    return f"{effect.kind} ({effect.priority}) {what}: {EFFECT_WORDS[effect.rule]} [{effect.rule.value}]"
