"""The promise every measurement check keeps: an honest re-encode (JPEG q85 at 90 % size) of any
shared photo raises no finding, and neither does the untouched photo checked on its own."""

from __future__ import annotations

import pytest

from fixloop.checks.context import CheckContext
from fixloop.checks.engine import run_checks
from tests import defects
from tests.conftest import photo, photo_names

MEASUREMENT_CHECKS = ["mask_spill", "mirrored", "perspective_broken", "exposure_drift",
                      "color_temperature_drift", "texture_blur", "edge_halo"]


@pytest.mark.parametrize("name", photo_names())
def test_honest_reencode_raises_nothing(name, policy):
    image = photo(name)
    case = defects.clean_reencode(image)
    mask = defects.centre_box_mask(image.shape, 0.3)
    report = run_checks(CheckContext.from_arrays(case.candidate, case.source, mask), policy,
                        names=MEASUREMENT_CHECKS)
    assert [f.kind for f in report.findings] == []
    assert all(run.status.value in ("ok", "skipped") for run in report.checks)
    single = run_checks(CheckContext.from_arrays(image), policy, names=["edge_halo"])
    assert single.findings == []
