"""A loopback stand-in for the OpenAI Chat Completions API (structured output), for tests.

``POST /v1/chat/completions`` takes the JSON body the official ``openai`` client sends and answers
like the real API: ``{"id", "object": "chat.completion", "created", "model", "choices": [{"index",
"message": {"role", "content", "refusal"}, "finish_reason"}], "usage"}``, or ``{"error": {...}}``
with an error status. Every request is recorded (headers and body).

With ``strict=True`` (the default) it refuses what Structured Outputs refuses in a strict
``response_format``: a schema whose objects do not list every property as required, allow extra
properties, or carry a ``default`` (400 ``invalid_request_error``), so a test sees the schema the
client really sends.

``answer`` says what the "model" writes: a function of the recorded request returning a dict (sent
as JSON content), a string (sent as is, e.g. broken JSON), a :class:`Refusal`, or a ``(status, body)``
pair. ``statuses`` queues answers given before the normal ones (e.g. ``[500]``).

    with ChatCompletionsServer(answer=lambda request: {...}) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test")
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable

PATH = "/v1/chat/completions"


@dataclass
class Refusal:
    text: str = "I can't help with that."


@dataclass
class RecordedChat:
    headers: dict[str, str]
    body: dict[str, Any]
    status: int = 0

    @property
    def user_text(self) -> str:
        return next(m["content"] for m in reversed(self.body["messages"]) if m["role"] == "user")

    @property
    def system_text(self) -> str:
        return next((m["content"] for m in self.body["messages"] if m["role"] == "system"), "")

    @property
    def schema(self) -> dict[str, Any]:
        return self.body["response_format"]["json_schema"]["schema"]


def error(status: int, message: str, type_: str, code: str | None = None, param: str | None = None):
    return status, {"error": {"message": message, "type": type_, "param": param, "code": code}}


def strict_problems(schema: Any, where: str = "schema") -> list[str]:
    """What Structured Outputs' strict mode would refuse in ``schema``."""
    problems: list[str] = []
    if isinstance(schema, dict):
        if "default" in schema:
            problems.append(f"{where}: 'default' is not permitted")
        if schema.get("type") == "object" or "properties" in schema:
            props = schema.get("properties", {})
            if schema.get("additionalProperties") is not False:
                problems.append(f"{where}: 'additionalProperties' is required to be supplied and to be false")
            if sorted(schema.get("required", [])) != sorted(props):
                problems.append(f"{where}: 'required' is required to be supplied and to be an array including "
                                "every key in properties")
        for key, value in schema.items():
            problems += strict_problems(value, f"{where}.{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            problems += strict_problems(value, f"{where}[{i}]")
    return problems


class ChatCompletionsServer:
    def __init__(self, answer: Callable[[RecordedChat], Any] | None = None, statuses: Iterable[Any] = (),
                 strict: bool = True, api_key: str | None = None):
        self.answer = answer or (lambda request: Refusal("no answer configured"))
        self.queue: deque = deque(statuses)
        self.strict = strict
        self.api_key = api_key
        self.requests: list[RecordedChat] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> "ChatCompletionsServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                recorded = RecordedChat(headers={k.lower(): v for k, v in self.headers.items()}, body={})
                try:
                    recorded.body = json.loads(raw or b"{}")
                except ValueError:
                    pass
                status, body = server._respond(self.path, recorded)
                recorded.status = status
                with server._lock:
                    server.requests.append(recorded)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                if status >= 400:
                    self.send_header("retry-after-ms", "1")
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _respond(self, path: str, request: RecordedChat) -> tuple[int, dict]:
        if path.rstrip("/") != PATH:
            return error(404, f"Invalid URL (POST {path})", "invalid_request_error")
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        body = request.body
        if not body.get("model") or not body.get("messages"):
            return error(400, "you must provide a model and messages", "invalid_request_error")
        if self.strict and "response_format" in body:
            fmt = body["response_format"]
            if fmt.get("type") != "json_schema" or not fmt.get("json_schema", {}).get("strict"):
                return error(400, "response_format must be a strict json_schema", "invalid_request_error")
            problems = strict_problems(fmt["json_schema"]["schema"])
            if problems:
                return error(400, f"Invalid schema for response_format: {problems[0]}", "invalid_request_error",
                             param="response_format")
        with self._lock:
            queued = self.queue.popleft() if self.queue else None
        if isinstance(queued, int) and queued != 200:
            return error(queued, "The server had an error while processing your request.", "server_error")
        if isinstance(queued, tuple):
            return queued
        written = self.answer(request)
        if isinstance(written, tuple):
            return written
        refusal = None
        if isinstance(written, Refusal):
            content, refusal = None, written.text
        elif isinstance(written, str):
            content = written
        else:
            content = json.dumps(written)
        return 200, {
            "id": f"chatcmpl-loopback-{len(self.requests)}", "object": "chat.completion",
            "created": int(time.time()), "model": body["model"], "system_fingerprint": "fp_loopback",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content, "refusal": refusal}}],
            "usage": {"prompt_tokens": 900, "completion_tokens": 60, "total_tokens": 960},
        }
