"""A loopback stand-in for the OpenAI Images API that speaks its wire format, for tests.

``POST /v1/images/edits`` takes the multipart form the official ``openai`` client sends (``image`` or
``image[]`` files, ``mask``, ``prompt``, ``model``, ``size``, ...) and answers like the real API: JSON
``{"created", "data": [{"b64_json"}], "usage": {...}}`` on success, ``{"error": {"message", "type",
"param", "code"}}`` on failure. Every request is recorded (headers, text fields, uploaded files, the
status it got) so a test can assert on exactly what the client sent.

Configure it with:

- ``image``: what to return: None (default: the sent image with the masked area inverted, at the
  requested size), an H x W x 3 uint8 array (returned as is, whatever size was asked), or a
  function ``(RecordedRequest) -> array``;
- ``usage``: the usage block: None (default: derived from the request), a dict, a function of the
  request, or ``include_usage=False`` to leave it out like some compatible endpoints do;
- ``statuses``: answers to give before the normal ones, consumed one per request: 200, 429 (rate
  limit), 500 / 502 / 503 (server error), 400 (``moderation_blocked``), 401, or a ``(status, body)``
  pair; :meth:`OpenAIImagesServer.queue` adds more;
- ``retry_after_ms``: the ``retry-after-ms`` header on error answers (the client honours it, so
  retries in tests take milliseconds); None leaves it out;
- ``strict``: reject what the real API rejects (bad sizes for the model, ``input_fidelity`` for
  gpt-image-2, a mask whose size differs from the image, ...) with a 400 ``invalid_request_error``;
- ``api_key``: when set, any other bearer token gets a 401 ``invalid_api_key``.

Usage::

    with OpenAIImagesServer(statuses=[429, 200]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test")
        ...
        assert len(server.requests) == 2
"""

from __future__ import annotations

import base64
import io
import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field as dc_field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Union

import numpy as np

Reply = tuple[int, dict[str, Any]]
Status = Union[int, Reply]

EDITS_PATH = "/v1/images/edits"
FIXED_SIZES = {"1024x1024", "1536x1024", "1024x1536"}
FLEXIBLE_MODELS = ("gpt-image-2",)
NO_FIDELITY_MODELS = ("gpt-image-2", "gpt-image-1-mini")


# --- error bodies, as the API writes them --------------------------------------------------------


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None, **extra: Any) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code, **extra}}


def moderation_error(categories: Iterable[str] = ("violence",)) -> Reply:
    categories = list(categories)
    message = ("Your request was rejected by the safety system. If you believe this is an error, contact us "
               f"and include the request ID req_test. safety_violations=[{', '.join(categories)}].")
    return 400, error_body(message, "image_generation_user_error", "moderation_blocked",
                           moderation_details={"moderation_stage": "input", "categories": categories})


def rate_limit_error() -> Reply:
    return 429, error_body("Rate limit reached for images per minute. Please try again in 1ms.", "requests",
                           "rate_limit_exceeded")


def server_error(status: int = 500) -> Reply:
    return status, error_body("The server had an error while processing your request. Sorry about that!",
                              "server_error")


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> Reply:
    return 400, error_body(message, "invalid_request_error", code, param)


def auth_error() -> Reply:
    return 401, error_body("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")


def _reply_for(status: Status) -> Reply | None:
    """None means: answer normally."""
    if isinstance(status, tuple):
        return status
    if status == 200:
        return None
    if status == 429:
        return rate_limit_error()
    if status >= 500:
        return server_error(status)
    if status == 400:
        return moderation_error()
    if status == 401:
        return auth_error()
    return status, error_body(f"test server status {status}", "invalid_request_error")


# --- what the server saw --------------------------------------------------------------------------


@dataclass
class UploadedFile:
    """One file part of a multipart request."""

    field: str
    filename: str | None
    content_type: str | None
    data: bytes

    def decode(self) -> np.ndarray:
        """The file as a uint8 array in its own mode: H x W x 3 (RGB) or H x W x 4 (RGBA)."""
        from PIL import Image

        with Image.open(io.BytesIO(self.data)) as image:
            image.load()
            if image.mode not in ("RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            return np.asarray(image).copy()

    @property
    def format(self) -> str:
        from PIL import Image

        with Image.open(io.BytesIO(self.data)) as image:
            return image.format or ""


@dataclass
class RecordedRequest:
    """One request as the server received it, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    fields: dict[str, list[str]] = dc_field(default_factory=dict)
    files: list[UploadedFile] = dc_field(default_factory=list)
    status: int | None = None

    def field(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None

    @property
    def images(self) -> list[UploadedFile]:
        """The image parts in the order sent (``image`` for one, ``image[]`` for several)."""
        return [part for part in self.files if part.field in ("image", "image[]")]

    @property
    def mask(self) -> UploadedFile | None:
        masks = [part for part in self.files if part.field == "mask"]
        return masks[0] if masks else None

    @property
    def json(self) -> Any:
        return json.loads(self.body or b"null")


def parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, list[str]], list[UploadedFile]]:
    """Split a multipart/form-data body into text fields and file parts (binary-safe)."""
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if not boundary:
        raise ValueError("multipart body without a boundary")
    fields: dict[str, list[str]] = {}
    files: list[UploadedFile] = []
    delimiter = b"--" + str(boundary).encode("latin-1")
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        if chunk.startswith(b"\r\n"):
            chunk = chunk[2:]
        head, _, data = chunk.partition(b"\r\n\r\n")
        if data.endswith(b"\r\n"):
            data = data[:-2]
        part = Message()
        for line in head.decode("utf-8", "replace").split("\r\n"):
            if ":" in line:
                name, value = line.split(":", 1)
                part[name.strip()] = value.strip()
        name = part.get_param("name", header="content-disposition")
        filename = part.get_param("filename", header="content-disposition")
        if name is None:
            continue
        if filename is None:
            fields.setdefault(str(name), []).append(data.decode("utf-8"))
        else:
            files.append(UploadedFile(str(name), str(filename), part.get("content-type"), data))
    return fields, files


# --- the default behaviour ------------------------------------------------------------------------


def requested_size(request: RecordedRequest) -> tuple[int, int]:
    """(W, H) the request asked for; the first image's size for 'auto' or no size."""
    size = request.field("size") or "auto"
    if size == "auto":
        first = request.images[0].decode()
        return first.shape[1], first.shape[0]
    w, h = size.split("x")
    return int(w), int(h)


def default_edit(request: RecordedRequest) -> np.ndarray:
    """The first image, inverted where the mask's alpha is 0 (everywhere without a mask), at the requested size."""
    from PIL import Image

    first = request.images[0].decode()[..., :3]
    editable = np.ones(first.shape[:2], dtype=bool)
    if request.mask is not None:
        editable = request.mask.decode()[..., 3] == 0
    edited = np.where(editable[..., None], 255 - first, first).astype(np.uint8)
    size = requested_size(request)
    if (edited.shape[1], edited.shape[0]) != size:
        edited = np.asarray(Image.fromarray(edited).resize(size, Image.BILINEAR))
    return edited


def default_usage(request: RecordedRequest) -> dict[str, Any]:
    """A usage block derived from the request: ~4 characters a text token, 194 tokens an input image,
    272 output tokens an image (the low-quality 1024x1024 count)."""
    text = math.ceil(len(request.field("prompt") or "") / 4)
    image = 194 * len(request.images)
    n = int(request.field("n") or 1)
    return {
        "input_tokens": text + image,
        "input_tokens_details": {"text_tokens": text, "image_tokens": image},
        "output_tokens": 272 * n,
        "total_tokens": text + image + 272 * n,
    }


def encode_image(image: np.ndarray, output_format: str, compression: int | None) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    pil = Image.fromarray(np.ascontiguousarray(image))
    if output_format == "jpeg":
        pil.save(buffer, "JPEG", quality=compression if compression is not None else 95)
    elif output_format == "webp":
        pil.save(buffer, "WEBP", quality=compression if compression is not None else 95)
    else:
        pil.save(buffer, "PNG")
    return buffer.getvalue()


def _model_is(model: str, names: Iterable[str]) -> bool:
    return any(model == name or model.startswith(name + "-") for name in names)


def validate_edit(request: RecordedRequest) -> Reply | None:
    """What the real API rejects with a 400, or None when the request is acceptable."""
    prompt = request.field("prompt")
    if not prompt:
        return invalid_request("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    if not request.images:
        return invalid_request("Missing required parameter: 'image'.", "image", "missing_required_parameter")
    if len(request.images) > 16:
        return invalid_request("Too many images: at most 16.", "image")
    model = request.field("model") or "gpt-image-1.5"
    size = request.field("size") or "auto"
    if size != "auto":
        try:
            w, h = (int(v) for v in size.split("x"))
        except ValueError:
            return invalid_request(f"Invalid size '{size}'.", "size", "invalid_value")
        if _model_is(model, FLEXIBLE_MODELS):
            ok = (w % 16 == 0 and h % 16 == 0 and max(w, h) <= 3840 and max(w, h) <= 3 * min(w, h)
                  and 655_360 <= w * h <= 8_294_400)
        else:
            ok = size in FIXED_SIZES
        if not ok:
            return invalid_request(f"Invalid size '{size}' for model '{model}'.", "size", "invalid_value")
    if request.field("input_fidelity") is not None and _model_is(model, NO_FIDELITY_MODELS):
        return invalid_request(f"input_fidelity is not supported for model '{model}'.", "input_fidelity",
                               "unsupported_parameter")
    if request.field("background") == "transparent" and _model_is(model, FLEXIBLE_MODELS):
        return invalid_request(f"Transparent backgrounds are not supported for model '{model}'.", "background")
    quality = request.field("quality")
    if quality is not None and quality not in ("low", "medium", "high", "auto", "standard"):
        return invalid_request(f"Invalid quality '{quality}'.", "quality", "invalid_value")
    output_format = request.field("output_format") or "png"
    if output_format not in ("png", "jpeg", "webp"):
        return invalid_request(f"Invalid output_format '{output_format}'.", "output_format", "invalid_value")
    try:
        decoded = [part.decode() for part in request.images]
    except Exception:  # noqa: BLE001 - any undecodable upload is the client's fault
        return invalid_request("An uploaded image could not be decoded.", "image", "invalid_image")
    if request.mask is not None:
        try:
            mask = request.mask.decode()
        except Exception:  # noqa: BLE001
            return invalid_request("The mask could not be decoded.", "mask", "invalid_image")
        if request.mask.format != "PNG" or mask.shape[2] != 4:
            return invalid_request("The mask must be a PNG with an alpha channel.", "mask", "invalid_image")
        if mask.shape[:2] != decoded[0].shape[:2]:
            return invalid_request("Invalid mask image: the mask must have the same dimensions as the image.",
                                   "mask", "invalid_image")
    return None


# --- the server -----------------------------------------------------------------------------------


class OpenAIImagesServer:
    """A threaded HTTP server on 127.0.0.1 (a free port) that stands in for the Images API."""

    def __init__(
        self,
        *,
        image: np.ndarray | Callable[[RecordedRequest], np.ndarray] | None = None,
        usage: dict[str, Any] | Callable[[RecordedRequest], dict[str, Any]] | None = None,
        include_usage: bool = True,
        statuses: Iterable[Status] = (),
        retry_after_ms: int | None = 1,
        strict: bool = True,
        api_key: str | None = None,
    ) -> None:
        self.image = image
        self.usage = usage
        self.include_usage = include_usage
        self.retry_after_ms = retry_after_ms
        self.strict = strict
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self._statuses: deque[Status] = deque(statuses)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> "OpenAIImagesServer":
        if self._server is not None:
            return self
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # a short poll interval so stop() returns at once
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="openai-images-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> "OpenAIImagesServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the server is not running: call start()")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What to give the client as base_url / OPENAI_BASE_URL."""
        return f"http://127.0.0.1:{self.port}/v1"

    # configuration while running
    def queue(self, *statuses: Status) -> None:
        """Answers to give to the next requests, in order, before the normal ones."""
        with self._lock:
            self._statuses.extend(statuses)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._statuses.clear()

    @property
    def statuses(self) -> list[int | None]:
        return [request.status for request in self.requests]

    # request handling
    def _next_status(self) -> Status:
        with self._lock:
            return self._statuses.popleft() if self._statuses else 200

    def handle(self, request: RecordedRequest) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(request)
        if request.method != "POST" or request.path.split("?")[0] != EDITS_PATH:
            return 404, error_body(f"Invalid URL ({request.method} {request.path})", "invalid_request_error")
        token = request.headers.get("authorization", "")
        if not token.startswith("Bearer ") or (self.api_key is not None and token != f"Bearer {self.api_key}"):
            return auth_error()
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            return invalid_request("images/edits takes multipart/form-data.", None, "invalid_content_type")
        try:
            request.fields, request.files = parse_multipart(request.body, content_type)
        except ValueError as exc:
            return invalid_request(f"Could not parse multipart form: {exc}")
        reply = _reply_for(self._next_status())
        if reply is not None:
            return reply
        if self.strict:
            rejection = validate_edit(request)
            if rejection is not None:
                return rejection
        return 200, self._success(request)

    def _success(self, request: RecordedRequest) -> dict[str, Any]:
        n = int(request.field("n") or 1)
        output_format = request.field("output_format") or "png"
        compression = request.field("output_compression")
        if self.image is None:
            image = default_edit(request)
        elif callable(self.image):
            image = self.image(request)
        else:
            image = self.image
        encoded = base64.b64encode(encode_image(image, output_format, int(compression) if compression else None))
        body: dict[str, Any] = {
            "created": int(time.time()),
            "background": request.field("background") or "opaque",
            "output_format": output_format,
            "quality": request.field("quality") or "auto",
            "size": request.field("size") or "auto",
            "data": [{"b64_json": encoded.decode("ascii")} for _ in range(n)],
        }
        if self.include_usage:
            if self.usage is None:
                body["usage"] = default_usage(request)
            elif callable(self.usage):
                body["usage"] = self.usage(request)
            else:
                body["usage"] = dict(self.usage)
        return body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_owner: OpenAIImagesServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _handle(self) -> None:
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=self._read_body(),
        )
        status, body = self.server_owner.handle(request)
        request.status = status
        payload = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.send_header("x-request-id", f"req_test_{len(self.server_owner.requests)}")
        if status != 200 and self.server_owner.retry_after_ms is not None:
            self.send_header("retry-after-ms", str(self.server_owner.retry_after_ms))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = _handle
    do_GET = _handle
