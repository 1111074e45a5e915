"""Repair masks: small pure functions over numpy arrays.

Every function takes bool masks (H x W, True = may change) and boxes ``(x0, y0, x1, y1)`` in pixels
(x1 and y1 exclusive, the convention of ``checks.base.Region``), returns new arrays and never writes
into its inputs. None of them knows about models or files: the agent and the tools compose them.

Why these shapes: an inpainting model repaints what the mask covers from what it sees around it, so
a mask cut tight around a defect gives it no context and leaves a seam. The failure library's rule
is that masks need context: a face with its hairline, chin and ears, a hand with its wrist and what
it touches, an edge with a ring across both sides of the boundary, an inserted object with the
surface under it. Distances are Euclidean (``scipy.ndimage.distance_transform_edt``, exact), so a
radius means the same in every direction and the expected arrays of the tests can be worked out by
hand.

Pixel (x, y) covers the square [x, x+1) x [y, y+1); shapes such as the face ellipse test the pixel's
centre (x + 0.5, y + 0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np
from scipy import ndimage

Box = tuple[int, int, int, int]
Side = Literal["top", "bottom", "left", "right"]
SIDES: tuple[str, ...] = ("top", "bottom", "left", "right")


# ---- small shared pieces ------------------------------------------------------------------------


def _size(shape: Sequence[int]) -> tuple[int, int]:
    """(height, width) from an image shape, (H, W) or (H, W, C)."""
    if len(shape) < 2 or int(shape[0]) <= 0 or int(shape[1]) <= 0:
        raise ValueError(f"shape must be (height, width[, channels]) with positive sides, got {tuple(shape)}")
    return int(shape[0]), int(shape[1])


def _mask(mask: np.ndarray, role: str = "mask") -> np.ndarray:
    """A bool copy of a 2-D mask (the caller's array is never touched)."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"{role} must be a 2-D H x W array, got shape {array.shape}")
    return array.astype(bool, copy=True)


def _box(box: Sequence[float], role: str = "box") -> tuple[float, float, float, float]:
    if len(box) != 4:
        raise ValueError(f"{role} must be (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"{role} {tuple(box)} is empty: x1 must exceed x0 and y1 exceed y0")
    return x0, y0, x1, y1


def _grow(amount: float, length: float) -> int:
    """``amount`` of ``length`` in whole pixels, rounded up: asked-for context is never cut short."""
    if amount < 0:
        raise ValueError(f"growth must be >= 0, got {amount:g}")
    return int(math.ceil(amount * length - 1e-9))


def _clip(box: Sequence[float], height: int, width: int) -> Box:
    """Whole-pixel box covering ``box`` (outward rounding), clipped to the image."""
    x0, y0, x1, y1 = box
    return (max(0, int(math.floor(x0))), max(0, int(math.floor(y0))),
            min(width, int(math.ceil(x1))), min(height, int(math.ceil(y1))))


def box_mask(shape: Sequence[int], box: Sequence[float]) -> np.ndarray:
    """The pixels a box covers (fractional edges rounded outwards), clipped to the image."""
    height, width = _size(shape)
    x0, y0, x1, y1 = _clip(_box(box), height, width)
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def mask_box(mask: np.ndarray) -> Box | None:
    """Tight box around the True pixels (x1, y1 exclusive); None for an empty mask."""
    mask = _mask(mask)
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _region_box(region: np.ndarray | Sequence[float], role: str) -> tuple[float, float, float, float]:
    """A box from a box, or the tight box of a bool mask."""
    if isinstance(region, np.ndarray) and region.ndim == 2:
        box = mask_box(region)
        if box is None:
            raise ValueError(f"{role} mask is empty")
        return tuple(float(v) for v in box)  # type: ignore[return-value]
    return _box(region, role)


# ---- growing, shrinking, rings and seams --------------------------------------------------------


def _distance_outside(mask: np.ndarray) -> np.ndarray:
    """Distance from each pixel outside ``mask`` to the nearest mask pixel (0 inside)."""
    return ndimage.distance_transform_edt(~mask)


def _distance_inside(mask: np.ndarray) -> np.ndarray:
    """Distance from each mask pixel to the nearest pixel outside it (0 outside).

    The image border is not a boundary: a subject running off the frame has no edge there.
    """
    return ndimage.distance_transform_edt(mask)


def dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Grow a mask by ``radius`` px (a disc): adds the context a repair needs around a defect."""
    mask = _mask(mask)
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius:g}")
    if radius == 0 or not mask.any():
        return mask
    return _distance_outside(mask) <= radius


def erode(mask: np.ndarray, radius: float) -> np.ndarray:
    """Shrink a mask by ``radius`` px (a disc): the part of a region safely away from its edge.

    The frame border does not erode: it is where the picture stops, not where the region does.
    """
    mask = _mask(mask)
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius:g}")
    if radius == 0 or mask.all() or not mask.any():
        return mask
    return _distance_inside(mask) > radius


def edge_ring(mask: np.ndarray, width: float) -> np.ndarray:
    """A ring ``width`` px deep on *both* sides of the mask's boundary.

    A halo sits on the boundary; a mask covering only the subject's interior (or only the
    background) leaves it half outside, and the repair redraws the fringe. The ring takes pixels on
    each side whose distance to the other side is at most ``width`` (1 = the two rows touching the
    boundary). A mask without a boundary (empty or full) has no ring.
    """
    mask = _mask(mask)
    if width <= 0:
        raise ValueError(f"ring width must be > 0 px, got {width:g}")
    if mask.all() or not mask.any():
        return np.zeros_like(mask)
    inner = mask & (_distance_inside(mask) <= width)
    outer = ~mask & (_distance_outside(mask) <= width)
    return inner | outer


def feather(mask: np.ndarray, width: float, side: Literal["inside", "outside", "centre"] = "inside") -> np.ndarray:
    """Blend weights in [0, 1] (float32) that ramp across ``width`` px of the mask's boundary.

    A hard 0/1 mask leaves a visible seam where repaired and original pixels meet; a ramp hides it.
    ``inside`` keeps the ramp within the mask, so every pixel outside it stays exactly 0: the
    composite-back guarantee that pixels outside the mask are the source's own. A mask pixel at
    distance d from the outside (1 = touching it) weighs d / (width + 1), capped at 1. ``outside``
    keeps the whole mask at 1 and fades out over ``width`` px around it; ``centre`` is the mean of
    the two, a seam straddling the boundary.
    """
    mask = _mask(mask)
    if width < 0:
        raise ValueError(f"feather width must be >= 0 px, got {width:g}")
    if side not in ("inside", "outside", "centre"):
        raise ValueError(f"feather side must be 'inside', 'outside' or 'centre', got {side!r}")
    if width == 0 or mask.all() or not mask.any():
        return mask.astype(np.float32)
    steps = float(width) + 1.0
    inside = np.where(mask, np.minimum(_distance_inside(mask) / steps, 1.0), 0.0)
    outside = np.where(mask, 1.0, np.maximum(1.0 - _distance_outside(mask) / steps, 0.0))
    weights = {"inside": inside, "outside": outside, "centre": (inside + outside) / 2.0}[side]
    return weights.astype(np.float32)


# ---- masks with the context each repair needs ---------------------------------------------------


def face_context_mask(shape: Sequence[int], box: Sequence[float], grow_side: float = 0.3, grow_top: float = 0.5,
                      grow_bottom: float = 0.25) -> np.ndarray:
    """The face with its hairline, chin and ears: the ellipse filling the face box grown on each side.

    Face detectors box the eyes-to-mouth area; repainting only that gives a face that does not join
    the head around it. The box grows by ``grow_side`` of its width left and right (ears),
    ``grow_top`` of its height above (forehead, hairline) and ``grow_bottom`` below (chin); a pixel
    belongs to the mask when its centre lies in the ellipse inscribed in the grown box. The
    defaults are the identity check's (``checks/default_policy.toml``).
    """
    height, width = _size(shape)
    x0, y0, x1, y1 = _box(box, "face box")
    for name, value in (("grow_side", grow_side), ("grow_top", grow_top), ("grow_bottom", grow_bottom)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value:g}")
    bw, bh = x1 - x0, y1 - y0
    gx0, gx1 = x0 - grow_side * bw, x1 + grow_side * bw
    gy0, gy1 = y0 - grow_top * bh, y1 + grow_bottom * bh
    cx, cy = (gx0 + gx1) / 2.0, (gy0 + gy1) / 2.0
    ax, ay = (gx1 - gx0) / 2.0, (gy1 - gy0) / 2.0
    xs = (np.arange(width, dtype=np.float64) + 0.5 - cx) / ax
    ys = (np.arange(height, dtype=np.float64) + 0.5 - cy) / ay
    return (ys[:, None] ** 2 + xs[None, :] ** 2) <= 1.0


def wrist_side(landmarks: np.ndarray) -> Side:
    """The side of the hand the wrist is on, from MediaPipe hand landmarks (0 = wrist, 9 = middle-finger
    base): the main direction from the knuckles to the wrist."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] < 10 or points.shape[1] < 2:
        raise ValueError(f"hand landmarks must be MediaPipe's 21 x 2 (or x 3) points, got shape {points.shape}")
    dx, dy = points[0, :2] - points[9, :2]
    if abs(dy) >= abs(dx):
        return "bottom" if dy > 0 else "top"
    return "right" if dx > 0 else "left"


def hand_context_mask(shape: Sequence[int], box: Sequence[float] | None = None, landmarks: np.ndarray | None = None,
                      wrist: Side | None = None, wrist_extension: float = 0.5, margin: float = 0.15,
                      contact: Sequence[float] | None = None) -> np.ndarray:
    """A hand with its wrist, the area it touches and a margin of background, as one generous box.

    A malformed hand's own silhouette is the thing that is wrong, so the mask does not follow it: it
    takes the hand box (or the landmarks' box, or both), extends it towards the wrist by
    ``wrist_extension`` of the hand's length along that side (the wrist is where a repaired hand
    must join the arm), adds the ``contact`` box (what the hand holds or rests on), and grows all of
    it by ``margin`` of the hand box's longer side, so the model sees palm, wrist and background.
    ``wrist`` names the side the wrist is on; without it the landmarks decide (:func:`wrist_side`),
    and without either there is no extension.
    """
    height, width = _size(shape)
    if box is None and landmarks is None:
        raise ValueError("a hand mask needs the hand's box, its landmarks, or both")
    if wrist is not None and wrist not in SIDES:
        raise ValueError(f"wrist must be one of {', '.join(SIDES)}, got {wrist!r}")
    boxes = [] if box is None else [_box(box, "hand box")]
    if landmarks is not None:
        points = np.asarray(landmarks, dtype=np.float64)
        if wrist is None:
            wrist = wrist_side(points)
        xs, ys = points[:, 0], points[:, 1]
        boxes.append((math.floor(xs.min()), math.floor(ys.min()), math.floor(xs.max()) + 1, math.floor(ys.max()) + 1))
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    bw, bh = x1 - x0, y1 - y0
    pad = _grow(margin, max(bw, bh))
    if wrist in ("top", "bottom"):
        reach = _grow(wrist_extension, bh)
        y0, y1 = (y0 - reach, y1) if wrist == "top" else (y0, y1 + reach)
    elif wrist in ("left", "right"):
        reach = _grow(wrist_extension, bw)
        x0, x1 = (x0 - reach, x1) if wrist == "left" else (x0, x1 + reach)
    mask = box_mask((height, width), (x0 - pad, y0 - pad, x1 + pad, y1 + pad))
    if contact is not None:
        c0, d0, c1, d1 = _box(contact, "contact box")
        mask |= box_mask((height, width), (c0 - pad, d0 - pad, c1 + pad, d1 + pad))
    return mask


def contact_zone(shape: Sequence[int], obj: np.ndarray | Sequence[float], depth: float = 0.15,
                 spread: float = 0.25, overlap: float = 0.1) -> np.ndarray:
    """The band where an object meets the surface under it: where its contact shadow belongs.

    An inserted object looks pasted on when nothing darkens the surface at its base; a mask of the
    object alone cannot add that shadow. The band runs below the object's bottom edge: ``depth`` of
    the object's height down onto the surface, ``overlap`` of its height up into the object's base
    (the shadow and the base must be painted together), and wider than the object by ``spread`` of
    its width on each side (a shadow spreads past the footprint). ``obj`` is the object's box or
    bool mask (its tight box is used).
    """
    height, width = _size(shape)
    x0, y0, x1, y1 = _region_box(obj, "object")
    bw, bh = x1 - x0, y1 - y0
    side, down, up = _grow(spread, bw), _grow(depth, bh), _grow(overlap, bh)
    if down == 0 and up == 0:
        raise ValueError("contact zone has no height: depth or overlap must be > 0")
    return box_mask((height, width), (x0 - side, y1 - up, x1 + side, y1 + down))


# ---- crop-first and outpainting geometry --------------------------------------------------------


def crop_box(region: np.ndarray | Sequence[float], shape: Sequence[int], padding: int = 0,
             padding_fraction: float = 0.0, keep_size: bool = False) -> Box:
    """The box to cut out for a crop-first repair: the region plus padding, inside the image.

    A small defect repaired at full-image scale gets few pixels of the model's attention; cutting it
    out with some surrounding context, repairing at a higher apparent resolution and pasting back
    gives it more. Padding is the larger of ``padding`` px and ``padding_fraction`` of the region's
    longer side. By default the padded box is clipped at the frame; with ``keep_size`` it is moved
    back inside instead, so a region near the border keeps as much context as one in the middle
    (clipped only where the image is smaller than the box).
    """
    height, width = _size(shape)
    x0, y0, x1, y1 = _region_box(region, "region")
    if padding < 0:
        raise ValueError(f"padding must be >= 0 px, got {padding}")
    pad = max(int(padding), _grow(padding_fraction, max(x1 - x0, y1 - y0)))
    bx0, by0 = math.floor(x0) - pad, math.floor(y0) - pad
    bx1, by1 = math.ceil(x1) + pad, math.ceil(y1) + pad
    if keep_size:
        bx0, bx1 = _slide(bx0, bx1, width)
        by0, by1 = _slide(by0, by1, height)
    out = _clip((bx0, by0, bx1, by1), height, width)
    if out[2] <= out[0] or out[3] <= out[1]:
        raise ValueError(f"region {(x0, y0, x1, y1)} lies outside the {width}x{height} image")
    return out


def _slide(low: int, high: int, limit: int) -> tuple[int, int]:
    """Move [low, high) inside [0, limit) without changing its length, where it fits."""
    if low < 0:
        low, high = 0, high - low
    if high > limit:
        low, high = low - (high - limit), limit
    return max(0, low), high


@dataclass(frozen=True)
class OutpaintCanvas:
    """A larger canvas for outpainting: its size, where the original sits, and what is new."""

    width: int
    height: int
    original_box: Box  # where the original image lies on the new canvas
    mask: np.ndarray  # H x W bool on the new canvas, True = to be painted


def outpaint_canvas(shape: Sequence[int], extend: Mapping[str, int], overlap: int = 0) -> OutpaintCanvas:
    """The expanded canvas of a recompose, given how many px to add per side.

    A subject cut by the frame is repaired by giving it room: the canvas grows by ``extend`` (e.g.
    the subject_cropped finding's ``{"top": 120, "left": 40}``) and the mask marks the new area. With
    ``overlap`` the mask also reaches that many px into the original along each extended side, so
    the model blends its new pixels into the old ones instead of meeting them at a hard line.
    """
    height, width = _size(shape)
    unknown = sorted(set(extend) - set(SIDES))
    if unknown:
        raise ValueError(f"unknown side(s) {', '.join(map(repr, unknown))}: use {', '.join(SIDES)}")
    grow = {side: int(extend.get(side, 0)) for side in SIDES}
    if any(v < 0 for v in grow.values()):
        raise ValueError(f"extensions must be >= 0 px, got {dict(extend)}")
    if not any(grow.values()):
        raise ValueError("nothing to outpaint: every side's extension is 0")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0 px, got {overlap}")
    new_w, new_h = width + grow["left"] + grow["right"], height + grow["top"] + grow["bottom"]
    ox0, oy0 = grow["left"], grow["top"]
    ox1, oy1 = ox0 + width, oy0 + height
    keep_x0 = ox0 + (min(overlap, width) if grow["left"] else 0)
    keep_x1 = ox1 - (min(overlap, width) if grow["right"] else 0)
    keep_y0 = oy0 + (min(overlap, height) if grow["top"] else 0)
    keep_y1 = oy1 - (min(overlap, height) if grow["bottom"] else 0)
    mask = np.ones((new_h, new_w), dtype=bool)
    mask[keep_y0:max(keep_y0, keep_y1), keep_x0:max(keep_x0, keep_x1)] = False
    return OutpaintCanvas(width=new_w, height=new_h, original_box=(ox0, oy0, ox1, oy1), mask=mask)
