"""Judging one attempt: keep it, or roll back to the image before it.

An attempt is accepted only when all of these hold:

1. every check ran (a crashed check on the output is never read as a clean output);
2. a repair with a mask left the pixels outside its mask alone: the ``mask_spill`` measure, run
   with the image before the attempt as the source and the repair's mask as the edit mask, finds
   nothing (GPT Image treats its mask as a hint, so this is where its drift is caught);
3. its target is gone, or clearly improved: at least ``min_improvement`` of the finding's excess
   past its limit was removed, on the same measure (a finding now judged against another limit, say
   a soft region that became a soft picture, is not counted as improved);
4. no new P0/P1 finding appeared, and no finding already there (the pass's other targets included)
   got ``worse_factor`` times worse.

Otherwise the run keeps the image before the attempt, and the reason goes into the report. A
rejection whose reason starts with ``spilled`` lets the planner salvage the output (composite it
back inside its mask) instead of paying for another call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fixloop.agent.findings import severity
from fixloop.agent.state import FindingRecord, RepairPlan
from fixloop.checks.policy import Policy


@dataclass
class Judgement:
    accepted: bool
    reason: str


def outside_change(before: np.ndarray, after: np.ndarray, mask: np.ndarray, policy: Policy) -> str | None:
    """How the attempt changed pixels outside ``mask`` (None when it did not), by the mask_spill measure."""
    from fixloop.checks.base import CheckSkipped, REGISTRY
    from fixloop.checks.context import CheckContext

    if before.shape != after.shape:
        return (f"the output is {after.shape[1]}x{after.shape[0]} but the image was "
                f"{before.shape[1]}x{before.shape[0]}, so nothing outside the mask can be kept")
    if mask.shape != before.shape[:2] or mask.all():
        return None
    ctx = CheckContext.from_arrays(after, before, mask, max_side=policy.analysis.max_side)
    try:
        found = REGISTRY.get("mask_spill").function(ctx, policy.params("mask_spill"))
    except CheckSkipped:
        return None
    if not found:
        return None
    return found[0].message


def judge(plan: RepairPlan, before: Sequence[FindingRecord], after: Sequence[FindingRecord], fail_on: list[str],
          min_improvement: float, worse_factor: float, verdict: str, spill: str | None) -> Judgement:
    """Accept or reject one attempt (see the module docstring for the rules, in order)."""
    if verdict == "error":
        return Judgement(False, "a check failed on the output, so it cannot be judged")
    if spill is not None:
        return Judgement(False, f"spilled: the repair changed pixels outside its mask ({spill})")

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
        return Judgement(False, f"no progress: {target.kind} {now}, not {min_improvement:.0%} of the way back "
                                "inside its limit")

    appeared = [f for f in after if f.key not in before_by_key and f.priority in fail_on]
    if appeared:
        names = ", ".join(f"{f.kind} ({f.priority}, {f.score:g} {f.unit})" for f in appeared)
        return Judgement(False, f"new defect: {names} appeared ({'; '.join(progress)})")
    worse = [(before_by_key[f.key], f) for f in after
             if f.key in before_by_key and (f.threshold, f.unit) == (before_by_key[f.key].threshold, before_by_key[f.key].unit)
             and severity(f) > worse_factor * severity(before_by_key[f.key])]
    if worse:
        names = ", ".join(f"{old.kind} {old.score:g} -> {new.score:g} {new.unit}" for old, new in worse)
        return Judgement(False, f"made worse: {names} ({'; '.join(progress)})")
    return Judgement(True, "; ".join(progress))
