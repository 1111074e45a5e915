"""A loopback stand-in for the Slack Web API that speaks its wire format, for tests.

The methods the bot uses, as the real ``slack_sdk`` WebClient calls them (``POST /api/<method>`` with a
form-encoded or JSON body and ``Authorization: Bearer <token>``; answers ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}`` with status 200):

- ``auth.test``;
- ``chat.postMessage`` (answers the message's ``ts``) and ``chat.update``;
- ``files.getUploadURLExternal`` (``filename``, ``length`` -> ``upload_url``, ``file_id``), the upload
  URL itself (``POST /upload/<file_id>``, the raw bytes), and ``files.completeUploadExternal``
  (``files`` as a JSON list of ``{"id", "title"}``, ``channel_id``, ``thread_ts``);
- file downloads by ``url_private`` (``GET /files/<id>/<name>``, bot token required, as Slack wants).

Every call is recorded in order (:attr:`SlackServer.calls`: method and arguments); uploads are kept
with their bytes (:attr:`SlackServer.uploads`).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs

BOT_USER = "UFIXLOOP"


@dataclass
class Call:
    method: str
    args: dict[str, Any]


@dataclass
class Upload:
    file_id: str
    filename: str
    length: int
    data: bytes = b""
    title: str | None = None
    channel: str | None = None
    thread_ts: str | None = None
    completed: bool = False


@dataclass
class HostedFile:
    id: str
    name: str
    data: bytes
    mimetype: str
    downloads: int = 0


class SlackServer:
    def __init__(self, token: str = "xoxb-test"):
        self.token = token
        self.calls: list[Call] = []
        self.uploads: dict[str, Upload] = {}
        self.files: dict[str, HostedFile] = {}
        self._lock = threading.Lock()
        self._ts = 1_700_000_100
        self._server: ThreadingHTTPServer | None = None

    # -- addresses

    @property
    def base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return self.base + "/api/"

    # -- what tests set up and read

    def host_file(self, name: str, data: bytes, mimetype: str = "image/png") -> dict[str, Any]:
        """A file as a Slack event lists it, downloadable from its url_private."""
        file_id = f"F{len(self.files) + 1:05d}"
        self.files[file_id] = HostedFile(file_id, name, data, mimetype)
        url = f"{self.base}/files/{file_id}/{name}"
        return {"id": file_id, "name": name, "title": name, "mimetype": mimetype, "filetype": name.rsplit(".", 1)[-1],
                "size": len(data), "url_private": url, "url_private_download": url + "?download=1"}

    def calls_of(self, method: str, **match: Any) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method
                    and all(str(c.args.get(k)) == str(v) for k, v in match.items())]

    def messages(self, channel: str, thread_ts: str) -> list[str]:
        return [c.args.get("text", "") for c in self.calls_of("chat.postMessage", channel=channel, thread_ts=thread_ts)]

    def thread_uploads(self, channel: str, thread_ts: str) -> list[Upload]:
        return [u for u in self.uploads.values() if u.completed and u.channel == channel and u.thread_ts == thread_ts]

    def wait_for(self, condition: Callable[[], Any], timeout: float = 120.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout} s waiting for the bot; calls: "
                             f"{[c.method for c in self.calls]}")

    # -- the server

    def __enter__(self) -> "SlackServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorised(self) -> bool:
                return self.headers.get("authorization") == f"Bearer {server.token}"

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path.startswith("/files/"):
                    hosted = server.files.get(path.split("/")[2])
                    if hosted is None:
                        return self._send(404, b"not found", "text/plain")
                    if not self._authorised():  # Slack answers a login page without the token
                        return self._send(302, b"", "text/html")
                    hosted.downloads += 1
                    return self._send(200, hosted.data, hosted.mimetype)
                return self._send(404, b"not found", "text/plain")

            def do_POST(self):
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                if path.startswith("/upload/"):
                    upload = server.uploads.get(path.split("/")[2])
                    if upload is None:
                        return self._send(404, b"unknown upload", "text/plain")
                    upload.data = raw
                    return self._send(200, f"OK - {len(raw)}".encode(), "text/plain")
                if not path.startswith("/api/"):
                    return self._send(404, b"not found", "text/plain")
                method = path[len("/api/"):]
                args: dict[str, Any] = {k: v[-1] for k, v in parse_qs(query).items()}
                kind = self.headers.get("content-type", "")
                if raw and "json" in kind:
                    args.update(json.loads(raw))
                elif raw:
                    args.update({k: v[-1] for k, v in parse_qs(raw.decode()).items()})
                with server._lock:
                    server.calls.append(Call(method, args))
                if not self._authorised() and args.get("token") != server.token:
                    return self._send(200, json.dumps({"ok": False, "error": "invalid_auth"}).encode())
                answer = server._answer(method, args)
                return self._send(200, json.dumps(answer).encode())

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_ts(self) -> str:
        with self._lock:
            self._ts += 1
            return f"{self._ts}.000100"

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {"ok": True, "url": "https://loopback.slack.com/", "team": "Loopback", "user": "fixloop",
                    "team_id": "T00000001", "user_id": BOT_USER, "bot_id": "B00000001", "is_enterprise_install": False}
        if method == "chat.postMessage":
            if not args.get("channel") or not (args.get("text") or args.get("blocks")):
                return {"ok": False, "error": "no_text" if args.get("channel") else "channel_not_found"}
            ts = self._next_ts()
            return {"ok": True, "channel": args["channel"], "ts": ts,
                    "message": {"type": "message", "text": args.get("text", ""), "ts": ts, "user": BOT_USER,
                                "bot_id": "B00000001", "thread_ts": args.get("thread_ts")}}
        if method == "chat.update":
            if not args.get("ts"):
                return {"ok": False, "error": "message_not_found"}
            return {"ok": True, "channel": args.get("channel"), "ts": args["ts"], "text": args.get("text", "")}
        if method == "files.getUploadURLExternal":
            if not args.get("filename") or not args.get("length"):
                return {"ok": False, "error": "invalid_arguments"}
            file_id = f"FUP{len(self.uploads) + 1:04d}"
            self.uploads[file_id] = Upload(file_id, args["filename"], int(args["length"]))
            return {"ok": True, "upload_url": f"{self.base}/upload/{file_id}", "file_id": file_id}
        if method == "files.completeUploadExternal":
            files = json.loads(args.get("files") or "[]")
            done = []
            for item in files:
                upload = self.uploads.get(item.get("id"))
                if upload is None or len(upload.data) != upload.length:
                    return {"ok": False, "error": "file_not_found"}
                upload.title, upload.channel = item.get("title"), args.get("channel_id")
                upload.thread_ts, upload.completed = args.get("thread_ts"), True
                done.append({"id": upload.file_id, "title": upload.title, "name": upload.filename})
            return {"ok": True, "files": done}
        return {"ok": False, "error": "unknown_method"}
