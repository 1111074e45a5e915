"""Small geometry helpers the checks share: boxes, discs, masks and shrunken copies.

Pure functions over numbers and numpy arrays. Boxes are ``(x0, y0, x1, y1)`` in pixels, x right and
y down; integer boxes are exclusive at x1 / y1. Sizes are ``(w, h)``, as OpenCV takes them.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np


def points_box(points: np.ndarray, grow: float = 0.0) -> tuple[float, float, float, float]:
    """The box of N x 2 ``points``, grown by ``grow`` px on every side."""
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    return (float(x0 - grow), float(y0 - grow), float(x1 + grow), float(y1 + grow))


def union_box(boxes: Iterable[Sequence[float]]) -> tuple[float, float, float, float]:
    """The smallest box holding every box of ``boxes`` (at least one)."""
    boxes = list(boxes)
    return (float(min(b[0] for b in boxes)), float(min(b[1] for b in boxes)),
            float(max(b[2] for b in boxes)), float(max(b[3] for b in boxes)))


def pixel_box(box: Sequence[float], size: tuple[int, int], grow: float = 0.0) -> tuple[int, int, int, int]:
    """``box`` grown by ``grow`` px on every side, widened to whole pixels (floor / ceil) and clipped to
    a ``size`` (w, h) image: integer slice bounds, empty (x1 <= x0 or y1 <= y0) when it misses the image."""
    w, h = size
    x0, y0, x1, y1 = box
    return (int(min(w, max(0, np.floor(x0 - grow)))), int(min(h, max(0, np.floor(y0 - grow)))),
            int(min(w, max(0, np.ceil(x1 + grow)))), int(min(h, max(0, np.ceil(y1 + grow)))))


def mask_box(mask: np.ndarray, cell: float | tuple[float, float] = 1) -> tuple | None:
    """The bounding box of a bool mask's True pixels (exclusive at x1 / y1), or None when it has none.
    ``cell``: the size of one mask pixel (or (w, h) of one grid cell) in the box's units, for a mask
    over a coarser grid (tiles, a shrunken working copy)."""
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    cx, cy = (cell, cell) if np.isscalar(cell) else cell
    return (int(xs.min()) * cx, int(ys.min()) * cy, (int(xs.max()) + 1) * cx, (int(ys.max()) + 1) * cy)


def share(mask: np.ndarray) -> float:
    """The share of True pixels of a bool mask: ``mask.mean()``, counted instead of averaged."""
    return np.count_nonzero(mask) / mask.size if mask.size else float("nan")


def channel_max(pixels: np.ndarray) -> np.ndarray:
    """Largest of the three channels per pixel: ``pixels.max(axis=2)``, faster."""
    return np.maximum(np.maximum(pixels[..., 0], pixels[..., 1]), pixels[..., 2])


def disc(radius: int) -> np.ndarray:
    """A filled disc of ``radius`` px: the structuring element for growing or opening a mask."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def grow_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """A bool mask dilated by a disc of ``radius`` px (:func:`disc`): the same pixels as dilating the
    whole image, computed only on the mask's box grown by the radius."""
    box = mask_box(mask)
    out = np.zeros(mask.shape, bool)
    if box is None:
        return out
    h, w = mask.shape
    x0, y0, x1, y1 = max(0, box[0] - radius), max(0, box[1] - radius), min(w, box[2] + radius), min(h, box[3] + radius)
    window = np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=np.uint8)
    out[y0:y1, x0:x1] = cv2.dilate(window, disc(radius)).astype(bool)
    return out


def fit_size(size: tuple[int, int], side: float) -> tuple[tuple[int, int], float]:
    """``size`` (w, h) scaled to at most ``side`` px on its long side (never enlarged), and the factor used."""
    w, h = size
    scale = min(1.0, side / max(w, h))
    return (max(1, round(w * scale)), max(1, round(h * scale))), scale


def shrink(array: np.ndarray, side: float) -> tuple[np.ndarray, float]:
    """``array`` (H x W or H x W x C) area-averaged down to at most ``side`` px on its long side, and the
    factor used; the array itself when it is small enough already."""
    size, scale = fit_size((array.shape[1], array.shape[0]), side)
    if scale < 1.0:
        array = cv2.resize(array, size, interpolation=cv2.INTER_AREA)
    return array, scale


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A bool mask brought to ``size`` (w, h) by nearest neighbour: every pixel keeps a mask pixel's value."""
    if (mask.shape[1], mask.shape[0]) == tuple(size):
        return mask.astype(bool)
    return cv2.resize(mask.astype(np.uint8), tuple(size), interpolation=cv2.INTER_NEAREST).astype(bool)


def resize_image(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pixels (uint8, or float in [0, 1]) brought to ``size`` (w, h): area averaging when shrinking,
    bicubic when enlarging (float results clipped back to [0, 1])."""
    if (array.shape[1], array.shape[0]) == size:
        return array
    shrinking = size[0] <= array.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    out = cv2.resize(array, size, interpolation=interpolation)
    return out if out.dtype == np.uint8 else np.clip(out, 0, 1)


def correlation(a: np.ndarray, b: np.ndarray, box: Sequence[float], trim: float = 0.0, sigma: float = 0.8) -> float | None:
    """Correlation of two aligned grey images inside ``box`` (x0 y0 x1 y1, less ``trim`` of its size on
    every side), both smoothed by ``sigma`` px: near 1 when one is the other re-lit or re-encoded, low
    when the content differs. None for a box under 8 px a side or without contrast."""
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = trim * (x1 - x0), trim * (y1 - y0)
    h, w = a.shape[:2]
    c0, r0 = max(0, int(round(x0 + dx))), max(0, int(round(y0 + dy)))
    c1, r1 = min(w, int(round(x1 - dx))), min(h, int(round(y1 - dy)))
    if c1 - c0 < 8 or r1 - r0 < 8:
        return None
    pa = cv2.GaussianBlur(a[r0:r1, c0:c1].astype(np.float64), (0, 0), sigma)
    pb = cv2.GaussianBlur(b[r0:r1, c0:c1].astype(np.float64), (0, 0), sigma)
    pa, pb = pa - pa.mean(), pb - pb.mean()
    norm = float(np.sqrt((pa * pa).sum() * (pb * pb).sum()))
    return float((pa * pb).sum() / norm) if norm > 0 else None
