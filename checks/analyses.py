"""Shared analyses of people: pose, person mask, faces and hands, computed once per image.

Every model here is one of MediaPipe 0.10.21's bundled models (the wheel carries the weights, so
nothing is downloaded). Each model is loaded once per process, on first use, and run by one thread
at a time (a MediaPipe solution graph is not re-entrant: each has its own lock, and its results are
copied out before the lock is released), so checks running in several threads of one process give
the reports they give one at a time. A candidate that is its source only re-lit, re-coloured or
re-encoded (same frame, :mod:`fixloop.checks.content`) is not analysed: its people are the source's
(:func:`content_of`). Each result is cached on the :class:`AnalysisImage` (and in the
process's analysis store, by the image's pixels), so the checks that need the same analysis (crop,
hands, identity) share one inference, and a source checked again is not analysed again. Hands found
on a crop are remembered by the crop's pixels: a hand the edit left alone is looked at once.

Importing this module changes no process state: MediaPipe's native start-up notes on stderr are
quieted, if at all, by the application that owns the process (:func:`fixloop.checks.models.quiet_native_logs`).

Coordinates are pixels of the analysis image (x right, y down).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from fixloop.checks.context import AnalysisImage, Memo
from fixloop.checks.geometry import points_box

# MediaPipe Pose landmark indices used by the checks.
POSE_NOSE, POSE_LEFT_EYE, POSE_RIGHT_EYE, POSE_LEFT_EAR, POSE_RIGHT_EAR = 0, 2, 5, 7, 8
POSE_LEFT_SHOULDER, POSE_RIGHT_SHOULDER = 11, 12
POSE_LEFT_WRIST, POSE_RIGHT_WRIST = 15, 16
POSE_LEFT_HIP, POSE_RIGHT_HIP = 23, 24
POSE_LEFT_ANKLE, POSE_RIGHT_ANKLE = 27, 28
POSE_LEFT_HEEL, POSE_RIGHT_HEEL, POSE_LEFT_FOOT, POSE_RIGHT_FOOT = 29, 30, 31, 32
POSE_HEAD = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
POSE_HANDS = (15, 16, 17, 18, 19, 20, 21, 22)
POSE_FEET = (27, 28, 29, 30, 31, 32)


@dataclass(frozen=True)
class Pose:
    """One person's body landmarks (MediaPipe Pose finds the most prominent person)."""

    landmarks: np.ndarray  # 33 x 4: x, y (px), z (relative depth), visibility in [0, 1]
    segmentation: np.ndarray | None  # H x W float32 person probability, or None

    def visible(self, index: int, threshold: float = 0.5) -> bool:
        return bool(self.landmarks[index, 3] >= threshold)


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # x0, y0, x1, y1 (px, float, may reach past the image when the face is cut)
    score: float
    keypoints: np.ndarray  # 6 x 2 px: right eye, left eye, nose tip, mouth, right ear, left ear


@dataclass(frozen=True)
class Hand:
    landmarks: np.ndarray  # 21 x 3: x, y (px), z (relative depth)
    handedness: str  # "Left" / "Right" as MediaPipe labels it (it assumes a mirrored, selfie image)
    score: float  # handedness classification score
    box: np.ndarray  # x0, y0, x1, y1 of the landmarks (px)


class _Graph:
    """One MediaPipe solution graph, built on first use and run by one thread at a time."""

    def __init__(self, build: Callable[[], Any]):
        self._build = build
        self._graph = None
        self._lock = threading.Lock()

    def run(self, rgb: np.ndarray, read: Callable[[Any], Any]) -> Any:
        """``read(result)`` of the graph's result for ``rgb``, taken while the graph is held (the
        result's arrays may point into the graph's buffers)."""
        with self._lock:
            if self._graph is None:
                self._graph = self._build()
            return read(self._graph.process(rgb))


def _pose_graph():
    import mediapipe as mp

    return mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True,
                                  min_detection_confidence=0.5)


def _face_graph():
    import mediapipe as mp

    # model 1 = full-range (faces up to about 5 m), which also covers group and body shots
    return mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)


def _hands_graph():
    import mediapipe as mp

    return mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=8, model_complexity=1,
                                    min_detection_confidence=0.3)


def _segmentation_graph():
    import mediapipe as mp

    return mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)


_POSE_GRAPH = _Graph(_pose_graph)
_FACE_GRAPH = _Graph(_face_graph)
_HANDS_GRAPH = _Graph(_hands_graph)
_SEGMENTATION_GRAPH = _Graph(_segmentation_graph)


def _read_hands(result, w: int, h: int, k: float = 1.0, x0: float = 0.0, y0: float = 0.0) -> list[Hand]:
    """MediaPipe Hands' result on a ``w`` x ``h`` picture -> hands in image pixels, for a picture that
    is the image's crop at (``x0``, ``y0``) enlarged ``k`` times (the whole image: the defaults)."""
    found = []
    for marks, handed in zip(result.multi_hand_landmarks or [], result.multi_handedness or []):
        points = np.array([[p.x * w / k + x0, p.y * h / k + y0, p.z * w / k] for p in marks.landmark],
                          dtype=np.float32)
        label = handed.classification[0]
        box = np.array(points_box(points[:, :2]), dtype=np.float32)
        found.append(Hand(landmarks=points, handedness=label.label, score=float(label.score), box=box))
    return found


def content_of(image: AnalysisImage) -> AnalysisImage:
    """The image whose pixels the analyses of ``image`` are computed on: its source when the candidate
    shows the source's content unchanged (re-lit, re-coloured or re-encoded, same frame:
    :mod:`fixloop.checks.content`), else ``image`` itself."""
    return image.same_content_as or image


def pose(image: AnalysisImage) -> Pose | None:
    """Body landmarks and person mask of the most prominent person, or None when nobody is found."""
    image = content_of(image)

    def compute() -> Pose | None:
        h, w = image.uint8.shape[:2]

        def read(result) -> Pose | None:
            if result.pose_landmarks is None:
                return None
            points = np.array([[p.x * w, p.y * h, p.z * w, p.visibility] for p in result.pose_landmarks.landmark],
                              dtype=np.float32)
            mask = None if result.segmentation_mask is None else result.segmentation_mask.astype(np.float32)
            return Pose(landmarks=points, segmentation=mask)

        return _POSE_GRAPH.run(image.uint8, read)

    return image.shared("pose", compute)


def faces(image: AnalysisImage) -> list[Face]:
    """Face boxes and keypoints, most confident first."""
    image = content_of(image)

    def compute() -> list[Face]:
        h, w = image.uint8.shape[:2]

        def read(result) -> list[Face]:
            found = []
            for detection in result.detections or []:
                rel = detection.location_data.relative_bounding_box
                box = np.array([rel.xmin * w, rel.ymin * h, (rel.xmin + rel.width) * w, (rel.ymin + rel.height) * h],
                               dtype=np.float32)
                keypoints = np.array([[k.x * w, k.y * h] for k in detection.location_data.relative_keypoints],
                                     dtype=np.float32)
                found.append(Face(box=box, score=float(detection.score[0]), keypoints=keypoints))
            return found

        return sorted(_FACE_GRAPH.run(image.uint8, read), key=lambda f: -f.score)

    return image.shared("faces", compute)


def hands(image: AnalysisImage) -> list[Hand]:
    """Hand landmarks found on the whole frame."""
    image = content_of(image)

    def compute() -> list[Hand]:
        h, w = image.uint8.shape[:2]
        return _HANDS_GRAPH.run(image.uint8, lambda result: _read_hands(result, w, h))

    return image.shared("hands", compute)


def person_mask(image: AnalysisImage) -> np.ndarray:
    """Probability that each pixel belongs to a person (MediaPipe selfie segmentation), H x W float32."""
    image = content_of(image)

    def compute() -> np.ndarray:
        return _SEGMENTATION_GRAPH.run(image.uint8, lambda result: result.segmentation_mask.astype(np.float32))

    return image.shared("person_mask", compute)


# ---- hands re-detected on crops (small hands in wide shots, targeted look-ups) ------------------

POSE_LEFT_ELBOW, POSE_RIGHT_ELBOW = 13, 14
# A crop around a pose wrist spans this many forearm lengths (elbow to wrist) and is centred a third
# of a forearm past the wrist, where the hand is; at least HAND_CROP_MIN_PX, resampled to HAND_CROP_PX.
WRIST_CROP_FOREARMS = 2.5
HAND_CROP_MIN_PX = 48
HAND_CROP_PX = 256


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def same_hand(a: Hand, b: Hand) -> bool:
    """Two detections of one hand: landmarks within a third of a palm on average, or boxes that
    mostly coincide (two hands side by side can share a third of their boxes)."""
    palm = max(min(float(np.linalg.norm(h.landmarks[9, :2] - h.landmarks[0, :2])) for h in (a, b)), 1.0)
    spread = float(np.mean(np.linalg.norm(a.landmarks[:, :2] - b.landmarks[:, :2], axis=1)))
    return box_iou(a.box, b.box) > 0.6 or spread < 0.33 * palm


def _hands_in_square(image: AnalysisImage, cx: float, cy: float, side: float) -> list[Hand]:
    """Hand landmarks found on a square crop centred at (cx, cy), in full-image pixels."""
    import cv2

    h, w = image.uint8.shape[:2]
    side = max(float(side), HAND_CROP_MIN_PX)
    x0, y0 = int(round(max(0.0, cx - side / 2))), int(round(max(0.0, cy - side / 2)))
    x1, y1 = int(round(min(float(w), cx + side / 2))), int(round(min(float(h), cy + side / 2)))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return []
    crop = image.uint8[y0:y1, x0:x1]
    k = HAND_CROP_PX / max(x1 - x0, y1 - y0)
    if k > 1:
        crop = cv2.resize(crop, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC)
    else:
        k = 1.0
    ch, cw = crop.shape[:2]
    crop = np.ascontiguousarray(crop)
    # the same crop at the same place (a hand the edit left alone, in the source and the candidate)
    # gives the same hands: look it up before running the graph
    key = f"{hashlib.sha256(crop.data).hexdigest()}:{crop.shape}:{k!r}:{x0}:{y0}"
    found = _CROP_HANDS.get(key)
    if found is None:
        found = _HANDS_GRAPH.run(crop, lambda result: _read_hands(result, cw, ch, k, x0, y0))
        _CROP_HANDS.put(key, found)
    return list(found)


_CROP_HANDS = Memo(64)  # hands found on recent crops


def hands_with_wrist_crops(image: AnalysisImage) -> list[Hand]:
    """The full-frame hands plus the hands found again on a crop around each visible pose wrist
    (MediaPipe Hands misses small hands in wide shots, and sees two hands side by side as one; at
    crop scale it finds them). Full-frame hands come first, in their order; a crop's hand that is
    one already found is dropped."""
    image = content_of(image)

    def compute() -> list[Hand]:
        found = list(hands(image))
        body = pose(image)
        if body is None:
            return found
        marks = body.landmarks
        for wrist, elbow in ((POSE_LEFT_WRIST, POSE_LEFT_ELBOW), (POSE_RIGHT_WRIST, POSE_RIGHT_ELBOW)):
            if marks[wrist, 3] < 0.5:
                continue
            forearm_vec = marks[wrist, :2] - marks[elbow, :2]
            forearm = float(np.linalg.norm(forearm_vec))
            if forearm < 1.0:
                continue
            h, w = image.uint8.shape[:2]
            if not (0 <= marks[wrist, 0] < w and 0 <= marks[wrist, 1] < h):
                continue
            centre = marks[wrist, :2] + forearm_vec / forearm * (forearm / 3)
            for hand in _hands_in_square(image, centre[0], centre[1], WRIST_CROP_FOREARMS * forearm):
                if not any(same_hand(hand, other) for other in found):
                    found.append(hand)
        return found

    return image.shared("hands_with_wrist_crops", compute)


def hands_in_region(image: AnalysisImage, box) -> list[Hand]:
    """Hands found on a square crop around ``box`` (x0, y0, x1, y1; twice its long side): a targeted
    second look, e.g. for a hand one image has and the other seems to lack."""
    image = content_of(image)
    x0, y0, x1, y1 = (float(v) for v in box)
    key = f"hands_in_region:{round(x0)}:{round(y0)}:{round(x1)}:{round(y1)}"
    side = 2.0 * max(x1 - x0, y1 - y0)
    return image.shared(key, lambda: _hands_in_square(image, (x0 + x1) / 2, (y0 + y1) / 2, side))
