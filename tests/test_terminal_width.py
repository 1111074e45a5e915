"""What a person sees in a terminal: at 80 and at 160 columns no line of stdout passes the width, and
no kind, check name, run id or word of a message is broken across lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fixloop.agent.example import write_example

FIXLOOP = [sys.executable, "-m", "fixloop.apps.cli"]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    folder = tmp_path_factory.mktemp("example")
    paths = write_example(folder / "a-rather-long-folder-name-that-a-person-might-well-have" / "example")
    home = folder / "home"
    env = {**os.environ, "FIXLOOP_HOME": str(home)}
    run = subprocess.run([*FIXLOOP, "repair", str(paths["candidate"]), "--source", str(paths["source"]),
                          "--mask", str(paths["mask"]), "--out", str(folder / "run"), "--json"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    return paths, env, json.loads(run.stdout)


def shown(args, env, width):
    result = subprocess.run([*FIXLOOP, *args], capture_output=True, text=True, env={**env, "COLUMNS": str(width)})
    assert result.returncode in (0, 1), result.stderr
    lines = result.stdout.splitlines()
    assert lines, args
    too_long = [line for line in lines if len(line) > width]
    assert not too_long, too_long
    return result.stdout


def tokens(text: str) -> set[str]:
    return set(text.split())


@pytest.mark.parametrize("width", [80, 160])
def test_check_report_fits_and_keeps_every_word(example, width):
    paths, env, _ = example
    args = ["check", str(paths["candidate"]), "--source", str(paths["source"]), "--mask", str(paths["mask"])]
    out = shown(args, env, width)
    report = json.loads(subprocess.run([*FIXLOOP, *args, "--json"], capture_output=True, text=True).stdout)
    seen = tokens(out)
    for finding in report["findings"]:
        assert finding["kind"] in seen
        assert tokens(finding["message"]) <= seen, finding["message"]
    for check in report["checks"]:
        assert check["name"] in seen or f"{check['name']}," in seen or f"{check['name']}:" in seen


@pytest.mark.parametrize("width", [80, 160])
def test_checks_runs_and_templates_fit(example, width):
    _, env, repaired = example
    listed = shown(["checks"], env, width)
    assert {"color_temperature_drift", "hand_malformed", "subjects_swapped"} <= tokens(listed)
    runs = shown(["runs"], env, width)
    assert repaired["run_id"] in tokens(runs) and "local" in tokens(runs)
    assert tokens(repaired["stop_reason"]) <= tokens(runs)
    shown(["templates"], env, width)


def test_quiet_prints_the_verdict_line_only(example):
    paths, env, _ = example
    result = subprocess.run([*FIXLOOP, "check", str(paths["candidate"]), "--source", str(paths["source"]), "-q"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("verdict: FAIL")


def test_quiet_repair_prints_only_its_verdict_line(example, tmp_path):
    paths, env, _ = example
    result = subprocess.run([*FIXLOOP, "repair", str(paths["candidate"]), "--source", str(paths["source"]),
                             "--mask", str(paths["mask"]), "--out", str(tmp_path / "run"), "--quiet"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("verdict: PASS")


@pytest.mark.parametrize("width", [80, 160])
def test_repair_progress_fits_and_keeps_every_word(example, tmp_path, width):
    paths, env, _ = example
    result = subprocess.run([*FIXLOOP, "repair", str(paths["candidate"]), "--source", str(paths["source"]),
                             "--mask", str(paths["mask"]), "--out", str(tmp_path / "run"), "--json"],
                            capture_output=True, text=True, env={**env, "COLUMNS": str(width)})
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines and not [line for line in lines if len(line) > width]
    report = json.loads(result.stdout)
    seen = tokens(result.stderr)
    for attempt in report["attempts"]:
        assert tokens(attempt["reason"]) <= seen and tokens(attempt["plan"]["change"]) <= seen


@pytest.mark.parametrize("width", [80, 160])
def test_gate_summary_fits_and_quiet_is_one_line(example, tmp_path, width):
    paths, env, _ = example
    folder = tmp_path / "edits"
    folder.mkdir()
    (folder / "candidate.png").write_bytes(paths["candidate"].read_bytes())
    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "candidate.png").write_bytes(paths["source"].read_bytes())
    base = [*FIXLOOP, "gate", str(folder), "--sources", str(sources), "--jobs", "1"]
    full = subprocess.run([*base, "--out", str(tmp_path / "a")], capture_output=True, text=True,
                          env={**env, "COLUMNS": str(width)})
    assert full.returncode == 1, full.stderr
    assert full.stdout and not [line for line in full.stdout.splitlines() if len(line) > width]
    quiet = subprocess.run([*base, "--out", str(tmp_path / "b"), "--quiet"], capture_output=True, text=True, env=env)
    assert quiet.returncode == 1 and quiet.stdout.count("\n") == 1 and quiet.stdout.startswith("verdict: FAIL")
