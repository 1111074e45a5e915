"""The Slack bot (apps/slack.py) against a loopback Slack Web API, with signed events.

The real ``slack_sdk`` WebClient talks to tests/slack_server.py (``SLACK_API_URL``); events and button
clicks are posted, signed with the signing secret, to the bot's HTTP endpoint. A mention with a
darkened, spilled edit (with its original and mask) gets a thread reply with the findings and a
review-sheet upload; the Repair button gives a repaired image in the thread; a retried event is
handled once; a bad or stale signature gets 401 and no reply.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fixloop.apps.slack import BotSettings, EventServer, FixloopBot, reply_blocks, strip_mentions
from tests import defects
from tests.conftest import photo
from tests.slack_server import BOT_USER, SlackServer

SECRET = "loopback-signing-secret"
CHANNEL = "C0FIXLOOP"


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def sign(body: str, timestamp: int | None = None, secret: str = SECRET) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={digest}"}


def post(url: str, body: str, content_type: str, headers: dict[str, str]) -> tuple[int, float]:
    request = urllib.request.Request(url, data=body.encode(), method="POST",
                                     headers={"Content-Type": content_type, **headers})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, time.monotonic() - started


def event_body(event_id: str, ts: str, text: str, files: list[dict]) -> str:
    return json.dumps({
        "token": "unused", "team_id": "T00000001", "api_app_id": "A00000001", "type": "event_callback",
        "event_id": event_id, "event_time": int(time.time()),
        "authorizations": [{"team_id": "T00000001", "user_id": BOT_USER, "is_bot": True}],
        "event": {"type": "app_mention", "user": "UARTIST", "text": text, "ts": ts, "event_ts": ts,
                  "channel": CHANNEL, "files": files}})


def click(action_id: str, thread_ts: str, message_ts: str) -> str:
    payload = {"type": "block_actions", "team": {"id": "T00000001"}, "user": {"id": "UARTIST"},
               "api_app_id": "A00000001", "token": "unused", "trigger_id": "1.2.3",
               "container": {"type": "message", "message_ts": message_ts, "channel_id": CHANNEL,
                             "is_ephemeral": False, "thread_ts": thread_ts},
               "channel": {"id": CHANNEL, "name": "edits"},
               "message": {"type": "message", "ts": message_ts, "thread_ts": thread_ts, "user": BOT_USER, "text": "…"},
               "response_url": "http://127.0.0.1:9/unused",
               "actions": [{"action_id": action_id, "block_id": "fixloop", "value": action_id, "type": "button",
                            "action_ts": str(time.time())}]}
    return "payload=" + urllib.parse.quote(json.dumps(payload))


@pytest.fixture(scope="module")
def slack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slack")
    with SlackServer() as server:
        settings = BotSettings(bot_token=server.token, signing_secret=SECRET, api_url=server.api_url,
                               backend="local", out=folder / "out", db=folder / "runs.sqlite")
        bot = FixloopBot(settings)
        events = EventServer(bot, port=0, host="127.0.0.1").start()
        yield server, bot, events
        events.stop()
        bot.stop()


@pytest.fixture(scope="module")
def edit_files():
    source = cv2.resize(photo("face_obama_02.jpg"), (512, 512), interpolation=cv2.INTER_AREA)
    case = defects.edit_spills_outside_mask(source)
    edit = defects.exposure(case.candidate, -0.7).candidate
    return {"edit.png": png(edit), "original.png": png(source),
            "mask.png": png(case.mask.astype(np.uint8) * 255)}


@pytest.mark.slow
def test_mention_gets_findings_and_review_sheet_then_repair_gives_the_repaired_image(slack, edit_files):
    server, bot, events = slack
    files = [server.host_file(name, data) for name, data in edit_files.items()]
    thread = "1700000000.000100"
    body = event_body("Ev0001", thread, f"<@{BOT_USER}> check this please", files)
    status, seconds = post(events.url, body, "application/json", sign(body))
    assert status == 200 and seconds < 3.0  # acknowledged at once; the work goes on in the background

    reply = server.wait_for(lambda: [t for t in server.messages(CHANNEL, thread) if "Verdict" in t])[0]
    assert "Verdict: FAIL" in reply and "mask_spill" in reply and "exposure_drift" in reply
    assert "I took original.png as the original" in reply and "I took mask.png as the edit mask" in reply
    sheets = server.wait_for(lambda: server.thread_uploads(CHANNEL, thread))
    assert sheets[0].title == "review sheet" and Image.open(io.BytesIO(sheets[0].data)).format == "PNG"
    assert all(f.downloads == 1 for f in server.files.values())
    posted = [c for c in server.calls_of("chat.postMessage", channel=CHANNEL, thread_ts=thread) if "Verdict" in
              c.args.get("text", "")][0]
    buttons = [e["action_id"] for b in posted.args["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert buttons == ["repair"]

    clicked = click("repair", thread, "1700000100.000100")
    status, seconds = post(events.url, clicked, "application/x-www-form-urlencoded", sign(clicked))
    assert seconds < 3.0
    assert status == 200
    repaired = server.wait_for(lambda: [u for u in server.thread_uploads(CHANNEL, thread) if u.title == "repaired image"])
    image = Image.open(io.BytesIO(repaired[0].data))
    assert image.size == (512, 512)
    text = [t for t in server.messages(CHANNEL, thread) if "Repaired" in t][0]
    assert "Repaired, and verified by the checks:" in text and "mask_spill" in text and "Verdict now: PASS" in text
    updates = server.calls_of("chat.update", channel=CHANNEL)
    assert updates and any("accepted" in c.args.get("text", "") for c in updates)  # the progress message moved


@pytest.mark.slow
def test_a_retried_event_is_handled_once(slack, edit_files):
    server, bot, events = slack
    files = [server.host_file("edit.png", edit_files["edit.png"])]
    thread = "1700000200.000100"
    body = event_body("Ev0002", thread, f"<@{BOT_USER}> check", files)
    assert post(events.url, body, "application/json", sign(body))[0] == 200
    retry = {**sign(body), "X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    assert post(events.url, body, "application/json", retry)[0] == 200
    server.wait_for(lambda: [t for t in server.messages(CHANNEL, thread) if "Verdict" in t])
    bot.jobs.join()
    assert bot.handled.count("Ev0002") == 1
    assert len([t for t in server.messages(CHANNEL, thread) if "Verdict" in t]) == 1
    assert "Without the original" in [t for t in server.messages(CHANNEL, thread) if "Verdict" in t][0]


@pytest.mark.slow
@pytest.mark.parametrize("headers", [
    {"X-Slack-Request-Timestamp": str(int(time.time())), "X-Slack-Signature": "v0=" + "0" * 64},
    "wrong secret", "stale"], ids=["bad-signature", "wrong-secret", "stale"])
def test_a_bad_or_stale_signature_gets_401_and_no_reply(slack, edit_files, headers):
    server, bot, events = slack
    thread = f"17000003{len(server.calls):02d}.000100"
    body = event_body(f"EvBad{thread}", thread, f"<@{BOT_USER}> check", [])
    if headers == "wrong secret":
        headers = sign(body, secret="not-the-secret")
    elif headers == "stale":
        headers = sign(body, timestamp=int(time.time()) - 3600)
    before = len(server.calls)
    assert post(events.url, body, "application/json", headers)[0] == 401
    time.sleep(0.5)
    bot.jobs.join()
    assert server.messages(CHANNEL, thread) == [] and f"EvBad{thread}" not in bot.handled
    assert all(c.method == "auth.test" for c in server.calls[before:])


@pytest.mark.slow
def test_a_file_that_is_not_an_image_gets_one_plain_sentence(slack):
    server, bot, events = slack
    thread = "1700000400.000100"
    files = [server.host_file("notes.txt", b"hello", mimetype="text/plain")]
    body = event_body("Ev0004", thread, f"<@{BOT_USER}> check", files)
    assert post(events.url, body, "application/json", sign(body))[0] == 200
    texts = server.wait_for(lambda: server.messages(CHANNEL, thread))
    bot.jobs.join()
    texts = server.messages(CHANNEL, thread)
    assert texts[0] == "notes.txt is not an image I can read (PNG, JPEG, WebP, TIFF); I skipped it."
    assert all("Traceback" not in t for t in texts)


def test_blocks_and_mentions():
    from fixloop.agent.conversation import Reply, Waiting

    assert strip_mentions("<@U123> fix it") == "fix it"
    waiting = reply_blocks(Reply(text="Approve?", waiting=Waiting(run_id="r", question="q")), can_undo=True)
    assert [e["action_id"] for e in waiting[1]["elements"]] == ["approve", "cancel"]
    done = reply_blocks(Reply(text="ok", verdict="pass"), can_undo=True)
    assert [e["action_id"] for e in done[1]["elements"]] == ["undo"]
    assert reply_blocks(Reply(text="ok", verdict="pass"), can_undo=False) == [done[0]]


def test_setup_errors_are_one_line(monkeypatch):
    from fixloop.apps.slack import SlackSetupError

    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SlackSetupError, match="SLACK_BOT_TOKEN"):
        BotSettings.from_env(http=True)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-x")
    with pytest.raises(SlackSetupError, match="SLACK_SIGNING_SECRET"):
        BotSettings.from_env(http=True)
    with pytest.raises(SlackSetupError, match="SLACK_APP_TOKEN"):
        BotSettings.from_env(http=False)


def test_the_manifest_asks_for_what_the_bot_uses():
    import yaml

    manifest = yaml.safe_load((Path(__file__).parents[1] / "docs" / "slack-manifest.yml").read_text())
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"app_mentions:read", "chat:write", "files:read", "files:write", "im:history"} <= scopes
    settings = manifest["settings"]
    assert {"app_mention", "message.im"} <= set(settings["event_subscriptions"]["bot_events"])
    assert settings["interactivity"]["is_enabled"]
    assert settings["event_subscriptions"]["request_url"].endswith("/slack/events")


def test_fixloop_slack_without_tokens_is_one_line_and_exit_2(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    done = subprocess.run([sys.executable, "-m", "fixloop.apps.cli", "slack", "--http", "--port", "3999"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and "SLACK_BOT_TOKEN" in done.stderr


def edits(server) -> list:
    """The GPT Image edits the loopback server got (the chat parser's calls go to the same base URL,
    get 404 there and fall back to the rules)."""
    return [r for r in server.requests if r.path.endswith("/images/edits")]


@pytest.mark.slow
def test_a_paid_repair_waits_for_the_approve_button(tmp_path, monkeypatch):
    """GPT Image backend (loopback): Repair asks first; the edit is made only after Approve."""
    from tests.openai_server import OpenAIImagesServer
    from tests.test_repair_loop import blurred_case, clean_fix

    case = blurred_case()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-loopback")
    with SlackServer() as server, OpenAIImagesServer(image=clean_fix(case.source)) as images:
        monkeypatch.setenv("OPENAI_BASE_URL", images.base_url)
        bot = FixloopBot(BotSettings(bot_token=server.token, signing_secret=SECRET, api_url=server.api_url,
                                     backend="openai", out=tmp_path / "out", db=tmp_path / "runs.sqlite"))
        events = EventServer(bot, port=0, host="127.0.0.1").start()
        try:
            thread = "1700000500.000100"
            files = [server.host_file("soft.png", png(case.candidate)), server.host_file("before.png", png(case.source))]
            body = event_body("Ev0005", thread, f"<@{BOT_USER}> what do you think?", files)
            assert post(events.url, body, "application/json", sign(body))[0] == 200
            checked = server.wait_for(lambda: [t for t in server.messages(CHANNEL, thread) if "Verdict" in t])[0]
            assert "texture_blur" in checked and "I took before.png as the original" in checked

            clicked = click("repair", thread, "1700000600.000100")
            assert post(events.url, clicked, "application/x-www-form-urlencoded", sign(clicked))[0] == 200
            asked = server.wait_for(lambda: [c for c in server.calls_of("chat.postMessage", thread_ts=thread)
                                             if "Approve?" in c.args.get("text", "")])[0]
            buttons = [e["action_id"] for b in asked.args["blocks"] if b["type"] == "actions" for e in b["elements"]]
            assert buttons == ["approve", "cancel"] and edits(images) == []

            clicked = click("approve", thread, "1700000700.000100")
            assert post(events.url, clicked, "application/x-www-form-urlencoded", sign(clicked))[0] == 200
            server.wait_for(lambda: [u for u in server.thread_uploads(CHANNEL, thread) if u.title == "repaired image"])
            assert len(edits(images)) == 1
            done = [t for t in server.messages(CHANNEL, thread) if "Approved" in t][0]
            assert "Repaired, and verified by the checks: texture_blur" in done
        finally:
            events.stop()
            bot.stop()
