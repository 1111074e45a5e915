"""subjects_swapped on the labelled group photos: faces exchanged, one face duplicated, the untouched photo."""

from __future__ import annotations

import numpy as np
import pytest

from fixloop.checks.context import CheckContext
from fixloop.checks.engine import run_checks
from tests import defects
from tests.conftest import photo

GROUPS = ["group_obama_biden_01.jpg", "group_leslie_harington_01.jpg"]


def run(ctx, policy):
    report = run_checks(ctx, policy, names=["subjects_swapped"])
    return report.checks[0], report.findings


def _blobs(mask: np.ndarray) -> int:
    import cv2

    return cv2.connectedComponents(mask.astype(np.uint8))[0] - 1


@pytest.mark.parametrize("group", GROUPS)
def test_untouched_group_photo_reencoded_passes(policy, group):
    image = photo(group)
    run_, findings = run(CheckContext.from_arrays(defects.jpeg(image, 85, 0.9), image), policy)
    assert run_.status.value == "ok" and findings == []


@pytest.mark.parametrize("group", GROUPS)
def test_exchanged_faces_are_found(policy, group):
    case = defects.make("face_swap", photo(group))
    faces = defects.face_keypoints(case.source)
    run_, findings = run(CheckContext.from_arrays(case.candidate, case.source), policy)
    assert run_.status.value == "ok" and len(findings) == 1, findings
    finding = findings[0]
    assert finding.kind == "subjects_swapped" and finding.stage.value == "structure" and finding.priority.value == "P0"
    assert finding.evidence["kind"] == "swapped"
    assert finding.message.startswith("The face on the left and the face on the right have exchanged identities")
    assert finding.score <= finding.threshold  # each face now matches the other person
    assert finding.evidence["own_score"] > finding.threshold  # ... and no longer its own
    # region spans both faces; the repair mask is the two faces (with hairline, chin, ears)
    x0, y0, x1, y1 = finding.region.box
    for box, _ in faces:
        assert x0 <= box[0] + 10 and x1 >= box[2] - 10 and y0 <= box[1] + 10 and y1 >= box[3] - 10
        assert finding.mask[int((box[1] + box[3]) / 2), int((box[0] + box[2]) / 2)]
    assert finding.mask.shape == case.candidate.shape[:2] and _blobs(finding.mask) == 2


@pytest.mark.parametrize("group", GROUPS)
def test_duplicated_face_is_found(policy, group):
    case = defects.make("face_duplicate", photo(group))
    (left, _), (right, _) = defects.face_keypoints(case.source)
    run_, findings = run(CheckContext.from_arrays(case.candidate, case.source), policy)
    assert run_.status.value == "ok" and len(findings) == 1, findings
    finding = findings[0]
    assert finding.evidence["kind"] == "duplicated"
    assert finding.message.startswith("The face on the right now looks like the person on the left in the source")
    x0, y0, x1, y1 = finding.region.box  # the right face only: the one to repair
    assert abs(x0 - right[0]) < 15 and abs(x1 - right[2]) < 15 and x0 > left[2]
    assert _blobs(finding.mask) == 1


def test_swap_against_a_group_reference_without_source(policy):
    """A reference that shows both people in one frame gives their positions."""
    group = photo("group_obama_biden_01.jpg")
    case = defects.make("face_swap", group)
    run_, findings = run(CheckContext.from_arrays(case.candidate, references=[group]), policy)
    assert run_.status.value == "ok" and len(findings) == 1 and findings[0].evidence["kind"] == "swapped"
    assert findings[0].evidence["basis"] == "references"


def test_duplicate_against_single_person_references(policy):
    """Two portraits give two identities but no positions: a duplicated identity can still be told."""
    references = [photo("face_obama_01.jpg"), photo("face_biden_02.jpg")]
    group = photo("group_obama_biden_01.jpg")
    run_, findings = run(CheckContext.from_arrays(defects.jpeg(group, 90), references=references), policy)
    assert run_.status.value == "ok" and findings == []
    case = defects.make("face_duplicate", group)  # Obama's face on both
    run_, findings = run(CheckContext.from_arrays(case.candidate, references=references), policy)
    assert run_.status.value == "ok" and len(findings) == 1
    assert findings[0].evidence["kind"] == "duplicated" and findings[0].evidence["looks_like"] == "the person in reference 1"
    assert _blobs(findings[0].mask) == 2


def test_one_person_is_skipped(policy):
    image = photo("face_obama_01.jpg")
    run_, _ = run(CheckContext.from_arrays(image, image), policy)
    assert run_.status.value == "skipped" and "fewer than two different people" in run_.reason


def test_candidate_with_one_face_is_skipped(policy):
    group = photo("group_obama_biden_01.jpg")
    crop = np.ascontiguousarray(group[:, :560])  # only the left person is left
    run_, _ = run(CheckContext.from_arrays(crop, references=[group]), policy)
    assert run_.status.value == "skipped" and "fewer than two faces" in run_.reason


def test_without_source_or_reference_is_skipped(policy):
    run_, _ = run(CheckContext.from_arrays(photo("group_obama_biden_01.jpg")), policy)
    assert run_.status.value == "skipped" and "--source" in run_.reason


@pytest.mark.parametrize("group", GROUPS)
def test_a_mirrored_group_photo_pairs_each_face_with_its_own_person(policy, group):
    """The source's faces are carried into the candidate's frame (the registration's mirror): the left
    person, now on the right, is not taken for the right person's face."""
    image = photo(group)
    run_, findings = run(CheckContext.from_arrays(defects.flip(image).candidate, image), policy)
    assert run_.status.value == "ok" and findings == []


@pytest.mark.parametrize("group", GROUPS)
def test_exchanged_faces_are_found_after_a_mirror(policy, group):
    case = defects.make("face_swap", photo(group))
    candidate = defects.flip(case.candidate).candidate
    run_, findings = run(CheckContext.from_arrays(candidate, case.source), policy)
    assert run_.status.value == "ok" and [f.evidence["kind"] for f in findings] == ["swapped"], findings
