"""mask_spill: the edit changed the image outside the edit mask.

The mask says where the edit was allowed; everywhere else the candidate should still be the source.
The source is registered to the candidate first (:mod:`fixloop.checks.registration`): a result that
was mirrored, turned or re-framed is compared point for point, its edit mask carried along, and the
border the moved source does not cover is left out (the geometry is the structure checks' finding).
Measured on the pixels outside the mask grown by a margin (``margin`` of the image diagonal: seams
and feathering at the mask's border may change), at a working size of ``work_side`` px, after a
light Gaussian blur of both images so that JPEG noise and resampling do not count:

* per pixel, the CIEDE2000 colour difference ΔE00 between source and candidate (CIE 142-2001;
  about 1 is a just noticeable difference, 5 a clear one; computed in float32, within 1e-4 of
  scikit-image's ``deltaE_ciede2000``, whose own value decides every pixel near the threshold), and
* per pixel, the local structural similarity of L* (SSIM, Wang et al. 2004: 11-tap Gaussian window,
  sigma 1.5), which drops where shapes or texture changed even at similar colour.

A pixel has *changed* when its ΔE00 exceeds ``delta_e_threshold`` or its SSIM falls below
``ssim_threshold``. A morphological opening (disc of ``opening_px``) removes specks and the thin
slivers that a sub-pixel shift leaves along high-contrast edges. The score is the changed share of
the unedited area; the changed pixels are grouped into connected blobs, the largest of which are
listed (boxes in candidate pixels) so a person can see where the edit leaked. Honest re-encodes and
edits kept inside the mask change none of it (0.0000 on every shared photo), so the share is low:
a face outside the mask darkened 0.4 EV and softened is 0.2-0.5 % of the unedited area.

A global exposure or colour change also changes everything outside the mask and is reported here
too: the edit was not confined to the mask, whatever exposure_drift or color_temperature_drift say
about its nature. When most of the unedited area changed, the overall shift is fitted (a cubic tone
curve of L* with an affine map of Lab, least squares refitted without its outliers), taken out, and
what changed *beyond* it (candidate pixels clipped to white aside) is listed as the regions, so a
leaked local edit under a global drift is still placed; that residual has its own, higher share
(``residual_threshold``), since no tone curve takes a real exposure change out exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np
from pydantic import Field

from fixloop.checks.base import CheckParams, CheckSkipped, Priority, make_finding, register_check
from fixloop.checks.context import AnalysisImage, CheckContext
from fixloop.checks.geometry import channel_max, disc, fit_size, resize_mask, share
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
    residual_threshold: float = Field(gt=0, le=1, description="share of the unedited area changed beyond a "
                                                              "global shift")
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
    return image.shared(f"lab@{size[0]}x{size[1]}", lambda: cv2.cvtColor(as_float(pixels_at(image, size)),
                                                                          cv2.COLOR_RGB2Lab))


def pixels_at(image: AnalysisImage, size: tuple[int, int]) -> np.ndarray:
    """The image's pixels area-averaged to ``size`` (shared)."""
    if image.size == size:
        return image.pixels
    return image.shared(f"pixels@{size[0]}x{size[1]}",
                        lambda: cv2.resize(image.pixels, size, interpolation=cv2.INTER_AREA))


# ---- CIEDE2000 and SSIM -------------------------------------------------------------------------

_TWO_PI = np.float32(2 * np.pi)
_PI = np.float32(np.pi)
# Around the threshold (and at CIEDE2000's hue discontinuities) a pixel's ΔE00 is taken from
# scikit-image's deltaE_ciede2000 computation (delta_e00_reference), so that which pixels changed never depends on float32
# rounding; elsewhere the float32 value (within 1e-4 of it) serves.
EXACT_BAND = 0.01


def _norm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    r = a * a
    r += b * b
    return np.sqrt(r, out=r)


def _pow7(x: np.ndarray) -> np.ndarray:
    x2 = x * x
    x7 = x2 * x2
    x7 *= x2
    x7 *= x
    return x7


def _delta_e00_float32(lab1: np.ndarray, lab2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CIEDE2000 (Sharma, Wu and Dalal 2005, as scikit-image computes it) of two N x 3 Lab arrays in
    float32, and a flag for the pixels at its hue discontinuities (hue difference or sum at the wrap),
    where float32 may take the other branch."""
    f = np.float32
    L1, a1, b1 = (np.ascontiguousarray(lab1[:, i], dtype=f) for i in range(3))
    L2, a2, b2 = (np.ascontiguousarray(lab2[:, i], dtype=f) for i in range(3))
    cbar = _norm(a1, b1)
    cbar += _norm(a2, b2)
    cbar *= f(0.5)
    c7 = _pow7(cbar)
    g = c7 / (c7 + f(25.0**7))
    np.sqrt(g, out=g)
    scale = f(1.5) - f(0.5) * g  # 1 + G
    a1 = a1 * scale
    a2 = a2 * scale
    c1, c2 = _norm(a1, b1), _norm(a2, b2)
    h1, h2 = np.arctan2(b1, a1), np.arctan2(b2, a2)
    h1 += (h1 < 0) * _TWO_PI
    h2 += (h2 < 0) * _TWO_PI
    lbar = L1 + L2
    lbar *= f(0.5)
    lbar -= f(50)
    lbar *= lbar
    l_term = (L2 - L1) / (f(1) + f(0.015) * lbar / np.sqrt(f(20) + lbar))
    cbar = c1 + c2
    cbar *= f(0.5)
    c_term = (c2 - c1) / (f(1) + f(0.045) * cbar)
    h_diff = h2 - h1
    h_sum = h1 + h2
    cc = c1 * c2
    achromatic = cc == 0
    above, below = h_diff > _PI, h_diff < -_PI
    dh = h_diff - above * _TWO_PI
    dh += below * _TWO_PI
    dh[achromatic] = 0
    h_term = f(2) * np.sqrt(cc) * np.sin(dh * f(0.5))
    wrap = ~achromatic & (above | below)
    low = h_sum < _TWO_PI
    hbar = h_sum + (wrap & low) * _TWO_PI
    hbar -= (wrap & ~low) * _TWO_PI
    hbar *= f(0.5)
    hbar[achromatic] *= f(2)
    t = (f(1) - f(0.17) * np.cos(hbar - f(np.pi / 6)) + f(0.24) * np.cos(f(2) * hbar)
         + f(0.32) * np.cos(f(3) * hbar + f(np.pi / 30)) - f(0.20) * np.cos(f(4) * hbar - f(63 * np.pi / 180)))
    h_term /= f(1) + f(0.015) * cbar * t
    c7 = _pow7(cbar)
    rc = f(2) * np.sqrt(c7 / (c7 + f(25.0**7)))
    z = (hbar * f(180 / np.pi) - f(275)) / f(25)
    dtheta = f(np.pi / 6) * np.exp(-(z * z))
    de2 = l_term * l_term
    de2 += c_term * c_term
    de2 += h_term * h_term
    de2 -= np.sin(f(2) * dtheta) * rc * c_term * h_term
    np.maximum(de2, 0, out=de2)
    np.sqrt(de2, out=de2)
    unsure = np.abs(np.abs(h_diff) - _PI) < f(1e-3)
    unsure |= np.abs(h_sum - _TWO_PI) < f(1e-3)
    return de2, unsure


def delta_e00_reference(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 of two N x 3 float32 Lab arrays exactly as scikit-image 0.26's ``deltaE_ciede2000``
    computes it (the same numpy operations in the same order and dtypes, so the same bits; kept here
    so that checking an image does not import scikit-image's colour module and SciPy with it)."""
    L1, a1, b1 = lab1[:, 0], lab1[:, 1], lab1[:, 2]
    L2, a2, b2 = lab2[:, 0], lab2[:, 1], lab2[:, 2]
    Cbar = 0.5 * (np.hypot(a1, b1) + np.hypot(a2, b2))
    c7 = Cbar**7
    G = 0.5 * (1 - np.sqrt(c7 / (c7 + 25**7)))
    scale = 1 + G
    C1, h1 = np.hypot(a1 * scale, b1), np.arctan2(b1, a1 * scale)
    h1 += np.where(h1 < 0.0, 2 * np.pi, 0)
    C2, h2 = np.hypot(a2 * scale, b2), np.arctan2(b2, a2 * scale)
    h2 += np.where(h2 < 0.0, 2 * np.pi, 0)
    Lbar = 0.5 * (L1 + L2)
    tmp = (Lbar - 50) ** 2
    SL = 1 + 0.015 * tmp / np.sqrt(20 + tmp)
    L_term = (L2 - L1) / (1 * SL)
    Cbar = 0.5 * (C1 + C2)
    SC = 1 + 0.045 * Cbar
    C_term = (C2 - C1) / (1 * SC)
    h_diff = h2 - h1
    h_sum = h1 + h2
    CC = C1 * C2
    dH = h_diff.copy()
    dH[h_diff > np.pi] -= 2 * np.pi
    dH[h_diff < -np.pi] += 2 * np.pi
    dH[CC == 0.0] = 0.0
    dH_term = 2 * np.sqrt(CC) * np.sin(dH / 2)
    Hbar = h_sum.copy()
    mask = np.logical_and(CC != 0.0, np.abs(h_diff) > np.pi)
    Hbar[mask * (h_sum < 2 * np.pi)] += 2 * np.pi
    Hbar[mask * (h_sum >= 2 * np.pi)] -= 2 * np.pi
    Hbar[CC == 0.0] *= 2
    Hbar *= 0.5
    T = (1 - 0.17 * np.cos(Hbar - np.deg2rad(30)) + 0.24 * np.cos(2 * Hbar)
         + 0.32 * np.cos(3 * Hbar + np.deg2rad(6)) - 0.20 * np.cos(4 * Hbar - np.deg2rad(63)))
    SH = 1 + 0.015 * Cbar * T
    H_term = dH_term / (1 * SH)
    c7 = Cbar**7
    Rc = 2 * np.sqrt(c7 / (c7 + 25**7))
    dtheta = np.deg2rad(30) * np.exp(-(((np.rad2deg(Hbar) - 275) / 25) ** 2))
    R_term = -np.sin(2 * dtheta) * Rc * C_term * H_term
    dE2 = L_term**2
    dE2 += C_term**2
    dE2 += H_term**2
    dE2 += R_term
    return np.sqrt(np.maximum(dE2, 0))


def delta_e00(lab1: np.ndarray, lab2: np.ndarray, threshold: float) -> np.ndarray:
    """Per-pixel CIEDE2000 of two N x 3 float32 Lab arrays: float32 arithmetic (about 3x faster than
    scikit-image's), with scikit-image's own value wherever the comparison with ``threshold`` could
    depend on rounding, so ``delta_e00(...) > threshold`` is exactly scikit-image's decision."""
    lab1 = lab1.astype(np.float32, copy=False)
    lab2 = lab2.astype(np.float32, copy=False)
    values, unsure = _delta_e00_float32(lab1, lab2)
    unsure |= np.abs(values - np.float32(threshold)) < np.float32(EXACT_BAND)
    if unsure.any():
        values[unsure] = delta_e00_reference(lab1[unsure].astype(np.float32), lab2[unsure].astype(np.float32))
    return values


SSIM_SIGMA = 1.5  # px; Gaussian window of the local SSIM (Wang et al. 2004), truncated at 3.5 sigma


def _gaussian_kernel(sigma: float, truncate: float = 3.5) -> np.ndarray:
    """scipy.ndimage's normalised Gaussian kernel (radius ``int(truncate * sigma + 0.5)``)."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    return phi / phi.sum()


def _gaussian_float32(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """scipy.ndimage.gaussian_filter of a float32 image as scikit-image runs it (mode 'reflect'): one
    pass per axis, rows first, each accumulated in float64 and stored as float32."""
    one = np.ones(1)
    out = cv2.sepFilter2D(image.astype(np.float64), cv2.CV_64F, one, kernel, borderType=cv2.BORDER_REFLECT)
    out = out.astype(np.float32).astype(np.float64)
    return cv2.sepFilter2D(out, cv2.CV_64F, kernel, one, borderType=cv2.BORDER_REFLECT).astype(np.float32)


def ssim_map(im1: np.ndarray, im2: np.ndarray, data_range: float) -> np.ndarray:
    """Local SSIM of two float32 images (Gaussian window sigma 1.5, population covariance):
    scikit-image's ``structural_similarity(..., full=True, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)`` map, computed with OpenCV's separable filter."""
    kernel = _gaussian_kernel(SSIM_SIGMA)
    im1 = im1.astype(np.float32, copy=False)
    im2 = im2.astype(np.float32, copy=False)
    ux = _gaussian_float32(im1, kernel)
    uy = _gaussian_float32(im2, kernel)
    uxx = _gaussian_float32(im1 * im1, kernel)
    uyy = _gaussian_float32(im2 * im2, kernel)
    uxy = _gaussian_float32(im1 * im2, kernel)
    vx = 1.0 * (uxx - ux * ux)
    vy = 1.0 * (uyy - uy * uy)
    vxy = 1.0 * (uxy - ux * uy)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    a1, a2, b1, b2 = 2 * ux * uy + c1, 2 * vxy + c2, ux**2 + uy**2 + c1, vx + vy + c2
    return (a1 * a2) / (b1 * b2)


def _changed(
    source_lab: np.ndarray, candidate_lab: np.ndarray, ssim: np.ndarray, outside: np.ndarray, params: SpillParams,
    values: bool = True,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Per-pixel ΔE00 (on ``outside`` only: the slow part) and the opened changed map. With
    ``values=False`` only the map is wanted: ΔE00 is left out where the SSIM alone decides."""
    if values:
        compared = outside
    else:
        compared = outside & ~(ssim < params.ssim_threshold)
    delta_e = np.zeros(outside.shape, np.float32)
    delta_e[compared] = delta_e00(source_lab[compared], candidate_lab[compared], params.delta_e_threshold)
    changed = ((delta_e > params.delta_e_threshold) | (ssim < params.ssim_threshold)) & outside
    if params.opening_px > 0:
        changed = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_OPEN, disc(params.opening_px)).astype(bool)
    return (delta_e if values else None), changed


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
    compared: np.ndarray | None = None,
) -> SpillMeasure:
    """Compare two same-size Lab images outside ``mask`` (bool, True = edit allowed); ``scale`` is
    recorded as the factor from the analysis size to these images' size. ``candidate_clipped``
    gives (when asked) a bool map of candidate pixels clipped to white: when the whole picture
    shifted, their change is the shift's (per-channel clipping is beyond any global colour model),
    not a local one. ``compared`` (bool, same size, optional) limits the comparison to its pixels
    (where a registered source covers the candidate).
    """
    h, w = mask.shape
    # Outside the mask grown by the margin: distance to the nearest mask pixel above the radius.
    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 5)
    outside = distance > params.margin * float(np.hypot(w, h))
    if compared is not None:
        outside &= compared
    if share(outside) < params.min_outside_fraction:
        raise CheckSkipped(
            f"the edit mask, grown by {params.margin:.0%} of the diagonal for seams, leaves only "
            f"{share(outside):.1%} of the image to compare"
        )
    if params.blur_sigma > 0:
        source_lab = cv2.GaussianBlur(source_lab, (0, 0), params.blur_sigma)
        candidate_lab = cv2.GaussianBlur(candidate_lab, (0, 0), params.blur_sigma)
    if min(h, w) >= 11:
        ssim = ssim_map(source_lab[..., 0], candidate_lab[..., 0], data_range=100.0)
    elif min(h, w) >= 7:
        from skimage.metrics import structural_similarity

        _, ssim = structural_similarity(
            source_lab[..., 0], candidate_lab[..., 0], data_range=100.0, full=True,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        )
    else:  # too small for an SSIM window: colour difference alone
        ssim = np.ones((h, w), np.float32)
    delta_e, changed = _changed(source_lab, candidate_lab, ssim, outside, params)
    n_changed = np.count_nonzero(changed)
    n_outside = np.count_nonzero(outside)
    fraction = n_changed / n_outside
    local_blobs: list[Blob] = []
    local_fraction = None
    if fraction >= GLOBAL_SHARE:
        # Most of the picture moved: take the overall shift out and look for what changed beyond it.
        shifted = fit_global_shift(source_lab, candidate_lab, outside, params)
        _, local = _changed(shifted, candidate_lab, ssim, outside, params, values=False)
        if candidate_clipped is not None:
            local &= ~candidate_clipped()
        local_fraction = np.count_nonzero(local) / n_outside
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
    """Bring the registered source, candidate and mask to the working size and measure the spill."""
    size, scale = fit_size(ctx.size, params.work_side)
    registration = ctx.registration
    mask = registration.mask
    if mask.shape != (size[1], size[0]):
        mask = resize_mask(mask, size)
        if not mask.any():  # a mask thinner than a working pixel: keep its pixels
            mask = cv2.resize(registration.mask.astype(np.uint8), size, interpolation=cv2.INTER_AREA) > 0
    compared = None
    if registration.valid is not None:
        compared = cv2.resize(registration.valid.astype(np.uint8), size, interpolation=cv2.INTER_AREA) > 0
        if not registration.valid.all():  # a working pixel must be wholly covered
            compared = cv2.erode(compared.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)

    def clipped() -> np.ndarray:
        small = pixels_at(ctx.candidate, size)
        level = round(CLIPPED * 255) if small.dtype == np.uint8 else CLIPPED
        hit = (channel_max(small) >= level).astype(np.uint8)
        # the blur against JPEG noise spreads a clipped area's edge by a couple of pixels
        return cv2.dilate(hit, np.ones((5, 5), np.uint8)).astype(bool)

    return measure_spill(lab_at(ctx.registered_source, size), lab_at(ctx.candidate, size), mask, params, scale, clipped,
                         compared)


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
        "compared_fraction": round(share(m.outside), 4),
        "blob_count": len(m.blobs),
    }
    if not ctx.registration.identity:
        evidence["registration"] = ctx.registration.evidence()
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
        local = m.local_fraction >= params.residual_threshold and bool(m.local_blobs)
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
