"""texture_blur on real photos: whole-image and regional blur are found (the region where it is),
honest re-encodes, resizing and exposure or colour changes are not called blur."""

from __future__ import annotations

import numpy as np
import pytest

from fixloop.checks.blur import measure_blur
from fixloop.checks.context import CheckContext
from fixloop.checks.engine import run_checks
from tests import defects
from tests.conftest import photo

# A spread of the set: wide shots, portraits, black-and-white, generated, a small hand close-up,
# a composite with flat backdrop.
SAMPLE = ["body_bus_01.jpg", "body_skier_01.jpg", "face_dfA_01.jpg", "face_lacamoire_01.png",
          "gen_clean_01.jpg", "group_couple_01.jpg", "hand_holding_01.jpg", "composite_clean_lemur_01.png"]
# Photos with enough texture inside the blurred box to place a regional blur.
REGION_SAMPLE = ["body_bus_01.jpg", "body_skier_01.jpg", "face_dfA_01.jpg", "gen_clean_01.jpg",
                 "group_couple_01.jpg", "hand_holding_01.jpg"]


def _run(case, policy):
    ctx = CheckContext.from_arrays(case.candidate, case.source, case.mask)
    return ctx, run_checks(ctx, policy, names=["texture_blur"])


@pytest.mark.parametrize("name", SAMPLE)
@pytest.mark.parametrize("defect,amount", [("clean_reencode", 0), ("upscale", 2.0), ("downscale", 0.5),
                                           ("exposure", -1.0), ("white_balance", 40)])
def test_no_blur_reported_for_honest_changes(name, defect, amount, policy):
    """Re-encoding, a 2x upscale of a smaller source, a downscale, and exposure or white-balance
    changes (exposure_drift's and color_temperature_drift's business) are not texture loss."""
    _, report = _run(defects.make(defect, photo(name), amount), policy)
    assert report.checks[0].status.value == "ok"
    assert report.findings == [], report.findings[0].message


@pytest.mark.parametrize("name", SAMPLE)
@pytest.mark.parametrize("sigma", [1.5, 2.0])
def test_whole_image_blur_is_found(name, sigma, policy):
    image = photo(name)
    _, report = _run(defects.blur(image, sigma), policy)
    assert [f.kind for f in report.findings] == ["texture_blur"]
    finding = report.findings[0]
    assert finding.priority.value == "P1" and finding.stage.value == "detail"
    assert finding.unit == "detail ratio" and finding.repair_template == "texture-edge"
    assert finding.score < finding.threshold
    assert finding.evidence["global_ratio"] < 0.75
    assert finding.mask.shape == image.shape[:2]


def test_stronger_blur_scores_lower(policy):
    image = photo("body_bus_01.jpg")
    scores = [_run(defects.blur(image, s), policy)[1].findings[0].score for s in (1.5, 2.0, 3.0)]
    assert scores[0] > scores[1] > scores[2]


def test_whole_image_blur_covers_the_image(policy):
    image = photo("body_bus_01.jpg")
    _, report = _run(defects.blur(image, 1.5), policy)
    finding = report.findings[0]
    h, w = image.shape[:2]
    assert "over the whole image" in finding.message
    assert finding.region.box == [0, 0, w, h]
    assert finding.score == pytest.approx(finding.evidence["global_ratio"], abs=1e-3)


@pytest.mark.parametrize("name", REGION_SAMPLE)
def test_regional_blur_is_found_where_it_is(name, policy):
    image = photo(name)
    _, report = _run(defects.blur_region(image, 2.0), policy)
    assert report.findings, "a blur over 25 % of the image must be found"
    finding = report.findings[0]
    bx0, by0, bx1, by1 = defects.blur_region_box(image.shape)
    x0, y0, x1, y1 = finding.region.box
    # the reported box lies in the blurred box (a tile of slack) and its centre inside it
    inter = max(0, min(x1, bx1) - max(x0, bx0)) * max(0, min(y1, by1) - max(y0, by0))
    assert inter >= 0.75 * (x1 - x0) * (y1 - y0), (finding.region.box, (bx0, by0, bx1, by1))
    assert bx0 <= (x0 + x1) / 2 <= bx1 and by0 <= (y0 + y1) / 2 <= by1
    # the soft region is much softer than the image as a whole
    assert finding.score < finding.evidence["global_ratio"]
    # the finding's pixels (soft tiles, candidate resolution) lie mostly in the blurred box
    assert finding.mask.shape == image.shape[:2]
    assert finding.mask[by0:by1, bx0:bx1].sum() >= 0.75 * finding.mask.sum()


def test_region_message_names_its_size(policy):
    _, report = _run(defects.blur_region(photo("body_bus_01.jpg"), 2.0), policy)
    finding = report.findings[0]
    assert "in a region covering 25% of the image" in finding.message
    assert finding.threshold == 0.55  # the region limit, not the global one


def test_detail_ratio_ignores_a_contrast_gain(policy):
    """The coarse band cancels a brightness/contrast scaling: the ratio stays about 1."""
    image = photo("face_dfA_01.jpg")
    darker = (image.astype(np.float32) * 0.6).round().astype(np.uint8)
    ctx = CheckContext.from_arrays(darker, image)
    m = measure_blur(ctx.source, ctx.candidate, policy.params("texture_blur"))
    assert m.global_ratio == pytest.approx(1.0, abs=0.06)
    assert m.regions == []


def test_flat_source_is_skipped(policy):
    flat = np.full((300, 400, 3), 128, np.uint8)
    _, report = _run(defects.Case(defects.jpeg(flat, 85), flat), policy)
    assert report.checks[0].status.value == "skipped"
    assert "fine detail" in report.checks[0].reason


def test_without_a_source_the_check_is_skipped(policy):
    report = run_checks(CheckContext.from_arrays(photo("gen_clean_01.jpg")), policy, names=["texture_blur"])
    assert report.checks[0].status.value == "skipped"
