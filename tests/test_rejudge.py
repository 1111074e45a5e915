"""The loop judges again what it left open, so its report agrees with the checks on its final image.

The measured bug: a photo mirrored, 1.2 EV darker and blurred. The mirror makes the checks see a
tilt too (``perspective_broken``, "the whole image is rotated 7° clockwise"), which comes first in
the structure order; the local backend has no repair for a tilt, so the loop left it open, then
flipped the picture back. After the flip the checks no longer found the tilt, yet the report and the
summary still listed it as open. (Since the checks register the candidate to the source, the
mirror no longer reads as a tilt; the case still checks that the report and the summary agree with
the checks on the final image.) Here the same case runs through the loop (local backend,
in-process, as tests/test_repair_loop.py drives it) and the report is compared with a fresh check
of ``final.png`` against the same source: what ``fixloop check`` would say.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from fixloop.agent.findings import SAME_REGION_OVERLAP, _overlap
from fixloop.agent.runner import start_run
from fixloop.agent.state import Budget, Outcome, RunInputs, StopReason
from fixloop.apps.progress import ConsoleProgress
from fixloop.checks.engine import check_files
from fixloop.checks.policy import load_policy
from tests import defects
from tests.conftest import photo

PHOTO = "body_curling_01.jpg"  # 1280 x 720: mirrored, it reads as a 7° tilt as well
EV = -1.2
BLUR_SIGMA = 2.0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The mirrored, darker, blurred photo repaired by the loop: (state, report.json, summary, source path)."""
    folder = tmp_path_factory.mktemp("rejudge")
    source = photo(PHOTO)
    candidate = defects.blur(defects.exposure(defects.flip(source).candidate, EV).candidate, BLUR_SIGMA).candidate
    paths = {"image": folder / "in" / "candidate.png", "source": folder / "in" / "source.png"}
    paths["image"].parent.mkdir()
    Image.fromarray(candidate).save(paths["image"])
    Image.fromarray(source).save(paths["source"])
    buffer = io.StringIO()
    progress = ConsoleProgress(Console(file=buffer, width=400, highlight=False, color_system=None))
    state = start_run(RunInputs(image=str(paths["image"]), source=str(paths["source"]), out_dir=str(folder / "run")),
                      Budget(), progress=progress, db=folder / "runs.sqlite")
    report = json.loads((Path(state.inputs.out_dir) / "report.json").read_text())
    return state, report, buffer.getvalue(), str(paths["source"])


def _found(defect: dict, findings) -> bool:
    """An open defect of the report is among ``findings`` (by kind, and by place for a region)."""
    for f in findings:
        if f.kind != defect["kind"]:
            continue
        box = None if f.region is None else f.region.box
        if defect["box"] is None and box is None:
            return True
        if defect["box"] is not None and box is not None and _overlap(defect["box"], box) >= SAME_REGION_OVERLAP:
            return True
    return False


def test_the_case_is_the_measured_one(run):
    """The input reads as mirrored, darker and blurred, and the flip is accepted. Since the checks
    register the candidate to the source (issue 13), the mirror no longer reads as a tilt as well."""
    state, _, _, _ = run
    first = {f["kind"] for f in state.attempts[0].findings_before}
    assert {"mirrored", "exposure_drift", "texture_blur"} <= first
    assert "perspective_broken" not in first
    flips = [a for a in state.attempts if a.plan.tool == "local.flip_back"]
    assert flips and flips[0].outcome == Outcome.accepted, [(a.plan.tool, a.reason) for a in state.attempts]
    assert "left open[/yellow]" not in run[2]  # plain text: no markup leaked


def test_the_report_agrees_with_a_fresh_check_of_the_final_image(run):
    state, report, summary, source = run
    final = Path(state.inputs.out_dir) / report["final_image"]
    fresh = check_files(str(final), source)
    gate = load_policy().gate
    failing = [f for f in fresh.findings if gate.counts(f)]  # inherited findings do not count

    # the findings of the report are those of the final image
    assert sorted(f["kind"] for f in report["findings"]) == sorted(f.kind for f in fresh.findings)
    assert report["verdict"] == fresh.verdict
    # every defect the report leaves open is still found on the final image; the tilt is not among them
    assert "perspective_broken" not in {f.kind for f in fresh.findings}
    assert "perspective_broken" not in {d["kind"] for d in report["open_defects"]}
    missing = [d for d in report["open_defects"] if not _found(d, fresh.findings)]
    assert not missing, missing
    # the stop reason counts what the checks find, and names a category that fits it
    if not failing:
        assert report["stop"] == StopReason.clean.value
    else:
        assert report["stop"] in (StopReason.stuck.value, StopReason.budget_passes.value,
                                  StopReason.budget_usd.value, StopReason.budget_seconds.value)
    if report["stop"] == StopReason.stuck.value:
        assert report["stop_reason"].startswith(f"stuck: {len(failing)} P0/P1 defect(s) left open")
        # stuck: every failing finding is open or held back, and nothing else is listed
        assert len(report["open_defects"]) == len(failing)
        assert all(any(_found(d, [f]) for d in report["open_defects"]) for f in failing)
    # the summary printed at the end lists the same open defects, and only those
    done = summary[summary.index("done: "):]
    assert done.splitlines()[0] == f"done: {report['stop_reason']}"
    listed = [line.split()[1] for line in done.splitlines() if line.strip().startswith("open ")]
    assert sorted(listed) == sorted(d["kind"] for d in report["open_defects"])
