"""color_temperature_drift: the picture turned warmer, cooler, greener or more magenta than its source.

Method: on the pixels the edit was not allowed to change, with the source registered to the
candidate (:mod:`fixloop.checks.registration`: a mirrored, turned or re-framed result is compared
point for point, and the border the source does not cover is left out), fit the per-channel gains that map the
source to the candidate in linear light (least squares, clipped pixels left out: a diagonal
von Kries model of a white-balance change). Those gains, applied to the source's white (D65),
give the candidate's white point, which is expressed the way photographers set white balance:
a correlated colour temperature shift in **mired** (10^6 / K; + warmer, - cooler; about 10 mired
is a just visible shift, an eighth-strength CTO/CTB gel is about 20) and a **Duv** tint (distance
from the Planckian locus in CIE 1960 uv; + green, - magenta). CCT is the nearest point of the
Planckian locus (Krystek's rational approximation of it). A brightness change alone moves all three gains together
and is not counted here (exposure_drift reports it).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import Field

from fixloop.checks.base import CheckParams, Priority, make_finding, register_check
from fixloop.checks.context import AnalysisImage, CheckContext
from fixloop.checks.geometry import channel_max, share, shrink

# Linear sRGB -> CIE XYZ (D65)
RGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
XYZ_TO_RGB = np.linalg.inv(RGB_TO_XYZ)
FIT_SIDE = 512  # the gains are fitted on a copy of this long side: plenty of pixels, fast
CLIP = 0.98  # sRGB level above which a channel may be clipped and says nothing about gain


class ColorParams(CheckParams):
    priority: Priority
    mired_threshold: float = Field(gt=0, description="mired")
    tint_threshold: float = Field(gt=0, description="Duv")


@dataclass(frozen=True)
class WhitePoint:
    cct: float  # kelvin
    duv: float  # + above the Planckian locus (green), - below (magenta)

    @property
    def mired(self) -> float:
        return 1e6 / self.cct


@dataclass(frozen=True)
class WhiteBalanceShift:
    gains: tuple[float, float, float]  # R, G, B, normalised to unit luminance gain
    before: WhitePoint
    after: WhitePoint

    @property
    def mired(self) -> float:
        """+ warmer, - cooler"""
        return self.after.mired - self.before.mired

    @property
    def tint(self) -> float:
        """+ greener, - more magenta (Duv)"""
        return self.after.duv - self.before.duv


def planckian_uv(cct: float) -> tuple[float, float]:
    """CIE 1960 (u, v) of a black body at ``cct`` kelvin (Krystek 1985, 1000-15000 K)."""
    t = cct
    u = (0.860117757 + 1.54118254e-4 * t + 1.28641212e-7 * t * t) / (1 + 8.42420235e-4 * t + 7.08145163e-7 * t * t)
    v = (0.317398726 + 4.22806245e-5 * t + 4.20481691e-8 * t * t) / (1 - 2.89741816e-5 * t + 1.61456053e-7 * t * t)
    return u, v


# The Planckian locus sampled every 0.25 mired from 1000 K to 15000 K, for the nearest-point search.
_LOCUS_MIRED = np.arange(1e6 / 15000, 1e6 / 1000, 0.25)
_LOCUS_UV = np.stack(planckian_uv(1e6 / _LOCUS_MIRED), axis=1)


def white_point(linear_rgb_white: np.ndarray) -> WhitePoint:
    """CCT and Duv of a linear-sRGB colour taken as the white: the nearest point of the Planckian
    locus in CIE 1960 uv (the definition of CCT), found on a 0.25-mired grid."""
    X, Y, Z = RGB_TO_XYZ @ np.asarray(linear_rgb_white, dtype=np.float64)
    denom = X + 15 * Y + 3 * Z
    u, v = 4 * X / denom, 6 * Y / denom
    distances = np.hypot(_LOCUS_UV[:, 0] - u, _LOCUS_UV[:, 1] - v)
    nearest = int(np.argmin(distances))
    pu, pv = _LOCUS_UV[nearest]
    duv = float(distances[nearest] * np.sign(v - pv))
    return WhitePoint(cct=float(1e6 / _LOCUS_MIRED[nearest]), duv=duv)


def white_balance_gains(mired_shift: float, tint_shift: float = 0.0) -> np.ndarray:
    """Linear-RGB gains (unit luminance) that move a D65 white ``mired_shift`` warmer/cooler and
    ``tint_shift`` Duv greener/more magenta: the inverse of what this check measures."""
    reference = white_point(np.ones(3))
    cct = 1e6 / (reference.mired + mired_shift)
    pu, pv = planckian_uv(cct)
    # Step off the locus along its normal (pointing to +v, green) by the reference's Duv plus the tint.
    tu, tv = np.subtract(planckian_uv(cct + 1.0), planckian_uv(cct - 1.0))
    nu, nv = -tv, tu
    if nv < 0:
        nu, nv = -nu, -nv
    length = float(np.hypot(nu, nv))
    offset = reference.duv + tint_shift
    u, v = pu + offset * nu / length, pv + offset * nv / length
    x, y = 3 * u / (2 * u - 8 * v + 4), 2 * v / (2 * u - 8 * v + 4)
    xyz = np.array([x / y, 1.0, (1 - x - y) / y])
    rgb = XYZ_TO_RGB @ xyz
    return (rgb / (RGB_TO_XYZ[1] @ rgb)).astype(np.float32)


def fit_gains(before: np.ndarray, after: np.ndarray, region: np.ndarray, before_srgb: np.ndarray,
              after_srgb: np.ndarray) -> np.ndarray:
    """Per-channel least-squares gains g with after ~= g * before, on unclipped pixels of ``region``."""
    usable = region & (channel_max(before_srgb) < CLIP) & (channel_max(after_srgb) < CLIP)
    if np.count_nonzero(usable) < 100:
        usable = region
    b = before[usable].astype(np.float64)
    a = after[usable].astype(np.float64)
    return (a * b).sum(axis=0) / np.maximum((b * b).sum(axis=0), 1e-12)


def _small(array: np.ndarray) -> np.ndarray:
    """A float32 view at most FIT_SIDE px on the long side."""
    return shrink(array.astype(np.float32, copy=False), FIT_SIDE)[0]


def small_views(image: AnalysisImage) -> tuple[np.ndarray, np.ndarray]:
    """The image's linear-light and sRGB float views at most FIT_SIDE px on the long side (shared)."""
    return image.shared(f"color:small@{FIT_SIDE}", lambda: (_small(image.linear), _small(image.rgb)))


def small_lab(image: AnalysisImage) -> np.ndarray:
    """CIELAB of the small sRGB view (shared)."""
    return image.shared(f"color:small_lab@{FIT_SIDE}", lambda: cv2.cvtColor(small_views(image)[1], cv2.COLOR_RGB2Lab))


def _small_region(ctx: CheckContext) -> np.ndarray:
    return ctx.shared(f"color:small_region@{FIT_SIDE}",
                      lambda: _small(ctx.registered_unedited_region().astype(np.float32)) > 0.5)


def measure_white_balance(ctx: CheckContext) -> WhiteBalanceShift:
    """White-balance shift from the (registered) source to the candidate on the unedited pixels."""
    region = _small_region(ctx)
    source = ctx.registered_source
    (source_linear, source_rgb), (candidate_linear, candidate_rgb) = small_views(source), small_views(ctx.candidate)
    gains = fit_gains(source_linear, candidate_linear, region, source_rgb, candidate_rgb)
    gains = gains / float(RGB_TO_XYZ[1] @ gains)
    return WhiteBalanceShift(
        gains=tuple(round(float(g), 4) for g in gains),
        before=white_point(np.ones(3)),
        after=white_point(gains),
    )


@register_check("color_temperature_drift", ColorParams, requires=("source",))
def check_color_temperature_drift(ctx: CheckContext, params: ColorParams):
    """White-balance shift against the source: warm/cool in mired, green/magenta in Duv."""
    shift = measure_white_balance(ctx)
    region = ctx.registered_unedited_region()
    small_region = _small_region(ctx)
    lab_before = small_lab(ctx.registered_source)[small_region].mean(axis=0)
    lab_after = small_lab(ctx.candidate)[small_region].mean(axis=0)
    lab_shift = lab_after - lab_before
    evidence = {
        "mired_shift": round(shift.mired, 2),
        "tint_shift_duv": round(shift.tint, 5),
        "cct_before_k": round(shift.before.cct),
        "cct_after_k": round(shift.after.cct),
        "channel_gains": list(shift.gains),
        "mean_delta_a": round(float(lab_shift[1]), 3),
        "mean_delta_b": round(float(lab_shift[2]), 3),
        "compared_fraction": round(share(region), 4),
    }
    if not ctx.registration.identity:
        evidence["registration"] = ctx.registration.evidence()
    warm_excess = abs(shift.mired) / params.mired_threshold
    tint_excess = abs(shift.tint) / params.tint_threshold
    if max(warm_excess, tint_excess) < 1.0:
        return []
    if warm_excess >= tint_excess:
        way = "warmer" if shift.mired > 0 else "cooler"
        message = (f"The image turned {way}: its white balance moved {abs(shift.mired):.0f} mired "
                   f"(about {shift.before.cct:.0f} K -> {shift.after.cct:.0f} K).")
        score, threshold, unit = shift.mired, params.mired_threshold, "mired"
    else:
        way = "green" if shift.tint > 0 else "magenta"
        message = f"The image took a {way} tint: its white point moved {abs(shift.tint):.4f} Duv off the source's."
        score, threshold, unit = shift.tint, params.tint_threshold, "Duv"
    return [make_finding("color_temperature_drift", params, score=score, threshold=threshold, unit=unit,
                         message=message, evidence=evidence)]
