"""`fixloop chat` end to end, as a script: one message per line on stdin, replies on stdout.

A shared photo darkened and spilled outside its mask: check, repair, "make it a bit warmer", undo,
with the images on disk after each step; and a chat killed (SIGKILL) after "fix it" and started
again on the same conversation id: it remembers the thread, and "a bit cooler" continues from the
last final image.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fixloop.apps.chat import split_message
from tests import defects
from tests.conftest import photo

FIXLOOP = [sys.executable, "-m", "fixloop.apps.cli"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat-images")
    source = cv2.resize(photo("face_leslie_01.jpg"), (512, 512), interpolation=cv2.INTER_AREA)
    case = defects.edit_spills_outside_mask(source)
    edit = defects.exposure(case.candidate, -0.7).candidate
    paths = {"edit": folder / "edit.png", "source": folder / "source.png", "mask": folder / "mask.png"}
    Image.fromarray(edit).save(paths["edit"])
    Image.fromarray(source).save(paths["source"])
    Image.fromarray(case.mask.astype(np.uint8) * 255).save(paths["mask"])
    return paths


def environment(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env.update(FIXLOOP_HOME=str(tmp_path / "home"), COLUMNS="200")
    return env


def chat(tmp_path, args: list[str], lines: list[str], timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([*FIXLOOP, "chat", *args], input="\n".join(lines) + "\n", capture_output=True,
                          text=True, env=environment(tmp_path), cwd=tmp_path, timeout=timeout)


def replies(stdout: str) -> list[str]:
    """The text of each reply (a 'fixloop>' line and the lines indented under it)."""
    found, current = [], None
    for line in stdout.splitlines():
        if line.startswith("fixloop> "):
            current = [line[len("fixloop> "):]]
            found.append(current)
        elif current is not None and line.startswith("         "):
            current.append(line.strip())
        else:
            current = None
    return ["\n".join(r) for r in found]


def path_after(label: str, text: str) -> Path:
    match = re.search(re.escape(label) + r" (\S+)", text)
    assert match, f"no {label!r} in {text!r}"
    return Path(match.group(1))


def test_a_scripted_session_checks_repairs_warms_and_undoes(tmp_path, images):
    out = tmp_path / "chat-out"
    done = chat(tmp_path, [str(images["edit"]), "--source", str(images["source"]), "--out", str(out),
                           "--conversation", "scripted"],
                [f"/mask {images['mask']}", "fix it", "make it a bit warmer", "undo", "/status"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "backend local (offline: no OPENAI_API_KEY set)" in done.stdout
    first, masked, fixed, warmer, undone, status = replies(done.stdout)
    assert "Verdict: FAIL" in first and "exposure_drift" in first
    assert path_after("Review sheet:", first).is_file()
    assert "mask_spill" in masked and path_after("Review sheet:", masked).is_file()

    assert "Repaired, and verified by the checks: exposure_drift, mask_spill." in fixed
    final = path_after("Final image:", fixed)
    assert final.is_file() and final.parent.parent == out / "runs"
    assert path_after("Review sheet:", fixed).is_file()

    warm = path_after("Image:", warmer)
    assert warm.is_file() and warm.parent == out / "steps" and "from final.png" in warmer
    before, after = (np.asarray(Image.open(p).convert("RGB"), dtype=float) for p in (final, warm))
    warmth = [image[..., 0].mean() / image[..., 2].mean() for image in (before, after)]
    assert warmth[1] > warmth[0] * 1.01  # red over blue went up: warmer

    assert str(final) in undone and final.is_file()
    assert f"Current image: {final}" in status
    assert "repair run" in done.stderr  # progress of the repair went to stderr


def test_killed_after_fix_it_and_restarted_on_the_same_conversation(tmp_path, images):
    out = tmp_path / "chat-out"
    process = subprocess.Popen([*FIXLOOP, "chat", str(images["edit"]), "--source", str(images["source"]),
                                "--out", str(out), "--conversation", "killed"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env=environment(tmp_path), cwd=tmp_path)
    try:
        process.stdin.write(f"/mask {images['mask']}\nfix it\n")
        process.stdin.flush()
        seen, deadline = [], time.monotonic() + 300
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
            if "Final image:" in line:
                break
        final = path_after("Final image:", "".join(seen))
        assert final.is_file()
    finally:
        process.send_signal(signal.SIGKILL)  # no goodbye, no flush: the checkpoint is all that is left
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    again = chat(tmp_path, ["--conversation", "killed"], ["a bit cooler", "status"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert "continuing conversation killed" in again.stdout
    cooler, status = replies(again.stdout)
    assert "from final.png" in cooler and "cooler by 10 mired" in cooler
    cool = path_after("Image:", cooler)
    assert cool.is_file() and cool.parent == out / "steps"
    mired = float(re.search(r"([-+]\d+(?:\.\d+)?) mired\. Image", cooler).group(1))
    assert -15 < mired < -5
    assert "exposure_drift repair" in status and "mask_spill repair" in status and str(cool) in status


def test_bad_arguments_are_one_line_and_exit_2(tmp_path):
    done = chat(tmp_path, [str(tmp_path / "missing.png")], [])
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and "no such file" in done.stderr
    bad = chat(tmp_path, ["--backend", "nope"], [])
    assert bad.returncode == 2 and "--backend 'nope'" in bad.stderr


def test_split_message(tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    text, attachments, problems = split_message(f"check {image} please")
    assert text == "check please" and attachments[0].path == str(image) and not problems
    text, attachments, problems = split_message(f"/source {image}")
    assert attachments[0].role == "source" and text == ""
    assert split_message("/source nowhere.png")[2] == ["nowhere.png: no such file"]
    assert split_message("/undo")[0] == "undo"
