"""finger_without_structure (issue 13, part 2): the skeleton draws a straight, extended finger where the
picture shows no finger edges. Made defects on the real hand photos of the fit half (tests/hand_defects.py),
real models, judged alone (no source), as bench.accuracy judges them."""

from __future__ import annotations

import pytest

from fixloop.checks import analyses
from fixloop.checks.context import CheckContext
from fixloop.checks.engine import run_checks
from fixloop.checks.hands import FINGER_NAMES, finger_structure, palm_length
from tests import defects, hand_defects
from tests.conftest import photo

CHECK = ["hand_malformed"]


def _findings(image, policy, rule="finger_without_structure"):
    report = run_checks(CheckContext.from_arrays(image), policy, names=CHECK)
    return [f for f in report.findings if rule in f.evidence["rules"]]


def _meets(box, other) -> bool:
    x0, y0, x1, y1 = box
    a0, b0, a1, b1 = other
    return a0 < x1 and x0 < a1 and b0 < y1 and y0 < b1


@pytest.mark.parametrize("name, builder, amount", [
    ("body_soccer_03.jpg", "finger_missing", 0.0),  # the middle finger removed: 0.14 of the clearest finger
    ("body_boardgame_01.jpg", "finger_missing", 0.0),  # 0.16
    ("hand_ok_01.jpg", "fingers_fused", 1.0),  # a paddle where two fingers were: 0.10
])
def test_made_finger_defect_is_found_where_it_was_made(name, builder, amount, policy):
    """The clean photo has no such finding; the made defect has one, on the hand it was made on, and the
    finding names the finger and carries the ratio under the threshold."""
    assert _findings(photo(name), policy) == []
    case = hand_defects.HAND_DEFECTS[builder](photo(name), amount)
    found = _findings(case.candidate, policy)
    assert found, f"{name} {builder} {amount:g}: no finger_without_structure finding"
    at = [f for f in found if _meets(f.region.box, hand_defects.defect_box(case))]
    assert at, "the finding is not on the hand the defect was made on"
    finding = at[0]
    structure = finding.evidence["finger_structure"]
    params = policy.params("hand_malformed")
    assert min(structure.values()) < params.finger_min_structure <= max(structure.values())
    if finding.evidence["rule"] == "finger_without_structure":
        assert finding.score < finding.threshold == params.finger_min_structure
    assert finding.mask is not None and finding.mask.shape == case.candidate.shape[:2]


def test_clean_hands_keep_their_finger_structure(policy):
    """Every straight, extended finger of the clean hands of these photos (and their mirror images and JPEG
    q70 copies) crosses at least the threshold's share of the clearest finger's edges."""
    params = policy.params("hand_malformed")
    judged = 0
    for name in ("body_soccer_03.jpg", "body_boardgame_01.jpg", "hand_ok_01.jpg", "group_leslie_harington_01.jpg"):
        for image in (photo(name), photo(name)[:, ::-1].copy(), defects.jpeg(photo(name), 70)):
            ctx = CheckContext.from_arrays(image)
            for hand in analyses.hands_with_wrist_crops(ctx.candidate):
                if palm_length(hand) < params.structure_min_palm_px:
                    continue
                structure = finger_structure(ctx.candidate, hand)
                assert set(structure) <= set(FINGER_NAMES[1:])
                if structure:
                    judged += 1
                    assert max(structure.values()) == 1.0
                    assert min(structure.values()) >= params.finger_min_structure, (name, structure)
    assert judged >= 8


def test_small_hands_are_not_judged_for_structure(policy):
    """gen_clean_01 (a generated hard negative) at half size: one of its hands has a palm under
    structure_min_palm_px (31 px), too coarse for profiles across fingers a few pixels wide; it was a
    report-half false alarm at a 30 px minimum. Nothing is reported now."""
    small = defects.downscale(photo("gen_clean_01.jpg"), 0.5).candidate  # the bench's "scaled to 50 %" row
    ctx = CheckContext.from_arrays(small)
    palms = [palm_length(h) for h in analyses.hands_with_wrist_crops(ctx.candidate)]
    assert palms and min(palms) < policy.params("hand_malformed").structure_min_palm_px
    assert _findings(small, policy) == []


def test_a_stray_skeleton_is_not_judged_for_structure(policy):
    """face_dfC_03 brightened 1 EV (bench.stability's change): MediaPipe fits a hand skeleton on the neck whose
    "middle finger" crosses a third of the edges of its "index"; the skeleton is not found again on a crop
    around it, so it is no hand to judge, and nothing is reported."""
    from bench import stability
    from fixloop.checks.hands import confirmed

    image = photo("face_dfC_03.jpg")
    ctx = CheckContext.from_arrays(stability.CHANGES["+1 EV"](image), image)
    params = policy.params("hand_malformed")
    stray = [h for h in analyses.hands_with_wrist_crops(ctx.candidate)
             if palm_length(h) >= params.structure_min_palm_px
             and min(finger_structure(ctx.candidate, h).values(), default=1.0) < params.finger_min_structure]
    assert stray and not any(confirmed(ctx.candidate, h) for h in stray)
    assert not run_checks(ctx, policy, names=CHECK).findings
