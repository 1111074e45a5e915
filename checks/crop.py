"""subject_cropped: a person cut by the frame (face, hands or feet through the border).

What is measured. Every main person's body parts are placed from the shared analyses (MediaPipe Pose
landmarks with their visibility and person segmentation, MediaPipe face boxes and keypoints;
``checks/analyses.py``). MediaPipe places landmarks that fall outside the picture beyond
``[0, w) x [0, h)`` instead of clamping them, and its face box runs past the border for a cut face,
so the share of a part that lies outside the frame can be measured. Each part has an *extent* (used
to decide whether the frame cuts it) and a *full extent* (the part with its surroundings, used for
the canvas extension):

- **face**: hairline to chin, cheek to cheek, from the face keypoints (``d`` = eye-to-mouth distance):
  hairline ``hairline_d`` * d above the eye line, chin 0.6 d below the mouth (where MediaPipe's box
  ends on the 21 portraits of the shared set), sides from the face box. Without a detected face the
  pose's eyes, mouth and ears give the same numbers. Full extent: crown 2 d above the eyes, ears a
  quarter of the face width either side.
- **hand** (each): the pose wrist, thumb, index and pinky knuckles, and the fingertips extrapolated to
  ``fingertip_factor`` times the wrist-to-knuckles vector (the knuckles sit half-way along a hand),
  grown by 15 % of that length.
- **foot** (each): ankle, heel and toe landmarks grown by 15 % of the heel-to-toe length (the shoe),
  at least 5 % of a head height.
- **torso**: shoulders and hips grown by a sixth of the shoulder width either side (upper arms).

A part is *cut* at an edge when the share of its extent beyond that edge reaches the part's limit
(``face_outside``, ``hand_outside``, ``foot_outside``, ``torso_outside``) while some of it is seen in
the frame (an in-frame landmark of the part with visibility >= ``min_visibility``; for a foot, the
knee above it). A part wholly outside with nothing of it seen is *out of frame*: a framing choice.

Feet need a second signal. On a frame through the shins MediaPipe Pose often pulls the ankles back
inside the picture (it fits a whole body into the frame, with high visibility), so landmarks alone
miss many shin crops. A foot is therefore also cut when the knee above it is in the frame and the
person mask (the pose segmentation; only the connected part of it that holds the knee or the hips)
runs into the bottom edge under that leg (within half a head height of the knee, ankle or toe
across), while the foot's extent reaches the edge or the foot is not seen at all (its landmarks'
visibility stays under ``min_visibility`` and they lie between the side edges). A foot that is seen
and ends inside the frame is whole even when its shoe touches the edge. This second signal asks for
a clearly seen knee (visibility >= ``mask_knee_visibility``): a knee the pose merely guesses over a
dark, blurred or occluded lower frame would make any mask touching the bottom look like a leg.

Deliberate framings (decided here, so that portraits are not P0s):

- A head-and-shoulders portrait or a half-body shot whose torso, arms or legs run out of the bottom
  edge is a framing, not a defect: the torso is never judged at the bottom edge, and feet are judged
  only when the shot is otherwise full-length, i.e. the knee above the foot is in the frame, visible
  (>= ``knee_visibility``) and at least ``knee_margin`` head heights above the edge. Knees in, feet
  out (a frame through the shins, ankles or feet) is a cut; a frame at or above the knees is a
  framing.
- Hair or the crown cut by the top edge (a tight headshot) is a framing; a frame through the forehead
  (below the hairline), the eyes or the face, or a face cut at a side, is a cut.
- Shoulders running out of both sides of a tight portrait are a framing; the torso is cut at a side
  only when that side's overhang is at least ``torso_outside`` of the torso's width and at least twice
  the other side's (the person is cut in half, not framed tightly).
- A hand is cut when part of it is seen in the frame and part of it is beyond the border. Hands at the
  bottom edge are judged only when ``hands_at_bottom`` is true: a half-body shot whose bottom edge
  crosses the hands is common and accepted; hands cut at the top or the sides are always reported.

People. MediaPipe Pose follows one person (the most prominent); the face detector sees every face.
The *main subjects* are the pose person and every other face at least ``main_face_ratio`` as wide as
the largest face. For the pose person all parts are judged; for the other main faces only the face
(no pose of their own places their bodies). Smaller faces and people without a detected face or pose
(background figures cut at the edge) are ignored on purpose. The manifest of the shared photo set
(``cropped_at_border``) lists every edge that cuts *any* person, background figures and the bottom
edge of every portrait included, so agreement with it is measured but not expected to be total.

With a source. When the candidate is a re-framing of the source (a crop, a zoom, an outpaint: the
source maps into the candidate by a similarity transform found from ORB features with RANSAC), the
source's landmarks and faces, measured on the whole person, are mapped into the candidate's frame and
judged there as well: this is the clearest case, a person whole in the source and cut in the
candidate, and it holds even when the cut person is no longer found in the candidate at all. The
source is also judged in its own frame: a part cut in the candidate that was whole in the source is
named (``whole_in_source``). When the registration already found the candidate in the source's
frame without fitting a move (an exposure, colour or local edit), the re-framing is the identity and
no features are matched. A mirrored result (found by the registration,
:mod:`fixloop.checks.registration`) is compared with the source mirrored, so a framing the source had
is recognised on the other side. A part already cut in the source is not the edit's doing: when the
candidate keeps the source's frame (no re-framing, or one within ``SAME_FRAME_SCALE`` /
``SAME_FRAME_SHIFT`` of the identity), every cut is the source's unless the source held that part
*clearly* whole (seen, with under ``CLEARLY_WHOLE`` of the limit beyond that edge: a part on the limit
in the source must not flip with a light change); when it re-frames, a cut is the source's when the
source had that part cut. Such cuts alone give a finding marked ``inherited``, which does not count
toward the verdict (policy ``gate.count_inherited``); with new cuts, the finding names the new ones
and lists the others under ``cut_in_source``.

Repair input. The evidence carries, per cut edge, how far to extend the canvas so that the cut parts'
full extents fit with ``margin_heads`` head heights (3.6 eye-to-mouth distances) of room:
``extend`` in candidate pixels and ``extend_fraction`` as a share of the image side it is measured
along (width for left and right, height for top and bottom): the input a recompose / outpaint repair
needs. It also lists the cut edges and parts, the share of each part outside, what measured it, and
how much of each edge the person mask touches. A check without any person (no pose, no face, and no
source person mapped into the frame) is skipped.

Measured (``tests/test_crop.py``). Crops made from the 7 whole-body photos of the shared set, found
at the cut edge on the candidate alone / with the photo as source: through the face 5/7 / 7/7, through
the shins 5/7 / 7/7, half the person cut off at the right 4/7 / 7/7, through a hand at a side 4/6 /
6/6. The misses of the candidate alone are people the models no longer find once cut (no pose and no
face, or the pose moving to another, whole person), or a shin crop of a seated person whose knees the
pose no longer sees. Whole people with 10 % of their height of margin: no finding; at 5 %: one of 7
(the smallest person, 130 x 174 px). Limitation: MediaPipe Pose places hidden hands (crossed arms)
with high visibility, sometimes at an edge: 2 of the 21 portraits get a hand finding that way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from pydantic import Field

from fixloop.checks import analyses
from fixloop.checks.base import CheckParams, CheckSkipped, Priority, make_finding, register_check
from fixloop.checks.context import DEFAULT_MAX_SIDE, AnalysisImage, CheckContext, analysis_size
from fixloop.checks.geometry import points_box, shrink, union_box
from fixloop.checks.registration import mirrored_source

EDGES = ("top", "bottom", "left", "right")
# MediaPipe Pose landmark indices.
NOSE, LEFT_EYE, RIGHT_EYE, LEFT_EAR, RIGHT_EAR, MOUTH_LEFT, MOUTH_RIGHT = 0, 2, 5, 7, 8, 9, 10
HEAD_POINTS = (NOSE, LEFT_EYE, RIGHT_EYE, LEFT_EAR, RIGHT_EAR, MOUTH_LEFT, MOUTH_RIGHT)
SHOULDERS, HIPS = (11, 12), (23, 24)
HAND_POINTS = {"left hand": (15, 17, 19, 21), "right hand": (16, 18, 20, 22)}  # wrist, pinky, index, thumb
FOOT_POINTS = {"left foot": (27, 29, 31), "right foot": (28, 30, 32)}  # ankle, heel, toe
KNEE = {"left foot": 25, "right foot": 26}
FACE_CHIN_D = 0.6  # chin below the mouth, in eye-to-mouth distances (MediaPipe's box bottom, measured)
CROWN_D = 2.0  # top of the head above the eyes, in eye-to-mouth distances
HEAD_HEIGHT_D = 3.6  # crown to chin, in eye-to-mouth distances
SHOULDERS_PER_HEAD = 1.3  # shoulder-joint width in head heights (head scale when the head is unseen)
MATCH_SIDE = 640  # px; long side at which source and candidate features are matched
MIN_INLIERS = 40  # RANSAC inliers a re-framing needs
MIN_INLIER_SHARE = 0.3  # ... and this share of the ratio-test matches
# Same framing: a cut is the edit's only when the source held the part with less than this share of
# the cut limit beyond that edge (hysteresis, so a part on the limit in the source does not flip).
CLEARLY_WHOLE = 0.5
# A re-framing transform this close to the identity (scale, shift as a share of the side) is the same frame.
SAME_FRAME_SCALE, SAME_FRAME_SHIFT = 0.02, 0.01


class CropParams(CheckParams):
    priority: Priority
    min_visibility: float = Field(ge=0, le=1, description="pose landmark visibility that counts as seen")
    knee_visibility: float = Field(ge=0, le=1, description="knee visibility that makes a shot full-length")
    mask_knee_visibility: float = Field(ge=0, le=1, description="knee visibility the mask signal for feet needs")
    knee_margin: float = Field(ge=0, description="head heights the knee must lie above the edge")
    face_outside: float = Field(gt=0, le=1, description="share of the face (hairline to chin) beyond an edge")
    hand_outside: float = Field(gt=0, le=1, description="share of the hand beyond an edge")
    foot_outside: float = Field(gt=0, le=1, description="share of the foot beyond an edge")
    torso_outside: float = Field(gt=0, le=1, description="share of the torso width beyond a side edge")
    hairline_d: float = Field(gt=0, description="hairline above the eyes, in eye-to-mouth distances")
    fingertip_factor: float = Field(gt=1, description="fingertips at this multiple of wrist-to-knuckles")
    hands_at_bottom: bool
    main_face_ratio: float = Field(gt=0, le=1, description="face width share of the largest face")
    margin_heads: float = Field(ge=0, description="head heights of room added beyond a cut part")


@dataclass(frozen=True)
class FaceMarks:
    """A detected face in some frame's pixels: box x0 y0 x1 y1, keypoints (right eye, left eye, nose, mouth)."""

    box: np.ndarray
    keypoints: np.ndarray


@dataclass
class People:
    """What the models found in one frame (w, h): the pose person, their mask, every face."""

    size: tuple[int, int]
    landmarks: np.ndarray | None  # 33 x 4: x, y px, z, visibility
    segmentation: np.ndarray | None  # H x W bool, the candidate's own pixels only
    faces: list[FaceMarks]
    source: str  # what measured it: "candidate" or "source mapped into the candidate"


@dataclass(frozen=True)
class PartCut:
    """One body part cut by one edge of the frame (pixels of the frame it was measured in)."""

    person: str  # "main subject" (the pose person) or "person 2", ... (other main faces, left to right)
    part: str  # face, left hand, right hand, left foot, right foot, torso
    edge: str
    outside: float  # share of the part's extent beyond the edge
    threshold: float
    extent: tuple[float, float, float, float]  # the part, x0 y0 x1 y1 (may exceed the frame)
    full: tuple[float, float, float, float]  # the part with surroundings, for the extension
    margin: float  # px of room beyond the full extent
    measured_by: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.person, self.part, self.edge)


@dataclass
class PersonParts:
    """Which parts of the main people the frame cuts, and which it holds whole."""

    size: tuple[int, int]
    cuts: list[PartCut] = field(default_factory=list)
    whole: set[tuple[str, str]] = field(default_factory=set)  # (person, part) seen whole in the frame
    people: int = 0
    # (person, part) -> edge -> share of the part beyond that edge, for every part seen in the frame
    shares: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)

    def clearly_whole(self, person: str, part: str, edge: str, threshold: float) -> bool:
        """Seen, with at most ``CLEARLY_WHOLE`` of the cut limit beyond ``edge``: whole with room to spare."""
        shares = self.shares.get((person, part))
        return shares is not None and shares[edge] < CLEARLY_WHOLE * threshold


# ---- geometry ------------------------------------------------------------------------------------


def _outside(extent, size) -> dict[str, float]:
    """Share of ``extent`` beyond each edge of a ``size`` (w, h) frame."""
    x0, y0, x1, y1 = extent
    w, h = size
    bw, bh = max(x1 - x0, 1e-6), max(y1 - y0, 1e-6)
    return {
        "top": float(np.clip(-y0 / bh, 0, 1)),
        "bottom": float(np.clip((y1 - h) / bh, 0, 1)),
        "left": float(np.clip(-x0 / bw, 0, 1)),
        "right": float(np.clip((x1 - w) / bw, 0, 1)),
    }


def _inside(point, size) -> bool:
    return 0 <= point[0] < size[0] and 0 <= point[1] < size[1]


def _overlaps(extent, size) -> bool:
    """True when some of ``extent`` lies inside the frame."""
    return extent[0] < size[0] and extent[2] > 0 and extent[1] < size[1] and extent[3] > 0


@dataclass(frozen=True)
class FaceGeometry:
    eye_y: float
    d: float  # eye-to-mouth distance (px)
    x0: float
    x1: float
    mouth_y: float
    measured_by: str

    def extent(self, hairline_d: float) -> tuple[float, float, float, float]:
        return (self.x0, self.eye_y - hairline_d * self.d, self.x1, self.mouth_y + FACE_CHIN_D * self.d)

    def full(self) -> tuple[float, float, float, float]:
        quarter = 0.25 * (self.x1 - self.x0)
        return (self.x0 - quarter, self.eye_y - CROWN_D * self.d, self.x1 + quarter,
                self.mouth_y + FACE_CHIN_D * self.d)

    @property
    def head_height(self) -> float:
        return HEAD_HEIGHT_D * self.d


def _face_geometry(face: FaceMarks, measured_by: str) -> FaceGeometry:
    eyes, mouth = face.keypoints[:2], face.keypoints[3]
    d = float(max(np.linalg.norm(mouth - eyes.mean(axis=0)), 0.2 * (face.box[3] - face.box[1]), 1.0))
    return FaceGeometry(eye_y=float(eyes[:, 1].mean()), d=d, x0=float(face.box[0]), x1=float(face.box[2]),
                        mouth_y=float(mouth[1]), measured_by=measured_by)


def _pose_face_geometry(marks: np.ndarray, measured_by: str) -> FaceGeometry:
    eyes = marks[[LEFT_EYE, RIGHT_EYE], :2]
    mouth = marks[[MOUTH_LEFT, MOUTH_RIGHT], :2].mean(axis=0)
    ears = marks[[LEFT_EAR, RIGHT_EAR], :2]
    d = float(max(np.linalg.norm(mouth - eyes.mean(axis=0)), 1.0))
    centre = float(np.r_[ears[:, 0], eyes[:, 0]].mean())
    half = max(float(abs(ears[0, 0] - ears[1, 0])) / 2, d)  # about MediaPipe's box; >= d in profile
    return FaceGeometry(eye_y=float(eyes[:, 1].mean()), d=d, x0=centre - half, x1=centre + half,
                        mouth_y=float(mouth[1]), measured_by=measured_by)


def _pose_face(marks: np.ndarray, faces: list[FaceMarks], min_visibility: float) -> int | None:
    """Index of the face whose box holds the pose person's eyes, nose and mouth, if any."""
    head = marks[[NOSE, LEFT_EYE, RIGHT_EYE, MOUTH_LEFT, MOUTH_RIGHT]]
    if head[:, 3].max() < min_visibility:
        return None
    cx, cy = head[:, :2].mean(axis=0)
    best, best_distance = None, np.inf
    for i, face in enumerate(faces):
        x0, y0, x1, y1 = face.box
        distance = float(np.hypot(cx - (x0 + x1) / 2, cy - (y0 + y1) / 2))
        if x0 <= cx <= x1 and y0 <= cy <= y1 and distance < best_distance:
            best, best_distance = i, distance
    return best


def _runs_under(row: np.ndarray, lo: float, hi: float) -> bool:
    """True when the mask row ``row`` has person pixels between x = lo and hi."""
    a, b = int(max(0, np.floor(lo))), int(min(row.size, np.ceil(hi)))
    return b > a and bool(row[a:b].any())


def _component_at(labels: np.ndarray, points: np.ndarray, radius: float) -> int:
    """The mask component (label > 0) found within ``radius`` px of the first of ``points`` that has one."""
    h, w = labels.shape
    r = max(1, int(round(radius)))
    for x, y in points:
        xi, yi = int(round(x)), int(round(y))
        if not (0 <= xi < w and 0 <= yi < h):
            continue
        window = labels[max(0, yi - r): yi + r + 1, max(0, xi - r): xi + r + 1]
        found = window[window > 0]
        if found.size:
            return int(np.bincount(found).argmax())
    return 0


# ---- measurement ---------------------------------------------------------------------------------


def _judge(parts: PersonParts, person: str, part: str, extent, full, threshold: float, seen: bool,
           margin: float, measured_by: str, edges=EDGES) -> bool:
    """Record ``part`` as cut at every edge where enough of it is outside (or as whole); True if cut."""
    shares = _outside(extent, parts.size)
    if seen:
        parts.shares[(person, part)] = shares
    cut = False
    for edge in edges:
        if seen and shares[edge] >= threshold:
            parts.cuts.append(PartCut(person, part, edge, round(shares[edge], 4), threshold, extent, full,
                                      margin, measured_by))
            cut = True
    if not cut and seen and max(shares.values()) < threshold:
        parts.whole.add((person, part))
    return cut


def measure_people(people: People, params: CropParams) -> PersonParts:
    """Where the frame cuts the main people (see the module docstring for the rules)."""
    size = people.size
    w, h = size
    parts = PersonParts(size=size)
    vis = params.min_visibility
    marks = people.landmarks
    by = "pose landmarks" if people.source == "candidate" else "source pose mapped into the candidate"
    face_by = "face detector" if people.source == "candidate" else "source face mapped into the candidate"

    pose_face, geometry, head = None, None, 1.0
    if marks is not None:
        pose_face = _pose_face(marks, people.faces, vis)
        if pose_face is not None:
            geometry = _face_geometry(people.faces[pose_face], face_by)
        elif marks[list(HEAD_POINTS), 3].max() >= vis:
            geometry = _pose_face_geometry(marks, by)
        shoulders = float(np.linalg.norm(marks[SHOULDERS[0], :2] - marks[SHOULDERS[1], :2]))
        head = geometry.head_height if geometry is not None else max(shoulders / SHOULDERS_PER_HEAD, 1.0)
    widths = [float(f.box[2] - f.box[0]) for f in people.faces]
    if geometry is not None:
        widths.append(geometry.x1 - geometry.x0)
    largest = max(widths, default=0.0)

    if marks is not None:
        parts.people += 1
        who = "main subject"
        margin = params.margin_heads * head
        if geometry is not None:
            extent = geometry.extent(params.hairline_d)
            _judge(parts, who, "face", extent, geometry.full(), params.face_outside, _overlaps(extent, size),
                   margin, geometry.measured_by)
        hand_edges = EDGES if params.hands_at_bottom else ("top", "left", "right")
        for name, idx in HAND_POINTS.items():
            points = marks[list(idx)]
            wrist, knuckles = points[0, :2], points[1:3, :2].mean(axis=0)
            tip = wrist + params.fingertip_factor * (knuckles - wrist)
            extent = points_box(np.vstack([points[:, :2], tip[None]]), 0.15 * max(float(np.linalg.norm(tip - wrist)), 1.0))
            seen = any(_inside(p[:2], size) and p[3] >= vis for p in points)
            _judge(parts, who, name, extent, extent, params.hand_outside, seen, margin, by, hand_edges)
        labels, bottom_labels = None, None  # mask components, labelled when a foot first needs them
        for name, idx in FOOT_POINTS.items():
            knee = marks[KNEE[name]]
            if not (_inside(knee[:2], size) and knee[3] >= params.knee_visibility
                    and knee[1] <= h - params.knee_margin * head):
                continue  # the lower leg is out of frame, hidden, or the frame is at the knee: a framing
            points = marks[list(idx)]
            length = float(np.linalg.norm(points[1, :2] - points[2, :2]))
            extent = points_box(points[:, :2], max(0.15 * length, 0.05 * head))
            if _judge(parts, who, name, extent, extent, params.foot_outside, True, margin, by):
                continue
            # the pose may have pulled the foot inside: the leg's mask running into the bottom edge decides
            if people.segmentation is None or knee[3] < params.mask_knee_visibility:
                continue
            if labels is None:  # only the person's own legs count at the edge
                labels = cv2.connectedComponents(people.segmentation.astype(np.uint8), connectivity=8)[1]
                bottom_labels = labels[-max(1, h // 200):].max(axis=0)
            body = _component_at(labels, marks[[KNEE[name], HIPS[0], HIPS[1]], :2], 0.1 * head)
            xs = np.r_[knee[0], points[:, 0]]
            leg_at_edge = body > 0 and _runs_under(bottom_labels == body, xs.min() - 0.5 * head, xs.max() + 0.5 * head)
            foot_seen = bool(points[:, 3].max() >= vis)
            across = bool(((points[:, 0] >= 0) & (points[:, 0] < w)).all())  # not gone past a side edge
            if leg_at_edge and across and (extent[3] >= h or not foot_seen):
                reach = max(extent[3], float(h)) - h
                share = float(np.clip(reach / max(extent[3] - extent[1], 1.0), 0, 1))
                full = (extent[0], extent[1], extent[2], max(extent[3], h + 0.25 * head))
                parts.whole.discard((who, name))
                parts.cuts.append(PartCut(who, name, "bottom", round(max(share, params.foot_outside), 4),
                                          params.foot_outside, extent, full, margin,
                                          "person mask at the edge under a knee in the frame"))
        torso = marks[list(SHOULDERS + HIPS)]
        shoulders = float(np.linalg.norm(marks[SHOULDERS[0], :2] - marks[SHOULDERS[1], :2]))
        extent = points_box(torso[:, :2], shoulders / 6)
        seen = any(_inside(p[:2], size) and p[3] >= vis for p in torso)
        shares = _outside(extent, size)
        for edge, other in (("left", "right"), ("right", "left")):
            if seen and shares[edge] >= params.torso_outside and shares[edge] >= 2 * shares[other]:
                parts.cuts.append(PartCut(who, "torso", edge, round(shares[edge], 4), params.torso_outside,
                                          extent, extent, margin, by))
        if seen and max(shares["left"], shares["right"]) < params.torso_outside:
            parts.whole.add((who, "torso"))

    others = [i for i, f in enumerate(people.faces)
              if i != pose_face and float(f.box[2] - f.box[0]) >= params.main_face_ratio * largest]
    others.sort(key=lambda i: float(people.faces[i].box[0] + people.faces[i].box[2]))
    for rank, i in enumerate(others, start=2):
        parts.people += 1
        face = _face_geometry(people.faces[i], face_by)
        extent = face.extent(params.hairline_d)
        _judge(parts, f"person {rank}", "face", extent, face.full(), params.face_outside, _overlaps(extent, size),
               params.margin_heads * face.head_height, face.measured_by)
    return parts


def people_in(image: AnalysisImage) -> People:
    """The shared analyses of ``image`` as :class:`People` in its own pixels."""
    pose = analyses.pose(image)
    faces = [FaceMarks(box=f.box.astype(np.float64), keypoints=f.keypoints.astype(np.float64))
             for f in analyses.faces(image)]
    return People(size=image.size, landmarks=None if pose is None else pose.landmarks.astype(np.float64),
                  segmentation=None if pose is None or pose.segmentation is None else pose.segmentation >= 0.5,
                  faces=faces, source="candidate")


# ---- source: re-framing ---------------------------------------------------------------------------


def _gray_at(image: AnalysisImage, side: int) -> tuple[np.ndarray, float]:
    return shrink(cv2.cvtColor(image.uint8, cv2.COLOR_RGB2GRAY), side)


def orb_features(image: AnalysisImage) -> tuple[np.ndarray, np.ndarray | None, float] | None:
    """ORB keypoint positions (N x 2, px at MATCH_SIDE), descriptors and the scale of that copy (shared);
    None for an image under 64 px a side at that size."""

    def compute() -> tuple[np.ndarray, np.ndarray | None, float] | None:
        gray, scale = _gray_at(image, MATCH_SIDE)
        if min(gray.shape[:2]) < 64:
            return None
        keypoints, descriptors = cv2.ORB_create(nfeatures=1500).detectAndCompute(gray, None)
        return np.float32([k.pt for k in keypoints]).reshape(-1, 2), descriptors, scale

    return image.shared(f"orb:{MATCH_SIDE}", compute)


def reframing(source: AnalysisImage, candidate: AnalysisImage) -> np.ndarray | None:
    """2 x 3 similarity transform from source pixels to candidate pixels when the candidate re-frames
    the source (crop, zoom, shift, outpaint), or None when no such transform explains the pixels."""
    source_features, candidate_features = orb_features(source), orb_features(candidate)
    if source_features is None or candidate_features is None:
        return None  # ORB's pyramid (8 levels at 1.2, 31-px patches) crashes in resize on a tiny strip
    (kp1, des1, s_scale), (kp2, des2, d_scale) = source_features, candidate_features
    if des1 is None or des2 is None or len(kp1) < MIN_INLIERS or len(kp2) < MIN_INLIERS:
        return None
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(des1, des2, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.75 * p[1].distance]
    if len(good) < MIN_INLIERS:
        return None
    a = kp1[[m.queryIdx for m in good]] / s_scale
    b = kp2[[m.trainIdx for m in good]] / d_scale
    matrix, inliers = cv2.estimateAffinePartial2D(a, b, method=cv2.RANSAC, ransacReprojThreshold=3.0 / d_scale)
    if matrix is None or inliers is None:
        return None
    count = int(inliers.sum())
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    angle = float(np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])))
    if count < MIN_INLIERS or count < MIN_INLIER_SHARE * len(good) or not 0.2 <= scale <= 5 or abs(angle) > 3:
        return None
    return matrix


def mapped_people(people: People, matrix: np.ndarray, size: tuple[int, int]) -> People:
    """``people`` measured in the source, moved into the candidate's frame by ``matrix``."""

    def move(points: np.ndarray) -> np.ndarray:
        return points @ matrix[:, :2].T + matrix[:, 2]

    marks = None
    if people.landmarks is not None:
        marks = people.landmarks.copy()
        marks[:, :2] = move(marks[:, :2])
    faces = []
    for face in people.faces:
        corners = move(face.box.reshape(2, 2))
        faces.append(FaceMarks(box=np.r_[corners.min(axis=0), corners.max(axis=0)], keypoints=move(face.keypoints)))
    return People(size=size, landmarks=marks, segmentation=None, faces=faces,
                  source="source mapped into the candidate")


def _source_image(ctx: CheckContext) -> AnalysisImage | None:
    if ctx.source is None:
        return None
    if ctx.aligned:
        # a mirrored result is framed like the source mirrored: its people are judged in that frame
        return mirrored_source(ctx) if ctx.registration.flipped else ctx.source

    def build() -> AnalysisImage:  # framed differently: the context's copy is stretched, measure it as is
        decoded = ctx.source.decoded
        return AnalysisImage(decoded, analysis_size([decoded.size], DEFAULT_MAX_SIDE))

    return ctx.shared("source_own_aspect", build)


# ---- the check ------------------------------------------------------------------------------------


def extension(cuts: list[PartCut], size: tuple[int, int]) -> dict[str, float]:
    """Pixels (of ``size``) to add on each cut edge so that every cut part fits with its margin."""
    w, h = size
    out: dict[str, float] = {}
    for cut in cuts:
        x0, y0, x1, y1 = cut.full
        need = {"top": -y0, "bottom": y1 - h, "left": -x0, "right": x1 - w}[cut.edge] + cut.margin
        out[cut.edge] = max(out.get(cut.edge, 0.0), need, 0.0)
    return out


@dataclass
class CropMeasure:
    cuts: list[PartCut]
    inherited: list[PartCut]  # cut in the candidate and already in the source (not in ``cuts``)
    whole_in_source: list[PartCut]
    people: int
    reframed: bool | None  # None without a source
    mask_at_edge: dict[str, float]


def measure_crop(ctx: CheckContext, params: CropParams) -> CropMeasure:
    """Cuts of the candidate's main people, from its own analyses and, with a source, the source's."""
    own = people_in(ctx.candidate)
    found = measure_people(own, params)
    cuts = {c.key: c for c in found.cuts}
    people = found.people
    reframed, source_parts, inherited = None, None, []
    source = _source_image(ctx)
    if source is not None:
        source_people = people_in(source)
        source_parts = measure_people(source_people, params)
        if _frame_unmoved(ctx, source):
            matrix = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        else:
            matrix = ctx.shared("subject_cropped:reframing", lambda: reframing(source, ctx.candidate))
        reframed = matrix is not None
        if matrix is not None and (source_people.landmarks is not None or source_people.faces):
            mapped = measure_people(mapped_people(source_people, matrix, ctx.size), params)
            for cut in mapped.cuts:
                cuts.setdefault(cut.key, cut)
            people = max(people, mapped.people)
        source_cut = {(c.person, c.part) for c in source_parts.cuts}
        if matrix is None or _same_frame(matrix, ctx.size):
            # The frame did not move: its cuts are the source's unless the source held the part clearly whole.
            inherited = [c for c in cuts.values()
                         if not source_parts.clearly_whole(c.person, c.part, c.edge, c.threshold)]
        else:
            inherited = [c for c in cuts.values() if (c.person, c.part) in source_cut]
        cuts = {k: c for k, c in cuts.items() if c not in inherited}
    if people == 0:
        raise CheckSkipped("no person found (no pose, no face" + (", none in the source either)" if source is
                                                                  not None else ")") + ": nothing to judge")
    mask_at_edge = {}
    if own.segmentation is not None:
        seg = own.segmentation
        mask_at_edge = {"top": float(seg[0].mean()), "bottom": float(seg[-1].mean()),
                        "left": float(seg[:, 0].mean()), "right": float(seg[:, -1].mean())}
    whole = [c for c in cuts.values() if source_parts is not None and (c.person, c.part) in source_parts.whole]
    return CropMeasure(cuts=list(cuts.values()), inherited=inherited, whole_in_source=whole, people=people,
                       reframed=reframed, mask_at_edge=mask_at_edge)


def _frame_unmoved(ctx: CheckContext, source: AnalysisImage) -> bool:
    """True when the registration already found the candidate in the source's frame without fitting a
    move (:attr:`Registration.matched_unmoved`): no re-framing could explain the pixels better, and
    ORB matching is not needed."""
    return source is ctx.source and ctx.aligned and ctx.registration.matched_unmoved


def _same_frame(matrix: np.ndarray, size: tuple[int, int]) -> bool:
    """A source-to-candidate similarity transform that leaves the frame where it was."""
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    return (abs(scale - 1.0) <= SAME_FRAME_SCALE and abs(matrix[0, 2]) <= SAME_FRAME_SHIFT * size[0]
            and abs(matrix[1, 2]) <= SAME_FRAME_SHIFT * size[1])


@register_check("subject_cropped", CropParams, inheritable=True, judge_source_alone=False)
def check_subject_cropped(ctx: CheckContext, params: CropParams):
    """A main person's face, hands, feet or torso cut by the frame border; canvas extension per side."""
    measure = measure_crop(ctx, params)
    inherited = not measure.cuts
    cuts = measure.cuts or measure.inherited
    if not cuts:
        return []
    s = ctx.scale_to_candidate
    w, h = ctx.candidate.original_size
    grow = extension(cuts, ctx.size)
    edges = [e for e in EDGES if e in grow]
    extend = {e: int(np.ceil(grow[e] * s)) for e in edges}
    extend_fraction = {e: round(extend[e] / (w if e in ("left", "right") else h), 4) for e in edges}

    aw, ah = ctx.size
    boxes = [(max(0.0, c.extent[0]), max(0.0, c.extent[1]), min(aw, c.extent[2]), min(ah, c.extent[3])) for c in cuts]
    boxes = [b for b in boxes if b[2] > b[0] and b[3] > b[1]] or [(0, 0, aw, ah)]
    region = ctx.box_region(union_box(boxes), digits=4)

    worst = max(cuts, key=lambda c: c.outside / c.threshold)
    grow_text = ", ".join(f"{e} by {extend[e]} px ({extend_fraction[e]:.0%})" for e in edges)
    whole_names = sorted({f"{c.person}: {c.part}" for c in measure.whole_in_source})
    tail = ", whole in the source" if whole_names else ""
    if inherited:
        tail = ", as the source's frame already did"
    message = f"The frame cuts {_describe(cuts)}{tail}: extend the canvas {grow_text}."
    evidence = {
        "edges": edges,
        "parts": [{"person": c.person, "part": c.part, "edge": c.edge, "outside": c.outside,
                   "measured_by": c.measured_by} for c in cuts],
        "extend": extend,
        "extend_fraction": extend_fraction,
        "people_judged": measure.people,
        "mask_at_edge": {e: round(v, 4) for e, v in measure.mask_at_edge.items()},
    }
    if measure.reframed is not None:
        evidence["source_reframed"] = measure.reframed
        evidence["whole_in_source"] = whole_names
        evidence["cut_in_source"] = sorted({f"{c.person}: {c.part}" for c in measure.inherited})
    return [make_finding("subject_cropped", params, score=worst.outside, threshold=worst.threshold,
                         unit="share of the body part outside the frame", message=message,
                         region=region, evidence=evidence, inherited=inherited)]


def _describe(cuts: list[PartCut]) -> str:
    """'the main subject's face at the top and left foot and right foot at the bottom; person 2's face at the left'."""
    by_person: dict[str, dict[str, list[str]]] = {}
    for cut in cuts:
        by_person.setdefault(cut.person, {}).setdefault(cut.edge, []).append(cut.part)
    phrases = []
    for person, edges in by_person.items():
        owner = "the main subject's" if person == "main subject" else f"{person}'s"
        listed = [f"{_and(parts)} at the {edge}" for edge, parts in edges.items()]
        phrases.append(f"{owner} {_and(listed)}")
    return "; ".join(phrases)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
