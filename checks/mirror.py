"""mirrored: the candidate is its source flipped left-right.

Both images are reduced to a small thumbnail (``analysis_side`` px on the long side), where only
the layout of the scene is left, lightly blurred, and described by their gradient magnitude (where
the edges are). The candidate is compared with the source and with the source flipped left-right
by zero-mean normalised cross-correlation (ZNCC, the "normalised correlation coefficient" of
template matching; Lewis 1995, "Fast Normalized Cross-Correlation"), maximised over small shifts
and zooms so that an edit that reframed the picture a little still lines up. The same comparison
of the grey thumbnails is reported beside it: grey levels carry the broad layout, but a plain or
symmetric backdrop makes the grey image match its own mirror image well, so the decision rests on
the edges, which separate a flip from the original far better on portraits.

A flip shows as a flipped match that clearly beats the direct match (``margin``) and is itself
good (``min_match``). ZNCC ignores gain and offset, so an exposure shift does not hide a flip;
pixels inside the edit mask (and their mirror image) are left out, so an edit in the allowed
region neither hides a flip nor fakes one. A left-right symmetric picture matches its own mirror
image as well as itself: the margin stays near zero and nothing is reported, since a flip of such
a picture cannot be told from the original (and hardly matters). When the registration already
matched the source as it is within ``MIN_GAIN`` of a perfect correlation (outside the mask), no flip
can beat that and the thumbnails are not compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import Field

from fixloop.checks.base import CheckParams, CheckSkipped, Priority, make_finding, register_check
from fixloop.checks.context import AnalysisImage, CheckContext
from fixloop.checks.geometry import share

BLUR_SIGMA = 1.0  # px at the thumbnail size, applied before the gradient
SEARCH_MARGIN = 0.06  # share of each side of the candidate left out so that it can slide over the source
ZOOMS = (0.95, 1.0, 1.05, 1.1)  # source rescaled by these before matching (an edit may zoom a little)
MIN_COMPARED = 0.10  # share of the thumbnail that must be left outside the mask (and its mirror image)
MIN_STRUCTURE = 1e-3  # spread of the source thumbnail's gradient below which there is nothing to compare
DEFAULT_SIDE = 192  # px; the policy's default ``analysis_side`` (what registration asks for)


class MirrorParams(CheckParams):
    priority: Priority
    analysis_side: int = Field(ge=64, le=512, description="px; long side of the thumbnails compared")
    margin: float = Field(gt=0, le=2, description="correlation; flipped match minus direct match")
    min_match: float = Field(gt=0, le=1, description="correlation; the flipped match must reach this")


@dataclass(frozen=True)
class MirrorMatch:
    direct: float  # edge (gradient magnitude) correlation of the candidate with the source
    flipped: float  # ... with the source flipped left-right
    direct_grey: float
    flipped_grey: float
    compared_fraction: float  # share of the candidate's thumbnail compared (outside the mask)

    @property
    def margin(self) -> float:
        return self.flipped - self.direct


def _thumbnail(gray: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey thumbnail (lightly blurred) and its gradient magnitude."""
    h, w = gray.shape
    scale = side / max(h, w)
    size = (max(16, round(w * scale)), max(16, round(h * scale)))
    small = cv2.resize(gray.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), BLUR_SIGMA)
    gx = cv2.Sobel(small, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(small, cv2.CV_32F, 0, 1, ksize=3)
    return small, cv2.magnitude(gx, gy)


def _best_zncc(template: np.ndarray, weights: np.ndarray | None, image: np.ndarray) -> float:
    """Highest ZNCC of ``template`` over every position in ``image`` and every zoom of it."""
    best = -1.0
    h, w = image.shape
    th, tw = template.shape
    for zoom in ZOOMS:
        size = (round(w * zoom), round(h * zoom))
        if size[0] < tw or size[1] < th:
            continue
        scaled = image if zoom == 1.0 else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        if weights is None:
            result = cv2.matchTemplate(scaled, template, cv2.TM_CCOEFF_NORMED)
        else:
            result = cv2.matchTemplate(scaled, template, cv2.TM_CCOEFF_NORMED, mask=weights)
        result = result[np.isfinite(result)]
        if result.size:
            best = max(best, float(result.max()))
    return best


def measure_mirror(candidate: np.ndarray, source: np.ndarray, side: int,
                   excluded: np.ndarray | None = None) -> MirrorMatch:
    """Edge and grey correlations of ``candidate`` with ``source`` and with ``source`` mirrored.

    ``candidate`` and ``source`` are grey float images of the same size; ``excluded`` (bool, same
    size, optional) marks pixels left out of the comparison (the edit mask). Raises
    :class:`CheckSkipped` for a plain image.
    """
    return _measure(_thumbnail(candidate, side), _thumbnail(source, side), excluded)


def thumbnails(image: AnalysisImage, side: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_thumbnail` of an analysis image's grey view, computed once per image (shared)."""
    return image.shared(f"mirror:thumbnail:{side}", lambda: _thumbnail(image.gray, side))


def _measure(candidate: tuple[np.ndarray, np.ndarray], source: tuple[np.ndarray, np.ndarray],
             excluded: np.ndarray | None) -> MirrorMatch:
    (cand_grey, cand_grad), (src_grey, src_grad) = candidate, source
    if float(src_grad.std()) < MIN_STRUCTURE or float(cand_grad.std()) < MIN_STRUCTURE:
        raise CheckSkipped("the image is plain (no edges or shading to compare): left and right cannot be told apart")
    h, w = cand_grey.shape
    my, mx = max(1, round(SEARCH_MARGIN * h)), max(1, round(SEARCH_MARGIN * w))
    inner = (slice(my, h - my), slice(mx, w - mx))
    weights = None
    compared = 1.0
    if excluded is not None and excluded.any():
        small = cv2.resize(excluded.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0
        small = small | small[:, ::-1]  # the edit may sit at the mirrored place in a flipped result
        keep = ~small[inner]
        if share(keep) >= MIN_COMPARED:
            weights = keep.astype(np.float32)
            compared = share(keep)
    scores = {}
    for name, cand, src in (("grey", cand_grey, src_grey), ("gradient", cand_grad, src_grad)):
        template = np.ascontiguousarray(cand[inner])
        scores[name] = (_best_zncc(template, weights, src),
                        _best_zncc(template, weights, np.ascontiguousarray(src[:, ::-1])))
    return MirrorMatch(
        direct=scores["gradient"][0],
        flipped=scores["gradient"][1],
        direct_grey=scores["grey"][0],
        flipped_grey=scores["grey"][1],
        compared_fraction=compared,
    )


def measure_thumbnails(ctx: CheckContext, side: int) -> MirrorMatch:
    """:func:`measure_mirror` of a context's candidate and source at ``side`` px, the edit mask left
    out; computed once per context and side (the mirrored check and registration share it)."""

    def compute() -> MirrorMatch:
        excluded = None if ctx.mask is None else ~ctx.unedited_region()
        return _measure(thumbnails(ctx.candidate, side), thumbnails(ctx.source, side), excluded)

    return ctx.shared(f"mirror:match:{side}", compute)


@register_check("mirrored", MirrorParams, requires=("source",))
def check_mirrored(ctx: CheckContext, params: MirrorParams):
    """The candidate matches the source flipped left-right better than the source itself."""
    if ctx.registration.matched_unmoved:
        return []  # the source as it is already matches within MIN_GAIN of perfect: nothing is mirrored
    match = measure_thumbnails(ctx, params.analysis_side)
    evidence = {
        "direct_correlation": round(match.direct, 4),
        "flipped_correlation": round(match.flipped, 4),
        "margin": round(match.margin, 4),
        "direct_grey": round(match.direct_grey, 4),
        "flipped_grey": round(match.flipped_grey, 4),
        "compared_fraction": round(match.compared_fraction, 4),
    }
    if match.margin < params.margin or match.flipped < params.min_match:
        return []
    message = (f"The image is the source mirrored left-right: it matches the flipped source "
               f"(edge correlation {match.flipped:.2f}) far better than the source itself ({match.direct:.2f}).")
    return [make_finding("mirrored", params, score=match.margin, threshold=params.margin,
                         unit="correlation margin", message=message, evidence=evidence)]
