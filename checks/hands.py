"""hand_malformed: hands no real hand could look like, hands too many, hands gone.

MediaPipe Hands scores generated hands with broken anatomy exactly like real ones (0.96 to 1.00 on
the shared set), so its confidence says nothing; nor does its stability (a defective generated
hand gets the same landmarks on a re-crop or a mirror image, within 0.04 palm lengths, while real
hands it misreads move up to 0.9). The verdict comes from the hand's 21 landmarks (skeleton) held
against anatomy and against the hand's own pixels (silhouette), from counting hands per person
against the body pose, and, with a source, from comparing the hands of both images.

Rules (each finding names the ones that fired, with the numbers behind them):

* ``fingers_intersect`` (skeleton). The smallest 3-D distance between the bones of two different
  fingers (landmark x, y in pixels and MediaPipe's relative depth z, on the same scale), in palm
  lengths (wrist to middle knuckle, 3-D). Bones are finger axes and real fingers are about 0.2 palm
  lengths thick, so two axes closer than ``bone_gap`` are fingers passing through each other, or
  two finger chains collapsed onto one finger (the picture has fewer separate fingers than a hand).
  Not judged for a hand partly behind another (``max_occlusion`` of its box covered): the model
  guesses hidden fingers, and guesses them colliding.
* ``unexplained_finger`` and ``extra_fingertip`` (silhouette). The hand's skin is segmented around
  its landmarks: a colour model (CIELAB histograms) of the pixels under the skeleton against those
  far from it; the connected skin region under the palm is the silhouette. Silhouette that no bone
  or palm of any detected hand explains (farther than ``explained_radius``) is searched for
  finger-shaped parts: at least ``finger_min_length`` long, ``finger_min_width`` to
  ``finger_max_width`` wide, ``finger_min_elongation`` times longer than wide, rooted within
  ``knuckle_reach`` of the knuckle line, reaching ``finger_min_reach`` from the wrist, and not cut
  by the crop (an arm, a face or another person runs out of it). Independently, the silhouette's
  fingertips (peaks of the outline's distance from the palm centre, ``tip_min_prominence`` above the
  valleys beside them, convexity-defect style) are matched to the skeletons' fingertips and last
  joints; a finger-wide tip (``tip_min_width`` to ``tip_max_width``) ``tip_min_distance`` from all
  of them is a finger the skeleton does not have. Before either counts, the detector looks again on
  crops beyond the stray part (it may belong to a hand the full-frame pass missed); a hand found
  there joins the skeletons that explain the silhouette. More fingers than the pose implies.
* ``finger_without_skin`` (silhouette). The share of skin under the two distal bones of each
  straight, extended finger; at most ``skinless_max_support`` means the skeleton places a finger
  where the picture has none (a ghosted, transparent or missing finger: fewer fingers than the pose
  implies). Silhouette rules are skipped for a hand whose skin does not separate from its
  surroundings (``skin_min_separation``, e.g. a hand on a face or on an arm).
* ``finger_without_structure`` (pixels). A grey profile across a finger always crosses edges (its two
  sides, against the background or a neighbour's crease). For each straight, extended finger of the
  skeleton (index to little), the edge energy of profiles across its two distal bones, over that of the
  hand's clearest such finger (:func:`finger_structure`); under ``finger_min_structure`` the skeleton draws
  a finger where the picture has none: a finger removed and filled, or two fingers fused into one paddle
  with no line between them, which MediaPipe, confident, still draws as two. Judged for palms of
  ``structure_min_palm_px`` and more (below ``min_palm_px`` too: it needs no silhouette), with at least
  two such fingers, not for a hand partly behind another, and only for a hand found again on a crop
  around it (a stray skeleton on a neck or a fold is not).
* ``extra_hand`` (pose). Every hand near a person must hang from one of that person's wrists, one
  hand per wrist: hands whose wrist lies within ``wrist_reach`` forearm lengths of a visible pose
  wrist, pointing away from the elbow, are matched to the wrists (maximum matching); a hand left over
  is a hand too many. Detections sharing most of a box count once. MediaPipe Pose sees one person
  (the most prominent), so only that person's hands are counted. Hands come from the full frame and
  again from crops around the pose wrists (``analyses.hands_with_wrist_crops``), where small hands
  of wide shots and two hands side by side are found.
* ``hand_without_arm`` (segmentation, every person). A hand that hangs from no pose wrist must have
  an arm: the mean person probability of the selfie segmentation (which sees every person, not only
  the one MediaPipe Pose picks) on the forearm's place, 0.3 to 1 palm lengths past the wrist and half
  a palm wide, at least ``arm_min_support``. Not judged where that place leaves the frame, nor for
  palms under ``arm_min_palm_px``, nor for a hand seen edge-on (knuckle line under
  ``arm_min_knuckle_spread`` of the palm, 2-D: its wrist direction is a guess). Hands pasted into the background are often missed at full frame:
  four overlapping quadrant crops (``TILE_SIDE`` of the long side) are searched too, for this rule
  only. A hand counts only when a second look on a crop around it finds it again (stray detections on
  legs, folds or texture vanish; real and pasted hands come back).
* ``hand_wrong_side`` (pose). A hand matched to a pose wrist must be that arm's hand: MediaPipe Pose's
  thumb and pinky points of that wrist are compared with the hand's thumb base and little knuckle;
  when the swapped pairing fits better by ``wrong_side_margin`` palm lengths, the hand is the mirror
  image of the one the arm implies (a left hand on a right arm).
* ``hand_appeared`` / ``hand_vanished`` (source of the same framing). Hands matched by place between
  source and candidate, in the candidate's frame: the source's hands are carried there by the
  registration (:attr:`CheckContext.registration`), so a result that was only mirrored, turned,
  zoomed or shifted keeps every hand's partner. A hand without a partner gets a targeted second look
  in the other image (a crop around its place there) and counts only where the content of its box
  changed, against the registered source: 1 - correlation of the lightly blurred grey pixels at
  least ``min_change`` (exposure, colour, noise and blur keep the
  correlation near 1). An appeared hand is not reported when the candidate also has more faces (a
  person was added, with hands of their own).

Shape rules judge hands whose palm is at least ``min_palm_px`` long (analysis pixels): smaller hands
are too coarse to tell a malformed finger from blur. Each finding carries the hand's box and a repair
mask at candidate resolution: silhouette and landmark hull, extended half a palm over the wrist and
grown by ``mask_margin`` palm lengths (the hand, its wrist, what it touches and a margin).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
from pydantic import Field

from fixloop.checks import analyses
from fixloop.checks.analyses import Hand, box_iou, same_hand
from fixloop.checks.base import CheckParams, CheckSkipped, Priority, Region, make_finding, register_check
from fixloop.checks.content import changed_region
from fixloop.checks.context import AnalysisImage, CheckContext
from fixloop.checks.geometry import disc, pixel_box, resize_mask
from fixloop.checks.identity import map_box, map_points, source_to_candidate

FINGER_NAMES = ("thumb", "index", "middle", "ring", "little")
# Landmark chains per finger: thumb CMC-MCP-IP-tip; fingers MCP-PIP-DIP-tip.
FINGERS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))
BONES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11),
         (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (17, 18), (18, 19), (19, 20), (0, 17))
PALM = (0, 1, 2, 5, 9, 13, 17)  # the palm's outline: wrist, thumb base, the four knuckles
KNUCKLES = (5, 9, 13, 17)  # the four finger MCPs (the knuckle line)
DISTAL = (3, 4, 7, 8, 11, 12, 15, 16, 19, 20)  # each finger's last joint and tip
CROP_MARGIN = 0.7  # palm lengths around the landmark box in which the silhouette is segmented
SEED_RADIUS = 0.06  # palm lengths around the bones taken as skin samples
BACKGROUND_DISTANCE = 0.75  # palm lengths from every bone beyond which pixels are background samples
HIST_BINS = 16  # per CIELAB channel
STRAIGHT = 0.85  # base-to-tip distance / bone path length at or above which a finger is straight
EXTENDED = 0.5  # palm lengths; base-to-tip distance (2-D) of an extended finger
SECOND_LOOK_SIDES = (1.5, 2.5)  # palm lengths; crops searched again around an unexplained finger
DUPLICATE_OVERLAP = 0.5  # share of the smaller box two detections share when they are one hand
# MediaPipe Pose's hand points per wrist: wrist, pinky knuckle, thumb (left and right of the person)
POSE_HAND_POINTS = {"left": (15, 17, 21), "right": (16, 18, 22)}
ARM_SPAN = (0.3, 1.0)  # palm lengths past the wrist where the forearm is sampled
ARM_WIDTH = 0.5  # palm lengths across the forearm sampled
TILE_SIDE = 0.6  # share of the image's long side: the four quadrant crops searched for hands no arm holds
# finger structure: grey profiles across each straight, extended finger's two distal bones (at a quarter, half and
# three quarters of each), STRUCTURE_SPAN finger widths either side of its axis, lightly blurred (STRUCTURE_BLUR finger
# widths); a finger width is the mean spacing of neighbouring knuckles
STRUCTURE_SPAN = 0.6
STRUCTURE_BLUR = 0.08
STRUCTURE_SAMPLES = 13  # samples per profile


def tile_hands(image: AnalysisImage, known: list[Hand], changed: np.ndarray | None = None) -> list[Hand]:
    """Hands found on four overlapping quadrant crops that are none of ``known``: a hand pasted into
    the background is often missed at full frame and lies at no pose wrist. With ``changed`` (where
    the edit changed the content, :func:`fixloop.checks.content.changed_region`), only the crops that
    meet a change are searched: a hand in content the edit left alone is the source's."""
    w, h = image.size
    side = TILE_SIDE * max(w, h)
    found: list[Hand] = []
    for fx in (0.25, 0.75):
        for fy in (0.25, 0.75):
            cx, cy = fx * w, fy * h
            if changed is not None:
                x0, y0 = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
                if not changed[y0:int(np.ceil(cy + side / 2)), x0:int(np.ceil(cx + side / 2))].any():
                    continue
            box = (cx - side / 4, cy - side / 4, cx + side / 4, cy + side / 4)  # hands_in_region doubles it
            for hand in analyses.hands_in_region(image, box):
                if not any(same_hand(hand, other) for other in [*known, *found]):
                    found.append(hand)
    return found


class HandsParams(CheckParams):
    priority: Priority
    min_palm_px: float = Field(gt=0, description="px at analysis size; shortest palm whose shape is judged")
    bone_gap: float = Field(gt=0, description="palm lengths; closest two finger bones may come")
    silhouette_px: float = Field(ge=16, description="px; palm length the hand crop is resampled to")
    skin_min_separation: float = Field(ge=0, le=1, description="mean skin probability, skin minus background samples")
    explained_radius: float = Field(gt=0, description="palm lengths around bones and palm that the skeleton explains")
    finger_min_length: float = Field(gt=0, description="palm lengths")
    finger_min_width: float = Field(gt=0, description="palm lengths")
    finger_max_width: float = Field(gt=0, description="palm lengths")
    finger_min_elongation: float = Field(gt=1, description="length / width")
    knuckle_reach: float = Field(gt=0, description="palm lengths from the knuckle line")
    finger_min_reach: float = Field(gt=0, description="palm lengths (2-D) from the wrist along the hand's axis")
    tip_min_prominence: float = Field(gt=0, description="palm lengths a silhouette fingertip stands out")
    tip_min_distance: float = Field(gt=0, description="palm lengths from every skeleton fingertip")
    tip_min_width: float = Field(ge=0, description="palm lengths; finger width near the tip")
    tip_max_width: float = Field(gt=0, description="palm lengths")
    skinless_max_support: float = Field(ge=0, lt=1, description="share of skin under an extended finger")
    max_occlusion: float = Field(gt=0, le=1, description="share of a hand's box another hand covers")
    wrist_reach: float = Field(gt=0, description="forearm lengths from a pose wrist")
    min_change: float = Field(gt=0, le=2, description="1 - correlation of the hand box's grey pixels")
    mask_margin: float = Field(ge=0, description="palm lengths the repair mask is grown by")
    arm_min_palm_px: float = Field(gt=0, description="px at analysis size; shortest palm judged for an arm")
    arm_min_support: float = Field(ge=0, le=1, description="mean person probability past the wrist")
    wrong_side_margin: float = Field(gt=0, description="palm lengths the swapped thumb/little pairing fits better")
    arm_min_knuckle_spread: float = Field(ge=0, description="index to little knuckle, 2-D, in 2-D palm lengths")
    structure_min_palm_px: float = Field(gt=0, description="px at analysis size; shortest palm whose fingers' "
                                                           "structure is judged")
    finger_min_structure: float = Field(ge=0, le=1, description="edge energy across a finger over the hand's "
                                                                "clearest finger's")


# ---- measurements -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Protrusion:
    """A finger-shaped part of the silhouette that no skeleton finger explains."""

    length: float  # palm lengths
    width: float  # palm lengths (area / length)
    knuckle_distance: float  # palm lengths from the knuckle line
    reach: float  # 2-D palm lengths from the wrist along the hand's axis, at its farthest point
    box: tuple[float, float, float, float]  # analysis px


@dataclass(frozen=True)
class Fingertip:
    """A fingertip of the silhouette: a peak of the contour's distance from the palm centre."""

    prominence: float  # palm lengths the peak stands above the valleys on either side
    skeleton_distance: float  # palm lengths to the nearest fingertip or last joint of any skeleton
    width: float  # palm lengths; silhouette width a third of a palm inside the tip
    position: tuple[float, float]  # analysis px


@dataclass
class HandShape:
    """One hand's skeleton and silhouette measurements (analysis pixels)."""

    index: int
    hand: Hand
    palm: float  # px; 3-D wrist to middle knuckle
    judged: bool  # palm long enough to judge the shape
    bone_gap: float | None = None  # palm lengths; closest approach of two fingers' bones
    bone_gap_fingers: tuple[str, str] | None = None
    separation: float | None = None  # skin model: mean probability on skin minus background samples
    protrusions: list[Protrusion] = field(default_factory=list)
    fingertips: list[Fingertip] = field(default_factory=list)  # silhouette fingertips (prominent peaks)
    finger_support: dict[str, float] = field(default_factory=dict)  # extended fingers: skin share
    finger_structure: dict[str, float] = field(default_factory=dict)  # extended fingers: edge energy / the clearest's
    silhouette: np.ndarray | None = None  # bool, analysis px, inside ``silhouette_box``
    silhouette_box: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 analysis px
    occluded: float = 0.0  # largest share of this hand's box another hand's box covers
    second_look_hands: int = 0  # hands found on a second look around unexplained parts

    @property
    def silhouette_valid(self) -> bool:
        return self.separation is not None


def palm_length(hand: Hand) -> float:
    """3-D wrist-to-middle-knuckle length in px (MediaPipe's z is on the x scale)."""
    return float(np.linalg.norm(hand.landmarks[9] - hand.landmarks[0]))


def _segment_distance(p1: np.ndarray, q1: np.ndarray, p2: np.ndarray, q2: np.ndarray) -> float:
    """Closest distance between segments p1q1 and p2q2 (Ericson, Real-Time Collision Detection 5.1.9)."""
    d1, d2, r = q1 - p1, q2 - p2, p1 - p2
    a, e, f = float(d1 @ d1), float(d2 @ d2), float(d2 @ r)
    if a <= 1e-12 and e <= 1e-12:
        return float(np.linalg.norm(r))
    if a <= 1e-12:
        s, t = 0.0, float(np.clip(f / e, 0, 1))
    else:
        c = float(d1 @ r)
        if e <= 1e-12:
            t, s = 0.0, float(np.clip(-c / a, 0, 1))
        else:
            b = float(d1 @ d2)
            denom = a * e - b * b
            s = float(np.clip((b * f - c * e) / denom, 0, 1)) if denom > 1e-12 else 0.0
            t = (b * s + f) / e
            if t < 0:
                t, s = 0.0, float(np.clip(-c / a, 0, 1))
            elif t > 1:
                t, s = 1.0, float(np.clip((b - c) / a, 0, 1))
    return float(np.linalg.norm((p1 + d1 * s) - (p2 + d2 * t)))


def closest_fingers(hand: Hand) -> tuple[float, tuple[str, str]]:
    """Smallest 3-D distance between bones of two different fingers, in palm lengths.

    Bones: each finger's three phalanges (MCP-PIP, PIP-DIP, DIP-tip); the thumb's two distal
    ones (its metacarpal starts at the wrist next to the index metacarpal by nature)."""
    points = hand.landmarks.astype(np.float64)
    palm = max(palm_length(hand), 1e-6)
    bones = []
    for finger, chain in enumerate(FINGERS):
        for k in range(1 if finger == 0 else 0, 3):
            bones.append((finger, points[chain[k]], points[chain[k + 1]]))
    best, pair = np.inf, (FINGER_NAMES[0], FINGER_NAMES[1])
    for i, (fa, pa, qa) in enumerate(bones):
        for fb, pb, qb in bones[i + 1:]:
            if fa == fb:
                continue
            d = _segment_distance(pa, qa, pb, qb)
            if d < best:
                best, pair = d, (FINGER_NAMES[fa], FINGER_NAMES[fb])
    return best / palm, pair


def _draw_skeleton(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """uint8 mask with the bones as 1-px lines and the palm outline filled."""
    canvas = np.zeros(shape, np.uint8)
    pts = np.round(points[:, :2]).astype(np.int32)
    for a, b in BONES:
        cv2.line(canvas, tuple(int(v) for v in pts[a]), tuple(int(v) for v in pts[b]), 255, 1)
    cv2.fillConvexPoly(canvas, cv2.convexHull(pts[list(PALM)]), 255)
    return canvas


def _skin_probability(crop: np.ndarray, skin: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Per-pixel P(skin) from CIELAB histograms of the skin and background samples (equal priors)."""
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.int32)
    q = lab * HIST_BINS // 256
    index = (q[..., 0] * HIST_BINS + q[..., 1]) * HIST_BINS + q[..., 2]

    def density(samples: np.ndarray) -> np.ndarray:
        hist = np.bincount(index[samples], minlength=HIST_BINS ** 3).astype(np.float32)
        hist = cv2.GaussianBlur(hist.reshape(HIST_BINS, HIST_BINS * HIST_BINS), (3, 3), 0).ravel()
        return hist / max(float(hist.sum()), 1.0)

    pf, pb = density(skin)[index], density(background)[index]
    return pf / (pf + pb + 1e-9)


def measure_silhouette(image: AnalysisImage, shape: HandShape, others: list[Hand], params: HandsParams) -> None:
    """Segment the hand's skin and fill in the silhouette measurements of ``shape``."""
    hand, palm = shape.hand, shape.palm
    X0, Y0, X1, Y1 = pixel_box([float(v) for v in hand.box], image.size, CROP_MARGIN * palm)
    if X1 - X0 < 8 or Y1 - Y0 < 8:
        return
    k = params.silhouette_px / palm
    crop = cv2.resize(image.uint8[Y0:Y1, X0:X1], None, fx=k, fy=k,
                      interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    hh, ww = crop.shape[:2]
    unit = params.silhouette_px  # one palm length in crop pixels
    to_crop = lambda pts: (pts[:, :2].astype(np.float64) - [X0, Y0]) * k  # noqa: E731
    own = to_crop(hand.landmarks)

    bones = np.zeros((hh, ww), np.uint8)
    for a, b in BONES:
        cv2.line(bones, tuple(int(v) for v in np.round(own[a])), tuple(int(v) for v in np.round(own[b])), 255, 1)
    distance = cv2.distanceTransform(255 - bones, cv2.DIST_L2, 3) / unit
    # The forearm continues past the wrist: it is skin but explained, never a background sample.
    axis = own[0] - own[9]
    axis /= max(float(np.linalg.norm(axis)), 1e-6)
    yy, xx = np.mgrid[0:hh, 0:ww]
    along = (xx - own[0, 0]) * axis[0] + (yy - own[0, 1]) * axis[1]
    across = np.abs((xx - own[0, 0]) * -axis[1] + (yy - own[0, 1]) * axis[0])
    forearm = (along > -0.1 * unit) & (across < 0.6 * unit)
    skin_seeds = distance < SEED_RADIUS
    background_seeds = (distance > BACKGROUND_DISTANCE) & ~forearm
    if skin_seeds.sum() < 20 or background_seeds.sum() < 20:
        return
    probability = _skin_probability(crop, skin_seeds, background_seeds)
    separation = float(probability[skin_seeds].mean() - probability[background_seeds].mean())
    smooth = cv2.GaussianBlur(probability.astype(np.float32), (0, 0), 1.0)
    skin = cv2.morphologyEx((smooth > 0.5).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    _, labels = cv2.connectedComponents(skin)
    centre = np.clip(np.round(own[list(PALM)].mean(axis=0)).astype(int), 0, [ww - 1, hh - 1])
    label = labels[centre[1], centre[0]]
    if label == 0:  # the palm centre is not skin: the silhouette cannot be trusted
        return
    silhouette = labels == label
    shape.separation = separation
    shape.silhouette_box = (X0, Y0, X1, Y1)
    shape.silhouette = resize_mask(silhouette, (X1 - X0, Y1 - Y0))
    if separation < params.skin_min_separation:
        return

    # finger_without_skin: skin under the distal bones of straight, extended fingers
    for finger, chain in enumerate(FINGERS):
        path = sum(float(np.linalg.norm(own[chain[i + 1]] - own[chain[i]])) for i in range(3))
        reach = float(np.linalg.norm(own[chain[3]] - own[chain[0]]))
        if reach < EXTENDED * unit or reach < STRAIGHT * path:
            continue
        t = np.linspace(0.0, 1.0, 8)[:, None]
        samples = np.concatenate([own[chain[1]] * (1 - t) + own[chain[2]] * t,
                                  own[chain[2]] * (1 - t) + own[chain[3]] * t])
        samples = np.round(samples).astype(int)
        inside = (samples[:, 0] >= 0) & (samples[:, 1] >= 0) & (samples[:, 0] < ww) & (samples[:, 1] < hh)
        if inside.mean() < 0.75:
            continue
        shape.finger_support[FINGER_NAMES[finger]] = float(silhouette[samples[inside, 1], samples[inside, 0]].mean())

    # unexplained_finger: finger-shaped skin no skeleton (this hand's or another's) explains
    explained = _draw_skeleton((hh, ww), own)
    for other in others:
        explained |= _draw_skeleton((hh, ww), to_crop(other.landmarks))
    near = cv2.distanceTransform(255 - explained, cv2.DIST_L2, 3) / unit < params.explained_radius
    past_wrist = along > 0
    residual = (silhouette & ~near & ~past_wrist).astype(np.uint8)
    radius = max(1, int(round(0.05 * unit)))
    residual = cv2.morphologyEx(residual, cv2.MORPH_OPEN, disc(radius))
    count, parts, stats, _ = cv2.connectedComponentsWithStats(residual)
    palm_2d = max(float(np.linalg.norm(own[9] - own[0])), 1e-6)
    knuckle_line = np.zeros((hh, ww), np.uint8)
    knuckles = np.round(own[list(KNUCKLES)]).astype(np.int32)
    cv2.polylines(knuckle_line, [knuckles], False, 255, 1)
    to_knuckles = cv2.distanceTransform(255 - knuckle_line, cv2.DIST_L2, 3) / unit
    for j in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[j])
        if x == 0 or y == 0 or x + w >= ww or y + h >= hh:
            continue  # cut by the crop: an arm, a face, another person, not a finger of this hand
        part = parts == j
        ys, xs = np.nonzero(part)
        (_, _), (rw, rh), _ = cv2.minAreaRect(np.stack([xs, ys], axis=1).astype(np.float32))
        length = max(rw, rh) / unit
        width = area / unit ** 2 / max(length, 1e-6)
        knuckle_distance = float(to_knuckles[part].min())
        reach = float((-along[part]).max()) / palm_2d  # how far past the wrist towards the fingers
        if (length >= params.finger_min_length and params.finger_min_width <= width <= params.finger_max_width
                and length / width >= params.finger_min_elongation and knuckle_distance <= params.knuckle_reach
                and reach >= params.finger_min_reach):
            shape.protrusions.append(Protrusion(
                length=round(length, 3), width=round(width, 3), knuckle_distance=round(knuckle_distance, 3),
                reach=round(reach, 3),
                box=(X0 + x / k, Y0 + y / k, X0 + (x + w) / k, Y0 + (y + h) / k)))

    # extra_fingertip: silhouette fingertips far from every skeleton fingertip
    for point, prominence, distance, width in silhouette_fingertips(
            silhouette, own, [to_crop(o.landmarks) for o in others], unit, params.tip_min_prominence):
        shape.fingertips.append(Fingertip(prominence=round(prominence, 3), skeleton_distance=round(distance, 3),
                                          width=round(width, 3), position=(X0 + point[0] / k, Y0 + point[1] / k)))


def prominent_peaks(x: np.ndarray, min_prominence: float, wlen: int) -> tuple[np.ndarray, np.ndarray]:
    """``scipy.signal.find_peaks(x, prominence=min_prominence, wlen=wlen)``'s peaks and prominences,
    without importing scipy.signal (0.7 s and 40 MiB on first use, in every process that measures a
    hand). A peak is a sample above its left neighbour and above the first different sample on its
    right (the middle of a flat top); its prominence is its height above the higher of the lowest
    points on either side before the profile rises above it again, within ``wlen // 2`` samples."""
    values = np.asarray(x, dtype=np.float64)
    flat = values.tolist()
    n = len(flat)
    peaks = []
    i = 1
    while i < n - 1:
        if flat[i - 1] < flat[i]:
            ahead = i + 1
            while ahead < n - 1 and flat[ahead] == flat[i]:
                ahead += 1
            if flat[ahead] < flat[i]:
                peaks.append((i + ahead - 1) // 2)
                i = ahead
        i += 1
    half = int(np.ceil(wlen)) // 2 if wlen >= 2 else n
    kept, prominences = [], []
    for peak in peaks:
        top = values[peak]
        left = values[max(peak - half, 0):peak + 1][::-1]
        right = values[peak:min(peak + half, n - 1) + 1]
        bases = []
        for side in (left, right):
            higher = np.flatnonzero(side > top)
            bases.append(side[:higher[0] if len(higher) else len(side)].min())
        prominence = top - max(bases)
        if prominence >= min_prominence:
            kept.append(peak)
            prominences.append(prominence)
    return np.array(kept, dtype=np.intp), np.array(prominences, dtype=np.float64)


def silhouette_fingertips(silhouette: np.ndarray, own: np.ndarray, others: list[np.ndarray], unit: float,
                          min_prominence: float) -> list[tuple[np.ndarray, float, float, float]]:
    """Fingertips of a silhouette (crop pixels, one palm = ``unit`` px): peaks of the outline's
    distance from the palm centre standing at least ``min_prominence`` palm lengths above the valleys
    on either side (searched within 2.5 palm lengths of outline), not on the crop border and not on
    the forearm. Returns (point, prominence, distance to the nearest skeleton fingertip or last joint
    of this hand or another, finger width a third of a palm inside the tip), in palm lengths."""
    contours, _ = cv2.findContours(silhouette.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return []
    outline = max(contours, key=cv2.contourArea)[:, 0, :].astype(np.float64)
    n = len(outline)
    if n < 16:
        return []
    hh, ww = silhouette.shape
    centre = own[list(PALM)].mean(axis=0)
    axis = own[9] - own[0]
    axis /= max(float(np.linalg.norm(axis)), 1e-6)
    radius = np.linalg.norm(outline - centre, axis=1) / unit
    k = max(3, int(0.05 * unit)) | 1
    radius = np.convolve(np.r_[radius[-k:], radius, radius[:k]], np.ones(k) / k, "same")[k:-k]
    invalid = ((outline[:, 0] <= 0) | (outline[:, 1] <= 0) | (outline[:, 0] >= ww - 1) | (outline[:, 1] >= hh - 1)
               | ((outline - own[0]) @ axis < 0))
    window = min(n, int(2.5 * unit) | 1)
    profile = np.r_[radius[-window:], radius, radius[:window]]
    peaks, prominences = prominent_peaks(profile, min_prominence, window)
    skeleton_tips = np.vstack([pts[list(DISTAL)] for pts in [own, *others]])
    tips: list[tuple[np.ndarray, float, float, float]] = []
    for q, prominence in sorted(zip(peaks, prominences), key=lambda t: -t[1]):
        i = q - window
        if not 0 <= i < n or invalid[i]:
            continue
        point = outline[i]
        if any(np.linalg.norm(point - t[0]) < 0.2 * unit for t in tips):
            continue  # the same tip seen twice through the circular padding
        distance = float(np.linalg.norm(skeleton_tips - point, axis=1).min()) / unit
        direction = (point - centre) / max(float(np.linalg.norm(point - centre)), 1e-6)
        inner = point - direction * unit / 3
        across = np.array([-direction[1], direction[0]])
        width = 0.0
        xi, yi = int(round(inner[0])), int(round(inner[1]))
        if 0 <= xi < ww and 0 <= yi < hh and silhouette[yi, xi]:
            run = 1
            for sign in (1, -1):
                for t in range(1, int(unit)):
                    x, y = (int(round(v)) for v in inner + across * sign * t)
                    if not (0 <= x < ww and 0 <= y < hh and silhouette[y, x]):
                        break
                    run += 1
            width = run / unit
        tips.append((point, float(prominence), distance, width))
    return tips


def finger_structure(image: AnalysisImage, hand: Hand) -> dict[str, float]:
    """Edge energy across each straight, extended finger (index to little) of the skeleton, over that of
    the hand's clearest such finger; empty with fewer than two such fingers.

    A finger has two sides, so a grey profile across it (STRUCTURE_SPAN finger widths either side of
    its axis) always crosses edges: against the background, against a neighbour (a crease), or both.
    Where the skeleton puts a straight finger and the profile is flat, the picture has no finger there
    (removed and filled, or two fingers fused into one paddle with no line between them) although
    MediaPipe, confident, still draws one. The energy is the summed absolute step along the profile,
    the median over six profiles on the two distal bones; relative to the hand's own clearest finger,
    so a soft, dim or smooth picture is not a defect by itself. Fingers whose profiles leave the frame
    are not judged."""
    points = hand.landmarks[:, :2].astype(np.float64)
    palm_2d = float(np.linalg.norm(points[9] - points[0]))
    width = float(np.mean([np.linalg.norm(points[a] - points[b]) for a, b in ((5, 9), (9, 13), (13, 17))]))
    if palm_2d < 1.0 or width < 1.0:
        return {}
    h, w = image.gray.shape[:2]
    reach = (STRUCTURE_SPAN + 0.5) * width
    x0, y0 = (int(max(0, np.floor(v - reach))) for v in points.min(axis=0))
    x1, y1 = int(min(w, np.ceil(points[:, 0].max() + reach) + 1)), int(min(h, np.ceil(points[:, 1].max() + reach) + 1))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return {}
    grey = cv2.GaussianBlur(image.gray[y0:y1, x0:x1].astype(np.float32), (0, 0), max(0.5, STRUCTURE_BLUR * width))
    across = np.linspace(-STRUCTURE_SPAN, STRUCTURE_SPAN, STRUCTURE_SAMPLES) * width
    energy: dict[str, float] = {}
    for finger in range(1, 5):
        chain = FINGERS[finger]
        path = sum(float(np.linalg.norm(points[chain[i + 1]] - points[chain[i]])) for i in range(3))
        tip_reach = float(np.linalg.norm(points[chain[3]] - points[chain[0]]))
        if tip_reach < EXTENDED * palm_2d or tip_reach < STRAIGHT * path:
            continue
        samples = []
        for i in (1, 2):  # PIP-DIP and DIP-tip
            a, b = points[chain[i]], points[chain[i + 1]]
            along = (b - a) / max(float(np.linalg.norm(b - a)), 1e-6)
            normal = np.array([-along[1], along[0]])
            for t in (0.25, 0.5, 0.75):
                samples.append(a * (1 - t) + b * t + across[:, None] * normal)
        xy = np.array(samples)  # profiles x samples x 2, image px
        if (xy[..., 0] < 0).any() or (xy[..., 1] < 0).any() or (xy[..., 0] > w - 1).any() or (xy[..., 1] > h - 1).any():
            continue
        xy = (xy - [x0, y0]).astype(np.float32)
        profiles = cv2.remap(grey, xy[..., 0], xy[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        energy[FINGER_NAMES[finger]] = float(np.median(np.abs(np.diff(profiles, axis=1)).sum(axis=1)))
    if len(energy) < 2:
        return {}
    clearest = max(energy.values())
    if clearest <= 1e-9:
        return {}
    return {name: round(value / clearest, 4) for name, value in energy.items()}


def _suspects(shape: HandShape, params: HandsParams) -> list[tuple[float, float, float, float]]:
    """Boxes (analysis px) of the parts that would make a silhouette rule fire."""
    boxes = [p.box for p in shape.protrusions]
    for t in shape.fingertips:
        if t.skeleton_distance >= params.tip_min_distance and params.tip_min_width <= t.width <= params.tip_max_width:
            r = 0.5 * shape.palm
            boxes.append((t.position[0] - r, t.position[1] - r, t.position[0] + r, t.position[1] + r))
    return boxes


def measure_hands(image: AnalysisImage, hands: list[Hand], params: HandsParams) -> list[HandShape]:
    """Skeleton and silhouette measurements for every hand (shape rules only for judged hands).

    A finger the skeleton does not explain may belong to a hand the detector missed (two hands side
    by side): before it counts, the detector looks again on a crop around it, and any hand found
    there joins the skeletons that explain the silhouette."""
    shapes = []
    for i, hand in enumerate(hands):
        palm = palm_length(hand)
        shape = HandShape(index=i, hand=hand, palm=palm, judged=palm >= params.min_palm_px)
        shape.occluded = max((_overlap_own(hand.box, other.box) for j, other in enumerate(hands) if j != i),
                             default=0.0)
        if palm >= params.structure_min_palm_px:
            shape.finger_structure = finger_structure(image, hand)
        if shape.judged:
            gap, pair = closest_fingers(hand)
            shape.bone_gap, shape.bone_gap_fingers = gap, pair
            others = [h for j, h in enumerate(hands) if j != i]
            measure_silhouette(image, shape, others, params)
            found = []
            for box in _suspects(shape, params):
                # The hand owning a stray finger lies beyond it, away from this hand's palm.
                centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
                away = centre - hand.landmarks[list(PALM), :2].mean(axis=0)
                cx, cy = centre + away / max(float(np.linalg.norm(away)), 1e-6) * 0.5 * palm
                for side in SECOND_LOOK_SIDES:  # crops 1.5 and 2.5 palm lengths wide
                    r = side * palm / 4
                    for new in analyses.hands_in_region(image, (cx - r, cy - r, cx + r, cy + r)):
                        if not any(same_hand(new, h) for h in [*hands, *found]):
                            found.append(new)
            if found:
                shape.protrusions, shape.fingertips, shape.finger_support = [], [], {}
                shape.second_look_hands = len(found)
                measure_silhouette(image, shape, others + found, params)
        shapes.append(shape)
    return shapes


def _overlap_own(own: np.ndarray, other: np.ndarray) -> float:
    """Share of box ``own`` that box ``other`` covers."""
    ix = max(0.0, float(min(own[2], other[2]) - max(own[0], other[0])))
    iy = max(0.0, float(min(own[3], other[3]) - max(own[1], other[1])))
    area = float((own[2] - own[0]) * (own[3] - own[1]))
    return ix * iy / area if area > 0 else 0.0


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection of two boxes over the smaller one's area."""
    ix = max(0.0, float(min(a[2], b[2]) - max(a[0], b[0])))
    iy = max(0.0, float(min(a[3], b[3]) - max(a[1], b[1])))
    smaller = min(float((a[2] - a[0]) * (a[3] - a[1])), float((b[2] - b[0]) * (b[3] - b[1])))
    return ix * iy / smaller if smaller > 0 else 0.0


def _largest_distinct(hands: list[Hand], indices: list[int]) -> list[int]:
    """The largest subset of ``indices`` whose boxes pairwise share less than DUPLICATE_OVERLAP."""
    def apart(a: int, b: int) -> bool:
        return _overlap(hands[a].box, hands[b].box) < DUPLICATE_OVERLAP

    if len(indices) > 10:  # never seen at one person; keep it cheap
        kept: list[int] = []
        for i in indices:
            if all(apart(i, j) for j in kept):
                kept.append(i)
        return kept
    for size in range(len(indices), 0, -1):
        for subset in itertools.combinations(indices, size):
            if all(apart(a, b) for a, b in itertools.combinations(subset, 2)):
                return list(subset)
    return []


@dataclass(frozen=True)
class PersonHands:
    """Hands at the pose person's wrists and the ones no wrist can hold."""

    wrists: list[str]  # the visible pose wrists
    near: list[int]  # indices of hands within reach of a visible wrist
    distinct: list[int]  # the near hands counted (detections of one hand counted once)
    matched: dict[int, str]  # hand index -> wrist it hangs from
    extra: list[int]  # hands near the person that no free wrist can hold


def hands_per_person(image: AnalysisImage, hands: list[Hand], params: HandsParams) -> PersonHands | None:
    """Match the hands near the pose person to its visible wrists, one hand per wrist."""
    body = analyses.pose(image)
    if body is None:
        return None
    marks = body.landmarks
    wrists = []
    for name, wrist, elbow in (("left", analyses.POSE_LEFT_WRIST, analyses.POSE_LEFT_ELBOW),
                               ("right", analyses.POSE_RIGHT_WRIST, analyses.POSE_RIGHT_ELBOW)):
        forearm = marks[wrist, :2] - marks[elbow, :2]
        length = float(np.linalg.norm(forearm))
        if marks[wrist, 3] >= 0.5 and length >= 1.0:
            wrists.append((name, marks[wrist, :2], forearm / length, length))
    reach: dict[int, dict[str, float]] = {}  # hand -> wrist name -> distance in forearm lengths
    for i, hand in enumerate(hands):
        pointing = hand.landmarks[9, :2] - hand.landmarks[0, :2]
        for name, position, direction, length in wrists:
            distance = float(np.linalg.norm(hand.landmarks[0, :2] - position)) / length
            if distance <= params.wrist_reach and float(pointing @ direction) > 0:  # points away from the elbow
                reach.setdefault(i, {})[name] = distance
    near = sorted(reach)
    # Two detections sharing most of a box are one hand seen twice (MediaPipe can fit two skeletons to
    # one hand, or one skeleton across two): count the largest set of hands that do not.
    distinct = _largest_distinct(hands, near)
    # Maximum matching of hands to wrists, one hand per wrist (at most two wrists: try every choice),
    # the closest fit among equals.
    best: dict[int, str] = {}
    best_key = (0, 0.0)
    for choice in itertools.product([None, *distinct], repeat=len(wrists)):
        picked = [i for i in choice if i is not None]
        if len(set(picked)) < len(picked):
            continue
        pairs = [(i, w[0]) for i, w in zip(choice, wrists) if i is not None]
        if not all(name in reach[i] for i, name in pairs):
            continue
        key = (len(pairs), -sum(reach[i][name] for i, name in pairs))
        if key > best_key:
            best_key, best = key, {i: name for i, name in pairs}
    extra = [i for i in distinct if i not in best]
    return PersonHands(wrists=[w[0] for w in wrists], near=near, distinct=distinct, matched=best, extra=extra)


def arm_support(image: AnalysisImage, hand: Hand) -> float | None:
    """Mean person probability (selfie segmentation, every person) on the forearm's place: ARM_SPAN
    palm lengths past the wrist, away from the fingers, ARM_WIDTH wide. None when part of that place
    lies outside the frame (the arm may be cut by the border)."""
    probability = analyses.person_mask(image)
    h, w = probability.shape
    points = hand.landmarks[:, :2].astype(np.float64)
    palm = max(palm_length(hand), 1.0)
    axis = points[0] - points[9]
    axis /= max(float(np.linalg.norm(axis)), 1e-6)
    across = np.array([-axis[1], axis[0]])
    t, u = np.meshgrid(np.linspace(*ARM_SPAN, 8), np.linspace(-ARM_WIDTH / 2, ARM_WIDTH / 2, 5))
    samples = points[0] + (t.reshape(-1, 1) * axis + u.reshape(-1, 1) * across) * palm
    xy = np.round(samples).astype(int)
    if (xy[:, 0] < 0).any() or (xy[:, 1] < 0).any() or (xy[:, 0] >= w).any() or (xy[:, 1] >= h).any():
        return None
    return float(probability[xy[:, 1], xy[:, 0]].mean())


def knuckle_spread(hand: Hand) -> float:
    """Index to little knuckle over wrist to middle knuckle, both 2-D: small for a hand seen edge-on,
    or a skeleton fitted to a thin stripe, whose wrist direction says little."""
    points = hand.landmarks[:, :2].astype(np.float64)
    return float(np.linalg.norm(points[5] - points[17]) / max(float(np.linalg.norm(points[9] - points[0])), 1e-6))


def confirmed(image: AnalysisImage, hand: Hand) -> bool:
    """The hand is found again on a crop around it (MediaPipe's stray detections on legs, folds or
    texture vanish on a second look; real and pasted hands come back)."""
    return any(same_hand(hand, again) for again in analyses.hands_in_region(image, hand.box))


def wrong_side(image: AnalysisImage, hand: Hand, wrist: str) -> float | None:
    """How much better (palm lengths) the pose's thumb and pinky of ``wrist`` fit this hand's little
    finger and thumb than its thumb and little finger: positive when the hand on that arm is the
    mirror image of the one the arm implies. None without a visible pose thumb and pinky."""
    body = analyses.pose(image)
    if body is None:
        return None
    marks = body.landmarks
    _, pinky, thumb = POSE_HAND_POINTS[wrist]
    if marks[thumb, 3] < 0.5 or marks[pinky, 3] < 0.5:
        return None
    own_thumb, own_little = hand.landmarks[2, :2], hand.landmarks[17, :2]  # thumb MCP, little knuckle
    straight = float(np.linalg.norm(marks[thumb, :2] - own_thumb) + np.linalg.norm(marks[pinky, :2] - own_little))
    swapped = float(np.linalg.norm(marks[thumb, :2] - own_little) + np.linalg.norm(marks[pinky, :2] - own_thumb))
    return (straight - swapped) / max(palm_length(hand), 1.0)


@dataclass(frozen=True)
class HandChange:
    kind: str  # "appeared" or "vanished"
    hand: Hand  # the hand in the image that has it, in the candidate's frame
    change: float  # 1 - correlation of the grey pixels inside the hand's box, source vs candidate


def same_place(a: Hand, b: Hand) -> bool:
    """A hand at the same place in two images (its pose may differ): boxes overlapping by a third,
    or wrists within half a palm."""
    palm = max(palm_length(a), palm_length(b), 1.0)
    wrist = float(np.linalg.norm(a.landmarks[0, :2] - b.landmarks[0, :2]))
    return box_iou(a.box, b.box) > 0.3 or wrist < 0.5 * palm or same_hand(a, b)


def structural_change(source: AnalysisImage, candidate: AnalysisImage, hand: Hand) -> float:
    """1 - normalised cross-correlation of the grey pixels in the hand's box (lightly blurred): 0 when
    only brightness, contrast, noise or sharpness changed, towards 1 when the content changed. The two
    images must be pixel-aligned (the registered source and the candidate)."""
    palm = max(palm_length(hand), 1.0)
    x0, y0, x1, y1 = pixel_box([float(v) for v in hand.box], candidate.size, 0.05 * palm)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return 0.0
    sigma = max(0.5, 0.08 * palm)
    a = cv2.GaussianBlur(source.gray[y0:y1, x0:x1], (0, 0), sigma).astype(np.float64)
    b = cv2.GaussianBlur(candidate.gray[y0:y1, x0:x1], (0, 0), sigma).astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if denominator < 1e-9:  # both flat: nothing to compare; one flat: the content changed
        return 0.0 if (a * a).sum() + (b * b).sum() < 1e-9 else 1.0
    return float(1.0 - (a * b).sum() / denominator)


def moved_hand(matrix: np.ndarray | None, hand: Hand) -> Hand:
    """``hand`` carried through a 2 x 3 affine map (landmarks, box; depth scaled with the map's zoom;
    handedness as detected); the hand itself for None."""
    if matrix is None:
        return hand
    landmarks = hand.landmarks.astype(np.float64).copy()
    landmarks[:, :2] = map_points(matrix, landmarks[:, :2])
    landmarks[:, 2] *= float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    box = np.array([*landmarks[:, :2].min(axis=0), *landmarks[:, :2].max(axis=0)])
    return replace(hand, landmarks=landmarks.astype(hand.landmarks.dtype), box=box.astype(np.asarray(hand.box).dtype))


def compare_hands(ctx: CheckContext, params: HandsParams) -> list[HandChange]:
    """Hands present in one of the source and the candidate and missing in the other, compared in the
    candidate's frame: the source's hands are carried there by the registration, and the pixels of a
    hand's box are compared with the registered source."""
    source, candidate = ctx.source, ctx.candidate
    to_candidate = source_to_candidate(ctx)
    to_source = None if to_candidate is None else ctx.registration.to_source
    before = [moved_hand(to_candidate, h) for h in analyses.hands_with_wrist_crops(source)]
    after = analyses.hands_with_wrist_crops(candidate)

    def matched(hand: Hand, others: list[Hand]) -> bool:
        return any(same_place(hand, o) for o in others)

    def second_look(hand: Hand, kind: str) -> list[Hand]:
        """Hands found on a crop around ``hand``'s place in the image that seems to lack it, in the
        candidate's frame."""
        if kind == "vanished":
            return analyses.hands_in_region(candidate, hand.box)
        if to_source is None:
            return analyses.hands_in_region(source, hand.box)
        found = analyses.hands_in_region(source, map_box(to_source, hand.box))
        return [moved_hand(to_candidate, h) for h in found]

    changes = []
    for kind, present in (("appeared", after), ("vanished", before)):
        others = before if kind == "appeared" else after
        for hand in present:
            if matched(hand, others) or matched(hand, second_look(hand, kind)):
                continue
            change = structural_change(ctx.registered_source, candidate, hand)
            if change >= params.min_change:
                changes.append(HandChange(kind=kind, hand=hand, change=change))
    return changes


# ---- repair mask ------------------------------------------------------------------------------


def repair_mask(size: tuple[int, int], hand: Hand, margin: float, shape: HandShape | None = None,
                whole_box: bool = False) -> np.ndarray:
    """Hand, wrist, contact area and a margin: silhouette + landmark hull (or the landmarks' whole box,
    for a hand that appeared or vanished), extended over the wrist and grown by ``margin`` palms."""
    w, h = size
    palm = max(palm_length(hand), 1.0)
    mask = np.zeros((h, w), np.uint8)
    points = hand.landmarks[:, :2].astype(np.float64)
    wrist_dir = points[0] - points[9]
    wrist_dir /= max(float(np.linalg.norm(wrist_dir)), 1e-6)
    # the wrist: half a palm past landmark 0, as wide as the palm at the base
    side = np.array([-wrist_dir[1], wrist_dir[0]]) * 0.35 * palm
    wrist_end = points[0] + wrist_dir * 0.5 * palm
    polygon = np.vstack([points, [points[0] + side, points[0] - side, wrist_end + side, wrist_end - side]])
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(polygon).astype(np.int32)), 1)
    if whole_box:
        x0, y0, x1, y1 = (int(round(float(v))) for v in hand.box)
        mask[max(0, y0):max(0, y1 + 1), max(0, x0):max(0, x1 + 1)] = 1
    if shape is not None and shape.silhouette is not None and shape.silhouette_box is not None:
        x0, y0, x1, y1 = shape.silhouette_box
        mask[y0:y1, x0:x1] |= shape.silhouette.astype(np.uint8)
    radius = margin * palm
    ys, xs = np.nonzero(mask)
    if radius > 0 and xs.size:  # grow by a distance transform inside the mask's box plus the margin
        pad = int(np.ceil(radius)) + 1
        x0, y0 = max(0, xs.min() - pad), max(0, ys.min() - pad)
        x1, y1 = min(w, xs.max() + pad + 1), min(h, ys.max() + pad + 1)
        window = mask[y0:y1, x0:x1]
        distance = cv2.distanceTransform((window == 0).astype(np.uint8), cv2.DIST_L2, 5)
        mask[y0:y1, x0:x1] = distance <= radius
    return mask.astype(bool)


def _region(ctx: CheckContext, mask: np.ndarray) -> tuple[Region, np.ndarray]:
    full = ctx.candidate_mask(mask)
    return Region.of_mask(full), full


def _hand_evidence(ctx: CheckContext, shape: HandShape) -> dict:
    hand = shape.hand
    evidence = {
        "hand_box": ctx.candidate_box(hand.box),
        "handedness": hand.handedness,
        "detection_score": round(hand.score, 3),
        "palm_px": round(shape.palm * ctx.scale_to_candidate, 1),
    }
    if shape.bone_gap is not None:
        evidence["closest_fingers"] = list(shape.bone_gap_fingers or ())
        evidence["finger_gap_palms"] = round(shape.bone_gap, 4)
    if shape.separation is not None:
        evidence["skin_separation"] = round(shape.separation, 3)
    if shape.occluded > 0:
        evidence["covered_by_other_hand"] = round(shape.occluded, 3)
    if shape.silhouette_valid:
        evidence["silhouette_fingertips"] = len(shape.fingertips)
    if shape.finger_support:
        evidence["skin_under_fingers"] = {k: round(v, 3) for k, v in shape.finger_support.items()}
    if shape.finger_structure:
        evidence["finger_structure"] = {k: round(v, 3) for k, v in shape.finger_structure.items()}
    return evidence


@register_check("hand_malformed", HandsParams, inheritable=True)
def check_hand_malformed(ctx: CheckContext, params: HandsParams):
    """Hand skeletons against anatomy and their own silhouette, hands per person, hands gone or new."""
    image = ctx.candidate
    hands = analyses.hands_with_wrist_crops(image)
    compared = ctx.source is not None and ctx.aligned
    if not hands and not (compared and analyses.hands_with_wrist_crops(ctx.source)):
        raise CheckSkipped("no hand found (MediaPipe Hands, full frame and around the pose wrists)")
    shapes = measure_hands(image, hands, params)
    person = hands_per_person(image, hands, params)
    if not compared and not any(s.judged or s.finger_structure for s in shapes) and not (person and person.wrists):
        raise CheckSkipped(f"every hand found is too small to judge (palm under {params.min_palm_px:g} px "
                           "at analysis size) and no body pose places them")
    findings = []

    for shape in shapes:
        if not shape.judged and not shape.finger_structure:
            continue  # too small for any shape rule
        # Each reason: (how far past its limit, rule, score, threshold, unit, message)
        reasons = []
        hidden = shape.occluded >= params.max_occlusion  # partly behind another hand: fingers guessed
        flat = {k: v for k, v in shape.finger_structure.items() if v < params.finger_min_structure and not hidden}
        if flat and confirmed(image, shape.hand):  # a stray skeleton (on a neck, a fold) is not found again
            name, ratio = min(flat.items(), key=lambda kv: kv[1])
            reasons.append(((params.finger_min_structure + 0.05) / (ratio + 0.05), "finger_without_structure", ratio,
                            params.finger_min_structure, "edge energy over the clearest finger's",
                            f"The {name} finger of this hand is drawn by its skeleton but the picture shows no finger "
                            f"there: across it the image has {ratio:.0%} of the edges of the hand's clearest finger "
                            "(a missing finger, or two fingers fused into one)."))
        # the skeleton and silhouette rules below have measurements only for hands of min_palm_px and more
        if shape.bone_gap is not None and shape.bone_gap < params.bone_gap and not hidden:
            a, b = shape.bone_gap_fingers
            reasons.append((params.bone_gap / max(shape.bone_gap, 1e-3), "fingers_intersect", shape.bone_gap,
                            params.bone_gap, "palm lengths",
                            f"The {a} and {b} fingers of this hand pass through each other "
                            f"({shape.bone_gap:.2f} palm lengths apart)."))
        if shape.protrusions:
            longest = max(shape.protrusions, key=lambda p: p.length)
            reasons.append((longest.length / params.finger_min_length, "unexplained_finger", longest.length,
                            params.finger_min_length, "palm lengths",
                            f"The hand shows {len(shape.protrusions)} finger(s) more than its skeleton has "
                            f"(a finger-shaped part {longest.length:.2f} palm lengths long)."))
        extra_tips = [t for t in shape.fingertips if t.skeleton_distance >= params.tip_min_distance
                      and params.tip_min_width <= t.width <= params.tip_max_width]
        if extra_tips:
            tip = max(extra_tips, key=lambda t: t.skeleton_distance)
            reasons.append((tip.skeleton_distance / params.tip_min_distance, "extra_fingertip", tip.skeleton_distance,
                            params.tip_min_distance, "palm lengths",
                            f"The hand's outline has {len(extra_tips)} fingertip(s) that no finger of its skeleton "
                            f"reaches ({tip.skeleton_distance:.2f} palm lengths away)."))
        skinless = {k: v for k, v in shape.finger_support.items()
                    if v <= params.skinless_max_support and not hidden}
        if skinless:
            name, support = min(skinless.items(), key=lambda kv: kv[1])
            reasons.append(((params.skinless_max_support + 0.05) / (support + 0.05), "finger_without_skin", support,
                            params.skinless_max_support, "share of skin",
                            f"The {name} finger of this hand has no skin under it ({support:.0%}): a ghosted "
                            "or missing finger."))
        if not reasons:
            continue
        _, rule, score, threshold, unit, message = max(reasons, key=lambda r: r[0])
        evidence = _hand_evidence(ctx, shape)
        evidence["rule"] = rule
        evidence["rules"] = [r[1] for r in reasons]
        evidence["reasons"] = [r[5] for r in reasons]
        if extra_tips:
            evidence["extra_fingertips"] = [
                {"distance_palms": t.skeleton_distance, "prominence_palms": t.prominence, "width_palms": t.width,
                 "at": [round(v * ctx.scale_to_candidate, 1) for v in t.position]} for t in extra_tips]
        if shape.protrusions:
            evidence["unexplained_fingers"] = [
                {"length_palms": p.length, "width_palms": p.width, "box": ctx.candidate_box(p.box)}
                for p in shape.protrusions]
        region, mask = _region(ctx, repair_mask(image.size, shape.hand, params.mask_margin, shape))
        findings.append(make_finding("hand_malformed", params, score=score, threshold=threshold, unit=unit,
                                     message=message, region=region, evidence=evidence, mask=mask))

    # Hands no arm holds, hands on the wrong arm (every person's segmentation; the pose person's wrists).
    # Hands only the quadrant crops find are judged for their arm alone.
    loose = tile_hands(image, hands, changed_region(ctx) if compared else None)
    for i, hand in enumerate([*hands, *loose]):
        palm = palm_length(hand)
        if palm < params.arm_min_palm_px:
            continue
        if i >= len(hands):
            support = arm_support(image, hand)
        elif person is not None and i in person.near and i not in person.extra:
            support = None  # it hangs from a pose wrist
        else:
            support = arm_support(image, hand)
        reason = None
        if support is not None and support < params.arm_min_support and \
                knuckle_spread(hand) >= params.arm_min_knuckle_spread and confirmed(image, hand):
            reason = ("hand_without_arm", support, params.arm_min_support, "person probability past the wrist",
                      f"This hand has no arm: past its wrist the picture shows no person ({support:.0%}).")
        elif person is not None and i in person.matched:
            wrist = person.matched[i]
            side = wrong_side(image, hand, wrist)
            if side is not None and side >= params.wrong_side_margin:
                reason = ("hand_wrong_side", side, params.wrong_side_margin, "palm lengths",
                          f"The hand at the {wrist} wrist is a mirror image: its thumb is where the arm puts the "
                          f"little finger ({side:.2f} palm lengths).")
        if reason is None:
            continue
        rule, score, threshold, unit, message = reason
        shape = shapes[i] if i < len(hands) else HandShape(index=i, hand=hand, palm=palm, judged=False)
        evidence = _hand_evidence(ctx, shape)
        evidence.update({"rule": rule, "rules": [rule], "reasons": [message]})
        region, mask = _region(ctx, repair_mask(image.size, hand, params.mask_margin, shape))
        findings.append(make_finding("hand_malformed", params, score=score, threshold=threshold, unit=unit,
                                     message=message, region=region, evidence=evidence, mask=mask))

    if person is not None and person.extra:
        union = np.zeros(image.size[::-1], bool)
        for i in person.distinct:
            union |= repair_mask(image.size, hands[i], params.mask_margin, shapes[i])
        region, mask = _region(ctx, union)
        total = len(person.distinct)
        evidence = {
            "rule": "extra_hand", "rules": ["extra_hand"],
            "hands_at_person": total, "visible_wrists": person.wrists,
            "hand_boxes": [ctx.candidate_box(hands[i].box) for i in person.distinct],
            "extra_hand_boxes": [ctx.candidate_box(hands[i].box) for i in person.extra],
        }
        held = len(person.matched)
        findings.append(make_finding(
            "hand_malformed", params, score=total, threshold=held, unit="hands at one person's wrists",
            message=f"{total} hands sit at one person's wrists and only {held} can hang from them "
                    f"({len(person.wrists)} wrist(s) visible): {len(person.extra)} hand(s) too many.",
            region=region, evidence=evidence, mask=mask))

    if compared:
        more_faces = len(analyses.faces(image)) > len(analyses.faces(ctx.source))
        for change in compare_hands(ctx, params):
            if change.kind == "appeared" and more_faces:
                continue  # a person was added, with hands of their own
            region, mask = _region(ctx, repair_mask(image.size, change.hand, params.mask_margin, whole_box=True))
            what = ("A hand appeared that the source does not have" if change.kind == "appeared"
                    else "A hand of the source is gone from the candidate")
            findings.append(make_finding(
                "hand_malformed", params, score=change.change, threshold=params.min_change,
                unit="1 - correlation",
                message=f"{what} (the pixels of its box correlate {1 - change.change:.2f} with the source).",
                region=region, mask=mask,
                evidence={"rule": f"hand_{change.kind}", "rules": [f"hand_{change.kind}"],
                          "hand_box": ctx.candidate_box(change.hand.box),
                          "detection_score": round(change.hand.score, 3)}))
    return findings
