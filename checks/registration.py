"""Registration: the source brought into the candidate's frame before pixels are compared.

The checks that compare pixels with the source (mask_spill, exposure_drift, color_temperature_drift,
texture_blur, edge_halo) assume that a pixel of the candidate shows the same point of the scene as
the same pixel of the source. An edit that mirrored, turned, zoomed or shifted the picture breaks
that, and every such check would then report a defect that is not there. So once per check run
(:attr:`CheckContext.registration`, shared by every check) the source is registered to the candidate:

1. Which way round. The mirrored check's own measurement (:mod:`fixloop.checks.mirror`: edge
   thumbnails correlated with the source and with the source flipped) says whether the candidate
   looks more like the flipped source; then the flipped source is tried as well as the source.
2. How it moved. An affine map from candidate pixels to source pixels is fitted by maximising the
   enhanced correlation coefficient of the two grey images (ECC, Evangelidis and Psarakis 2008,
   OpenCV's ``findTransformECC``) at ``WORK_SIDE`` px, coarse to fine over three sizes, started from
   "no move" (and from the flip, which is also scored as it is). ECC is a zero-mean normalised
   correlation, so an exposure or white-balance change does not move the fit; the edit mask is left
   out of it. This covers the mirror, a rotation, a zoom or crop scaled back, a shift, a shear, and
   combinations of them.
3. Whether it moved at all. The fitted map is used only when it moves some corner of the frame by
   at least ``MIN_MOVE_PX`` analysis pixels and it matches clearly better than no move
   (``MIN_GAIN`` in correlation); otherwise the source is used as it is (the same object, so every
   report of an unmoved pair is exactly what it was without registration); when no move already
   correlates within ``MIN_GAIN`` of 1, no map could gain that much and the fit is not run. A flip that the fit
   confirms and that needs no further move is applied exactly (columns reversed, no resampling).

The registered source (:attr:`Registration.source`) is the source resampled into the candidate's
frame (bicubic). Where the source does not reach (the corners a rotation uncovers, the strip a shift
uncovers) it shows the candidate's own pixels, so those pixels compare equal and raise nothing;
:attr:`Registration.valid` marks the pixels the source covers, and the edit mask is carried into the
candidate's frame too (:attr:`Registration.mask`). Checks compare within
:meth:`CheckContext.registered_unedited_region`, which leaves out both the edit mask and the
uncovered border.

What the geometry itself is worth reporting is decided by the structure checks, not here: mirrored
(a flip), perspective_broken (a tilt, measured against the flipped source when the registration
found a flip), subject_cropped (a new frame that cuts a person; the source's people are judged in the
source mirrored when the registration found a flip, so a framing the source had is not new).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from fixloop.checks.geometry import share, shrink

if TYPE_CHECKING:
    from fixloop.checks.context import AnalysisImage, CheckContext

WORK_SIDE = 512  # px; long side of the grey copies the map is fitted on
LEVELS = 3  # coarse-to-fine sizes: WORK_SIDE / 4, / 2, / 1
MIN_MOVE_PX = 1.0  # analysis px; a map that moves no corner this far is no move
MIN_GAIN = 0.02  # correlation the fitted map must gain over no move
MIN_CORRELATION = 0.5  # a fit below this matches nothing: the source is used as it is
FLIP_HINT = 0.0  # the mirrored measurement's margin above which the flipped source is tried
EDGE_PX = 2  # analysis px; the border of the covered area left out (resampling at the edge)
# how far above 1 a normalised correlation may come out in float32 arithmetic (ECC's own); an unmoved
# match within MIN_GAIN of 1 by more than this leaves no fitted map room to be used (see register)
CORRELATION_SLACK = 1e-4
ECC_ITERATIONS = 60
ECC_EPS = 1e-5


@dataclass(frozen=True)
class Registration:
    """The source in the candidate's frame, and how it got there."""

    source: "AnalysisImage" = field(repr=False)  # the registered source (``ctx.source`` itself when nothing moved)
    to_source: np.ndarray  # 2 x 3 affine: candidate analysis px -> source analysis px
    flipped: bool  # the source was mirrored left-right
    moved: bool  # the source was resampled (False: unmoved, or mirrored exactly)
    valid: np.ndarray | None = field(repr=False)  # bool, analysis size: candidate pixels the source covers; None = all
    mask: np.ndarray | None = field(repr=False)  # the edit mask in the candidate's frame (bool), None without a mask
    correlation: float  # ECC correlation of the fitted map (1.0 without a source; the unmoved correlation when no fit was tried)
    correlation_unmoved: float  # the same, of no move
    size: tuple[int, int]  # the analysis size (w, h) of both

    @property
    def identity(self) -> bool:
        """True when the source is compared as it is."""
        return not self.flipped and not self.moved

    @property
    def matched_unmoved(self) -> bool:
        """True when the source as it is already matched the candidate within ``MIN_GAIN`` of a perfect
        correlation (outside the edit mask), so no move or flip was fitted: the frame is the source's,
        neither re-framed nor mirrored."""
        return self.identity and self.correlation_unmoved + MIN_GAIN > 1.0 + CORRELATION_SLACK

    @property
    def rotation(self) -> float:
        """°, counter-clockwise, of the source as it appears in the candidate."""
        a = self.to_source[:, :2]
        if self.flipped:
            a = a @ np.diag([-1.0, 1.0])
        return float(np.degrees(np.arctan2(a[1, 0], a[0, 0])))

    @property
    def scale(self) -> float:
        """Zoom of the candidate against the source (> 1: the candidate shows a closer view)."""
        return float(1.0 / np.sqrt(abs(np.linalg.det(self.to_source[:, :2]))))

    def tilts(self, min_correlation: float = 0.95) -> dict[str, float] | None:
        """How far the fitted map turned the source's horizontal and vertical lines, ° counter-clockwise
        (as perspective_broken counts them), when the registration fitted a move (or a flip) that
        matches at ``min_correlation`` or better; None otherwise."""
        if self.identity or self.correlation < min_correlation:
            return None
        a = self.to_source[:, :2]
        if self.flipped:  # against the source mirrored
            a = np.diag([-1.0, 1.0]) @ a
        inverse = np.linalg.inv(a)
        out = {}
        for name, direction, upright in (("horizon", (1.0, 0.0), 0.0), ("verticals", (0.0, -1.0), 90.0)):
            dx, dy = inverse @ np.array(direction)
            out[name] = float((np.degrees(np.arctan2(-dy, dx)) - upright + 90.0) % 180.0 - 90.0)
        return out

    @property
    def covered(self) -> float:
        """Share of the candidate's frame the source covers."""
        return 1.0 if self.valid is None else share(self.valid)

    def evidence(self) -> dict:
        """What a finding measured against the registered source may report about it."""
        return {"flipped": self.flipped, "rotation_deg": round(self.rotation, 3), "scale": round(self.scale, 4),
                "shift_px": [round(float(v), 1) for v in self._shift()], "covered_fraction": round(self.covered, 4)}

    def _shift(self) -> np.ndarray:
        """Analysis px the frame's centre moved by (candidate centre -> where it is in the source)."""
        w, h = self.size
        centre = np.array([(w - 1) / 2, (h - 1) / 2])
        return self.to_source[:, :2] @ centre + self.to_source[:, 2] - centre


# ---- the fit ----------------------------------------------------------------------------------------


def _grey(image: "AnalysisImage") -> tuple[np.ndarray, float]:
    """The image's grey view at most WORK_SIDE px on the long side (shared), and its scale."""
    return image.shared(f"registration:grey@{WORK_SIDE}", lambda: shrink(image.gray, WORK_SIDE))


def _rescale(matrix: np.ndarray, k, c) -> np.ndarray:
    """A map between two images that are both re-sampled by ``x' = k x + c`` (pixel centres; ``k`` and
    ``c`` per axis, or one number for both)."""
    k = np.broadcast_to(np.asarray(k, dtype=np.float64), (2,))
    c = np.broadcast_to(np.asarray(c, dtype=np.float64), (2,))
    a = (matrix[:, :2] * k[:, None]) / k[None, :]
    return np.hstack([a, (k * matrix[:, 2] + c - a @ c)[:, None]])


def _ecc(candidate: np.ndarray, source: np.ndarray, start: np.ndarray,
         weights: np.ndarray | None) -> tuple[np.ndarray, float]:
    """ECC fit, coarse to fine, of the affine map candidate px -> source px; (map, correlation)."""
    pyramid = [(candidate, source, weights)]
    for _ in range(LEVELS - 1):
        c, s, w = pyramid[-1]
        if min(c.shape) < 64:
            break
        pyramid.append((cv2.pyrDown(c), cv2.pyrDown(s), None if w is None else cv2.resize(
            w, (c.shape[1] // 2 + c.shape[1] % 2, c.shape[0] // 2 + c.shape[0] % 2), interpolation=cv2.INTER_NEAREST)))
    levels = len(pyramid)
    matrix = _rescale(start, 0.5 ** (levels - 1), 0.0).astype(np.float32)  # pyrDown keeps every other pixel
    rho = -1.0
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_ITERATIONS, ECC_EPS)
    for level in range(levels - 1, -1, -1):
        c, s, w = pyramid[level]
        try:
            rho, matrix = cv2.findTransformECC(c, s, matrix, cv2.MOTION_AFFINE, criteria, w, 5)
        except cv2.error:
            return start, -1.0  # no convergence: this start explains nothing
        if level:
            matrix = _rescale(matrix, 2.0, 0.0).astype(np.float32)
    return matrix.astype(np.float64), float(rho)


def _correlation(candidate: np.ndarray, source: np.ndarray, matrix: np.ndarray, weights: np.ndarray | None) -> float:
    """ECC's correlation of the source warped by ``matrix`` with the candidate (one evaluation)."""
    h, w = candidate.shape
    warped = cv2.warpAffine(source, matrix.astype(np.float32), (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    cover = cv2.warpAffine(np.ones_like(source), matrix.astype(np.float32), (w, h),
                           flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) > 0
    if weights is not None:
        cover &= weights > 0
    if np.count_nonzero(cover) < 100:
        return -1.0
    a = cv2.GaussianBlur(candidate, (5, 5), 0)[cover].astype(np.float64)
    b = cv2.GaussianBlur(warped, (5, 5), 0)[cover].astype(np.float64)
    a -= a.mean()
    b -= b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 0 else -1.0


def _corner_move(matrix: np.ndarray, reference: np.ndarray, size: tuple[int, int]) -> float:
    """Largest distance (px) between where two maps send the frame's corners."""
    w, h = size
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], dtype=np.float64)
    return float(np.abs(corners @ matrix.T - corners @ reference.T).max())


def _flip(width: int) -> np.ndarray:
    """Candidate px -> source px of an exact left-right mirror image at ``width`` px."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])


def _flip_hint(ctx: "CheckContext") -> float:
    """The mirrored check's margin (flipped minus direct edge correlation) at its default thumbnail size."""
    from fixloop.checks.base import CheckSkipped
    from fixloop.checks.mirror import DEFAULT_SIDE, measure_thumbnails

    try:
        return measure_thumbnails(ctx, DEFAULT_SIDE).margin
    except CheckSkipped:
        return 0.0


def register(ctx: "CheckContext") -> Registration:
    """Register ``ctx.source`` to ``ctx.candidate`` (see the module docstring)."""
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    unmoved = Registration(source=ctx.source, to_source=identity, flipped=False, moved=False, valid=None,
                           mask=ctx.mask, correlation=1.0, correlation_unmoved=1.0, size=ctx.size)
    if ctx.source is None or not ctx.aligned:
        return unmoved
    (cand, _), (src, _) = _grey(ctx.candidate), _grey(ctx.source)
    weights = None
    if ctx.mask is not None:
        size = (cand.shape[1], cand.shape[0])
        edited = cv2.resize(ctx.mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        keep = ~(edited | edited[:, ::-1])  # the edit may sit at its mirrored place in a flipped result
        if share(keep) >= 0.1:
            weights = keep.astype(np.uint8)
    base = _correlation(cand, src, identity, weights)
    if base + MIN_GAIN > 1.0 + CORRELATION_SLACK:
        # no map can correlate better than 1, so none could gain MIN_GAIN over no move: the fit (and the
        # flip it would try) cannot change the outcome and is not run
        return _with(unmoved, correlation=base, correlation_unmoved=base)
    tries = [identity]
    if _flip_hint(ctx) > FLIP_HINT:
        tries.append(_flip(cand.shape[1]))
    best, rho = identity, base
    for start in tries:
        matrix, value = _ecc(cand, src, start, weights)
        if value > rho:
            best, rho = matrix, value
        if start is not identity:  # the exact flip itself, should the fit have wandered off it
            value = _correlation(cand, src, start, weights)
            if value > rho:
                best, rho = start, value
    flipped = bool(np.linalg.det(best[:, :2]) < 0)
    if rho < MIN_CORRELATION or rho < base + MIN_GAIN:
        return _with(unmoved, correlation=rho, correlation_unmoved=base)
    # back to analysis pixels: x_work = k (x + 0.5) - 0.5, k per axis (the work size is rounded)
    size = ctx.size
    k = np.array([size[0] / cand.shape[1], size[1] / cand.shape[0]])
    to_source = _rescale(best, k, (k - 1) / 2)
    exact = _flip(size[0]) if flipped else identity
    if _corner_move(to_source, exact, size) < MIN_MOVE_PX:
        if not flipped:
            return _with(unmoved, correlation=rho, correlation_unmoved=base)
        return _mirrored(ctx, exact, rho, base)
    return _resampled(ctx, to_source, flipped, rho, base)


def _with(registration: Registration, **changes) -> Registration:
    from dataclasses import replace

    return replace(registration, **changes)


def mirrored_source(ctx: "CheckContext") -> "AnalysisImage":
    """The context's source mirrored exactly (columns reversed, alpha with them), once per context: the
    source in the frame of a mirrored result, for checks that judge it in its own frame (subject_cropped)."""
    from fixloop.checks.context import AnalysisImage
    from fixloop.checks.images import DecodedImage

    def build() -> "AnalysisImage":
        source = ctx.source
        decoded = DecodedImage(path=source.path, pixels=np.ascontiguousarray(source.pixels[:, ::-1]),
                               alpha=None if source.alpha is None else np.ascontiguousarray(source.alpha[:, ::-1]),
                               mode=source.decoded.mode)
        image = AnalysisImage(decoded, source.size)
        image.original_size = source.original_size
        return image

    return ctx.shared("registration:mirrored_source", build)


def _mirrored(ctx: "CheckContext", to_source: np.ndarray, rho: float, base: float) -> Registration:
    """The source mirrored exactly (columns reversed), alpha and mask with it."""
    mask = None if ctx.mask is None else np.ascontiguousarray(ctx.mask[:, ::-1])
    return Registration(source=mirrored_source(ctx), to_source=to_source, flipped=True, moved=False, valid=None,
                        mask=mask, correlation=rho, correlation_unmoved=base, size=ctx.size)


def _resampled(ctx: "CheckContext", to_source: np.ndarray, flipped: bool, rho: float, base: float) -> Registration:
    """The source resampled into the candidate's frame; the candidate's pixels where it does not reach."""
    from fixloop.checks.context import AnalysisImage
    from fixloop.checks.images import DecodedImage, as_float, to_uint8

    source, candidate = ctx.source, ctx.candidate
    w, h = ctx.size
    m = to_source.astype(np.float32)
    flags = cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP

    def warp(array: np.ndarray, interpolation: int = flags) -> np.ndarray:
        out = cv2.warpAffine(array, m, (w, h), flags=interpolation, borderMode=cv2.BORDER_REPLICATE)
        return out if out.dtype == np.uint8 else np.clip(out, 0, 1).astype(array.dtype)

    cover = cv2.warpAffine(np.ones((source.size[1], source.size[0]), np.uint8), m, (w, h),
                           flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderValue=0)
    valid = cv2.erode(cover, np.ones((2 * EDGE_PX + 1, 2 * EDGE_PX + 1), np.uint8)).astype(bool)
    pixels = warp(source.pixels)
    own = candidate.pixels
    if own.dtype != pixels.dtype:  # an 8-bit source beside a deep candidate, or the other way round
        own = to_uint8(own) if pixels.dtype == np.uint8 else as_float(own)
    pixels[~valid] = own[~valid]
    alpha = None
    if source.alpha is not None:
        alpha = warp(source.alpha)
        alpha[~valid] = 1.0 if candidate.alpha is None else candidate.alpha[~valid]
    decoded = DecodedImage(path=source.path, pixels=np.ascontiguousarray(pixels), alpha=alpha, mode=source.decoded.mode)
    image = AnalysisImage(decoded, ctx.size)
    image.original_size = source.original_size
    mask = None
    if ctx.mask is not None:
        mask = cv2.warpAffine(ctx.mask.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE) >= 0.5
    return Registration(source=image, to_source=to_source, flipped=flipped, moved=True,
                        valid=None if valid.all() else valid, mask=mask, correlation=rho,
                        correlation_unmoved=base, size=ctx.size)
