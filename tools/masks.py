"""Repair masks and the geometry every tool shares: small pure functions over numpy arrays.

Every function takes bool masks (H x W, True = may change) and boxes ``(x0, y0, x1, y1)`` in pixels
(x1 and y1 exclusive, the convention of ``checks.base.Region``), returns new arrays and never writes
into its inputs. None of them knows about models or files: the agent and the tools compose them.
The tools (``local``, ``openai_images``, ``diffusion``) take their crop boxes, resizing, seam
feathering and composite-back from here, so the three backends cut, scale and blend alike.

Why these shapes: an inpainting model repaints what the mask covers from what it sees around it, so
a mask cut tight around a defect gives it no context and leaves a seam. The failure library's rule
is that masks need context: a face with its hairline, chin and ears, a hand with its wrist and what
it touches, an edge with a ring across both sides of the boundary, an inserted object with the
surface under it. The face, hand and edge masks come with the findings (``checks.identity``,
``checks.hands``, ``checks.halo`` build them); what is here grows, shrinks, crops and blends them.
Distances are exact Euclidean ones (``scipy.ndimage.distance_transform_edt``; OpenCV's precise
transform for the seam weights), so a radius means the same in every direction and the expected
arrays of the tests can be worked out by hand.

Pixel (x, y) covers the square [x, x+1) x [y, y+1).
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np
from scipy import ndimage

Box = tuple[int, int, int, int]


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


# ---- growing, shrinking and seams ---------------------------------------------------------------


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


# The composite-back seam when the caller names none: half a percent of the image diagonal, at least
# 2 px (wide enough to hide a seam on a phone photo, narrow enough not to blur a small repair away).
FEATHER_FRACTION = 0.005
MIN_FEATHER_PX = 2.0
SEAMS: tuple[str, ...] = ("inside", "center", "outside")


def default_feather(shape: Sequence[int]) -> float:
    """The composite-back feather for an image of ``shape`` (H, W[, C]), in whole px."""
    height, width = _size(shape)
    return float(max(MIN_FEATHER_PX, round(FEATHER_FRACTION * math.hypot(width, height))))


def _distance(mask: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance of each True pixel to the nearest False one (OpenCV's precise
    transform: several times faster than scipy's on a 12 MP mask, and a blend weight needs no more than
    float32). As everywhere here, the image border is not a boundary."""
    return cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def feather(mask: np.ndarray, width: float, side: str = "inside") -> np.ndarray:
    """Blend weights in [0, 1] (float32) that ramp across ``width`` px of the mask's boundary.

    A hard 0/1 mask leaves a visible seam where repaired and original pixels meet; a ramp hides it.
    The ramp is a smoothstep (no kink where it meets 0 or 1). ``inside`` keeps it within the mask,
    so every pixel outside stays exactly 0 (the composite-back guarantee that pixels outside the
    mask are the source's own): a mask pixel at distance d from the outside (1 = touching it) weighs
    smoothstep((d - 0.5) / width). ``outside`` keeps the whole mask at 1 and fades out over
    ``width`` px around it; ``center`` puts half the ramp either side of the boundary.
    """
    mask = _mask(mask)
    if width < 0:
        raise ValueError(f"feather width must be >= 0 px, got {width:g}")
    if side not in SEAMS:
        raise ValueError(f"feather side must be one of {', '.join(SEAMS)}, got {side!r}")
    if width == 0 or mask.all() or not mask.any():
        return mask.astype(np.float32)
    if side == "inside":
        t = (_distance(mask) - 0.5) / float(width)
    elif side == "outside":
        t = 1.0 - (_distance(~mask) - 0.5) / float(width)
    else:
        signed = np.where(mask, _distance(mask) - 0.5, 0.5 - _distance(~mask))
        t = 0.5 + signed / float(width)
    t = np.clip(t, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def blend(base: np.ndarray, top: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``base`` where ``weight`` is 0, ``top`` where it is 1 (both exactly), a mix between (uint8)."""
    w = np.asarray(weight, dtype=np.float32)[..., None]
    mixed = base.astype(np.float32) * (1.0 - w) + top.astype(np.float32) * w
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def composite(base: np.ndarray, top: np.ndarray, mask: np.ndarray, width: float, side: str = "inside") -> np.ndarray:
    """Composite-back: ``top`` inside ``mask`` over ``base``, the seam feathered over ``width`` px
    (:func:`feather`). With the seam inside, every pixel outside the mask is ``base``'s exactly."""
    return blend(base, top, feather(mask, width, side))


# ---- masks with the context a repair needs ------------------------------------------------------


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


# ---- crop-first geometry and resampling ---------------------------------------------------------


def crop_padding(region: np.ndarray | Sequence[float], padding: int = 0, padding_fraction: float = 0.0) -> int:
    """Padding in px around a region (box or bool mask) for a crop-first repair: the larger of
    ``padding`` px and ``padding_fraction`` of the region's longer side (rounded up)."""
    x0, y0, x1, y1 = _region_box(region, "region")
    if padding < 0:
        raise ValueError(f"padding must be >= 0 px, got {padding}")
    return max(int(padding), _grow(padding_fraction, max(x1 - x0, y1 - y0)))


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
    pad = crop_padding((x0, y0, x1, y1), padding, padding_fraction)
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


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An image (or any numeric array) at ``size`` (w, h): area averaging to shrink, bicubic to
    enlarge; a copy even when the size already matches."""
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image.copy()
    shrinking = size[0] * size[1] < image.shape[0] * image.shape[1]
    return cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def resize_mask(mask: np.ndarray, size: tuple[int, int], any_coverage: bool = False) -> np.ndarray:
    """A bool mask at ``size`` (w, h). Nearest neighbour by default (the mask's own pixels, no
    growth); with ``any_coverage`` a pixel is in the mask when any part of it covers a mask pixel
    (area averaging to shrink, bilinear to enlarge, > 0), so a thin mask survives a downscale and a
    repair sent at another size may change every pixel it was asked to."""
    mask = _mask(mask)
    if (mask.shape[1], mask.shape[0]) == tuple(size):
        return mask
    if not any_coverage:
        return cv2.resize(mask.astype(np.uint8), tuple(size), interpolation=cv2.INTER_NEAREST).astype(bool)
    if size[0] >= mask.shape[1] and size[1] >= mask.shape[0]:  # enlarging both ways: bilinear, > 0
        resized = cv2.resize(mask.astype(np.float32), tuple(size), interpolation=cv2.INTER_LINEAR)
        return resized > 0
    return _covering(mask, size)


def _covering(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Exact any-coverage for a shrink (or a shrink one way and an enlargement the other, where no
    single OpenCV interpolation keeps a thin mask): an output pixel is True when its footprint on the
    input holds a True pixel, counted on the integral image."""
    h, w = mask.shape
    nw, nh = int(size[0]), int(size[1])
    integral = np.zeros((h + 1, w + 1), np.int64)
    integral[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)

    def spans(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
        i = np.arange(n_out, dtype=np.int64)
        low = (i * n_in) // n_out
        high = np.maximum(low + 1, -((-(i + 1) * n_in) // n_out))
        return low, np.minimum(high, n_in)

    r0, r1 = spans(nh, h)
    c0, c1 = spans(nw, w)
    count = (integral[np.ix_(r1, c1)] - integral[np.ix_(r0, c1)] - integral[np.ix_(r1, c0)]
             + integral[np.ix_(r0, c0)])
    return count > 0
