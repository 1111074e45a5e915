"""The loop benchmark still runs against the current code (one run, no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys


def test_loop_overhead_bench_runs_and_writes_its_results(tmp_path):
    out = tmp_path / "loop.json"
    result = subprocess.run([sys.executable, "-m", "bench.loop_overhead", "--runs", "1", "--profile", "never",
                             "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    per_pass = data["median_seconds_per_pass"]
    assert {"check", "tool", "node_overhead", "framework", "finish_writes"} <= set(per_pass)
    assert data["median_seconds_per_run"]["passes"] == 2
    assert "node + framework" in result.stdout


def test_accuracy_bench_runs_on_two_photos_and_writes_its_table(tmp_path):
    out = tmp_path / "accuracy.json"
    result = subprocess.run([sys.executable, "-m", "bench.accuracy", "--limit", "2", "--only", "mask_spill",
                             "mirrored", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert {r["kind"] for r in rows} == {"mask_spill", "mirrored"}
    assert data["split"] == "all" and all(r["sample"] == "in-sample" for r in rows)
    spill = next(r for r in rows if r["case"] == "spill band 15% width")
    assert spill["total"] == 2 and 0 <= spill["found"] <= 2 and len(spill["trials"]) == 2
    clean = next(r for r in rows if r["kind"] == "mirrored" and r["expect"] == "clean" and len(r["variants"]) == 13)
    assert clean["total"] == 26 and clean["false_alarms"] is not None
    # the printed table has one line per row, with found / total or false alarms / total
    assert f"{spill['found']}/2" in next(line for line in result.stdout.splitlines() if "spill band 15% width" in line)
    assert sum("in-sample" in line for line in result.stdout.splitlines()) == len(rows)
    # the fit / report split: every photo in one half, each category halved (to within one photo)
    from bench.accuracy import read_manifest, split_halves
    from tests.conftest import PHOTOS

    manifest = read_manifest(PHOTOS)
    halves = split_halves(manifest)
    assert set(halves) == set(manifest) and set(halves.values()) == {"fit", "report"}
    assert halves == split_halves(dict(reversed(manifest.items())))  # order-free, deterministic
    for category in {row["category"] for row in manifest.values()}:
        sides = [halves[n] for n, row in manifest.items() if row["category"] == category]
        assert 0 <= sides.count("fit") - sides.count("report") <= 1
