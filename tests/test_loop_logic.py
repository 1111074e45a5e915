"""The repair loop's decisions: what triage picks and when it stops (agent/triage.py), which rung of
which ladder the planner climbs (agent/planner.py), how verify judges an attempt (agent/verify.py) and
how findings keep their keys from pass to pass (agent/findings.py).

Pure rules run on small hand-built records. Where the shape of real records matters, the real checks
run on a shared photo with a defect made on purpose (tests/defects.py) and the records are built the
way the loop builds them (``record_findings``), at ``max_side=512`` to keep the file quick.
"""

from __future__ import annotations

import numpy as np
import pytest

from fixloop.agent.files import RunFiles
from fixloop.agent.findings import (MAX_SEVERITY, flip_records, match_keys, new_key, record_findings, severity,
                                    still_open, to_finding)
from fixloop.agent.planner import GENERATIVE, PlanContext, estimate_usd, ladder, plan_repair, usable_ladder, would_fix
from fixloop.agent.state import (Attempt, AttemptCause, Budget, FindingRecord, MaskSource, OpenCause, OpenDefect,
                                 Outcome, RepairPlan, Spend, StopReason)
from fixloop.agent.triage import budget_stop, order_key, restrict, triage
from fixloop.agent.verify import WHOLE_IMAGE_NOTE, Spill, SpillStatus, judge, outside_change
from fixloop.checks.base import DEFECT_KINDS, Finding, Region
from fixloop.checks.context import CheckContext
from fixloop.checks.engine import run_checks
from fixloop.checks.policy import load_policy
from fixloop.prompts.render import load_template
from tests import defects
from tests.conftest import photo

POLICY = load_policy()
SETTINGS = POLICY.repair
FAIL_ON = [p.value for p in POLICY.gate.fail_on]  # ["P0", "P1"]
SIZE = (1000, 800)  # (w, h) of the current image in the planner tests
HAND_EVIDENCE = {"handedness": "Left", "hand_box": [100, 100, 300, 300]}  # what the hands template reads
SMALL_PHOTO = "body_seated_01.jpg"  # 500 x 333: the quickest photo for the flip and blur cases
TALL_PHOTO = "gen_clean_01.jpg"  # 1024 x 1360: the spill case


# ---- helpers -----------------------------------------------------------------------------------


def record(kind: str, priority: str = "P1", score: float = 2.0, threshold: float = 1.0, stage: str | None = None,
           box: list[int] | None = None, key: str | None = None, evidence: dict | None = None) -> FindingRecord:
    """A hand-built finding record: stage and template from the failure library unless given."""
    spec = DEFECT_KINDS[kind]
    return FindingRecord(key=key or new_key(kind, box), kind=kind, stage=stage or spec.stage.value,
                         priority=priority, score=score, threshold=threshold, unit="units",
                         message=f"{kind} found", template=spec.template, box=box, evidence=evidence or {})


def finding(kind: str, box: list[int] | None = None, score: float = 2.0) -> Finding:
    spec = DEFECT_KINDS[kind]
    return Finding(kind=kind, stage=spec.stage, priority="P1", score=score, threshold=1.0, unit="units",
                   message=f"{kind} found", repair_template=spec.template,
                   region=None if box is None else Region(box=box), check=kind)


def context(backend: str = "local", has_source: bool = True, has_mask: bool = True, settings=SETTINGS,
            **extra) -> PlanContext:
    return PlanContext(backend=backend, settings=settings, image_size=SIZE, has_source=has_source,
                       has_mask=has_mask, **extra)


def attempt(index: int, plan: RepairPlan, outcome: Outcome = Outcome.rolled_back,
            reason: str = "no progress: unchanged", image: str | None = "auto",
            cause: AttemptCause = AttemptCause.no_progress) -> Attempt:
    image = f"attempts/{index:02d}-{plan.tool}.png" if image == "auto" else image
    return Attempt(index=index, plan=plan, image=image, mask=f"attempts/{index:02d}-mask.png",
                   outcome=outcome, cause=cause, reason=reason)


def opened(target: FindingRecord, cause: OpenCause = OpenCause.resisted_ladder, reason: str = "r") -> OpenDefect:
    """``target`` left open (by default: it resisted its ladder)."""
    return OpenDefect(key=target.key, kind=target.kind, priority=target.priority, cause=cause, box=target.box,
                      reason=reason, would_fix="w")


def climb(target: FindingRecord, ctx: PlanContext, reason: str = "no progress: unchanged"):
    """Plan, fail, plan again until the planner stops planning: (plans, final decision)."""
    history: list[Attempt] = []
    plans = []
    for _ in range(12):
        decision = plan_repair(target, [target], history, ctx)
        if decision.plan is None:
            return plans, decision
        plans.append(decision.plan)
        history.append(attempt(len(history) + 1, decision.plan, reason=reason))
    raise AssertionError("the planner never left the defect open")


def plan_for(kind: str, priority: str = "P1", score: float = 2.0, tool: str = "local.exposure_color",
             also_fixes: list[str] | None = None, **kw) -> RepairPlan:
    target = record(kind, priority, score, **kw)
    return RepairPlan(target=target, template=target.template, tool=tool, also_fixes=also_fixes or [])


def inspect(candidate: np.ndarray, source: np.ndarray, mask: np.ndarray | None, files: RunFiles,
            previous=(), prefix: str = "p0", names=None):
    """The real checks on ``candidate``, as records the loop would carry: (report, records)."""
    report = run_checks(CheckContext.from_arrays(candidate, source, mask, max_side=512), POLICY, names=names)
    return report, record_findings(report.findings, list(previous), files, prefix)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> RunFiles:
    return RunFiles(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def flip_exposure(files):
    """A mirrored, 0.7 EV darker edit of a real photo, checked: (case, records)."""
    source = photo(SMALL_PHOTO)
    case = defects.make("flip_and_exposure", source, -0.7)
    _, records = inspect(case.candidate, source, None, files, prefix="flip")
    return case, records


@pytest.fixture(scope="module")
def spill_exposure(files):
    """An edit that spilled left of its mask on a photo that also went 0.6 EV darker: (source, case, report, records)."""
    source = photo(TALL_PHOTO)
    case = defects.make("edit_spills_outside_mask", defects.make("exposure", source, -0.6).candidate, 0.15)
    report, records = inspect(case.candidate, source, case.mask, files, prefix="spill")
    return source, case, report, records


@pytest.fixture(scope="module")
def blurs(files):
    """texture_blur records of one photo blurred by sigma 1, 1.5 and 5 (only that check runs)."""
    source = photo(SMALL_PHOTO)
    out = {}
    for sigma in (1.0, 1.5, 5.0):
        _, records = inspect(defects.make("blur", source, sigma).candidate, source, None, files,
                             prefix=f"blur{sigma}", names=["texture_blur"])
        assert [r.kind for r in records] == ["texture_blur"], f"sigma {sigma}: {records}"
        out[sigma] = records[0]
    return out


# ---- triage on real records ---------------------------------------------------------------------


def test_real_flip_and_exposure_repairs_the_mirror_first(flip_exposure):
    _, records = flip_exposure
    kinds = {r.kind: r for r in records}
    assert {"mirrored", "exposure_drift"} <= set(kinds)
    assert kinds["mirrored"].key == "mirrored" and kinds["exposure_drift"].key == "exposure_drift"  # whole-image keys
    assert kinds["exposure_drift"].evidence["baseline"] == "the source"

    result = triage(records, {}, FAIL_ON, False, Budget(), Spend())
    assert result.stop is None and result.stop_reason is None and result.blocked == {}
    assert result.target.kind == "mirrored"

    decision = plan_repair(result.target, records, [], context("local", has_mask=False))
    assert decision.plan.tool == "local.flip_back" and decision.plan.rung == 0
    assert decision.plan.mask_source == MaskSource.none


def test_real_open_structure_defect_blocks_detail_but_not_light(flip_exposure):
    _, real = flip_exposure
    records = [*real, record("hand_malformed", "P0", 3.0, box=[10, 10, 60, 60], evidence=HAND_EVIDENCE)]
    detail = {r.key for r in records if r.stage == "detail"}
    mirrored = next(r for r in records if r.kind == "mirrored")
    open_defects = {mirrored.key: opened(mirrored, reason="resisted all 1 rung(s) of its ladder")}

    result = triage(records, open_defects, FAIL_ON, False, Budget(), Spend())
    assert result.target.stage == "light"  # light repairs still run while a structure defect is open
    assert set(result.blocked) == detail
    for key, defect in result.blocked.items():
        assert "mirrored" in defect.reason and defect.key == key and defect.cause == OpenCause.held_back
        assert next(r.template for r in records if r.key == key) in defect.would_fix

    # once the light is handled too, only held-back and open defects remain: the run is stuck, not clean.
    # The held-back detail defects are not written into open_defects (the graph keeps them in held_back);
    # triage works them out again on every call from the structure defects open now.
    for r in records:
        if r.stage == "light":
            open_defects[r.key] = opened(r, reason="x")
    stuck = triage(records, open_defects, FAIL_ON, False, Budget(), Spend())
    assert stuck.target is None and set(stuck.blocked) == detail
    assert not detail & set(open_defects)
    assert stuck.stop == StopReason.stuck and stuck.stop_reason.startswith("stuck: ")
    assert f"{len([r for r in records if r.priority in FAIL_ON])} P0/P1" in stuck.stop_reason


def test_blocked_detail_is_released_once_no_structure_defect_is_open():
    hand = record("hand_malformed", "P0", 3.0, box=[10, 10, 60, 60], evidence=HAND_EVIDENCE)
    mirrored = record("mirrored", "P0", 0.9, 0.2)
    left_open = {mirrored.key: opened(mirrored)}
    first = triage([mirrored, hand], left_open, FAIL_ON, False, Budget(), Spend())
    assert first.target is None and hand.key in first.blocked and first.stop == StopReason.stuck
    # held back, not left open: the graph keeps first.blocked in state.held_back, never in open_defects
    assert hand.key not in left_open
    # while the mirror is still found, every triage holds the hand back again
    again = triage([mirrored, hand], left_open, FAIL_ON, False, Budget(), Spend(passes=1))
    assert again.target is None and set(again.blocked) == {hand.key}
    # the next pass's checks no longer find the mirror (its key is still in open_defects): nothing holds
    # the hand back any more
    later = triage([hand], left_open, FAIL_ON, False, Budget(), Spend(passes=1))
    assert later.target is not None and later.target.key == hand.key and later.blocked == {}


def test_real_spill_and_exposure_light_before_restore_then_restore_then_clean(spill_exposure, files):
    source, case, report, before = spill_exposure
    kinds = {r.kind: r for r in before}
    assert set(kinds) >= {"mask_spill", "exposure_drift"}
    assert kinds["exposure_drift"].evidence["baseline"] == "the source"
    assert min(before, key=order_key).kind == "mask_spill"  # by the plain order the restore would come first

    # 1. the light drift is corrected first, matched to the source outside the edit mask
    first = triage(before, {}, FAIL_ON, False, Budget(), Spend(), report.verdict)
    assert first.target.kind == "exposure_drift"
    plan = plan_repair(first.target, before, [], context("local")).plan
    assert plan.tool == "local.exposure_color" and plan.mask_source == MaskSource.edit_mask

    # the exposure pass worked: the same spilled edit on the undarkened photo
    lit = defects.make("edit_spills_outside_mask", source, 0.15).candidate
    report1, after1 = inspect(lit, source, case.mask, files, before, prefix="spill-pass1")
    assert "exposure_drift" not in {r.kind for r in after1}
    assert kinds["mask_spill"].key in {r.key for r in after1}  # the spill keeps its key
    verdict = judge(plan, before, after1, FAIL_ON, SETTINGS.min_improvement, SETTINGS.worse_factor,
                    report1.verdict, None)
    assert verdict.accepted, verdict.reason
    assert "exposure_drift gone" in verdict.reason

    # 2. then the restore: composite the source back outside the edit mask
    second = triage(after1, {}, FAIL_ON, False, Budget(), Spend(passes=1), report1.verdict)
    assert second.target.kind == "mask_spill"
    restore = plan_repair(second.target, after1, [], context("local")).plan
    assert restore.tool == "local.composite_back" and restore.mask_source == MaskSource.edit_mask
    restored = np.where(case.mask[..., None], lit, source)
    report2, after2 = inspect(restored, source, case.mask, files, after1, prefix="spill-pass2")
    verdict = judge(restore, after1, after2, FAIL_ON, SETTINGS.min_improvement, SETTINGS.worse_factor,
                    report2.verdict, None)
    assert verdict.accepted and "mask_spill gone" in verdict.reason

    # 3. nothing left
    done = triage(after2, {}, FAIL_ON, False, Budget(), Spend(passes=2), report2.verdict)
    assert done.target is None and done.stop == StopReason.clean


def test_real_records_keep_their_masks_in_the_run_folder(spill_exposure, files):
    _, case, _, records = spill_exposure
    spill = next(r for r in records if r.kind == "mask_spill")
    exposure = next(r for r in records if r.kind == "exposure_drift")
    assert spill.mask_file and spill.mask_file.startswith("spill-finding-")
    assert (files.root / spill.mask_file).is_file()
    mask = files.mask(spill.mask_file)
    assert mask.shape == case.candidate.shape[:2] and mask.any()
    assert not mask[case.mask].all()  # the spill is where the edit was not allowed, not the mask itself
    assert spill.key == f"mask_spill@{','.join(map(str, spill.box))}"
    assert exposure.mask_file is None and exposure.box is None


# ---- triage rules --------------------------------------------------------------------------------


def test_order_structure_then_light_then_detail_p0_before_p1_then_severity():
    records = [
        record("texture_blur", "P1", 5.0, box=[0, 0, 10, 10]),
        record("hand_malformed", "P0", 1.2, box=[20, 20, 40, 40]),
        record("exposure_drift", "P1", -0.4, 0.25),
        record("color_temperature_drift", "P1", 40.0, 15.0),
        record("subject_cropped", "P0", 0.2, 0.1),
        record("mirrored", "P0", 0.9, 0.2),
    ]
    order = [r.kind for r in sorted(records, key=order_key)]
    assert order == ["mirrored", "subject_cropped", "color_temperature_drift", "exposure_drift",
                     "hand_malformed", "texture_blur"]
    assert triage(records, {}, FAIL_ON, False, Budget(), Spend()).target.kind == "mirrored"

    # a light P1 comes before a detail P0: stage first, then priority
    light_vs_detail = [record("hand_malformed", "P0", 9.0, box=[0, 0, 5, 5]), record("exposure_drift", "P1", 0.3, 0.25)]
    assert triage(light_vs_detail, {}, FAIL_ON, False, Budget(), Spend()).target.kind == "exposure_drift"

    # within a stage P0 before P1, whatever the severity
    detail = [record("texture_blur", "P1", 50.0, box=[0, 0, 5, 5]), record("identity_drift", "P0", 1.1, box=[50, 50, 90, 90])]
    assert triage(detail, {}, FAIL_ON, False, Budget(), Spend()).target.kind == "identity_drift"


def test_open_defects_are_skipped_and_the_next_one_is_picked():
    a = record("mirrored", "P0", 0.9, 0.2)
    b = record("exposure_drift", "P1", 0.5, 0.25)
    assert triage([a, b], {a.key: opened(a)}, FAIL_ON, False, Budget(), Spend()).target.key == b.key


def test_p2_only_with_polish_and_after_every_p0_p1():
    p1 = record("exposure_drift", "P1", 0.5, 0.25)
    p2 = record("edge_halo", "P2", 5.0, box=[0, 0, 10, 10])

    assert triage([p2, p1], {}, FAIL_ON, True, Budget(), Spend()).target.key == p1.key
    assert triage([p2], {}, FAIL_ON, True, Budget(), Spend()).target.key == p2.key

    no_polish = triage([p2], {}, FAIL_ON, False, Budget(), Spend())
    assert no_polish.target is None and no_polish.stop == StopReason.clean

    # a P2 the polish pass could not repair does not keep the run going, nor make it "stuck"
    done = triage([p2], {p2.key: opened(p2)}, FAIL_ON, True, Budget(), Spend())
    assert done.target is None and done.stop == StopReason.clean


def test_clean_error_and_budget_stops():
    clean = triage([], {}, FAIL_ON, False, Budget(), Spend())
    assert clean.stop == StopReason.clean and clean.stop_reason.startswith("clean: ")
    error = triage([record("mirrored", "P0")], {}, FAIL_ON, False, Budget(), Spend(), verdict="error")
    assert error.target is None and error.stop == StopReason.error and error.stop_reason.startswith("error: ")

    pending = [record("exposure_drift", "P1", 0.5, 0.25)]
    spent = [
        (Budget(max_passes=3), Spend(passes=3), StopReason.budget_passes, "3 of 3 passes"),
        (Budget(max_usd=1.0), Spend(usd=1.25), StopReason.budget_usd, "$1.2500 of $1.00"),
        (Budget(max_seconds=60), Spend(seconds=61.0), StopReason.budget_seconds, "61.0 s of 60 s"),
    ]
    for budget, spend, why, words in spent:
        result = triage(pending, {}, FAIL_ON, False, budget, spend)
        assert result.target is None
        assert result.stop == why and result.stop_reason.startswith("budget: ") and words in result.stop_reason
        assert budget_stop(budget, spend) == (result.stop, result.stop_reason)
    # a clean image is reported clean even when the budget is spent
    assert triage([], {}, FAIL_ON, False, Budget(max_passes=1), Spend(passes=5)).stop == StopReason.clean
    assert budget_stop(Budget(), Spend(passes=7, usd=1.99, seconds=899.0)) is None
    # a $0 budget stops on dollars only once money was spent: a local (free) run goes on
    assert budget_stop(Budget(max_usd=0.0), Spend(passes=1, seconds=5.0)) is None
    assert triage(pending, {}, FAIL_ON, False, Budget(max_usd=0.0), Spend()).target.key == pending[0].key
    assert budget_stop(Budget(max_usd=0.0), Spend(usd=0.01)) == (StopReason.budget_usd,
                                                                 "budget: $0.0100 of $0.00 spent")


def test_light_before_restore_only_for_drift_measured_against_the_source():
    spill = record("mask_spill", "P0", 0.5, 0.01, box=[0, 0, 100, 100])
    against_source = record("exposure_drift", "P1", -0.5, 0.25, evidence={"baseline": "the source"})
    against_history = record("exposure_drift", "P1", -0.5, 0.25, evidence={"baseline": "the first pass"})
    colour = record("color_temperature_drift", "P1", 30.0, 15.0)

    assert triage([spill, against_source], {}, FAIL_ON, False, Budget(), Spend()).target.key == against_source.key
    assert triage([spill, colour], {}, FAIL_ON, False, Budget(), Spend()).target.key == colour.key
    assert triage([spill, against_history], {}, FAIL_ON, False, Budget(), Spend()).target.key == spill.key
    # a drift already left open does not hold the restore back
    left_open = {colour.key: opened(colour)}
    assert triage([spill, colour], left_open, FAIL_ON, False, Budget(), Spend()).target.key == spill.key
    # another structure defect ahead of the spill is not overtaken
    mirrored = record("mirrored", "P0", 200.0, 1.0)  # severity 200 > the spill's 50
    assert triage([spill, colour, mirrored], {}, FAIL_ON, False, Budget(), Spend()).target.key == mirrored.key
    # the light goes first only when the spill is the one structure defect pending: with a mirror pending
    # too (even one behind the spill) the plain order holds, structure before light
    behind = record("mirrored", "P0", 0.9, 0.2)  # severity 4.5 < the spill's 50
    assert triage([spill, colour, behind], {}, FAIL_ON, False, Budget(), Spend()).target.key == spill.key
    # a mirror already left open does not count as pending
    assert triage([spill, colour, behind], {behind.key: opened(behind)}, FAIL_ON, False, Budget(),
                  Spend()).target.key == colour.key


# ---- planner: ladders ------------------------------------------------------------------------------


def test_ladders_by_backend():
    local, openai, diffusers = context("local"), context("openai"), context("diffusers")
    # a detail defect has no local repair, and a generative ladder on the other backends
    assert usable_ladder("hand_malformed", local) == []
    assert [r.tool for r in usable_ladder("hand_malformed", openai)] == [GENERATIVE] * 3
    assert [r.grow for r in usable_ladder("hand_malformed", openai)] == [0, 1, 2]  # wider mask, one step a rung
    assert [r.strength for r in usable_ladder("hand_malformed", diffusers)] == ["low", "mid", "mid"]
    # local rungs come first where one fits
    assert [r.tool for r in usable_ladder("mirrored", local)] == ["local.flip_back"]
    assert [r.tool for r in usable_ladder("mirrored", openai)] == ["local.flip_back", GENERATIVE]
    assert [r.tool for r in usable_ladder("edge_halo", diffusers)] == ["local.defringe", "local.defringe", GENERATIVE]
    for backend in (local, openai, diffusers):
        assert {r.tool for r in usable_ladder("mask_spill", backend)} == {"local.composite_back"}
        assert {r.tool for r in usable_ladder("exposure_drift", backend)} == {"local.exposure_color"}
    # the control-map rung only with a ControlNet configured
    assert not any(r.control for r in usable_ladder("perspective_broken", diffusers))
    with_control = context("diffusers", settings=SETTINGS.model_copy(update={"backends": {"diffusers": {"controlnet": "cn/depth"}}}))
    assert any(r.control for r in usable_ladder("perspective_broken", with_control))


def _from_ladder(rung, kind: str, backend: str) -> bool:
    """``rung`` is one of ``ladder(kind, backend)``'s rungs (usable_ladder may turn its control on)."""
    fields = ("tool", "does", "change", "mask", "grow", "parameters", "needs", "prepare", "strength")
    return any(all(getattr(rung, f) == getattr(r, f) for f in fields) and (rung.control or not r.control)
               for r in ladder(kind, backend))


@pytest.mark.parametrize("cap", [1, 2, 5])
def test_ladders_are_capped_by_max_attempts_per_defect(cap):
    settings = SETTINGS.model_copy(update={"max_attempts_per_defect": cap, "backends": {"diffusers": {"controlnet": "cn"}}})
    uncapped = settings.model_copy(update={"max_attempts_per_defect": 10})
    bites = 0
    for backend in ("local", "openai", "diffusers"):
        for kind in DEFECT_KINDS:
            usable = usable_ladder(kind, context(backend, settings=settings))
            full = usable_ladder(kind, context(backend, settings=uncapped))
            assert usable == full[:cap]  # the first rungs, in ladder order
            assert all(_from_ladder(rung, kind, backend) for rung in full)
            # once a rung adds the control map, every rung after it keeps it
            first = next((i for i, r in enumerate(full) if r.control), len(full))
            assert all(r.control for r in full[first:])
            bites += len(full) > cap
    assert bites  # the cap shortened some ladder


def test_rung_is_the_number_of_attempts_and_the_ladder_ends_open():
    target = record("hand_malformed", "P0", 3.0, box=[100, 100, 300, 300], evidence=HAND_EVIDENCE)
    ctx = context("openai", max_usd=100.0)
    plans, last = climb(target, ctx, reason="no progress: hand_malformed 3 -> 2.9")
    assert [p.rung for p in plans] == [0, 1, 2] == list(range(SETTINGS.max_attempts_per_defect))
    diagonal = (SIZE[0] ** 2 + SIZE[1] ** 2) ** 0.5
    assert [p.mask_grow_px for p in plans] == [0, round(SETTINGS.wider_mask * diagonal),
                                               round(2 * SETTINGS.wider_mask * diagonal)]
    assert all(p.mask_source == MaskSource.finding and p.paid and p.tool == "openai" for p in plans)
    assert last.plan is None
    assert last.open.key == target.key and last.open.cause == OpenCause.resisted_ladder and last.open.box == target.box
    assert "resisted all 3 rung(s)" in last.open.reason and "hand_malformed 3 -> 2.9" in last.open.reason
    assert "hands template" in last.open.would_fix

    # attempts on other defects do not count
    other = record("texture_blur", box=[500, 500, 600, 600])
    history = [attempt(1, RepairPlan(target=other, template="texture-edge", tool="openai"))]
    assert plan_repair(target, [target, other], history, ctx).plan.rung == 0


def test_no_backend_can_repair_leaves_it_open_with_the_plan_that_would():
    hand = record("hand_malformed", "P0", 3.0, box=[100, 100, 300, 300], evidence=HAND_EVIDENCE)
    decision = plan_repair(hand, [hand], [], context("local"))
    assert decision.plan is None
    assert decision.open.cause == OpenCause.no_backend and decision.open.reason == "no local repair for hand_malformed"
    assert decision.open.would_fix == would_fix("hand_malformed", "hands")
    start = load_template("hands").diffusion
    for words in ("hands template", "--backend openai", "--backend diffusers", f"{start.denoise[0]:.2f}",
                  f"{start.denoise[1]:.2f}", "openpose", "finding's mask"):
        assert words in decision.open.would_fix

    spill = record("mask_spill", "P0", 0.4, 0.01, box=[0, 0, 50, 50])
    no_mask = plan_repair(spill, [spill], [], context("openai", has_mask=False)).open
    assert no_mask.reason == "no openai repair for mask_spill"
    no_source = plan_repair(spill, [spill], [], context("local", has_source=False)).open
    assert no_source.reason == "no local repair for mask_spill without the source image"

    cropped = record("subject_cropped", "P0", 0.3, 0.1)
    assert "finding's mask" not in plan_repair(cropped, [cropped], [], context("local")).open.would_fix


def test_a_template_the_finding_cannot_fill_is_left_open_not_sent():
    hand = record("hand_malformed", "P0", 3.0, box=[100, 100, 300, 300])  # no handedness, no hand box
    decision = plan_repair(hand, [hand], [], context("openai", max_usd=100.0))
    assert decision.plan is None
    assert decision.open.cause == OpenCause.template_unfillable
    assert "cannot be filled" in decision.open.reason and "'hand'" in decision.open.reason


def test_exposure_and_colour_in_one_local_pass():
    exposure = record("exposure_drift", "P1", -0.6, 0.25, evidence={"baseline": "the source", "ev_change": -0.6})
    colour = record("color_temperature_drift", "P1", 30.0, 15.0)
    halo = record("edge_halo", "P1", 0.1, 0.03, box=[0, 0, 50, 50])
    for backend in ("local", "openai", "diffusers"):
        plan = plan_repair(exposure, [exposure, colour, halo], [], context(backend)).plan
        assert plan.tool == "local.exposure_color" and not plan.paid and plan.prompt is None
        assert plan.also_fixes == [colour.key]
        assert plan.mask_source == MaskSource.edit_mask  # matched to the source outside the edit mask
    whole = plan_repair(colour, [exposure, colour], [], context("local", has_mask=False)).plan
    assert whole.mask_source == MaskSource.none and whole.also_fixes == [exposure.key]

    # no source: exposure set back by the measured EV against the first pass, white balance untouched
    history_drift = record("exposure_drift", "P1", -0.6, 0.25, evidence={"baseline": "the first pass", "ev_change": -0.6})
    plan = plan_repair(history_drift, [history_drift], [], context("local", has_source=False)).plan
    assert plan.parameters == {"white_balance": False, "ev": pytest.approx(0.6)}


def test_real_exposure_and_white_balance_plan_covers_both(files):
    source = photo(SMALL_PHOTO)
    candidate = defects.make("white_balance", defects.make("exposure", source, -0.6).candidate, 40).candidate
    _, records = inspect(candidate, source, None, files, prefix="wb")
    assert {r.kind for r in records} >= {"exposure_drift", "color_temperature_drift"}
    target = triage(records, {}, FAIL_ON, False, Budget(), Spend()).target
    assert target.stage == "light"
    plan = plan_repair(target, records, [], context("local", has_mask=False)).plan
    light = {r.key for r in records if r.kind in ("exposure_drift", "color_temperature_drift")}
    assert plan.tool == "local.exposure_color"
    assert {target.key, *plan.also_fixes} == light


# ---- planner: salvage ------------------------------------------------------------------------------


def test_spilled_generative_attempt_is_salvaged_once_then_the_ladder_goes_on():
    target = record("texture_blur", "P1", 0.3, 0.55, box=[100, 100, 300, 300])
    ctx = context("openai", max_usd=100.0)
    first = plan_repair(target, [target], [], ctx).plan
    spilled = attempt(1, first, reason="spilled: the repair changed pixels outside its mask (12% outside)",
                      cause=AttemptCause.spilled)

    salvage = plan_repair(target, [target], [spilled], ctx).plan
    assert salvage.salvage and salvage.tool == "local.composite_back" and not salvage.paid
    assert salvage.mask_source == MaskSource.previous_attempt
    assert salvage.base_image == spilled.image and salvage.rung == first.rung == 0
    assert salvage.parameters["attempt"] == 1

    # the salvage failed too: no second salvage, and the next rung is rung 1 (salvage is not a rung)
    salvage_failed = attempt(2, salvage, reason="no progress: texture_blur 0.3 -> 0.31")
    second = plan_repair(target, [target], [spilled, salvage_failed], ctx).plan
    assert not second.salvage and second.rung == 1 and second.tool == "openai"

    # a rejection for another cause, or a spill with no output file, is not salvaged; nor is one whose
    # sentence merely reads like a spill (the cause decides, never the text)
    for rejected in (attempt(1, first, reason="no progress: texture_blur unchanged"),
                     attempt(1, first, reason="spilled: x", image=None, cause=AttemptCause.spilled),
                     attempt(1, first, outcome=Outcome.failed, reason="tool error: spilled",
                             cause=AttemptCause.tool_error),
                     attempt(1, first, reason="spilled: but unverified", cause=AttemptCause.unverified)):
        plan = plan_repair(target, [target], [rejected], ctx).plan
        assert not plan.salvage and plan.rung == 1


def test_verify_reason_feeds_the_salvage():
    """The reason judge gives a spilled attempt is the one the planner salvages on."""
    target = record("identity_drift", "P0", 0.6, 0.42, box=[100, 100, 300, 300])
    ctx = context("openai", max_usd=100.0)
    plan = plan_repair(target, [target], [], ctx).plan
    verdict = judge(plan, [target], [], FAIL_ON, 0.5, 1.5, "pass",
                    spill=Spill(SpillStatus.spilled, "9% of the area outside changed"))
    assert not verdict.accepted and verdict.cause == AttemptCause.spilled
    rejected = attempt(1, plan, reason=verdict.reason, cause=verdict.cause)
    assert plan_repair(target, [target], [rejected], ctx).plan.salvage


# ---- planner: generative parameters and cost ---------------------------------------------------------


@pytest.mark.parametrize("kind,evidence", [("hand_malformed", HAND_EVIDENCE), ("identity_drift", {}),
                                          ("texture_blur", {}), ("perspective_broken", {})])
def test_diffusers_parameters_inside_the_template_range_with_the_seed_locked(kind, evidence):
    settings = SETTINGS.model_copy(update={"backends": {"diffusers": {"controlnet": "some/controlnet"}}})
    target = record(kind, "P0", 3.0, box=None if kind == "perspective_broken" else [100, 100, 300, 300],
                    evidence=evidence)
    start = load_template(target.template).diffusion
    low, high = start.denoise
    plans, _ = climb(target, context("diffusers", settings=settings, seed=77))
    assert plans
    for plan in plans:
        p = plan.parameters
        assert plan.tool == "diffusers" and not plan.paid and plan.estimated_usd == 0
        assert low <= p["strength"] <= high
        assert p["seed"] == 77
        assert start.guidance[0] <= p["guidance"] <= start.guidance[1]
        assert start.steps[0] <= p["steps"] <= start.steps[1]
        assert plan.prompt and plan.negative_prompt
        if "control" in p:
            assert p["controlnet"] == "some/controlnet"
            option = next(o for o in start.controls if o.type == p["control"])
            assert option.scale[0] <= p["control_scale"] <= option.scale[1]
    assert plans[0].parameters["strength"] == pytest.approx(low)  # the first rung starts at the low end
    assert max(p.parameters["strength"] for p in plans) == pytest.approx((low + high) / 2, abs=0.006)


def test_identity_reference_defaults_to_the_source():
    face = record("identity_drift", "P0", 0.6, 0.42, box=[100, 100, 300, 300])
    plan = plan_repair(face, [face], [], context("diffusers", source="/in/source.png")).plan
    assert plan.references == ["/in/source.png"]
    plan = plan_repair(face, [face], [], context("diffusers", source="/in/source.png", references=["/in/ref.png"])).plan
    assert plan.references == ["/in/ref.png"]


def test_paid_call_estimate_and_budget_stop():
    target = record("texture_blur", "P1", 0.3, 0.55, box=[100, 100, 300, 300])
    ctx = context("openai", max_usd=5.0)
    estimate = estimate_usd(ctx, "high")
    assert estimate > 0
    plan = plan_repair(target, [target], [], ctx).plan
    assert plan.paid and plan.tool == "openai" and plan.prompt
    assert plan.parameters["quality"] == ctx.setting("quality") == "high"
    assert plan.estimated_usd == pytest.approx(round(estimate_usd(ctx, "high"), 4))

    # bigger images cost more; after a paid call the dearest call so far is the estimate
    big = PlanContext(backend="openai", settings=SETTINGS, image_size=(3000, 2400), has_source=True, has_mask=True)
    assert estimate_usd(big, "high") > estimate
    assert estimate_usd(context("openai", paid_costs=[0.05, 0.21, 0.1]), "high") == 0.21
    assert estimate_usd(ctx, "low") < estimate

    # a call whose estimate would pass the budget is not made: its defect stays open, with a budget reason
    tight = context("openai", max_usd=1.0, spent_usd=1.0 - estimate / 2)
    decision = plan_repair(target, [target], [], tight)
    assert decision.plan is None
    assert decision.open.cause == OpenCause.budget_usd and "$1.00" in decision.open.reason
    assert "--budget-usd" in decision.open.would_fix
    fits = context("openai", max_usd=1.0, spent_usd=1.0 - estimate * 2)
    assert plan_repair(target, [target], [], fits).plan is not None
    # free rungs never stop on money
    assert plan_repair(record("mirrored", "P0"), [], [], context("openai", max_usd=0.01, spent_usd=0.01)).plan


def _knobs(plan: RepairPlan) -> dict:
    params = dict(plan.parameters)
    control = tuple(params.pop(k, None) for k in ("control", "control_scale", "controlnet"))
    return {"mask": (plan.mask_source, plan.mask_grow_px), "prepare": plan.prepare, "control": control, **params}


def _changed(a: RepairPlan, b: RepairPlan) -> list[str]:
    """What changed from plan ``a`` to plan ``b``: the tool alone counts once, else every knob."""
    if a.tool != b.tool:
        return ["tool"]
    ka, kb = _knobs(a), _knobs(b)
    return [k for k in ka.keys() | kb.keys() if ka.get(k) != kb.get(k)]


LADDER_CASES = [(kind, backend, controlnet, cap)
                for kind in ("hand_malformed", "identity_drift", "texture_blur", "edge_halo", "mirrored",
                             "perspective_broken", "subject_cropped", "mask_spill", "exposure_drift")
                for backend in ("local", "openai", "diffusers")
                for controlnet in ("", "cn")
                for cap in (3, 5)
                if backend == "diffusers" or controlnet == ""]
def _ladder_plans(kind, backend, controlnet, cap):
    settings = SETTINGS.model_copy(update={"backends": {"diffusers": {"controlnet": controlnet}}, "max_attempts_per_defect": cap})
    evidence = HAND_EVIDENCE if kind == "hand_malformed" else {}
    box = None if kind in ("mirrored", "perspective_broken", "subject_cropped", "exposure_drift") else [100, 100, 300, 300]
    target = record(kind, "P0", 3.0, box=box, evidence=evidence)
    plans, last = climb(target, context(backend, settings=settings, max_usd=100.0))
    assert last.open is not None and len(plans) <= cap
    return plans


@pytest.mark.parametrize("kind,backend,controlnet,cap", LADDER_CASES)
def test_each_rung_changes_one_variable(kind, backend, controlnet, cap):
    plans = _ladder_plans(kind, backend, controlnet, cap)
    for before, after in zip(plans, plans[1:]):
        assert len(_changed(before, after)) == 1, (after.rung, after.change, _changed(before, after))


def test_later_rungs_do_not_call_themselves_the_first_repair():
    cases = [(record("exposure_drift", "P1", -0.6, 0.25), context("local")),
             (record("mirrored", "P0", 0.9, 0.2), context("openai", max_usd=100.0)),
             (record("edge_halo", "P1", 0.1, 0.03, box=[0, 0, 50, 50]), context("openai", max_usd=100.0))]
    for target, ctx in cases:
        plans, _ = climb(target, ctx)
        assert len(plans) >= 2
        assert plans[0].change.startswith("first repair: "), plans[0].change
        assert not any(p.change.startswith("first repair") for p in plans[1:]), [p.change for p in plans]
        assert all(p.change for p in plans[1:])  # each later rung names what it changed


def test_a_zero_dollar_budget_makes_no_paid_call():
    target = record("texture_blur", "P1", 0.3, 0.55, box=[100, 100, 300, 300])
    decision = plan_repair(target, [target], [], context("openai", max_usd=0.0))
    assert decision.plan is None and decision.open.cause == OpenCause.budget_usd
    assert "$0.00 budget" in decision.open.reason
    # free rungs still run on a $0 budget
    assert plan_repair(record("mirrored", "P0"), [], [], context("openai", max_usd=0.0)).plan.tool == "local.flip_back"


# ---- verify: judge -----------------------------------------------------------------------------------


def _judge(plan, before, after, verdict="fail", spill=None):
    return judge(plan, before, after, FAIL_ON, SETTINGS.min_improvement, SETTINGS.worse_factor, verdict, spill)


def test_judge_accepts_gone_or_clearly_improved_targets():
    plan = plan_for("exposure_drift", score=-0.75, threshold=0.25)  # severity 3: excess 2
    before = [plan.target]
    gone = _judge(plan, before, [], "pass")
    assert gone.accepted and gone.cause == AttemptCause.accepted and gone.reason == "exposure_drift gone"

    half_way = plan.target.model_copy(update={"score": -0.5})  # severity 2: removed 1 = 50 % of the excess
    assert _judge(plan, before, [half_way]).accepted
    short = plan.target.model_copy(update={"score": -0.55})  # removed 0.8 of 2 = 40 %
    verdict = _judge(plan, before, [short])
    assert not verdict.accepted and verdict.cause == AttemptCause.no_progress
    assert verdict.reason.startswith("no progress: exposure_drift -0.75 -> -0.55")


def test_judge_rejects_errors_spills_new_defects_and_collateral_damage():
    plan = plan_for("exposure_drift", score=-0.75, threshold=0.25)
    halo = record("edge_halo", "P1", 0.06, 0.03, box=[0, 0, 50, 50])
    before = [plan.target, halo]

    error = _judge(plan, before, [], "error")
    assert not error.accepted and error.cause == AttemptCause.check_error
    spilled = _judge(plan, before, [halo],
                     spill=Spill(SpillStatus.spilled, "17.6% of the area outside the edit mask changed"))
    assert not spilled.accepted and spilled.cause == AttemptCause.spilled and "17.6%" in spilled.reason

    appeared = _judge(plan, before, [halo, record("mirrored", "P0", 0.9, 0.2)])
    assert not appeared.accepted and appeared.cause == AttemptCause.new_defect
    assert appeared.reason.startswith("new defect: mirrored (P0")
    polish = _judge(plan, before, [halo, record("texture_blur", "P2", 0.5, 0.55, box=[9, 9, 20, 20])])
    assert polish.accepted  # a new P2 does not fail the gate

    worse = _judge(plan, before, [halo.model_copy(update={"score": 0.1})])  # 1.67 x the severity
    assert not worse.accepted and worse.cause == AttemptCause.made_worse
    assert worse.reason.startswith("made worse: edge_halo 0.06 -> 0.1")
    slightly = _judge(plan, before, [halo.model_copy(update={"score": 0.08})])  # 1.33 x
    assert slightly.accepted


def test_judge_counts_the_second_light_drift_of_one_pass():
    colour = record("color_temperature_drift", "P1", 30.0, 15.0)
    plan = plan_for("exposure_drift", score=-0.3, threshold=0.25, also_fixes=[colour.key])
    exposure = plan.target
    # the exposure barely moved, the white balance is fixed: the pass made progress
    verdict = _judge(plan, [exposure, colour], [exposure.model_copy(update={"score": -0.29})])
    assert verdict.accepted and "color_temperature_drift gone" in verdict.reason


def test_judge_rejects_a_pass_that_makes_its_own_target_much_worse():
    colour = record("color_temperature_drift", "P1", 30.0, 15.0)
    plan = plan_for("exposure_drift", score=-0.6, threshold=0.25, also_fixes=[colour.key])
    worse_exposure = plan.target.model_copy(update={"score": -1.5})
    verdict = _judge(plan, [plan.target, colour], [worse_exposure])
    assert not verdict.accepted and verdict.cause == AttemptCause.made_worse
    assert verdict.reason.startswith("made worse: exposure_drift -0.6 -> -1.5")
    assert "color_temperature_drift gone" in verdict.reason  # the progress it made is still named


def test_a_defect_is_new_only_if_the_repair_caused_it():
    """Each rule of verify decides about a finding the image before the attempt did not have, and says so."""
    from fixloop.agent.state import SideEffectRule

    plan = plan_for("exposure_drift", score=-0.75, threshold=0.25)
    blur = record("texture_blur", "P1", 0.3, 0.55, box=[40, 40, 80, 80])
    changed = np.zeros((200, 200), dtype=bool)
    changed[:, 100:] = True  # the attempt changed the right half only

    def rule(after, **kwargs):
        verdict = judge(plan, [plan.target], after, FAIL_ON, SETTINGS.min_improvement, SETTINGS.worse_factor,
                        "fail", None, **kwargs)
        return verdict, {e.kind: e.rule for e in verdict.side_effects}

    caused, rules = rule([blur])  # no changed map: every pixel counts as changed
    assert not caused.accepted and caused.cause == AttemptCause.new_defect and rules["texture_blur"] == SideEffectRule.caused
    untouched, rules = rule([blur], changed=changed)  # its box lies in the half the attempt left alone
    assert untouched.accepted and rules["texture_blur"] == SideEffectRule.untouched
    assert any("[untouched]" in note for note in untouched.notes)
    moved_right = blur.model_copy(update={"box": [140, 40, 180, 80], "key": "texture_blur@140"})
    assert not rule([moved_right], changed=changed)[0].accepted  # where it changed pixels: caused
    in_input, rules = rule([moved_right], changed=changed,
                           input_findings=[moved_right.model_copy(update={"box": [145, 45, 185, 85]})])
    assert in_input.accepted and rules["texture_blur"] == SideEffectRule.in_input
    inherited, rules = rule([moved_right.model_copy(update={"inherited": True})], changed=changed)
    assert inherited.accepted and rules["texture_blur"] == SideEffectRule.inherited
    traded, rules = rule([moved_right.model_copy(update={"priority": "P2"})], changed=changed)
    assert traded.accepted and rules["texture_blur"] == SideEffectRule.traded
    assert any("price of the fix" in note for note in traded.notes)


def test_detail_lost_where_the_input_was_clipped_is_not_a_new_blur():
    from fixloop.agent.state import SideEffectRule
    from fixloop.agent.verify import clipped_pixels

    plan = plan_for("exposure_drift", score=0.9, threshold=0.25)
    blur = record("texture_blur", "P1", 0.3, 0.55, box=[40, 40, 80, 80])
    brightened = np.full((200, 200, 3), 120, dtype=np.uint8)
    brightened[30:90, 30:90] = 255  # a blown-out patch under the finding's box
    verdict = judge(plan, [plan.target], [blur], FAIL_ON, SETTINGS.min_improvement, SETTINGS.worse_factor,
                    "fail", None, input_clipped=clipped_pixels(brightened))
    assert verdict.accepted and verdict.side_effects[0].rule == SideEffectRule.clipped_in_input
    elsewhere = blur.model_copy(update={"box": [120, 120, 180, 180]})
    assert not judge(plan, [plan.target], [elsewhere], FAIL_ON, SETTINGS.min_improvement, SETTINGS.worse_factor,
                     "fail", None, input_clipped=clipped_pixels(brightened)).accepted


def test_pixels_put_back_to_the_source_are_not_changes():
    from fixloop.agent.verify import changed_pixels

    source = np.zeros((20, 20, 3), dtype=np.uint8)
    before = source.copy()
    before[:, :10] = 90  # an edit that spilled into the left half
    after = source.copy()  # composite-back: the left half is the source's again
    after[15:, 15:] = 200  # and something new at the bottom right
    changed = changed_pixels(before, after, source)
    assert not changed[:, :10].any() and changed[15:, 15:].all()
    assert changed_pixels(before, after)[:, :10].all()  # without the source: every moved pixel counts
    assert changed_pixels(before, np.zeros((21, 20, 3), np.uint8)) is None


def test_a_soft_region_the_attempt_did_not_soften_is_not_a_new_blur():
    """After composite-back a soft edit inside the mask reads as soft beside the restored original;
    the region holds as much detail as before the attempt, so the repair did not cause it. A region
    the attempt did blur is still caused."""
    import cv2

    from fixloop.agent.state import SideEffectRule

    rng = np.random.default_rng(15)
    before = rng.integers(0, 255, (120, 120, 3), dtype=np.uint8)
    after = before.copy()
    after[:, 60:] = rng.integers(0, 255, (120, 60, 3), dtype=np.uint8)  # restored outside, another texture
    blur = record("texture_blur", "P1", 0.3, 0.55, box=[0, 0, 60, 120])
    plan = plan_for("mask_spill", score=0.2, threshold=0.05)

    def rule(after_image):
        verdict = judge(plan, [plan.target], [blur], FAIL_ON, SETTINGS.min_improvement, SETTINGS.worse_factor,
                        "fail", None, images=(before, after_image))
        return verdict.accepted, verdict.side_effects[0].rule

    assert rule(after) == (True, SideEffectRule.detail_kept)
    softened = after.copy()
    softened[:, :60] = cv2.GaussianBlur(softened[:, :60], (0, 0), 2)
    assert rule(softened) == (False, SideEffectRule.caused)


def test_a_p2_made_worse_is_traded_a_p1_is_not():
    from fixloop.agent.state import SideEffectRule

    plan = plan_for("exposure_drift", score=-0.75, threshold=0.25)
    halo = record("edge_halo", "P2", 0.06, 0.03, box=[0, 0, 50, 50])
    worse = halo.model_copy(update={"score": 0.2})
    traded = _judge(plan, [plan.target, halo], [worse])
    assert traded.accepted and [(e.rule, e.worse) for e in traded.side_effects] == [(SideEffectRule.traded, True)]
    p1 = halo.model_copy(update={"priority": "P1"})
    rolled_back = _judge(plan, [plan.target, p1], [p1.model_copy(update={"score": 0.2})])
    assert not rolled_back.accepted and rolled_back.cause == AttemptCause.made_worse
    inherited = p1.model_copy(update={"inherited": True})
    assert _judge(plan, [plan.target, inherited], [inherited.model_copy(update={"score": 0.2})]).accepted


def test_inherited_findings_are_neither_targets_nor_hold_anything_back():
    crop = record("subject_cropped", "P0", 0.5, 0.3, box=[0, 150, 60, 200]).model_copy(update={"inherited": True})
    halo = record("edge_halo", "P1", 0.06, 0.03, box=[10, 10, 50, 50])
    findings = restrict([crop, halo], None)
    assert findings == [halo]
    assert triage(findings, {}, FAIL_ON, False, Budget(), Spend()).target.kind == "edge_halo"
    assert restrict([crop, halo], None, inherited=True) == [crop, halo]  # policy gate.count_inherited


# ---- severity on texture_blur (a lower score is worse) ---------------------------------------------


def test_real_blur_records_lower_score_is_blurrier(blurs):
    scores = [blurs[s].score for s in (1.0, 1.5, 5.0)]
    assert scores == sorted(scores, reverse=True)
    assert all(r.score < r.threshold for r in blurs.values())  # found because the detail ratio fell below it
    assert len({r.key for r in blurs.values()}) == 1


def test_severity_grows_with_the_blur(blurs):
    assert severity(blurs[5.0]) > severity(blurs[1.5]) > severity(blurs[1.0]) >= 1.0


def test_judge_accepts_a_real_texture_blur_improvement(blurs, files):
    before = [blurs[5.0]]
    after = record_findings([to_finding(blurs[1.0])], before, files, "blur-after")
    assert after[0].key == before[0].key
    plan = RepairPlan(target=before[0], template="texture-edge", tool="diffusers")
    verdict = _judge(plan, before, after)
    assert verdict.accepted and verdict.reason.startswith("texture_blur improved"), verdict.reason


def test_judge_rejects_a_repair_that_blurred_the_image(blurs, files):
    exposure = record("exposure_drift", "P1", -0.6, 0.25)
    before = [exposure, blurs[1.0]]
    after = record_findings([to_finding(blurs[5.0])], before, files, "blur-worse")
    assert after[0].key == blurs[1.0].key
    plan = RepairPlan(target=exposure, template="exposure-color", tool="local.exposure_color")
    verdict = _judge(plan, before, after)
    assert not verdict.accepted and verdict.cause == AttemptCause.made_worse, verdict.reason
    assert verdict.reason.startswith("made worse: texture_blur"), verdict.reason


# ---- verify: outside_change ----------------------------------------------------------------------------


def test_outside_change_on_a_real_photo():
    before = photo(SMALL_PHOTO)
    mask = defects.centre_box_mask(before.shape, 0.4)
    inside = before.copy()
    inside[mask] = np.clip(inside[mask].astype(np.int16) + 60, 0, 255).astype(np.uint8)
    assert outside_change(before, inside, mask, POLICY) == Spill(SpillStatus.held)
    # re-encoding is not a spill
    assert outside_change(before, defects.jpeg(inside, 90), mask, POLICY).status == SpillStatus.held

    leaked = inside.copy()
    band = np.zeros_like(mask)
    band[:, : before.shape[1] // 5] = True  # a band left of the mask
    leaked[band] = np.clip(leaked[band].astype(np.int16) + 40, 0, 255).astype(np.uint8)
    spill = outside_change(before, leaked, mask, POLICY)
    assert spill.status == SpillStatus.spilled
    assert "outside the edit mask" in spill.message and "left of the mask" in spill.message

    everywhere = np.clip(inside.astype(np.int16) + 25, 0, 255).astype(np.uint8)
    assert "almost everywhere" in outside_change(before, everywhere, mask, POLICY).message

    # a mask over the whole image, a mask that leaves too little outside it (the measure skips), or no
    # mask at all: nothing outside to compare, which is never "held"
    nearly = np.ones_like(mask)
    nearly[:4] = False
    for whole in (np.ones_like(mask), nearly, None):
        assert outside_change(before, everywhere, whole, POLICY).status == SpillStatus.whole_image
    grown = np.zeros_like(mask)
    grown[:, 6:-6] = True  # 95 % of the width: grown by the seam margin it leaves nothing to compare
    skipped = outside_change(before, everywhere, grown, POLICY)
    assert skipped.status == SpillStatus.whole_image and "leaves only" in skipped.message
    # a mask of another size cannot be measured at all
    assert outside_change(before, inside, mask[:-1], POLICY).status == SpillStatus.unmeasured


def test_a_spill_that_could_not_be_measured_is_unverified_unless_the_repair_is_whole_image_by_design():
    region = record("texture_blur", "P1", 0.3, 0.55, box=[100, 100, 300, 300])
    masked = RepairPlan(target=region, template="texture-edge", tool="openai", mask_source=MaskSource.finding)
    for spill in (Spill(SpillStatus.unmeasured, "the mask is 10x10 but the image is 20x20"),
                  Spill(SpillStatus.whole_image, "the edit mask, grown by 2% of the diagonal, leaves only 1.0%"),
                  Spill(SpillStatus.whole_image, "the repair had no mask")):
        verdict = _judge(masked, [region], [], "pass", spill=spill)
        assert not verdict.accepted and verdict.cause == AttemptCause.unverified, verdict
        assert verdict.reason.startswith("unverified") and spill.message in verdict.reason
    assert _judge(masked, [region], [], "pass", spill=Spill(SpillStatus.held)).accepted

    # a redraw of the whole picture (a mirror, a tilt), or the repair of a whole-image finding: nothing
    # outside the mask to protect, and the attempt's notes say so
    tilt = record("perspective_broken", "P0", 7.6, 1.25)
    redraw = RepairPlan(target=tilt, template=tilt.template, tool="openai", mask_source=MaskSource.none)
    soft = record("texture_blur", "P1", 0.3, 0.55)
    soft_plan = RepairPlan(target=soft, template="texture-edge", tool="diffusers", mask_source=MaskSource.finding)
    for plan in (redraw, soft_plan):
        verdict = _judge(plan, [plan.target], [], "pass", spill=Spill(SpillStatus.whole_image, "no mask"))
        assert verdict.accepted and verdict.notes == [WHOLE_IMAGE_NOTE]
        # a measure that cannot run for another reason is never read as clean, whole image or not
        broken = _judge(plan, [plan.target], [], "pass", spill=Spill(SpillStatus.unmeasured, "bad mask"))
        assert not broken.accepted and broken.cause == AttemptCause.unverified


# ---- re-judging what the run left open -------------------------------------------------------------------


def test_open_defects_the_checks_no_longer_find_leave_the_open_list():
    """The measured bug: a tilt found only because the picture was mirrored, left open (no local
    repair) before the flip. After the flip the checks no longer find it, so it is no longer open;
    what is still found stays open, under the key the checks give it now."""
    tilt = record("perspective_broken", "P0", -7.6, 1.25)
    cropped = record("subject_cropped", "P0", 0.5, 0.4, box=[342, 674, 437, 720])
    hand = record("hand_malformed", "P0", 3.0, box=[100, 100, 200, 200], evidence=HAND_EVIDENCE)
    blur = record("texture_blur", "P1", 0.3, 0.75)
    left_open = {r.key: opened(r, OpenCause.no_backend) for r in (tilt, cropped, hand, blur)}

    # after the flip: no tilt; the crop found again at its place under a new key (the boxes overlap);
    # the hand gone; the soft picture still soft (same key)
    cropped_now = record("subject_cropped", "P0", 0.65, 0.4, box=[330, 680, 430, 720],
                         key="subject_cropped@330,680,430,720")
    exposure = record("exposure_drift", "P1", -1.2, 0.25)
    kept, gone = still_open(left_open, [cropped_now, blur, exposure])
    assert set(kept) == {cropped_now.key, blur.key}
    assert {d.kind for d in gone} == {"perspective_broken", "hand_malformed"}
    assert kept[cropped_now.key].key == cropped_now.key and kept[cropped_now.key].box == cropped_now.box
    assert kept[cropped_now.key].cause == OpenCause.no_backend  # why it is open has not changed
    assert kept[blur.key] == left_open[blur.key]

    # the triage that follows agrees: one P0/P1 less, the tilt never named again
    result = triage([cropped_now, blur], kept, FAIL_ON, False, Budget(), Spend(passes=1))
    assert result.stop == StopReason.stuck and result.stop_reason.startswith("stuck: 2 P0/P1")
    # nothing left at all: nothing open, and the run is clean
    kept, gone = still_open(left_open, [])
    assert kept == {} and len(gone) == 4
    assert triage([], kept, FAIL_ON, False, Budget(), Spend()).stop == StopReason.clean


def test_rejudging_matches_by_key_first_then_by_kind_and_place():
    a = record("hand_malformed", "P0", box=[0, 0, 100, 100])
    b = record("hand_malformed", "P0", box=[500, 500, 600, 600])
    left_open = {a.key: opened(a), b.key: opened(b)}
    # the same keys, whatever the boxes are now: both still open
    moved = [a.model_copy(update={"box": [700, 0, 800, 100]}), b]
    assert set(still_open(left_open, moved)[0]) == {a.key, b.key}
    # another kind at the same place is not the same defect; a far box of the same kind is not either
    other = record("texture_blur", "P1", box=[0, 0, 100, 100])
    far = record("hand_malformed", "P0", box=[300, 300, 350, 350])
    kept, gone = still_open(left_open, [other, far])
    assert kept == {} and len(gone) == 2
    # a region defect and a whole-image finding of its kind are different defects
    whole = record("hand_malformed", "P0", key="hand_malformed")
    assert still_open({a.key: opened(a)}, [whole])[0] == {}
    # one finding continues one open defect only
    twin = record("hand_malformed", "P0", box=[10, 10, 90, 90], key="hand_malformed@10,10,90,90")
    c = record("hand_malformed", "P0", box=[5, 5, 95, 95], key="hand_malformed@5,5,95,95+")
    kept, gone = still_open({a.key: opened(a), c.key: opened(c)}, [twin])
    assert list(kept) == [twin.key] and len(gone) == 1


def test_a_flip_moves_boxes_to_their_mirror_places():
    """After local.flip_back the loop compares findings on the flipped picture: a box moves to its
    mirror place, so a defect found on both sides of the flip keeps its key."""
    crop = record("subject_cropped", "P0", box=[342, 674, 437, 720])
    whole = record("exposure_drift")
    flipped = flip_records([crop, whole], "horizontal", (1280, 720))
    assert flipped[0].box == [843, 674, 938, 720] and flipped[0].key == crop.key and flipped[1] == whole
    assert flip_records([crop], "vertical", (1280, 720))[0].box == [342, 0, 437, 46]
    assert match_keys([finding("subject_cropped", [813, 687, 891, 720])], flipped) == [crop.key]
    defect = opened(crop)
    assert flip_records([defect], "horizontal", (1280, 720))[0].box == [843, 674, 938, 720]


# ---- findings: keys, records, severity ------------------------------------------------------------------


def test_match_keys_follows_the_same_defect():
    old_hand = record("hand_malformed", "P0", box=[100, 100, 200, 200])
    old_exposure = record("exposure_drift")
    previous = [old_hand, old_exposure]
    assert old_hand.key == "hand_malformed@100,100,200,200" and old_exposure.key == "exposure_drift"

    keys = match_keys([finding("exposure_drift"), finding("hand_malformed", [120, 110, 230, 210])], previous)
    assert keys == ["exposure_drift", old_hand.key]  # moved a little: same defect, first-seen key

    far = match_keys([finding("hand_malformed", [600, 600, 700, 700])], previous)
    assert far == ["hand_malformed@600,600,700,700"]

    other_kind = match_keys([finding("texture_blur", [100, 100, 200, 200])], previous)
    assert other_kind == ["texture_blur@100,100,200,200"]

    # barely touching (10 % of the smaller box) is not the same region
    assert match_keys([finding("hand_malformed", [190, 100, 290, 200])], previous) == ["hand_malformed@190,100,290,200"]

    # two findings at one old place: one continues it, the other gets its own, unique key
    twins = match_keys([finding("hand_malformed", [100, 100, 200, 200]),
                        finding("hand_malformed", [100, 100, 200, 200])], previous)
    assert twins[0] == old_hand.key and twins[1] != old_hand.key and len(set(twins)) == 2

    assert match_keys([finding("exposure_drift")], []) == ["exposure_drift"]


def test_match_keys_never_hands_an_old_key_to_a_new_defect():
    drifted = record("texture_blur", box=[300, 300, 400, 400], key="texture_blur@0,0,100,100")
    keys = match_keys([finding("texture_blur", [0, 0, 100, 100]), finding("texture_blur", [300, 300, 400, 400])],
                      [drifted])
    assert keys[1] == drifted.key and keys[0] != drifted.key
    assert keys[0] == drifted.key + "+"  # its own box's key, marked as new


def test_record_findings_and_to_finding_round_trip(tmp_path):
    mask = np.zeros((50, 80), dtype=bool)
    mask[10:20, 30:40] = True
    found = [finding("hand_malformed", [30, 10, 40, 20]).model_copy(update={"mask": mask,
                                                                             "evidence": {"n": np.int64(3)}}),
             finding("exposure_drift")]
    previous = [record("hand_malformed", box=[28, 8, 42, 22])]
    records = record_findings(found, previous, RunFiles(tmp_path), "work/pass-01")
    assert [r.key for r in records] == [previous[0].key, "exposure_drift"]
    assert records[0].box == [30, 10, 40, 20]  # the key keeps the first-seen box, the record the current one
    assert records[0].mask_file == "work/pass-01-finding-00-hand_malformed.png"
    assert (tmp_path / records[0].mask_file).is_file() and records[1].mask_file is None
    assert type(records[0].evidence["n"]) is int  # JSON-able

    back = to_finding(records[0], mask)
    assert back.kind == "hand_malformed" and back.region.box == [30, 10, 40, 20]
    assert back.repair_template == "hands" and back.evidence == {"n": 3} and back.mask is mask
    assert to_finding(records[1]).region is None


def test_severity():
    assert severity(record("exposure_drift", score=-0.5, threshold=0.25)) == pytest.approx(2.0)
    assert severity({"score": 30.0, "threshold": 15.0}) == pytest.approx(2.0)
    assert severity({"score": -0.3, "threshold": 0.0}) == pytest.approx(0.3)
    # a score that is worse when lower (a detail ratio, a face similarity): |threshold| / |score|
    assert severity(record("texture_blur", score=0.25, threshold=0.75)) == pytest.approx(3.0)
    assert severity({"score": 0.5, "threshold": 0.75}) > severity({"score": 0.7, "threshold": 0.75}) > 1.0
    assert severity({"score": 0.0, "threshold": 0.75}) == MAX_SEVERITY


def test_the_cost_estimate_follows_the_size_actually_requested():
    """A 24 MP photo is sent at gpt-image-2's largest default size, not at 24 MP: its estimate is that
    of the request, close to a 12 MP photo's and far below what the full area would cost."""
    big = estimate_usd(PlanContext(backend="openai", settings=SETTINGS, image_size=(6000, 4000),
                                   has_source=True, has_mask=True), "high")
    mid = estimate_usd(PlanContext(backend="openai", settings=SETTINGS, image_size=(4032, 3024),
                                   has_source=True, has_mask=True), "high")
    assert big == pytest.approx(mid, rel=0.1)
    assert big < 1.0


def test_a_defect_left_open_by_the_dollar_budget_names_the_budget_as_the_stop_reason():
    blur = record("texture_blur", "P1", 0.3, 0.55, box=[100, 100, 300, 300])
    money = OpenDefect(key=blur.key, kind=blur.kind, priority=blur.priority, cause=OpenCause.budget_usd,
                       reason="budget: the next paid repair (about $0.2000) would pass the $0.10 budget",
                       would_fix="raise --budget-usd")
    result = triage([blur], {blur.key: money}, FAIL_ON, False, Budget(), Spend())
    assert result.target is None and result.stop == StopReason.budget_usd and result.stop_reason == money.reason
    # the cause decides, not the words: a defect open for another cause whose sentence reads like the
    # budget's leaves the run stuck
    wordy = money.model_copy(update={"cause": OpenCause.resisted_ladder})
    assert triage([blur], {blur.key: wordy}, FAIL_ON, False, Budget(), Spend()).stop == StopReason.stuck
    unpriced = money.model_copy(update={"cause": OpenCause.unpriced, "reason": "budget: model 'x' has no price"})
    assert triage([blur], {blur.key: unpriced}, FAIL_ON, False, Budget(), Spend()).stop == StopReason.budget_usd
