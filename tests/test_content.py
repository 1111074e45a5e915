"""A candidate that is its source only re-lit, re-coloured or re-encoded, in the same frame, takes the
source's analyses of people (checks/content.py): the models are not run on it, nothing edit-made is
lost, and any defect of content (a hand redrawn, a spill, a blur, a flip, a shift) keeps its own
analyses."""

from __future__ import annotations

import numpy as np
import pytest

from fixloop.checks import analyses
from fixloop.checks.content import MAX_RESIDUAL, changed_region, content_residual, same_content
from fixloop.checks.context import CheckContext
from fixloop.checks.engine import run_checks
from tests import defects
from tests.conftest import manifest, photo, photo_names
from tests.hand_defects import HAND_DEFECTS

# every third photo of the shared set: people, groups, bodies, hands and generated images
SAMPLE = photo_names()[::3]
HAND_PHOTOS = [n for n, row in manifest().items() if row["category"] != "gen" and int(row["hands_visible"] or 0) > 0]
SAME_CONTENT = {
    "-0.5 EV": lambda image: defects.exposure(image, -0.5),
    "+25 mired": lambda image: defects.white_balance(image, 25.0),
    "JPEG q80": lambda image: defects.Case(candidate=defects.jpeg(image, 80), source=image),
}
STRUCTURAL = ("hand_malformed", "subject_cropped", "identity_drift", "subjects_swapped", "perspective_broken",
              "mirrored")


@pytest.mark.parametrize("edit", sorted(SAME_CONTENT))
@pytest.mark.parametrize("name", SAMPLE)
def test_a_relit_or_reencoded_candidate_takes_the_sources_analyses(name, edit, policy):
    image = photo(name)
    case = SAME_CONTENT[edit](image)
    ctx = CheckContext.from_arrays(case.candidate, case.source, defects.centre_box_mask(image.shape, 0.3))
    report = run_checks(ctx, policy)
    assert ctx.candidate.same_content_as is ctx.source
    assert analyses.pose(ctx.candidate) is analyses.pose(ctx.source)
    assert analyses.hands(ctx.candidate) is analyses.hands(ctx.source)
    # no model ran on the candidate's own pixels
    for key in ("pose", "faces", "hands", "hands_with_wrist_crops"):
        assert key not in ctx.candidate._analyses
    # what the edit did not change it does not report: structural findings are the source's own
    assert [f.kind for f in report.findings if f.kind in STRUCTURAL and not f.inherited] == []
    assert all(run.status.value in ("ok", "skipped") for run in report.checks)


def test_the_light_and_colour_checks_still_see_a_relit_candidate(policy):
    image = photo(SAMPLE[0])
    for case, kind in ((defects.exposure(image, -0.8), "exposure_drift"),
                       (defects.white_balance(image, 40.0), "color_temperature_drift")):
        ctx = CheckContext.from_arrays(case.candidate, case.source)
        report = run_checks(ctx, policy)
        assert ctx.candidate.same_content_as is ctx.source
        assert kind in {f.kind for f in report.findings}


@pytest.mark.parametrize("builder", sorted(HAND_DEFECTS))
def test_a_redrawn_hand_is_new_content(builder):
    judged = 0
    for name in HAND_PHOTOS:
        image = photo(name)
        try:
            case = HAND_DEFECTS[builder](image, 0.0)
        except ValueError:  # no hand the builder can use in this photo
            continue
        ctx = CheckContext.from_arrays(case.candidate, image)
        assert not same_content(ctx), name
        assert ctx.link_same_content() is False and ctx.candidate.same_content_as is None
        judged += 1
        if judged == 4:
            break
    assert judged >= 2


@pytest.mark.parametrize("name", SAMPLE[::2])
def test_spill_blur_flip_and_shift_are_new_content(name):
    image = photo(name)
    cases = [defects.edit_spills_outside_mask(image, 0.15), defects.blur(image, 1.0), defects.flip(image),
             defects.make("edit_inside_mask", image)]
    shifted = np.roll(image, round(0.02 * image.shape[1]), axis=1)
    cases.append(defects.Case(candidate=shifted, source=image))
    for case in cases:
        ctx = CheckContext.from_arrays(case.candidate, case.source, case.mask)
        assert not same_content(ctx)


def test_the_residual_is_zero_for_the_same_image_and_large_for_a_negative():
    image = photo(SAMPLE[0])
    ctx = CheckContext.from_arrays(image, image)
    assert content_residual(ctx.source, ctx.candidate) == pytest.approx(0.0, abs=1e-6)
    assert same_content(ctx)
    negative = CheckContext.from_arrays(255 - image, image)
    assert content_residual(negative.source, negative.candidate) > 10 * MAX_RESIDUAL
    assert not same_content(negative)


@pytest.mark.parametrize("name", SAMPLE[::2])
def test_the_changed_region_is_where_the_edit_drew(name):
    image = photo(name)
    h, w = image.shape[:2]
    edited = defects.exposure(image, -0.4).candidate.copy()
    y0, y1, x0, x1 = h // 3, h // 2, w // 5, w // 3
    yy, xx = np.mgrid[y0:y1, x0:x1]
    edited[y0:y1, x0:x1] = (((yy // 9 + xx // 9) % 2) * 200 + 20)[..., None].astype(np.uint8)  # a patch redrawn
    ctx = CheckContext.from_arrays(edited, image)
    changed = changed_region(ctx)
    assert changed is not None and changed.shape == ctx.size[::-1]
    k = ctx.size[0] / w
    inside = changed[round(y0 * k) + 20: round(y1 * k) - 20, round(x0 * k) + 20: round(x1 * k) - 20]
    assert inside.all()
    far = np.ones_like(changed)
    far[max(0, round(y0 * k) - 40): round(y1 * k) + 40, max(0, round(x0 * k) - 40): round(x1 * k) + 40] = False
    assert changed[far].mean() == 0.0  # the re-lit rest is not
    relit = CheckContext.from_arrays(defects.exposure(image, -0.4).candidate, image)
    assert not changed_region(relit).any()
    assert changed_region(CheckContext.from_arrays(defects.flip(image).candidate, image)) is None
