"""perspective_broken on real photos: rotations, a tilted horizon and leaning verticals are found
with their sign and size; clean re-encodes and edits that change no geometry give no finding; an
image without straight lines is skipped, not passed."""

from __future__ import annotations

import numpy as np
import pytest

from fixloop.checks.context import CheckContext
from fixloop.checks.engine import run_checks
from fixloop.checks.perspective import find_lines, measure_rotation
from tests import defects
from tests.conftest import photo

# Photos with straight lines of both directions (buildings, furniture, frames, studio backdrops).
LINES = ["body_truck_01.jpg", "body_bus_01.jpg", "face_obama_02.jpg", "face_dfB_01.jpg",
         "group_cardgame_01.jpg", "group_couple_01.jpg", "gen_hand_extra_hand_01.jpg", "hand_holding_01.jpg"]
# A spread of the whole set, portraits and hand close-ups with few lines included.
SAMPLE = ["body_bus_01.jpg", "body_skier_01.jpg", "face_dfC_03.jpg", "face_harington_01.jpg",
          "face_lacamoire_01.png", "gen_clean_01.jpg", "composite_clean_lemur_01.png", "hand_signing_01.jpg",
          "hand_thumbsup_01.jpg", "group_obama_biden_01.jpg"]


def _run(case, policy):
    ctx = CheckContext.from_arrays(case.candidate, case.source, case.mask)
    report = run_checks(ctx, policy, names=["perspective_broken"])
    assert report.checks[0].status.value == "ok", report.checks[0]
    return report


@pytest.mark.parametrize("name", SAMPLE)
def test_clean_reencode_is_not_tilted(name, policy):
    assert _run(defects.clean_reencode(photo(name)), policy).findings == []


@pytest.mark.parametrize("name", LINES[:4])
@pytest.mark.parametrize("degrees", [2.0, -2.0, 4.0, -4.0])
def test_rotation_is_found_with_its_sign_and_size(name, degrees, policy):
    report = _run(defects.rotate(photo(name), degrees), policy)
    assert [f.kind for f in report.findings] == ["perspective_broken"]
    finding = report.findings[0]
    assert finding.priority.value == "P0" and finding.stage.value == "structure"
    assert finding.repair_template == "perspective" and finding.unit == "°"
    assert finding.evidence["which"] == "whole image rotated"
    assert finding.score == pytest.approx(degrees, abs=0.4)
    assert finding.evidence["rotation_deg"] == pytest.approx(degrees, abs=0.4)
    assert finding.evidence["candidate_lines"] >= 20 and finding.evidence["source_line_length"] > 1.5
    assert ("counter-clockwise" in finding.message) == (degrees > 0)


@pytest.mark.parametrize("name", LINES[4:])
def test_rotation_by_two_degrees_is_found_on_more_photos(name, policy):
    report = _run(defects.rotate(photo(name), -2.0), policy)
    assert [f.evidence["which"] for f in report.findings] == ["whole image rotated"]
    assert report.findings[0].score == pytest.approx(-2.0, abs=0.4)


@pytest.mark.parametrize("name", ["body_truck_01.jpg", "face_obama_02.jpg", "group_cardgame_01.jpg", "body_women_01.jpg"])
@pytest.mark.parametrize("degrees", [3.0, -2.0])
def test_tilted_horizon_is_told_from_a_rotation(name, degrees, policy):
    """Horizontal lines turned, verticals kept (an affine shear): the horizon tilts, nothing else."""
    finding = _run(defects.tilt_horizon(photo(name), degrees), policy).findings[0]
    assert finding.evidence["which"] == "horizon"
    assert finding.score == pytest.approx(degrees, abs=0.5)
    assert abs(finding.evidence["verticals_deg"]) < 0.5
    assert "horizon tilts" in finding.message


@pytest.mark.parametrize("name", ["body_bus_01.jpg", "face_dfB_01.jpg", "group_couple_01.jpg", "gen_hand_ghost_finger_01.jpg"])
@pytest.mark.parametrize("degrees", [-3.0, 2.0])
def test_leaning_verticals_are_told_from_a_rotation(name, degrees, policy):
    finding = _run(defects.lean_verticals(photo(name), degrees), policy).findings[0]
    assert finding.evidence["which"] == "verticals"
    assert finding.score == pytest.approx(degrees, abs=0.5)
    assert abs(finding.evidence["horizon_deg"]) < 0.5
    assert "verticals lean" in finding.message


@pytest.mark.parametrize("name", LINES[:4])
def test_half_a_degree_is_below_the_limit(name, policy):
    assert _run(defects.rotate(photo(name), 0.5), policy).findings == []


@pytest.mark.parametrize("name", ["face_dfF_01.jpg", "face_harington_02.jpg", "gen_body_extra_arm_01.jpg",
                                  "hand_thumbsup_02.jpg", "body_couple_01.jpg", "face_dfF_02.jpg"])
def test_edits_that_change_no_geometry_are_not_tilts(name, policy):
    """Edits that make some straight lines appear, vanish or soften (a recoloured box, a blur, a
    darker exposure, a harsher re-encode) must not read as a turned horizon or leaning verticals."""
    image = photo(name)
    for case in (defects.edit_inside_mask(image), defects.blur(image, 2.0), defects.blur(image, 4.0),
                 defects.exposure(image, -0.7), defects.Case(defects.jpeg(image, 60, 0.6), image)):
        report = run_checks(CheckContext.from_arrays(case.candidate, case.source, case.mask), policy,
                            names=["perspective_broken"])
        assert report.findings == [], report.findings[0].message


def test_an_image_without_straight_lines_is_skipped_not_passed(policy):
    """Soft blobs on a smooth gradient: no straight line to read a tilt from."""
    h, w = 600, 800
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(3)
    image = 60 + 80 * x / w
    for _ in range(12):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(30, 120)
        image += 60 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
    rgb = np.repeat(np.clip(image, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    report = run_checks(CheckContext.from_arrays(defects.jpeg(rgb, 85, 0.9), rgb), policy, names=["perspective_broken"])
    assert report.checks[0].status.value == "skipped"
    assert "straight lines" in report.checks[0].reason


def test_without_a_source_tilt_is_skipped(policy):
    report = run_checks(CheckContext.from_arrays(photo("body_truck_01.jpg")), policy, names=["perspective_broken"])
    assert report.checks[0].status.value == "skipped" and report.checks[0].reason


def test_line_directions_follow_the_rotation():
    """The direction histograms of a photo and its rotated copy differ by the rotation, to a tenth."""
    image = photo("body_truck_01.jpg")
    for degrees in (-3.0, 1.5, 6.0):
        case = defects.rotate(image, degrees)
        ctx = CheckContext.from_arrays(case.candidate, case.source)
        cand, src = (find_lines(i.gray, 512, 0.04) for i in (ctx.candidate, ctx.source))
        assert measure_rotation(cand, src, 15.0).degrees == pytest.approx(degrees, abs=0.15)
