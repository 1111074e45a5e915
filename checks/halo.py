"""edge_halo: a bright or dark fringe runs along a subject's boundary.

A halo is a narrow band at a boundary that is brighter (a white ring left by a loose matte or a
too-tight inpaint mask) or darker (a dark outline from a bad matte or premultiplied colour) than
*both* sides of it. It is measured the way camera tests measure sharpening halos, on the L*
profile across an edge (the edge-profile overshoot of ISO 12233-style slanted-edge analysis),
but on both sides: at every boundary pixel L* is sampled along the boundary normal at offsets of
about -9..+9 px (at a 1024 px long side, scaled with resolution; averaged over three parallel
lines). The band is the centre of the profile (|offset| <= about 3 px), the plateaus are its two
ends (about 5..9 px either side, medians), and

    bright bump = max(band) - max(plateau_in, plateau_out)
    dark bump   = min(plateau_in, plateau_out) - min(band)

so a plain step edge, however strong, gives no bump. A boundary pixel is fringed when its bump
reaches the policy's limit, and only fringed stretches at least ``min_run_px`` long count, so
texture and specks do not. The score is the share of the boundary length that is fringed.

Boundaries come from, in order: the candidate's alpha channel (the cut-out is measured as it
would look over a mid-grey backdrop, so a rim of old background that the matte let through shows
up), the edit mask, or else the image's strongest long edges (Canny). With an aligned source the
same profiles are measured in the source at the same pixels (L* is computed only where the
profiles read it) and only the growth of the bump
counts, so natural overshoot (camera sharpening, rim light, dark outlines that were there before)
is not reported. Without a source the evidence must be stronger: a larger bump, and on image
edges the two plateaus must differ by ``min_step`` L* (a real subject/background boundary, not a
thin line on a flat background) and the fringe must run for ``edge_min_length`` image diagonals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np
from pydantic import Field, model_validator

from fixloop.checks.base import CheckParams, CheckSkipped, Priority, make_finding, register_check
from fixloop.checks.context import AnalysisImage, CheckContext
from fixloop.checks.geometry import disc
from fixloop.checks.images import as_float

GREY_BACKDROP = 0.5  # sRGB level a cut-out is composited over (L* about 53)
REFERENCE_SIDE = 1024.0  # px; the offsets in the policy are pixels at this long side
REMAP_ROWS = 32000  # cv2.remap maps must have fewer than SHRT_MAX rows


class HaloParams(CheckParams):
    priority: Priority
    band_px: float = Field(gt=0, description="px at 1024 px long side; half-width of the fringe band")
    plateau_near_px: float = Field(gt=0, description="px at 1024 px; where each plateau starts")
    plateau_far_px: float = Field(gt=0, description="px at 1024 px; where each plateau ends")
    min_scale: float = Field(gt=0, description="smallest factor the offsets are scaled by")
    max_scale: float = Field(gt=0, description="largest factor the offsets are scaled by")
    strength_threshold: float = Field(gt=0, description="L*; bump of a fringed point on an alpha/mask edge, no source")
    edge_strength_threshold: float = Field(gt=0, description="L*; bump of a fringed point on image edges, no source")
    growth_threshold: float = Field(gt=0, description="L*; growth of the bump over the source at a fringed point")
    min_run_px: float = Field(gt=0, description="px at 1024 px; shortest fringed stretch that counts")
    fraction_threshold: float = Field(gt=0, le=1, description="share of an alpha or mask boundary that is fringed")
    edge_fraction_threshold: float = Field(gt=0, le=1, description="share of the strongest edges, no source")
    edge_source_fraction_threshold: float = Field(gt=0, le=1, description="share of the strongest edges, with source")
    edge_min_length: float = Field(ge=0, description="fringed length on image edges, in image diagonals")
    min_step: float = Field(ge=0, description="L*; on image edges without a source the plateaus must differ by this")
    min_boundary_px: float = Field(gt=0, description="px at 1024 px; shortest total boundary worth measuring")
    canny_low: float = Field(gt=0, description="Canny lower threshold (gradient of 8-bit L*)")
    canny_high: float = Field(gt=0, description="Canny upper threshold (gradient of 8-bit L*)")
    min_edge_px: float = Field(gt=0, description="px at 1024 px; shortest connected edge used as a boundary")

    @model_validator(mode="after")
    def _ordered(self) -> "HaloParams":
        if not self.band_px < self.plateau_near_px < self.plateau_far_px:
            raise ValueError("need band_px < plateau_near_px < plateau_far_px")
        if self.min_scale > self.max_scale:
            raise ValueError("need min_scale <= max_scale")
        if self.canny_low > self.canny_high:
            raise ValueError("need canny_low <= canny_high")
        return self


@dataclass
class Boundary:
    """Boundary pixels of one image with unit normals (+ = outside the subject, or the brighter side)."""

    kind: str  # "alpha", "mask" or "edges"
    ys: np.ndarray
    xs: np.ndarray
    nx: np.ndarray
    ny: np.ndarray
    shift: float = 0.0  # px along the normal from the pixel centre to the boundary itself


@dataclass
class Profiles:
    """Per boundary pixel: the candidate's bright and dark bumps, its step, and the source's bumps."""

    bright: np.ndarray
    dark: np.ndarray
    step: np.ndarray
    source_bright: np.ndarray | None
    source_dark: np.ndarray | None


@dataclass
class Fringe:
    """The fringe of one polarity along a boundary."""

    fraction: float  # share of the boundary length that is fringed (in runs of at least min_run_px)
    length: float  # fringed length in image diagonals
    strength: float  # mean bump over the fringed points, L*
    growth: float | None  # mean growth of the bump over the source, L*; None without a source
    points: np.ndarray = field(repr=False)  # bool per boundary pixel


@dataclass
class HaloMeasure:
    """The bright and the dark fringe along the boundary the check chose."""

    boundary: str  # "alpha", "mask" or "edges"
    boundary_px: int  # boundary length, px at analysis size
    with_source: bool
    scale: float  # offsets were scaled by this
    bright: Fringe
    dark: Fringe
    ys: np.ndarray = field(repr=False)
    xs: np.ndarray = field(repr=False)


# ---- images as L* --------------------------------------------------------------------------


def lightness(rgb: np.ndarray) -> np.ndarray:
    """CIE L* (D65, 0..100) of a float sRGB image in [0, 1] (OpenCV's CIELAB, within 0.2 L* of exact)."""
    return np.ascontiguousarray(cv2.cvtColor(rgb.astype(np.float32, copy=False), cv2.COLOR_RGB2Lab)[..., 0])


def _over_grey(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The cut-out as it looks over a mid-grey backdrop."""
    a = alpha[..., None].astype(np.float32)
    return rgb * a + np.float32(GREY_BACKDROP) * (1.0 - a)


# ---- boundaries ----------------------------------------------------------------------------


def _inside_border(ys: np.ndarray, xs: np.ndarray, shape: tuple[int, int], margin: float) -> np.ndarray:
    h, w = shape
    m = int(np.ceil(margin))
    return (ys >= m) & (ys < h - m) & (xs >= m) & (xs < w - m)


def region_boundary(region: np.ndarray, kind: str, scale: float, margin: float) -> Boundary:
    """Inner boundary pixels of a bool region, normals pointing out of it."""
    m = region.astype(np.uint8)
    edge = m.astype(bool) & ~cv2.erode(m, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE).astype(bool)
    smooth = cv2.GaussianBlur(m.astype(np.float32), (0, 0), 1.5 * scale)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)
    ys, xs = np.nonzero(edge)
    keep = _inside_border(ys, xs, region.shape, margin)
    ys, xs = ys[keep], xs[keep]
    gxs, gys = gx[ys, xs], gy[ys, xs]
    norm = np.hypot(gxs, gys)
    ok = norm > 1e-3
    ys, xs, norm = ys[ok], xs[ok], norm[ok]
    # the smoothed region falls from inside to outside: the outward normal is -gradient
    return Boundary(kind, ys, xs, -gxs[ok] / norm, -gys[ok] / norm, shift=0.5)


def edge_boundary(lstar: np.ndarray, params: HaloParams, scale: float, margin: float) -> Boundary:
    """The image's strongest long edges (Canny), normals pointing to the brighter side."""
    grey = np.clip(lstar * 2.55, 0, 255).astype(np.uint8)
    blurred = cv2.GaussianBlur(grey, (0, 0), max(0.8, scale))
    edges = cv2.Canny(blurred, params.canny_low, params.canny_high, L2gradient=True)
    count, labels, stats, _ = cv2.connectedComponentsWithStats((edges > 0).astype(np.uint8), connectivity=8)
    long_enough = stats[:, cv2.CC_STAT_AREA] >= params.min_edge_px * scale
    long_enough[0] = False
    keep_px = long_enough[labels]
    ys, xs = np.nonzero(keep_px)
    keep = _inside_border(ys, xs, lstar.shape, margin)
    ys, xs = ys[keep], xs[keep]
    smooth = blurred.astype(np.float32)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3)[ys, xs]
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)[ys, xs]
    norm = np.hypot(gx, gy)
    ok = norm > 1e-3
    return Boundary("edges", ys[ok], xs[ok], gx[ok] / norm[ok], gy[ok] / norm[ok])


# ---- profiles ------------------------------------------------------------------------------


def _offsets(params: HaloParams, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sample offsets (px) and the masks of band, inner plateau and outer plateau."""
    far = params.plateau_far_px * scale
    steps = int(np.ceil(params.plateau_far_px))
    t = np.linspace(-far, far, 2 * steps + 1)
    band = np.abs(t) <= params.band_px * scale + 1e-6
    near = params.plateau_near_px * scale - 1e-6
    return t, band, t <= -near, t >= near


def sample_profiles(images: list[np.ndarray], b: Boundary, t: np.ndarray, scale: float) -> list[np.ndarray]:
    """L* of each image along the normal at offsets ``t``, averaged over three parallel lines.

    One (points, offsets) array per image; the sampling maps are built once for all images.
    """
    n = len(b.ys)
    out = [np.zeros((n, len(t)), np.float32) for _ in images]
    if n == 0:
        return out
    nx, ny = b.nx.astype(np.float32), b.ny.astype(np.float32)
    t32 = t.astype(np.float32)
    base_x = (b.xs + nx * b.shift).astype(np.float32)[:, None] + nx[:, None] * t32[None, :]
    base_y = (b.ys + ny * b.shift).astype(np.float32)[:, None] + ny[:, None] * t32[None, :]
    for side in (-1.0, 0.0, 1.0):
        u = np.float32(side * scale)
        map_x = base_x - (ny * u)[:, None] if side else base_x
        map_y = base_y + (nx * u)[:, None] if side else base_y
        for start in range(0, n, REMAP_ROWS):
            stop = min(n, start + REMAP_ROWS)
            for image, acc in zip(images, out):
                acc[start:stop] += cv2.remap(image, map_x[start:stop], map_y[start:stop], cv2.INTER_LINEAR,
                                             borderMode=cv2.BORDER_REPLICATE)
    return [acc / 3.0 for acc in out]


def bumps(profiles: np.ndarray, band: np.ndarray, inner: np.ndarray, outer: np.ndarray):
    """Bright bump, dark bump and step (L*) of each profile."""
    if len(profiles) == 0:
        z = np.zeros(0, np.float32)
        return z, z, z
    pa = np.median(profiles[:, inner], axis=1)
    pb = np.median(profiles[:, outer], axis=1)
    mid = profiles[:, band]
    bright = mid.max(axis=1) - np.maximum(pa, pb)
    dark = np.minimum(pa, pb) - mid.min(axis=1)
    return bright, dark, np.abs(pa - pb)


def _runs(points: np.ndarray, b: Boundary, shape: tuple[int, int], min_run: float) -> np.ndarray:
    """Keep only fringed points that lie on a connected fringed stretch of at least ``min_run`` px."""
    if not points.any():
        return points
    canvas = np.zeros(shape, np.uint8)
    canvas[b.ys[points], b.xs[points]] = 1
    bridged = cv2.dilate(canvas, np.ones((3, 3), np.uint8))
    count, labels = cv2.connectedComponents(bridged, connectivity=8)
    sizes = np.bincount(labels[b.ys[points], b.xs[points]], minlength=count)
    keep = points.copy()
    keep[points] = sizes[labels[b.ys[points], b.xs[points]]] >= min_run
    return keep


def offset_scale(size: tuple[int, int], params: HaloParams) -> float:
    """Factor the policy's pixel offsets are multiplied by at this analysis size."""
    return float(np.clip(max(size) / REFERENCE_SIDE, params.min_scale, params.max_scale))


def profile_bumps(
    candidate_lstar: np.ndarray,
    boundary: Boundary,
    params: HaloParams,
    scale: float,
    source_lstar: np.ndarray | None = None,
) -> Profiles:
    """Bumps of the candidate's profiles at every boundary pixel, and of the source's when given."""
    t, band, inner, outer = _offsets(params, scale)
    images = [candidate_lstar] if source_lstar is None else [candidate_lstar, source_lstar]
    profiles = sample_profiles(images, boundary, t, scale)
    bright, dark, step = bumps(profiles[0], band, inner, outer)
    if source_lstar is None:
        return Profiles(bright, dark, step, None, None)
    source_bright, source_dark, _ = bumps(profiles[1], band, inner, outer)
    return Profiles(bright, dark, step, source_bright, source_dark)


def measure_halo(
    candidate_lstar: np.ndarray,
    boundary: Boundary,
    params: HaloParams,
    scale: float,
    source_lstar: np.ndarray | None = None,
) -> HaloMeasure:
    """Fringe along ``boundary`` in the candidate (and its growth over the source when given)."""
    p = profile_bumps(candidate_lstar, boundary, params, scale, source_lstar)
    return decide(p, boundary, params, scale, candidate_lstar.shape)


def decide(p: Profiles, boundary: Boundary, params: HaloParams, scale: float, shape: tuple[int, int]) -> HaloMeasure:
    """Which boundary pixels are fringed (in long runs), and how much of the boundary they make."""
    with_source = p.source_bright is not None
    edges = boundary.kind == "edges"
    real_edge = np.ones(len(p.step), bool)
    if with_source:
        limit = params.growth_threshold
    elif edges:
        limit = params.edge_strength_threshold
        real_edge = p.step >= params.min_step
    else:
        limit = params.strength_threshold
    n = max(1, len(boundary.ys))
    diagonal = float(np.hypot(*shape))

    def fringe(bump: np.ndarray, source_bump: np.ndarray | None) -> Fringe:
        strength = bump if source_bump is None else bump - np.maximum(source_bump, 0.0)
        points = _runs((strength >= limit) & real_edge, boundary, shape, params.min_run_px * scale)
        count = int(points.sum())
        return Fringe(
            fraction=count / n,
            length=count / diagonal,
            strength=float(bump[points].mean()) if count else 0.0,
            growth=None if source_bump is None else (float(strength[points].mean()) if count else 0.0),
            points=points,
        )

    return HaloMeasure(
        boundary=boundary.kind,
        boundary_px=int(len(boundary.ys)),
        with_source=with_source,
        scale=scale,
        bright=fringe(p.bright, p.source_bright),
        dark=fringe(p.dark, p.source_dark),
        ys=boundary.ys,
        xs=boundary.xs,
    )


def fraction_limit(m: HaloMeasure, params: HaloParams) -> float:
    """The share of the boundary that makes a finding, for this boundary and these inputs."""
    if m.boundary != "edges":
        return params.fraction_threshold
    return params.edge_source_fraction_threshold if m.with_source else params.edge_fraction_threshold


def is_halo(f: Fringe, m: HaloMeasure, params: HaloParams) -> bool:
    """A finding: enough of the boundary fringed (and, on image edges, a long enough fringe)."""
    if f.fraction < fraction_limit(m, params):
        return False
    return m.boundary != "edges" or f.length >= params.edge_min_length


# ---- the check -----------------------------------------------------------------------------


def _boundary_for(ctx: CheckContext, params: HaloParams, scale: float,
                  lstar: np.ndarray | Callable[[], np.ndarray]) -> Boundary | None:
    """The boundary to measure: the alpha edge, else the mask edge, else the strongest image edges
    (found on the candidate's L*: ``lstar``, or a function giving it, asked for only then)."""
    margin = params.plateau_far_px * scale + 2 * scale + 1
    min_len = params.min_boundary_px * scale
    if ctx.candidate.alpha is not None:
        b = region_boundary(ctx.candidate.alpha >= 0.5, "alpha", scale, margin)
        if len(b.ys) >= min_len:
            return b
    if ctx.mask is not None:
        b = region_boundary(ctx.mask, "mask", scale, margin)
        if len(b.ys) >= min_len:
            return b
    b = edge_boundary(lstar() if callable(lstar) else lstar, params, scale, margin)
    return b if len(b.ys) >= min_len else None


def _lstar(image: AnalysisImage, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """L* of an image; a cut-out (real transparency) as it looks over mid-grey. With ``box`` (x0, y0,
    x1, y1) only the pixels inside it are converted (the colour conversion is per pixel, so they are
    the whole image's values) and the rest is left 0."""
    if box is None:
        if image.alpha is not None:
            return lightness(_over_grey(image.rgb, image.alpha))
        return np.ascontiguousarray(image.lab[..., 0])
    x0, y0, x1, y1 = box
    out = np.zeros(image.size[::-1], np.float32)
    rgb = as_float(image.pixels[y0:y1, x0:x1])
    if image.alpha is not None:
        rgb = _over_grey(rgb, image.alpha[y0:y1, x0:x1])
    out[y0:y1, x0:x1] = lightness(np.ascontiguousarray(rgb))
    return out


def sampled_box(boundary: Boundary, params: HaloParams, scale: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The pixels the profiles along ``boundary`` read: every sample (up to the far plateau end along
    the normal, one line either side, bilinear neighbours) lies inside this box (x0, y0, x1, y1)."""
    if len(boundary.ys) == 0:
        return (0, 0, 0, 0)
    reach = int(np.ceil(params.plateau_far_px * scale + scale + abs(boundary.shift))) + 2
    w, h = size
    return (max(0, int(boundary.xs.min()) - reach), max(0, int(boundary.ys.min()) - reach),
            min(w, int(boundary.xs.max()) + reach + 1), min(h, int(boundary.ys.max()) + reach + 1))


def measure_context(ctx: CheckContext, params: HaloParams) -> HaloMeasure:
    """Pick the boundary for this input and measure the fringe along it (raises CheckSkipped)."""
    scale = offset_scale(ctx.size, params)
    whole = lambda: ctx.shared("edge_halo:lstar", lambda: _lstar(ctx.candidate))  # noqa: E731
    boundary = _boundary_for(ctx, params, scale, whole)
    if boundary is None:
        raise CheckSkipped("no subject boundary long enough to measure (no alpha edge, mask edge or strong edge)")
    # an alpha or mask boundary reads L* only near itself: convert just those pixels
    box = None if boundary.kind == "edges" else sampled_box(boundary, params, scale, ctx.size)
    lstar = whole() if box is None else _lstar(ctx.candidate, box)
    source_lstar = _lstar(ctx.registered_source, box) if ctx.source is not None and ctx.aligned else None
    return measure_halo(lstar, boundary, params, scale, source_lstar)


WHERE = {"alpha": "cut-out edge", "mask": "edit-mask boundary", "edges": "strongest edges"}


@register_check("edge_halo", HaloParams)
def check_edge_halo(ctx: CheckContext, params: HaloParams):
    """Bright or dark fringe along subject boundaries (alpha edge, mask edge or strongest edges)."""
    m = measure_context(ctx, params)
    evidence = {
        "boundary": m.boundary,
        "boundary_px": m.boundary_px,
        "compared_with_source": m.with_source,
        "offset_scale": round(m.scale, 3),
    }
    for name, f in (("bright", m.bright), ("dark", m.dark)):
        evidence[f"{name}_fraction"] = round(f.fraction, 4)
        evidence[f"{name}_length"] = round(f.length, 3)
        evidence[f"{name}_strength"] = round(f.strength, 2)
        if f.growth is not None:
            evidence[f"{name}_growth"] = round(f.growth, 2)
    found = [(name, f) for name, f in (("bright", m.bright), ("dark", m.dark)) if is_halo(f, m, params)]
    if not found:
        return []
    polarity, f = max(found, key=lambda item: item[1].fraction)
    evidence["polarity"] = polarity
    evidence["fringe_fraction"] = round(f.fraction, 4)
    evidence["fringe_strength"] = round(f.strength, 2)
    if f.growth is not None:
        evidence["fringe_growth"] = round(f.growth, 2)

    ring = np.zeros(ctx.size[::-1], np.uint8)
    ring[m.ys[f.points], m.xs[f.points]] = 1
    radius = max(1, int(round(params.band_px * m.scale)))
    ring = cv2.dilate(ring, disc(radius)).astype(bool)
    region, full = ctx.mask_region(ring)
    side = "brighter" if polarity == "bright" else "darker"
    message = (f"A {polarity} fringe runs along {f.fraction:.0%} of the {WHERE[m.boundary]}, "
               f"{f.strength:.0f} L* {side} than both sides")
    message += "." if f.growth is None else f" ({f.growth:.0f} L* more than in the source)."
    return [
        make_finding(
            "edge_halo",
            params,
            score=f.fraction,
            threshold=fraction_limit(m, params),
            unit="share of boundary length",
            message=message,
            region=region,
            evidence=evidence,
            mask=full,
        )
    ]
