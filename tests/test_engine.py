"""The engine's contract: registry, policy, verdicts, skipped and crashed checks, the JSON schema."""

from __future__ import annotations

import json

import pytest

from fixloop.checks.base import REGISTRY, CheckParams, CheckRegistry, CheckSpec
from fixloop.checks.context import CheckContext
from fixloop.checks.engine import run_checks
from fixloop.checks.images import InputError
from fixloop.checks.policy import load_policy
from fixloop.checks.report import SCHEMA_PATH, Report, schema_text
from tests import defects
from tests.conftest import photo


def test_every_defect_check_of_this_issue_is_registered():
    assert {"exposure_drift", "color_temperature_drift", "mask_spill", "texture_blur", "mirrored",
            "edge_halo", "perspective_broken"} <= set(REGISTRY.names())


def test_registry_rejects_duplicates_and_suggests_names():
    registry = CheckRegistry()
    spec = CheckSpec(name="mirrored", function=lambda ctx, p: [], params_model=CheckParams)
    registry.register(spec)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(spec)
    with pytest.raises(ValueError, match="not a defect kind"):
        registry.register(CheckSpec(name="blurry", function=lambda ctx, p: [], params_model=CheckParams))
    with pytest.raises(KeyError, match="did you mean 'mirrored'"):
        registry.get("mirored")


def test_policy_file_overrides_only_what_it_names(tmp_path):
    strict = tmp_path / "strict.toml"
    strict.write_text('[checks.exposure_drift]\nev_threshold = 0.1\npriority = "P0"\n')
    default, custom = load_policy(), load_policy(strict)
    assert custom.params("exposure_drift").ev_threshold == 0.1
    assert custom.params("exposure_drift").priority.value == "P0"
    assert custom.params("exposure_drift").clipped_growth == default.params("exposure_drift").clipped_growth
    assert custom.params("color_temperature_drift") == default.params("color_temperature_drift")


@pytest.mark.parametrize(
    "text, expected",
    [
        ('[checks.exposure_drift]\nev_threshold = -1\n', "checks.exposure_drift.ev_threshold"),
        ('[checks.exposure_drift]\nev_treshold = 0.2\n', "ev_treshold"),
        ('[checks.exposure_drfit]\npriority = "P1"\n', "did you mean 'exposure_drift'"),
        ('[gate]\nfail_on = ["P7"]\n', "gate.fail_on"),
        ('this is = = not toml', "not valid TOML"),
    ],
)
def test_bad_policy_files_are_rejected_with_the_key(tmp_path, text, expected):
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(InputError, match=expected.replace("(", r"\(")):
        load_policy(path)


def test_a_stricter_gate_is_a_policy_file(tmp_path, policy):
    case = defects.exposure(photo("face_obama_01.jpg"), -0.15)
    ctx = CheckContext.from_arrays(case.candidate, case.source)
    assert run_checks(ctx, policy, names=["exposure_drift"]).verdict == "pass"
    strict = tmp_path / "strict.toml"
    strict.write_text("[checks.exposure_drift]\nev_threshold = 0.1\n")
    assert run_checks(ctx, load_policy(strict), names=["exposure_drift"]).verdict == "fail"
    # A P2-only gate: the same finding at P2 does not fail the verdict.
    polish = tmp_path / "polish.toml"
    polish.write_text('[checks.exposure_drift]\nev_threshold = 0.1\npriority = "P2"\n')
    report = run_checks(ctx, load_policy(polish), names=["exposure_drift"])
    assert report.verdict == "pass" and report.findings[0].priority.value == "P2"


def test_a_crashing_check_makes_the_verdict_error(monkeypatch, policy):
    def broken(ctx, params):
        raise RuntimeError("detector exploded")

    spec = REGISTRY.get("mirrored")
    monkeypatch.setitem(REGISTRY._specs, "mirrored", CheckSpec("mirrored", broken, spec.params_model, spec.requires))
    image = photo("face_obama_01.jpg")
    report = run_checks(CheckContext.from_arrays(image, image), policy)
    run = next(c for c in report.checks if c.name == "mirrored")
    assert run.status.value == "error" and "detector exploded" in run.error
    assert report.verdict == "error"


def test_checks_without_their_inputs_are_skipped_with_a_reason(policy):
    report = run_checks(CheckContext.from_arrays(photo("face_obama_01.jpg")), policy)
    statuses = {c.name: c for c in report.checks}
    assert set(statuses) == set(REGISTRY.names())
    assert statuses["mask_spill"].status.value == "skipped" and "--source" in statuses["mask_spill"].reason
    assert statuses["edge_halo"].status.value in ("ok", "skipped")


def test_findings_come_in_repair_order(policy):
    """structure before light before detail; P0 before P1."""
    image = photo("body_bus_01.jpg")
    case = defects.edit_spills_outside_mask(image)
    darker = defects.to_srgb(defects.to_linear(case.candidate) * 0.6)
    report = run_checks(CheckContext.from_arrays(darker, image, case.mask), policy)
    stages = [f.stage.value for f in report.findings]
    assert stages == sorted(stages, key=["structure", "light", "detail"].index)
    assert {"mask_spill", "exposure_drift"} <= {f.kind for f in report.findings}


def test_published_schema_matches_the_models():
    assert SCHEMA_PATH.read_text() == schema_text(), "run `fixloop schema > checks/report.schema.json`"


def test_report_round_trips_through_json(policy):
    case = defects.exposure(photo("face_obama_01.jpg"), -0.6)
    report = run_checks(CheckContext.from_arrays(case.candidate, case.source), policy)
    data = json.loads(report.to_json())
    assert data["verdict"] == "fail"
    assert {"kind", "priority", "stage", "score", "threshold", "region", "message"} <= set(data["findings"][0])
    assert Report.model_validate(data).verdict == "fail"


def test_written_files_get_the_usual_mode_without_touching_the_umask(tmp_path):
    import os
    import stat

    from fixloop.checks.report import atomic_path

    saved = os.umask(0o027)
    try:
        with atomic_path(tmp_path / "a.txt") as tmp:
            assert os.umask(0o027) == 0o027  # the umask is read by creating the file, never changed
            with open(tmp, "w") as handle:
                handle.write("x")
    finally:
        os.umask(saved)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def _comparable(report) -> tuple[list, list]:
    findings = [(f.kind, f.priority.value, round(f.score, 6), f.inherited, None if f.region is None else f.region.box)
                for f in report.findings]
    return findings, [(c.name, c.status.value, c.findings, c.reason) for c in report.checks]


def test_checks_in_threads_give_the_report_they_give_one_by_one(monkeypatch, policy):
    """run_checks may run the checks of one context in a few threads: every shared analysis is still
    computed once, and the report is the one the checks give one by one (faces, hands, a spill and
    a darker picture, so the model checks and the pixel checks all run)."""
    from fixloop.checks import context as context_module
    from fixloop.checks.engine import CHECK_THREADS_ENV, check_threads

    monkeypatch.setattr(context_module.STORE, "images", 0)  # nothing comes from an earlier run
    image = photo("hand_ok_01.jpg")
    case = defects.edit_spills_outside_mask(defects.exposure(image, -0.6).candidate)
    reports = {}
    for threads in ("1", "2", "3"):
        monkeypatch.setenv(CHECK_THREADS_ENV, threads)
        assert check_threads() == int(threads)
        reports[threads] = run_checks(CheckContext.from_arrays(case.candidate, image, case.mask), policy)
    assert _comparable(reports["2"]) == _comparable(reports["1"])
    assert _comparable(reports["3"]) == _comparable(reports["1"])
    assert [c.name for c in reports["2"].checks] == [c.name for c in reports["1"].checks]
    kinds = {f.kind for f in reports["1"].findings}
    assert {"mask_spill", "exposure_drift"} <= kinds
    ran = {c.name for c in reports["1"].checks if c.status.value == "ok"}
    assert {"identity_drift", "hand_malformed", "subject_cropped"} <= ran


def test_check_threads_are_one_unless_told(monkeypatch):
    from fixloop.checks.engine import CHECK_THREADS_ENV, MAX_CHECK_THREADS, check_threads

    monkeypatch.delenv(CHECK_THREADS_ENV, raising=False)
    assert check_threads() == 1
    monkeypatch.setenv(CHECK_THREADS_ENV, "64")
    assert check_threads() == MAX_CHECK_THREADS
    monkeypatch.setenv(CHECK_THREADS_ENV, "not a number")
    assert check_threads() == 1
