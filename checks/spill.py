"""mask_spill: the edit changed the image outside the edit mask.

The mask says where the edit was allowed; everywhere else the candidate should still be the source.
Measured on the pixels outside the mask grown by a margin (``margin`` of the image diagonal: seams
and feathering at the mask's border may change), at a working size of ``work_side`` px, after a
light Gaussian blur of both images so that JPEG noise and resampling do not count:

* per pixel, the CIEDE2000 colour difference ΔE00 between source and candidate (CIE 142-2001;
  about 1 is a just noticeable difference, 5 a clear one), and
* per pixel, the local structural similarity of L* (SSIM, Wang et al. 2004: 11-tap Gaussian window,
  sigma 1.5), which drops where shapes or texture changed even at similar colour.

A pixel has *changed* when its ΔE00 exceeds ``delta_e_threshold`` or its SSIM falls below
``ssim_threshold``. A morphological opening (disc of ``opening_px``) removes specks and the thin
slivers that a sub-pixel shift leaves along high-contrast edges. The score is the changed share of
the unedited area; the changed pixels are grouped into connected blobs, the largest of which are
listed (boxes in candidate pixels) so a person can see where the edit leaked.

A global exposure or colour change also changes everything outside the mask and is reported here
too: the edit was not confined to the mask, whatever exposure_drift or color_temperature_drift say
about its nature. When most of the unedited area changed, the overall shift is fitted (a cubic tone
curve of L* with an affine map of Lab, least squares refitted without its outliers), taken out, and
what changed *beyond* it (candidate pixels clipped to white aside) is listed as the regions, so a
leaked local edit under a global drift is still placed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np
from pydantic import Field
from skimage.color import deltaE_ciede2000
from skimage.metrics import structural_similarity

from fixloop.checks.base import CheckParams, CheckSkipped, Priority, make_finding, register_check
from fixloop.checks.context import AnalysisImage, CheckContext
from fixloop.checks.geometry import disc, fit_size, resize_mask
from fixloop.checks.images import as_float

GLOBAL_SHARE = 0.5  # changed share of the unedited area above which the change is called global
CLIPPED = 0.97  # sRGB level at or above which a candidate channel counts as clipped


class SpillParams(CheckParams):
    priority: Priority
    margin: float = Field(ge=0, lt=0.5, description="share of the image diagonal the mask is grown by")
    work_side: int = Field(ge=64, le=4096, description="px; long side at which the comparison runs")
    blur_sigma: float = Field(ge=0, le=32, description="px at the working size; blur against JPEG noise")
    delta_e_threshold: float = Field(gt=0, le=100, description="CIEDE2000 difference at which a pixel has changed")
    ssim_threshold: float = Field(gt=-1, lt=1, description="local SSIM of L* below which a pixel has changed")
    opening_px: int = Field(ge=0, le=64, description="px at the working size; radius of the opening disc")
    fraction_threshold: float = Field(gt=0, le=1, description="share of the unedited area")
    min_outside_fraction: float = Field(gt=0, le=1, description="share of the image left to compare")
    max_regions: int = Field(ge=1, le=1000, description="changed blobs listed in the evidence")


@dataclass(frozen=True)
class Blob:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 at the working size (x1/y1 exclusive)
    area: int  # pixels at the working size
    centroid: tuple[float, float]  # x, y at the working size


@dataclass(frozen=True)
class SpillMeasure:
    scale: float  # working size / analysis size
    outside: np.ndarray  # bool, working size: the unedited pixels compared
    changed: np.ndarray  # bool, working size: changed pixels after the opening
    changed_fraction: float  # share of ``outside`` that changed
    mean_delta_e: float  # mean ΔE00 over ``outside``
    mean_delta_e_changed: float  # mean ΔE00 over the changed pixels (0 when none)
    mean_ssim: float  # mean local SSIM of L* over ``outside``
    blobs: list[Blob]  # connected changed blobs, largest first
    mask_box: tuple[int, int, int, int]  # bounding box of the edit mask at the working size
    # When most of the unedited area changed: what changed beyond the overall (affine Lab) shift.
    local_fraction: float | None = None  # share of the unedited area; None when not computed
    local_blobs: list[Blob] = field(default_factory=list)


def lab_at(image: AnalysisImage, size: tuple[int, int]) -> np.ndarray:
    """CIELAB of ``image`` at ``size``: its own ``lab`` view, or the same conversion of an
    area-downsampled copy (cheaper than converting all pixels and shrinking afterwards)."""
    if image.size == size:
        return image.lab

    def compute() -> np.ndarray:
        small = cv2.resize(image.pixels, size, interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(as_float(small), cv2.COLOR_RGB2Lab)

    return image.shared(f"lab@{size[0]}x{size[1]}", compute)


def _changed(
    source_lab: np.ndarray, candidate_lab: np.ndarray, ssim: np.ndarray, outside: np.ndarray, params: SpillParams
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel ΔE00 (on ``outside`` only: the slow part) and the opened changed map."""
    delta_e = np.zeros(outside.shape, np.float32)
    delta_e[outside] = deltaE_ciede2000(source_lab[outside], candidate_lab[outside], channel_axis=-1)
    changed = ((delta_e > params.delta_e_threshold) | (ssim < params.ssim_threshold)) & outside
    if params.opening_px > 0:
        changed = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_OPEN, disc(params.opening_px)).astype(bool)
    return delta_e, changed


def _blobs(changed: np.ndarray) -> list[Blob]:
    """Connected changed blobs (8-connected), largest first."""
    count, _, stats, centroids = cv2.connectedComponentsWithStats(changed.astype(np.uint8), connectivity=8)
    blobs = [
        Blob(box=(int(x), int(y), int(x + bw), int(y + bh)), area=int(area),
             centroid=(float(centroids[i][0]), float(centroids[i][1])))
        for i, (x, y, bw, bh, area) in enumerate(stats)
        if i > 0
    ]
    return sorted(blobs, key=lambda b: -b.area)


def _tone_design(lab: np.ndarray) -> np.ndarray:
    """Regressors of the global shift model: a cubic tone curve of L* plus an affine map of Lab."""
    lab = lab.reshape(-1, 3).astype(np.float32)
    lightness = lab[:, :1] / np.float32(100.0)
    return np.hstack([lab, lightness**2 * 100, lightness**3 * 100, np.ones_like(lightness)])


def fit_global_shift(source_lab: np.ndarray, candidate_lab: np.ndarray, region: np.ndarray,
                     params: SpillParams) -> np.ndarray:
    """``source_lab`` mapped by the global colour transform that best explains the candidate on
    ``region``: a cubic tone curve of L* with an affine map of Lab (an exposure, contrast, tone-curve
    or white-balance change applied to the whole picture), fitted by least squares and refitted
    without the pixels it cannot explain (the local changes being looked for)."""
    ys, xs = np.nonzero(region)
    step = max(1, len(ys) // 20000)
    design = _tone_design(source_lab[ys[::step], xs[::step]]).astype(np.float64)
    target = candidate_lab[ys[::step], xs[::step]].astype(np.float64)
    keep = np.ones(len(design), bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(design[keep], target[keep], rcond=None)
        residual = np.linalg.norm(design @ coef - target, axis=1)
        keep = residual <= max(params.delta_e_threshold, float(np.percentile(residual, 80)))
    h, w = region.shape
    return (_tone_design(source_lab) @ coef.astype(np.float32)).reshape(h, w, 3)


def measure_spill(
    source_lab: np.ndarray,
    candidate_lab: np.ndarray,
    mask: np.ndarray,
    params: SpillParams,
    scale: float = 1.0,
    candidate_clipped: Callable[[], np.ndarray] | None = None,
) -> SpillMeasure:
    """Compare two same-size Lab images outside ``mask`` (bool, True = edit allowed); ``scale`` is
    recorded as the factor from the analysis size to these images' size. ``candidate_clipped``
    gives (when asked) a bool map of candidate pixels clipped to white: when the whole picture
    shifted, their change is the shift's (per-channel clipping is beyond any global colour model),
    not a local one.
    """
    h, w = mask.shape
    # Outside the mask grown by the margin: distance to the nearest mask pixel above the radius.
    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    outside = distance > params.margin * float(np.hypot(w, h))
    if outside.mean() < params.min_outside_fraction:
        raise CheckSkipped(
            f"the edit mask, grown by {params.margin:.0%} of the diagonal for seams, leaves only "
            f"{outside.mean():.1%} of the image to compare"
        )
    if params.blur_sigma > 0:
        source_lab = cv2.GaussianBlur(source_lab, (0, 0), params.blur_sigma)
        candidate_lab = cv2.GaussianBlur(candidate_lab, (0, 0), params.blur_sigma)
    if min(h, w) >= 7:
        _, ssim = structural_similarity(
            source_lab[..., 0], candidate_lab[..., 0], data_range=100.0, full=True,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )
    else:  # too small for an SSIM window: colour difference alone
        ssim = np.ones((h, w), np.float32)
    delta_e, changed = _changed(source_lab, candidate_lab, ssim, outside, params)
    n_changed = int(changed.sum())
    fraction = n_changed / int(outside.sum())
    local_blobs: list[Blob] = []
    local_fraction = None
    if fraction >= GLOBAL_SHARE:
        # Most of the picture moved: take the overall shift out and look for what changed beyond it.
        shifted = fit_global_shift(source_lab, candidate_lab, outside, params)
        _, local = _changed(shifted, candidate_lab, ssim, outside, params)
        if candidate_clipped is not None:
            local &= ~candidate_clipped()
        local_fraction = float(local.sum()) / int(outside.sum())
        local_blobs = _blobs(local)
    ys, xs = np.nonzero(mask)
    return SpillMeasure(
        scale=scale,
        outside=outside,
        changed=changed,
        changed_fraction=fraction,
        mean_delta_e=float(delta_e[outside].mean()),
        mean_delta_e_changed=float(delta_e[changed].mean()) if n_changed else 0.0,
        mean_ssim=float(ssim[outside].mean()),
        blobs=_blobs(changed),
        mask_box=(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
        local_fraction=local_fraction,
        local_blobs=local_blobs,
    )


def measure_context(ctx: CheckContext, params: SpillParams) -> SpillMeasure:
    """Bring source, candidate and mask to the working size and measure the spill."""
    size, scale = fit_size(ctx.size, params.work_side)
    mask = ctx.mask
    if mask.shape != (size[1], size[0]):
        mask = resize_mask(mask, size)
        if not mask.any():  # a mask thinner than a working pixel: keep its pixels
            mask = cv2.resize(ctx.mask.astype(np.uint8), size, interpolation=cv2.INTER_AREA) > 0

    def clipped() -> np.ndarray:
        pixels = ctx.candidate.pixels
        small = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA) if pixels.shape[1] != size[0] else pixels
        level = round(CLIPPED * 255) if small.dtype == np.uint8 else CLIPPED
        hit = (small.max(axis=2) >= level).astype(np.uint8)
        # the blur against JPEG noise spreads a clipped area's edge by a couple of pixels
        return cv2.dilate(hit, np.ones((5, 5), np.uint8)).astype(bool)

    return measure_spill(lab_at(ctx.source, size), lab_at(ctx.candidate, size), mask, params, scale, clipped)


def side_of(blob: Blob, mask_box: tuple[int, int, int, int]) -> str:
    """Where a blob lies relative to the edit mask's bounding box, in words."""
    x, y = blob.centroid
    x0, y0, x1, y1 = mask_box
    gaps = {"left of": x0 - x, "right of": x - x1, "above": y0 - y, "below": y - y1}
    side, gap = max(gaps.items(), key=lambda kv: kv[1])
    return side if gap > 0 else "around"


@register_check("mask_spill", SpillParams, requires=("source", "mask"))
def check_mask_spill(ctx: CheckContext, params: SpillParams):
    """Share of the area outside the edit mask that changed (CIEDE2000 and local SSIM)."""
    m = measure_context(ctx, params)
    evidence = {
        "changed_fraction": round(m.changed_fraction, 5),
        "mean_delta_e00": round(m.mean_delta_e, 3),
        "mean_delta_e00_changed": round(m.mean_delta_e_changed, 3),
        "mean_ssim": round(m.mean_ssim, 4),
        "compared_fraction": round(float(m.outside.mean()), 4),
        "blob_count": len(m.blobs),
    }
    if m.changed_fraction < params.fraction_threshold or not m.blobs:
        return []

    to_analysis = 1.0 / m.scale
    pixel_area = (to_analysis * ctx.scale_to_candidate) ** 2  # candidate pixels per working pixel

    def described(blobs: list[Blob]) -> list[dict]:
        return [
            {
                "box": ctx.candidate_box([v * to_analysis for v in blob.box]),
                "area_px": int(round(blob.area * pixel_area)),
                "area_fraction": round(blob.area / m.changed.size, 5),
                "side": side_of(blob, m.mask_box),
            }
            for blob in blobs[: params.max_regions]
        ]

    def where(region: dict) -> str:
        return "near the mask" if region["side"] == "around" else f"{region['side']} the mask"

    region, full = ctx.mask_region(m.changed, cell=to_analysis)
    if m.local_fraction is not None:
        # A global change: the regions listed are what changed beyond the overall shift.
        local = m.local_fraction >= params.fraction_threshold and bool(m.local_blobs)
        evidence["global_change"] = True
        evidence["local_changed_fraction"] = round(m.local_fraction, 5)
        evidence["regions"] = described(m.local_blobs) if local else []
        beyond = (f"; beyond that overall shift, {m.local_fraction:.1%} changed, the largest patch "
                  f"{where(evidence['regions'][0])}") if local else ""
        message = (
            f"The image changed outside the edit mask almost everywhere ({m.changed_fraction:.0%} of the "
            f"unedited area, mean ΔE00 {m.mean_delta_e:.1f}): the edit was not confined to the mask{beyond}."
        )
    else:
        evidence["global_change"] = False
        evidence["regions"] = described(m.blobs)
        message = (
            f"{m.changed_fraction:.1%} of the area outside the edit mask changed (mean ΔE00 "
            f"{m.mean_delta_e_changed:.1f} there), the largest patch {where(evidence['regions'][0])}."
        )
    return [
        make_finding(
            "mask_spill",
            params,
            score=m.changed_fraction,
            threshold=params.fraction_threshold,
            unit="share of unedited area",
            message=message,
            region=region,
            evidence=evidence,
            mask=full,
        )
    ]
