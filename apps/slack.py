"""`fixloop slack`: the conversation as a Slack bot (Slack Bolt for Python).

The bot only translates: a Slack event becomes a message of the conversation whose id is the Slack
thread (``slack-CHANNEL-THREAD_TS``), and the conversation's reply becomes thread messages, file
uploads and buttons. Everything it decides is the conversation's (agent/conversation.py).

- A mention or a DM with an image: the files are downloaded with the bot token (size and pixel caps),
  the event is acknowledged at once (Bolt acks events before listeners run; the work goes to one
  worker thread), and the thread gets: one progress message, updated (``chat.update``) as a repair
  runs; the reply (verdict and findings, what it will do and what that costs); the review sheet and,
  when a repair was accepted, the repaired image (``files_upload_v2``); buttons Repair, Approve (when
  a paid call waits), Undo and Cancel.
- Replies in a thread the bot works in continue its conversation ("fix only the hands").
- Slack retries an event it thinks was acknowledged late: each event id is handled once.
- Errors reach the thread as one plain sentence.

Settings from the environment: ``SLACK_BOT_TOKEN``; ``SLACK_APP_TOKEN`` for Socket Mode or
``SLACK_SIGNING_SECRET`` for the HTTP mode (events and interactions at ``/slack/events``, signatures
checked, stale ones refused); ``SLACK_API_URL``: the Web API's base URL (default Slack's own), so
staging and tests point the real ``slack_sdk`` client elsewhere.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fixloop.agent.conversation import Attachment, Conversation, Reply

MAX_FILE_BYTES = 25 * 1024 * 1024  # a Slack upload larger than this is not downloaded
MAX_PIXELS = 40_000_000  # nor an image larger than this
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/tiff", "image/bmp")
EVENTS_PATH = "/slack/events"
SEEN_EVENTS = 2000  # event ids remembered for deduplication
UPDATE_EVERY_S = 1.0  # the progress message is updated at most this often

ACTION_MESSAGES = {"repair": "fix it", "approve": "yes", "reject": "no", "undo": "undo", "cancel": "cancel"}

log = logging.getLogger("fixloop.slack")


class SlackSetupError(Exception):
    """The bot cannot start: a token or secret is missing (one line, exit 2)."""


@dataclass
class BotSettings:
    bot_token: str
    signing_secret: str | None = None
    app_token: str | None = None
    api_url: str | None = None
    backend: str | None = None
    model: str | None = None
    budget_usd: float | None = None
    out: Path = Path("fixloop-slack")
    db: str | Path | None = None

    @classmethod
    def from_env(cls, http: bool, **options: Any) -> "BotSettings":
        token = os.environ.get("SLACK_BOT_TOKEN")
        if not token:
            raise SlackSetupError("set SLACK_BOT_TOKEN (the bot's xoxb- token; docs/slack-manifest.yml lists its scopes)")
        secret, app_token = os.environ.get("SLACK_SIGNING_SECRET"), os.environ.get("SLACK_APP_TOKEN")
        if http and not secret:
            raise SlackSetupError("--http needs SLACK_SIGNING_SECRET (the app's Basic Information page) to verify requests")
        if not http and not app_token:
            raise SlackSetupError("Socket Mode needs SLACK_APP_TOKEN (an xapp- token with connections:write); "
                                  "or run with --http --port P")
        return cls(bot_token=token, signing_secret=secret, app_token=app_token,
                   api_url=os.environ.get("SLACK_API_URL"), **options)


@dataclass
class Job:
    """One message for a conversation: from an event or a button."""

    channel: str
    thread_ts: str
    text: str
    files: list[dict] = field(default_factory=list)
    direct: bool = True  # a mention, a DM or a button; False: a reply in a channel thread (only if it is ours)


def conversation_id(channel: str, thread_ts: str) -> str:
    return f"slack-{channel}-{thread_ts}"


def strip_mentions(text: str) -> str:
    return re.sub(r"<@[A-Z0-9]+>", " ", text or "").strip()


# ---- Block Kit -------------------------------------------------------------------------------------


def reply_blocks(reply: Reply, can_undo: bool) -> list[dict]:
    """The reply as a section and its buttons."""
    text = reply.text if len(reply.text) < 2900 else reply.text[:2900] + "…"
    blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    buttons = []
    if reply.waiting is not None:
        buttons.append(_button("Approve", "approve", "primary"))
        buttons.append(_button("Cancel", "cancel", "danger"))
    else:
        if reply.verdict == "fail":
            buttons.append(_button("Repair", "repair", "primary"))
        if can_undo:
            buttons.append(_button("Undo", "undo"))
    if buttons:
        blocks.append({"type": "actions", "block_id": "fixloop", "elements": buttons})
    return blocks


def _button(label: str, action_id: str, style: str | None = None) -> dict:
    button = {"type": "button", "text": {"type": "plain_text", "text": label}, "action_id": action_id,
              "value": action_id}
    if style:
        button["style"] = style
    return button


# ---- the bot --------------------------------------------------------------------------------------


class FixloopBot:
    """The Bolt app, its Web API client and the worker that runs the conversations."""

    def __init__(self, settings: BotSettings, client=None):
        from slack_bolt import App
        from slack_sdk import WebClient

        self.settings = settings
        base_url = settings.api_url or "https://slack.com/api/"
        self.client = client or WebClient(token=settings.bot_token, base_url=base_url.rstrip("/") + "/")
        self.app = App(client=self.client, signing_secret=settings.signing_secret or "socket-mode-unused",
                       request_verification_enabled=settings.signing_secret is not None,
                       process_before_response=False)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._seen_lock = threading.Lock()
        self.jobs: "queue.Queue[Job | None]" = queue.Queue()
        self.handled: list[str] = []  # event ids taken on (tests read it)
        self._worker = threading.Thread(target=self._work, name="fixloop-slack-worker", daemon=True)
        self._worker.start()
        self._register()

    # -- events and actions: acknowledge, dedupe, queue

    def _register(self) -> None:
        app = self.app

        @app.event("app_mention")
        def on_mention(body, event):
            self._take(body, event, direct=True)

        @app.event("message")
        def on_message(body, event):
            if event.get("bot_id") or event.get("subtype") not in (None, "file_share", "thread_broadcast"):
                return
            bot_user = self._bot_user_id()
            if event.get("channel_type") != "im" and bot_user and f"<@{bot_user}>" in (event.get("text") or ""):
                return  # the app_mention event of the same message handles it
            if event.get("channel_type") != "im" and not event.get("thread_ts"):
                return  # a channel message that is no reply in a thread: not for the bot
            self._take(body, event, direct=event.get("channel_type") == "im")

        for action_id in ACTION_MESSAGES:
            app.action(action_id)(self._on_action)

    def _on_action(self, ack, body):
        ack()
        action = body["actions"][0]["action_id"]
        container = body.get("container", {})
        message = body.get("message", {})
        channel = container.get("channel_id") or body.get("channel", {}).get("id")
        thread = container.get("thread_ts") or message.get("thread_ts") or message.get("ts")
        self.jobs.put(Job(channel=channel, thread_ts=thread, text=ACTION_MESSAGES[action]))

    def _take(self, body: dict, event: dict, direct: bool) -> None:
        event_id = body.get("event_id") or f"{event.get('channel')}:{event.get('ts')}"
        with self._seen_lock:
            if event_id in self._seen:
                log.info("event %s seen before (a retry): ignored", event_id)
                return
            self._seen[event_id] = None
            while len(self._seen) > SEEN_EVENTS:
                self._seen.popitem(last=False)
            self.handled.append(event_id)
        thread = event.get("thread_ts") or event.get("ts")
        self.jobs.put(Job(channel=event["channel"], thread_ts=thread, text=strip_mentions(event.get("text", "")),
                          files=list(event.get("files") or []), direct=direct))

    def _bot_user_id(self) -> str | None:
        try:
            return self.client.auth_test().get("user_id")
        except Exception:  # noqa: BLE001 - only used to skip a duplicate of a mention
            return None

    # -- the worker

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                self.handle(job)
            except Exception as exc:  # noqa: BLE001 - one plain sentence in the thread, never a trace
                log.exception("job failed")
                self._post(job, f"Sorry, that did not work: {_sentence(exc)}")
            finally:
                self.jobs.task_done()

    def stop(self) -> None:
        self.jobs.put(None)

    def handle(self, job: Job) -> None:
        from fixloop.agent.intent_llm import choose_parser
        from fixloop.checks.images import InputError

        conv_id = conversation_id(job.channel, job.thread_ts)
        out = Path(self.settings.out) / conv_id
        progress = ProgressMessage(self.client, job.channel, job.thread_ts)
        parser, _ = choose_parser()
        with Conversation.open(conv_id, out_dir=out, backend=self.settings.backend, model=self.settings.model,
                               max_usd=self.settings.budget_usd, parser=parser, progress=progress,
                               db=self.settings.db) as chat:
            if not job.direct and not chat.exists:
                return  # a thread the bot is not part of
            attachments, problems = self._download(job.files, out / "inputs")
            for problem in problems:
                self._post(job, problem)
            if not job.text and not attachments:
                if not problems:
                    self._post(job, "Send me an image with your message, and I will check it.")
                return
            progress.start("Working on it…")
            try:
                reply = chat.send(job.text, attachments)
            except InputError as exc:
                progress.done(f"Stopped: {_sentence(exc)}")
                return
            state = chat.state()
        progress.done("Done." if reply.waiting is None else "Waiting for your approval.")
        self.client.chat_postMessage(channel=job.channel, thread_ts=job.thread_ts, text=reply.text,
                                     blocks=reply_blocks(reply, can_undo=len(state.steps) > 1))
        uploads = []
        if reply.review_sheet and Path(reply.review_sheet).is_file():
            uploads.append(("review sheet", reply.review_sheet))
        if reply.final_image and Path(reply.final_image).is_file():
            uploads.append(("repaired image" if "runs" in Path(reply.final_image).parts else "adjusted image",
                            reply.final_image))
        for title, path in uploads:
            self.client.files_upload_v2(channel=job.channel, thread_ts=job.thread_ts, file=path,
                                        filename=Path(path).name, title=title)

    def _download(self, files: list[dict], folder: Path) -> tuple[list[Attachment], list[str]]:
        """Fetch the images of an event with the bot token; refuse what is not an image or too large."""
        from PIL import Image

        attachments, problems = [], []
        for index, info in enumerate(files):
            name = info.get("name") or f"file-{index + 1}"
            if info.get("mimetype") not in IMAGE_TYPES:
                problems.append(f"{name} is not an image I can read (PNG, JPEG, WebP, TIFF); I skipped it.")
                continue
            if int(info.get("size") or 0) > MAX_FILE_BYTES:
                problems.append(f"{name} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB; I skipped it.")
                continue
            url = info.get("url_private_download") or info.get("url_private")
            request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.settings.bot_token}"})
            with urllib.request.urlopen(request, timeout=60) as response:
                data = response.read(MAX_FILE_BYTES + 1)
            if len(data) > MAX_FILE_BYTES:
                problems.append(f"{name} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB; I skipped it.")
                continue
            folder.mkdir(parents=True, exist_ok=True)
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[-80:]
            target = folder / f"{int(time.time() * 1000)}-{index}-{safe}"
            target.write_bytes(data)
            try:
                with Image.open(target) as image:
                    width, height = image.size
            except Exception:  # noqa: BLE001 - not decodable: say so in one sentence
                problems.append(f"{name} does not decode as an image; I skipped it.")
                continue
            if width * height > MAX_PIXELS:
                problems.append(f"{name} has {width}x{height} pixels, more than I take "
                                f"({MAX_PIXELS // 1_000_000} MP); I skipped it.")
                continue
            attachments.append(Attachment(path=str(target), name=name))
        return attachments, problems

    def _post(self, job: Job, text: str) -> None:
        try:
            self.client.chat_postMessage(channel=job.channel, thread_ts=job.thread_ts, text=text)
        except Exception:  # noqa: BLE001 - nothing more can be said
            log.exception("could not post to the thread")


def _sentence(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if text.endswith(".") else text + "."


class ProgressMessage:
    """One message in the thread that says what the repair is doing, updated as it goes."""

    def __init__(self, client, channel: str, thread_ts: str):
        self.client, self.channel, self.thread_ts = client, channel, thread_ts
        self.ts: str | None = None
        self.lines: list[str] = []
        self._last = 0.0

    def start(self, text: str) -> None:
        response = self.client.chat_postMessage(channel=self.channel, thread_ts=self.thread_ts, text=text)
        self.ts = response.get("ts")
        self.lines = [text]

    def _update(self, force: bool = False) -> None:
        if self.ts is None or (not force and time.monotonic() - self._last < UPDATE_EVERY_S):
            return
        self._last = time.monotonic()
        self.client.chat_update(channel=self.channel, ts=self.ts, text="\n".join(self.lines[-12:]))

    def done(self, text: str) -> None:
        if self.ts is None:
            return
        self.lines.append(text)
        self._update(force=True)

    def __call__(self, event: str, **data: Any) -> None:
        line = None
        if event == "inspect":
            line = f"inspect: {len(data['findings'])} finding(s), verdict {data['verdict']}"
        elif event == "plan":
            plan = data["plan"]
            line = f"pass {data['attempt']}: {plan.target.kind} with {plan.tool}"
        elif event == "verdict":
            attempt = data["attempt"]
            line = f"  {attempt.outcome.value.replace('_', ' ')}: {attempt.reason}"
        elif event == "open":
            line = f"left open: {data['defect'].kind}"
        elif event == "finish":
            line = f"finished: {data['state'].stop_reason}"
        if line:
            self.lines.append(line)
            self._update(force=event in ("finish", "verdict"))


# ---- serving ---------------------------------------------------------------------------------------


class EventServer:
    """The HTTP mode: POST /slack/events goes to the Bolt app (signature checked there); a threaded
    server so a slow answer never holds another request."""

    def __init__(self, bot: FixloopBot, port: int = 3000, host: str = "0.0.0.0"):
        self.bot = bot
        self.host, self.port = host, port
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{EVENTS_PATH}"

    def start(self) -> "EventServer":
        from slack_bolt.request import BoltRequest

        app = self.bot.app

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status: int, body: str, headers: dict | None = None) -> None:
                data = body.encode()
                self.send_response(status)
                for key, values in (headers or {}).items():
                    for value in values if isinstance(values, list) else [values]:
                        if key.lower() != "content-length":
                            self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                path, _, query = self.path.partition("?")
                if path != EVENTS_PATH:
                    return self._answer(404, "not found")
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length).decode("utf-8")
                headers = {k.lower(): [v] for k, v in self.headers.items()}
                response = app.dispatch(BoltRequest(body=body, query=query, headers=headers))
                self._answer(response.status, response.body or "", response.headers)

            def do_GET(self):
                self._answer(200 if self.path == "/health" else 404, "ok" if self.path == "/health" else "not found")

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        threading.Thread(target=self._server.serve_forever, name="fixloop-slack-http", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def run_bot(http: bool = False, port: int = 3000, backend: str | None = None, model: str | None = None,
            budget_usd: float | None = None, out: Path = Path("fixloop-slack")) -> None:
    """Run until interrupted: HTTP mode on ``port`` or Socket Mode."""
    from fixloop.agent import service
    from fixloop.agent.conversation import default_backend
    from fixloop.checks.policy import load_policy

    settings = BotSettings.from_env(http, backend=backend, model=model, budget_usd=budget_usd, out=out)
    chosen = backend or default_backend()
    service.backend_ready(chosen, model, load_policy())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        bot = FixloopBot(settings)
    except Exception as exc:  # noqa: BLE001 - a bad token, no network: one line
        raise SlackSetupError(f"could not start the bot: {_sentence(exc)}") from None
    log.info("backend %s; images and runs in %s", chosen, Path(out).resolve())
    if http:
        server = EventServer(bot, port).start()
        log.info("HTTP mode: events and interactions at %s", server.url)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            server.stop()
    else:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        log.info("Socket Mode")
        SocketModeHandler(bot.app, settings.app_token).start()
