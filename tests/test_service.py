"""The service layer and the public API every front end shares (agent/service.py, fixloop/__init__.py).

Inputs as paths, bytes and arrays give the same report; a repair run takes in-memory images and
keeps them inside its own folder; a run paused before a paid call is answered through the service;
template slots come from the command line; bad input is one line.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import fixloop
from fixloop.agent import service
from fixloop.agent.example import build_example
from fixloop.checks.images import InputError
from tests import defects
from tests.conftest import photo
from tests.openai_server import OpenAIImagesServer

FIXLOOP = [sys.executable, "-m", "fixloop.apps.cli"]


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def save(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def summary(report) -> list[tuple[str, str, float]]:
    return [(f.kind, f.priority.value, round(f.score, 3)) for f in report.findings]


@pytest.fixture(scope="module")
def darkened():
    source = cv2.resize(photo("face_obama_01.jpg"), (512, 512), interpolation=cv2.INTER_AREA)
    return source, defects.exposure(source, -0.8).candidate


def test_paths_bytes_and_arrays_give_the_same_report(tmp_path, darkened):
    source, candidate = darkened
    paths = save(candidate, tmp_path / "candidate.png"), save(source, tmp_path / "source.png")
    from_paths = fixloop.check(*paths)
    from_bytes = fixloop.check(png_bytes(candidate), source=png_bytes(source))
    from_arrays = fixloop.check(candidate, source=source)
    assert "exposure_drift" in [f.kind for f in from_paths.findings]
    assert from_paths.verdict == "fail"
    assert summary(from_paths) == summary(from_bytes) == summary(from_arrays)
    assert from_paths.inputs.candidate == str(paths[0]) and from_bytes.inputs.candidate is None


@pytest.mark.parametrize("candidate, message", [
    (b"not an image", "is not an image Pillow can read"),
    (b"", "is empty"),
    (12, "must be a file path, image bytes or an array"),
    (np.zeros((4, 4, 5), dtype=np.uint8), "pass H x W x 3"),
])
def test_bad_in_memory_input_is_one_line(candidate, message):
    with pytest.raises(InputError) as error:
        service.check(candidate)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_an_unknown_check_name_suggests_the_closest(darkened):
    with pytest.raises(InputError, match="did you mean 'exposure_drift'"):
        service.check(darkened[1], only=["exposure_drif"])


def test_public_repair_takes_arrays_and_keeps_them_inside_its_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("FIXLOOP_HOME", str(tmp_path / "home"))
    example = build_example()
    run = fixloop.repair(example["candidate"], source=png_bytes(example["source"]), mask=example["mask"] > 0,
                         out=tmp_path / "run")
    assert run.verdict == "pass" and run.report.verdict == "pass"
    assert run.final_image.is_file() and run.final_image.parent == tmp_path / "run"
    kept = sorted(p.name for p in (tmp_path / "run" / "inputs").iterdir())
    assert kept == ["image.png", "mask.png", "source.png"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "run" / "inputs" / "image.png")), example["candidate"])
    assert [a.plan.target.kind for a in run.report.attempts if a.outcome.value == "accepted"] == [
        "exposure_drift", "mask_spill"]


def blurred(size: int = 1024):
    image = cv2.resize(photo("face_harington_01.jpg"), (size, size), interpolation=cv2.INTER_AREA)
    return defects.blur_region(image, 3.0)


def test_a_paused_run_is_answered_through_the_service(tmp_path, monkeypatch):
    """With approve and no one to ask, the run waits in its checkpoint; the service shows the question
    and an answer carries it on (here: yes, so the loopback server gets exactly one paid call)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-loopback")
    case = blurred()
    db = tmp_path / "runs.sqlite"
    with OpenAIImagesServer() as server:
        order = service.RepairOrder(image=save(case.candidate, tmp_path / "in" / "c.png"),
                                    source=save(case.source, tmp_path / "in" / "s.png"), backend="openai",
                                    base_url=server.base_url, approve=True, out=tmp_path / "run", max_passes=1)
        paused = service.start_repair(order, db=db)
        assert not paused.finished and len(server.requests) == 0
        question = service.waiting_for_approval(paused.run_id, db)
        assert question["tool"] == "openai" and question["estimated_usd"] > 0
        done = service.answer_approval(paused.run_id, True, db=db)
        assert len(server.requests) == 1
    assert done.finished and service.waiting_for_approval(paused.run_id, db) is None
    assert service.run_report(done).attempts[0].plan.tool == "openai"
    with pytest.raises(InputError, match="nothing to approve"):
        service.answer_approval(paused.run_id, True, db=db)


def test_fix_slot_fills_the_template_and_templates_lists_it(tmp_path):
    image = cv2.resize(photo("face_obama_01.jpg"), (1024, 1024), interpolation=cv2.INTER_AREA)
    mask = np.zeros((1024, 1024), dtype=np.uint8)
    mask[400:700, 400:700] = 255
    paths = [str(save(image, tmp_path / "in.png")), str(save(mask, tmp_path / "mask.png"))]
    with OpenAIImagesServer() as server:
        env = {**os.environ, "OPENAI_API_KEY": "sk-loopback", "OPENAI_BASE_URL": server.base_url}
        base = [*FIXLOOP, "fix", paths[0], "--tool", "openai", "--template", "hands", "--mask", paths[1]]
        missing = subprocess.run([*base, "--out", str(tmp_path / "a.png")], capture_output=True, text=True, env=env)
        filled = subprocess.run([*base, "--slot", "hand=the left hand", "--out", str(tmp_path / "b.png")],
                                capture_output=True, text=True, env=env)
        prompts = [r.field("prompt") for r in server.requests]
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "--slot" in missing.stderr
    assert not (tmp_path / "a.png").exists()
    assert filled.returncode == 0, filled.stderr
    assert len(prompts) == 1 and "the left hand" in prompts[0]
    listed = subprocess.run([*FIXLOOP, "templates"], capture_output=True, text=True)
    assert listed.returncode == 0 and "hands" in listed.stdout and "--slot hand=" in listed.stdout


def test_a_slot_without_a_template_is_refused(tmp_path):
    image = str(save(cv2.resize(photo("face_obama_01.jpg"), (256, 256)), tmp_path / "in.png"))
    result = subprocess.run([*FIXLOOP, "fix", image, "--tool", "local.exposure_color", "--slot", "hand=x"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "pass --template" in result.stderr


@pytest.mark.parametrize("policy_text, message", [
    ('[repair.backends.opnai]\nmodel = "x"\n', "[repair.backends.opnai]: no such backend"),
    ('[repair.backends.openai]\nqualty = "low"\n', "did you mean 'quality'"),
])
def test_backend_settings_in_the_policy_are_validated_in_one_line(tmp_path, policy_text, message):
    policy = tmp_path / "policy.toml"
    policy.write_text(policy_text)
    with pytest.raises(InputError) as error:
        service.backend_ready("local", None, service.resolve_policy(policy))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_backends_come_from_the_registry_with_their_settings(tmp_path, monkeypatch):
    from fixloop.agent.planner import PlanContext

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    found = {b.name: b for b in service.backends()}
    assert set(found) == {"local", "openai", "diffusers"}
    assert found["local"].ready == "ready" and not found["local"].paid
    assert found["openai"].paid and "OPENAI_API_KEY" in found["openai"].ready and "OPENAI_API_KEY" in found["openai"].env
    policy = tmp_path / "policy.toml"
    policy.write_text('[repair.backends.openai]\nquality = "low"\n')
    settings = service.resolve_policy(policy).repair
    ctx = PlanContext(backend="openai", settings=settings, image_size=(1024, 1024), has_source=True, has_mask=True)
    assert ctx.setting("quality") == "low" and ctx.setting("model") == ""
    assert ctx.spec().estimate_usd(None, (1024, 1024), "low") < ctx.spec().estimate_usd(None, (1024, 1024), "high")
    listed = subprocess.run([*FIXLOOP, "backends"], capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"})
    assert listed.returncode == 0 and "local" in listed.stdout and "[repair.backends.openai] quality" in listed.stdout
