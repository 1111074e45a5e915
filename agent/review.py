"""The review sheet: one PNG that records a repair run so a person can judge it and reproduce it.

The failure library's rule for the record of a repair: a three-panel sheet, input | mask or control map |
output, then a second row of 200 % close-ups for detail repairs, then a footer with every parameter that
matters for reproduction. The sheet is laid out top to bottom:

* header: the run's title and the input and output sizes. A run with no accepted repair says so here:
  "nothing was repaired: <first note>", then the caller's other notes (the stop reason comes first);
* row 1, three panels scaled to ``panel_height`` (aspect kept): the run's input; the middle panel, which
  shows what its title says: the first control map a repair used ("control map"), or else the union of the
  repairs' masks as a translucent tint with its outline over the input (over the output when the masks have
  the output's geometry and the input's differs) ("repair mask"). A repair without a mask could change every
  pixel (e.g. a global exposure pass): when no repair had a mask the whole input is tinted and the outline
  runs along the frame ("repair mask: whole image"), and when only some had one the frame outline is added
  to their masks and the title counts the whole-image repairs. Then the run's final output.
  A run with no accepted repair shows the input once ("input ... (output unchanged)"), not three copies of
  it; input | output only if the caller's output differs from the input anyway;
* row 2, only when a repair has stage "detail": for each detail repair (the first four) a before | after
  pair of 200 % close-ups. The window is the repair's box (or its mask's bounding box) padded by 25 % per
  side and clamped to the image; the before window is the same box scaled to the before image's size.
  Each crop is enlarged 2x with nearest-neighbour (every source pixel becomes a 2 x 2 block, so the
  close-up shows the real pixels, not a resampler's guess). A window whose 2x would pass
  ``CLOSEUP_MAX_SIDE`` is shrunk around the box centre instead, so the close-up stays a true 200 %;
* footer: per repair its title and stage, then "backend/model: ..." (always; "-" when unknown) and only
  those other ``FOOTER_FIELDS`` the repair used, as "label: value": a local repair shows its backend and
  nothing else, a diffusers repair its size, denoise, CFG, steps, ... A zero (seed 0) is a value, not a gap;
  a field is left out when its parameter is missing, None or "", a control scale when no control was used,
  a reference scale when no IP-Adapter was loaded. Then the caller's notes (stop reason, open defects,
  spend), unless the header already shows them (nothing repaired).

Why the footer: an accepted repair is only useful as evidence when it can be rerun. Backend/model, size,
quality, denoise, CFG, steps, sampler, scheduler, seed, control and reference scale are what a rerun needs;
listing the ones a tool never takes would only bury the ones it did.

:func:`review_image` builds the sheet as an array; :func:`render_review` also writes it as a PNG, atomically.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fixloop.checks.report import atomic_path

STAGES = ("structure", "light", "detail")

# (label, accepted parameter keys in order of preference). "backend/model" joins "tool" and "model".
FOOTER_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("backend/model", ("tool", "model")),
    ("size", ("size", "working_size")),
    ("quality", ("quality",)),
    ("denoise", ("strength", "denoise")),
    ("CFG", ("guidance", "guidance_scale", "cfg")),
    ("steps", ("steps",)),
    ("sampler", ("sampler",)),
    ("scheduler", ("scheduler", "scheduler_used")),
    ("seed", ("seed",)),
    ("control", ("control", "control_image")),
    ("control scale", ("control_scale",)),
    ("reference scale", ("ip_adapter_scale", "reference_scale")),
)
UNUSED = "-"  # footer_value's answer for a field the repair did not use; footer_lines leaves those out

PANEL_MAX_ASPECT = 16  # a panel is at most this many times as wide as high (commands refuse wider inputs)
MAX_CLOSEUPS = 4  # detail repairs shown in the close-up row
CLOSEUP_MAX_SIDE = 400  # px a close-up may reach after 2x; larger windows are shrunk, never scaled down
CLOSEUP_PADDING = 0.25  # share of the box's width (height) added on each side

FONT_SIZE = 14
LINE_HEIGHT = 18
MARGIN = 12
GAP = 8
BACKGROUND = (255, 255, 255)
TEXT = (25, 25, 25)
TEXT_DIM = (100, 100, 100)
MASK_COLOUR = np.array([255, 0, 110], dtype=np.float32)  # magenta: reads on skin, sky and foliage
MASK_ALPHA = 0.45


@dataclass
class ReviewRepair:
    """One accepted repair of the run, as the sheet shows it."""

    title: str  # e.g. "pass 2 · hand_malformed (P0) · openai gpt-image-2"
    stage: str  # "structure" | "light" | "detail"
    before: np.ndarray  # H x W x 3 uint8 RGB, the image this repair started from
    after: np.ndarray  # H' x W' x 3 uint8 RGB, what it produced (may differ in size: canvas expansion)
    mask: np.ndarray | None = None  # bool, `after`'s H' x W', True = where the repair could change pixels
    control: np.ndarray | None = None  # control map the repair used (H x W or H x W x 3 uint8), any size
    box: tuple[int, int, int, int] | None = None  # [x0, y0, x1, y1) region of interest in `after` pixels
    parameters: dict[str, Any] = field(default_factory=dict)  # tool settings, see FOOTER_FIELDS


# ---- footer text ---------------------------------------------------------------------------------

def footer_lines(repair: ReviewRepair) -> list[str]:
    """The repair's footer block: "title [stage]", "backend/model: ...", then one "label: value" line per
    other FOOTER_FIELDS entry the repair used (in FOOTER_FIELDS order); unused fields are left out."""
    lines = [f"{repair.title} [{repair.stage}]"]
    for label, _ in FOOTER_FIELDS:
        value = footer_value(repair, label)
        if label == "backend/model" or value != UNUSED:
            lines.append(f"{label}: {value}")
    return lines


def footer_value(repair: ReviewRepair, label: str) -> str:
    """The text shown for one footer field; "-" when the repair did not use it."""
    parameters = repair.parameters
    if label == "backend/model":
        return _backend(parameters)
    if label == "control scale" and not _used_control(repair):
        return UNUSED
    if label == "reference scale" and "ip_adapter" in parameters and not parameters["ip_adapter"]:
        return UNUSED  # diffusers records its default scale even without an IP-Adapter
    keys = dict(FOOTER_FIELDS)[label]
    value = next((parameters[key] for key in keys if _given(parameters.get(key))), None)
    return _format_value(value, label)


def _backend(parameters: Mapping[str, Any]) -> str:
    """"openai gpt-image-2", "diffusers <model>", "local.composite_back", or "-"."""
    tool, model = parameters.get("tool"), parameters.get("model")
    names = [str(name) for name in (tool, model) if _given(name)]
    if len(names) == 2 and names[1].startswith(names[0]):
        names = names[1:]
    return " ".join(names) or UNUSED


def _used_control(repair: ReviewRepair) -> bool:
    """False only when the parameters say no control was used (a "control" key that is empty)."""
    parameters = repair.parameters
    if repair.control is not None or _given(parameters.get("control_image")):
        return True
    return "control" not in parameters or _given(parameters["control"])


def _given(value: Any) -> bool:
    return value is not None and value != ""


def _format_value(value: Any, label: str) -> str:
    if not _given(value):
        return UNUSED
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        separator = "x" if label == "size" else ", "
        return separator.join(_format_value(item, "") for item in value)
    return str(value)


# ---- input checks --------------------------------------------------------------------------------

def _check_rgb(name: str, image: Any) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be an H x W x 3 uint8 RGB array, got {_describe(image)}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} is empty ({_describe(image)})")


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


def _check_repair(name: str, repair: Any) -> None:
    if not isinstance(repair, ReviewRepair):
        raise ValueError(f"{name} must be a ReviewRepair, got {type(repair).__name__}")
    if repair.stage not in STAGES:
        raise ValueError(f"{name}.stage must be one of {', '.join(STAGES)}, got {repair.stage!r}")
    _check_rgb(f"{name}.before", repair.before)
    _check_rgb(f"{name}.after", repair.after)
    size = repair.after.shape[:2]
    mask = repair.mask
    if mask is not None and (not isinstance(mask, np.ndarray) or mask.dtype not in (np.bool_, np.uint8)
                             or mask.shape != size):
        raise ValueError(f"{name}.mask must be a bool array of {name}.after's shape {size}, got {_describe(mask)}")
    control = repair.control
    if control is not None and (not isinstance(control, np.ndarray) or control.dtype != np.uint8
                                or not (control.ndim == 2 or (control.ndim == 3 and control.shape[2] in (1, 3)))
                                or min(control.shape[:2]) < 1):
        raise ValueError(f"{name}.control must be an H x W or H x W x 3 uint8 array, got {_describe(control)}")
    if repair.box is not None:
        _clamped_box(f"{name}.box", repair.box, size)
    if not isinstance(repair.parameters, Mapping):
        raise ValueError(f"{name}.parameters must be a dict, got {type(repair.parameters).__name__}")


def _clamped_box(name: str, box: Any, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``box`` clamped to an image of ``size`` (h, w); ValueError when it is malformed or empty there."""
    try:
        x0, y0, x1, y1 = (int(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be four integers [x0, y0, x1, y1), got {box!r}") from None
    h, w = size
    x0, x1 = max(0, x0), min(w, x1)
    y0, y1 = max(0, y0), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"{name} {tuple(box)} is empty inside the {w}x{h} image it refers to")
    return x0, y0, x1, y1


# ---- pixels --------------------------------------------------------------------------------------

def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """INTER_AREA when shrinking, bilinear when enlarging."""
    if (width, height) == (image.shape[1], image.shape[0]):
        return image.copy()
    shrinking = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _panel_size(shape: tuple[int, ...], height: int) -> tuple[int, int]:
    """(width, height) of an image of ``shape`` scaled to ``height``, aspect kept up to
    PANEL_MAX_ASPECT : 1 (a wider strip is squeezed: a sheet never grows past that, whatever the input)."""
    return min(max(1, round(shape[1] * height / shape[0])), PANEL_MAX_ASPECT * height), height


def _to_panel(image: np.ndarray, height: int) -> np.ndarray:
    return _resize(image, *_panel_size(image.shape, height))


def _as_rgb(control: np.ndarray) -> np.ndarray:
    if control.ndim == 2:
        return np.repeat(control[..., None], 3, axis=2)
    return np.repeat(control, 3, axis=2) if control.shape[2] == 1 else control


def _mask_overlay(base: np.ndarray, mask: np.ndarray, height: int, frame: bool = False) -> np.ndarray:
    """``base`` scaled to ``height`` with ``mask`` tinted in and outlined; pixels away from it unchanged.
    ``frame`` adds the outline of a whole-image mask (along the panel's edge) without its tint."""
    panel = _to_panel(base, height)
    ph, pw = panel.shape[:2]
    coverage = cv2.resize(mask.astype(np.float32), (pw, ph), interpolation=cv2.INTER_AREA) > 0  # any coverage
    tinted = panel[coverage].astype(np.float32) * (1 - MASK_ALPHA) + MASK_COLOUR * MASK_ALPHA
    panel[coverage] = np.clip(np.rint(tinted), 0, 255).astype(np.uint8)
    colour = tuple(int(c) for c in MASK_COLOUR)
    contours, _ = cv2.findContours(coverage.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(panel, contours, -1, colour, thickness=2)
    if frame:  # what drawContours draws for a mask covering the whole panel: its 2 px edge
        panel[:2], panel[-2:], panel[:, :2], panel[:, -2:] = colour, colour, colour, colour
    return panel


def _mask_union(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Union of the masks at ``shape`` (h, w); a mask of the same aspect but another size is resized
    (nearest), one of another aspect is left out. Returns the union and how many were left out."""
    union = np.zeros(shape, dtype=bool)
    left_out = 0
    for mask in masks:
        if mask.shape != shape:
            if abs(mask.shape[1] / mask.shape[0] - shape[1] / shape[0]) > 0.02 * shape[1] / shape[0]:
                left_out += 1
                continue
            mask = cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        union |= mask.astype(bool)
    return union, left_out


def middle_panel(input_image: np.ndarray, output_image: np.ndarray, repairs: Sequence[ReviewRepair],
                 height: int) -> tuple[np.ndarray, str]:
    """The middle panel of row 1 (``height`` px high) and its title: the first control map, else the
    repairs' masks over the input (or output), else the whole-image mask; see the module docstring.
    ``repairs`` must not be empty (a run without repairs has no middle panel)."""
    if not repairs:
        raise ValueError("the middle panel shows the repairs' masks: there are no repairs")
    for repair in repairs:
        if repair.control is not None:
            kind = footer_value(repair, "control")
            label = "control map" if kind == UNUSED or kind.startswith("array") else f"control map: {kind}"
            return _to_panel(_as_rgb(repair.control), height), label
    masks = [repair.mask for repair in repairs if repair.mask is not None]
    whole = len(repairs) - len(masks)  # repairs without a mask: they could change every pixel
    if not masks:
        return _mask_overlay(input_image, np.ones(input_image.shape[:2], bool), height), "repair mask: whole image"
    input_shape, output_shape = input_image.shape[:2], output_image.shape[:2]
    on_output = not any(m.shape == input_shape for m in masks) and any(m.shape == output_shape for m in masks)
    base = output_image if on_output else input_image
    union, left_out = _mask_union(masks, base.shape[:2])
    label = "repair mask" + (" (over output)" if on_output else "")
    if whole:
        label += f"; whole image (frame) for {whole} repair{'s' if whole > 1 else ''}"
    if left_out:
        label += f", {left_out} of another shape not drawn"
    return _mask_overlay(base, union, height, frame=bool(whole)), label


# ---- close-ups -----------------------------------------------------------------------------------

def closeup_window(box: tuple[int, int, int, int], width: int, height: int,
                   max_side: int = CLOSEUP_MAX_SIDE // 2) -> tuple[int, int, int, int]:
    """The [x0, y0, x1, y1) crop for a close-up of ``box`` in a ``width`` x ``height`` image.

    The box padded by 25 % of its width (height) per side, clamped to the image; a side longer than
    ``max_side`` (the crop's limit before 2x) is shrunk to ``max_side`` around the box centre.
    """
    x0, y0, x1, y1 = _clamped_box("box", box, (height, width))
    left, right = _padded_span(x0, x1, width, max_side)
    top, bottom = _padded_span(y0, y1, height, max_side)
    return left, top, right, bottom


def _padded_span(start: int, stop: int, limit: int, max_side: int) -> tuple[int, int]:
    """[start, stop) padded by CLOSEUP_PADDING per side, clamped to [0, limit), at most ``max_side`` long."""
    pad = (stop - start) * CLOSEUP_PADDING
    low, high = max(0, math.floor(start - pad)), min(limit, math.ceil(stop + pad))
    return _centred_span(low, high, (start + stop) / 2, limit, max_side)


def _centred_span(low: int, high: int, centre: float, limit: int, max_side: int) -> tuple[int, int]:
    """[low, high) unchanged when at most ``max_side`` long, else ``max_side`` around ``centre`` inside [0, limit)."""
    if high - low <= max_side:
        return low, high
    low = min(max(0, round(centre - max_side / 2)), limit - max_side)
    return low, low + max_side


def _focus_box(repair: ReviewRepair) -> tuple[int, int, int, int]:
    """The repair's box, else its mask's bounding box, else the whole ``after`` image."""
    h, w = repair.after.shape[:2]
    if repair.box is not None:
        return _clamped_box("box", repair.box, (h, w))
    if repair.mask is not None and repair.mask.any():
        ys, xs = np.nonzero(repair.mask)
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return 0, 0, w, h


def _before_window(window: tuple[int, int, int, int], after_shape: tuple[int, ...],
                   before_shape: tuple[int, ...], max_side: int) -> tuple[int, int, int, int]:
    """``window`` (in ``after`` pixels) scaled to the before image, kept non-empty and at most ``max_side``."""
    sx, sy = before_shape[1] / after_shape[1], before_shape[0] / after_shape[0]
    bw, bh = before_shape[1], before_shape[0]
    x0, x1 = min(bw - 1, math.floor(window[0] * sx)), max(1, math.ceil(window[2] * sx))
    y0, y1 = min(bh - 1, math.floor(window[1] * sy)), max(1, math.ceil(window[3] * sy))
    x0, x1 = _centred_span(x0, min(bw, max(x1, x0 + 1)), (x0 + x1) / 2, bw, max_side)
    y0, y1 = _centred_span(y0, min(bh, max(y1, y0 + 1)), (y0 + y1) / 2, bh, max_side)
    return x0, y0, x1, y1


def _double(image: np.ndarray) -> np.ndarray:
    """200 %: every pixel becomes a 2 x 2 block (nearest-neighbour)."""
    return cv2.resize(image, (image.shape[1] * 2, image.shape[0] * 2), interpolation=cv2.INTER_NEAREST)


@dataclass
class _Closeup:
    title: str
    before: np.ndarray  # already 2x
    after: np.ndarray  # already 2x
    before_window: tuple[int, int, int, int]
    after_window: tuple[int, int, int, int]

    @property
    def width(self) -> int:
        return self.before.shape[1] + GAP + self.after.shape[1]

    @property
    def height(self) -> int:
        return max(self.before.shape[0], self.after.shape[0])


def _closeup(repair: ReviewRepair) -> _Closeup:
    max_side = CLOSEUP_MAX_SIDE // 2
    h, w = repair.after.shape[:2]
    window = closeup_window(_focus_box(repair), w, h, max_side)
    before_window = _before_window(window, repair.after.shape, repair.before.shape, max_side)
    ax0, ay0, ax1, ay1 = window
    bx0, by0, bx1, by1 = before_window
    return _Closeup(repair.title, _double(repair.before[by0:by1, bx0:bx1]), _double(repair.after[ay0:ay1, ax0:ax1]),
                    before_window, window)


# ---- text ----------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=FONT_SIZE)


def _text_width(text: str) -> float:
    return _font().getlength(text)


def _wrap(text: str, width: int) -> list[str]:
    """``text`` broken at spaces (inside over-long words if need be) into lines at most ``width`` px wide."""
    return _flow(text.split(" "), width, separator=" ")


def _fitting_prefix(text: str, width: int) -> int:
    """Length of the longest prefix of ``text`` (at least 1 character) that fits in ``width`` px."""
    cut = 1
    while cut < len(text) and _text_width(text[:cut + 1]) <= width:
        cut += 1
    return cut


def _break_word(word: str, width: int) -> list[str]:
    """A word too wide for one line, cut into pieces that fit."""
    pieces = []
    while _text_width(word) > width and len(word) > 1:
        cut = _fitting_prefix(word, width)
        pieces.append(word[:cut])
        word = word[cut:]
    return [*pieces, word]


def _flow(items: Sequence[str], width: int, separator: str = "    ") -> list[str]:
    """Items packed into lines at most ``width`` px wide; an item is broken (at its spaces, else
    inside a word) only when it alone is too wide."""
    lines: list[str] = []
    line = ""
    for item in items:
        candidate = f"{line}{separator}{item}" if line else item
        if _text_width(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        *full, line = _wrap(item, width) if " " in item else _break_word(item, width)
        lines.extend(full)
    if line or (separator == " " and not lines):
        lines.append(line)
    return lines


def _ellipsize(text: str, width: int) -> str:
    if _text_width(text) <= width:
        return text
    while text and _text_width(text + "...") > width:
        text = text[:-1]
    return text + "..."


# ---- layout --------------------------------------------------------------------------------------

class _Sheet:
    """A white canvas that images are pasted on and text lines queued for; text is drawn once, at the end."""

    def __init__(self, width: int, height: int):
        self.pixels = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
        self.texts: list[tuple[int, int, str, tuple[int, int, int]]] = []

    def paste(self, image: np.ndarray, x: int, y: int) -> None:
        self.pixels[y:y + image.shape[0], x:x + image.shape[1]] = image

    def text(self, x: int, y: int, line: str, colour: tuple[int, int, int] = TEXT) -> None:
        self.texts.append((x, y, line, colour))

    def finish(self) -> np.ndarray:
        if not self.texts:
            return self.pixels
        canvas = Image.fromarray(self.pixels)
        draw = ImageDraw.Draw(canvas)
        for x, y, line, colour in self.texts:
            draw.text((x, y), line, fill=colour, font=_font())
        return np.asarray(canvas).copy()


def _closeup_rows(closeups: Sequence[_Closeup], width: int) -> list[list[_Closeup]]:
    """Close-up pairs placed left to right, a new row when the next pair would pass ``width``."""
    rows: list[list[_Closeup]] = []
    for closeup in closeups:
        if rows and sum(c.width + 3 * GAP for c in rows[-1]) + closeup.width <= width:
            rows[-1].append(closeup)
        else:
            rows.append([closeup])
    return rows


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def header_lines(input_image: np.ndarray, output_image: np.ndarray, repairs: Sequence[ReviewRepair],
                 title: str = "", notes: Sequence[str] = ()) -> list[str]:
    """The header's lines before wrapping: the title; for a run with no repair "nothing was repaired:
    <first note>" and the other notes; then the sizes (and the number of accepted repairs)."""
    lines = [title] if title else []
    if not repairs:
        first, *rest = [str(note) for note in notes] or ["no repair was accepted"]
        lines += [f"nothing was repaired: {first}", *rest]
        same = _unchanged(input_image, output_image)
        lines.append(f"input {_size(input_image)}, output " + ("unchanged" if same else _size(output_image)))
    else:
        lines.append(f"input {_size(input_image)}, output {_size(output_image)}, {len(repairs)} accepted repair(s)")
    return lines


def _unchanged(input_image: np.ndarray, output_image: np.ndarray) -> bool:
    return input_image.shape == output_image.shape and np.array_equal(input_image, output_image)


def _footer_text(repairs: Sequence[ReviewRepair], notes: Sequence[str], hidden: int,
                 width: int) -> list[tuple[str, tuple[int, int, int]]]:
    """Footer lines (wrapped to ``width`` px) with their colours; without repairs the notes are in the
    header and the footer is empty."""
    lines: list[tuple[str, tuple[int, int, int]]] = []
    for index, repair in enumerate(repairs, start=1):
        title, *fields = footer_lines(repair)
        lines += [(line, TEXT) for line in _wrap(f"{index}. {title}", width)]
        lines += [(line, TEXT_DIM) for line in _flow(fields, width - 2 * GAP)]
    extra = list(notes) if repairs else []
    if hidden:
        extra.append(f"{hidden} more detail repair(s) without close-ups (the sheet shows the first {MAX_CLOSEUPS})")
    for note in extra:
        lines += [(line, TEXT) for line in _wrap(str(note), width)]
    return lines


def review_image(input_image: np.ndarray, output_image: np.ndarray, repairs: Sequence[ReviewRepair], *,
                 title: str = "", notes: Sequence[str] = (), panel_height: int = 512) -> np.ndarray:
    """The review sheet as an H x W x 3 uint8 RGB array (see the module docstring for what it shows)."""
    _check_rgb("input_image", input_image)
    _check_rgb("output_image", output_image)
    if isinstance(repairs, (str, bytes)) or not isinstance(repairs, Sequence):
        raise ValueError(f"repairs must be a sequence of ReviewRepair, got {type(repairs).__name__}")
    for index, repair in enumerate(repairs):
        _check_repair(f"repairs[{index}]", repair)
    if isinstance(panel_height, bool) or not isinstance(panel_height, int) or not 32 <= panel_height <= 4096:
        raise ValueError(f"panel_height must be an integer from 32 to 4096 px, got {panel_height!r}")
    if isinstance(notes, str):
        notes = [notes]

    input_panel = (_to_panel(input_image, panel_height), f"input {_size(input_image)}")
    output_panel = (_to_panel(output_image, panel_height), f"output {_size(output_image)}")
    if repairs:
        panels = [input_panel, middle_panel(input_image, output_image, repairs, panel_height), output_panel]
    elif _unchanged(input_image, output_image):
        panels = [(input_panel[0], f"{input_panel[1]} (output unchanged)")]  # once, not three copies
    else:
        panels = [input_panel, output_panel]
    details = [repair for repair in repairs if repair.stage == "detail"]
    closeups = [_closeup(repair) for repair in details[:MAX_CLOSEUPS]]

    top_width = sum(panel.shape[1] for panel, _ in panels) + (len(panels) - 1) * GAP
    content_width = max([top_width] + [closeup.width for closeup in closeups])
    text_width = max(content_width, 200)
    sheet_width = text_width + 2 * MARGIN
    *lead, sizes = header_lines(input_image, output_image, repairs, title, notes)
    header = [(wrapped, TEXT) for line in lead for wrapped in _wrap(line, text_width)]
    header += [(wrapped, TEXT_DIM) for wrapped in _wrap(sizes, text_width)]
    rows = _closeup_rows(closeups, content_width)
    footer = _footer_text(repairs, notes, len(details) - len(closeups), text_width)

    closeup_height = sum(2 * LINE_HEIGHT + max(c.height for c in row) + GAP for row in rows)
    height = (MARGIN + len(header) * LINE_HEIGHT + GAP + LINE_HEIGHT + panel_height + GAP
              + closeup_height + GAP + len(footer) * LINE_HEIGHT + MARGIN)
    sheet = _Sheet(sheet_width, height)

    y = MARGIN
    for line, colour in header:
        sheet.text(MARGIN, y, line, colour)
        y += LINE_HEIGHT
    y += GAP
    x = MARGIN
    for panel, label in panels:
        sheet.text(x, y, _ellipsize(label, panel.shape[1]))
        sheet.paste(panel, x, y + LINE_HEIGHT)
        x += panel.shape[1] + GAP
    y += LINE_HEIGHT + panel_height + GAP
    for row in rows:
        x = MARGIN
        for closeup in row:
            sheet.text(x, y, _ellipsize(closeup.title, closeup.width))
            after_x = x + closeup.before.shape[1] + GAP
            sheet.text(x, y + LINE_HEIGHT, _ellipsize("before 200 %", closeup.before.shape[1]), TEXT_DIM)
            sheet.text(after_x, y + LINE_HEIGHT, _ellipsize("after 200 %", closeup.after.shape[1]), TEXT_DIM)
            sheet.paste(closeup.before, x, y + 2 * LINE_HEIGHT)
            sheet.paste(closeup.after, after_x, y + 2 * LINE_HEIGHT)
            x += closeup.width + 3 * GAP
        y += 2 * LINE_HEIGHT + max(c.height for c in row) + GAP
    y += GAP
    for line, colour in footer:
        sheet.text(MARGIN, y, line, colour)
        y += LINE_HEIGHT
    return sheet.finish()


def render_review(input_image: np.ndarray, output_image: np.ndarray, repairs: Sequence[ReviewRepair],
                  path: str | Path, *, title: str = "", notes: Sequence[str] = (), panel_height: int = 512) -> Path:
    """Build the review sheet and write it to ``path`` (a .png) atomically; returns the path."""
    target = Path(path)
    if target.suffix.lower() != ".png":
        raise ValueError(f"the review sheet is a PNG: {str(target)!r} needs a .png suffix")
    sheet = review_image(input_image, output_image, repairs, title=title, notes=notes, panel_height=panel_height)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError(f"could not encode the review sheet for {str(target)!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        Path(tmp).write_bytes(encoded.tobytes())
    return target
