"""Whether an edit left the picture's content alone: the candidate is the source, in the same frame,
only re-lit, re-coloured or re-encoded.

Such a candidate shows the same people, faces and hands at the same pixels as its source, so the
analyses of people (pose, faces, hands, person mask: :mod:`fixloop.checks.analyses`) are the
source's, and the models are not run on it a second time. Any structural defect it shows is then
the source's own: the engine would mark it inherited anyway (its region's pixels correlate with the
source's), so no edit-made finding is lost.

The test. Both grey images are smoothed (``SMOOTH_SIGMA`` px, against re-encoding noise) and cut
into ``BLOCK_PX`` blocks (a second grid anchored at the far corner covers the strips the first one
leaves). In every block each image is fitted to the other by a positive gain and an offset (a local
exposure, white-balance or contrast change is such a fit); the content is the same when, in every block and
both ways, what the fit leaves is at most ``MAX_RESIDUAL`` (rms, grey levels of 255).

Measured on the shared photos (every other photo for the light edits, the hand photos for the hand
defects; the worst block's fit residual in grey levels of 255):

=====================================  ===================  ===========================
edit                                   at 1024 px           at the photo's own size
=====================================  ===================  ===========================
-0.5 EV (JPEG q90)                     0.44-0.80            0.39-1.04
+25 mired (JPEG q90)                   0.39-1.41            0.42-1.24
JPEG q80                               0.38-0.77            0.30-1.11
two fingers fused (made)               2.53-47.8            1.97-34.0
a finger removed, or duplicated        5.95-76.2            5.13-59.6
a hand mirrored, or with no arm        24.3-79.4            24.3-80.9
=====================================  ===================  ===========================

Blocks of 32 px let one fused pair through (1.29 at 1024 px, 1.05 at full size); 16 px do not. The
block size and ``MAX_RESIDUAL`` were chosen on these figures (all photos: in-sample).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from fixloop.checks.context import AnalysisImage, CheckContext

BLOCK_PX = 16  # analysis px; a finger's width in a 1024-px half-body shot
SMOOTH_SIGMA = 1.5  # px
MAX_RESIDUAL = 1.5 / 255  # rms grey level a block's gain-and-offset fit may leave


def _block_residuals(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per whole ``BLOCK_PX`` block of two same-size grey images (rows x cols), the rms residual of
    fitting either image's block to the other's by a positive gain and an offset (the larger way)."""
    h, w = a.shape
    rows, cols = h // BLOCK_PX, w // BLOCK_PX

    def blocks(x: np.ndarray) -> np.ndarray:
        return x[: rows * BLOCK_PX, : cols * BLOCK_PX].reshape(rows, BLOCK_PX, cols, BLOCK_PX)

    n = float(BLOCK_PX * BLOCK_PX)
    ba, bb = blocks(a), blocks(b)
    mean_a, mean_b = ba.sum(axis=(1, 3), dtype=np.float64) / n, bb.sum(axis=(1, 3), dtype=np.float64) / n
    var_a = np.maximum((ba * ba).sum(axis=(1, 3), dtype=np.float64) / n - mean_a * mean_a, 0.0)
    var_b = np.maximum((bb * bb).sum(axis=(1, 3), dtype=np.float64) / n - mean_b * mean_b, 0.0)
    cov = (ba * bb).sum(axis=(1, 3), dtype=np.float64) / n - mean_a * mean_b
    cov = np.maximum(cov, 0.0)  # a negative gain (dark turned light) explains nothing
    tiny = 1e-12
    left_in_b = var_b - cov * cov / np.maximum(var_a, tiny)  # b's variance a's fit does not explain
    left_in_a = var_a - cov * cov / np.maximum(var_b, tiny)
    return np.sqrt(np.maximum(np.maximum(left_in_a, left_in_b), 0.0))


def _smoothed(image: "AnalysisImage") -> np.ndarray:
    return image.shared(f"content:grey@{SMOOTH_SIGMA}", lambda: cv2.GaussianBlur(
        image.gray.astype(np.float32, copy=False), (0, 0), SMOOTH_SIGMA))


def _grids(h: int, w: int) -> list[tuple[int, int]]:
    """Where the block grids start: the top-left corner, and the far corner when the blocks do not
    tile the image (it covers the strips the first grid leaves)."""
    far = (h % BLOCK_PX, w % BLOCK_PX)
    return [(0, 0)] if far == (0, 0) else [(0, 0), far]


def content_residual(source: "AnalysisImage", candidate: "AnalysisImage") -> float:
    """The worst block's fit residual (grey levels of 1) between two aligned analysis images of one
    size; infinite for an image smaller than one block."""
    a, b = _smoothed(source), _smoothed(candidate)
    h, w = a.shape
    if h < BLOCK_PX or w < BLOCK_PX:
        return float("inf")
    worst = 0.0
    for dy, dx in _grids(h, w):
        worst = max(worst, float(_block_residuals(a[dy:, dx:], b[dy:, dx:]).max()))
        if worst > MAX_RESIDUAL:
            break
    return worst


def changed_region(ctx: "CheckContext") -> np.ndarray | None:
    """Where the edit changed the content (bool, analysis size): the blocks whose fit residual exceeds
    ``MAX_RESIDUAL``; None when it cannot be told (no aligned source of the same size, a source the
    registration moved or mirrored, transparency). Computed once per context."""

    def compute() -> np.ndarray | None:
        if not _comparable(ctx):
            return None
        a, b = _smoothed(ctx.source), _smoothed(ctx.candidate)
        h, w = a.shape
        changed = np.zeros((h, w), bool)
        if h < BLOCK_PX or w < BLOCK_PX:
            changed[:] = True
            return changed
        for dy, dx in _grids(h, w):
            over = _block_residuals(a[dy:, dx:], b[dy:, dx:]) > MAX_RESIDUAL
            rows, cols = over.shape
            cells = np.repeat(np.repeat(over, BLOCK_PX, axis=0), BLOCK_PX, axis=1)
            changed[dy:dy + rows * BLOCK_PX, dx:dx + cols * BLOCK_PX] |= cells
        return changed

    return ctx.shared("content:changed_region", compute)


def _comparable(ctx: "CheckContext") -> bool:
    source, candidate = ctx.source, ctx.candidate
    if source is None or not ctx.aligned or source.size != candidate.size:
        return False
    if source.alpha is not None or candidate.alpha is not None:
        return False
    return ctx.registration.identity


def same_content(ctx: "CheckContext") -> bool:
    """True when the candidate is its source in the same frame, only re-lit, re-coloured or
    re-encoded (see the module docstring); False without an aligned source, when the registration
    moved or mirrored the source, or when either image has transparency. Computed once per context."""

    def compute() -> bool:
        return _comparable(ctx) and content_residual(ctx.source, ctx.candidate) <= MAX_RESIDUAL

    return ctx.shared("same_content", compute)
