"""`fixloop check` as a pipeline sees it: exit codes, one JSON object on stdout, nothing written on bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import PHOTOS

FIXLOOP = [str(Path(sys.executable).with_name("fixloop"))]


def fixloop(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*FIXLOOP, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("example")
    result = fixloop("example", "--out", folder)
    assert result.returncode == 0, result.stderr
    return folder


def test_example_edit_fails_with_its_three_defects(example, tmp_path):
    before = digest(example)
    result = fixloop("check", example / "candidate.png", "--source", example / "source.png",
                     "--mask", example / "mask.png", "--json", "--out", tmp_path / "out")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)  # exactly one JSON object
    kinds = [f["kind"] for f in report["findings"]]
    assert {"mask_spill", "exposure_drift", "color_temperature_drift"} <= set(kinds)
    assert kinds.index("mask_spill") < kinds.index("exposure_drift")  # structure before light
    assert report["verdict"] == "fail"
    names = {c["name"] for c in report["checks"]}
    assert {"mask_spill", "mirrored", "edge_halo", "texture_blur"} <= names
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["verdict"] == "fail"
    spill = next(f for f in saved["findings"] if f["kind"] == "mask_spill")
    mask_png = tmp_path / "out" / spill["region"]["mask_file"]
    assert np.asarray(Image.open(mask_png)).shape == (512, 512)
    assert digest(example) == before, "inputs must stay untouched"


def test_clean_source_against_itself_passes_with_exit_0(example):
    result = fixloop("check", example / "source.png", "--source", example / "source.png", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["verdict"] == "pass"


def test_table_output_names_the_defects_and_verdict(example):
    result = fixloop("check", example / "candidate.png", "--source", example / "source.png",
                     "--mask", example / "mask.png")
    assert result.returncode == 1
    assert "mask_spill" in result.stdout and "FAIL" in result.stdout


def _bad_inputs(folder: Path, example: Path) -> dict[str, list]:
    (folder / "notes.txt").write_text("not an image")
    (folder / "cut.jpg").write_bytes((PHOTOS / "face_obama_01.jpg").read_bytes()[:3000])
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(folder / "small_mask.png")
    Image.fromarray(np.zeros((512, 512), np.uint8)).save(folder / "empty_mask.png")
    source, candidate = example / "source.png", example / "candidate.png"
    return {
        "missing file": ["check", folder / "nope.png"],
        "not an image": ["check", folder / "notes.txt"],
        "truncated": ["check", folder / "cut.jpg"],
        "mask size": ["check", candidate, "--source", source, "--mask", folder / "small_mask.png"],
        "empty mask": ["check", candidate, "--source", source, "--mask", folder / "empty_mask.png"],
        "unknown check": ["check", candidate, "--only", "mirorred"],
        "bad policy": ["check", candidate, "--policy", folder / "notes.txt"],
    }


def test_bad_input_exits_2_with_one_line_and_writes_nothing(example, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    cases = _bad_inputs(inputs, example)
    before = digest(inputs), digest(example)
    for name, args in cases.items():
        out = tmp_path / f"out-{name.replace(' ', '-')}"
        result = fixloop(*args, "--json", "--out", out)
        assert result.returncode == 2, (name, result.stderr)
        assert result.stdout == "", name
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fixloop: "), (name, result.stderr)
        assert not out.exists(), name
    assert (digest(inputs), digest(example)) == before


def test_usage_error_exits_2():
    result = fixloop("check")
    assert result.returncode == 2


def test_out_folder_never_overwrites_an_input(example, tmp_path):
    folder = tmp_path / "work"
    shutil.copytree(example, folder)
    (folder / "report.json").write_text("{}")
    result = fixloop("check", folder / "report.json")  # a non-image input named report.json
    assert result.returncode == 2
    Image.open(folder / "candidate.png").save(folder / "report.json", format="PNG")
    before = (folder / "report.json").read_bytes()
    result = fixloop("check", folder / "report.json", "--out", folder)
    assert result.returncode == 2 and "one of the inputs" in result.stderr
    assert (folder / "report.json").read_bytes() == before


def test_help_and_schema():
    assert fixloop("--help").returncode == 0
    schema = json.loads(fixloop("schema").stdout)
    assert schema["title"] == "Report" and "findings" in schema["properties"]


@pytest.mark.parametrize("args, message", [
    (["check"], "Missing argument 'candidate'"),
    (["check", "x.png", "--bogus"], "No such option: --bogus"),
    (["repair", "x.png", "--budget-passes", "-1"], "'--budget-passes'"),
    (["repair", "x.png", "--budget-usd", "nan"], "'--budget-usd'"),
    (["repair", "x.png", "--budget-seconds", "0"], "'--budget-seconds'"),
    (["no-such-command"], "No such command"),
])
def test_usage_errors_are_one_line_and_exit_2(args, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "fixloop.apps.cli", *args], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("fixloop: ") and result.stderr.count("\n") == 1 and message in result.stderr
    assert list(tmp_path.iterdir()) == []
