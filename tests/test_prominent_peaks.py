"""hands.prominent_peaks: scipy.signal.find_peaks's peaks and prominences without importing scipy.signal.

The fingertips of a hand's silhouette are the prominent peaks of its outline's distance from the palm
(``silhouette_fingertips``). scipy.signal takes 0.7 s and 40 MiB to import, once in every process that
measures a hand (a cold ``fixloop check``, each gate worker), for this one function.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import find_peaks

from fixloop.checks.hands import prominent_peaks
from tests.conftest import PHOTOS

REPO = Path(__file__).resolve().parents[1]


def profiles(count: int):
    """Random walks, some rounded (flat tops), some smoothed, with and without a window."""
    rng = np.random.default_rng(7)
    for trial in range(count):
        x = rng.normal(size=int(rng.integers(3, 400))).cumsum()
        if trial % 3 == 0:
            x = np.round(x * 2) / 2
        if trial % 5 == 0:
            x = np.convolve(x, np.ones(5) / 5, "same")
        wlen = int(rng.integers(2, 200)) if trial % 7 else None
        yield x, float(rng.uniform(0, 2)), wlen


def test_the_same_peaks_and_prominences_as_scipy():
    found = 0
    for x, min_prominence, wlen in profiles(600):
        theirs, properties = find_peaks(x, prominence=min_prominence, wlen=wlen)
        ours, prominences = prominent_peaks(x, min_prominence, wlen if wlen is not None else 0)
        assert np.array_equal(ours, theirs)
        np.testing.assert_allclose(prominences, properties["prominences"])
        found += len(ours)
    assert found > 5000


def test_flat_tops_peak_in_their_middle_and_edges_never_peak():
    x = np.array([5.0, 0, 1, 3, 3, 3, 3, 1, 0, 2, 2, 9])
    peaks, prominences = prominent_peaks(x, 0.5, 0)
    assert peaks.tolist() == [4] and prominences.tolist() == [3.0]  # indices 3-6 flat: (3 + 6) // 2
    assert prominent_peaks(np.array([1.0, 2, 3]), 0, 0)[0].size == 0


def test_a_window_limits_how_far_the_bases_are_searched():
    x = np.array([0.0, 5, 5, 5, 5, 4, 9, 4, 5, 5, 5, 5, 0])
    assert prominent_peaks(x, 0, 0)[1].tolist() == [1.0, 9.0, 1.0]  # the flat tops at 2 and 9, the 9 at 6
    assert prominent_peaks(x, 2, 0)[1].tolist() == [9.0]
    assert prominent_peaks(x, 2, 3)[1].tolist() == [5.0]  # one sample either side: down to 4, not 0
    assert find_peaks(x, prominence=2, wlen=3)[1]["prominences"].tolist() == [5.0]


@pytest.mark.skipif(not (PHOTOS / "hand_ok_01.jpg").is_file(), reason="shared photos missing")
def test_checking_a_hand_does_not_import_scipy_signal():
    code = (
        "import sys\n"
        "from fixloop.checks.engine import check_files\n"
        f"report = check_files({str(PHOTOS / 'hand_ok_01.jpg')!r}, names=['hand_malformed'])\n"
        "assert report.checks[0].status.value == 'ok', report.checks[0]\n"
        "print('scipy.signal' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
