"""Diffusion inpaint and img2img through diffusers, with ControlNet and IP-Adapter.

One entry call, :func:`diffusion_repair` (tool ``diffusers``): with a mask it inpaints, without one
it runs img2img. Any Stable Diffusion 1.x/2.x or SDXL checkpoint in the diffusers layout works, from
a local folder or a hub id (``AutoPipelineForInpainting`` / ``AutoPipelineForImage2Image`` pick the
pipeline class from the checkpoint's ``model_index.json``). Pipelines load once per process and are
cached by (model, controlnet, kind, IP-Adapter, device, dtype); an img2img pipeline of a model that
is already loaded for inpainting shares its weights (``from_pipe``).

The steps of one call:

1. check inputs: image, mask, settings (unknown or out-of-range parameters are one-line errors),
   references, control inputs, and that the model is reachable (a missing folder or a hub id that
   is not in the local cache while offline fails before anything is loaded);
2. prepare: the region to work on (the whole image, or the mask's box plus ``crop_padding`` for
   crop-first repair), its working size (the model's native side by default, both sides multiples of
   8), the control map (canny from OpenCV, an openpose skeleton drawn from MediaPipe pose landmarks,
   a user depth map or a ready-made control image) and the IP-Adapter reference;
3. run the pipeline with a generator seeded on the chosen device, so one seed gives one result;
   every conditioning input asked for must be one the pipeline takes (:func:`pipeline_arguments`:
   a control map for a pipeline without ControlNet is an error, not silently dropped);
4. post-process: back to the input's geometry, then composite-back (``tools.masks.composite``, the
   same blend and default feather as ``local.composite_back``): every pixel outside the mask is the
   input's own pixel (a hard guarantee), and the repaired area fades in over ``feather`` pixels
   inside the mask.

Parameters (``request.parameters``): ``model`` (or ``FIXLOOP_DIFFUSION_MODEL``), ``strength``
(alias ``denoise``), ``guidance`` (``guidance_scale``, ``cfg``), ``steps``, ``seed``, ``scheduler``,
``controlnet`` + ``control`` (canny | openpose | depth) + ``control_scale``, ``depth_map`` or
``control_image``, ``ip_adapter`` + ``ip_adapter_weight`` + ``ip_adapter_scale`` (the reference is
``request.references[0]``), ``size``, ``crop_padding``, ``feather``, ``device``, ``dtype``,
``local_files_only`` (default: ``HF_HUB_OFFLINE``), ``variant``, ``revision``. See
:class:`DiffusionSettings` for ranges and defaults.
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from fixloop.tools.base import (
    BackendSetting,
    BackendSpec,
    EnvVar,
    ModerationBlocked,
    RepairError,
    RepairRequest,
    RepairResult,
    check_image,
    check_mask,
    register_backend,
    register_tool,
)
from fixloop.tools.masks import composite, crop_box, default_feather, resize, resize_mask

TOOL_NAME = "diffusers"
MODEL_ENV = "FIXLOOP_DIFFUSION_MODEL"
SIZE_MULTIPLE = 8  # VAE downscale of every SD/SDXL checkpoint; the working size is a multiple of it

# Named samplers -> diffusers scheduler class and the options that make the variant.
SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm++_2m": ("DPMSolverMultistepScheduler", {}),
    "dpm++_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


class DiffusionSettings(BaseModel):
    """The tool's parameters, with the failure library's starting ranges as defaults."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, populate_by_name=True)

    model: str = Field(min_length=1, description="diffusers pipeline folder or hub id (SD 1.x/2.x, SDXL)")
    strength: float = Field(0.35, gt=0.0, le=1.0, validation_alias=AliasChoices("strength", "denoise"),
                            description="share of the input rewritten; local repair 0.15-0.35, structure 0.5-0.75")
    guidance: float = Field(5.0, ge=0.0, le=30.0, validation_alias=AliasChoices("guidance", "guidance_scale", "cfg"),
                            description="classifier-free guidance; realistic edits 4-6")
    steps: int = Field(30, ge=1, le=200, description="scheduler steps before strength (ran: int(steps * strength))")
    seed: int = Field(0, ge=0, lt=2**63)
    scheduler: str | None = Field(None, description="sampler name (see SCHEDULERS) or a diffusers scheduler class; "
                                                    "None keeps the checkpoint's own")
    controlnet: str | None = Field(None, description="ControlNet folder or hub id")
    control: Literal["canny", "openpose", "depth"] | None = None
    control_scale: float = Field(0.6, ge=0.0, le=2.0, description="soft 0.4-0.6, strong 0.6-0.8, depth up to 0.9")
    control_image: Any = Field(None, description="a ready-made control map (array or image file) at the input's size")
    depth_map: Any = Field(None, description="depth at the input's size (array or image file), near = bright")
    canny_low: int = Field(100, ge=0, le=1000)
    canny_high: int = Field(200, ge=0, le=1000)
    ip_adapter: str | None = Field(None, description="IP-Adapter folder, hub id, or weight file")
    ip_adapter_weight: str | None = Field(None, description="weight file name, e.g. ip-adapter_sd15.safetensors")
    ip_adapter_subfolder: str = ""
    ip_adapter_image_encoder: str | None = "image_encoder"
    ip_adapter_scale: float = Field(0.6, ge=0.0, le=1.5, description="style 0.4-0.6, identity 0.6-0.8")
    size: int | None = Field(None, ge=64, le=4096, description="working long side; None = the model's native side")
    crop_padding: int | None = Field(None, ge=0, description="crop-first: work on the mask's box plus this many px")
    feather: float | None = Field(None, ge=0.0, description="px over which the repair fades in inside the mask; "
                                                            "None = tools.masks.default_feather (0.5 % of the "
                                                            "diagonal, at least 2)")
    device: str = Field("auto", description="auto, cuda, cuda:N, mps or cpu")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    local_files_only: bool | None = Field(None, description="None = offline when HF_HUB_OFFLINE is set")
    variant: str | None = None
    revision: str | None = None

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, value: str | None) -> str | None:
        if value is None or value in SCHEDULERS or value.endswith("Scheduler"):
            return value
        close = difflib.get_close_matches(value, SCHEDULERS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(SCHEDULERS)}"
        raise ValueError(f"unknown scheduler {value!r}: {hint}")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "mps", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError(f"unknown device {value!r}: use auto, cuda, cuda:N, mps or cpu")

    def summary(self) -> dict[str, Any]:
        """The settings worth recording with a result (arrays left out)."""
        out = self.model_dump(exclude={"control_image", "depth_map"})
        out["control_image"] = None if self.control_image is None else _describe(self.control_image)
        out["depth_map"] = None if self.depth_map is None else _describe(self.depth_map)
        return out


def _describe(value: Any) -> str:
    return f"array {value.shape[1]}x{value.shape[0]}" if isinstance(value, np.ndarray) else str(value)


# ---- the backend ---------------------------------------------------------------------------------


def _ready(model: str | None) -> None:
    """The diffusers backend can run: torch and diffusers installed, a checkpoint named, and a
    local checkpoint folder present (a hub id is checked when it loads). Imports nothing heavy."""
    import importlib.util

    missing = [name for name in ("torch", "diffusers") if importlib.util.find_spec(name) is None]
    if missing:
        raise RepairError(f"the diffusers backend needs {' and '.join(missing)}: pip install 'fixloop[diffusion]'")
    if not model:
        raise RepairError(f"the diffusers backend needs an inpainting checkpoint: pass --model PATH_OR_HUB_ID "
                          f"or set {MODEL_ENV}")
    check_model_location(model, "diffusion model", "model_index.json")


BACKEND = register_backend(BackendSpec(
    name="diffusers", module=__name__, tool=TOOL_NAME,
    description="diffusion inpaint / img2img of a local or hub checkpoint, with ControlNet and IP-Adapter; "
                "pixels outside the mask are kept exactly",
    strength=True, control=True, prompt_style="diffusion", model_env=MODEL_ENV,
    env=(EnvVar(MODEL_ENV, "the inpainting checkpoint (folder or hub id) when --model names none"),
         EnvVar("HF_HUB_OFFLINE", "1 = load checkpoints from the local cache only"),
         EnvVar("HF_HOME", "where the hub cache lives")),
    settings=(BackendSetting("model", "", f"inpainting checkpoint (folder or hub id); '' = {MODEL_ENV}"),
              BackendSetting("controlnet", "", "ControlNet for the control-map rung; '' = that rung is skipped")),
    check=_ready))


# ---- step 1: check inputs ---------------------------------------------------------------------

def parse_settings(parameters: dict[str, Any]) -> DiffusionSettings:
    """Validate ``request.parameters``; any problem is one :class:`RepairError` line."""
    values = dict(parameters)
    if "model" not in values and os.environ.get(MODEL_ENV):
        values["model"] = os.environ[MODEL_ENV]
    try:
        return DiffusionSettings.model_validate(values)
    except ValidationError as error:
        known = set(DiffusionSettings.model_fields) | {"denoise", "guidance_scale", "cfg"}
        problems = []
        for item in error.errors():
            name = ".".join(str(part) for part in item["loc"]) or "parameters"
            if item["type"] == "extra_forbidden":
                close = difflib.get_close_matches(name, known, n=1)
                problems.append(f"unknown parameter {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            elif item["type"] == "missing" and name == "model":
                problems.append(f"no model: set parameters['model'] (a diffusers folder or hub id) or {MODEL_ENV}")
            else:
                problems.append(f"{name}: {item['msg']}")
        raise RepairError(f"{TOOL_NAME} parameters: " + "; ".join(problems)) from None


def _offline(settings: DiffusionSettings) -> bool:
    if settings.local_files_only is not None:
        return settings.local_files_only
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _looks_like_path(name: str) -> bool:
    """Hub ids are "name" or "org/name"; anything else that names a file or folder is a path."""
    return (os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name or name.count("/") > 1
            or Path(name).suffix.lower() in (".safetensors", ".ckpt", ".bin"))


def check_model_location(name: str, role: str, index_file: str) -> None:
    """A local path must exist and hold a diffusers layout; a hub id is checked when loading."""
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file():
            raise RepairError(f"{role} {name!r} is a single file: this tool loads diffusers folders; convert it once "
                              f"with diffusers' from_single_file(...).save_pretrained(FOLDER) and pass FOLDER")
        if not (path / index_file).is_file():
            raise RepairError(f"{role} folder {name!r} has no {index_file}: pass a folder written by save_pretrained")
        return
    if _looks_like_path(name):
        raise RepairError(f"{role} folder {name!r} does not exist: check the path, or pass a hub id")


def _not_available(name: str, role: str, error: Exception, offline: bool) -> RepairError:
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    if Path(name).expanduser().exists():
        return RepairError(f"{role} folder {name!r} could not be loaded: {type(error).__name__}: {reason}")
    where = "offline (HF_HUB_OFFLINE / local_files_only)" if offline else "locally or from the hub"
    return RepairError(f"{role} {name!r} is not available {where}: {type(error).__name__}: {reason} -- download it "
                       f"once with `hf download {name}` on a connected machine, or pass a local folder")


def check_inputs(request: RepairRequest) -> tuple[DiffusionSettings, np.ndarray | None]:
    image = check_image(request.image)
    mask = check_mask(request.mask, image, required=False)
    settings = parse_settings(request.parameters)
    check_model_location(settings.model, "diffusion model", "model_index.json")
    if (settings.controlnet is None) != (settings.control is None and settings.control_image is None):
        if settings.controlnet is None:
            raise RepairError("a control map needs a ControlNet: set parameters['controlnet'] to a folder or hub id")
        raise RepairError("a ControlNet needs a control map: set parameters['control'] to canny, openpose or depth, "
                          "or pass parameters['control_image']")
    if settings.control is not None and settings.control_image is not None:
        raise RepairError("give either parameters['control'] or parameters['control_image'], not both")
    if settings.control == "depth" and settings.depth_map is None:
        raise RepairError("control 'depth' needs parameters['depth_map'] (an array or image file at the input's size)")
    if settings.ip_adapter is not None:
        if not request.references:
            raise RepairError("an IP-Adapter needs a reference image: pass one in request.references")
        check_image(request.references[0], role="reference")
        weight = Path(settings.ip_adapter).expanduser()
        if not weight.is_file() and not settings.ip_adapter_weight:
            raise RepairError("set parameters['ip_adapter_weight'] to the IP-Adapter's weight file name "
                              "(e.g. ip-adapter_sd15.safetensors), or pass the weight file itself as ip_adapter")
    if settings.crop_padding is not None and mask is None:
        raise RepairError("crop_padding works around a mask: pass a mask, or drop crop_padding for img2img")
    if int(settings.steps * settings.strength) < 1:
        raise RepairError(f"steps {settings.steps} x strength {settings.strength} leaves no denoising step: "
                          f"raise steps to at least {math.ceil(1 / settings.strength)}")
    if settings.controlnet is not None:
        check_model_location(settings.controlnet, "ControlNet", "config.json")
    if settings.ip_adapter is not None and _looks_like_path(settings.ip_adapter):
        if not Path(settings.ip_adapter).expanduser().exists():
            raise RepairError(f"IP-Adapter {settings.ip_adapter!r} does not exist: check the path, or pass a hub id")
    return settings, mask


# ---- device, schedulers and the pipeline cache --------------------------------------------------

def pick_device(requested: str = "auto") -> str:
    """cuda when present, then Apple's mps, then cpu; an explicit choice is checked."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps is not None and mps.is_available())
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RepairError(f"device {requested!r} asked for but CUDA is not available: use device 'auto' or 'cpu'")
    if requested == "mps" and not mps_ok:
        raise RepairError("device 'mps' asked for but it is not available: use device 'auto' or 'cpu'")
    return requested


def pick_dtype(requested: str, device: str):
    import torch

    if requested == "auto":
        # half precision on CUDA (SDXL's VAE upcasts itself where fp16 overflows); CPU and mps stay fp32
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, requested)


def make_scheduler(name: str | None, default_config: dict[str, Any]):
    """A fresh scheduler for one run: the named sampler, or the checkpoint's own."""
    import diffusers

    if name is None:
        cls_name, extra = default_config["_class_name"], {}
    elif name in SCHEDULERS:
        cls_name, extra = SCHEDULERS[name]
    else:
        cls_name, extra = name, {}
    cls = getattr(diffusers, cls_name, None)
    if cls is None or not hasattr(cls, "from_config"):
        raise RepairError(f"scheduler {name!r} is not a diffusers scheduler: use one of {', '.join(SCHEDULERS)}")
    return cls.from_config(default_config, **extra)


_CACHE_LOCK = threading.RLock()
_RUN_LOCK = threading.Lock()  # a cached pipeline is shared: one run at a time swaps its scheduler
_PIPELINES: dict[tuple, Any] = {}
_CONTROLNETS: dict[tuple, Any] = {}


def clear_pipeline_cache() -> None:
    """Drop every cached pipeline and ControlNet (frees their memory once nothing else holds them)."""
    with _CACHE_LOCK:
        _PIPELINES.clear()
        _CONTROLNETS.clear()


def _load_kwargs(settings: DiffusionSettings, dtype) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": _offline(settings)}
    if settings.variant:
        kwargs["variant"] = settings.variant
    if settings.revision:
        kwargs["revision"] = settings.revision
    return kwargs


def _controlnet(settings: DiffusionSettings, device: str, dtype):
    from diffusers import ControlNetModel

    key = (settings.controlnet, device, str(dtype), settings.variant, settings.revision)
    if key not in _CONTROLNETS:
        try:
            model = ControlNetModel.from_pretrained(settings.controlnet, **_load_kwargs(settings, dtype))
        except Exception as error:  # the hub and offline paths raise OSError, ValueError, HTTP errors...
            raise _not_available(settings.controlnet, "ControlNet", error, _offline(settings)) from error
        _CONTROLNETS[key] = model.to(device)
    return _CONTROLNETS[key]


def load_pipeline(settings: DiffusionSettings, kind: Literal["inpaint", "img2img"], device: str, dtype):
    """The cached pipeline for these settings, loading (or deriving) it on first use."""
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    auto = AutoPipelineForInpainting if kind == "inpaint" else AutoPipelineForImage2Image
    adapter = None
    if settings.ip_adapter is not None:
        adapter = (settings.ip_adapter, settings.ip_adapter_weight, settings.ip_adapter_subfolder,
                   settings.ip_adapter_image_encoder)
    shared_key = (settings.model, settings.controlnet, adapter, device, str(dtype), settings.variant, settings.revision)
    key = (kind, *shared_key)
    with _CACHE_LOCK:
        if key in _PIPELINES:
            return _PIPELINES[key]
        sibling = next((pipe for k, pipe in _PIPELINES.items() if k[1:] == shared_key), None)
        if sibling is not None:
            # the other kind of the same model is loaded: share its weights instead of loading twice
            pipe = auto.from_pipe(sibling)
            checkpoint_scheduler = sibling.checkpoint_scheduler_config
        else:
            extra = {} if settings.controlnet is None else {"controlnet": _controlnet(settings, device, dtype)}
            try:
                pipe = auto.from_pretrained(settings.model, **_load_kwargs(settings, dtype), **extra)
            except Exception as error:
                raise _not_available(settings.model, "diffusion model", error, _offline(settings)) from error
            pipe = pipe.to(device)
            if adapter is not None:
                _load_ip_adapter(pipe, settings)
            checkpoint_scheduler = dict(pipe.scheduler.config)
        if kind == "img2img" and is_inpainting_checkpoint(pipe):
            # an inpainting UNet also reads a mask and the masked image, which img2img pipelines do not
            # feed it: run such a checkpoint as an inpaint of the whole image instead
            pipe = AutoPipelineForInpainting.from_pipe(pipe)
        pipe.set_progress_bar_config(disable=True)
        # each run swaps in a fresh scheduler; the checkpoint's own is rebuilt from this config
        pipe.checkpoint_scheduler_config = checkpoint_scheduler
        _PIPELINES[key] = pipe
        return pipe


def is_inpainting_checkpoint(pipe) -> bool:
    """True for UNets trained for inpainting (latents + mask + masked-image latents in, 9 channels for SD)."""
    return int(pipe.unet.config.in_channels) != int(pipe.vae.config.latent_channels)


def _load_ip_adapter(pipe, settings: DiffusionSettings) -> None:
    if not hasattr(pipe, "load_ip_adapter"):
        raise RepairError(f"{type(pipe).__name__} does not take an IP-Adapter: drop parameters['ip_adapter']")
    source, subfolder, weight = settings.ip_adapter, settings.ip_adapter_subfolder, settings.ip_adapter_weight
    path = Path(source).expanduser()
    if path.is_file():  # a weight file given directly: its folder is the repository
        source, subfolder, weight = str(path.parent), "", path.name
    try:
        pipe.load_ip_adapter(source, subfolder=subfolder, weight_name=weight,
                             image_encoder_folder=settings.ip_adapter_image_encoder,
                             local_files_only=_offline(settings))
    except Exception as error:
        raise _not_available(settings.ip_adapter, "IP-Adapter", error, _offline(settings)) from error


# ---- step 2: prepare ----------------------------------------------------------------------------

def native_side(pipe) -> int:
    """The long side the checkpoint was trained at (SD 1.5: 512, SDXL: 1024)."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def working_size(width: int, height: int, long_side: int, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """(w, h) with the long side near ``long_side``, the aspect kept, both sides multiples of ``multiple``."""
    scale = long_side / max(width, height)
    return (max(multiple, int(round(width * scale / multiple)) * multiple),
            max(multiple, int(round(height * scale / multiple)) * multiple))


def canny_map(image: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """White edges on black (H x W x 3 uint8), the canny ControlNet's input."""
    edges = cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), low, high)
    return np.repeat(edges[..., None], 3, axis=2)


# OpenPose's 18 body keypoints (COCO order) as MediaPipe Pose landmark indices; the neck (1) is the
# shoulders' midpoint. "Right" is the person's right in both conventions.
OPENPOSE_FROM_MEDIAPIPE = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
# Limbs between OpenPose keypoints and the colours the openpose ControlNets were trained on.
OPENPOSE_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                  (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
OPENPOSE_COLORS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
                   (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
                   (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))


def openpose_keypoints(landmarks: np.ndarray, visibility: float = 0.5) -> np.ndarray:
    """MediaPipe's 33 x 4 pose landmarks (x, y px, z, visibility) -> 18 x 3 OpenPose keypoints
    (x, y, visible as 0/1)."""
    out = np.zeros((18, 3), dtype=np.float32)
    for index, source in enumerate(OPENPOSE_FROM_MEDIAPIPE):
        if source is not None and landmarks[source, 3] >= visibility:
            out[index] = (landmarks[source, 0], landmarks[source, 1], 1.0)
    right, left = landmarks[12], landmarks[11]
    if right[3] >= visibility and left[3] >= visibility:
        out[1] = ((right[0] + left[0]) / 2, (right[1] + left[1]) / 2, 1.0)
    return out


def draw_openpose(keypoints: np.ndarray, width: int, height: int, thickness: int | None = None) -> np.ndarray:
    """An openpose skeleton on black (H x W x 3 uint8 RGB): limbs as ellipses at 60 % colour, joints as
    full-colour dots, as the openpose annotator draws them. Keypoints with visible 0 are left out."""
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    stick = thickness or max(2, round(4 * max(width, height) / 512))
    for index, (a, b) in enumerate(OPENPOSE_LIMBS):
        if keypoints[a, 2] <= 0 or keypoints[b, 2] <= 0:
            continue
        (xa, ya), (xb, yb) = keypoints[a, :2], keypoints[b, :2]
        length = float(np.hypot(xb - xa, yb - ya))
        angle = math.degrees(math.atan2(yb - ya, xb - xa))
        polygon = cv2.ellipse2Poly((int(round((xa + xb) / 2)), int(round((ya + yb) / 2))),
                                   (int(round(length / 2)), stick), int(round(angle)), 0, 360, 1)
        limb = canvas.copy()
        cv2.fillConvexPoly(limb, polygon, OPENPOSE_COLORS[index])
        canvas = cv2.addWeighted(canvas, 0.4, limb, 0.6, 0)
    for index in range(18):
        if keypoints[index, 2] > 0:
            center = (int(round(keypoints[index, 0])), int(round(keypoints[index, 1])))
            cv2.circle(canvas, center, stick, OPENPOSE_COLORS[index], thickness=-1)
    return canvas


def pose_landmarks(image: np.ndarray, max_side: int = 1280) -> np.ndarray:
    """MediaPipe pose landmarks of the most prominent person in ``image`` (33 x 4, input pixels)."""
    from fixloop.checks.analyses import pose
    from fixloop.checks.context import AnalysisImage
    from fixloop.checks.images import decoded_from_array

    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(w, h))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    found = pose(AnalysisImage(decoded_from_array(image), size))
    if found is None:
        raise RepairError("control 'openpose' found no person in the image: use control 'canny' or 'depth', "
                          "or pass a ready-made control_image")
    landmarks = found.landmarks.copy()
    landmarks[:, 0] *= w / size[0]
    landmarks[:, 1] *= h / size[1]
    return landmarks


def _load_map(value: Any, role: str, shape: tuple[int, int]) -> np.ndarray:
    """A user map (array or image file) at the input's size, as an array."""
    if isinstance(value, (str, Path)):
        from fixloop.checks.images import InputError, load_image

        try:
            value = load_image(value, role=role).pixels
        except InputError as error:
            raise RepairError(str(error)) from None
    array = np.asarray(value)
    if array.ndim not in (2, 3) or array.shape[:2] != shape:
        raise RepairError(f"{role} has shape {array.shape} but the image is {shape[1]}x{shape[0]}: "
                          f"export it at the image's size")
    return array


def depth_control(depth: np.ndarray) -> np.ndarray:
    """A depth map (any dtype, near = bright as MiDaS writes it) -> H x W x 3 uint8 stretched to 0..255."""
    if depth.ndim == 3:
        depth = depth[..., :3].mean(axis=2)
    depth = depth.astype(np.float32)
    low, high = float(depth.min()), float(depth.max())
    scaled = np.zeros_like(depth) if high <= low else (depth - low) / (high - low)
    return np.repeat(np.rint(scaled * 255).astype(np.uint8)[..., None], 3, axis=2)


def control_source(image: np.ndarray, settings: DiffusionSettings) -> np.ndarray | None:
    """What the control map is made from, at the input's geometry, computed before any model loads
    (so a missing person or a wrong-sized map fails early): the user's control image or depth map as
    H x W x 3 uint8, the image itself for canny, or 18 x 3 OpenPose keypoints in input pixels."""
    shape = image.shape[:2]
    if settings.control_image is not None:
        user = _load_map(settings.control_image, "control_image", shape)
        user = user if user.ndim == 3 else np.repeat(user[..., None], 3, axis=2)
        user = user[..., :3] if user.dtype == np.uint8 else np.rint(np.clip(user[..., :3], 0, 1) * 255).astype(np.uint8)
        return np.ascontiguousarray(user)
    if settings.control == "canny":
        return image
    if settings.control == "openpose":
        return openpose_keypoints(pose_landmarks(image))
    if settings.control == "depth":
        return depth_control(_load_map(settings.depth_map, "depth_map", shape))
    return None


def control_map(source: np.ndarray | None, settings: DiffusionSettings, box: tuple[int, int, int, int],
                size: tuple[int, int]) -> np.ndarray | None:
    """The control map of the working region ``box`` at the working ``size`` (w, h), from
    :func:`control_source`'s output."""
    if source is None:
        return None
    x0, y0, x1, y1 = box
    if settings.control == "openpose":
        keypoints = source.copy()
        keypoints[:, 0] = (keypoints[:, 0] - x0) * size[0] / (x1 - x0)
        keypoints[:, 1] = (keypoints[:, 1] - y0) * size[1] / (y1 - y0)
        return draw_openpose(keypoints, *size)
    region = resize(source[y0:y1, x0:x1], size)
    if settings.control == "canny" and settings.control_image is None:
        # edges found at the working size keep their one-pixel width
        return canny_map(region, settings.canny_low, settings.canny_high)
    return region


# ---- step 3: the pipeline call ----------------------------------------------------------------------

# Arguments a pipeline may lack without changing the repair: img2img pipelines size the output from
# the image they are given, so they take no height / width.
SIZE_ARGUMENTS = frozenset({"height", "width"})
# What each conditioning argument is, and what to do when the pipeline cannot take it.
CONDITIONING = {
    "mask_image": ("a mask", "use an inpainting checkpoint, or drop the mask for img2img"),
    "control_image": ("a control map", "it was loaded without a ControlNet: set parameters['controlnet'] "
                                       "or drop parameters['control'] / parameters['control_image']"),
    "controlnet_conditioning_scale": ("a control scale", "it was loaded without a ControlNet: set "
                                                         "parameters['controlnet'] or drop the control map"),
    "ip_adapter_image": ("an IP-Adapter reference", "drop parameters['ip_adapter'] or use an SD / SDXL checkpoint"),
}


def has_ip_adapter(pipe) -> bool:
    """True when an IP-Adapter is loaded into the pipeline's UNet (its image projection layers)."""
    unet = getattr(pipe, "unet", None)
    return hasattr(getattr(unet, "encoder_hid_proj", None), "image_projection_layers")


def pipeline_arguments(pipe, call: dict[str, Any], settings: DiffusionSettings | None = None,
                       notes: list[str] | None = None) -> dict[str, Any]:
    """The arguments of one pipeline call, checked against what ``pipe`` takes. Every setting the
    report lists must reach the pipeline: a conditioning input it does not take (a control map
    without a ControlNet, an IP-Adapter reference with none loaded, a mask for an img2img pipeline)
    is a one-line :class:`RepairError`, never dropped. Only the working size (which img2img
    pipelines take from the image) and the negative prompt (noted in ``notes``) may be left out."""
    accepted = inspect.signature(pipe.__call__).parameters  # named only: **kwargs swallows anything
    name = type(pipe).__name__
    if "ip_adapter_image" in call and not has_ip_adapter(pipe):
        raise RepairError(f"{name} has no IP-Adapter loaded, so the reference would be ignored: "
                          f"{CONDITIONING['ip_adapter_image'][1]}")
    kept: dict[str, Any] = {}
    for key, value in call.items():
        if key in accepted:
            kept[key] = value
        elif key in SIZE_ARGUMENTS:
            continue
        elif key == "negative_prompt":
            if value and notes is not None:
                notes.append(f"negative_prompt not used: {name} takes none")
        else:
            what, fix = CONDITIONING.get(key, (f"the argument {key!r}", "drop the setting that asks for it"))
            model = f" ({settings.model})" if settings is not None else ""
            raise RepairError(f"{name}{model} does not take {what}: {fix}")
    return kept


# ---- the entry call -----------------------------------------------------------------------------

@register_tool(TOOL_NAME)
def diffusion_repair(request: RepairRequest) -> RepairResult:
    """Diffusion inpaint (with a mask) or img2img (without), with optional ControlNet and IP-Adapter."""
    import torch
    from PIL import Image

    started = time.perf_counter()
    # 1. check inputs
    settings, mask = check_inputs(request)
    image = request.image.copy()
    kind: Literal["inpaint", "img2img"] = "inpaint" if mask is not None else "img2img"
    device = pick_device(settings.device)
    dtype = pick_dtype(settings.dtype, device)

    control_from = control_source(image, settings)

    # 2. prepare: pipeline, working region and size, control map, reference
    pipe = load_pipeline(settings, kind, device, dtype)
    h, w = image.shape[:2]
    box = (0, 0, w, h) if settings.crop_padding is None else crop_box(mask, mask.shape, padding=settings.crop_padding)
    x0, y0, x1, y1 = box
    long_side = settings.size or native_side(pipe)
    multiple = math.lcm(SIZE_MULTIPLE, int(pipe.vae_scale_factor))
    size = working_size(x1 - x0, y1 - y0, long_side, multiple)
    region = image[y0:y1, x0:x1]
    call: dict[str, Any] = {
        "prompt": request.prompt or "",
        "negative_prompt": request.negative_prompt or None,
        "image": Image.fromarray(resize(region, size)),
        "strength": settings.strength,
        "num_inference_steps": settings.steps,
        "guidance_scale": settings.guidance,
        "height": size[1],
        "width": size[0],
        "output_type": "np",
    }
    notes: list[str] = []
    if mask is not None:
        region_mask = resize_mask(mask[y0:y1, x0:x1], size, any_coverage=True)
        call["mask_image"] = Image.fromarray(region_mask.astype(np.uint8) * 255)
    elif is_inpainting_checkpoint(pipe):
        call["mask_image"] = Image.new("L", size, 255)
        notes.append("inpainting checkpoint: img2img ran as an inpaint of the whole image")
    control = control_map(control_from, settings, box, size)
    if control is not None:
        call["control_image"] = Image.fromarray(control)
        call["controlnet_conditioning_scale"] = settings.control_scale
    if settings.ip_adapter is not None:
        call["ip_adapter_image"] = Image.fromarray(request.references[0])
        if len(request.references) > 1:
            notes.append(f"IP-Adapter used the first of {len(request.references)} references")
    call = pipeline_arguments(pipe, call, settings, notes)

    # 3. run, seeded on the chosen device (mps draws its noise on the CPU, as diffusers advises,
    # because its own generator is not reproducible across runs)
    generator = torch.Generator(device="cpu" if device == "mps" else device).manual_seed(settings.seed)
    with _RUN_LOCK:
        pipe.scheduler = make_scheduler(settings.scheduler, pipe.checkpoint_scheduler_config)
        if settings.ip_adapter is not None:
            pipe.set_ip_adapter_scale(settings.ip_adapter_scale)
        with torch.inference_mode():
            output = pipe(generator=generator, **call)
        scheduler_name = type(pipe.scheduler).__name__
    flagged = getattr(output, "nsfw_content_detected", None)
    if flagged and any(flagged):
        raise ModerationBlocked(f"the checkpoint's safety checker blanked the result of {settings.model!r}: "
                                f"change the prompt or the reference")
    generated = np.clip(np.rint(np.asarray(output.images[0]) * 255), 0, 255).astype(np.uint8)

    # 4. post-process: the input's geometry, then the untouched pixels back from the input
    result = image.copy()
    result[y0:y1, x0:x1] = resize(generated, (x1 - x0, y1 - y0))
    feather = 0.0
    if mask is not None:
        feather = settings.feather if settings.feather is not None else default_feather(image.shape)
        result = composite(image, result, mask, feather)
    if size != (x1 - x0, y1 - y0):
        notes.append(f"worked at {size[0]}x{size[1]}, brought back to {x1 - x0}x{y1 - y0}")

    parameters = settings.summary()
    parameters.update(kind=kind, pipeline=type(pipe).__name__, scheduler_used=scheduler_name, device=device,
                      dtype=str(dtype).replace("torch.", ""), working_size=list(size), box=list(box),
                      feather_px=round(feather, 2), steps_run=int(settings.steps * settings.strength))
    return RepairResult(image=result, tool=TOOL_NAME, mask=None if mask is None else mask.copy(),
                        parameters=parameters, seconds=time.perf_counter() - started, cost_usd=0.0, notes=notes,
                        control=control)
