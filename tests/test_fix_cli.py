"""`fixloop fix` run as a person would: the real console script on real photos with injected defects;
the repaired file passes the check that found the defect, inputs stay untouched, bad input exits 2
with one line and writes nothing."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import defects
from tests.conftest import photo
from tests.test_cli import FIXLOOP as FIXLOOP_CMD, fixloop


def save(folder: Path, name: str, array: np.ndarray) -> Path:
    path = folder / name
    Image.fromarray(array).save(path)
    return path


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def verdict(*args) -> dict:
    result = fixloop("check", *args, "--json")
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def summary_line(result) -> str:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    return lines[0]


def test_exposure_and_white_balance_drift_repaired_against_the_source(tmp_path):
    image = photo("face_obama_01.jpg")
    from fixloop.checks.color import white_balance_gains

    drifted = defects.jpeg(defects.to_srgb(defects.to_linear(image) * 2 ** -0.5 * white_balance_gains(30)), 90)
    src, cand = save(tmp_path, "source.png", image), save(tmp_path, "candidate.png", drifted)
    before = verdict(cand, "--source", src, "--only", "exposure_drift", "--only", "color_temperature_drift")
    assert {f["kind"] for f in before["findings"]} == {"exposure_drift", "color_temperature_drift"}
    hashes = digest(tmp_path)
    line = summary_line(fixloop("fix", cand, "--tool", "local.exposure_color", "--source", src))
    fixed = tmp_path / "candidate-fixed.png"
    assert line.startswith("local.exposure_color: wrote") and str(fixed) in line and "$0.0000" in line
    assert " s, " in line and "(910x1137)" in line
    after = verdict(fixed, "--source", src, "--only", "exposure_drift", "--only", "color_temperature_drift")
    assert after["verdict"] == "pass" and after["findings"] == []
    assert {k: v for k, v in digest(tmp_path).items() if k != fixed.name} == hashes, "inputs untouched"


def test_named_target_without_a_source_writes_the_named_output(tmp_path):
    warm = defects.white_balance(photo("gen_clean_01.jpg"), 40).candidate
    cand = save(tmp_path, "warm.png", warm)
    out = tmp_path / "out" / "neutral.jpg"
    summary_line(fixloop("fix", cand, "--tool", "local.exposure_color", "--param", "target=neutral daylight",
                         "--out", out))
    fixed = np.asarray(Image.open(out).convert("RGB"))
    assert fixed.shape == warm.shape
    # cooler than the warm input: blue gained on red
    assert fixed[..., 2].mean() - fixed[..., 0].mean() > warm[..., 2].mean() - warm[..., 0].mean() + 5


def test_defringe_takes_its_ring_from_edge_halo(tmp_path):
    image = photo("face_obama_04.jpg")
    case = defects.halo_ring(image, 0.8)
    src, cand = save(tmp_path, "source.png", image), save(tmp_path, "haloed.png", case.candidate)
    assert [f["kind"] for f in verdict(cand, "--source", src, "--only", "edge_halo")["findings"]] == ["edge_halo"]
    ring = tmp_path / "ring.png"
    summary_line(fixloop("fix", cand, "--tool", "local.defringe", "--source", src, "--mask-out", ring))
    fixed = tmp_path / "haloed-fixed.png"
    assert verdict(fixed, "--source", src, "--only", "edge_halo")["verdict"] == "pass"
    changed = (np.asarray(Image.open(fixed)) != case.candidate).any(axis=2)
    ring_mask = np.asarray(Image.open(ring)) > 127
    assert changed.any() and not (changed & ~ring_mask).any()


def test_defringe_keeps_a_cutouts_alpha(tmp_path):
    cutout = defects.halo_ring_cutout(photo("face_dfE_01.jpg"), 0.8).candidate
    cand = save(tmp_path, "cutout.png", cutout)
    assert verdict(cand, "--only", "edge_halo")["findings"][0]["evidence"]["boundary"] == "alpha"
    summary_line(fixloop("fix", cand, "--tool", "local.defringe"))
    fixed = np.asarray(Image.open(tmp_path / "cutout-fixed.png"))
    assert fixed.shape == cutout.shape and np.array_equal(fixed[..., 3], cutout[..., 3])
    assert verdict(tmp_path / "cutout-fixed.png", "--only", "edge_halo")["verdict"] == "pass"


def test_no_finding_means_nothing_to_do(tmp_path):
    cand = save(tmp_path, "clean.png", photo("body_bus_01.jpg"))
    result = fixloop("fix", cand, "--tool", "local.defringe")
    assert result.returncode == 0, result.stderr
    assert "edge_halo: no finding" in result.stdout and "nothing written" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.png"]


def test_composite_back_and_flip_back_pass_their_checks(tmp_path):
    image = photo("group_couple_01.jpg")
    spill = defects.edit_spills_outside_mask(image)
    src = save(tmp_path, "source.png", image)
    cand = save(tmp_path, "spill.png", spill.candidate)
    mask = save(tmp_path, "mask.png", spill.mask.astype(np.uint8) * 255)
    assert verdict(cand, "--source", src, "--mask", mask, "--only", "mask_spill")["verdict"] == "fail"
    summary_line(fixloop("fix", cand, "--tool", "local.composite_back", "--source", src, "--mask", mask,
                         "--param", "feather=12", "--out", tmp_path / "restored.png"))
    assert verdict(tmp_path / "restored.png", "--source", src, "--mask", mask, "--only", "mask_spill")["verdict"] == "pass"

    flipped = save(tmp_path, "flipped.png", defects.flip(image).candidate)
    summary_line(fixloop("fix", flipped, "--tool", "local.flip_back", "--source", src))
    assert verdict(tmp_path / "flipped-fixed.png", "--source", src, "--only", "mirrored")["verdict"] == "pass"


def test_expand_canvas_writes_the_bigger_image_and_its_outpaint_mask(tmp_path):
    image = photo("body_skier_01.jpg")  # 640 x 425
    cand = save(tmp_path, "skier.png", image)
    line = summary_line(fixloop("fix", cand, "--tool", "local.expand_canvas", "--param", "aspect=1:1",
                                "--param", "anchor=top", "--mask-out", tmp_path / "outpaint.png"))
    assert "(640x640)" in line
    bigger = np.asarray(Image.open(tmp_path / "skier-fixed.png"))
    outpaint = np.asarray(Image.open(tmp_path / "outpaint.png")) > 127
    assert bigger.shape == (640, 640, 3) and np.array_equal(bigger[:425], image)
    assert not outpaint[:425].any() and outpaint[425:].all()


def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path):
    image = photo("hand_signing_01.jpg")  # 400 x 300
    cand = save(tmp_path, "cand.png", image)
    src = save(tmp_path, "src.png", image)
    small = save(tmp_path, "small_mask.png", np.zeros((30, 40), np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    before = digest(tmp_path)
    cases = {
        "unknown tool": ["fix", cand, "--tool", "local.defringes"],
        "missing file": ["fix", tmp_path / "nope.png", "--tool", "local.flip_back"],
        "not an image": ["fix", tmp_path / "notes.txt", "--tool", "local.flip_back"],
        "mask needed": ["fix", cand, "--tool", "local.composite_back", "--source", src],
        "mask size": ["fix", cand, "--tool", "local.composite_back", "--source", src, "--mask", small],
        "out is an input": ["fix", cand, "--tool", "local.flip_back", "--source", src, "--out", src],
        "out format": ["fix", cand, "--tool", "local.flip_back", "--out", tmp_path / "x.txt"],
        "bad param": ["fix", cand, "--tool", "local.expand_canvas", "--param", "aspect"],
        "repair refuses": ["fix", cand, "--tool", "local.exposure_color"],
        "not mirrored": ["fix", cand, "--tool", "local.flip_back", "--source", src],
        "needs source for the check": ["fix", cand, "--tool", "openai", "--template", "narrow-edit"],
    }
    for name, args in cases.items():
        result = fixloop(*args)
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        assert result.stdout == "", name
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fixloop: "), (name, result.stderr)
        assert digest(tmp_path) == before, name


def test_help_lists_fix():
    result = fixloop("fix", "--help")
    assert result.returncode == 0 and "--tool" in result.stdout and "--param" in result.stdout


def test_openai_fix_renders_the_hands_template_and_takes_the_mask_from_the_finding(tmp_path):
    """`fixloop fix --tool openai --template hands` on a generated image with a malformed hand: the
    prompt is the rendered template, the mask comes from hand_malformed's finding."""
    import os

    from tests.openai_server import OpenAIImagesServer

    image = tmp_path / "hand.png"
    Image.fromarray(photo("gen_hand_malformed_03.jpg")).save(image)
    with OpenAIImagesServer(api_key="sk-loopback") as server:
        env = {**os.environ, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-loopback"}
        result = subprocess.run([*FIXLOOP_CMD, "fix", str(image), "--tool", "openai", "--template", "hands",
                                 "--out", str(tmp_path / "fixed.png")],
                                capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        sent = server.requests[0]
        prompt = sent.field("prompt")
        assert "hand" in prompt.lower() and "{" not in prompt
        alpha = sent.mask.decode()
        alpha = alpha[..., 3] if alpha.ndim == 3 else alpha
        assert 0 < (alpha == 0).mean() < 0.5  # only the hand region is editable
    assert (tmp_path / "fixed.png").is_file()
