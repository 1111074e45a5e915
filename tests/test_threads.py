"""Checks in several threads of one process give the reports they give one at a time, and importing
the checks changes no process state (a server runs them concurrently; a library owns no process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from fixloop.checks.engine import check_files
from tests.conftest import PHOTOS, photo

# people in every one of them, so the shared MediaPipe graphs (pose, faces, hands, person mask) and
# the identity embedder are run from all four threads at once
PHOTOS_WITH_PEOPLE = ["body_couple_01.jpg", "group_obama_biden_01.jpg", "hand_ok_01.jpg", "face_leslie_01.jpg"]


def _findings(report) -> list[tuple]:
    return [(f.kind, f.priority.value, round(f.score, 3)) for f in report.findings]


def _checks(report) -> list[tuple]:
    return [(run.name, run.status.value, run.findings) for run in report.checks]


@pytest.fixture(scope="module")
def darkened_pairs(tmp_path_factory):
    """(candidate, source) paths: each photo and a copy of it darkened by 0.8 stop (gamma 2.2)."""
    folder = tmp_path_factory.mktemp("darkened")
    pairs = []
    for name in PHOTOS_WITH_PEOPLE:
        image = photo(name).astype(np.float64) / 255.0
        dark = np.clip((image ** 2.2 * 2 ** -0.8) ** (1 / 2.2) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        target = folder / f"{name.rsplit('.', 1)[0]}_dark.png"
        Image.fromarray(dark).save(target)
        pairs.append((str(target), str(PHOTOS / name)))
    return pairs


def test_checks_in_four_threads_report_what_they_report_one_at_a_time(darkened_pairs, policy):
    # threads first, so the shared models may also be built concurrently (when no test before has)
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda pair: check_files(pair[0], pair[1], policy=policy), darkened_pairs))
    sequential = [check_files(candidate, source, policy=policy) for candidate, source in darkened_pairs]
    for pair, alone, together in zip(darkened_pairs, sequential, threaded):
        assert _findings(together) == _findings(alone), pair[0]
        assert _checks(together) == _checks(alone), pair[0]
        assert together.verdict == alone.verdict
    # the darkening is found in every one of them: the comparison is not between empty reports
    assert all("exposure_drift" in {f.kind for f in report.findings} for report in sequential)
    ran = {run.name for report in sequential for run in report.checks if run.status.value == "ok"}
    assert {"hand_malformed", "identity_drift", "subject_cropped"} <= ran


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=env if env is not None else dict(os.environ))


def test_importing_and_running_the_analyses_leaves_the_process_alone():
    """No environment variable set, no file descriptor moved: not on import, not while a model runs.
    OpenCV's own import sets Qt and library paths in the environment; it is imported first, so what
    is compared is what fixloop's modules do."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLOG_minloglevel", "TF_CPP_MIN_LOG_LEVEL")}
    code = f"""
import json, os
import cv2
before, stderr_before = dict(os.environ), os.fstat(2)
import fixloop.checks.analyses, fixloop.checks.engine
imported = dict(os.environ)
from fixloop.checks.context import CheckContext
from fixloop.checks.images import load_image
ctx = CheckContext.build(load_image({str(PHOTOS / 'hand_ok_01.jpg')!r}))
faces = fixloop.checks.analyses.faces(ctx.candidate)
stderr_after = os.fstat(2)
print(json.dumps({{"import": imported == before, "run": dict(os.environ) == before, "faces": len(faces) > 0,
                  "stderr": (stderr_before.st_dev, stderr_before.st_ino) == (stderr_after.st_dev, stderr_after.st_ino)}}))
"""
    result = _python(code, env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {"import": True, "run": True, "faces": True, "stderr": True}
