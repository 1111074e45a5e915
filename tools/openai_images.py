"""GPT Image edits through the official ``openai`` client: the ``openai`` repair tool.

One call sends the image to repair, optional reference images, an optional mask and the rendered
prompt to ``POST /v1/images/edits`` and brings the result back at the input's geometry, with the
cost of the call worked out from the response's token usage and the price table
(``tools/prices.toml``).

What the tool takes care of:

- **size**: the request size the model accepts that is closest to the input. ``gpt-image-2``
  takes any WxH with both sides multiples of 16, an aspect between 1:3 and 3:1, at most 3840 px a
  side and 655,360-8,294,400 pixels (above 2560x1440 the provider calls it experimental, so the
  default pixel budget stops there; ``max_pixels`` raises it). Older models take 1024x1024,
  1536x1024 or 1024x1536 (or ``auto``). The input is padded with its edge pixels to the request's
  aspect (never stretched), scaled to the request size, and the padding is cut off the result.
- **mask**: ``RepairRequest.mask`` (True = may change) becomes the API's form, a PNG of the sent
  image's size whose alpha is 0 where the edit may happen. GPT Image treats it as a guide, not a
  boundary: pixels outside it can change, so composite the source back where they must not
  (``tools.local``).
- **settings**: quality ``low`` while searching and ``high`` with ``final=True``; background opaque
  (cut out downstream); ``input_fidelity`` only for models that accept it (``gpt-image-2`` answers
  it with a 400).
- **errors**: rate limits (429), 408/409 and 5xx are retried by the client itself (``max_retries``,
  exponential backoff that honours ``retry-after``); ``moderation_blocked`` is never retried and
  raises :class:`~tools.base.ModerationBlocked`; everything else is a one-line
  :class:`~tools.base.RepairError`.
- **endpoint**: the client's own ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` environment variables (or
  the ``api_key`` / ``base_url`` parameters), so any compatible endpoint works.
- **cost before the call**: :func:`estimate_usd` (the ``openai`` backend's estimate, which the loop
  checks against the dollar budget) from the request size the tool will choose and the price table.
"""

from __future__ import annotations

import base64
import io
import math
import os
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fixloop.tools.base import (BackendSetting, BackendSpec, EnvVar, ModerationBlocked, RepairError, RepairRequest,
                                RepairResult, check_image, check_mask, register_backend, register_tool)
from fixloop.tools.masks import resize, resize_mask

TOOL_NAME = "openai"
DEFAULT_MODEL = "gpt-image-2"

# gpt-image-2's size rules, from the Images API reference.
SIZE_STEP = 16
MAX_EDGE = 3840
MAX_ASPECT = 3.0
MIN_PIXELS = 655_360
MAX_PIXELS = 8_294_400  # 3840 x 2160
DEFAULT_MAX_PIXELS = 2560 * 1440  # larger requests are "experimental" on the provider's side
# The sizes every GPT Image model accepts.
FIXED_SIZES: tuple[tuple[int, int], ...] = ((1024, 1024), (1536, 1024), (1024, 1536))
MAX_INPUT_IMAGES = 16
MAX_PROMPT_CHARS = 32_000
# Codes the API uses for a refusal on content grounds (gpt-image models; the dall-e family).
MODERATION_CODES = frozenset({"moderation_blocked", "content_policy_violation"})

DEFAULT_PRICES_PATH = Path(__file__).with_name("prices.toml")


# --- models ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRules:
    """What one GPT Image model accepts (one row per model, not a class per model)."""

    name: str
    flexible_size: bool  # any WxH by the gpt-image-2 rules; else the three fixed sizes or auto
    input_fidelity: bool  # accepts the input_fidelity parameter


MODEL_RULES: dict[str, ModelRules] = {
    rules.name: rules
    for rules in (
        ModelRules("gpt-image-2", flexible_size=True, input_fidelity=False),
        ModelRules("gpt-image-1.5", flexible_size=False, input_fidelity=True),
        ModelRules("chatgpt-image-latest", flexible_size=False, input_fidelity=True),
        ModelRules("gpt-image-1", flexible_size=False, input_fidelity=True),
        ModelRules("gpt-image-1-mini", flexible_size=False, input_fidelity=False),
    )
}
# A model this table does not know gets the rules every GPT Image model accepts.
FALLBACK_RULES = ModelRules("unknown", flexible_size=False, input_fidelity=False)


def _base_model(model: str, names) -> str | None:
    """The table entry for ``model``: itself, or the base of a dated snapshot (gpt-image-2-2026-04-21)."""
    if model in names:
        return model
    bases = [name for name in names if model.startswith(name + "-")]
    return max(bases, key=len) if bases else None


def model_rules(model: str) -> ModelRules:
    """The rules for ``model``; unknown models get :data:`FALLBACK_RULES`."""
    base = _base_model(model, MODEL_RULES)
    return MODEL_RULES[base] if base else FALLBACK_RULES


# --- sizes ---------------------------------------------------------------------------------------


def flexible_size_ok(width: int, height: int, max_pixels: int = MAX_PIXELS) -> bool:
    """True when ``width x height`` is a valid gpt-image-2 size within ``max_pixels``."""
    return (
        width % SIZE_STEP == 0
        and height % SIZE_STEP == 0
        and 0 < width <= MAX_EDGE
        and 0 < height <= MAX_EDGE
        and max(width, height) <= MAX_ASPECT * min(width, height)
        and MIN_PIXELS <= width * height <= min(max_pixels, MAX_PIXELS)
    )


def choose_size(width: int, height: int, model: str = DEFAULT_MODEL,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """The request size closest to a ``width x height`` input under ``model``'s rules.

    Flexible models (gpt-image-2): the aspect is the input's, clamped to 1:3..3:1, and the pixel count
    the input's, clamped to [655,360, max_pixels]; among valid sizes the one with the smallest
    ``2 * |log aspect error| + |log pixel-count error|`` wins (ties: fewer pixels, then narrower).
    Fixed-size models: the one of 1024x1024, 1536x1024, 1024x1536 with the closest aspect.
    """
    if width <= 0 or height <= 0:
        raise RepairError(f"cannot size a request for a {width}x{height} image")
    aspect = width / height
    if not model_rules(model).flexible_size:
        return min(FIXED_SIZES, key=lambda size: abs(math.log(size[0] / size[1] / aspect)))
    budget = min(max(max_pixels, MIN_PIXELS), MAX_PIXELS)
    aspect = min(max(aspect, 1 / MAX_ASPECT), MAX_ASPECT)
    pixels = min(max(width * height, MIN_PIXELS), budget)
    best: tuple[float, int, int, int, int] | None = None
    for w in range(SIZE_STEP, MAX_EDGE + 1, SIZE_STEP):
        ideal_h = w / aspect
        for h in {math.floor(ideal_h / SIZE_STEP) * SIZE_STEP, math.ceil(ideal_h / SIZE_STEP) * SIZE_STEP}:
            if not flexible_size_ok(w, h, budget):
                continue
            score = 2 * abs(math.log(w / h / aspect)) + abs(math.log(w * h / pixels))
            candidate = (round(score, 12), w * h, w, w, h)
            if best is None or candidate < best:
                best = candidate
    if best is None:  # cannot happen with the constants above; kept as a guard for edits to them
        raise RepairError(f"no valid {model} size for a {width}x{height} image within {budget} pixels")
    return best[3], best[4]


def parse_size(size: str, model: str, max_pixels: int = MAX_PIXELS) -> tuple[int, int] | None:
    """Validate a ``"WxH"`` / ``"auto"`` size for ``model``; returns (w, h), or None for auto."""
    if size == "auto":
        return None
    try:
        w_text, h_text = size.lower().split("x")
        w, h = int(w_text), int(h_text)
    except ValueError:
        raise RepairError(f"size {size!r} is not WIDTHxHEIGHT or 'auto'") from None
    if model_rules(model).flexible_size:
        if not flexible_size_ok(w, h, max_pixels):
            raise RepairError(
                f"size {size} is not valid for {model}: both sides multiples of {SIZE_STEP}, at most {MAX_EDGE} px, "
                f"aspect within 1:3..3:1, {MIN_PIXELS:,}-{min(max_pixels, MAX_PIXELS):,} pixels")
    elif (w, h) not in FIXED_SIZES:
        allowed = ", ".join(f"{a}x{b}" for a, b in FIXED_SIZES)
        raise RepairError(f"size {size} is not valid for {model}: use {allowed} or auto")
    return w, h


# --- geometry: input <-> request -----------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """How the input maps onto the request: pad with edge pixels to the request's aspect, then scale."""

    input_size: tuple[int, int]  # (W, H) of the input
    padded_size: tuple[int, int]  # (W, H) after padding to the request's aspect
    offset: tuple[int, int]  # (left, top) of the input inside the padded canvas
    send_size: tuple[int, int]  # (W, H) of the image sent (= the request size unless size is auto)
    size_param: str  # what goes in the request's size field

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) padding in input pixels."""
        (w, h), (pw, ph), (left, top) = self.input_size, self.padded_size, self.offset
        return top, ph - h - top, left, pw - w - left


def plan_geometry(width: int, height: int, size: tuple[int, int] | None, max_pixels: int) -> Geometry:
    """Geometry for a request of ``size`` (None = auto: no padding, scaled down to ``max_pixels``)."""
    if size is None:
        scale = min(1.0, math.sqrt(max_pixels / (width * height)))
        send = (max(1, round(width * scale)), max(1, round(height * scale)))
        return Geometry((width, height), (width, height), (0, 0), send, "auto")
    target = size[0] / size[1]
    if width / height > target:
        padded = (width, max(height, round(width / target)))
    else:
        padded = (max(width, round(height * target)), height)
    offset = ((padded[0] - width) // 2, (padded[1] - height) // 2)
    return Geometry((width, height), padded, offset, size, f"{size[0]}x{size[1]}")


def to_request_image(image: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The input padded (edge pixels) and scaled to the sent size; a new array."""
    top, bottom, left, right = geometry.padding
    padded = image
    if any(geometry.padding):
        padded = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_REPLICATE)
    return resize(padded, geometry.send_size)


def to_request_mask(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The bool edit mask on the sent image's grid; padding is never editable, and any request pixel
    that overlaps an editable input pixel is editable (a thin mask survives downscaling)."""
    top, bottom, left, right = geometry.padding
    padded = np.pad(np.asarray(mask, dtype=bool), ((top, bottom), (left, right)))
    return resize_mask(padded, geometry.send_size, any_coverage=True)


def from_request_image(result: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A returned image brought back to the input's geometry (scaled to the padded canvas, padding cut off)."""
    canvas = resize(result, geometry.padded_size)
    (w, h), (left, top) = geometry.input_size, geometry.offset
    return np.ascontiguousarray(canvas[top:top + h, left:left + w])


def api_mask(mask: np.ndarray) -> np.ndarray:
    """The Images API's mask form for a bool mask (True = may change): H x W x 4 uint8 RGBA, black,
    alpha 0 where the edit may happen and 255 where it may not."""
    mask = np.asarray(mask, dtype=bool)
    rgba = np.zeros(mask.shape + (4,), dtype=np.uint8)
    rgba[..., 3] = np.where(mask, 0, 255).astype(np.uint8)
    return rgba


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an RGB or RGBA uint8 array."""
    code = cv2.COLOR_RGBA2BGRA if array.shape[2] == 4 else cv2.COLOR_RGB2BGR
    ok, data = cv2.imencode(".png", cv2.cvtColor(array, code))
    if not ok:
        raise RepairError("could not encode an image as PNG for the request")
    return data.tobytes()


def decode_image(data: bytes) -> np.ndarray:
    """An H x W x 3 uint8 RGB array from PNG / JPEG / WebP bytes (alpha dropped)."""
    from PIL import Image, UnidentifiedImageError

    from fixloop.checks.images import decoded_from_pil, to_uint8

    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            decoded = decoded_from_pil(opened)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise RepairError(f"the endpoint returned an image that cannot be decoded ({' '.join(str(exc).split())[:120]})") from None
    return to_uint8(decoded.pixels)


# --- prices --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Price:
    """US dollars per 1M tokens for one model."""

    text_input: float
    image_input: float
    image_output: float
    text_output: float | None = None


_PRICE_KEYS = {"text_input", "image_input", "image_output", "text_output"}
_REQUIRED_PRICE_KEYS = {"text_input", "image_input", "image_output"}


def _read_prices(path: Path) -> dict[str, Price]:
    if not path.is_file():
        raise RepairError(f"price table {str(path)!r} does not exist: check the path")
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise RepairError(f"price table {str(path)!r} is not valid TOML: {exc}") from None
    if set(data) - {"prices"}:
        raise RepairError(f"price table {str(path)!r} has unknown top-level keys {sorted(set(data) - {'prices'})}: "
                          "put every model under [prices.\"MODEL\"]")
    table = data.get("prices", {})
    prices: dict[str, Price] = {}
    for model, row in table.items():
        where = f"price table {str(path)!r}, model {model!r}"
        if not isinstance(row, dict):
            raise RepairError(f"{where}: expected a table of per-1M-token prices")
        unknown, missing = set(row) - _PRICE_KEYS, _REQUIRED_PRICE_KEYS - set(row)
        if unknown or missing:
            raise RepairError(f"{where}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}; "
                              f"known keys are {sorted(_PRICE_KEYS)}")
        for key, value in row.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise RepairError(f"{where}: {key} must be a non-negative number of dollars per 1M tokens")
        prices[model] = Price(**{key: float(value) for key, value in row.items()})
    return prices


def load_prices(path: str | Path | None = None) -> dict[str, Price]:
    """The shipped price table, with the models named in the TOML file ``path`` (if any) replaced or added."""
    prices = _read_prices(DEFAULT_PRICES_PATH)
    if path is not None:
        prices.update(_read_prices(Path(path)))
    return prices


def price_for(model: str, prices: dict[str, Price]) -> Price | None:
    """The row for ``model`` or for the base model of a dated snapshot; None when there is none."""
    base = _base_model(model, prices)
    return prices[base] if base else None


def call_cost(usage: dict[str, Any], price: Price) -> float:
    """US dollars for one call's ``usage`` block.

    Input tokens split by ``input_tokens_details`` (text / image); without the details all input is
    priced as image input (the dearer rate). Output tokens split by ``output_tokens_details`` where
    present (text output at ``text_output``, or at ``image_output`` when the table has none); else
    all output is image output.
    """
    input_tokens = int(usage.get("input_tokens") or 0)
    output_tokens = int(usage.get("output_tokens") or 0)
    details = usage.get("input_tokens_details") or {}
    if details:
        text_in = int(details.get("text_tokens") or 0)
        image_in = int(details.get("image_tokens") or 0)
    else:
        text_in, image_in = 0, input_tokens
    out_details = usage.get("output_tokens_details") or {}
    if out_details:
        image_out = int(out_details.get("image_tokens") or 0)
        text_out = int(out_details.get("text_tokens") or 0)
    else:
        image_out, text_out = output_tokens, 0
    text_out_rate = price.text_output if price.text_output is not None else price.image_output
    dollars = (text_in * price.text_input + image_in * price.image_input
               + image_out * price.image_output + text_out * text_out_rate)
    return dollars / 1_000_000


# gpt-image-1's published output tokens for a 1024x1024 image by quality, used (scaled by area) to
# estimate a call before it is made; an unknown quality counts as high.
OUTPUT_TOKENS_1024 = {"low": 272, "medium": 1056, "high": 4160, "auto": 4160}
INPUT_IMAGE_TOKENS = 1500  # rough image-input tokens of one edit request (image + mask)


def estimate_usd(model: str | None, size: tuple[int, int], quality: str,
                 prices: str | Path | None = None) -> float | None:
    """Estimated US dollars of one edit of a ``size`` (w, h) input at ``quality``, before it is made:
    the output tokens of the request size the tool will choose (the published 1024x1024 figure
    scaled by area, never below it) plus a typical image input, at the model's price. None when
    the price table has no row for the model (its calls cannot be kept within a dollar budget)."""
    model = model or DEFAULT_MODEL
    price = price_for(model, load_prices(prices))
    if price is None:
        return None
    w, h = choose_size(*size, model)  # the size actually requested, not the input's
    output = OUTPUT_TOKENS_1024.get(quality, OUTPUT_TOKENS_1024["high"]) * max(1.0, w * h / 1024**2)
    return (output * price.image_output + INPUT_IMAGE_TOKENS * price.image_input) / 1e6


# --- parameters ----------------------------------------------------------------------------------


class OpenAIEditParams(BaseModel):
    """The ``openai`` tool's settings (``RepairRequest.parameters``); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, min_length=1,
                       description="GPT Image model; dated snapshots use their base model's rules")
    quality: Literal["low", "medium", "high", "auto"] | None = Field(
        None, description="explicit quality; default low, or high when final is set")
    final: bool = Field(False, description="the final render: quality high unless quality says otherwise")
    size: str | None = Field(None, description="'WxH' or 'auto'; default: chosen from the input by the model's rules")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=MIN_PIXELS, le=MAX_PIXELS,
                            description="pixel budget for the chosen size, the auto-sized upload and the references")
    output_format: Literal["png", "jpeg", "webp"] = "png"
    output_compression: int | None = Field(None, ge=0, le=100, description="jpeg / webp only, 0-100")
    background: Literal["opaque", "auto"] = Field(
        "opaque", description="opaque by default: the result is RGB; cut subjects out downstream")
    input_fidelity: Literal["high", "low"] | None = Field(
        "high", description="sent only to models that accept it (not gpt-image-2 or gpt-image-1-mini)")
    n: int = Field(1, ge=1, le=10, description="images per call; the tool returns the first")
    api_key: str | None = Field(None, repr=False, description="default: the OPENAI_API_KEY environment variable")
    base_url: str | None = Field(None, description="default: OPENAI_BASE_URL, else the official endpoint")
    max_retries: int = Field(3, ge=0, le=10, description="retries for 429, 408, 409, 5xx and a connection "
                             "that failed before any answer (never for a call that may have been charged)")
    timeout: float = Field(300.0, gt=0, le=3600, description="seconds per attempt")
    deadline_s: float | None = Field(None, gt=0, le=7 * 86400, description="seconds this call may take in all, "
                                     "retries and waits included (the repair loop passes what its budget has left)")
    prices: str | None = Field(None, description="a TOML price table laid over tools/prices.toml")

    @property
    def resolved_quality(self) -> str:
        return self.quality or ("high" if self.final else "low")


def _parse_params(parameters: dict[str, Any]) -> OpenAIEditParams:
    try:
        return OpenAIEditParams(**parameters)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "parameters"
        if error["type"] == "extra_forbidden":
            known = ", ".join(OpenAIEditParams.model_fields)
            raise RepairError(f"unknown parameter {where!r} for the {TOOL_NAME} tool; known: {known}") from None
        raise RepairError(f"{TOOL_NAME} parameter {where}: {error['msg']}") from None


# --- the call ------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    settings: OpenAIEditParams
    rules: ModelRules
    api_key: str
    geometry: Geometry
    images: list[tuple[str, bytes, str]]
    mask: tuple[str, bytes, str] | None
    prompt: str
    notes: list[str]


def _check_and_prepare(request: RepairRequest) -> _Prepared:
    # 1. inputs: parameters, key, pixels, prompt; nothing is sent before all of them pass
    settings = _parse_params(dict(request.parameters))
    api_key = settings.api_key or os.environ.get("OPENAI_API_KEY")
    if not api_key:
        raise RepairError("no OpenAI API key: set OPENAI_API_KEY (and OPENAI_BASE_URL for a compatible endpoint) "
                          "or pass parameters['api_key']")
    image = check_image(request.image)
    mask = check_mask(request.mask, image, required=False)
    references = [check_image(ref, role=f"reference {i + 1}") for i, ref in enumerate(request.references)]
    if 1 + len(references) > MAX_INPUT_IMAGES:
        raise RepairError(f"{len(references)} references: the Images API takes at most {MAX_INPUT_IMAGES} images "
                          "(the image to edit plus 15 references)")
    prompt = (request.prompt or "").strip()
    if not prompt:
        raise RepairError("the openai tool needs a prompt: render a template for this repair first")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise RepairError(f"the prompt has {len(prompt)} characters; GPT Image takes at most {MAX_PROMPT_CHARS}")
    if settings.output_compression is not None and settings.output_format == "png":
        raise RepairError("output_compression applies to jpeg and webp only: set output_format or drop it")
    rules = model_rules(settings.model)
    notes: list[str] = []
    if rules is FALLBACK_RULES:
        notes.append(f"model {settings.model!r} is not in the model table: using the fixed sizes and no input_fidelity")
    if settings.input_fidelity is not None and not rules.input_fidelity and "input_fidelity" in request.parameters:
        notes.append(f"input_fidelity not sent: {settings.model} does not accept it")
    if request.negative_prompt:
        notes.append("negative_prompt not sent: GPT Image has none; the GPT Image prompt carries the do-not clauses")

    # 2. prepare: geometry, the sent image, its mask, the references
    height, width = image.shape[:2]
    if settings.size is not None:
        size = parse_size(settings.size, settings.model)
    else:
        size = choose_size(width, height, settings.model, settings.max_pixels)
    geometry = plan_geometry(width, height, size, settings.max_pixels)
    if any(geometry.padding):
        top, bottom, left, right = geometry.padding
        notes.append(f"input padded by {top}/{bottom}/{left}/{right} px (top/bottom/left/right) to the "
                     f"{geometry.size_param} aspect; the padding is cut off the result")
    files = [("image.png", encode_png(to_request_image(image, geometry)), "image/png")]
    for i, reference in enumerate(references):
        ref_h, ref_w = reference.shape[:2]
        scale = min(1.0, math.sqrt(settings.max_pixels / (ref_w * ref_h)))
        if scale < 1.0:
            reference = resize(reference, (max(1, round(ref_w * scale)), max(1, round(ref_h * scale))))
        files.append((f"reference_{i + 1}.png", encode_png(reference), "image/png"))
    mask_file = None
    if mask is not None:
        mask_file = ("mask.png", encode_png(api_mask(to_request_mask(mask, geometry))), "image/png")
    return _Prepared(settings, rules, api_key, geometry, files, mask_file, prompt, notes)


def _moderation_message(exc: Any) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    details = body.get("moderation_details") or {}
    categories = details.get("categories") if isinstance(details, dict) else None
    what = f"{exc.code}" + (f", categories: {', '.join(map(str, categories))}" if categories else "")
    message = " ".join(str(body.get("message") or exc.message).split())
    return (f"GPT Image refused the request on content grounds ({what}); not retried: change the prompt or the "
            f"input images. The endpoint said: {message}")


def _api_error_message(exc: Any) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    message = " ".join(str(body.get("message") or exc.message).split())
    code = f" {exc.code}" if getattr(exc, "code", None) else ""
    return f"HTTP {exc.status_code}{code}: {message}"


UNREACHABLE_S = 45.0  # seconds of failed connections (nothing sent) after which an endpoint counts as unreachable
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # waits between retries when the endpoint names none


class EndpointUnreachable(RepairError):
    """The endpoint could not be reached at all: the repair loop ends the run (a retry would not help)."""


def _retry_after(exc: Any) -> float | None:
    """Seconds the endpoint asked to wait (``retry-after-ms`` or ``retry-after``), if it said."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


def _call_api(prepared: _Prepared) -> tuple[Any, int, str]:
    """Run images.edit; returns (response, attempts, base_url).

    Retries are ours (the client's own are off) so that each one is decided here: a 429 (after its
    Retry-After), 408, 409, a 5xx, or a connection that failed before an answer came is retried up to
    ``max_retries`` times while ``deadline_s`` leaves room for the wait; a call that may have been
    charged (a 200, whatever it held, or a response that timed out after the upload) is never sent
    again. An endpoint that refuses every connection for UNREACHABLE_S seconds raises
    :class:`EndpointUnreachable`."""
    try:
        import openai
    except ImportError:
        raise RepairError("the openai package is not installed: pip install 'openai>=2.8,<3'") from None

    settings = prepared.settings
    started = time.monotonic()
    deadline = started + (settings.deadline_s if settings.deadline_s is not None else math.inf)
    sent: list[int] = []
    http_client = openai.DefaultHttpxClient(event_hooks={"request": [lambda request: sent.append(1)]})
    client = openai.OpenAI(api_key=prepared.api_key, base_url=settings.base_url, max_retries=0,
                           timeout=settings.timeout, http_client=http_client)
    base_url = str(client.base_url)
    arguments: dict[str, Any] = {
        "image": prepared.images[0] if len(prepared.images) == 1 else prepared.images,
        "prompt": prepared.prompt,
        "model": settings.model,
        "size": prepared.geometry.size_param,
        "quality": settings.resolved_quality,
        "n": settings.n,
        "output_format": settings.output_format,
        "background": settings.background,
    }
    if prepared.mask is not None:
        arguments["mask"] = prepared.mask
    if settings.output_compression is not None:
        arguments["output_compression"] = settings.output_compression
    if settings.input_fidelity is not None and prepared.rules.input_fidelity:
        arguments["input_fidelity"] = settings.input_fidelity
    tries = 0
    unreachable_since: float | None = None
    with client:
        while True:
            tries += 1
            left = deadline - time.monotonic()
            if left <= 0.5:
                raise RepairError(f"images.edit not sent: the run's seconds budget has {max(left, 0):.1f} s left "
                                  f"({tries - 1} attempts made)")
            try:
                response = _edit_once(client, arguments, min(settings.timeout, left), base_url, sent)
                return response, len(sent), base_url
            except _Retry as retry:
                now = time.monotonic()
                if retry.unreachable:
                    unreachable_since = unreachable_since if unreachable_since is not None else now
                    if now - unreachable_since >= UNREACHABLE_S or tries > settings.max_retries:
                        raise EndpointUnreachable(f"cannot reach {base_url} ({retry.cause}) after {tries} attempts "
                                                  f"in {now - started:.1f} s: check OPENAI_BASE_URL and the network")
                else:
                    unreachable_since = None
                if tries > settings.max_retries:
                    raise RepairError(f"{retry.cause}; gave up after {tries} attempts in {now - started:.1f} s "
                                      "(raise max_retries to try longer)") from None
                wait = retry.wait if retry.wait is not None else BACKOFF_S[min(tries - 1, len(BACKOFF_S) - 1)]
                if now + wait >= deadline - 0.5:
                    raise RepairError(f"{retry.cause}; not retried: the wait of {wait:g} s would pass the run's "
                                      f"seconds budget ({max(deadline - now, 0):.1f} s left)") from None
                time.sleep(wait)


class _Retry(Exception):
    """Internal: this try failed in a way a retry can help (nothing was charged)."""

    def __init__(self, cause: str, wait: float | None = None, unreachable: bool = False):
        super().__init__(cause)
        self.cause, self.wait, self.unreachable = cause, wait, unreachable


def _edit_once(client: Any, arguments: dict[str, Any], timeout: float, base_url: str, sent: list[int]) -> Any:
    """One images.edit request: its response, :class:`_Retry`, or a one-line error that ends the tool."""
    import httpx
    import openai

    before = len(sent)
    try:
        return client.images.edit(**arguments, timeout=timeout)
    except openai.BadRequestError as exc:
        if exc.code in MODERATION_CODES:
            raise ModerationBlocked(_moderation_message(exc)) from None
        raise RepairError(f"images.edit rejected the request ({_api_error_message(exc)})") from None
    except openai.AuthenticationError as exc:
        raise RepairError(f"the endpoint {base_url} rejected the API key ({_api_error_message(exc)}): "
                          "check OPENAI_API_KEY") from None
    except openai.RateLimitError as exc:
        raise _Retry(f"rate limited by {base_url} ({_api_error_message(exc)})", _retry_after(exc)) from None
    except openai.APIStatusError as exc:
        if exc.status_code in (408, 409) or exc.status_code >= 500:
            raise _Retry(f"images.edit failed ({_api_error_message(exc)})", _retry_after(exc)) from None
        raise RepairError(f"images.edit failed ({_api_error_message(exc)})") from None
    except openai.APITimeoutError:
        # the upload went out and no answer came in time: the call may have been charged, so it is not sent again
        raise RepairError(f"images.edit timed out after {timeout:.1f} s with no answer; not retried (the call may "
                          "have been charged): raise timeout or use a lower quality") from None
    except openai.APIConnectionError as exc:
        cause = exc.__cause__
        reason = " ".join(str(cause or exc).split())[:160] or type(cause or exc).__name__
        never_connected = isinstance(cause, (httpx.ConnectError, httpx.ConnectTimeout)) or len(sent) == before
        # a reset before any answer: nothing came back, so nothing was delivered or charged; retried
        raise _Retry(f"connection to {base_url} failed ({reason})", unreachable=never_connected) from None
    except openai.APIResponseValidationError as exc:
        raise RepairError(f"{base_url} answered with a body that is not an Images API response ({exc.message}); "
                          "not retried (the call may have been charged)") from None
    except openai.OpenAIError as exc:
        raise RepairError(f"images.edit failed: {' '.join(str(exc).split())[:200]}") from None
    except ValueError as exc:  # a 200 whose body is not JSON
        raise RepairError(f"{base_url} answered with a body that is not JSON ({' '.join(str(exc).split())[:120]}); "
                          "not retried (the call may have been charged)") from None


def _check_returned(image: np.ndarray, geometry: Geometry, base_url: str) -> np.ndarray:
    """A returned image of another size is brought back to the input's geometry (an endpoint that
    ignores the size still helps), unless it cannot stand for the request: a side under 16 px, or an
    aspect off by more than 2x (stretching it back would wreck the picture): a one-line error."""
    h, w = image.shape[:2]
    sw, sh = geometry.send_size
    if min(w, h) < 16 or not 0.5 <= (w / h) / (sw / sh) <= 2.0:
        raise RepairError(f"{base_url} returned a {w}x{h} image for a {sw}x{sh} request: not the framing asked "
                          "for, the result is not used")
    return image


def _usage_dict(response: Any) -> dict[str, Any] | None:
    usage = getattr(response, "usage", None)
    if usage is None:
        return None
    return usage.model_dump(exclude_none=True) if hasattr(usage, "model_dump") else dict(usage)


def edit_candidates(request: RepairRequest) -> tuple[RepairResult, list[np.ndarray]]:
    """The ``openai`` tool, also returning every image of an ``n > 1`` call at the input's geometry."""
    started = time.perf_counter()
    prepared = _check_and_prepare(request)
    settings = prepared.settings
    prices = load_prices(settings.prices)  # read before spending, so a bad table fails first

    # 3. run
    response, attempts, base_url = _call_api(prepared)

    # 4. post-process: decode, back to the input's geometry, cost
    data = list(getattr(response, "data", None) or [])
    encoded = [item.b64_json for item in data if getattr(item, "b64_json", None)]
    if not encoded:
        raise RepairError(f"{base_url} answered without a b64_json image: the endpoint is not Images-API compatible")
    returned = []
    for item in encoded:
        try:
            raw = base64.b64decode(item, validate=False)
        except (ValueError, TypeError):
            raise RepairError(f"{base_url} answered with b64_json that is not base64: not retried (the call was "
                              "charged)") from None
        returned.append(_check_returned(decode_image(raw), prepared.geometry, base_url))
    candidates = [from_request_image(image, prepared.geometry) for image in returned]
    notes = list(prepared.notes)
    if len(candidates) > 1:
        notes.append(f"n={len(candidates)}: returned the first image; tools.openai_images.edit_candidates returns all")
    usage = _usage_dict(response)
    price = price_for(settings.model, prices)
    cost = 0.0
    if usage is None:
        notes.append("the response had no usage block: cost unknown, reported as 0")
    elif price is None:
        notes.append(f"no price for {settings.model} in the price table: cost unknown, reported as 0")
    else:
        cost = call_cost(usage, price)
    parameters: dict[str, Any] = {
        "model": settings.model,
        "size": prepared.geometry.size_param,
        "quality": settings.resolved_quality,
        "output_format": settings.output_format,
        "background": settings.background,
        "n": settings.n,
        "references": len(prepared.images) - 1,
        "mask": prepared.mask is not None,
        "padding": list(prepared.geometry.padding),
        "attempts": attempts,
        "base_url": base_url,
        "usage": usage,
        "cost_known": usage is not None and price is not None,
    }
    if settings.output_compression is not None:
        parameters["output_compression"] = settings.output_compression
    if settings.input_fidelity is not None and prepared.rules.input_fidelity:
        parameters["input_fidelity"] = settings.input_fidelity
    result = RepairResult(
        image=candidates[0],
        tool=TOOL_NAME,
        mask=None if request.mask is None else np.asarray(request.mask, dtype=bool).copy(),
        parameters=parameters,
        seconds=time.perf_counter() - started,
        cost_usd=cost,
        notes=notes,
    )
    return result, candidates


# --- the backend ---------------------------------------------------------------------------------


def _ready(model: str | None) -> None:
    import importlib.util

    if not os.environ.get("OPENAI_API_KEY"):
        raise RepairError("the openai backend needs an API key: set OPENAI_API_KEY "
                          "(and OPENAI_BASE_URL for another endpoint)")
    if importlib.util.find_spec("openai") is None:
        raise RepairError("the openai backend needs the openai package: pip install 'openai>=2.8,<3'")


BACKEND = register_backend(BackendSpec(
    name="openai", module=__name__, tool=TOOL_NAME,
    description="GPT Image edits through the openai client; the mask is a hint, paid per call",
    paid=True, keeps_unmasked=False, prompt_style="gpt_image", default_model=DEFAULT_MODEL,
    env=(EnvVar("OPENAI_API_KEY", "the API key (required)"),
         EnvVar("OPENAI_BASE_URL", "another Images-API-compatible endpoint (default: OpenAI's)")),
    settings=(BackendSetting("model", "", f"GPT Image model; '' = {DEFAULT_MODEL}"),
              BackendSetting("quality", "high", "low | medium | high | auto: the quality of loop repairs")),
    check=_ready, estimate=estimate_usd))


@register_tool(TOOL_NAME, paid=True)
def openai_edit(request: RepairRequest) -> RepairResult:
    """GPT Image edit (openai client): image + references + mask + prompt, result at the input's geometry."""
    return edit_candidates(request)[0]
