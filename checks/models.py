"""Every model file the checks use: where it comes from, where it was found, how to install it.

Nothing here downloads anything or imports a heavy library: model files are located by path
(``importlib.util.find_spec`` finds an installed package's folder without running its
``__init__``). A check asks for a model with :func:`locate`, which returns its path or raises
:class:`ModelMissing` with one line naming every place it looked and the exact command or path that
installs it. ``fixloop models`` prints :func:`model_status` for all of them.

Models:

- MediaPipe 0.10.21's bundled TFLite models (the wheel carries the weights), used by
  ``checks/analyses.py``: pose (detector + full landmark model), full-range face detection, hands
  (full palm detector + full landmark model) and selfie segmentation.
- dlib's 5-point shape predictor and ResNet face descriptor, shipped by the ``face-recognition-models``
  wheel and run by ``dlib-bin`` (the offline identity embedder).
- InsightFace's ArcFace ``w600k_r50.onnx`` from the ``buffalo_l`` pack, run with onnxruntime (the
  optional identity embedder). It cannot be installed with pip: it sits in InsightFace's model root
  (``~/.insightface/models/buffalo_l``, or ``$INSIGHTFACE_HOME/models/buffalo_l``), or at a path
  given by ``FIXLOOP_INSIGHTFACE_MODEL`` or the policy.

MediaPipe's native code (TFLite, absl) prints start-up notes to stderr when its models load and first
run. No module of the checks touches process state to hide them; an application that owns its process
calls :func:`quiet_native_logs` once at start.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

MEDIAPIPE_PIN = "mediapipe==0.10.21"
DLIB_MODELS_PIN = "face-recognition-models==0.3.0"
INSIGHTFACE_ENV = "FIXLOOP_INSIGHTFACE_MODEL"
INSIGHTFACE_HOME_ENV = "INSIGHTFACE_HOME"
ARCFACE_FILE = "w600k_r50.onnx"
ARCFACE_PACK = "buffalo_l"
INSIGHTFACE_INSTALL = (
    "on a machine that is online: pip install insightface, then "
    "python -c \"import insightface; insightface.app.FaceAnalysis(name='buffalo_l').prepare(ctx_id=-1)\" "
    "and copy ~/.insightface/models/buffalo_l/ to this machine's ~/.insightface/models/buffalo_l/ "
    f"(or set {INSIGHTFACE_ENV}=/path/to/{ARCFACE_FILE})"
)


class ModelMissing(RuntimeError):
    """A model file a check needs is not on this machine (the message says how to install it)."""


@dataclass(frozen=True)
class ModelSpec:
    """One model file: what it is, who uses it, where to look for it and how to install it."""

    name: str  # stable id, e.g. "dlib_face_descriptor"
    file: str  # file name
    what: str  # one line for a person
    used_by: tuple[str, ...]  # checks or shared analyses
    install: str  # the exact command or path that installs it
    candidates: Callable[[str | None], list[Path]]  # where to look, in order (argument: an explicit path)


@dataclass(frozen=True)
class ModelStatus:
    spec: ModelSpec
    path: Path | None  # where it was found, or None
    looked: tuple[Path, ...]  # every place it looked

    @property
    def found(self) -> bool:
        return self.path is not None

    @property
    def size(self) -> int | None:
        return None if self.path is None else self.path.stat().st_size


def package_dir(package: str) -> Path | None:
    """The installed folder of ``package``, found without importing it (None when not installed)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _in_package(package: str, relative: str) -> Callable[[str | None], list[Path]]:
    def candidates(_explicit: str | None) -> list[Path]:
        root = package_dir(package)
        return [Path(f"<{package} is not installed>") / relative] if root is None else [root / relative]

    return candidates


def insightface_candidates(explicit: str | None = None) -> list[Path]:
    """Where the ArcFace model is looked for, in order: the policy's path, ``FIXLOOP_INSIGHTFACE_MODEL``,
    ``$INSIGHTFACE_HOME/models/buffalo_l``, ``~/.insightface/models/buffalo_l``. A folder given as a
    path is searched for ``w600k_r50.onnx`` (directly or in ``models/buffalo_l`` below it)."""
    looked: list[Path] = []

    def add(path: Path) -> None:
        if path.suffix == ".onnx":
            looked.append(path)
        else:
            looked.extend([path / ARCFACE_FILE, path / ARCFACE_PACK / ARCFACE_FILE,
                           path / "models" / ARCFACE_PACK / ARCFACE_FILE])

    if explicit:
        add(Path(explicit).expanduser())
    if os.environ.get(INSIGHTFACE_ENV):
        add(Path(os.environ[INSIGHTFACE_ENV]).expanduser())
    if os.environ.get(INSIGHTFACE_HOME_ENV):
        looked.append(Path(os.environ[INSIGHTFACE_HOME_ENV]).expanduser() / "models" / ARCFACE_PACK / ARCFACE_FILE)
    looked.append(Path.home() / ".insightface" / "models" / ARCFACE_PACK / ARCFACE_FILE)
    return looked


def _mediapipe(name: str, relative: str, what: str, used_by: str) -> ModelSpec:
    return ModelSpec(name=name, file=Path(relative).name, what=what, used_by=(used_by,),
                     install=f"pip install {MEDIAPIPE_PIN} (bundled in the wheel)",
                     candidates=_in_package("mediapipe", relative))


def _dlib(name: str, file: str, what: str) -> ModelSpec:
    return ModelSpec(name=name, file=file, what=what, used_by=("identity_drift", "subjects_swapped"),
                     install=f"pip install {DLIB_MODELS_PIN} dlib-bin",
                     candidates=_in_package("face_recognition_models", f"models/{file}"))


MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add a model to the registry (a check with a new model file registers it here)."""
    if spec.name in MODELS:
        raise ValueError(f"a model named {spec.name!r} is already registered")
    MODELS[spec.name] = spec
    return spec


for _spec in [
    # checks/analyses.py: mp.solutions.pose.Pose(model_complexity=1)
    _mediapipe("mediapipe_pose_detector", "modules/pose_detection/pose_detection.tflite",
               "MediaPipe pose detector (finds the person for the landmark model)", "analyses.pose"),
    _mediapipe("mediapipe_pose_landmarks", "modules/pose_landmark/pose_landmark_full.tflite",
               "MediaPipe pose landmarks, full model: 33 body points and the person mask", "analyses.pose"),
    # mp.solutions.face_detection.FaceDetection(model_selection=1)
    _mediapipe("mediapipe_face_detector", "modules/face_detection/face_detection_full_range_sparse.tflite",
               "MediaPipe full-range face detector: face boxes and 6 keypoints", "analyses.faces"),
    # mp.solutions.hands.Hands(model_complexity=1)
    _mediapipe("mediapipe_palm_detector", "modules/palm_detection/palm_detection_full.tflite",
               "MediaPipe palm detector, full model", "analyses.hands"),
    _mediapipe("mediapipe_hand_landmarks", "modules/hand_landmark/hand_landmark_full.tflite",
               "MediaPipe hand landmarks, full model: 21 points per hand", "analyses.hands"),
    # mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
    _mediapipe("mediapipe_selfie_segmentation", "modules/selfie_segmentation/selfie_segmentation.tflite",
               "MediaPipe selfie segmentation (general model): person mask", "analyses.person_mask"),
    _dlib("dlib_shape_predictor_5", "shape_predictor_5_face_landmarks.dat",
          "dlib 5-point face shape predictor (aligns the face chip for the descriptor)"),
    _dlib("dlib_face_descriptor", "dlib_face_recognition_resnet_model_v1.dat",
          "dlib ResNet face descriptor, 128-d (the offline identity embedder)"),
    ModelSpec(name="insightface_arcface", file=ARCFACE_FILE,
              what="InsightFace ArcFace R50 (buffalo_l pack), 512-d (optional identity embedder)",
              used_by=("identity_drift", "subjects_swapped"), install=INSIGHTFACE_INSTALL,
              candidates=insightface_candidates),
]:
    register_model(_spec)


def model_status(name: str, explicit: str | None = None) -> ModelStatus:
    """Where model ``name`` is (first existing candidate), and every place that was looked at."""
    spec = MODELS[name]
    looked = tuple(spec.candidates(explicit))
    found = next((p for p in looked if p.is_file()), None)
    return ModelStatus(spec=spec, path=found, looked=looked)


def locate(name: str, explicit: str | None = None) -> Path:
    """The path of model ``name``; raises :class:`ModelMissing` saying where it looked and how to install it.

    ``explicit`` is a path from the policy, searched first (for models that accept one).
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    status = model_status(name, explicit)
    if status.path is None:
        spec = status.spec
        places = ", ".join(str(p) for p in status.looked)
        raise ModelMissing(f"{spec.what}: {spec.file} not found (looked in {places}); install: {spec.install}")
    return status.path


def all_status() -> list[ModelStatus]:
    return [model_status(name) for name in MODELS]


# ---- native log noise -------------------------------------------------------------------------------

NATIVE_LOGS_ENV = "FIXLOOP_NATIVE_LOGS"  # "1": leave the native libraries' notes on stderr as they are

# The stderr filter: a tiny child process between the process's file descriptor 2 and the real stderr.
# It drops TFLite's "INFO: ..." notes, absl's note that it logs to stderr before initialisation, and
# absl/glog INFO and WARNING lines ("W0000 00:00:1796288389.558857   12718 file.cc:114] ..."), and
# passes every other byte on (errors, fatal messages, other programs' output). It reads until every
# writer has closed the pipe, so what a crashing process writes last still arrives.
_FILTER = r"""
import os, re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
note = re.compile(rb"INFO: |WARNING: All log messages before absl::InitializeLog\(\)|[IW]\d{4}\S* [\d:.]+ +\d+ [^ :]+:\d+\] ")
out, pending = sys.stdout.buffer, b""
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    pending += chunk
    *lines, pending = pending.split(b"\n")
    for line in lines:
        if not note.match(line):
            out.write(line + b"\n")
    if pending[:1] not in (b"", b"I", b"W"):  # a partial line that cannot be a note: pass it on now
        out.write(pending)
        pending = b""
    out.flush()
if pending and not note.match(pending):
    out.write(pending)
    out.flush()
"""

_quiet_lock = threading.Lock()
_quieted = False
_filter_process: subprocess.Popen | None = None  # kept, so the running filter is not reported as leaked


def quiet_native_logs() -> bool:
    """Hide the start-up notes MediaPipe's native code prints to stderr. For the application that owns
    the process (a command-line main, a server's start-up), called once before any check runs; a
    library never calls it. Returns True when it changed anything (it acts once per process).

    - ``GLOG_minloglevel=2`` and ``TF_CPP_MIN_LOG_LEVEL=3`` are set unless already set (they quiet
      glog and TensorFlow builds that read them);
    - MediaPipe 0.10's absl logging and TFLite's logger have no setting reachable from Python, so
      file descriptor 2 is routed through a small filter process that drops their INFO and WARNING
      lines and passes everything else on. Python's own ``sys.stderr`` is re-pointed at the real
      stderr, so tracebacks and messages never go through the filter.

    ``FIXLOOP_NATIVE_LOGS=1`` leaves stderr as it is (for reading the notes)."""
    global _quieted
    with _quiet_lock:
        if _quieted or os.environ.get(NATIVE_LOGS_ENV) == "1":
            return False
        _quieted = True
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        if os.name == "posix" and sys.executable:
            _filter_native_stderr()
        return True


def _filter_native_stderr() -> None:
    global _filter_process
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
        real = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to quiet
        return
    try:
        read_end, write_end = os.pipe()
        _filter_process = subprocess.Popen([sys.executable, "-I", "-S", "-c", _FILTER], stdin=read_end,
                                           stdout=real, close_fds=True, start_new_session=True)
    except OSError:
        os.close(real)
        return
    os.close(read_end)
    if sys.stderr is not None and _fileno(sys.stderr) == 2:
        # Python writes straight to the real stderr (same encoding, line-buffered as before)
        sys.stderr = open(os.dup(real), "w", encoding=sys.stderr.encoding, errors=sys.stderr.errors,
                          buffering=1, closefd=True)
    os.dup2(write_end, 2)
    os.close(write_end)
    os.close(real)


def _fileno(stream) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
