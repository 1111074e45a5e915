"""perspective_broken: the horizon tilts, the verticals lean or the whole picture turned against the source.

Measured from the directions of straight lines. Line segments are found in both images with the
LSD line segment detector (von Gioi et al. 2012, "LSD: a Line Segment Detector", IPOL) on the grey
image at ``analysis_side`` px; segments shorter than ``min_segment`` of the long side are dropped.

Whole-image rotation: each image becomes a length-weighted histogram of line directions (0-180°,
0.1° bins, smoothed); the shift within ``max_rotation`` that maximises the circular
cross-correlation of the two histograms is the rotation, refined to a fraction of a degree with a
parabola through the peak.

Horizon and verticals: the near-horizontal lines (horizon, table and roof edges) and the
near-vertical ones (walls, door frames, poles) are compared on their own, in the Hough plane of
direction and distance from the image centre: a rotation about the centre shifts a line's
direction and keeps its distance, a zoom scales the distance, a shift of the frame moves all the
lines of a band by about the same distance. The 2-D cross-correlation of the two (direction,
distance) histograms, over a few zooms, pairs each line with the same line in the other image
rather than with any line of a similar direction, so a band whose lines merely change (an edit, a
blur) does not look tilted. A band whose best match stays poor (``band_min_agreement``) is left
out. A horizon that tilts while the verticals stand, or verticals that lean while the horizon
stays, is told apart from a picture that turned as a whole; a whole-image rotation must be borne
out by at least one band, or by a close match of all the lines (``confirm_agreement``).

When the registration fitted a move that matches closely (an affine map: rotation, shear, zoom, shift;
:meth:`Registration.tilts`), a tilt is reported only if that map also turns the horizon or the
verticals by at least half the threshold: a crop or zoom changes which lines are seen, and their
directions alone can then read as a tilt that is not there.

A mirrored result is compared with the source mirrored the same way (the registration of
:mod:`fixloop.checks.registration` says whether it was flipped): a flip turns a line at 10° into one
at 170°, which is the mirrored check's finding, not a rotation.

Straight lines are what this check reads, so an image with too few of them (a close portrait, a
plain backdrop) is reported as skipped, not passed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import Field

from fixloop.checks.analyses import content_of
from fixloop.checks.base import CheckParams, CheckSkipped, Priority, make_finding, register_check
from fixloop.checks.context import AnalysisImage, CheckContext
from fixloop.checks.geometry import shrink

BIN_DEG = 0.1  # direction histogram bin (whole-image rotation)
SMOOTH_DEG = 0.5  # Gaussian smoothing of direction histograms (LSD directions scatter by a few tenths)
BANDS = {"horizon": 0.0, "verticals": 90.0}  # line direction (° counter-clockwise from horizontal)
# Hough-plane histograms of a band: direction bins, distance bins (long sides), their smoothing,
# the ranges covered, the zooms tried and the largest shift of the frame (long sides).
HOUGH_BIN_DEG = 0.25
HOUGH_BIN_DIST = 0.01
HOUGH_SMOOTH_DIST = 0.015
HOUGH_HALF_RANGE_DEG = 40.0
HOUGH_HALF_RANGE_DIST = 0.75
ZOOMS = (0.95, 1.0, 1.05, 1.1)
MAX_FRAME_SHIFT = 0.05
WINDOW_TAPER_DEG = 5.0  # a band's weight fades to zero over this many degrees beyond its half width


class PerspectiveParams(CheckParams):
    priority: Priority
    analysis_side: int = Field(ge=128, le=2048, description="px; long side at which lines are found")
    min_segment: float = Field(gt=0, lt=1, description="share of the long side; shorter segments are ignored")
    min_lines: int = Field(ge=1, description="segments each image needs to be measured")
    min_total_length: float = Field(gt=0, description="long sides; summed segment length each image needs")
    max_rotation: float = Field(gt=0, le=30, description="°; largest rotation searched for")
    min_agreement: float = Field(gt=0, le=1, description="normalised histogram correlation at the best rotation")
    confirm_agreement: float = Field(gt=0, le=1, description="the same, for a rotation no band bears out")
    band_half_width: float = Field(gt=0, le=30, description="°; lines this close to horizontal/vertical form a band")
    band_min_lines: int = Field(ge=1, description="segments a band needs in each image")
    band_min_length: float = Field(gt=0, description="long sides; summed segment length a band needs")
    band_reach: float = Field(gt=0, le=30, description="°; a band's tilt is searched this far beyond 0 and the rotation")
    band_min_agreement: float = Field(gt=0, le=1, description="normalised Hough-plane correlation a band is judged on")
    band_corroborate_agreement: float = Field(gt=0, le=1, description="the same, for a band to bear out a rotation")
    threshold: float = Field(gt=0, description="°; tilt change reported")


@dataclass(frozen=True)
class Lines:
    """The straight segments of one image.

    ``angles``: direction, ° counter-clockwise from horizontal, in [0, 180); ``lengths``, and the
    midpoints ``x``, ``y`` (x right, y up, from the image centre), all in long sides of the image.
    """

    angles: np.ndarray
    lengths: np.ndarray
    x: np.ndarray
    y: np.ndarray
    half_width: float = 0.5  # the frame's half extents, long sides
    half_height: float = 0.5

    @property
    def count(self) -> int:
        return int(self.angles.size)

    @property
    def total_length(self) -> float:
        return float(self.lengths.sum())

    def band(self, centre: float, half_width: float) -> "Lines":
        return self._subset(np.abs(_offset(self.angles, centre)) <= half_width)

    def inside(self, zoom: float, frame: "Lines") -> "Lines":
        """The segments whose midpoints, zoomed by ``zoom`` about the centre, fall inside ``frame``'s frame."""
        return self._subset((np.abs(self.x * zoom) <= frame.half_width) & (np.abs(self.y * zoom) <= frame.half_height))

    def _subset(self, keep: np.ndarray) -> "Lines":
        return Lines(self.angles[keep], self.lengths[keep], self.x[keep], self.y[keep],
                     self.half_width, self.half_height)


@dataclass(frozen=True)
class Shift:
    degrees: float  # candidate minus source, + = counter-clockwise
    agreement: float  # normalised correlation of the two histograms at that shift


@dataclass(frozen=True)
class TiltChange:
    rotation: Shift  # all lines
    bands: dict[str, Shift | None]  # "horizon" / "verticals"; None where a band has too few lines
    candidate_lines: Lines
    source_lines: Lines


def _offset(angles: np.ndarray, centre: float) -> np.ndarray:
    """Signed angle from ``centre`` (°), in [-90, 90)."""
    return (angles - centre + 90.0) % 180.0 - 90.0


_LSD = threading.local()  # an OpenCV detector keeps its working images on itself: one per thread


def _detector():
    if not hasattr(_LSD, "detector"):
        _LSD.detector = cv2.createLineSegmentDetector(cv2.LSD_REFINE_NONE)
    return _LSD.detector


def find_lines(gray: np.ndarray, side: int, min_segment: float) -> Lines:
    """Straight segments of a grey [0, 1] image, found at ``side`` px on the long side."""
    gray, _ = shrink(gray, side)
    h, w = gray.shape
    long_side = float(max(h, w))
    found = _detector().detect(np.clip(gray * 255.0 + 0.5, 0, 255).astype(np.uint8))[0]
    if found is None:
        empty = np.zeros(0)
        return Lines(empty, empty, empty, empty)
    x0, y0, x1, y1 = found[:, 0, :].astype(np.float64).T
    length = np.hypot(x1 - x0, y1 - y0)
    angle = np.degrees(np.arctan2(-(y1 - y0), x1 - x0)) % 180.0  # image y points down: flip it
    keep = length >= min_segment * long_side
    mid_x = ((x0 + x1) / 2 - w / 2) / long_side
    mid_y = (h / 2 - (y0 + y1) / 2) / long_side
    return Lines(angle[keep], length[keep] / long_side, mid_x[keep], mid_y[keep],
                 w / 2 / long_side, h / 2 / long_side)


def image_lines(image: AnalysisImage, side: int, min_segment: float) -> Lines:
    """:func:`find_lines` of an analysis image, computed once per image and setting; a candidate that
    shows its source's content unchanged (re-lit, re-coloured or re-encoded, same frame:
    :mod:`fixloop.checks.content`) has the source's lines."""
    image = content_of(image)
    return image.shared(f"lines:{side}:{min_segment}", lambda: find_lines(image.gray, side, min_segment))


# ---- whole-image rotation: 1-D direction histograms ------------------------------------------


def _direction_histogram(lines: Lines) -> np.ndarray:
    bins = round(180.0 / BIN_DEG)
    index = np.round(lines.angles / BIN_DEG).astype(int) % bins
    hist = np.bincount(index, weights=lines.lengths, minlength=bins)
    distance = np.minimum(np.arange(bins), bins - np.arange(bins)) * BIN_DEG
    kernel = np.exp(-0.5 * (distance / SMOOTH_DEG) ** 2)
    return np.real(np.fft.ifft(np.fft.fft(hist) * np.fft.fft(kernel)))


def _parabola(y0: float, y1: float, y2: float) -> float:
    """Offset of a peak at the middle of three samples (in samples, within ±0.5)."""
    curvature = y0 - 2 * y1 + y2
    return float(np.clip(0.5 * (y0 - y2) / curvature, -0.5, 0.5)) if curvature < 0 else 0.0


def measure_rotation(candidate: Lines, source: Lines, max_rotation: float) -> Shift:
    """Rotation (°, + counter-clockwise) that best maps the source's line directions on the candidate's."""
    cand, src = _direction_histogram(candidate), _direction_histogram(source)
    bins = cand.size
    corr = np.real(np.fft.ifft(np.fft.fft(cand) * np.conj(np.fft.fft(src))))  # corr[s] = sum cand[k] src[k-s]
    reach = int(round(max_rotation / BIN_DEG))
    shifts = np.arange(-reach, reach + 1)
    scores = corr[shifts % bins]
    best = int(np.argmax(scores))
    offset = _parabola(*scores[best - 1 : best + 2]) if 0 < best < shifts.size - 1 else 0.0
    norm = float(np.sqrt(np.sum(cand**2) * np.sum(src**2)))
    return Shift(degrees=float((shifts[best] + offset) * BIN_DEG),
                 agreement=float(scores[best] / norm) if norm > 0 else 0.0)


# ---- horizon and verticals: 2-D Hough-plane histograms ---------------------------------------


def _hough_histogram(lines: Lines, centre: float, half_width: float, zoom: float = 1.0) -> np.ndarray:
    """Length-weighted (direction offset from ``centre``, distance from the image centre) histogram."""
    offset = _offset(lines.angles, centre)
    theta = np.radians(centre + offset)
    distance = (-np.sin(theta) * lines.x + np.cos(theta) * lines.y) * zoom
    weight = lines.lengths * np.clip((half_width + WINDOW_TAPER_DEG - np.abs(offset)) / WINDOW_TAPER_DEG, 0, 1)
    shape = (round(2 * HOUGH_HALF_RANGE_DEG / HOUGH_BIN_DEG), round(2 * HOUGH_HALF_RANGE_DIST / HOUGH_BIN_DIST))
    hist, _, _ = np.histogram2d(offset, distance, bins=shape, weights=weight,
                                range=((-HOUGH_HALF_RANGE_DEG, HOUGH_HALF_RANGE_DEG),
                                       (-HOUGH_HALF_RANGE_DIST, HOUGH_HALF_RANGE_DIST)))
    return cv2.GaussianBlur(hist.astype(np.float32), (0, 0),
                            sigmaX=HOUGH_SMOOTH_DIST / HOUGH_BIN_DIST, sigmaY=SMOOTH_DEG / HOUGH_BIN_DEG)


def _fast_length(n: int) -> int:
    """The smallest even length >= n whose only prime factors are 2, 3 and 5 (a fast FFT size)."""
    n = max(2, n + n % 2)
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 2


def measure_band(candidate: Lines, source: Lines, centre: float, half_width: float,
                 low: float, high: float) -> Shift:
    """Tilt (°) of the lines near direction ``centre``, searched in [``low``, ``high``].

    The best 2-D cross-correlation of the two Hough-plane histograms over direction shifts in
    [low, high], frame shifts up to ``MAX_FRAME_SHIFT`` and the zooms in ``ZOOMS``.
    """
    rows = round(2 * HOUGH_HALF_RANGE_DEG / HOUGH_BIN_DEG)
    cols = round(2 * HOUGH_HALF_RANGE_DIST / HOUGH_BIN_DIST)
    turns = np.arange(int(np.floor(low / HOUGH_BIN_DEG)), int(np.ceil(high / HOUGH_BIN_DEG)) + 1)
    moves = np.arange(-round(MAX_FRAME_SHIFT / HOUGH_BIN_DIST), round(MAX_FRAME_SHIFT / HOUGH_BIN_DIST) + 1)
    # Zero padding by the largest shift searched keeps the circular correlation free of wrap-around
    # at every shift that is read (the linear correlation), at a fast FFT size.
    size = (_fast_length(rows + int(np.abs(turns).max())), _fast_length(cols + int(np.abs(moves).max())))
    best = Shift(0.0, 0.0)
    for zoom in ZOOMS:
        # Only the lines both frames can show: a zoom in crops the source's outer lines away, a zoom
        # out the candidate's.
        cand = _hough_histogram(candidate.inside(1.0 / zoom, source), centre, half_width)
        src = _hough_histogram(source.inside(zoom, candidate), centre, half_width, zoom)
        norm = np.sqrt(float(np.sum(cand.astype(np.float64) ** 2)) * float(np.sum(src.astype(np.float64) ** 2)))
        if norm <= 0:
            continue
        corr = np.fft.irfft2(np.fft.rfft2(cand, s=size) * np.conj(np.fft.rfft2(src, s=size)), s=size)
        window = corr[np.ix_(turns % size[0], moves % size[1])] / norm
        i, j = np.unravel_index(int(np.argmax(window)), window.shape)
        if window[i, j] <= best.agreement:
            continue
        offset = _parabola(*window[i - 1 : i + 2, j]) if 0 < i < turns.size - 1 else 0.0
        best = Shift(degrees=float((turns[i] + offset) * HOUGH_BIN_DEG), agreement=float(window[i, j]))
    return best


def mirrored_lines(lines: Lines) -> Lines:
    """The segments of the image mirrored left-right: directions reflected, midpoints across the centre."""
    return Lines((180.0 - lines.angles) % 180.0, lines.lengths, -lines.x, lines.y, lines.half_width, lines.half_height)


def measure_tilt(candidate: AnalysisImage, source: AnalysisImage, params: PerspectiveParams,
                 flipped: bool = False) -> TiltChange:
    """Rotation of all lines, and tilt of the near-horizontal and near-vertical ones, source -> candidate.
    With ``flipped`` the candidate is compared with the source mirrored left-right.

    Raises :class:`CheckSkipped` when either image has too few straight lines. A band is None where
    it has too few lines; how well its lines match up is its ``agreement``.
    """
    cand = image_lines(candidate, params.analysis_side, params.min_segment)
    src = image_lines(source, params.analysis_side, params.min_segment)
    if flipped:
        src = mirrored_lines(src)
    for name, lines in (("candidate", cand), ("source", src)):
        if lines.count < params.min_lines or lines.total_length < params.min_total_length:
            raise CheckSkipped(
                f"too few straight lines to measure tilt: the {name} has {lines.count} segments, "
                f"{lines.total_length:.1f} long sides in all (needs {params.min_lines} and "
                f"{params.min_total_length:g})"
            )
    rotation = measure_rotation(cand, src, params.max_rotation)
    # A band tilts somewhere between "not at all" and "with the whole image", give or take band_reach.
    low = min(0.0, rotation.degrees) - params.band_reach
    high = max(0.0, rotation.degrees) + params.band_reach
    bands: dict[str, Shift | None] = {}
    for name, centre in BANDS.items():
        enough = all(
            b.count >= params.band_min_lines and b.total_length >= params.band_min_length
            for b in (cand.band(centre, params.band_half_width), src.band(centre, params.band_half_width))
        )
        bands[name] = measure_band(cand, src, centre, params.band_half_width, low, high) if enough else None
    return TiltChange(rotation=rotation, bands=bands, candidate_lines=cand, source_lines=src)


def decide(change: TiltChange, params: PerspectiveParams) -> tuple[str | None, float]:
    """Which tilt changed: ("whole image rotated" | "horizon" | "verticals" | None, degrees).

    A band whose lines match up well (``band_min_agreement``) is judged on its own: *tilted* past
    the threshold, *steady* under half of it. A whole-image rotation no band is judged on must be
    borne out by a band that, matched more loosely (``band_corroborate_agreement``), turned by about
    as much, or by a close match of all the line directions (``confirm_agreement``).
    """
    threshold = params.threshold
    rotation = change.rotation.degrees
    judged = {n: (s.degrees if s is not None and s.agreement >= params.band_min_agreement else None)
              for n, s in change.bands.items()}
    tilted = {n: d for n, d in judged.items() if d is not None and abs(d) >= threshold}
    steady = [n for n, d in judged.items() if d is not None and abs(d) < threshold / 2]
    if len(tilted) == 2:
        if np.sign(tilted["horizon"]) == np.sign(tilted["verticals"]):
            mean = float(np.mean(list(tilted.values())))
            return "whole image rotated", rotation if abs(rotation - mean) < threshold / 2 else mean
        name = max(tilted, key=lambda n: abs(tilted[n]))
        return name, tilted[name]
    if len(tilted) == 1:
        name, degrees = next(iter(tilted.items()))
        if not steady and abs(rotation - degrees) < threshold / 2:
            return "whole image rotated", rotation  # everything measurable turned together
        return name, degrees
    if abs(rotation) < threshold:
        return None, 0.0
    confirmed = change.rotation.agreement >= params.confirm_agreement
    if not steady:
        corroborated = any(
            s is not None and s.agreement >= params.band_corroborate_agreement
            and abs(s.degrees - rotation) < threshold / 2
            for s in change.bands.values()
        )
        return ("whole image rotated", rotation) if corroborated or confirmed else (None, 0.0)
    if len(steady) == 1 and confirmed:
        other = "verticals" if steady[0] == "horizon" else "horizon"
        if judged[other] is None:  # one band stands still, the other cannot be judged alone: it moved
            return other, rotation
    return None, 0.0


@register_check("perspective_broken", PerspectiveParams, requires=("source",))
def check_perspective_broken(ctx: CheckContext, params: PerspectiveParams):
    """Horizon tilt, verticals lean or whole-image rotation against the source, from line directions."""
    # A mirrored result (the registration found the flip; mirrored reports it) is measured against the
    # mirrored source: a flip reverses every line direction and must not read as a rotation.
    flipped = ctx.registration.flipped
    change = measure_tilt(ctx.candidate, ctx.source, params, flipped)
    if change.rotation.agreement < params.min_agreement:
        raise CheckSkipped(
            f"the straight lines of the candidate and the source do not correspond (direction "
            f"histograms agree {change.rotation.agreement:.2f} < {params.min_agreement:g}): tilt cannot be measured"
        )
    bands = change.bands
    evidence = {
        "rotation_deg": round(change.rotation.degrees, 3),
        "rotation_agreement": round(change.rotation.agreement, 3),
        "candidate_lines": change.candidate_lines.count,
        "source_lines": change.source_lines.count,
        "candidate_line_length": round(change.candidate_lines.total_length, 2),
        "source_line_length": round(change.source_lines.total_length, 2),
    }
    if flipped:
        evidence["source_mirrored"] = True
    for name, shift in bands.items():
        evidence[f"{name}_deg"] = None if shift is None else round(shift.degrees, 3)
        evidence[f"{name}_agreement"] = None if shift is None else round(shift.agreement, 3)
    for name, centre in BANDS.items():
        evidence[f"{name}_lines"] = [change.candidate_lines.band(centre, params.band_half_width).count,
                                     change.source_lines.band(centre, params.band_half_width).count]
    which, score = decide(change, params)
    if which is None:
        return []
    # The registration's fitted map turns lines exactly as the picture turned; where it matches closely
    # and turned neither band by half the threshold, the lines' reading is an artefact (a zoom or crop
    # that changed which lines are seen), not a tilt.
    tilts = ctx.registration.tilts()
    if tilts is not None:
        if max(abs(v) for v in tilts.values()) < params.threshold / 2:
            return []
        evidence["registration_tilt_deg"] = {k: round(v, 3) for k, v in tilts.items()}
    evidence["which"] = which
    sense = "counter-clockwise" if score > 0 else "clockwise"
    others = {"horizon": "verticals", "verticals": "horizon"}
    if which in others:
        other = bands[others[which]]
        judged = other is not None and other.agreement >= params.band_min_agreement
        rest = (f", while the {others[which]} stay within {abs(other.degrees):.1f}°" if judged
                else f" (the {others[which]} could not be measured)")
        verb = "tilts" if which == "horizon" else "lean"
        message = f"The {which} {verb} {abs(score):.1f}° {sense} against the source{rest}."
    else:
        message = f"The whole image is rotated {abs(score):.1f}° {sense} against the source."
    return [make_finding("perspective_broken", params, score=score, threshold=params.threshold, unit="°",
                         message=message, evidence=evidence)]
