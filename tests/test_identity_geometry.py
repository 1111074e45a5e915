"""identity_drift's second signal: MediaPipe Face Mesh landmark geometry where dlib is unsure (issue 13, part 3).

A face the edit changed whose dlib distance lies between ``geometry_from_distance`` and the threshold is
also compared by the geometry of its 468 landmarks against the source face's (RMS residual after a
similarity fit, in inter-ocular distances). Cases from ``tests/face_defects.py`` on photos of the fit half
of ``bench.accuracy``, where the two thresholds were fitted.
"""

from __future__ import annotations

import numpy as np
import pytest

from fixloop.checks import identity
from fixloop.checks.context import CheckContext
from fixloop.checks.engine import run_checks
from tests import face_defects
from tests.conftest import photo


def run(case, policy):
    ctx = CheckContext.from_arrays(case.candidate, case.source)
    report = run_checks(ctx, policy, names=["identity_drift"])
    return ctx, report.checks[0], report.findings


def _comparison(ctx, policy):
    params = policy.params("identity_drift")
    embedder = identity.get_embedder(params)
    measurement = identity.measure_identity(ctx, embedder, params)
    assert len(measurement.comparisons) == 1
    return measurement.comparisons[0], embedder, params


def test_another_face_dlib_calls_the_same_person_is_found_by_its_geometry(policy):
    """gen_body_extra_arm_01 with another person's face pasted, 30 px wide: dlib reads 0.392, under its
    0.42; the landmarks no longer fit the source's face (a residual of 0.39 inter-ocular distances)."""
    ctx, run_, findings = run(face_defects.face_paste_other_small(photo("gen_body_extra_arm_01.jpg"), 0), policy)
    assert run_.status.value == "ok" and len(findings) == 1, findings
    finding = findings[0]
    params = policy.params("identity_drift")
    assert finding.evidence["second_signal"] == "face_mesh_geometry"
    assert params.geometry_from_distance <= finding.evidence["all_scores"][0] <= params.dlib_threshold
    assert finding.score == finding.evidence["geometry_residual"] > params.geometry_residual
    assert finding.threshold == params.geometry_residual and "inter-ocular" in finding.unit
    assert "landmark geometry no longer fits" in finding.message and finding.mask.any()


def test_the_same_persons_face_in_the_band_is_not_reported(policy):
    """face_obama_04 with the same person's face from another photo pasted, 30 px wide: dlib reads 0.417,
    inside the band, and the geometry (residual 0.08) agrees with the source: nothing is reported."""
    case = face_defects.face_paste_same_small(photo("face_obama_04.jpg"), 0)
    ctx, run_, findings = run(case, policy)
    assert run_.status.value == "ok" and findings == [], findings
    comparison, embedder, params = _comparison(ctx, policy)
    assert comparison.same and comparison.score >= params.geometry_from_distance
    residual = identity.geometry_check(ctx, comparison, embedder, params)
    assert residual is not None and residual < params.geometry_residual


def test_geometry_is_read_only_where_dlib_is_unsure(policy, monkeypatch):
    """No mesh is run for a face dlib is sure about (another person at full size, 0.48 and more on the
    fit half), nor for the source's own face re-lit or re-encoded (not even embedded)."""
    meshed = []
    original = identity.face_mesh
    monkeypatch.setattr(identity, "face_mesh", lambda image, box: meshed.append(1) or original(image, box))
    image = photo("face_dfC_03.jpg")
    for case, found in ((face_defects.face_paste_other(image, 0), 1), (face_defects.face_clean_ev(image, 0.5), 0),
                        (face_defects.face_clean_jpeg(image, 80.0), 0)):
        _, run_, findings = run(case, policy)
        assert run_.status.value == "ok" and len(findings) == found
        assert all("second_signal" not in f.evidence for f in findings)
    assert meshed == []


def test_geometry_residual_ignores_a_similarity_and_reads_a_change_of_shape():
    """The residual is that of the best rotation, scale and shift: a mesh moved, turned and zoomed reads
    0; the same mesh with its lower half stretched reads in inter-ocular distances."""
    ctx = CheckContext.from_arrays(photo("face_dfC_03.jpg"))
    face = max(identity.faces(ctx.candidate), key=lambda f: f.box[2] - f.box[0])
    mesh = identity.face_mesh(ctx.candidate, face.box)
    assert mesh is not None and mesh.shape == (468, 2)
    angle = np.deg2rad(12)
    rotation = 1.7 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = mesh @ rotation.T + np.array([40.0, -25.0])
    assert identity.geometry_residual(mesh, moved) < 1e-6
    stretched = mesh.copy()
    centre_y = mesh[:, 1].mean()
    stretched[:, 1] = np.where(mesh[:, 1] > centre_y, centre_y + 1.3 * (mesh[:, 1] - centre_y), mesh[:, 1])
    assert 0.05 < identity.geometry_residual(mesh, stretched) < 0.5


def test_the_mesh_model_is_loaded_once(policy):
    for _ in range(2):
        run(face_defects.face_paste_other_small(photo("gen_body_extra_arm_01.jpg"), 0), policy)
    assert identity._face_mesh_model.cache_info().misses == 1


@pytest.mark.parametrize("name", ["body_cello_01.jpg"])
def test_same_person_in_another_pose_reads_a_large_residual(name):
    """Why the geometry is read only where dlib is unsure: the source's own face mirrored and pasted
    over it (the same person, a turned face now looking the other way) reads a residual of 0.46, far above
    geometry_residual. Face Mesh geometry measures pose as much as identity."""
    from bench.accuracy_faces import face_paste_own_mirrored

    case = face_paste_own_mirrored(photo(name), 0)
    ctx = CheckContext.from_arrays(case.candidate, case.source)
    source = max(identity.faces(ctx.source), key=lambda f: f.box[2] - f.box[0])
    candidate = max(identity.faces(ctx.candidate), key=lambda f: f.box[2] - f.box[0])
    a, b = identity.face_mesh(ctx.source, source.box), identity.face_mesh(ctx.candidate, candidate.box)
    assert a is not None and b is not None
    from fixloop.checks.policy import load_policy

    assert identity.geometry_residual(a, b) > 2 * load_policy().params("identity_drift").geometry_residual
