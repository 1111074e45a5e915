"""The repair loop end to end on real photos with injected defects.

In-process runs (``agent.runner.start_run``) share the loaded models; the GPT Image backend talks to
the loopback server of ``tests/openai_server.py`` through the official ``openai`` client. The CLI
tests (kill and resume, approval, bad input) run ``fixloop repair`` as a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fixloop.agent.example import build_example
from fixloop.agent.runner import load_run, start_run
from fixloop.agent.state import AttemptCause, Budget, OpenCause, Outcome, RunInputs, StopReason
from tests import defects
from tests.conftest import photo, sigint_at_default
from tests.openai_server import OpenAIImagesServer

FIXLOOP = [sys.executable, "-m", "fixloop.apps.cli"]
STAGE_RANK = {"structure": 0, "light": 1, "detail": 2}


def save(array: np.ndarray, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def write_case(tmp_path: Path, candidate, source=None, mask=None) -> dict:
    folder = tmp_path / "in"
    paths = {"image": save(candidate, folder / "candidate.png")}
    if source is not None:
        paths["source"] = save(source, folder / "source.png")
    if mask is not None:
        paths["mask"] = save(mask.astype(np.uint8) * 255 if mask.dtype == bool else mask, folder / "mask.png")
    return paths


def run_loop(tmp_path: Path, candidate, source=None, mask=None, backend="local", budget=None, **inputs):
    paths = write_case(tmp_path, candidate, source, mask)
    before = digest(tmp_path / "in")
    state = start_run(RunInputs(out_dir=str(tmp_path / "run"), backend=backend, **paths, **inputs),
                      budget or Budget(), db=tmp_path / "runs.sqlite")
    assert digest(tmp_path / "in") == before, "the loop wrote over an input"
    return state


def labels(findings) -> list[str]:
    return [f"{f.kind} ({f.priority}, {f.score:g} {f.unit})" for f in findings]


def final_image(state) -> np.ndarray:
    return np.asarray(Image.open(Path(state.inputs.out_dir) / "final.png").convert("RGB"))


def report(state) -> dict:
    return json.loads((Path(state.inputs.out_dir) / "report.json").read_text())


def assert_outputs(state) -> None:
    out = Path(state.inputs.out_dir)
    for name in ("final.png", "report.json", "review.png"):
        assert (out / name).is_file(), name
    for attempt in state.attempts:
        if attempt.image:
            assert (out / attempt.image).is_file()
    assert not list(out.glob("**/.*.tmp")), "a temporary file was left behind"


def assert_stage_order(state) -> None:
    """Accepted repairs never go back to an earlier stage, except the documented light-before-restore."""
    stages = [a.plan.target.stage for a in state.attempts if a.outcome == Outcome.accepted]
    kinds = [a.plan.target.kind for a in state.attempts if a.outcome == Outcome.accepted]
    for i in range(1, len(stages)):
        if STAGE_RANK[stages[i]] < STAGE_RANK[stages[i - 1]]:
            assert kinds[i] == "mask_spill" and kinds[i - 1] in ("exposure_drift", "color_temperature_drift"), kinds


# ---- local backend: the deterministic repairs ---------------------------------------------------


def test_published_repair_report_schema_matches_the_models_and_a_real_report():
    from fixloop.agent.state import REPAIR_SCHEMA_PATH, RepairReport, repair_schema_text

    assert REPAIR_SCHEMA_PATH.read_text() == repair_schema_text(), \
        "run `fixloop schema --repair > agent/repair_report.schema.json`"
    assert cli("schema", "--repair").stdout == repair_schema_text()
    assert "attempts" in RepairReport.model_json_schema()["properties"]


def test_the_shipped_example_is_repaired_light_first_then_restored(tmp_path):
    """The README's main job: spill + darker + warmer. The light pass goes first (it is measured on the
    pixels composite-back restores), then composite-back; nothing P0/P1 is left."""
    example = build_example()
    state = run_loop(tmp_path, example["candidate"], example["source"], example["mask"] > 0)
    assert state.finished and state.verdict == "pass" and state.stop == StopReason.clean
    tools = [(a.plan.tool, a.outcome) for a in state.attempts]
    assert tools == [("local.exposure_color", Outcome.accepted), ("local.composite_back", Outcome.accepted)]
    assert state.attempts[0].plan.also_fixes  # exposure and colour in one pass
    assert_outputs(state)
    final = final_image(state).astype(int)
    outside = example["mask"] == 0
    assert np.abs(final[outside] - example["source"][outside]).max() == 0  # restored exactly
    data = report(state)
    from fixloop.agent.state import RepairReport

    RepairReport.model_validate(data)  # report.json follows its published schema's models
    assert data["verdict"] == "pass" and data["spend"]["usd"] == 0 and len(data["attempts"]) == 2
    assert data["stop"] == "clean" and data["stop_reason"] == state.stop_reason
    assert [a["cause"] for a in data["attempts"]] == ["accepted", "accepted"]
    assert data["attempts"][0]["findings_before"] and data["loop_overhead_seconds_per_pass"] is not None


@pytest.mark.parametrize("name", ["face_harington_01.jpg", "body_cello_01.jpg"])
def test_exposure_and_colour_drift_go_in_one_pass(tmp_path, name):
    image = photo(name)
    darker = defects.exposure(image, -0.7).candidate
    warmer = defects.white_balance(darker, 35.0).candidate
    state = run_loop(tmp_path, warmer, image)
    assert state.verdict == "pass", state.findings
    assert [a.plan.tool for a in state.attempts] == ["local.exposure_color"]
    before = {f["kind"] for f in state.attempts[0].findings_before}
    assert {"exposure_drift", "color_temperature_drift"} <= before
    assert not state.findings


def test_spill_is_restored_by_composite_back(tmp_path):
    image = photo("face_obama_01.jpg")
    case = defects.edit_spills_outside_mask(image, 0.15)
    state = run_loop(tmp_path, case.candidate, case.source, case.mask)
    assert state.verdict == "pass", labels(state.findings)
    assert {a.plan.target.kind for a in state.attempts} == {"mask_spill"}
    assert {a.plan.tool for a in state.attempts} == {"local.composite_back"}
    accepted = state.attempts[-1]
    assert accepted.outcome == Outcome.accepted
    # every pixel outside the mask (and its feathered seam, when the seam was moved across the edge) is the source's
    feather = accepted.tool_parameters["feather"]
    seam = cv2.dilate(case.mask.astype(np.uint8), np.ones((2 * int(feather) + 3,) * 2, np.uint8)) > 0
    outside = ~(seam if accepted.tool_parameters["seam"] == "center" else case.mask)
    assert np.array_equal(final_image(state)[outside], image[outside])


def test_mirror_first_then_exposure(tmp_path):
    """A mirrored and darkened result: the structure defect is repaired before the light one."""
    image = photo("body_skier_01.jpg")
    mirrored = np.ascontiguousarray(image[:, ::-1])
    candidate = defects.exposure(mirrored, -0.6).candidate
    state = run_loop(tmp_path, candidate, image)
    accepted = [a.plan.target.kind for a in state.attempts if a.outcome == Outcome.accepted]
    assert accepted[0] == "mirrored" and "exposure_drift" in accepted[1:], accepted
    assert state.verdict == "pass"
    assert_stage_order(state)
    assert np.abs(final_image(state).astype(int) - image).mean() < 4  # back to the source, up to JPEG


@pytest.mark.parametrize("name, defect", [("face_dfE_01.jpg", "halo_ring_mask"), ("face_obama_04.jpg", "halo_ring")])
def test_halo_is_defringed(tmp_path, name, defect):
    image = photo(name)
    case = defects.make(defect, image, 0.8)
    state = run_loop(tmp_path, case.candidate, case.source, case.mask)
    halo = [a for a in state.attempts if a.plan.target.kind == "edge_halo"]
    assert halo and halo[-1].outcome == Outcome.accepted and halo[-1].plan.tool == "local.defringe"
    assert not [f for f in state.findings if f.kind == "edge_halo"]
    assert_stage_order(state)


def test_a_cut_out_is_defringed_and_keeps_its_alpha(tmp_path):
    """An RGBA cut-out with a bright rim: the checks read the alpha boundary, defringe removes the rim,
    and final.png is still the cut-out (same alpha)."""
    case = defects.halo_ring_cutout(photo("face_obama_04.jpg"), 0.8)
    state = run_loop(tmp_path, case.candidate)
    assert [(a.plan.tool, a.outcome) for a in state.attempts] == [("local.defringe", Outcome.accepted)]
    assert state.verdict == "pass"
    final = np.asarray(Image.open(Path(state.inputs.out_dir) / "final.png"))
    assert final.shape[2] == 4 and np.array_equal(final[..., 3], case.candidate[..., 3])


def test_p2_findings_wait_for_the_polish_pass(tmp_path):
    """A policy that ranks exposure drift P2: the gate passes without touching it; --polish repairs it."""
    policy = tmp_path / "policy.toml"
    policy.write_text('[checks.exposure_drift]\npriority = "P2"\n')
    image = photo("face_leslie_01.jpg")
    darker = defects.exposure(image, -0.6).candidate
    plain = run_loop(tmp_path / "plain", darker, image, policy=str(policy))
    assert plain.verdict == "pass" and not plain.attempts
    assert [f.kind for f in plain.findings] == ["exposure_drift"]
    polished = run_loop(tmp_path / "polish", darker, image, policy=str(policy), polish=True)
    assert [(a.plan.target.priority, a.plan.tool, a.outcome) for a in polished.attempts] == [
        ("P2", "local.exposure_color", Outcome.accepted)]
    assert not polished.findings


def test_the_seconds_budget_stops_the_run_with_the_input(tmp_path):
    example = build_example()
    state = run_loop(tmp_path, example["candidate"], example["source"], example["mask"] > 0,
                     budget=Budget(max_seconds=0.05))
    assert state.stop == StopReason.budget_seconds and "of 0.05 s used" in state.stop_reason
    assert not state.attempts and state.verdict == "fail"
    assert np.array_equal(final_image(state), example["candidate"])
    assert report(state)["stop_reason"] == state.stop_reason and report(state)["stop"] == state.stop.value


def test_a_hand_the_local_backend_cannot_repair_is_left_open_with_the_plan_that_would(tmp_path):
    state = run_loop(tmp_path, photo("gen_hand_ghost_finger_01.jpg"))
    assert state.verdict == "fail" and state.stop == StopReason.stuck
    hands = [d for d in state.open_defects.values() if d.kind == "hand_malformed"]
    assert hands and "hands template" in hands[0].would_fix and "--backend openai" in hands[0].would_fix
    assert hands[0].cause == OpenCause.no_backend and hands[0].reason == "no local repair for hand_malformed"
    assert state.spend.passes == 0
    assert "hand_malformed" in json.dumps(report(state)["open_defects"])


def test_an_open_structure_defect_holds_back_the_detail_repairs(tmp_path):
    """A generated picture with a cut-off subject and a malformed hand: the crop cannot be repaired
    offline, so the hand is not attempted either (a hand repaired on a wrong framing is wasted)."""
    state = run_loop(tmp_path, photo("gen_hand_malformed_03.jpg"))
    crop = [d for d in state.open_defects.values() if d.kind == "subject_cropped"]
    hand = [d for d in state.held_back.values() if d.kind == "hand_malformed"]
    assert crop and "recompose" in crop[0].would_fix
    assert hand and "structure defect subject_cropped is still open" in hand[0].reason
    assert hand[0].cause == OpenCause.held_back
    assert not state.attempts


# ---- GPT Image backend on the loopback server ---------------------------------------------------


def blurred_case():
    """A 1024 x 1024 photo (GPT Image's own size: sent and returned pixels line up 1:1) with one box
    softened: texture_blur against the source."""
    image = cv2.resize(photo("face_harington_01.jpg"), (1024, 1024), interpolation=cv2.INTER_AREA)
    return defects.blur_region(image, 3.0)


def editable(request) -> np.ndarray:
    """Where the request's mask lets the model paint (alpha 0)."""
    alpha = request.mask.decode()
    alpha = alpha[..., 3] if alpha.ndim == 3 else alpha
    return alpha == 0


def drifting_fix(source: np.ndarray):
    """A model that repairs the masked area (the sharp source there) and shifts every other pixel:
    what a GPT Image edit does when it treats the mask as a hint."""

    def answer(request) -> np.ndarray:
        sent = request.images[0].decode()[..., :3]
        drifted = np.clip(sent.astype(int) * [1.12, 1.02, 0.9] + 6, 0, 255).astype(np.uint8)
        inside = editable(request)
        drifted[inside] = cv2.resize(source, sent.shape[1::-1], interpolation=cv2.INTER_AREA)[inside]
        return drifted

    return answer


def clean_fix(source: np.ndarray):
    def answer(request) -> np.ndarray:
        sent = request.images[0].decode()[..., :3].copy()
        inside = editable(request)
        sent[inside] = cv2.resize(source, sent.shape[1::-1], interpolation=cv2.INTER_AREA)[inside]
        return sent

    return answer


def blurrier(request) -> np.ndarray:
    """A model that makes the masked area worse (softer still)."""
    sent = request.images[0].decode()[..., :3].copy()
    inside = editable(request)
    sent[inside] = cv2.GaussianBlur(sent, (0, 0), 6.0)[inside]
    return sent


@pytest.fixture
def openai_env(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-loopback")


def test_gpt_edit_that_drifted_outside_its_mask_is_caught_and_salvaged(tmp_path, openai_env):
    case = blurred_case()
    with OpenAIImagesServer(image=drifting_fix(case.source)) as server:
        state = run_loop(tmp_path, case.candidate, case.source, backend="openai", base_url=server.base_url)
        assert len(server.requests) == 1, "the salvage must not pay for another call"
    first, second = state.attempts[:2]
    assert first.plan.tool == "openai" and first.outcome == Outcome.rolled_back
    assert first.cause == AttemptCause.spilled and first.reason.startswith("spilled") and first.cost_usd > 0
    assert second.plan.salvage and second.plan.tool == "local.composite_back"
    assert second.outcome == Outcome.accepted, second.reason
    assert state.verdict == "pass", labels(state.findings)
    # the drifted pixels are never delivered: outside the repair mask the final is the candidate
    mask = np.asarray(Image.open(Path(state.inputs.out_dir) / first.mask)) > 0
    final = final_image(state)
    assert np.array_equal(final[~mask], case.candidate[~mask])
    assert report(state)["spend"]["usd"] == pytest.approx(first.cost_usd)


@pytest.mark.parametrize("given", ["source", "mask only"])
def test_a_cut_off_subject_is_outpainted_on_a_grown_canvas(tmp_path, openai_env, given):
    """subject_cropped through the shins: the loop grows the canvas by the finding's extension and asks
    GPT Image to outpaint the new strip. The loopback model paints what the camera saw there (the
    uncropped photo, mapped through the request's own geometry); verify finds the subject whole.
    With an edit mask and no source, the mask follows the picture onto the grown canvas."""
    from fixloop.checks.context import CheckContext
    from fixloop.checks.engine import run_checks
    from fixloop.checks.policy import load_policy
    from fixloop.tools.openai_images import DEFAULT_MAX_PIXELS, plan_geometry, to_request_image

    image = photo("body_skier_01.jpg")
    case = defects.crop_through_shins(image, 0.5)
    found = run_checks(CheckContext.from_arrays(case.candidate, case.source), load_policy(), names=["subject_cropped"])
    extend = found.findings[0].evidence["extend"]
    assert set(extend) == {"bottom"}
    h, w = case.candidate.shape[:2]
    scene = image[: h + int(extend["bottom"]), :w]  # the crop started at the photo's top-left corner

    def outpaint(request) -> np.ndarray:
        sent = request.images[0].decode()[..., :3].copy()
        size = tuple(int(v) for v in request.field("size").split("x"))
        truth = to_request_image(scene, plan_geometry(scene.shape[1], scene.shape[0], size, DEFAULT_MAX_PIXELS))
        inside = editable(request)
        sent[inside] = truth[inside]
        return sent

    source, mask = case.source, None
    if given == "mask only":
        source, mask = None, np.zeros(case.candidate.shape[:2], bool)
        mask[: h // 2] = True
    with OpenAIImagesServer(image=outpaint) as server:
        state = run_loop(tmp_path, case.candidate, source, mask, backend="openai", base_url=server.base_url)
        assert len(server.requests) == 1
    attempt = state.attempts[0]
    assert state.canvas_pad == {"top": 0, "bottom": int(extend["bottom"]), "left": 0, "right": 0}
    assert attempt.plan.prepare == "expand_canvas" and attempt.plan.template == "recompose"
    assert attempt.outcome == Outcome.accepted and any("canvas grown" in n for n in attempt.notes)
    assert state.verdict == "pass", labels(state.findings)
    final = final_image(state)
    assert final.shape == scene.shape
    assert np.array_equal(final[:h], case.candidate)  # the part that was there is kept as it was


def test_on_a_grown_canvas_the_source_is_compared_on_the_old_frame(tmp_path):
    """After an outpaint added strips, the checks still compare the old frame with the source: a
    half-stop darkening is measured there, and the new strips count as edited (no spill)."""
    from fixloop.agent.context import RunContext

    image = photo("face_harington_01.jpg")
    darker = defects.exposure(image, -0.6).candidate
    paths = write_case(tmp_path, darker, image)
    ctx = RunContext.open(RunInputs(out_dir=str(tmp_path / "run"), **paths))
    pad = {"top": 0, "bottom": 120, "left": 60, "right": 0}
    canvas = cv2.copyMakeBorder(darker, 0, 120, 60, 0, cv2.BORDER_REFLECT)
    framed = ctx.framed_source(canvas, pad)
    assert np.array_equal(framed[:-120, 60:], image) and np.array_equal(framed[-120:], canvas[-120:])
    kinds = {f.kind: f for f in ctx.check(canvas, pad).findings}
    assert "exposure_drift" in kinds and kinds["exposure_drift"].score == pytest.approx(-0.6, abs=0.05)
    # the same canvas without the darkening: the strips are new content, not a spill
    honest = cv2.copyMakeBorder(image, 0, 120, 60, 0, cv2.BORDER_REFLECT)
    assert not {f.kind for f in ctx.check(honest, pad).findings} & {"mask_spill", "exposure_drift", "mirrored"}


def test_a_repair_that_makes_things_worse_is_rolled_back_and_the_budget_stops_the_run(tmp_path, openai_env):
    case = blurred_case()
    with OpenAIImagesServer(image=blurrier) as server:
        state = run_loop(tmp_path, case.candidate, case.source, backend="openai", base_url=server.base_url,
                         budget=Budget(max_passes=2))
        assert len(server.requests) == 2
    assert [a.outcome for a in state.attempts] == [Outcome.rolled_back, Outcome.rolled_back]
    assert all(a.cause == AttemptCause.no_progress for a in state.attempts), [a.reason for a in state.attempts]
    first, second = state.attempts
    assert second.plan.rung == 1 and second.plan.mask_grow_px > 0 and "wider mask" in second.plan.change
    assert state.stop == StopReason.budget_passes and state.stop_reason == "budget: 2 of 2 passes used"
    assert np.array_equal(final_image(state), case.candidate)  # nothing accepted: the input is delivered
    assert report(state)["stop_reason"] == state.stop_reason and report(state)["stop"] == state.stop.value


def test_a_paid_call_that_would_pass_the_dollar_budget_is_not_made(tmp_path, openai_env):
    case = blurred_case()
    with OpenAIImagesServer(image=clean_fix(case.source)) as server:
        state = run_loop(tmp_path, case.candidate, case.source, backend="openai", base_url=server.base_url,
                         budget=Budget(max_usd=0.001))
        assert server.requests == []
    assert state.stop == StopReason.budget_usd and state.stop_reason.startswith("budget: the next paid repair")
    assert state.spend.usd == 0 and not state.attempts


def test_a_run_paused_for_approval_waits_in_its_checkpoint_until_answered(tmp_path, openai_env):
    """In-process callers (a service, a chat) get the paused state back when nobody can answer; the
    run waits in its checkpoint, and resume_run with an answer carries on from there."""
    from fixloop.agent.runner import resume_run

    case = blurred_case()
    questions = []
    with OpenAIImagesServer(image=clean_fix(case.source)) as server:
        paused = run_loop(tmp_path, case.candidate, case.source, backend="openai", base_url=server.base_url,
                          approve=True)
        assert not paused.finished and paused.plan.paid and server.requests == []
        assert load_run(paused.run_id, db=tmp_path / "runs.sqlite").plan.tool == "openai"
        done = resume_run(paused.run_id, approver=lambda q: questions.append(q) or True, db=tmp_path / "runs.sqlite")
        assert len(server.requests) == 1
    assert questions and questions[0]["tool"] == "openai" and questions[0]["estimated_usd"] > 0
    assert done.finished and done.verdict == "pass"
    assert [a.outcome for a in done.attempts] == [Outcome.accepted]


def test_a_model_without_a_price_is_not_called_under_a_dollar_budget(tmp_path, openai_env):
    case = blurred_case()
    with OpenAIImagesServer(image=clean_fix(case.source)) as server:
        state = run_loop(tmp_path, case.candidate, case.source, backend="openai", base_url=server.base_url,
                         model="my-image-model")
        assert server.requests == []
    assert state.stop == StopReason.budget_usd
    assert state.stop_reason.startswith("budget: model 'my-image-model' has no price")
    assert [d.cause for d in state.open_defects.values()] == [OpenCause.unpriced]


def test_moderation_block_leaves_the_defect_open(tmp_path, openai_env):
    from tests.openai_server import moderation_error

    case = blurred_case()
    with OpenAIImagesServer(statuses=[moderation_error()]) as server:
        state = run_loop(tmp_path, case.candidate, case.source, backend="openai", base_url=server.base_url)
        assert len(server.requests) == 1  # never retried
    assert state.attempts[0].outcome == Outcome.failed and state.attempts[0].cause == AttemptCause.moderation
    assert state.attempts[0].reason.startswith("moderation")
    assert any(d.cause == OpenCause.moderation for d in state.open_defects.values())
    assert state.verdict == "fail"


# ---- the CLI: live progress, kill and resume, approval, bad input ----------------------------------


def cli(*args, env=None, input=None, timeout=240):
    return subprocess.run([*FIXLOOP, *args], capture_output=True, text=True, env=env, input=input, timeout=timeout)


def test_cli_repairs_the_example_with_progress_and_exit_code(tmp_path):
    example = build_example()
    paths = write_case(tmp_path, example["candidate"], example["source"], example["mask"])
    env = {**os.environ, "FIXLOOP_HOME": str(tmp_path / "home")}
    result = cli("repair", paths["image"], "--source", paths["source"], "--mask", paths["mask"],
                 "--out", str(tmp_path / "run"), "--json", env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["verdict"] == "pass" and data["stop"] == "clean" and data["stop_reason"].startswith("clean")
    for text in ("inspect: 3 finding(s)", "exposure_drift", "accepted", "final verdict pass"):
        assert text in result.stderr
    listed = cli("runs", env=env)
    assert data["run_id"] in listed.stdout


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["killed", "ctrl-c"])
def test_killed_run_resumes_without_repeating_a_finished_paid_call(tmp_path, stop):
    """The first paid call finishes (and is rolled back); the process is killed (or interrupted with
    Ctrl-C) while the second is in flight; --resume makes the second call again, never the first."""
    case = blurred_case()
    paths = write_case(tmp_path, case.candidate, case.source)
    release = threading.Event()
    mode = {"phase": "first run"}

    def answer(request):
        if mode["phase"] == "first run":
            if len(server.requests) == 1:
                return blurrier(request)
            release.wait(60)  # the second call hangs until the process is killed
        return clean_fix(case.source)(request)

    with OpenAIImagesServer(image=answer) as server:
        env = {**os.environ, "FIXLOOP_HOME": str(tmp_path / "home"), "OPENAI_API_KEY": "sk-loopback",
               "OPENAI_BASE_URL": server.base_url}
        process = subprocess.Popen([*FIXLOOP, "repair", paths["image"], "--source", paths["source"],
                                    "--backend", "openai", "--out", str(tmp_path / "run")],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                   preexec_fn=sigint_at_default)
        deadline = time.time() + 180
        while len(server.requests) < 2 and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert len(server.requests) == 2, process.communicate(timeout=5)
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=30)
        release.set()
        if stop == signal.SIGINT:
            assert process.returncode == 130
            assert stderr.strip().splitlines()[-1].startswith("fixloop: interrupted; continue it with fixloop repair --resume")
        run_id = stderr.split("run ", 1)[1].split()[0]
        mode["phase"] = "resumed"
        resumed = cli("repair", "--resume", run_id, env=env)
        assert resumed.returncode == 0, resumed.stderr
        masks = [editable(r) for r in server.requests]
    assert len(masks) == 3
    assert not np.array_equal(masks[0], masks[2]) and np.array_equal(masks[1], masks[2])
    state = load_run(run_id, db=tmp_path / "home" / "runs.sqlite")
    assert [a.outcome for a in state.attempts] == [Outcome.rolled_back, Outcome.accepted]
    assert state.spend.passes == 2 and state.verdict == "pass"


@pytest.mark.parametrize("answer, calls", [("n\n", 0), ("y\n", 1)])
def test_approve_asks_before_a_paid_call(tmp_path, answer, calls):
    case = blurred_case()
    paths = write_case(tmp_path, case.candidate, case.source)
    with OpenAIImagesServer(image=clean_fix(case.source)) as server:
        env = {**os.environ, "FIXLOOP_HOME": str(tmp_path / "home"), "OPENAI_API_KEY": "sk-loopback",
               "OPENAI_BASE_URL": server.base_url}
        result = cli("repair", paths["image"], "--source", paths["source"], "--backend", "openai", "--approve",
                     "--out", str(tmp_path / "run"), env=env, input=answer)
        assert len(server.requests) == calls
    assert "approve?" in result.stderr
    assert result.returncode == (0 if calls else 1), result.stderr
    data = json.loads((tmp_path / "run" / "report.json").read_text())
    if not calls:
        assert data["attempts"][0]["outcome"] == "declined" and data["attempts"][0]["cause"] == "declined"
        assert any(d["cause"] == "declined" for d in data["open_defects"])


@pytest.mark.parametrize("args, message", [
    ([], "give IMAGE"),
    (["{missing}"], "does not exist"),
    (["{image}", "--backend", "openai"], "OPENAI_API_KEY"),
    (["{image}", "--backend", "magic"], "--backend 'magic'"),
    (["{image}", "--backend", "diffusers"], "needs an inpainting checkpoint"),
    (["--resume", "no-such-run"], "no run 'no-such-run'"),
    (["{image}", "--out", "{folder}"], "would overwrite an input"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    image = save(photo("face_dfA_01.jpg"), tmp_path / "in" / "final.png")  # the name the run writes
    before = digest(tmp_path / "in")
    values = {"image": image, "missing": str(tmp_path / "nope.png"), "folder": str(tmp_path / "in")}
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "FIXLOOP_DIFFUSION_MODEL")}
    env["FIXLOOP_HOME"] = str(tmp_path / "home")
    result = cli("repair", *[a.format(**values) for a in args], env=env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert result.stdout == ""
    assert digest(tmp_path / "in") == before


# ---- diffusers backend on a tiny random pipeline -------------------------------------------------


def test_diffusers_attempts_keep_the_seed_and_change_one_variable(tmp_path):
    """A random tiny inpainting model cannot repair anything, so verify rolls every attempt back; what
    is checked is how the loop drives diffusion: denoise from the low end of the template's range to
    its middle, seed and everything else locked, and no pixel outside the mask ever delivered."""
    pytest.importorskip("diffusers")
    from fixloop.prompts.render import load_template
    from tests.tiny_pipelines import build_tiny_models

    models = build_tiny_models(tmp_path / "models")
    case = blurred_case()
    state = run_loop(tmp_path, case.candidate, case.source, backend="diffusers", model=str(models.inpaint),
                     budget=Budget(max_passes=2))
    assert [a.plan.tool for a in state.attempts] == ["diffusers", "diffusers"]
    first, second = (a.plan.parameters for a in state.attempts)
    low, high = load_template("texture-edge").diffusion.denoise
    assert first["strength"] == pytest.approx(low) and second["strength"] == pytest.approx((low + high) / 2)
    assert {k: v for k, v in first.items() if k != "strength"} == {k: v for k, v in second.items() if k != "strength"}
    assert first["seed"] == state.inputs.seed
    assert all(a.outcome == Outcome.rolled_back for a in state.attempts), [a.reason for a in state.attempts]
    assert np.array_equal(final_image(state), case.candidate)
    for attempt in state.attempts:  # the tool itself composites back: nothing outside its mask moved
        out = np.asarray(Image.open(Path(state.inputs.out_dir) / attempt.image))
        mask = np.asarray(Image.open(Path(state.inputs.out_dir) / attempt.mask)) > 0
        assert np.array_equal(out[~mask], case.candidate[~mask])


def test_diffusers_control_map_rung_uses_the_configured_controlnet(tmp_path):
    """With a ControlNet in the policy, the third rung adds the template's control map (canny for
    texture-edge) and keeps everything else; the map it conditioned on is saved with the attempt."""
    pytest.importorskip("diffusers")
    from tests.tiny_pipelines import build_tiny_models

    models = build_tiny_models(tmp_path / "models")
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[repair.backends.diffusers]\ncontrolnet = "{models.controlnet}"\n')
    case = blurred_case()
    state = run_loop(tmp_path, case.candidate, case.source, backend="diffusers", model=str(models.base),
                     policy=str(policy), budget=Budget(max_passes=3))
    plans = [a.plan for a in state.attempts]
    assert [p.change for p in plans][2] == "add a control map"
    third = plans[2].parameters
    assert third["control"] == "canny" and third["controlnet"] == str(models.controlnet)
    assert {k: v for k, v in third.items() if k not in ("control", "control_scale", "controlnet")} == plans[1].parameters
    control = state.attempts[2].control
    assert control and (Path(state.inputs.out_dir) / control).is_file()
    assert state.attempts[2].outcome in (Outcome.rolled_back, Outcome.accepted)


def test_gpt_image_that_cannot_repair_a_region_switches_to_diffusion_inpaint(tmp_path, openai_env):
    """GPT Image makes the region worse twice (finding's mask, wider mask); with a diffusion checkpoint
    configured, the third rung switches backend on the same mask, without a third paid call."""
    pytest.importorskip("diffusers")
    from tests.tiny_pipelines import build_tiny_models

    models = build_tiny_models(tmp_path / "models")
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[repair.backends.diffusers]\nmodel = "{models.inpaint}"\n')
    case = blurred_case()
    with OpenAIImagesServer(image=blurrier) as server:
        state = run_loop(tmp_path, case.candidate, case.source, backend="openai", base_url=server.base_url,
                         policy=str(policy), budget=Budget(max_passes=3))
        assert len(server.requests) == 2
    plans = [a.plan for a in state.attempts]
    assert [p.tool for p in plans] == ["openai", "openai", "diffusers"]
    assert plans[2].change.startswith("switch backend") and not plans[2].paid
    assert plans[2].mask_grow_px == plans[1].mask_grow_px > 0
    assert plans[2].parameters["model"] == str(models.inpaint) and plans[2].parameters["seed"] == state.inputs.seed
    assert state.spend.usd == pytest.approx(sum(a.cost_usd for a in state.attempts[:2]))


def test_the_recursion_backstop_reports_an_unverified_attempt_and_delivers_the_last_accepted_image(
        tmp_path, monkeypatch):
    """With the graph's step limit forced down to 4 (inspect, triage, plan, repair), the run stops
    after the first tool call, before verify: that attempt is reported as not verified, its output is
    not delivered, and the budget accounting still sees the pass."""
    from fixloop.agent import runner

    monkeypatch.setattr(runner, "recursion_limit", lambda passes: 4)
    example = build_example()
    state = run_loop(tmp_path, example["candidate"], example["source"], example["mask"] > 0)
    assert state.finished and state.stop == StopReason.recursion_limit and "recursion limit" in state.stop_reason
    assert [(a.outcome, a.cause) for a in state.attempts] == [(Outcome.failed, AttemptCause.not_verified)]
    assert state.spend.passes == 1 and state.pending is None
    assert np.array_equal(final_image(state), example["candidate"])
    assert len(report(state)["attempts"]) == 1
    assert load_run(state.run_id, db=tmp_path / "runs.sqlite").attempts == state.attempts


def test_bad_inputs_that_only_clash_together_fail_before_any_checkpoint(tmp_path):
    """A mask of another size than the image: one line, exit 2, and no run left behind to resume."""
    image = save(photo("face_dfA_01.jpg"), tmp_path / "in" / "image.png")
    mask = save(np.full((40, 40), 255, np.uint8), tmp_path / "in" / "mask.png")
    env = {**os.environ, "FIXLOOP_HOME": str(tmp_path / "home")}
    result = cli("repair", image, "--mask", mask, "--out", str(tmp_path / "run"), env=env)
    assert result.returncode == 2 and "mask" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    assert "interrupted" not in cli("runs", env=env).stdout


def test_a_corrupt_checkpoint_file_is_one_line_exit_2(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "runs.sqlite").write_bytes(b"this is not a database" * 100)
    env = {**os.environ, "FIXLOOP_HOME": str(home)}
    for args in (["runs"], ["repair", "--resume", "whatever"]):
        result = cli(*args, env=env)
        assert result.returncode == 2 and "is not a fixloop checkpoint file" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_an_out_folder_holding_another_run_is_refused(tmp_path):
    example = build_example()
    paths = write_case(tmp_path, example["candidate"], example["source"], example["mask"])
    env = {**os.environ, "FIXLOOP_HOME": str(tmp_path / "home")}
    first = cli("repair", paths["image"], "--source", paths["source"], "--mask", paths["mask"],
                "--out", str(tmp_path / "run"), env=env)
    assert first.returncode == 0, first.stderr
    before = digest(tmp_path / "run")
    again = cli("repair", paths["image"], "--out", str(tmp_path / "run"), env=env)
    assert again.returncode == 2 and "already holds another run" in again.stderr
    assert digest(tmp_path / "run") == before


def test_a_run_that_ran_out_of_budget_goes_on_when_resumed_with_more(tmp_path):
    """One pass allowed: the light pass runs and the budget stops the run. Resumed with three passes,
    it carries on from triage (the spill is restored) and rewrites its outputs; the first pass is
    not repeated."""
    from fixloop.agent.runner import resume_run

    example = build_example()
    first = run_loop(tmp_path, example["candidate"], example["source"], example["mask"] > 0,
                     budget=Budget(max_passes=1))
    assert first.stop == StopReason.budget_passes and first.stop_reason == "budget: 1 of 1 passes used"
    assert first.verdict == "fail"
    same = resume_run(first.run_id, db=tmp_path / "runs.sqlite")
    assert same.stop_reason == first.stop_reason and len(same.attempts) == 1  # no new limits: nothing to do
    more = resume_run(first.run_id, db=tmp_path / "runs.sqlite", budget=Budget(max_passes=3))
    assert more.finished and more.verdict == "pass" and more.stop == StopReason.clean
    assert [a.plan.tool for a in more.attempts] == ["local.exposure_color", "local.composite_back"]
    assert more.spend.passes == 2 and more.budget.max_passes == 3
    assert report(more)["verdict"] == "pass" and len(report(more)["attempts"]) == 2
