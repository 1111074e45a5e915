"""exposure_drift: the picture got darker or brighter than its source.

Measured in linear light on the pixels the edit was not allowed to change (outside the edit mask,
or the whole image without one), against the source registered to the candidate
(:mod:`fixloop.checks.registration`; the border a moved source does not cover is left out): the
exposure change is ``log2(mean Y_candidate / mean Y_source)`` in EV, the way a photographer counts
stops, over the pixels clipped or crushed in neither image (a pixel held at white cannot brighten). Highlights newly clipped to white and shadows newly crushed to black are counted
separately, since a curve change can clip without moving the mean much. With earlier passes (``--history``) the same measure is taken for every pass, and a steady
drift across passes is reported even before it adds up to the limit: repeated low-denoise passes
are the usual cause, and the fix is to stop looping and correct once.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import Field

from fixloop.checks.base import CheckParams, CheckSkipped, Priority, make_finding, register_check
from fixloop.checks.context import AnalysisImage, CheckContext
from fixloop.checks.geometry import share

CLIPPED_LEVEL = 0.99  # sRGB value at or above which a pixel counts as clipped white (all channels)
CRUSHED_LEVEL = 0.02  # sRGB value at or below which a pixel counts as crushed black (all channels)


class ExposureParams(CheckParams):
    priority: Priority
    ev_threshold: float = Field(gt=0, description="EV")
    clipped_growth: float = Field(gt=0, le=1, description="share of pixels")
    crushed_growth: float = Field(gt=0, le=1, description="share of pixels")
    trend_ev_per_pass: float = Field(gt=0, description="EV per pass")
    trend_min_passes: int = Field(ge=2)


@dataclass(frozen=True)
class ExposureChange:
    ev: float  # + brighter, - darker
    clipped_growth: float  # share of pixels newly clipped
    crushed_growth: float  # share of pixels newly crushed
    clipped_before: float
    clipped_after: float
    crushed_before: float
    crushed_after: float


# The same levels for 8-bit pixels: v / 255 (as float32) >= 0.99 from 253 up, <= 0.02 up to 5.
CLIPPED_LEVEL_8, CRUSHED_LEVEL_8 = 253, 5


def clipped_crushed(image: AnalysisImage) -> tuple[np.ndarray, np.ndarray]:
    """Bool maps of the pixels clipped to white and crushed to black (all three channels); shared."""

    def compute() -> tuple[np.ndarray, np.ndarray]:
        if image.pixels.dtype == np.uint8:
            p = image.pixels
            low = cv2.min(cv2.min(p[..., 0], p[..., 1]), p[..., 2])
            high = cv2.max(cv2.max(p[..., 0], p[..., 1]), p[..., 2])
            return low >= CLIPPED_LEVEL_8, high <= CRUSHED_LEVEL_8
        r, g, b = image.rgb[..., 0], image.rgb[..., 1], image.rgb[..., 2]
        return (np.minimum(np.minimum(r, g), b) >= CLIPPED_LEVEL,
                np.maximum(np.maximum(r, g), b) <= CRUSHED_LEVEL)

    return image.shared("exposure:clipped_crushed", compute)


def _clipped(image: AnalysisImage, region: np.ndarray) -> tuple[float, float]:
    """Shares of ``region`` clipped to white and crushed to black (all three channels)."""
    clipped, crushed = clipped_crushed(image)
    count = max(int(np.count_nonzero(region)), 1)
    if region.all():
        return float(np.count_nonzero(clipped)) / count, float(np.count_nonzero(crushed)) / count
    return float(np.count_nonzero(clipped & region)) / count, float(np.count_nonzero(crushed & region)) / count


MIN_UNSATURATED = 0.05  # share of the region that must be neither clipped nor crushed in either image


def measure_exposure(before: AnalysisImage, after: AnalysisImage, region: np.ndarray) -> ExposureChange:
    """Exposure change from ``before`` to ``after`` on the pixels in ``region``.

    The EV is read on the pixels that are neither clipped nor crushed in either image: a pixel held
    at white (or black) cannot follow the change, and a photo with large white areas otherwise
    reads a +0.4 EV brightening as +0.16. Where almost every pixel is saturated, on all of them."""
    clipped_b, crushed_b = clipped_crushed(before)
    clipped_a, crushed_a = clipped_crushed(after)
    unsaturated = region & ~(clipped_b | crushed_b | clipped_a | crushed_a)
    measured = unsaturated if np.count_nonzero(unsaturated) >= MIN_UNSATURATED * np.count_nonzero(region) else region
    mean_before = _masked_mean(before.luminance, measured)
    mean_after = _masked_mean(after.luminance, measured)
    ev = float(np.log2(max(mean_after, 1e-5) / max(mean_before, 1e-5)))
    clipped_before, crushed_before = _clipped(before, region)
    clipped_after, crushed_after = _clipped(after, region)
    return ExposureChange(
        ev=ev,
        clipped_growth=clipped_after - clipped_before,
        crushed_growth=crushed_after - crushed_before,
        clipped_before=clipped_before,
        clipped_after=clipped_after,
        crushed_before=crushed_before,
        crushed_after=crushed_after,
    )


def _masked_mean(values: np.ndarray, region: np.ndarray) -> float:
    return float(values.mean()) if region.all() else float(values[region].mean())


def pass_trend(evs: list[float]) -> float:
    """Least-squares slope of the exposure (EV) over pass number."""
    if len(evs) < 2:
        return 0.0
    x = np.arange(len(evs), dtype=np.float64)
    return float(np.polyfit(x, np.asarray(evs, dtype=np.float64), 1)[0])


@register_check("exposure_drift", ExposureParams)
def check_exposure_drift(ctx: CheckContext, params: ExposureParams):
    """Exposure change against the source in EV, clipped highlights, crushed shadows, pass trend."""
    if ctx.source is not None and ctx.aligned:
        passes = [*ctx.history, ctx.candidate]
        baseline_name = "the source"
        # earlier passes against the source as given; the candidate against the registered source
        changes = [measure_exposure(ctx.source, image, ctx.unedited_region()) for image in ctx.history]
        region = ctx.registered_unedited_region()
        changes.append(measure_exposure(ctx.registered_source, ctx.candidate, region))
    elif ctx.history:
        baseline, passes = ctx.history[0], [*ctx.history[1:], ctx.candidate]
        baseline_name = "the first pass"
        region = ctx.unedited_region()
        changes = [measure_exposure(baseline, image, region) for image in passes]
    else:
        raise CheckSkipped("needs the image before the edit (--source) or earlier passes (--history)")
    change = changes[-1]
    evs = [0.0] + [c.ev for c in changes]
    slope = pass_trend(evs)
    steps = np.diff(evs)
    steady = len(passes) >= params.trend_min_passes and (np.all(steps < 0) or np.all(steps > 0))
    evidence = {
        "ev_change": round(change.ev, 4),
        "clipped_before": round(change.clipped_before, 5),
        "clipped_after": round(change.clipped_after, 5),
        "crushed_before": round(change.crushed_before, 5),
        "crushed_after": round(change.crushed_after, 5),
        "compared_fraction": round(share(region), 4),
        "baseline": baseline_name,
    }
    if ctx.source is not None and ctx.aligned and not ctx.registration.identity:
        evidence["registration"] = ctx.registration.evidence()
    if ctx.history:
        evidence["ev_per_pass"] = [round(v, 4) for v in evs]
        evidence["ev_slope_per_pass"] = round(slope, 4)

    direction = "darker" if change.ev < 0 else "brighter"
    # Each reason: (how far past its limit, score, threshold, unit, message)
    reasons = []
    if abs(change.ev) >= params.ev_threshold:
        reasons.append((abs(change.ev) / params.ev_threshold, change.ev, params.ev_threshold, "EV",
                        f"The image is {abs(change.ev):.2f} EV {direction} than {baseline_name}."))
    if change.clipped_growth >= params.clipped_growth:
        reasons.append((change.clipped_growth / params.clipped_growth, change.clipped_growth,
                        params.clipped_growth, "share of pixels",
                        f"{change.clipped_growth:.1%} of the image is newly clipped to white."))
    if change.crushed_growth >= params.crushed_growth:
        reasons.append((change.crushed_growth / params.crushed_growth, change.crushed_growth,
                        params.crushed_growth, "share of pixels",
                        f"{change.crushed_growth:.1%} of the image is newly crushed to black."))
    if steady and abs(slope) >= params.trend_ev_per_pass:
        reasons.append((abs(slope) / params.trend_ev_per_pass, slope, params.trend_ev_per_pass, "EV per pass",
                        f"Exposure drifts {abs(slope):.2f} EV {direction} with every pass over "
                        f"{len(passes)} passes: stop looping and correct once."))
    if not reasons:
        return []
    _, score, threshold, unit, message = max(reasons, key=lambda r: r[0])
    evidence["reasons"] = [r[4] for r in reasons]
    return [make_finding("exposure_drift", params, score=score, threshold=threshold, unit=unit,
                         message=message, evidence=evidence)]
