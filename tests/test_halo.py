"""edge_halo on real photos: fringe rings painted around a segmented person (MediaPipe selfie
segmentation) are found from the cut-out's alpha, the edit mask, the image alone and against the
source; clean photos, honest re-encodes and a clean matting composite give no finding."""

from __future__ import annotations

import tomllib

import cv2
import numpy as np
import pytest

from fixloop.checks.base import REGISTRY, CheckSkipped
from fixloop.checks.context import CheckContext
from fixloop.checks.halo import HaloParams, check_edge_halo, measure_context
from fixloop.checks.policy import DEFAULT_POLICY_PATH
from tests import defects
from tests.conftest import photo

# Portraits whose backgrounds contrast with the person, so a ring is visible on the image alone.
RING_PHOTOS = ["face_obama_04.jpg", "face_dfE_01.jpg", "group_couple_01.jpg"]
# Clean photos, including the ones whose own structures come closest to a fringe (knitted cuffs,
# tie stripes, dark outlines, a matting composite).
CLEAN_PHOTOS = [
    "hand_gloves_01.jpg",
    "gen_clean_01.jpg",
    "face_biden_02.jpg",
    "body_cello_01.jpg",
    "face_harington_02.jpg",
    "body_skier_01.jpg",
    "body_bus_01.jpg",
    "hand_face_01.jpg",
    "group_cardgame_01.jpg",
    "face_dfC_03.jpg",
    "composite_clean_lemur_01.png",
    "hand_signing_01.jpg",
]
BOUNDARY = {
    "halo_ring_cutout": "alpha",
    "halo_ring_mask": "mask",
    "halo_ring_single": "edges",
    "halo_ring": "edges",
}


@pytest.fixture(scope="module")
def params() -> HaloParams:
    with open(DEFAULT_POLICY_PATH, "rb") as handle:
        return HaloParams.model_validate(tomllib.load(handle)["checks"]["edge_halo"])


def run(case: defects.Case, params: HaloParams):
    return check_edge_halo(CheckContext.from_arrays(case.candidate, case.source, case.mask), params)


def ring_pixels(image: np.ndarray, width: int = 3) -> np.ndarray:
    """Where the injector paints: the band just outside the person, at candidate resolution."""
    subject = defects.person_mask(image)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    return cv2.dilate(subject.astype(np.uint8), disk).astype(bool) & ~subject


def assert_on_ring(finding, image: np.ndarray) -> None:
    """The finding's mask and box lie on the painted ring."""
    ring = ring_pixels(image)
    assert finding.mask is not None and finding.mask.shape == ring.shape
    near = cv2.dilate(ring.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    on_ring = float(near[finding.mask].mean())
    assert on_ring > 0.5, f"only {on_ring:.0%} of the reported ring lies on the painted ring"
    x0, y0, x1, y1 = finding.region.box
    ys, xs = np.nonzero(ring)
    assert x0 <= np.percentile(xs, 50) <= x1 and y0 <= np.percentile(ys, 50) <= y1


def backdrop_matte(image: np.ndarray) -> np.ndarray:
    """Soft matte of a subject composited on a flat backdrop (the lemur): distance from the border colour."""
    border = np.concatenate([image[:4].reshape(-1, 3), image[:, :4].reshape(-1, 3), image[:, -4:].reshape(-1, 3)])
    distance = np.abs(image.astype(np.float32) - np.median(border, axis=0)).max(axis=2)
    return np.clip((distance - 2.0) / 30.0, 0.0, 1.0)


# ---- registration and policy ---------------------------------------------------------------


def test_registered_with_no_required_inputs():
    spec = REGISTRY.get("edge_halo")
    assert spec.requires == ()
    assert spec.kind.stage.value == "detail" and spec.kind.template == "texture-edge"


def test_policy_section_is_complete_and_checked(params):
    assert params.priority.value == "P1"
    with pytest.raises(ValueError):
        HaloParams.model_validate({**params.model_dump(), "plateau_near_px": params.band_px})


# ---- injected fringes ----------------------------------------------------------------------


@pytest.mark.parametrize("name", RING_PHOTOS)
@pytest.mark.parametrize("defect", list(BOUNDARY))
def test_bright_ring_found_from_every_boundary(name, defect, params):
    image = photo(name)
    findings = run(defects.make(defect, image, 0.8), params)
    assert len(findings) == 1, f"{defect} on {name}: no finding"
    finding = findings[0]
    assert finding.kind == "edge_halo" and finding.priority.value == "P1"
    evidence = finding.evidence
    assert evidence["polarity"] == "bright"
    assert evidence["boundary"] == BOUNDARY[defect]
    assert evidence["compared_with_source"] == (defect in ("halo_ring", "halo_ring_mask"))
    assert finding.score >= finding.threshold and finding.unit == "share of boundary length"
    assert evidence["fringe_strength"] >= params.strength_threshold
    assert evidence["bright_fraction"] > evidence["dark_fraction"]
    assert "bright fringe" in finding.message
    assert_on_ring(finding, image)


@pytest.mark.parametrize("name", ["face_obama_01.jpg", "face_dfF_01.jpg"])
@pytest.mark.parametrize("defect", ["halo_ring_cutout", "halo_ring_mask", "halo_ring"])
def test_dark_ring_found(name, defect, params):
    image = photo(name)
    findings = run(defects.make(defect, image, -0.8), params)
    assert len(findings) == 1, f"{defect} on {name}: no finding"
    assert findings[0].evidence["polarity"] == "dark"
    assert findings[0].evidence["boundary"] == BOUNDARY[defect]
    assert "dark fringe" in findings[0].message
    assert_on_ring(findings[0], image)


def test_against_the_source_only_the_growth_counts(params):
    image = photo("face_obama_04.jpg")
    with_source = run(defects.make("halo_ring", image, 0.8), params)[0].evidence
    alone = run(defects.make("halo_ring_single", image, 0.8), params)[0].evidence
    assert with_source["fringe_growth"] >= params.growth_threshold
    assert with_source["fringe_growth"] <= with_source["fringe_strength"] + 1e-6
    assert "fringe_growth" not in alone


def test_stronger_ring_scores_higher(params):
    image = photo("face_dfE_01.jpg")
    weak, strong = (run(defects.make("halo_ring_mask", image, a), params)[0] for a in (0.5, 0.9))
    assert strong.evidence["fringe_growth"] > weak.evidence["fringe_growth"]
    assert strong.score >= weak.score


def tight_matte(image: np.ndarray) -> np.ndarray:
    """The person's matte pulled 3 px inside the segmentation, so no old background is kept."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    return cv2.erode(defects.person_mask(image).astype(np.uint8), kernel) * 255


@pytest.mark.parametrize("name", ["face_dfF_02.jpg", "face_dfC_03.jpg"])
def test_loose_matte_keeps_a_rim_of_white_backdrop(name, params):
    """No paint at all: a matte 3 px too wide on a white studio backdrop leaves a real white fringe,
    while a tight matte of the same photo is clean."""
    image = photo(name)
    loose = run(defects.make("halo_ring_cutout", image, 0.0), params)
    assert len(loose) == 1 and loose[0].evidence["polarity"] == "bright"
    assert loose[0].evidence["boundary"] == "alpha"
    assert run(defects.Case(np.dstack([image, tight_matte(image)])), params) == []


# ---- clean inputs --------------------------------------------------------------------------


@pytest.mark.parametrize("name", CLEAN_PHOTOS)
def test_clean_photos_give_no_finding(name, params):
    image = photo(name)
    reencoded = defects.jpeg(image, 85, 0.9)
    assert run(defects.Case(image), params) == [], "single image"
    assert run(defects.clean_reencode(image), params) == [], "re-encode against the source"
    assert run(defects.Case(reencoded), params) == [], "re-encode alone"
    assert run(defects.Case(np.dstack([image, tight_matte(image)])), params) == [], "tight cut-out"


@pytest.mark.parametrize("name", ["face_harington_02.jpg", "face_biden_01.jpg", "body_cello_01.jpg"])
def test_clean_edit_mask_boundary_gives_no_finding(name, params):
    """A background-replacement mask around the person, no fringe: with and without the source."""
    image = photo(name)
    subject = defects.person_mask(image)
    assert run(defects.Case(defects.jpeg(image, 85, 0.9), image, ~subject), params) == []
    assert run(defects.Case(defects.jpeg(image, 85), None, ~subject), params) == []


def test_clean_matting_composite_as_cutout_and_mask(params):
    lemur = photo("composite_clean_lemur_01.png")
    matte = backdrop_matte(lemur)
    cutout = np.dstack([lemur, np.rint(matte * 255).astype(np.uint8)])
    ctx = CheckContext.from_arrays(cutout)
    assert measure_context(ctx, params).boundary == "alpha"
    assert check_edge_halo(ctx, params) == []
    assert run(defects.Case(lemur, None, matte > 0.5), params) == []


def test_dark_ring_on_the_matting_composite_cutout(params):
    lemur = photo("composite_clean_lemur_01.png")
    subject = backdrop_matte(lemur) > 0.5
    painted, grown = defects.paint_ring(lemur, subject, -0.8)
    findings = run(defects.Case(np.dstack([painted, grown.astype(np.uint8) * 255])), params)
    assert len(findings) == 1
    assert findings[0].evidence["polarity"] == "dark" and findings[0].evidence["boundary"] == "alpha"


def test_thin_line_on_flat_background_is_not_a_halo(params):
    """White 2-px lines on the composite's flat backdrop: bright bumps, but no boundary between regions."""
    lemur = photo("composite_clean_lemur_01.png")
    lined = lemur.copy()
    for x in (40, 80, 600, 640):
        cv2.line(lined, (x, 20), (x, 420), (255, 255, 255), 2)
    cv2.rectangle(lined, (20, 15), (660, 30), (255, 255, 255), 2)
    assert run(defects.Case(lined), params) == []


def test_flat_image_is_skipped(params):
    flat = photo("composite_clean_lemur_01.png")[:, :120].copy()
    with pytest.raises(CheckSkipped):
        check_edge_halo(CheckContext.from_arrays(flat), params)
