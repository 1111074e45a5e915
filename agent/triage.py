"""What to repair next, and when to stop.

The order is the failure library's: **structure, then light, then detail**; within a stage P0
before P1 (and P2 only in the optional polish pass, once no P0/P1 is left); within a priority the
finding furthest past its limit first. Two rules refine the order:

- **No detail repair while a structure defect is open.** A face or hand repaired on a wrong
  composition is wasted work. When a structure defect stays open (no backend can repair it, or it
  resisted its ladder), the detail defects are left open too, with that reason; light repairs still
  run (they are global curves, cheap to redo after a recompose).
- **Light before restore.** Composite-back (the repair of ``mask_spill``) puts the source's pixels
  back outside the edit mask. If the light also drifted (``exposure_drift``,
  ``color_temperature_drift``, measured on exactly those pixels), restoring them first would erase the
  only place the drift can be measured, and the edited area inside the mask would keep the drift
  for good. So a light drift measured against the source is corrected first, in its own pass, and
  the restore follows.

The run stops when no P0/P1 (or, with polish, P2) defect is left to try, or when the budget of
passes, dollars or seconds is spent. Dollars are also checked by the planner before a paid call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fixloop.agent.findings import severity
from fixloop.agent.state import MONEY_CAUSES, Budget, FindingRecord, OpenCause, OpenDefect, Spend, StopReason
from fixloop.checks.base import PRIORITY_ORDER, STAGE_ORDER, Priority, Stage

LIGHT_BEFORE_RESTORE = ("exposure_drift", "color_temperature_drift")


@dataclass
class Triage:
    """Exactly one of: the next target, or why the run stops (typed, and in words)."""

    target: FindingRecord | None = None
    stop: StopReason | None = None
    stop_reason: str | None = None
    blocked: dict[str, OpenDefect] = field(default_factory=dict)  # detail defects a structure defect holds back now


def order_key(record: FindingRecord) -> tuple[int, int, float]:
    return (STAGE_ORDER[Stage(record.stage)], PRIORITY_ORDER[Priority(record.priority)], -severity(record))


def budget_stop(budget: Budget, spend: Spend) -> tuple[StopReason, str] | None:
    """(why, in words) when a limit is reached, else None."""
    if spend.passes >= budget.max_passes:
        return StopReason.budget_passes, f"budget: {spend.passes} of {budget.max_passes} passes used"
    if spend.usd > 0 and spend.usd >= budget.max_usd:
        return StopReason.budget_usd, f"budget: ${spend.usd:.4f} of ${budget.max_usd:.2f} spent"
    if spend.seconds >= budget.max_seconds:
        return StopReason.budget_seconds, f"budget: {spend.seconds:.1f} s of {budget.max_seconds:g} s used"
    return None


def triage(findings: list[FindingRecord], open_defects: dict[str, OpenDefect], fail_on: list[str],
           polish: bool, budget: Budget, spend: Spend, verdict: str | None = None) -> Triage:
    """Pick the next target, or say why the run stops."""
    if verdict == "error":
        return Triage(stop=StopReason.error,
                      stop_reason="error: a check failed on the current image; see the report's check notes")
    must_fix = [f for f in findings if f.priority in fail_on]
    polishable = [f for f in findings if f.priority not in fail_on] if polish else []
    pending = sorted((f for f in must_fix if f.key not in open_defects), key=order_key)
    if not pending and polish and not [f for f in must_fix if f.key in open_defects]:
        pending = sorted((f for f in polishable if f.key not in open_defects), key=order_key)

    blocked: dict[str, OpenDefect] = {}
    structure_open = [f for f in findings if f.stage == Stage.structure.value and f.priority in fail_on]
    if structure_open and any(f.key in open_defects for f in structure_open):
        holding = next(f for f in structure_open if f.key in open_defects)
        for f in [f for f in pending if f.stage == Stage.detail.value]:
            blocked[f.key] = OpenDefect(
                key=f.key, kind=f.kind, priority=f.priority, cause=OpenCause.held_back, box=f.box,
                reason=f"not attempted: the structure defect {holding.kind} is still open, and a detail "
                       "repair on a wrong structure is wasted",
                would_fix=f"repair {holding.kind} first, then the {f.template} template on this region")
        pending = [f for f in pending if f.key not in blocked]

    if not pending:
        left = [f for f in findings if f.priority in fail_on]
        if not left:
            return Triage(stop=StopReason.clean, stop_reason="clean: no P0/P1 defect left", blocked=blocked)
        money = [open_defects[f.key].reason for f in left
                 if f.key in open_defects and open_defects[f.key].cause in MONEY_CAUSES]
        if money:  # what ended the run is the dollar budget, not the defects themselves
            return Triage(stop=StopReason.budget_usd, stop_reason=money[0], blocked=blocked)
        return Triage(stop=StopReason.stuck,
                      stop_reason=f"stuck: {len(left)} P0/P1 defect(s) left open (see open_defects)",
                      blocked=blocked)
    stop = budget_stop(budget, spend)
    if stop is not None:
        return Triage(stop=stop[0], stop_reason=stop[1], blocked=blocked)

    target = pending[0]
    other_structure = [f for f in pending if f.stage == Stage.structure.value and f.kind != "mask_spill"]
    if target.kind == "mask_spill" and not other_structure:
        light = [f for f in pending if f.kind in LIGHT_BEFORE_RESTORE and _against_source(f)]
        if light:
            target = light[0]
    return Triage(target=target, blocked=blocked)


def restrict(findings: list[FindingRecord], only_kinds: list[str] | None,
             skip_kinds: list[str] = (), inherited: bool = False) -> list[FindingRecord]:
    """The findings a run may repair: those of ``only_kinds`` (all when None), none of ``skip_kinds``,
    and none the source already had (``inherited``) unless ``inherited`` is true (the policy's
    ``gate.count_inherited``): a defect the edit did not make is neither a target nor a reason to
    hold a detail repair back. The others stay on the image and in the report."""
    return [f for f in findings
            if (only_kinds is None or f.kind in only_kinds) and f.kind not in skip_kinds
            and (inherited or not f.inherited)]


def _against_source(record: FindingRecord) -> bool:
    """A light drift measured against the source (not against the first of several passes)."""
    return record.kind == "color_temperature_drift" or record.evidence.get("baseline") == "the source"
