"""identity_drift and the face embedders, on the shared photos with their manifest labels.

Calibration: every pair of single-face portraits that the manifest's ``person_id`` allows (15 pairs of
the same person in two different photos, 195 pairs of different people) must be told apart by the
policy's threshold; the distributions are printed (``pytest -s``).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from fixloop.checks import models
from fixloop.checks.analyses import Face, faces
from fixloop.checks.context import CheckContext
from fixloop.checks.engine import run_checks
from fixloop.checks.identity import (
    ARCFACE_TEMPLATE,
    MEDIAPIPE_ALIGN_POINTS,
    MEDIAPIPE_ARCFACE_TEMPLATE,
    ArcFaceEmbedder,
    DlibEmbedder,
    align_face,
    embedded_faces,
    similarity_matrix,
)
from fixloop.checks.policy import load_policy
from tests import defects
from tests.conftest import manifest, photo, photo_names


def run(ctx, policy, name="identity_drift"):
    report = run_checks(ctx, policy, names=[name])
    return report.checks[0], report.findings


@pytest.fixture(scope="module")
def dlib_embedder(policy):
    return DlibEmbedder(policy.params("identity_drift").dlib_threshold)


@pytest.fixture(scope="module")
def portraits(dlib_embedder):
    """file -> (person_id, unit vector, face width px) for the 21 single-face portraits."""
    out = {}
    for name in photo_names("face"):
        image = CheckContext.from_arrays(photo(name)).candidate
        found = embedded_faces(image, dlib_embedder)
        assert len(found) == 1, f"{name}: {len(found)} faces"
        out[name] = (manifest()[name]["person_id"], found[0].vector, found[0].width)
    return out


def _pairs(embedded: dict) -> tuple[list[float], list[float]]:
    same, different = [], []
    for a, b in itertools.combinations(sorted(embedded), 2):
        distance = float(np.linalg.norm(embedded[a][1] - embedded[b][1]))
        (same if embedded[a][0] == embedded[b][0] else different).append(distance)
    return same, different


def test_calibration_every_labelled_pair(portraits, dlib_embedder):
    same, different = _pairs(portraits)
    assert (len(same), len(different)) == (15, 195)
    threshold = dlib_embedder.threshold
    print(f"\ndlib (unit-length descriptors, Euclidean), threshold {threshold}:"
          f"\n  same person, different photos ({len(same)}): min {min(same):.3f} mean {np.mean(same):.3f} max {max(same):.3f}"
          f"\n  different people ({len(different)}): min {min(different):.3f} mean {np.mean(different):.3f} max {max(different):.3f}"
          f"\n  margin: {threshold - max(same):.3f} below the threshold, {min(different) - threshold:.3f} above")
    assert all(dlib_embedder.same(d) for d in same), max(same)
    assert not any(dlib_embedder.same(d) for d in different), min(different)
    # the threshold keeps a margin on both sides, not just a hair's breadth
    assert threshold - max(same) >= 0.03 and min(different) - threshold >= 0.06


def test_calibration_group_faces_against_portraits(portraits, dlib_embedder):
    """The faces of the two labelled group photos (89 to 173 px wide) against every portrait."""
    same, different = [], []
    for name in ["group_obama_biden_01.jpg", "group_leslie_harington_01.jpg"]:
        people = manifest()[name]["person_id"].split(";")  # left to right
        found = sorted(embedded_faces(CheckContext.from_arrays(photo(name)).candidate, dlib_embedder),
                       key=lambda f: f.centre[0])
        assert len(found) == len(people)
        for person, face in zip(people, found):
            for other, vector, _ in portraits.values():
                (same if other == person else different).append(float(np.linalg.norm(face.vector - vector)))
    print(f"\ngroup faces vs portraits: same ({len(same)}) max {max(same):.3f} mean {np.mean(same):.3f}; "
          f"different ({len(different)}) min {min(different):.3f} mean {np.mean(different):.3f}")
    assert len(same) == 11 and len(different) == 73
    assert all(dlib_embedder.same(d) for d in same)
    assert not any(dlib_embedder.same(d) for d in different)


def test_embeddings_are_unit_vectors_and_stable_under_honest_edits(dlib_embedder):
    """Re-encoding, 10 % smaller, a darker exposure: the same face stays far inside the threshold."""
    image = photo("face_obama_01.jpg")
    reference = embedded_faces(CheckContext.from_arrays(image).candidate, dlib_embedder)[0].vector
    assert abs(np.linalg.norm(reference) - 1) < 1e-5 and reference.shape == (128,)
    for edited in [defects.jpeg(image, 70), defects.jpeg(image, 85, 0.9),
                   np.clip(image.astype(np.float32) * 0.7, 0, 255).astype(np.uint8)]:
        vector = embedded_faces(CheckContext.from_arrays(edited).candidate, dlib_embedder)[0].vector
        assert np.linalg.norm(vector - reference) < 0.5 * dlib_embedder.threshold


# ---- identity_drift --------------------------------------------------------------------------


def test_another_person_against_a_reference_is_found(policy):
    candidate = photo("face_biden_01.jpg")
    ctx = CheckContext.from_arrays(candidate, references=[photo("face_obama_01.jpg"), photo("face_obama_04.jpg")])
    run_, findings = run(ctx, policy)
    assert run_.status.value == "ok" and len(findings) == 1
    finding = findings[0]
    assert finding.kind == "identity_drift" and finding.priority.value == "P0" and finding.stage.value == "detail"
    assert finding.score > finding.threshold == policy.params("identity_drift").dlib_threshold
    assert finding.evidence["basis"] == "references" and finding.evidence["embedder"] == "dlib"
    assert "reference" in finding.message
    # region = the face box (MediaPipe finds it at x 308..552, y 164..408 of this 704 x 1600 photo)
    x0, y0, x1, y1 = finding.region.box
    assert abs(x0 - 308) < 15 and abs(x1 - 552) < 15 and abs(y0 - 164) < 15 and abs(y1 - 408) < 15
    # repair mask: the face plus hairline, chin and ears, at the candidate's resolution
    assert finding.mask.shape == candidate.shape[:2]
    ys, xs = np.nonzero(finding.mask)
    assert xs.min() < x0 - 40 and xs.max() > x1 + 40 and ys.min() < y0 - 80 and ys.max() > y1 + 30
    assert finding.mask[(y0 + y1) // 2, (x0 + x1) // 2]


def test_same_person_in_other_photos_passes(policy):
    ctx = CheckContext.from_arrays(photo("face_obama_04.jpg"),
                                   references=[photo("face_obama_01.jpg"), photo("face_obama_02.jpg")])
    run_, findings = run(ctx, policy)
    assert run_.status.value == "ok" and findings == []


def test_face_replaced_against_the_source_is_found(policy):
    """The source's face replaced by another person's, aligned and colour-matched (source mode, no reference)."""
    source = photo("face_obama_01.jpg")
    donor = photo("face_dfE_01.jpg")
    (box, points), = defects.face_keypoints(source)
    (_, donor_points), = defects.face_keypoints(donor)
    candidate = defects.jpeg(defects.transplant_face(source, donor, donor_points, points, box), 90)
    run_, findings = run(CheckContext.from_arrays(candidate, source), policy)
    assert run_.status.value == "ok" and len(findings) == 1
    assert findings[0].evidence["basis"] == "source" and findings[0].evidence["paired_by"] == "position"
    assert findings[0].score > 0.42

    honest = defects.make("exposure", source, -0.3).candidate  # darker, re-encoded: same person
    run_, findings = run(CheckContext.from_arrays(honest, source), policy)
    assert run_.status.value == "ok" and findings == []


@pytest.mark.parametrize("group", ["group_obama_biden_01.jpg", "group_leslie_harington_01.jpg"])
def test_group_photo_untouched_passes_and_a_replaced_face_is_found(policy, group):
    image = photo(group)
    run_, findings = run(CheckContext.from_arrays(defects.jpeg(image, 85, 0.9), image), policy)
    assert run_.status.value == "ok" and findings == []
    case = defects.make("face_duplicate", image)  # the right person now has the left person's face
    run_, findings = run(CheckContext.from_arrays(case.candidate, case.source), policy)
    assert run_.status.value == "ok" and len(findings) == 1
    assert findings[0].message.startswith("The face on the right no longer looks like the person on the right")


def test_no_face_in_the_candidate_is_skipped_not_passed(policy):
    blank = np.full((480, 640, 3), 128, np.uint8)
    run_, _ = run(CheckContext.from_arrays(blank, references=[photo("face_obama_01.jpg")]), policy)
    assert run_.status.value == "skipped" and "no face found in the candidate" in run_.reason


def test_no_face_in_the_source_or_reference_is_skipped(policy):
    landscape = photo("composite_clean_lemur_01.png")
    run_, _ = run(CheckContext.from_arrays(landscape, landscape), policy)
    assert run_.status.value == "skipped" and "no face found in the source" in run_.reason
    run_, _ = run(CheckContext.from_arrays(photo("face_obama_01.jpg"), references=[landscape]), policy)
    assert run_.status.value == "skipped" and "no face found in the reference" in run_.reason


def test_without_source_or_reference_is_skipped(policy):
    run_, _ = run(CheckContext.from_arrays(photo("face_obama_01.jpg")), policy)
    assert run_.status.value == "skipped" and "--reference" in run_.reason and "--source" in run_.reason


def test_faces_too_small_are_skipped(policy):
    image = photo("face_obama_01.jpg")  # face 287 px wide; at 1/9 it is about 32 px, under min_face_px
    small = cv2.resize(image, None, fx=1 / 9, fy=1 / 9, interpolation=cv2.INTER_AREA)
    run_, _ = run(CheckContext.from_arrays(small, references=[image]), policy)
    assert run_.status.value == "skipped" and "narrower than 40 px" in run_.reason


def test_mediapipe_keypoints_fit_the_arcface_template():
    """The 4-point template (eyes, nose, mouth centre) fits MediaPipe's keypoints on every portrait within
    a few pixels of the 112 px crop: the alignment the ArcFace embedder relies on."""
    residuals = []
    for name in photo_names("face"):
        face = faces(CheckContext.from_arrays(photo(name)).candidate)[0]
        points = face.keypoints[list(MEDIAPIPE_ALIGN_POINTS)].astype(np.float64)
        matrix = similarity_matrix(points, MEDIAPIPE_ARCFACE_TEMPLATE)
        mapped = points @ matrix[:, :2].T + matrix[:, 2]
        residuals.append(float(np.linalg.norm(mapped - MEDIAPIPE_ARCFACE_TEMPLATE, axis=1).mean()))
    print(f"\nArcFace alignment residual (px of 112): mean {np.mean(residuals):.2f} max {max(residuals):.2f}")
    assert np.mean(residuals) < 3.0 and max(residuals) < 6.0


def test_similarity_matrix_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ (scale * rotation).T + shift
    matrix = similarity_matrix(src, dst)
    assert np.allclose(matrix[:, :2], scale * rotation, atol=1e-9) and np.allclose(matrix[:, 2], shift, atol=1e-9)


# ---- InsightFace ArcFace: the loading path, with a tiny ArcFace-shaped model built here -------------


def build_arcface_like(path: Path, mxnet_style: bool = False, seed: int = 0) -> np.ndarray:
    """An ONNX model shaped like ArcFace (input 1 x 3 x 112 x 112 float, output 1 x 512): the per-channel
    mean of the crop times a fixed 3 x 512 matrix. The MXNet-style variant starts with Sub and Mul nodes
    that normalise raw 0..255 input itself, as InsightFace's old MXNet exports do. Returns the matrix."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(seed).normal(size=(3, 512)).astype(np.float32)
    nodes, inits, first = [], [numpy_helper.from_array(weight, "weight")], "data"
    if mxnet_style:
        inits += [numpy_helper.from_array(np.array(127.5, np.float32), "mean"),
                  numpy_helper.from_array(np.array(1 / 127.5, np.float32), "scale")]
        nodes += [helper.make_node("Sub", ["data", "mean"], ["centred"], name="_minus0"),
                  helper.make_node("Mul", ["centred", "scale"], ["normalised"], name="_mul0")]
        first = "normalised"
    nodes += [helper.make_node("GlobalAveragePool", [first], ["pooled"], name="pool"),
              helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
              helper.make_node("MatMul", ["flat", "weight"], ["fc1"], name="fc")]
    graph = helper.make_graph(nodes, "arcface_like",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 112, 112])],
                              [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 512])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return weight


def _template_face(offset=(100.0, 50.0), scale=2.0) -> Face:
    """A face whose keypoints sit exactly on the template, 2x larger and shifted: its crop is the 224 px
    square at ``offset``."""
    points = MEDIAPIPE_ARCFACE_TEMPLATE * scale + np.array(offset)
    keypoints = np.vstack([points, points[:2] + [[-40, 0], [40, 0]]]).astype(np.float32)  # + two 'ears'
    box = np.array([offset[0], offset[1], offset[0] + 112 * scale, offset[1] + 112 * scale], np.float32)
    return Face(box=box, score=1.0, keypoints=keypoints)


def test_arcface_loading_alignment_and_normalisation(tmp_path):
    """The crop is the aligned face in RGB order, normalised as InsightFace does for each export style."""
    weight = build_arcface_like(tmp_path / "w600k_r50.onnx")
    build_arcface_like(tmp_path / "mxnet.onnx", mxnet_style=True)
    image = np.zeros((400, 500, 3), np.uint8)
    image[...] = (0, 0, 255)  # blue everywhere ...
    image[50:274, 100:324] = (255, 0, 0)  # ... but a red square exactly where the aligned crop lies
    analysis = CheckContext.from_arrays(image).candidate
    face = _template_face()
    embedder = ArcFaceEmbedder(0.3, str(tmp_path))  # a folder holding w600k_r50.onnx
    assert embedder.model_path == tmp_path / "w600k_r50.onnx"
    crop = embedder.crops(analysis, [face])[0]
    assert crop.shape == (112, 112, 3)
    assert (crop[2:-2, 2:-2] == (255, 0, 0)).all()  # red, in RGB order, filling the crop
    vector = embedder.embed(analysis, [face])[0]
    expected = np.array([1.0, -1.0, -1.0]) @ weight  # (255 - 127.5) / 127.5 = 1, (0 - 127.5) / 127.5 = -1
    assert np.allclose(vector, expected / np.linalg.norm(expected), atol=2e-3)
    # the MXNet-style export gets raw pixels and normalises them itself: the same vector
    mxnet = ArcFaceEmbedder(0.3, str(tmp_path / "mxnet.onnx"))
    assert np.allclose(mxnet.embed(analysis, [face])[0], vector, atol=2e-3)
    assert embedder.same(float(vector @ vector)) and not embedder.same(float(vector @ -vector))


def test_arcface_embedder_runs_the_checks_on_real_photos(tmp_path, monkeypatch):
    """policy embedder = "insightface", the model found through FIXLOOP_INSIGHTFACE_MODEL: both face checks
    run end to end on real photos (the tiny model's verdicts mean nothing; that they run does)."""
    build_arcface_like(tmp_path / "tiny.onnx")
    monkeypatch.setenv(models.INSIGHTFACE_ENV, str(tmp_path / "tiny.onnx"))
    (tmp_path / "policy.toml").write_text('[checks.identity_drift]\nembedder = "insightface"\n'
                                          '[checks.subjects_swapped]\nembedder = "insightface"\n')
    policy = load_policy(tmp_path / "policy.toml")
    group = photo("group_obama_biden_01.jpg")
    ctx = CheckContext.from_arrays(defects.jpeg(group, 90), group, references=[photo("face_obama_01.jpg")])
    report = run_checks(ctx, policy, names=["identity_drift", "subjects_swapped"])
    drift, swapped = report.checks
    assert drift.status.value == "ok", drift
    # the tiny model sees colour, not identity: both people may cluster into one, which skips the swap check
    # after the embeddings were computed; an error would mean the loading path failed
    assert swapped.status.value == "ok" or "fewer than two different people" in swapped.reason, swapped
    vectors = embedded_faces(ctx.candidate, ArcFaceEmbedder(0.3))
    assert len(vectors) == 2 and vectors[0].vector.shape == (512,)
    assert all(abs(np.linalg.norm(v.vector) - 1) < 1e-5 for v in vectors)
    for finding in report.findings:
        assert finding.evidence["embedder"] == "insightface" and "cosine" in finding.unit


def test_missing_arcface_pack_is_an_error_with_the_install_step(tmp_path, monkeypatch):
    """Asked for InsightFace without its pack, the check errors (never a silent pass) with one clear line."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(models.INSIGHTFACE_ENV, raising=False)
    monkeypatch.delenv(models.INSIGHTFACE_HOME_ENV, raising=False)
    (tmp_path / "policy.toml").write_text('[checks.identity_drift]\nembedder = "insightface"\n')
    policy = load_policy(tmp_path / "policy.toml")
    ctx = CheckContext.from_arrays(photo("face_obama_04.jpg"), references=[photo("face_obama_01.jpg")])
    report = run_checks(ctx, policy, names=["identity_drift"])
    assert report.verdict == "error" and report.checks[0].status.value == "error"
    error = report.checks[0].error
    assert "ModelMissing" in error and "w600k_r50.onnx not found" in error
    assert str(tmp_path / ".insightface" / "models" / "buffalo_l" / "w600k_r50.onnx") in error
    assert "FaceAnalysis(name='buffalo_l').prepare(ctx_id=-1)" in error


def test_arcface_template_is_insightfaces():
    """The standard 112 px ArcFace destination points (InsightFace face_align.arcface_dst)."""
    assert ARCFACE_TEMPLATE.shape == (5, 2)
    assert np.allclose(ARCFACE_TEMPLATE[[0, 1]], [[38.2946, 51.6963], [73.5318, 51.5014]])
    assert np.allclose(MEDIAPIPE_ARCFACE_TEMPLATE[3, 0], (41.5493 + 70.7299) / 2)
    crop = align_face(np.zeros((10, 10, 3), np.uint8), MEDIAPIPE_ARCFACE_TEMPLATE, MEDIAPIPE_ARCFACE_TEMPLATE)
    assert crop.shape == (112, 112, 3)


def test_two_portrait_references_against_a_group_photo(policy):
    """Two single-face references (two people, no positions): paired with the candidate's faces by identity."""
    references = [photo("face_obama_01.jpg"), photo("face_biden_02.jpg")]
    group = photo("group_obama_biden_01.jpg")
    run_, findings = run(CheckContext.from_arrays(defects.jpeg(group, 90), references=references), policy)
    assert run_.status.value == "ok" and findings == []
    case = defects.make("face_duplicate", group)  # Obama's face on Biden too
    run_, findings = run(CheckContext.from_arrays(case.candidate, references=references), policy)
    assert run_.status.value == "ok" and len(findings) == 1
    assert findings[0].evidence["paired_by"] == "identity"
    assert findings[0].evidence["compared_with"] == "the person in reference 2"
    # with the source as well, the references' people are placed where they stand in the source
    run_, findings = run(CheckContext.from_arrays(case.candidate, group, references=references), policy)
    assert len(findings) == 1 and findings[0].evidence["paired_by"] == "position"
    assert findings[0].message.startswith("The face on the right no longer looks like the person in reference 2")


@pytest.mark.parametrize("name", ["group_obama_biden_01.jpg", "group_leslie_harington_01.jpg"])
def test_a_mirrored_photo_compares_each_face_with_its_own_person(policy, name):
    """The source's faces are carried into the candidate's frame by the registration: after a mirror
    each face pairs with the same person, close to where the mirror put it; nothing is reported."""
    from fixloop.checks.identity import get_embedder, measure_identity

    image = photo(name)
    ctx = CheckContext.from_arrays(defects.flip(image).candidate, image)
    report = run_checks(ctx, policy, names=["identity_drift"])
    assert report.checks[0].status.value == "ok" and report.findings == []
    embedder = get_embedder(policy.params("identity_drift"))
    measurement = measure_identity(ctx, embedder, policy.params("identity_drift"))
    assert len(measurement.comparisons) >= 2 and not measurement.unpaired
    assert all(c.same and c.shift < 0.02 for c in measurement.comparisons), measurement.comparisons


# ---- pasted faces (issue 13, part 3; builders of tests/face_defects.py) -------------------------


def test_a_pasted_face_the_detector_no_longer_finds_is_found_again(policy):
    """gen_body_extra_arm_01 with face_harington_03 pasted over its face: the full-range detector finds
    no face in the candidate (the check skipped); searched again around the source's face, it is found
    and reported."""
    from tests import face_defects

    case = face_defects.face_paste_other(photo("gen_body_extra_arm_01.jpg"), 0)
    assert face_defects.donors_other("gen_body_extra_arm_01.jpg")[0] == "face_harington_03.jpg"
    assert not faces(CheckContext.from_arrays(case.candidate).candidate)
    run_, findings = run(CheckContext.from_arrays(case.candidate, case.source), policy)
    assert run_.status.value == "ok" and len(findings) == 1, run_
    assert findings[0].score > findings[0].threshold


def test_the_same_persons_face_from_another_photo_pasted_passes(policy):
    """Identity kept: Obama's face from another portrait pasted over his face raises nothing."""
    from tests import face_defects

    for name in ["face_obama_01.jpg", "face_harington_02.jpg"]:
        case = face_defects.face_paste_same(photo(name), 0)
        run_, findings = run(CheckContext.from_arrays(case.candidate, case.source), policy)
        assert run_.status.value == "ok" and findings == [], (name, findings)


def test_a_removed_face_is_not_found_again(policy):
    """Where the edit removed the face (filled with the surrounding colour), the search around the
    source's face finds nothing: the check skips as before, it does not report drift."""
    source = photo("face_obama_01.jpg")
    (box, _), = defects.face_keypoints(source)
    x0, y0, x1, y1 = (int(v) for v in box)
    candidate = source.copy()
    candidate[max(0, y0 - 60):y1 + 60, max(0, x0 - 60):x1 + 60] = source[5:10, 5:10].reshape(-1, 3).mean(axis=0)
    run_, findings = run(CheckContext.from_arrays(candidate, source), policy)
    assert run_.status.value == "skipped" and findings == []


@pytest.mark.parametrize("name", ["face_obama_04.jpg", "face_leslie_02.jpg"])
def test_small_faces_are_compared_against_the_source(policy, name):
    """Faces 30 px wide (under min_face_px = 40) are compared against the source (source_min_face_px =
    24): another person's face pasted is found, the same person's face pasted from another photo and the
    clean variants raise nothing."""
    from tests import face_defects

    image = photo(name)
    case = face_defects.face_paste_other_small(image, 0)
    run_, findings = run(CheckContext.from_arrays(case.candidate, case.source), policy)
    assert run_.status.value == "ok" and len(findings) == 1, run_
    assert 24 <= findings[0].evidence["face_width_px"] < 40
    for case in [face_defects.face_paste_same_small(image, 0), *(face_defects.face_clean_small(image, k)
                                                               for k in range(3))]:
        run_, findings = run(CheckContext.from_arrays(case.candidate, case.source), policy)
        assert run_.status.value == "ok" and findings == [], findings


# ---- faces the edit left alone are not embedded ----------------------------------------------------


def _face_findings(case, policy, **kwargs):
    ctx = CheckContext.from_arrays(case.candidate, case.source, case.mask)
    report = run_checks(ctx, policy, names=["identity_drift", "subjects_swapped"], **kwargs)
    return ctx, [(f.kind, f.region.box, round(f.score, 6)) for f in report.findings], \
        {c.name: c.status.value for c in report.checks}


@pytest.mark.parametrize("name", ["face_obama_02.jpg", "group_couple_01.jpg", "body_women_01.jpg"])
def test_faces_the_edit_left_alone_are_not_embedded_and_nothing_changes(name, policy, monkeypatch):
    """Re-lit, re-encoded or edited elsewhere: every face is the source's own, so neither face check
    embeds one (dlib's descriptor is most of a warm check's time); an exchanged or pasted face still
    goes the full way. Either way the findings are those of the full path."""
    from fixloop.checks import identity, swap
    from tests import face_defects

    image = photo(name)
    kept_cases = [face_defects.face_clean_ev(image, 0.5), face_defects.face_clean_jpeg(image, 80.0),
                  defects.edit_inside_mask(image)]
    changed_cases = [face_defects.face_paste_other(image)]
    if len(face_defects.face_pairs(image)) > 0:
        changed_cases.append(face_defects.face_swap_pair(image))
    embedded = []
    original = identity.embedded_faces
    monkeypatch.setattr(identity, "embedded_faces", lambda image, embedder: embedded.append(1) or original(image, embedder))
    monkeypatch.setattr(swap, "embedded_faces", identity.embedded_faces)
    fast = []
    for i, case in enumerate(kept_cases + changed_cases):
        kept = i < len(kept_cases)
        embedded.clear()
        ctx, findings, statuses = _face_findings(case, policy)
        assert identity.every_face_kept(ctx, policy.params("identity_drift"), 24) == kept
        assert (not embedded) == kept
        fast.append((findings, statuses))
    monkeypatch.setattr(identity, "every_face_kept", lambda *args, **kwargs: False)
    monkeypatch.setattr(swap, "every_face_kept", lambda *args, **kwargs: False)
    full = [_face_findings(case, policy)[1:] for case in kept_cases + changed_cases]
    assert fast == full
    assert any(findings for findings, _ in fast[len(kept_cases):])  # the paste / exchange is still found
