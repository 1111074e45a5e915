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
