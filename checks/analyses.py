"""Shared analyses of people: pose, person mask, faces and hands, computed once per image.

Every model here is one of MediaPipe 0.10.21's bundled models (the wheel carries the weights, so
nothing is downloaded). Each model is loaded once per process and guarded by a lock (a MediaPipe
solution graph is not re-entrant); each result is cached on the :class:`AnalysisImage`, so the
checks that need the same analysis (crop, hands, identity) share one inference.

Coordinates are pixels of the analysis image (x right, y down).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from checks.context import AnalysisImage

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


_LOCK = threading.Lock()


@lru_cache(maxsize=None)
def _pose_model():
    import mediapipe as mp

    return mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=True,
                                  min_detection_confidence=0.5)


@lru_cache(maxsize=None)
def _face_model():
    import mediapipe as mp

    # model 1 = full-range (faces up to about 5 m), which also covers group and body shots
    return mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)


@lru_cache(maxsize=None)
def _hands_model():
    import mediapipe as mp

    return mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=8, model_complexity=1,
                                    min_detection_confidence=0.3)


@lru_cache(maxsize=None)
def _segmentation_model():
    import mediapipe as mp

    return mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)


def _process(model, rgb: np.ndarray):
    with _LOCK:
        return model.process(rgb)


def pose(image: AnalysisImage) -> Pose | None:
    """Body landmarks and person mask of the most prominent person, or None when nobody is found."""

    def compute() -> Pose | None:
        h, w = image.uint8.shape[:2]
        result = _process(_pose_model(), image.uint8)
        if result.pose_landmarks is None:
            return None
        points = np.array([[p.x * w, p.y * h, p.z * w, p.visibility] for p in result.pose_landmarks.landmark],
                          dtype=np.float32)
        mask = None if result.segmentation_mask is None else result.segmentation_mask.astype(np.float32)
        return Pose(landmarks=points, segmentation=mask)

    return image.shared("pose", compute)


def faces(image: AnalysisImage) -> list[Face]:
    """Face boxes and keypoints, most confident first."""

    def compute() -> list[Face]:
        h, w = image.uint8.shape[:2]
        result = _process(_face_model(), image.uint8)
        found = []
        for detection in result.detections or []:
            rel = detection.location_data.relative_bounding_box
            box = np.array([rel.xmin * w, rel.ymin * h, (rel.xmin + rel.width) * w, (rel.ymin + rel.height) * h],
                           dtype=np.float32)
            keypoints = np.array([[k.x * w, k.y * h] for k in detection.location_data.relative_keypoints],
                                 dtype=np.float32)
            found.append(Face(box=box, score=float(detection.score[0]), keypoints=keypoints))
        return sorted(found, key=lambda f: -f.score)

    return image.shared("faces", compute)


def hands(image: AnalysisImage) -> list[Hand]:
    """Hand landmarks found on the whole frame."""

    def compute() -> list[Hand]:
        h, w = image.uint8.shape[:2]
        result = _process(_hands_model(), image.uint8)
        found = []
        for marks, handed in zip(result.multi_hand_landmarks or [], result.multi_handedness or []):
            points = np.array([[p.x * w, p.y * h, p.z * w] for p in marks.landmark], dtype=np.float32)
            label = handed.classification[0]
            box = np.array([points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()],
                           dtype=np.float32)
            found.append(Hand(landmarks=points, handedness=label.label, score=float(label.score), box=box))
        return found

    return image.shared("hands", compute)


def person_mask(image: AnalysisImage) -> np.ndarray:
    """Probability that each pixel belongs to a person (MediaPipe selfie segmentation), H x W float32."""

    def compute() -> np.ndarray:
        result = _process(_segmentation_model(), image.uint8)
        return result.segmentation_mask.astype(np.float32)

    return image.shared("person_mask", compute)
