"""mirrored on real photos: flips are found even when also edited, re-exposed or reframed; clean
re-encodes, edits of an unflipped image and left-right symmetric pictures give no finding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fixloop.checks.context import CheckContext
from fixloop.checks.engine import run_checks
from fixloop.checks.mirror import measure_mirror
from tests import defects
from tests.conftest import photo

# A spread of the set: wide shots, portraits (frontal ones are the most nearly symmetric), a
# cut-out on white, a generated image, a composite, tiny hand close-ups.
SAMPLE = ["body_bus_01.jpg", "body_cello_01.jpg", "face_dfC_03.jpg", "face_dfF_02.jpg", "face_biden_01.jpg",
          "gen_clean_01.jpg", "composite_clean_lemur_01.png", "hand_lips_01.jpg", "hand_signing_01.jpg"]


def _run(case, policy, mask=None):
    ctx = CheckContext.from_arrays(case.candidate, case.source, case.mask if mask is None else mask)
    report = run_checks(ctx, policy, names=["mirrored"])
    assert report.checks[0].status.value == "ok", report.checks[0]
    return report


def _symmetric(image: np.ndarray) -> np.ndarray:
    """The left half of ``image`` with its own mirror image as the right half."""
    w = image.shape[1]
    out = image.copy()
    out[:, w - w // 2 :] = image[:, : w // 2][:, ::-1]
    return out


def _reframe(image: np.ndarray, zoom: float, shift: float) -> np.ndarray:
    """Zoom about the centre and shift right by ``shift`` of the width (an edit that reframed a little)."""
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), 0, zoom)
    matrix[0, 2] += shift * w
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("name", SAMPLE)
def test_clean_reencode_is_not_mirrored(name, policy):
    assert _run(defects.clean_reencode(photo(name)), policy).findings == []


@pytest.mark.parametrize("name", SAMPLE)
def test_flip_is_found(name, policy):
    report = _run(defects.flip(photo(name)), policy)
    assert [f.kind for f in report.findings] == ["mirrored"]
    finding = report.findings[0]
    assert finding.priority.value == "P0" and finding.stage.value == "structure"
    assert finding.repair_template == "recompose" and finding.unit == "correlation margin"
    evidence = finding.evidence
    assert evidence["flipped_correlation"] > 0.95  # the flip is undone exactly by mirroring the source
    assert evidence["margin"] == pytest.approx(evidence["flipped_correlation"] - evidence["direct_correlation"], abs=1e-3)
    assert finding.score >= finding.threshold


@pytest.mark.parametrize("name", ["body_bus_01.jpg", "face_dfF_02.jpg", "hand_lips_01.jpg"])
def test_flip_that_was_also_edited_in_the_mask_is_found(name, policy):
    case = defects.flip_and_edit(photo(name))
    assert [f.kind for f in _run(case, policy).findings] == ["mirrored"]
    # The same candidate judged without its mask: the recoloured box then counts against both matches.
    unmasked = run_checks(CheckContext.from_arrays(case.candidate, case.source), policy, names=["mirrored"])
    assert [f.kind for f in unmasked.findings] == ["mirrored"]


@pytest.mark.parametrize("name", ["body_cello_01.jpg", "face_biden_01.jpg"])
@pytest.mark.parametrize("ev", [-1.0, 0.7])
def test_flip_with_an_exposure_shift_is_found(name, ev, policy):
    report = _run(defects.flip_and_exposure(photo(name), ev), policy)
    assert [f.kind for f in report.findings] == ["mirrored"]


@pytest.mark.parametrize("name", ["face_dfC_03.jpg", "gen_clean_01.jpg"])
def test_flip_of_a_slightly_reframed_result_is_found(name, policy):
    image = photo(name)
    candidate = defects.jpeg(_reframe(image[:, ::-1].copy(), 1.06, 0.03), 90)
    report = _run(defects.Case(candidate=candidate, source=image), policy)
    assert [f.kind for f in report.findings] == ["mirrored"]


@pytest.mark.parametrize("name", SAMPLE)
def test_edit_of_an_unflipped_image_is_not_mirrored(name, policy):
    case = defects.edit_inside_mask(photo(name))
    assert _run(case, policy).findings == []
    assert run_checks(CheckContext.from_arrays(case.candidate, case.source), policy,
                      names=["mirrored"]).findings == []


@pytest.mark.parametrize("name", ["body_bus_01.jpg", "face_dfC_03.jpg"])
def test_rotation_and_reframing_are_not_mirroring(name, policy):
    image = photo(name)
    assert _run(defects.rotate(image, 4), policy).findings == []
    reframed = defects.Case(candidate=defects.jpeg(_reframe(image, 1.07, 0.03), 90), source=image)
    assert _run(reframed, policy).findings == []


@pytest.mark.parametrize("name", ["face_dfC_03.jpg", "face_dfB_01.jpg", "face_leslie_02.jpg"])
def test_a_symmetric_picture_cannot_be_told_from_its_flip(name, policy):
    """A frontal portrait made exactly symmetric matches its mirror image as well as itself."""
    source = _symmetric(photo(name))
    report = _run(defects.Case(candidate=defects.jpeg(source[:, ::-1].copy(), 90), source=source), policy)
    assert report.findings == []
    ctx = CheckContext.from_arrays(defects.jpeg(source[:, ::-1].copy(), 90), source)
    match = measure_mirror(ctx.candidate.gray, ctx.source.gray, policy.params("mirrored").analysis_side)
    assert abs(match.margin) < 0.05 and match.flipped > 0.95


def test_margin_is_antisymmetric_between_original_and_flip(policy):
    """The original scores -m where its flip scores +m: the measure is about left-right order only."""
    image = photo("body_cello_01.jpg")
    side = policy.params("mirrored").analysis_side
    grey = CheckContext.from_arrays(image).candidate.gray
    same = measure_mirror(grey, grey, side)
    flipped = measure_mirror(np.ascontiguousarray(grey[:, ::-1]), grey, side)
    assert same.direct == pytest.approx(1.0, abs=1e-3) and flipped.flipped == pytest.approx(1.0, abs=1e-3)
    assert flipped.margin == pytest.approx(-same.margin, abs=0.02) and flipped.margin > 0.3


def test_without_a_source_mirroring_is_skipped(policy):
    report = run_checks(CheckContext.from_arrays(photo("body_bus_01.jpg")), policy, names=["mirrored"])
    assert report.checks[0].status.value == "skipped" and report.checks[0].reason


def test_a_plain_image_is_skipped_not_passed(policy):
    plain = np.full((300, 400, 3), 128, dtype=np.uint8)
    report = run_checks(CheckContext.from_arrays(plain, plain), policy, names=["mirrored"])
    assert report.checks[0].status.value == "skipped" and "plain" in report.checks[0].reason
