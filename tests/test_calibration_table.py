"""Expected detector outputs for committed cases, with tolerances (tests/calibration/expected_scores.csv).

Each row names a shared photo, a defect made on it (tests/defects.py), the check, the number to
read (``findings`` = how many findings, ``score`` = the first finding's score, ``evidence.KEY`` =
a number from the first finding's evidence) and the expected value with its tolerance. A change
to a detector shows up here as a diff of numbers.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fixloop.checks.context import CheckContext
from fixloop.checks.engine import run_checks
from tests import defects
from tests.conftest import photo

TABLE = Path(__file__).with_name("calibration") / "expected_scores.csv"


def _rows() -> list[dict[str, str]]:
    with open(TABLE, newline="", encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle) if row["photo"] and not row["photo"].startswith("#")]


def _read(report, metric: str) -> float:
    if metric == "findings":
        return float(len(report.findings))
    assert report.findings, f"expected a finding to read {metric!r} from, got none"
    first = report.findings[0]
    if metric == "score":
        return first.score
    key = metric.removeprefix("evidence.")
    return float(first.evidence[key])


@pytest.mark.parametrize("row", _rows(), ids=lambda r: f"{r['check']}-{r['photo']}-{r['defect']}-{r['amount']}-{r['metric']}")
def test_expected_score(row, policy):
    case = defects.make(row["defect"], photo(row["photo"]), float(row["amount"]))
    ctx = CheckContext.from_arrays(case.candidate, case.source, case.mask)
    report = run_checks(ctx, policy, names=[row["check"]])
    assert report.checks[0].status.value == "ok", report.checks[0]
    value = _read(report, row["metric"])
    expected, tolerance = float(row["expected"]), float(row["tolerance"])
    assert abs(value - expected) <= tolerance, f"{row['metric']} = {value:.4f}, expected {expected} ± {tolerance}"
