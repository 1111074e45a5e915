"""Deterministic repairs with OpenCV and numpy: no model, no network, no cost.

Each tool is one registered entry call ``(request: RepairRequest) -> RepairResult`` that validates
its inputs first, works on copies, and reports its settings and time:

- ``local.exposure_color``: one exposure + white-balance pass. Matched to the source, it inverts
  what the light checks measure (``checks.exposure.measure_exposure``: the EV change of the mean
  linear luminance; ``checks.color.measure_white_balance``: the per-channel linear gains, a von Kries
  diagonal model) on the pixels the edit was not allowed to change, and refines the correction until
  the same measures read zero. Matched to a named target, it estimates the picture's own illuminant
  (shades of grey, Finlayson & Trezzi 2004, Minkowski p = 6, in linear light) and re-lights it to the
  target white. Either way it is a per-channel curve applied to every pixel: content is untouched.
- ``local.composite_back``: the source's pixels restored outside the edit mask, with the seam
  feathered inside the mask so that every pixel outside it is the source's exactly.
- ``local.expand_canvas``: a larger canvas (to an aspect ratio, or by pixels per side) whose new area
  is filled by reflected or blurred content, returned with its outpaint mask: the first step of a
  recompose.
- ``local.defringe``: a halo on an edge ring removed by a morphological opening (bright fringe) or
  closing (dark fringe) inside the ring. Both keep a step edge where it is and remove any band
  narrower than the structuring element, so the fringe goes and the two sides of the boundary stay.
  Each ring pixel moves only by what exceeds the filter's median change just beside the ring, so
  fine detail along the edge (hair, fabric) is kept rather than flattened.
- ``local.flip_back``: a mirrored result flipped back, refused when the source says it is not
  mirrored.
- ``local.crop_first``: a small region cropped with padding, upscaled, handed to any repair, and its
  change brought back and blended in with a feather at the box border.

Crop boxes, mask resizing, seam feathering and the composite-back blend come from ``tools.masks``
(the diffusers tool composites back with the same function and default feather). The module also
declares the ``local`` backend: free, always ready, no generative repair.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import cv2
import numpy as np

from fixloop.checks.images import SRGB8_TO_LINEAR, linear_to_srgb8
from fixloop.tools.base import (
    TOOLS,
    BackendSpec,
    RepairError,
    RepairRequest,
    RepairResult,
    check_image,
    check_mask,
    register_backend,
    register_tool,
)
from fixloop.tools.masks import SEAMS, blend, crop_box, crop_padding, default_feather, feather, resize_mask

BACKEND = register_backend(BackendSpec(
    name="local", module=__name__, tool=None,
    description="offline, free, deterministic OpenCV repairs (exposure/colour, composite-back, flip, defringe); "
                "no generative repair"))

MEASURE_SIDE = 1024  # px; long side at which the light measurements are taken while correcting
REFINE_STEPS = 4  # correction rounds at most (the second one usually lands within 0.01 EV / 0.5 mired)
EV_TOLERANCE = 0.005  # EV; stop refining below this ...
MIRED_TOLERANCE = 0.25  # ... and this
SHADES_OF_GREY_P = 6.0  # Minkowski norm of the illuminant estimate (Finlayson & Trezzi 2004)

# Named white-balance targets: the colour temperature of the light the picture should look lit by.
# Neutral daylight is D65 itself; a sunset look keeps about 4500 K of warmth; overcast shade is
# bluish, about 7500 K.
WHITE_TARGETS_K = {
    "neutral daylight": 6504.0,
    "warm sunset": 4500.0,
    "cool overcast": 7500.0,
}

_SRGB_TO_LINEAR = SRGB8_TO_LINEAR


# ---- small shared pieces ------------------------------------------------------------------------


_to_srgb8 = linear_to_srgb8


def _gain_luts(gains: np.ndarray) -> np.ndarray:
    """3 x 256 tables: each sRGB level of a channel scaled by the channel's gain in linear light."""
    return np.stack([_to_srgb8(_SRGB_TO_LINEAR * float(g)) for g in gains])


def _apply_luts(image: np.ndarray, luts: np.ndarray) -> np.ndarray:
    out = np.empty_like(image)
    for c in range(3):
        out[..., c] = luts[c][image[..., c]]
    return out


# Every numeric setting of the local tools: (lowest, highest). A value outside is refused in one line
# before any work (a 100000-px grow would allocate tens of GB; 1e308 overflows an int).
RANGES: dict[str, tuple[float, float]] = {
    "cct": (1500, 15000),
    "ev": (-8.0, 8.0),
    "tint": (-1.0, 1.0),
    "feather": (0.0, 512.0),
    "multiple": (1, 1024),
    "overlap": (0, 512),
    "grow": (0, 64),
    "radius": (1, 64),
    "padding": (0.0, 4.0),
    "min_padding": (0, 4096),
    "work_side": (64, 8192),
    "max_upscale": (1.0, 8.0),
}
# pixels at most on a canvas the tools build (the decoder's own cap)
MAX_CANVAS_PIXELS = 40_000_000


def _param(parameters: dict[str, Any], name: str, default: Any, kind: type) -> Any:
    """A tool setting converted to ``kind`` and checked against :data:`RANGES`; a value that does not
    convert, is not finite or is out of range is a one-line error naming the key and the range."""
    import math

    value = parameters.get(name, default)
    if value is None:
        return None
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            if isinstance(value, (int, float)) and value in (0, 1):
                return bool(value)
            raise ValueError(value)
        if isinstance(value, (bool, dict, list, tuple)) or value is ...:
            raise TypeError(value)
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(value)
        if kind is int:
            if number != int(number) and not (isinstance(value, str) and "." not in value):
                number = round(number)
            converted = int(number)
        else:
            converted = kind(number)
    except (TypeError, ValueError, OverflowError):
        raise RepairError(f"parameter {name}={_short(value)} is not a valid {kind.__name__}"
                          + _range_text(name)) from None
    low, high = RANGES.get(name, (None, None))
    if low is not None and name in parameters and not low <= converted <= high:  # defaults are the tool's own
        raise RepairError(f"parameter {name}={_short(value)} is out of range{_range_text(name)}")
    return converted


INT_PARAMS = ("multiple", "overlap", "grow", "radius", "min_padding", "work_side")


def check_parameters(parameters: dict[str, Any]) -> None:
    """Every setting a user passed (``fix --param``), validated before any work: the ranged numbers
    of :data:`RANGES`, ``extend``, ``aspect``, a ``finding`` given by hand, and no number anywhere that
    is not finite or beyond 1e9 (one line naming the key)."""
    import math

    for name, value in parameters.items():
        if name in RANGES:
            _param(parameters, name, None, int if name in INT_PARAMS else float)
        elif isinstance(value, float) and (not math.isfinite(value) or abs(value) > 1e9):
            raise RepairError(f"parameter {name}={_short(value)} is not a usable number")
    if "extend" in parameters:
        _parse_extend(parameters["extend"])
    if "aspect" in parameters:
        parse_aspect(parameters["aspect"])
    finding = parameters.get("finding")
    if finding is not None and not hasattr(finding, "evidence"):
        if not isinstance(finding, dict):
            raise RepairError(f"finding={_short(finding)}: give an object, e.g. "
                              '{"evidence": {"extend": {"left": 40}}}')
        _finding_value(parameters, "extend")
        extend = _finding_value(parameters, "extend")
        if extend is not None:
            _parse_extend(extend)
    inner = parameters.get("repair_parameters")
    if inner is not None:
        if not isinstance(inner, dict):
            raise RepairError("repair_parameters must be an object of the inner repair's settings")
        check_parameters(inner)


def _range_text(name: str) -> str:
    if name not in RANGES:
        return ""
    low, high = RANGES[name]
    return f": use {low:g} to {high:g}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _same_aspect(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Two array shapes (H, W, ...) framed alike, by the checks' one aspect tolerance."""
    from fixloop.checks.context import same_aspect

    return same_aspect((a[1], a[0]), (b[1], b[0]))


def _result(tool: str, image: np.ndarray, started: float, mask: np.ndarray | None = None,
            parameters: dict[str, Any] | None = None, notes: list[str] | None = None,
            cost_usd: float = 0.0) -> RepairResult:
    return RepairResult(image=image, tool=tool, mask=mask, parameters=parameters or {},
                        seconds=round(time.perf_counter() - started, 4), cost_usd=cost_usd, notes=notes or [])


def _finding_value(parameters: dict[str, Any], key: str) -> Any:
    """``key`` from the finding handed over in ``parameters['finding']`` (a Finding or its dict)."""
    finding = parameters.get("finding")
    if finding is None:
        return None
    evidence = finding.get("evidence", {}) if isinstance(finding, dict) else getattr(finding, "evidence", {})
    if not isinstance(evidence, dict):
        raise RepairError(f"finding={_short(finding)}: its evidence must be an object, e.g. "
                          '{"evidence": {"extend": {"left": 40}}}')
    return evidence.get(key)


# ---- exposure and white balance -----------------------------------------------------------------


def _small(image: np.ndarray, side: int = MEASURE_SIDE) -> np.ndarray:
    h, w = image.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale == 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _measure_against_source(candidate: np.ndarray, source: np.ndarray, mask: np.ndarray | None):
    """(EV change, unit-luminance channel gains, mired shift) of ``candidate`` against ``source``,
    measured exactly as exposure_drift and color_temperature_drift measure them."""
    from fixloop.checks.color import measure_white_balance
    from fixloop.checks.context import CheckContext
    from fixloop.checks.exposure import measure_exposure

    ctx = CheckContext.from_arrays(candidate, source, mask, max_side=MEASURE_SIDE)
    change = measure_exposure(ctx.source, ctx.candidate, ctx.unedited_region())
    shift = measure_white_balance(ctx)
    return change.ev, np.asarray(shift.gains, dtype=np.float64), shift.mired


def estimate_illuminant(image: np.ndarray, region: np.ndarray | None = None, rounds: int = 3) -> np.ndarray:
    """Linear-RGB colour of the light on ``image`` (unit luminance), by shades of grey: the
    Minkowski p-norm of each channel over the well-exposed pixels of ``region``.

    Which pixels count as well exposed depends on the cast itself (a warm cast clips the red
    channel first), so the estimate is repeated on the picture corrected by the previous one: on
    the shared photos a 40-mired warm and a 40-mired cool version of one photo then land within a
    few mired of each other (about 20 mired apart without the repeat).
    """
    from fixloop.checks.color import RGB_TO_XYZ

    small = _small(image, 512)
    if region is not None:
        region = resize_mask(region, (small.shape[1], small.shape[0]))
    total = np.ones(3)
    for step in range(rounds):
        current = small if step == 0 else _apply_luts(small, _gain_luts(1.0 / total))
        usable = (current.max(axis=2) < 250) & (current.min(axis=2) > 5)
        if region is not None:
            usable &= region
        if usable.sum() < 100:
            raise RepairError("too few well-exposed pixels to estimate the light's colour: give --source instead")
        pixels = _SRGB_TO_LINEAR[current[usable]]
        illuminant = np.power(np.mean(np.power(pixels, SHADES_OF_GREY_P), axis=0), 1.0 / SHADES_OF_GREY_P)
        total = total * illuminant
        total = total / float(RGB_TO_XYZ[1] @ total)
    return total


def _target_mired(parameters: dict[str, Any]) -> tuple[str | None, float | None]:
    """(target name, mired shift from D65) from ``target`` or an explicit ``cct`` in kelvin."""
    from fixloop.checks.color import white_point

    reference = white_point(np.ones(3)).mired
    cct = _param(parameters, "cct", None, float)
    target = parameters.get("target")
    if cct is not None:
        if not 1500 <= cct <= 15000:
            raise RepairError(f"cct={cct:g} K is outside 1500-15000 K")
        return (str(target) if target else f"{cct:.0f} K"), 1e6 / cct - reference
    if target is None:
        return None, None
    key = " ".join(str(target).lower().replace("_", " ").replace("-", " ").split())
    if key not in WHITE_TARGETS_K:
        raise RepairError(f"unknown white-balance target {target!r}: use one of "
                          f"{', '.join(repr(t) for t in WHITE_TARGETS_K)} or cct=KELVIN")
    return key, 1e6 / WHITE_TARGETS_K[key] - reference


@register_tool("local.exposure_color")
def exposure_color(request: RepairRequest) -> RepairResult:
    """Exposure and white balance matched to the source, or white balance set to a named target."""
    started = time.perf_counter()
    # 1. check inputs
    image = check_image(request.image)
    params = request.parameters
    do_exposure = _param(params, "exposure", True, bool)
    do_white = _param(params, "white_balance", True, bool)
    manual_ev = _param(params, "ev", 0.0, float)
    tint = _param(params, "tint", 0.0, float)
    target, target_mired = _target_mired(params)
    source = request.source
    mask = check_mask(request.mask, image, required=False)
    if source is not None:
        check_image(source, "source")
        if not _same_aspect(image.shape, source.shape):
            raise RepairError(f"the image ({image.shape[1]}x{image.shape[0]}) and the source "
                              f"({source.shape[1]}x{source.shape[0]}) are framed differently: "
                              "match them with a target (target=neutral daylight) instead")
    elif (target is None or not do_white) and manual_ev == 0.0:
        raise RepairError("nothing to match: give the source (--source) or a white-balance target "
                          "(target=neutral daylight / warm sunset / cool overcast)")
    if not (do_exposure or do_white):
        raise RepairError("exposure=false and white_balance=false leave nothing to correct")

    # 2. the white balance: to a target from the picture's own light, or (below) to the source
    from fixloop.checks.color import RGB_TO_XYZ, white_balance_gains

    fixed_white = None
    if target is not None and do_white:
        unedited = None if mask is None else ~mask
        neutral = 1.0 / estimate_illuminant(image, unedited)
        fixed_white = neutral * white_balance_gains(target_mired, tint)
        fixed_white = fixed_white / float(RGB_TO_XYZ[1] @ fixed_white)

    gains = np.ones(3) if fixed_white is None else fixed_white.astype(np.float64)
    measured: dict[str, Any] = {}
    # 3. against the source: correct, measure again with the checks' own measures, refine
    if source is not None:
        small = _small(image)
        small_source = cv2.resize(source, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_AREA) \
            if source.shape[:2] != small.shape[:2] else source
        small_mask = None if mask is None else resize_mask(mask, (small.shape[1], small.shape[0]))
        if small_mask is not None and not small_mask.any():
            small_mask = None
        ev, _, mired = _measure_against_source(small, small_source, small_mask)
        measured = {"ev_before": round(ev, 4), "mired_before": round(mired, 2)}
        for step in range(REFINE_STEPS + 1):
            corrected = _apply_luts(small, _gain_luts(gains))
            ev, wb_gains, mired = _measure_against_source(corrected, small_source, small_mask)
            done_ev = not do_exposure or abs(ev) < EV_TOLERANCE
            done_white = not do_white or fixed_white is not None or abs(mired) < MIRED_TOLERANCE
            if (done_ev and done_white) or step == REFINE_STEPS:
                measured.update(ev_after=round(ev, 4), mired_after=round(mired, 2), rounds=step)
                break
            if do_white and fixed_white is None:
                gains = gains / wb_gains
            if do_exposure:
                gains = gains * 2.0 ** (-ev)

    # 4. a deliberate exposure change on top, then the per-channel curves on every pixel
    gains = gains * 2.0 ** manual_ev
    out = _apply_luts(image, _gain_luts(gains))
    parameters = {
        "mode": "source" if source is not None else "target",
        "target": target,
        "exposure": do_exposure,
        "white_balance": do_white,
        "channel_gains": [round(float(g), 5) for g in gains],
        "ev_applied": round(float(np.log2(RGB_TO_XYZ[1] @ gains)), 4),
        **measured,
    }
    if manual_ev:
        parameters["ev"] = manual_ev
    if tint:
        parameters["tint"] = tint
    notes = []
    if mask is not None:
        notes.append("measured on the pixels outside the mask; the correction applies to the whole image")
    return _result("local.exposure_color", out, started, mask=mask, parameters=parameters, notes=notes)


# ---- composite back -------------------------------------------------------------------------------

@register_tool("local.composite_back", needs_mask="the edit mask (--mask): outside it the source is restored")
def composite_back(request: RepairRequest) -> RepairResult:
    """The source's pixels restored outside the edit mask, with a feathered seam."""
    started = time.perf_counter()
    image = check_image(request.image)
    if request.source is None:
        raise RepairError("composite-back needs the source (the image before the edit) to restore from")
    source = check_image(request.source, "source")
    params = request.parameters
    width = _param(params, "feather", default_feather(image.shape), float)
    seam = str(params.get("seam", "inside"))
    if width < 0:
        raise RepairError(f"feather={width:g} px must be >= 0")
    if seam not in SEAMS:
        raise RepairError(f"seam={seam!r}: use one of {', '.join(SEAMS)}")
    if request.mask is not None and request.mask.shape == source.shape[:2] != image.shape[:2]:
        mask = check_mask(resize_mask(request.mask, (image.shape[1], image.shape[0])), image)
    else:
        mask = check_mask(request.mask, image)
    notes = []
    if source.shape != image.shape:
        if not _same_aspect(image.shape, source.shape):
            raise RepairError(f"the source ({source.shape[1]}x{source.shape[0]}) and the image "
                              f"({image.shape[1]}x{image.shape[0]}) are framed differently: nothing lines up to restore")
        shrinking = source.shape[1] > image.shape[1]
        source = cv2.resize(source, (image.shape[1], image.shape[0]),
                            interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
        notes.append(f"source resized to the image's {image.shape[1]}x{image.shape[0]} before restoring")
    weight = feather(mask, width, seam)
    out = blend(source, image, weight)
    parameters = {"feather": width, "seam": seam, "restored_fraction": round(float((weight == 0).mean()), 5)}
    return _result("local.composite_back", out, started, mask=mask, parameters=parameters, notes=notes)


# ---- canvas expansion -------------------------------------------------------------------------------

SIDES = ("left", "top", "right", "bottom")
MAX_EXTEND = 16384  # px per side at most
FILLS = ("reflect", "blur", "replicate")


def parse_aspect(value: Any) -> float:
    """'3:2', '16x9', '1.5' or 1.5 -> width / height."""
    if isinstance(value, bool):
        raise RepairError(f"aspect={value!r}: write it as W:H, e.g. 3:2")
    if isinstance(value, (int, float)):
        ratio = float(value)
    else:
        text = str(value).strip().lower()
        for sep in (":", "x", "/"):
            if sep in text:
                a, _, b = text.partition(sep)
                try:
                    ratio = float(a) / float(b)
                except (ValueError, ZeroDivisionError, OverflowError):
                    raise RepairError(f"aspect={value!r}: write it as W:H, e.g. 3:2") from None
                break
        else:
            try:
                ratio = float(text)
            except ValueError:
                raise RepairError(f"aspect={value!r}: write it as W:H, e.g. 3:2") from None
    if not 0.05 <= ratio <= 20:  # NaN fails too
        raise RepairError(f"aspect={value!r} is not a usable width:height ratio")
    return ratio


def _parse_extend(value: Any) -> dict[str, int]:
    """{'left': 10, ...} or 'left=10,top=20' -> px per side (missing sides 0)."""
    if isinstance(value, str):
        pairs = [p for p in value.replace(";", ",").split(",") if p.strip()]
        parsed = {}
        for pair in pairs:
            side, sep, amount = pair.partition("=" if "=" in pair else ":")
            if not sep:
                raise RepairError(f"extend={value!r}: write it as left=PX,top=PX,...")
            parsed[side.strip()] = amount.strip()
        value = parsed
    if not isinstance(value, dict):
        raise RepairError(f"extend={value!r}: give px per side, e.g. left=120,top=40")
    out = {side: 0 for side in SIDES}
    for side, amount in value.items():
        if side not in SIDES:
            raise RepairError(f"extend names side {side!r}: use {', '.join(SIDES)}")
        try:
            if isinstance(amount, (bool, dict, list)):
                raise TypeError(amount)
            out[side] = int(round(float(amount)))
        except (TypeError, ValueError, OverflowError):
            raise RepairError(f"extend {side}={_short(amount)} is not a number of pixels: use 0 to "
                              f"{MAX_EXTEND} px") from None
        if out[side] < 0:
            raise RepairError(f"extend {side}={amount!r}: only growing the canvas is supported")
        if out[side] > MAX_EXTEND:
            raise RepairError(f"extend {side}={_short(amount)} is out of range: use 0 to {MAX_EXTEND} px")
    return out


def _split(total: int, anchor: str, low: str, high: str) -> tuple[int, int]:
    """Share ``total`` px between the two sides of an axis; the anchor side keeps its edge."""
    if anchor == low:
        return 0, total
    if anchor == high:
        return total, 0
    return total // 2, total - total // 2


@register_tool("local.expand_canvas", region_check="subject_cropped")
def expand_canvas(request: RepairRequest) -> RepairResult:
    """A larger canvas (aspect ratio or px per side) with reflected or blurred fill and its outpaint mask."""
    started = time.perf_counter()
    image = check_image(request.image)
    params = request.parameters
    h, w = image.shape[:2]
    fill = str(params.get("fill", "reflect"))
    anchor = str(params.get("anchor", "center"))
    multiple = _param(params, "multiple", 1, int)
    overlap = _param(params, "overlap", 0, int)
    if fill not in FILLS:
        raise RepairError(f"fill={fill!r}: use one of {', '.join(FILLS)}")
    if anchor not in ("center", *SIDES):
        raise RepairError(f"anchor={anchor!r}: use center or one of {', '.join(SIDES)}")
    if multiple < 1 or overlap < 0:
        raise RepairError("multiple must be >= 1 and overlap >= 0")
    extend_value = params.get("extend", _finding_value(params, "extend"))
    aspect_value = params.get("aspect")
    if extend_value is None and aspect_value is None:
        raise RepairError("say how to grow the canvas: aspect=W:H, extend=left=PX,..., or a subject_cropped finding")

    # 1. px per side: first the asked extension, then up to the aspect ratio, then up to a multiple
    pad = _parse_extend(extend_value) if extend_value is not None else {side: 0 for side in SIDES}
    cw, ch = w + pad["left"] + pad["right"], h + pad["top"] + pad["bottom"]
    if aspect_value is not None:
        ratio = parse_aspect(aspect_value)
        if cw / ch < ratio:
            a, b = _split(int(np.ceil(ch * ratio - 1e-9)) - cw, anchor, "left", "right")
            pad["left"] += a
            pad["right"] += b
        else:
            a, b = _split(int(np.ceil(cw / ratio - 1e-9)) - ch, anchor, "top", "bottom")
            pad["top"] += a
            pad["bottom"] += b
        cw, ch = w + pad["left"] + pad["right"], h + pad["top"] + pad["bottom"]
    if multiple > 1:
        a, b = _split(-cw % multiple, anchor, "left", "right")
        pad["left"] += a
        pad["right"] += b
        a, b = _split(-ch % multiple, anchor, "top", "bottom")
        pad["top"] += a
        pad["bottom"] += b
    if not any(pad.values()):
        raise RepairError(f"the canvas is already {w}x{h} at that aspect: nothing to expand")
    if max(pad.values()) > 4 * max(w, h):
        raise RepairError(f"extending by {max(pad.values())} px is more than 4x the image: expand in steps")
    if cw * ch > MAX_CANVAS_PIXELS:
        raise RepairError(f"a {cw}x{ch} canvas is over {MAX_CANVAS_PIXELS:,} pixels: ask for a smaller one")

    # 2. fill the new area; the original pixels stay exactly as they were
    top, bottom, left, right = pad["top"], pad["bottom"], pad["left"], pad["right"]
    border = cv2.BORDER_REPLICATE if fill == "replicate" else cv2.BORDER_REFLECT_101
    if fill != "replicate" and max(pad.values()) >= min(w, h):
        border = cv2.BORDER_REFLECT  # reflection of a side shorter than the pad needs the repeated edge
    out = _pad_by_reflection(image, top, bottom, left, right, border)
    new_area = np.ones(out.shape[:2], dtype=bool)
    new_area[top:top + h, left:left + w] = False
    if fill == "blur":
        out[new_area] = _wide_blur(out, max(3.0, 0.25 * max(pad.values())))[new_area]
    # 3. the outpaint mask: the new area, grown into the picture by ``overlap`` px to hide the seam
    mask = new_area
    if overlap:
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * overlap + 1, 2 * overlap + 1))
        mask = cv2.dilate(new_area.astype(np.uint8), kernel).astype(bool)
    parameters = {
        "extend": dict(pad),
        "offset": [left, top],
        "original_size": [w, h],
        "size": [out.shape[1], out.shape[0]],
        "fill": fill,
        "anchor": anchor,
    }
    if aspect_value is not None:
        parameters["aspect"] = str(aspect_value)
    notes = [f"canvas {w}x{h} -> {out.shape[1]}x{out.shape[0]}; the original sits at x={left}, y={top}"]
    return _result("local.expand_canvas", out, started, mask=mask, parameters=parameters, notes=notes)


def _wide_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``sigma`` px, done on a copy small enough that the kernel stays short."""
    factor = min(1.0, 8.0 / sigma)
    if factor == 1.0:
        return cv2.GaussianBlur(image, (0, 0), sigma)
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma * factor)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _pad_by_reflection(image: np.ndarray, top: int, bottom: int, left: int, right: int, border: int) -> np.ndarray:
    """copyMakeBorder, repeated while a pad is longer than the side it reflects. Terminates: every pass
    pads at least 1 px where something is left (a 1-px side is replicated), and a side at least doubles
    per pass, so a pad of P px takes at most log2(P) + 1 passes."""
    out = image
    remaining = [top, bottom, left, right]
    while any(remaining):
        h, w = out.shape[:2]
        room = 0 if border == cv2.BORDER_REFLECT_101 else 1  # REFLECT repeats the edge: a whole side fits
        step = [min(remaining[0], h - 1 + room), min(remaining[1], h - 1 + room),
                min(remaining[2], w - 1 + room), min(remaining[3], w - 1 + room)]
        mode = border
        if border == cv2.BORDER_REPLICATE:
            step = remaining
        elif any(r > 0 and st < 1 for r, st in zip(remaining, step)):
            step, mode = remaining, cv2.BORDER_REPLICATE  # a 1-px side reflects onto itself: repeat it
        out = cv2.copyMakeBorder(out, *step, mode)
        remaining = [r - s for r, s in zip(remaining, step)]
    return out


# ---- defringe -----------------------------------------------------------------------------------

POLARITIES = ("auto", "bright", "dark", "both")
DEFRINGE_METHODS = ("morph", "telea")


def _ring_halfwidth(ring: np.ndarray) -> float:
    """Half the thickness of a ring mask: the median depth (distance to the ring's outside) along its
    ridge, the pixels deepest across it. A median, so that the few places where stretches of ring run
    together (hair, fingers) do not widen the filter, and with it the detail it flattens, everywhere."""
    if not ring.any():
        return 0.0
    depth = cv2.distanceTransform(ring.astype(np.uint8), cv2.DIST_L2, 5)
    ridge = ring & (depth >= cv2.dilate(depth, np.ones((3, 3), np.uint8)))
    return float(np.median(depth[ridge])) if ridge.any() else float(depth.max())


# The fringe's radius: the smallest filter that makes this share of the change the ring's widest one makes.
FRINGE_SATURATION = 0.8


def _filtered(image: np.ndarray, polarity: str, radius: int) -> np.ndarray:
    """The opening (bright fringe), closing (dark) or both, with a disk of ``radius`` px."""
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    if polarity == "bright":
        return cv2.morphologyEx(image, cv2.MORPH_OPEN, disk, borderType=cv2.BORDER_REFLECT)
    if polarity == "dark":
        return cv2.morphologyEx(image, cv2.MORPH_CLOSE, disk, borderType=cv2.BORDER_REFLECT)
    opened = cv2.morphologyEx(image, cv2.MORPH_OPEN, disk, borderType=cv2.BORDER_REFLECT)
    return cv2.morphologyEx(opened, cv2.MORPH_CLOSE, disk, borderType=cv2.BORDER_REFLECT)


def _fringe_radius(image: np.ndarray, ring: np.ndarray, polarity: str, widest: int) -> int:
    """The filter radius the fringe itself needs. A checker's ring is wider than the fringe it found
    (it holds the profile's plateaus), and a filter as wide as the ring flattens every finger and hair
    strand in it. The change a filter makes inside the ring grows with its radius until the fringe is
    gone, then only slowly (texture); the radius where it first reaches ``FRINGE_SATURATION`` of the
    widest filter's change is the fringe's (a 3-px ring painted on five shared photos: 3-6 px, where the
    ring's own half-width gave 7-9 px and softened a hand enough for texture_blur to fire)."""
    changes = []
    for radius in range(1, widest + 1):
        filtered = _filtered(image, polarity, radius)
        changes.append(float(np.abs(image[ring].astype(np.int16) - filtered[ring]).mean()))
    top = changes[-1]
    return next((r for r, c in enumerate(changes, 1) if c >= FRINGE_SATURATION * top), widest)


# Px of the band just outside the ring whose own change under the same filter is the texture allowance.
TEXTURE_BAND_PX = 7


def _keep_texture(image: np.ndarray, filtered: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """``filtered`` (an opening or closing of ``image``) with the texture given back: the filter also
    flattens fine detail (hair, fabric) along the ring, by about as much as it changes the pixels just
    beside it, where there is no fringe. So inside the ring each pixel moves only by what exceeds the
    median change of that band (a soft threshold): the fringe goes, detail the size of the texture
    stays. On 7 shared photos with a bright or dark ring, with the fringe's own radius
    (:func:`_fringe_radius`), the error against the clean photo inside the ring fell from 29-69 % of
    the ring's to 23-43 %, and the outline's detail (mean |Laplacian|) went from 53-109 % of the clean
    photo's to 65-134 %; every halo was still removed."""
    change = image.astype(np.float32) - filtered.astype(np.float32)
    size = 2 * TEXTURE_BAND_PX + 1
    beside = cv2.dilate(ring.astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool) & ~ring
    if not beside.any():
        return filtered
    allowance = float(np.median(np.abs(change).max(axis=2)[beside]))
    kept = np.sign(change) * np.maximum(np.abs(change) - allowance, 0.0)
    return np.clip(np.rint(image.astype(np.float32) - kept), 0, 255).astype(np.uint8)


@register_tool("local.defringe", needs_mask="an edge-ring mask (--mask)", region_check="edge_halo")
def defringe(request: RepairRequest) -> RepairResult:
    """A bright or dark halo on an edge ring removed, keeping both sides of the boundary."""
    started = time.perf_counter()
    image = check_image(request.image)
    params = request.parameters
    mask = request.mask
    finding = params.get("finding")
    if mask is None and finding is not None and getattr(finding, "mask", None) is not None:
        mask = finding.mask
    ring = check_mask(mask, image, role="edge-ring mask")
    polarity = str(params.get("polarity", _finding_value(params, "polarity") or "auto"))
    method = str(params.get("method", "morph"))
    grow = _param(params, "grow", 1, int)
    if polarity not in POLARITIES:
        raise RepairError(f"polarity={polarity!r}: use one of {', '.join(POLARITIES)}")
    if method not in DEFRINGE_METHODS:
        raise RepairError(f"method={method!r}: use one of {', '.join(DEFRINGE_METHODS)}")
    if grow < 0:
        raise RepairError(f"grow={grow} px must be >= 0")
    if grow:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
        ring = cv2.dilate(ring.astype(np.uint8), kernel).astype(bool)
    half = _ring_halfwidth(ring)
    # A band narrower than the structuring element is removed; the ring bounds the fringe's width.
    # (capped: a ring that covers the whole image has no outside, and its half-width no bound)
    default_radius = max(1, int(np.ceil(min(half, RANGES["radius"][1]))) if np.isfinite(half) else RANGES["radius"][1])
    radius = _param(params, "radius", default_radius, int)
    if radius < 1:
        raise RepairError(f"radius={radius} px must be >= 1")

    if method == "telea":
        fixed = cv2.inpaint(image, ring.astype(np.uint8) * 255, float(radius + 1), cv2.INPAINT_TELEA)
        chosen = "inpaint"
    else:
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        opened = cv2.morphologyEx(image, cv2.MORPH_OPEN, disk, borderType=cv2.BORDER_REFLECT)
        closed = cv2.morphologyEx(image, cv2.MORPH_CLOSE, disk, borderType=cv2.BORDER_REFLECT)
        if polarity == "auto":
            lift = float(np.abs(image[ring].astype(np.int16) - opened[ring]).mean())
            drop = float(np.abs(closed[ring].astype(np.int16) - image[ring]).mean())
            chosen = "bright" if lift >= drop else "dark"
        else:
            chosen = polarity
        if "radius" not in params:
            radius = _fringe_radius(image, ring, chosen, radius)
        fixed = _keep_texture(image, _filtered(image, chosen, radius), ring)
    out = blend(image, fixed, feather(ring, 1.0))
    parameters = {"method": method, "polarity": chosen, "radius": radius, "grow": grow,
                  "ring_fraction": round(float(ring.mean()), 5)}
    return _result("local.defringe", out, started, mask=ring, parameters=parameters)


# ---- flip back ----------------------------------------------------------------------------------


@register_tool("local.flip_back")
def flip_back(request: RepairRequest) -> RepairResult:
    """A mirrored result flipped back left-right (checked against the source when one is given)."""
    started = time.perf_counter()
    image = check_image(request.image)
    params = request.parameters
    force = _param(params, "force", False, bool)
    axis = str(params.get("axis", "horizontal"))
    if axis not in ("horizontal", "vertical"):
        raise RepairError(f"axis={axis!r}: use horizontal (left-right) or vertical (upside down)")
    parameters: dict[str, Any] = {"axis": axis}
    if request.source is not None and axis == "horizontal":
        from fixloop.checks.context import CheckContext
        from fixloop.checks.mirror import measure_mirror
        from fixloop.checks.policy import load_policy

        source = check_image(request.source, "source")
        if not _same_aspect(image.shape, source.shape):
            raise RepairError("the image and the source are framed differently: a flip cannot be checked; "
                              "pass force=true to flip anyway")
        ctx = CheckContext.from_arrays(image, source, max_side=MEASURE_SIDE)
        side = load_policy().params("mirrored").analysis_side
        mask = None
        if request.mask is not None:
            mask = check_mask(resize_mask(request.mask, (image.shape[1], image.shape[0])), image)
            mask = resize_mask(mask, ctx.size)
        match = measure_mirror(ctx.candidate.gray, ctx.source.gray, side, mask)
        parameters.update(direct_correlation=round(match.direct, 4), flipped_correlation=round(match.flipped, 4))
        if match.margin <= 0 and not force:
            raise RepairError(f"the image matches the source better as it is ({match.direct:.2f}) than flipped "
                              f"({match.flipped:.2f}): it is not mirrored; pass force=true to flip anyway")
    out = np.ascontiguousarray(image[:, ::-1] if axis == "horizontal" else image[::-1])
    mask = None if request.mask is None else check_mask(request.mask, image)
    return _result("local.flip_back", out, started, mask=mask, parameters=parameters)


# ---- crop first -----------------------------------------------------------------------------------


def _box_weight(height: int, width: int, feather: float, box: tuple[int, int, int, int],
                shape: tuple[int, int]) -> np.ndarray:
    """Blend weight over a crop: 1 inside, falling to 0 at the crop's border, except along sides that
    are the image's own border (an edge of the picture needs no seam)."""
    if feather <= 0:
        return np.ones((height, width), np.float32)
    x0, y0, x1, y1 = box
    h, w = shape
    inner = np.ones((height + 2, width + 2), np.uint8)
    if x0 > 0:
        inner[:, 0] = 0
    if y0 > 0:
        inner[0, :] = 0
    if x1 < w:
        inner[:, -1] = 0
    if y1 < h:
        inner[-1, :] = 0
    if inner.all():  # the crop is the whole image
        return np.ones((height, width), np.float32)
    depth = cv2.distanceTransform(inner, cv2.DIST_L2, 5)[1:-1, 1:-1]
    t = np.clip((depth - 1.0) / float(feather), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def _resolve_repair(repair: Any) -> tuple[Callable[[RepairRequest], Any], str]:
    if repair is None:
        raise RepairError("crop-first needs a repair to run on the crop: parameter repair=TOOL_NAME or a function")
    if isinstance(repair, str):
        if repair == "local.crop_first":
            raise RepairError("crop-first cannot wrap itself")
        try:
            spec = TOOLS.get(repair)
        except KeyError as exc:
            raise RepairError(str(exc.args[0])) from None
        return spec.function, repair
    if callable(repair):
        return repair, getattr(repair, "__name__", "function")
    raise RepairError(f"repair={repair!r} is neither a tool name nor a function")


@register_tool("local.crop_first", needs_mask="the region to repair (--mask), or repair=local.defringe to take it "
               "from edge_halo")
def crop_first(request: RepairRequest, repair: Callable[[RepairRequest], Any] | str | None = None) -> RepairResult:
    """Crop around the mask with padding, upscale, run any repair there, paste its change back feathered."""
    started = time.perf_counter()
    # 1. check inputs
    image = check_image(request.image)
    mask = check_mask(request.mask, image)
    params = request.parameters
    function, repair_name = _resolve_repair(repair if repair is not None else params.get("repair"))
    padding = _param(params, "padding", 0.25, float)
    min_padding = _param(params, "min_padding", 16, int)
    work_side = _param(params, "work_side", 1024, int)
    max_upscale = _param(params, "max_upscale", 4.0, float)
    inner_params = params.get("repair_parameters", {}) or {}
    if padding < 0 or min_padding < 0:
        raise RepairError("padding and min_padding must be >= 0")
    if not 64 <= work_side <= 8192:
        raise RepairError(f"work_side={work_side} px: use 64-8192")
    if max_upscale < 1:
        raise RepairError(f"max_upscale={max_upscale:g} must be >= 1")
    if not isinstance(inner_params, dict):
        raise RepairError("repair_parameters must be a dict of the inner repair's settings")

    # 2. prepare: the padded box, upscaled to the working size
    x0, y0, x1, y1 = box = crop_box(mask, mask.shape, padding=min_padding, padding_fraction=padding)
    bw, bh = x1 - x0, y1 - y0
    width = _param(params, "feather", max(1.0, 0.5 * crop_padding(mask, min_padding, padding)), float)
    if width < 0:
        raise RepairError(f"feather={width:g} px must be >= 0")
    scale = min(max_upscale, work_side / max(bw, bh))
    size = (max(1, round(bw * scale)), max(1, round(bh * scale)))
    up = cv2.INTER_LANCZOS4 if scale > 1 else cv2.INTER_AREA
    crop = image[y0:y1, x0:x1]
    crop_up = cv2.resize(crop, size, interpolation=up)
    mask_up = resize_mask(mask[y0:y1, x0:x1], size)
    source_up = None
    if request.source is not None and request.source.shape == image.shape:
        source_up = cv2.resize(request.source[y0:y1, x0:x1], size, interpolation=up)

    # 3. run the repair on the crop
    inner = RepairRequest(image=crop_up.copy(), mask=mask_up, source=source_up, references=list(request.references),
                          prompt=request.prompt, negative_prompt=request.negative_prompt,
                          template=request.template, parameters=dict(inner_params))
    answer = function(inner)
    inner_result = answer if isinstance(answer, RepairResult) else None
    repaired = answer.image if inner_result is not None else answer
    repaired = check_image(np.asarray(repaired), "the crop's repair result")
    if repaired.shape != crop_up.shape:
        if not _same_aspect(repaired.shape, crop_up.shape):
            raise RepairError(f"the repair returned {repaired.shape[1]}x{repaired.shape[0]} for a "
                              f"{size[0]}x{size[1]} crop: it must keep the crop's framing")
        repaired = cv2.resize(repaired, size, interpolation=cv2.INTER_AREA)

    # 4. bring back only the change (pixels the repair left alone come back exactly), feathered at the box
    down = cv2.INTER_AREA if scale > 1 else cv2.INTER_CUBIC
    delta = repaired.astype(np.float32) - crop_up.astype(np.float32)
    delta = cv2.resize(delta, (bw, bh), interpolation=down)
    weight = _box_weight(bh, bw, width, box, image.shape[:2])
    patched = np.clip(np.rint(crop.astype(np.float32) + delta * weight[..., None]), 0, 255).astype(np.uint8)
    out = image.copy()
    out[y0:y1, x0:x1] = patched
    region = np.zeros(image.shape[:2], dtype=bool)
    region[y0:y1, x0:x1] = weight > 0
    parameters = {
        "box": [x0, y0, x1, y1],
        "scale": round(float(scale), 4),
        "work_size": list(size),
        "feather": width,
        "padding": padding,
        "repair": repair_name,
        "repair_parameters": {} if inner_result is None else inner_result.parameters,
    }
    notes = [] if inner_result is None else [f"{repair_name}: {n}" for n in inner_result.notes]
    cost = 0.0 if inner_result is None else float(inner_result.cost_usd)
    return _result("local.crop_first", out, started, mask=region, parameters=parameters, notes=notes, cost_usd=cost)
