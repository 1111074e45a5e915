"""exposure_drift and color_temperature_drift on real photos with known, injected drifts."""

from __future__ import annotations

import numpy as np
import pytest

from fixloop.checks.color import measure_white_balance, white_balance_gains, white_point
from fixloop.checks.context import CheckContext
from fixloop.checks.engine import run_checks
from tests import defects
from tests.conftest import photo

LIGHT = ["exposure_drift", "color_temperature_drift"]
# A spread of the set: portraits, wide shots, black-and-white, generated, hands, a composite.
SAMPLE = ["face_obama_01.jpg", "face_lacamoire_01.png", "body_bus_01.jpg", "body_skier_01.jpg",
          "gen_clean_01.jpg", "hand_ok_01.jpg", "group_cardgame_01.jpg", "composite_clean_lemur_01.png"]


def _run(case, policy, names=LIGHT):
    return run_checks(CheckContext.from_arrays(case.candidate, case.source, case.mask), policy, names=names)


@pytest.mark.parametrize("name", SAMPLE)
def test_clean_reencode_raises_nothing(name, policy):
    report = _run(defects.clean_reencode(photo(name)), policy)
    assert report.findings == [] and report.verdict == "pass"


@pytest.mark.parametrize("name", SAMPLE)
@pytest.mark.parametrize("ev", [-0.5, 0.4])
def test_exposure_change_is_found_with_its_sign(name, ev, policy):
    report = _run(defects.exposure(photo(name), ev), policy, ["exposure_drift"])
    assert [f.kind for f in report.findings] == ["exposure_drift"]
    finding = report.findings[0]
    assert np.sign(finding.evidence["ev_change"]) == np.sign(ev)
    assert finding.priority.value == "P1" and finding.stage.value == "light"
    assert finding.repair_template == "exposure-color"


def test_small_exposure_change_below_the_limit_passes(policy):
    report = _run(defects.exposure(photo("face_obama_01.jpg"), -0.1), policy, ["exposure_drift"])
    assert report.findings == []


def test_dark_grade_that_crushes_shadows_is_reported(policy):
    image = photo("body_skier_01.jpg")
    graded = np.clip(image.astype(int) * 1.15 - 40, 0, 255).astype(np.uint8)  # contrast crush
    report = run_checks(CheckContext.from_arrays(graded, image), policy, names=["exposure_drift"])
    assert report.findings and report.findings[0].evidence["crushed_after"] > report.findings[0].evidence["crushed_before"]


def test_steady_drift_across_passes_is_reported_before_it_adds_up(policy):
    """Four passes, each 0.06 EV darker than the last: 0.24 EV in all (under the 0.25 EV limit),
    but a steady trend of repeated low-denoise passes."""
    image = photo("gen_clean_01.jpg")
    passes = [defects.exposure(image, -0.06 * (i + 1)).candidate for i in range(4)]
    history_only = run_checks(CheckContext.from_arrays(passes[-1], history=[image, *passes[:-1]]),
                              policy, names=["exposure_drift"])
    assert history_only.findings, "history alone (no --source) must be enough"
    finding = history_only.findings[0]
    assert finding.unit == "EV per pass" and finding.score == pytest.approx(-0.06, abs=0.01)
    assert len(finding.evidence["ev_per_pass"]) == 5
    # Without the history, the same candidate is just under the limit.
    single = run_checks(CheckContext.from_arrays(passes[-2], image), policy, names=["exposure_drift"])
    assert single.findings == []


def test_exposure_without_source_or_history_is_skipped_not_passed(policy):
    report = run_checks(CheckContext.from_arrays(photo("face_obama_01.jpg")), policy, names=LIGHT)
    assert [c.status.value for c in report.checks] == ["skipped", "skipped"]
    assert all(c.reason for c in report.checks)


def test_white_point_maths_round_trips():
    d65 = white_point(np.ones(3))
    assert d65.cct == pytest.approx(6504, abs=15)
    for mired in (-40, -15, 15, 40):
        moved = white_point(white_balance_gains(mired))
        assert moved.mired - d65.mired == pytest.approx(mired, abs=0.3)
    tinted = white_point(white_balance_gains(0, 0.01))
    assert tinted.duv - d65.duv == pytest.approx(0.01, abs=1e-4)


@pytest.mark.parametrize("name", SAMPLE)
@pytest.mark.parametrize("mired", [-25, 25])
def test_white_balance_shift_is_measured_in_mired(name, mired, policy):
    case = defects.white_balance(photo(name), mired)
    ctx = CheckContext.from_arrays(case.candidate, case.source)
    if name != "face_lacamoire_01.png":  # near-monochrome: gains are less well posed, still found
        assert measure_white_balance(ctx).mired == pytest.approx(mired, abs=3)
    report = run_checks(ctx, policy, names=["color_temperature_drift"])
    assert [f.kind for f in report.findings] == ["color_temperature_drift"]
    assert np.sign(report.findings[0].score) == np.sign(mired)
    assert ("warmer" if mired > 0 else "cooler") in report.findings[0].message


def test_green_tint_is_reported_as_tint(policy):
    image = photo("gen_clean_01.jpg")
    tinted = defects.to_srgb(defects.to_linear(image) * white_balance_gains(0, 0.012))
    report = run_checks(CheckContext.from_arrays(tinted, image), policy, names=["color_temperature_drift"])
    assert report.findings and report.findings[0].unit == "Duv" and report.findings[0].score > 0


def test_edit_inside_the_mask_does_not_move_exposure_or_colour(policy):
    report = _run(defects.edit_inside_mask(photo("body_bus_01.jpg")), policy)
    assert report.findings == []
