"""The model registry: every model file the checks use is found on this machine or named with its install step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixloop.checks import models
from tests.conftest import PHOTOS


@pytest.fixture
def no_insightface(tmp_path, monkeypatch):
    """A machine without the buffalo_l pack: empty home, no InsightFace variables."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(models.INSIGHTFACE_ENV, raising=False)
    monkeypatch.delenv(models.INSIGHTFACE_HOME_ENV, raising=False)
    return tmp_path


def test_installed_models_are_found_with_their_size():
    """MediaPipe's bundled models and dlib's model files come with pip packages and are all present here."""
    for name, spec in models.MODELS.items():
        if name == "insightface_arcface":
            continue
        status = models.model_status(name)
        assert status.found, f"{name}: {status.looked}"
        assert status.path.name == spec.file
        assert status.size > 100_000, f"{name} is only {status.size} bytes"
        assert models.locate(name) == status.path


def test_mediapipe_entries_are_the_models_analyses_loads():
    """analyses.py runs pose (complexity 1), full-range faces, hands (complexity 1) and selfie segmentation 0;
    the solution graphs pick these files inside the wheel (their names are compiled into MediaPipe)."""
    root = models.package_dir("mediapipe")
    entries = {models.MODELS[n].file: models.model_status(n).path for n in models.MODELS if n.startswith("mediapipe_")}
    assert set(entries) == {"pose_detection.tflite", "pose_landmark_full.tflite",
                            "face_detection_full_range_sparse.tflite", "palm_detection_full.tflite",
                            "hand_landmark_full.tflite", "selfie_segmentation.tflite"}
    for file, path in entries.items():
        assert path is not None and path.is_relative_to(root / "modules"), file


def test_missing_arcface_names_where_it_looked_and_how_to_install(no_insightface):
    status = models.model_status("insightface_arcface")
    assert not status.found
    assert status.looked == (Path(os.environ["HOME"]) / ".insightface" / "models" / "buffalo_l" / "w600k_r50.onnx",)
    with pytest.raises(models.ModelMissing) as raised:
        models.locate("insightface_arcface")
    message = str(raised.value)
    assert "\n" not in message
    assert str(status.looked[0]) in message
    assert "insightface.app.FaceAnalysis(name='buffalo_l').prepare(ctx_id=-1)" in message
    assert models.INSIGHTFACE_ENV in message


def test_arcface_search_order(no_insightface, monkeypatch):
    """Policy path, then FIXLOOP_INSIGHTFACE_MODEL (file or folder), then $INSIGHTFACE_HOME, then ~/.insightface."""
    tmp = no_insightface
    home_pack = Path(os.environ["HOME"]) / ".insightface" / "models" / "buffalo_l"
    home_pack.mkdir(parents=True)
    (home_pack / "w600k_r50.onnx").write_bytes(b"home")
    assert models.locate("insightface_arcface") == home_pack / "w600k_r50.onnx"

    ih = tmp / "ih" / "models" / "buffalo_l"
    ih.mkdir(parents=True)
    (ih / "w600k_r50.onnx").write_bytes(b"ih")
    monkeypatch.setenv(models.INSIGHTFACE_HOME_ENV, str(tmp / "ih"))
    assert models.locate("insightface_arcface") == ih / "w600k_r50.onnx"

    folder = tmp / "pack"
    folder.mkdir()
    (folder / "w600k_r50.onnx").write_bytes(b"env")
    monkeypatch.setenv(models.INSIGHTFACE_ENV, str(folder))
    assert models.locate("insightface_arcface") == folder / "w600k_r50.onnx"

    explicit = tmp / "policy" / "arcface.onnx"
    explicit.parent.mkdir()
    explicit.write_bytes(b"policy")
    assert models.locate("insightface_arcface", str(explicit)) == explicit
    # a named file that does not exist is reported, and the search goes on
    status = models.model_status("insightface_arcface", str(tmp / "nowhere.onnx"))
    assert status.looked[0] == tmp / "nowhere.onnx" and status.path == folder / "w600k_r50.onnx"


def test_unknown_model_name():
    with pytest.raises(KeyError, match="known models"):
        models.locate("no_such_model")


def test_fixloop_models_lists_every_model(no_insightface):
    env = {**os.environ, "COLUMNS": "400"}
    result = subprocess.run([str(Path(sys.executable).with_name("fixloop")), "models"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in models.MODELS:
        assert name in result.stdout
    assert "missing" in result.stdout and "FaceAnalysis(name='buffalo_l')" in result.stdout
    assert "dlib_face_recognition_resnet_model_v1.dat" in result.stdout
    assert f"{len(models.MODELS) - 1} of {len(models.MODELS)} model files found" in result.stdout


QUIET_PROBE = """
import os, sys
from fixloop.checks import models
print("quieted", models.quiet_native_logs(), models.quiet_native_logs(), file=sys.stderr)
from fixloop.checks import analyses
from fixloop.checks.context import CheckContext
from fixloop.checks.images import load_image
ctx = CheckContext.build(load_image(sys.argv[1]))
analyses.pose(ctx.candidate), analyses.faces(ctx.candidate), analyses.hands(ctx.candidate)
analyses.person_mask(ctx.candidate)
print("python line", file=sys.stderr)
os.write(2, b"E0000 00:00:1.5   7 native.cc:12] a native error\\n")
os.write(2, b"I0000 00:00:1.5   7 native.cc:13] a native note\\n")
os.write(2, b"no newline at the end")
"""


def _probe(env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("GLOG_minloglevel", "TF_CPP_MIN_LOG_LEVEL",
                                                            models.NATIVE_LOGS_ENV)}
    return subprocess.run([sys.executable, "-c", QUIET_PROBE, str(PHOTOS / "body_couple_01.jpg")], capture_output=True, text=True,
                          env={**env, **env_extra}, timeout=300)


def test_quiet_native_logs_hides_mediapipe_notes_and_nothing_else():
    """What an app gets from calling quiet_native_logs once at start: the native INFO and WARNING
    notes of the MediaPipe models are gone, Python's stderr, native errors and partial lines pass."""
    result = _probe({})
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "quieted True False"  # it acts once per process
    assert "python line" in lines
    assert "E0000 00:00:1.5   7 native.cc:12] a native error" in lines
    assert lines[-1] == "no newline at the end"
    assert not [line for line in lines if line.startswith(("INFO:", "WARNING:", "W0000", "I0000"))], lines


def test_native_logs_can_be_kept():
    result = _probe({models.NATIVE_LOGS_ENV: "1"})
    assert result.returncode == 0, result.stderr
    assert "quieted False False" in result.stderr and "I0000 00:00:1.5   7 native.cc:13] a native note" in result.stderr
