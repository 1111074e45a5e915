"""Issue 14 item 8: two `fixloop repair` runs and `fixloop runs` at once on one FIXLOOP_HOME all
finish (SQLite in WAL mode with busy timeouts, no "database is locked"), and checks in several threads
of one process give the same reports as one at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import PHOTOS

FIXLOOP = [str(Path(sys.executable).with_name("fixloop"))]


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("example")
    subprocess.run([*FIXLOOP, "example", "--out", str(folder)], check=True, capture_output=True, timeout=120)
    return folder


@pytest.mark.slow
def test_two_repairs_and_a_listing_at_once_all_finish(example, tmp_path):
    env = {**os.environ, "FIXLOOP_HOME": str(tmp_path / "home")}
    repairs = [subprocess.Popen([*FIXLOOP, "repair", str(example / "candidate.png"), "--source",
                                 str(example / "source.png"), "--out", str(tmp_path / f"run{i}")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for i in range(2)]
    listings = []
    deadline = time.monotonic() + 180
    while any(p.poll() is None for p in repairs) and time.monotonic() < deadline:
        listings.append(subprocess.run([*FIXLOOP, "runs"], capture_output=True, text=True, env=env, timeout=120))
    for process in repairs:
        out, err = process.communicate(timeout=max(1, deadline - time.monotonic()))
        assert process.returncode in (0, 1), err
        assert "locked" not in err and "Traceback" not in err, err
    for listing in listings:
        assert listing.returncode == 0, listing.stderr
        assert "locked" not in listing.stderr
    final = subprocess.run([*FIXLOOP, "runs"], capture_output=True, text=True, env=env, timeout=120)
    assert final.returncode == 0
    for i in range(2):
        report = json.loads((tmp_path / f"run{i}" / "report.json").read_text())
        assert report["run_id"] in final.stdout


def test_checkpoint_file_is_in_wal_mode_with_a_busy_timeout(tmp_path):
    from fixloop.agent.runner import BUSY_TIMEOUT_S, _connect

    conn = _connect(tmp_path / "runs.sqlite")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == int(BUSY_TIMEOUT_S * 1000)
    finally:
        conn.close()


def test_checks_in_threads_match_checks_one_at_a_time():
    from fixloop.agent import service

    names = sorted(p.name for p in PHOTOS.glob("*.jpg"))[:4]

    def run(name: str) -> str:
        report = service.check(PHOTOS / name, source=PHOTOS / name)
        data = json.loads(report.to_json())
        for key in ("seconds", "started", "finished", "elapsed"):
            data.pop(key, None)
        return json.dumps([(c["name"], c["status"], c.get("score")) for c in data["checks"]], sort_keys=True)

    alone = [run(n) for n in names]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(run, names))
    assert together == alone
