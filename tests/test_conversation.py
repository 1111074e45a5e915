"""The conversation graph (agent/conversation.py) on a shared photo, through the service layer.

A darkened edit that also spilled outside its mask: a check finds both, "fix only the exposure"
repairs that one and leaves the spill (and says so), light changes continue from the current image
and are measured, undo steps back, a repair that verify did not accept is never called fixed, a paid
call waits for yes or no (the loopback GPT Image server sees no request before the yes), and a repair
recorded by a process that died is picked up by the next message.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fixloop.agent.conversation import Attachment, Conversation, assign_roles
from fixloop.agent.intent import Request
from tests import defects
from tests.conftest import photo


def save(array: np.ndarray, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


@pytest.fixture(scope="module")
def spilled(tmp_path_factory):
    """source, mask and a candidate that spilled left of its mask and went 0.7 EV darker (512 px)."""
    folder = tmp_path_factory.mktemp("spilled")
    source = cv2.resize(photo("face_obama_01.jpg"), (512, 512), interpolation=cv2.INTER_AREA)
    case = defects.edit_spills_outside_mask(source)
    candidate = defects.exposure(case.candidate, -0.7).candidate
    return {"edit": save(candidate, folder / "edit.png"), "source": save(source, folder / "source.png"),
            "mask": save(case.mask.astype(np.uint8) * 255, folder / "mask.png")}


def open_chat(tmp_path, name="c1", **kwargs):
    return Conversation.open(name, out_dir=tmp_path / "out", db=tmp_path / "runs.sqlite",
                             backend=kwargs.pop("backend", "local"), **kwargs)


def attach(paths: dict, *roles: str) -> list[Attachment]:
    return [Attachment(path=paths[role], role=None if role == "edit" else role, name=Path(paths[role]).name)
            for role in roles]


def test_check_repair_restricted_adjust_and_undo(tmp_path, spilled):
    with open_chat(tmp_path) as chat:
        first = chat.send("check this", attach(spilled, "edit", "source", "mask"))
        kinds = [f.kind for f in first.findings]
        assert first.verdict == "fail" and kinds[:2] == ["mask_spill", "exposure_drift"]
        assert "worst first" in first.text and Path(first.review_sheet).is_file()
        assert "I can repair for free: mask_spill, exposure_drift" in first.text

        fixed = chat.send("fix only the exposure")
        assert "Repairing only: exposure_drift" in fixed.text
        assert "Repaired, and verified by the checks: exposure_drift." in fixed.text
        assert "Left alone, as you asked: mask_spill" in fixed.text
        assert "mask_spill" not in fixed.text.split("Repaired, and verified by the checks:")[1].split("\n")[0]
        assert Path(fixed.final_image).is_file() and [f.kind for f in fixed.findings] == ["mask_spill"]
        state = chat.state()
        assert len(state.steps) == 2 and state.steps[-1].image == fixed.final_image

        warmer = chat.send("now make it a bit warmer")
        path = Path(warmer.final_image)
        assert path.is_file() and path.parent.name == "steps"
        assert "from final.png" in warmer.text
        mired = float(warmer.text.split(" mired. Image")[0].rsplit(" ", 1)[1])
        assert 5 < mired < 15  # asked +10 mired of the repaired image, measured after
        assert chat.state().current == str(path)

        back = chat.send("undo")
        assert chat.state().current == fixed.final_image and fixed.final_image in back.text
        original = chat.send("go back to the original")
        assert chat.state().current == spilled["edit"] and "Now at the original" in original.text
        assert "nothing to undo" in chat.send("undo").text

    from fixloop.agent import service

    runs = service.list_runs(tmp_path / "runs.sqlite")  # the conversation's thread is no run
    assert [r.run_id for r in runs] == chat_runs(tmp_path)


def chat_runs(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "out" / "runs").iterdir())


def test_a_repair_verify_did_not_accept_is_never_called_fixed(tmp_path):
    """A softened region: the offline backend has no repair for texture_blur; the reply says what
    stays open and what would fix it, and claims nothing."""
    source = cv2.resize(photo("face_harington_01.jpg"), (512, 512), interpolation=cv2.INTER_AREA)
    case = defects.blur_region(source, 3.0)
    paths = {"edit": save(case.candidate, tmp_path / "soft.png"), "source": save(source, tmp_path / "src.png")}
    with open_chat(tmp_path) as chat:
        checked = chat.send("", attach(paths, "edit", "source"))
        assert "texture_blur" in [f.kind for f in checked.findings]
        assert "need(s) a generative backend" in checked.text
        reply = chat.send("fix it")
    assert "Repaired" not in reply.text and "No repair was accepted" in reply.text
    assert "Still open: texture_blur" in reply.text and "What would fix it" in reply.text
    assert reply.final_image is None


def test_roles_of_images_in_one_message():
    a, b = Attachment(path="/x/edit.png"), Attachment(path="/x/photo.png")
    assert [r for _, r in assign_roles([a, b], Request(), False)] == ["candidate", "source"]
    before = Attachment(path="/x/1.png", name="before.jpg")
    roles = dict((x.path, r) for x, r in assign_roles([before, Attachment(path="/x/2.png")], Request(), False))
    assert roles == {"/x/1.png": "source", "/x/2.png": "candidate"}
    assert assign_roles([a], Request(image_role="reference"), True)[0][1] == "reference"
    assert assign_roles([a], Request(image_role="reference"), False)[0][1] == "candidate"


def test_budget_status_and_protection_are_remembered(tmp_path, spilled):
    with open_chat(tmp_path) as chat:
        chat.send("", attach(spilled, "edit"))
        assert "free (local) repairs only" in chat.send("free fixes only").text
        assert "Noted: I will keep face" in chat.send("don't change her face").text
        status = chat.send("status").text
    assert "free repairs only" in status and "Keeping: face" in status and "no original" in status
    with open_chat(tmp_path) as again:  # a new process: the same conversation
        assert again.state().free_only and again.state().protect == ["face"]
        assert [t.role for t in again.state().turns][:2] == ["user", "assistant"]


def test_a_repair_recorded_by_a_process_that_died_is_picked_up(tmp_path, spilled, monkeypatch):
    from fixloop.agent import service

    real = service.start_repair

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies while the loop runs

    with open_chat(tmp_path) as chat:
        chat.send("", attach(spilled, "edit", "source", "mask"))
        monkeypatch.setattr(service, "start_repair", killed)
        with pytest.raises(KeyboardInterrupt):
            chat.send("fix it")
    monkeypatch.setattr(service, "start_repair", real)
    with open_chat(tmp_path) as restarted:
        assert restarted.state().order is not None
        reply = restarted.send("status")
        assert "Picking up repair run" in reply.text and "Repaired, and verified by the checks" in reply.text
        assert restarted.state().order is None and len(restarted.state().steps) == 3


# ---- a paid backend: ask before the call ---------------------------------------------------------


def test_a_paid_call_waits_for_yes_or_no(tmp_path, monkeypatch):
    from tests.openai_server import OpenAIImagesServer
    from tests.test_repair_loop import blurred_case, clean_fix

    case = blurred_case()
    paths = {"edit": save(case.candidate, tmp_path / "soft.png"), "source": save(case.source, tmp_path / "src.png")}
    monkeypatch.setenv("OPENAI_API_KEY", "sk-loopback")
    with OpenAIImagesServer(image=clean_fix(case.source)) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        with open_chat(tmp_path, backend="openai") as chat:
            chat.send("", attach(paths, "edit", "source"))
            asked = chat.send("fix it")
            assert asked.waiting is not None and "Approve? (yes / no)" in asked.text
            assert "about $" in asked.text and server.requests == []
            assert "Repaired" not in asked.text
            declined = chat.send("no")
            assert server.requests == [] and "Declined" in declined.text and "Repaired" not in declined.text
            assert chat.state().waiting is None

            again = chat.send("fix it")
            assert again.waiting is not None and server.requests == []
            done = chat.send("yes, go ahead")
            assert len(server.requests) == 1
            assert "Repaired, and verified by the checks: texture_blur" in done.text
            assert Path(done.final_image).is_file() and chat.state().spent_usd > 0
