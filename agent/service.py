"""What every front end calls: check a set of inputs, run one repair tool, start / resume / inspect /
approve a repair run.

All validation lives here (decodable images, mask sizes, backends and their keys, output folders,
template slots), so the command line, the folder gate, the HTTP service, the chat and the Slack bot
make the same decisions with the same one-line messages. Inputs are paths, bytes (an upload, a chat
attachment) or arrays; results are typed. Nothing here prints or exits: bad input raises
:class:`~fixloop.checks.images.InputError` (one line that says what to do), a check that crashed
while a tool looked for its region raises :class:`CheckFailed`.

    report = check("edit.png", source="before.png", mask="mask.png")
    outcome = fix("edit.png", "local.exposure_color", source="before.png")
    state = start_repair(RepairOrder(image="edit.png", source="before.png", backend="local"))
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, Union

import numpy as np

from fixloop.checks.images import DecodedImage, InputError

if TYPE_CHECKING:
    from fixloop.agent.state import RepairReport, RunState
    from fixloop.checks.base import Finding
    from fixloop.checks.policy import Policy
    from fixloop.checks.report import Report
    from fixloop.tools.base import RepairResult

ImageInput = Union[str, Path, bytes, bytearray, np.ndarray, DecodedImage]
PolicyInput = Union[None, str, Path, "Policy"]
Progress = Callable[..., None]
Approver = Callable[[dict[str, Any]], bool]

# File suffix -> PIL format of a written image (final images keep the input's format where they can).
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}


class CheckFailed(Exception):
    """A check crashed while a repair looked for its region: the verdict would be 'error'."""


# ---- inputs -------------------------------------------------------------------------------------


def decode_image(value: ImageInput, role: str = "image", max_pixels: int | None = None) -> DecodedImage:
    """A path, the bytes of an image file, an H x W x 3/4 array or an already decoded image; one whose
    shape no command handles (a side under MIN_SIDE px, an aspect beyond MAX_ASPECT) is refused, a mask
    excepted (its size is checked against the image's)."""
    from fixloop.checks.images import check_shape, decoded_from_array, load_image, load_image_bytes

    if isinstance(value, DecodedImage):
        decoded = value
    elif isinstance(value, (str, Path)):
        decoded = load_image(value, role, max_pixels=max_pixels)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        decoded = load_image_bytes(bytes(value), role, max_pixels=max_pixels)
    elif isinstance(value, np.ndarray):
        decoded = decoded_from_array(value)
    else:
        raise InputError(f"{role} must be a file path, image bytes or an array, not {type(value).__name__}")
    if role != "mask":
        check_shape(decoded.size, f"{role} {_label(value)!r}" if _label(value) else role)
    return decoded


def decode_mask(value: ImageInput) -> np.ndarray:
    """An edit mask as a bool array: white (or True) where the edit was allowed."""
    from fixloop.checks.images import load_mask, mask_from_decoded

    if isinstance(value, (str, Path)):
        return load_mask(value)
    if isinstance(value, np.ndarray) and value.ndim == 2:
        return value > (127 if value.dtype == np.uint8 else 0.5)
    return mask_from_decoded(decode_image(value, "mask"))


def resolve_policy(policy: PolicyInput) -> "Policy":
    """The default policy, a policy file laid over it, or a policy already loaded."""
    from fixloop.checks.policy import Policy, load_policy

    if isinstance(policy, Policy):
        return policy
    return load_policy(policy)


def _label(value: Any) -> str | None:
    return str(value) if isinstance(value, (str, Path)) else None


def _unknown_name(exc: KeyError) -> InputError:
    """An unknown check or tool name: the registry's message, which suggests the closest one."""
    return InputError(str(exc.args[0]))


# ---- check --------------------------------------------------------------------------------------


def check(candidate: ImageInput, source: ImageInput | None = None, mask: ImageInput | None = None,
          references: Sequence[ImageInput] = (), history: Sequence[ImageInput] = (),
          policy: PolicyInput = None, only: Sequence[str] | None = None) -> "Report":
    """Run the checks on ``candidate`` (against ``source``, ``mask``, ``references``, ``history``)."""
    import time

    from fixloop.checks.context import CheckContext
    from fixloop.checks.engine import run_checks

    started = time.perf_counter()
    loaded = resolve_policy(policy)
    cap = loaded.analysis.max_pixels
    decoded = decode_image(candidate, "candidate", cap)
    ctx = CheckContext.build(
        decoded,
        None if source is None else decode_image(source, "source", cap),
        None if mask is None else decode_mask(mask),
        [decode_image(r, "reference", cap) for r in references],
        [decode_image(h, "history image", cap) for h in history],
        max_side=loaded.analysis.max_side,
        mask_name="mask" if _label(mask) is None else f"mask {_label(mask)!r}",
    )
    ctx.mask_path = _label(mask)
    try:
        return run_checks(ctx, loaded, names=list(only) if only else None, started=started)
    except KeyError as exc:
        raise _unknown_name(exc) from None


def check_report_folder(out: str | Path) -> None:
    """``--out`` of ``fixloop check`` can take ``report.json`` and finding masks: checked before any
    work (not a file, writable, no folder where ``report.json`` goes)."""
    folder = Path(out)
    _writable_folder(folder, "--out")
    if (folder / "report.json").is_dir():
        raise InputError(f"--out {str(out)!r} holds a folder named report.json: choose another --out folder")


def write_check_report(report: "Report", out: str | Path, protected: Sequence[str | Path | None] = ()) -> Path:
    """``report.json`` and one PNG mask per finding region in ``out``, atomically, never over an input;
    on a failure every file (and folder) this call created is removed again."""
    folder = Path(out)
    created = _created_by_us(folder.resolve())
    before = set(folder.iterdir()) if folder.is_dir() else set()
    try:
        check_report_folder(folder)
        for index, finding in enumerate(report.findings):  # a mask's name taken by a folder
            if finding.mask is not None and (folder / f"finding-{index:02d}-{finding.kind}.png").is_dir():
                raise InputError(f"--out {str(out)!r} holds a folder named finding-{index:02d}-{finding.kind}.png: "
                                 "choose another --out folder")
        return report.write(out, protected=[p for p in protected if p is not None])
    except (OSError, InputError) as exc:
        if created:
            _remove_created(created)
        elif folder.is_dir():
            for path in set(folder.iterdir()) - before:
                if path.is_file():
                    path.unlink(missing_ok=True)
        if isinstance(exc, InputError):
            raise
        raise InputError(f"could not write to {str(out)!r} ({exc.strerror}): choose a writable --out folder") from None


# ---- fix: one repair tool -----------------------------------------------------------------------

@dataclass
class FixOutcome:
    """What one tool run produced. ``result`` is None when the check that supplies the region found
    nothing to repair (``checked`` names it)."""

    result: "RepairResult | None"
    image: np.ndarray | None = None  # the repaired picture, with the input's alpha when it was a cut-out
    finding: "Finding | None" = None  # the finding that supplied region and settings, if any
    checked: list[str] = field(default_factory=list)  # checks run to find the region
    prompt: str | None = None  # the prompt the tool got (rendered from the template when none was given)


def parse_params(items: Sequence[str], flag: str = "--param") -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a value that reads as JSON (numbers, true/false, lists, objects) is taken as such."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{flag} {item!r} is not KEY=VALUE")
        try:
            parsed[key.strip()] = json.loads(value)
        except ValueError:
            parsed[key.strip()] = value
    return parsed


def parse_slots(items: Sequence[str]) -> dict[str, str]:
    """``NAME=TEXT`` pairs for a template's slots, taken as text."""
    slots: dict[str, str] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise InputError(f"--slot {item!r} is not NAME=TEXT, e.g. --slot hand=\"the left hand\"")
        slots[name.strip()] = text.strip()
    return slots


def image_format(path: str | Path) -> str:
    """The PIL format an output path asks for (refused when it is not one fixloop writes)."""
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise InputError(f"cannot write {str(path)!r}: give the output a .png, .jpg, .webp or .tif name")
    return fmt


def fix_target(image: str | Path, out: str | Path | None, mask_out: str | Path | None,
               inputs: Sequence[str | Path | None]) -> Path:
    """Where ``fixloop fix`` writes, checked before any work: never an input, a format fixloop writes."""
    target = Path(out) if out is not None else Path(image).with_name(f"{Path(image).stem}-fixed.png")
    given = {Path(p).resolve() for p in inputs if p is not None}
    for path, flag in ((target, "--out"), (mask_out, "--mask-out")):
        if path is not None and Path(path).resolve() in given:
            raise InputError(f"output {str(path)!r} is one of the inputs: choose another {flag}")
    if mask_out is not None and Path(mask_out).resolve() == target.resolve():
        raise InputError("--mask-out and the output image are the same file")
    image_format(target)
    if mask_out is not None:
        image_format(mask_out)
    for path, flag in ((target, "--out"), (mask_out, "--mask-out")):
        if path is None:
            continue
        if Path(path).is_dir():
            raise InputError(f"{flag} {str(path)!r} is a folder: name the file to write")
        _writable_folder(Path(path).resolve().parent, flag)
    return target


def fix(image: ImageInput, tool: str, *, template: str | None = None, slots: Mapping[str, str] | None = None,
        prompt: str | None = None, negative_prompt: str | None = None, source: ImageInput | None = None,
        mask: ImageInput | None = None, references: Sequence[ImageInput] = (),
        parameters: Mapping[str, Any] | None = None, policy: PolicyInput = None) -> FixOutcome:
    """Run one repair tool on ``image``. Without ``mask`` the check that reports what the tool fixes
    supplies the region (and, for local tools, the finding); a generative tool with a template and no
    prompt gets the template rendered, its slots filled from the finding, then from ``slots``."""
    from fixloop.checks.images import to_uint8
    from fixloop.tools.base import RepairError, RepairRequest, load_tool

    parameters = dict(parameters or {})
    try:
        spec = load_tool(tool)
    except KeyError as exc:
        raise _unknown_name(exc) from None
    backend = _backend_of(tool)  # None for a local tool
    try:
        from fixloop.tools.local import check_parameters

        check_parameters(parameters)  # every number typed and ranged before any decoding or check
    except RepairError as exc:
        raise InputError(str(exc)) from None
    loaded = resolve_policy(policy)
    cap = loaded.analysis.max_pixels
    decoded = decode_image(image, "image", cap)
    decoded_source = None if source is None else decode_image(source, "source", cap)
    decoded_refs = [decode_image(r, "reference", cap) for r in references]
    pixels = to_uint8(decoded.pixels)
    region = None if mask is None else _mask_on_image(mask, decoded, decoded_source)
    if region is None and spec.needs_mask and not spec.region_check and not _region_check(parameters.get("repair")):
        raise InputError(f"{tool} needs {spec.needs_mask}")
    if template is not None:
        _known_template(template)

    checks = [] if region is not None else checks_for(tool, template, parameters)
    finding = None
    if checks:
        finding = _finding_for(checks, decoded, decoded_source, decoded_refs, loaded)
        if finding is None:
            return FixOutcome(result=None, checked=checks)
        if backend is None:  # a local tool reads its settings from the finding itself
            parameters["finding"] = finding
        if tool != "local.expand_canvas":  # that one reads how far to extend, not a region
            region = finding.mask  # None for a whole-image defect (exposure, colour)

    if template is not None and prompt is None and backend is not None:
        from fixloop.prompts import render

        request: dict[str, Any] = {"image_size": [pixels.shape[1], pixels.shape[0]], **(slots or {})}
        try:
            rendered = render(template, finding, request=request)
        except RepairError as exc:  # a slot left empty, an unknown slot: one line naming it
            raise InputError(f"{exc}: pass it with --slot NAME=TEXT (fixloop templates lists the slots)") from None
        gpt_image = backend.prompt_style == "gpt_image"
        prompt = rendered.gpt_image_prompt if gpt_image else rendered.positive
        negative_prompt = negative_prompt or rendered.negative
        if backend.prompt_style == "diffusion":
            parameters = {**rendered.diffusion_parameters(), **parameters}
    elif slots:
        raise InputError("--slot fills a template's slots: pass --template too (and no --prompt)")

    request_obj = RepairRequest(
        image=pixels, mask=region,
        source=None if decoded_source is None else to_uint8(decoded_source.pixels),
        references=[to_uint8(r.pixels) for r in decoded_refs],
        prompt=prompt, negative_prompt=negative_prompt, template=template, parameters=parameters)
    try:
        result = spec.function(request_obj)
    except RepairError as exc:
        raise InputError(str(exc)) from None
    fixed = result.image
    if decoded.alpha is not None and fixed.shape[:2] == pixels.shape[:2]:
        fixed = np.dstack([fixed, to_uint8(decoded.alpha)])  # a cut-out stays a cut-out
    return FixOutcome(result=result, image=fixed, finding=finding, checked=checks, prompt=prompt)


def write_fix(outcome: FixOutcome, target: str | Path, mask_out: str | Path | None = None) -> list[str]:
    """Write the repaired image (and the mask the tool used) atomically; returns notes for the user."""
    from fixloop.checks.report import atomic_path

    notes: list[str] = []
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _save(outcome.image, target, image_format(target), atomic_path)
        if mask_out is not None and outcome.result.mask is not None:
            _save(outcome.result.mask.astype(np.uint8) * 255, Path(mask_out), image_format(mask_out), atomic_path)
        elif mask_out is not None:
            notes.append(f"{outcome.result.tool} used no mask; {mask_out} not written")
    except OSError as exc:
        raise InputError(f"could not write {str(target)!r} ({exc.strerror}): choose a writable --out") from None
    return notes


def _save(array: np.ndarray, path: Path, fmt: str, atomic_path) -> None:
    from PIL import Image

    image = Image.fromarray(array)
    if fmt == "JPEG" and image.mode == "RGBA":
        image = image.convert("RGB")
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt)


def _known_template(name: str) -> None:
    from fixloop.prompts import TemplateError, load_template

    try:
        load_template(name)
    except TemplateError as exc:
        raise InputError(str(exc)) from None


def _mask_on_image(value: ImageInput, decoded: DecodedImage, decoded_source: DecodedImage | None) -> np.ndarray:
    """The mask at the image's size (a mask at the source's size is scaled when the framing matches)."""
    import cv2

    from fixloop.checks.context import same_aspect

    label = f"mask {_label(value)!r}" if _label(value) else "mask"
    region = decode_mask(value)
    width, height = decoded.size
    if region.shape != (height, width):
        sw, sh = decoded_source.size if decoded_source is not None else (0, 1)
        if region.shape != (sh, sw) or not same_aspect((width, height), (sw, sh)):
            raise InputError(f"{label} is {region.shape[1]}x{region.shape[0]} but the image is "
                             f"{width}x{height}: export the mask at the image's size")
        region = cv2.resize(region.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    if not region.any():
        raise InputError(f"{label} is empty (no white pixels): paint the area to repair in white")
    return region


def _backend_of(tool: str):
    """The backend whose generative tool ``tool`` is (None for a local tool)."""
    from fixloop.tools.base import backend_for_tool

    return backend_for_tool(tool)


def _region_check(tool: Any) -> str | None:
    """The check whose finding supplies ``tool``'s region when no mask is given (its registry entry)."""
    from fixloop.tools.base import TOOLS, load_tool

    if not isinstance(tool, str):
        return None
    try:
        load_tool(tool)
    except KeyError:
        return None
    return TOOLS.get(tool).region_check


def checks_for(tool: str, template: str | None, parameters: Mapping[str, Any]) -> list[str]:
    """The checks whose finding supplies a repair's region when no mask is given (none: no check)."""
    from fixloop.checks.base import DEFECT_KINDS

    own = _region_check(tool)
    if own is not None:
        # a canvas grown to a given aspect or extension needs no finding
        return [] if tool == "local.expand_canvas" and ("aspect" in parameters or "extend" in parameters) else [own]
    if tool == "local.crop_first":  # it repairs with another tool, whose check supplies the region
        inner = _region_check(parameters.get("repair"))
        return [inner] if inner else []
    if template is None or _backend_of(tool) is None:
        return []
    kinds = [k.name for k in DEFECT_KINDS.values() if k.template == template]
    if not kinds:
        raise InputError(f"no check reports defects for template {template!r}: pass --mask")
    return kinds


def _finding_for(checks: list[str], decoded, source, references, policy) -> "Finding | None":
    """Run ``checks`` on the image; the first finding (one with a region first), or None. A check
    that cannot run is an input error; a check that crashed raises CheckFailed."""
    from fixloop.checks.context import CheckContext
    from fixloop.checks.engine import run_checks

    ctx = CheckContext.build(decoded, source, None, references, max_side=policy.analysis.max_side)
    report = run_checks(ctx, policy, names=checks)
    for run in report.checks:
        if run.status.value == "error":
            raise CheckFailed(f"{run.name} failed while looking for the region: {run.error}")
    if all(run.status.value == "skipped" for run in report.checks):
        reasons = "; ".join(f"{run.name} {run.reason}" for run in report.checks)
        raise InputError(f"the check that finds the region could not run ({reasons}): pass --mask")
    with_region = [f for f in report.findings if f.mask is not None]
    return (with_region or report.findings or [None])[0]


@dataclass(frozen=True)
class TemplateInfo:
    """A repair template as a user picks it: what it repairs and the slots it needs."""

    name: str
    summary: str
    kinds: list[str]
    slots: dict[str, str]  # name -> what it wants (with its default, if any)
    required: list[str]  # slots with no default: a finding or --slot must fill them


def templates() -> list[TemplateInfo]:
    """Every repair template with its slots."""
    from fixloop.prompts import load_template, template_names

    found = []
    for name in template_names():
        t = load_template(name)
        slots = {slot: s.help + (f" (default: {s.default})" if s.default else "") for slot, s in t.slots.items()}
        found.append(TemplateInfo(name=name, summary=t.summary, kinds=list(t.kinds), slots=slots,
                                  required=list(t.required_slots)))
    return found


# ---- repair runs --------------------------------------------------------------------------------

def backend_ready(backend: str, model: str | None, policy: "Policy") -> None:
    """Fail early, in one line, when the backend cannot run at all (no key, no model, no library):
    the backend's own readiness check, with the model given, else the policy's for that backend."""
    from fixloop.tools.base import RepairError, backend_names, load_backend

    try:
        spec = load_backend(backend)
    except KeyError:
        raise InputError(f"--backend {backend!r}: use one of {', '.join(backend_names())}") from None
    try:
        spec.ready(model or backend_settings(policy, backend).get("model") or None)
    except RepairError as exc:
        raise InputError(str(exc)) from None


def backend_settings(policy: "Policy", backend: str) -> dict[str, str]:
    """A backend's settings: the policy's ``[repair.backends.NAME]`` laid over the backend's defaults.
    Every table the policy names is validated (unknown backend or key: one line, with the closest)."""
    from fixloop.tools.base import RepairError, backend_names, load_backend

    chosen: dict[str, str] = {}
    for name in [*policy.repair.backends, *([] if backend in policy.repair.backends else [backend])]:
        if name == backend and name not in policy.repair.backends and name not in backend_names():
            raise InputError(f"--backend {backend!r}: use one of {', '.join(backend_names())}")
        try:
            spec = load_backend(name)
        except KeyError:
            raise InputError(f"policy [repair.backends.{name}]: no such backend; use one of "
                             f"{', '.join(backend_names())}") from None
        try:
            settings = spec.settings_from(policy.repair.backends.get(name))
        except RepairError as exc:
            raise InputError(f"policy [repair.backends.{name}]: {exc}") from None
        if name == backend:
            chosen = settings
    return chosen


@dataclass(frozen=True)
class BackendInfo:
    """A backend as a user picks it: what it is, whether it can run here, what it reads."""

    name: str
    description: str
    paid: bool
    ready: str  # "ready", or the one line that says what is missing
    env: dict[str, str]  # environment variable -> what it is for
    settings: dict[str, str]  # policy key -> what it is (default)


def backends(policy: PolicyInput = None) -> list[BackendInfo]:
    """Every backend from the registry, with its readiness under ``policy``."""
    from fixloop.tools.base import RepairError, all_backends

    loaded = resolve_policy(policy)
    found = []
    for spec in all_backends():
        try:
            spec.ready(backend_settings(loaded, spec.name).get("model") or None)
            ready = "ready"
        except RepairError as exc:
            ready = str(exc)
        found.append(BackendInfo(
            name=spec.name, description=spec.description, paid=spec.paid, ready=ready,
            env={e.name: e.description for e in spec.env},
            settings={s.name: f"{s.description} (default: {s.default!r})" for s in spec.settings}))
    return found


@dataclass
class RepairOrder:
    """One repair run as a front end asks for it. Images are paths, bytes or arrays; in-memory ones
    are written into the run folder's ``inputs/`` (a path fixloop chose, never one a client named).
    Budget fields left None take the policy's defaults."""

    image: ImageInput
    source: ImageInput | None = None
    mask: ImageInput | None = None
    references: Sequence[ImageInput] = ()
    backend: str = "local"
    model: str | None = None
    base_url: str | None = None
    max_passes: int | None = None
    max_usd: float | None = None
    max_seconds: float | None = None
    out: str | Path | None = None  # run folder; default fixloop-runs/RUN_ID under the working folder
    approve: bool = False
    polish: bool | None = None
    policy: str | Path | None = None
    run_id: str | None = None
    only_kinds: Sequence[str] | None = None  # repair only these defect kinds (None: every P0/P1 found)
    skip_kinds: Sequence[str] = ()  # never repair these kinds (they would redraw a part the user keeps)


def new_run_id() -> str:
    from fixloop.agent.runner import new_run_id as make

    return make()


def _budget(policy: "Policy", max_passes: int | None, max_usd: float | None, max_seconds: float | None):
    from fixloop.agent.state import Budget

    settings = policy.repair
    return Budget(max_passes=settings.max_passes if max_passes is None else max_passes,
                  max_usd=settings.max_usd if max_usd is None else max_usd,
                  max_seconds=settings.max_seconds if max_seconds is None else max_seconds)


def run_folder(out: str | Path | None, run_id: str, given: Sequence[str | Path | None]) -> Path:
    """The run folder, checked before any work: not an input, not a folder that holds another run."""
    folder = (Path(out) if out is not None else Path("fixloop-runs") / run_id).resolve()
    inputs = [Path(p).resolve() for p in given if p is not None]
    if folder in inputs or any(p.parent == folder and p.name.startswith(("final.", "review.", "report."))
                               for p in inputs):
        raise InputError(f"--out {str(out)!r} would overwrite an input: choose another folder")
    if (folder / "report.json").exists() or (folder / "attempts").exists():
        raise InputError(f"--out {str(folder)!r} already holds another run: choose a new folder "
                         "(or --resume that run)")
    _writable_folder(folder, "--out")
    for name in ("final.png", "final.jpg", "final.webp", "final.tif", "review.png", "review.jpg",
                 "report.json", "report.md", "work", "inputs"):
        if (folder / name).exists() and (folder / name).is_dir() != (name in ("work", "inputs")):
            raise InputError(f"--out {str(folder)!r} holds {name!r} of another kind: choose a new folder")
    return folder


def _writable_folder(folder: Path, flag: str) -> None:
    """``folder`` can be a folder fixloop writes into: not a file, and its nearest existing parent
    writable (checked before any work)."""
    import os

    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{flag} {str(folder)!r}: {str(existing)!r} is a file, not a folder: choose a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {str(folder)!r} is not writable: choose a writable folder")


def _input_path(value: ImageInput | None, role: str, folder: Path) -> str | None:
    """A path for the run's inputs: a given path as is; bytes or arrays written (once, as PNG) into
    the run folder's ``inputs/`` after they decode."""
    if value is None or isinstance(value, (str, Path)):
        return None if value is None else str(Path(value).resolve())
    from fixloop.checks.images import to_uint8
    from fixloop.checks.report import atomic_path

    target = folder / "inputs" / f"{role}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(value, (bytes, bytearray, memoryview)) and role != "mask":
        decode_image(value, role)  # refused here, in one line, if it does not decode
        with atomic_path(target) as tmp:
            Path(tmp).write_bytes(bytes(value))
        return str(target)
    if role == "mask":
        array = decode_mask(value).astype(np.uint8) * 255
    else:
        decoded = decode_image(value, role)
        array = to_uint8(decoded.pixels)
        if decoded.alpha is not None:
            array = np.dstack([array, to_uint8(decoded.alpha)])
    _save(array, target, "PNG", atomic_path)
    return str(target)


def start_repair(order: RepairOrder, progress: Progress | None = None, approver: Approver | None = None,
                 db: str | Path | None = None) -> "RunState":
    """Validate ``order`` and run the loop from the start; returns the final (or paused) state.
    Without ``approver`` a run with ``approve`` waits in its checkpoint before a paid call
    (:func:`answer_approval` continues it)."""
    from fixloop.agent.runner import start_run
    from fixloop.agent.state import RunInputs

    loaded = resolve_policy(order.policy)
    backend_ready(order.backend, order.model, loaded)  # also validates every [repair.backends.*] table
    budget = _budget(loaded, order.max_passes, order.max_usd, order.max_seconds)
    run_id = order.run_id or new_run_id()
    given = [v for v in (order.image, order.source, order.mask, order.policy, *order.references)
             if isinstance(v, (str, Path))]
    folder = run_folder(order.out, run_id, given)
    # every input decoded (and its shape checked) before anything is created: a bad file is one line
    cap = loaded.analysis.max_pixels
    decoded = decode_image(order.image, "image", cap)
    for role, value in (("source", order.source), *(("reference", r) for r in order.references)):
        if value is not None:
            decode_image(value, role, cap)
    if order.mask is not None:
        _mask_on_image(order.mask, decoded, None if order.source is None else decode_image(order.source, "source", cap))
    settings = loaded.repair
    created = _created_by_us(folder)
    try:
        paths = {role: _input_path(value, role, folder)
                 for role, value in (("image", order.image), ("source", order.source), ("mask", order.mask))}
        references = [_input_path(r, f"reference-{i + 1}", folder) for i, r in enumerate(order.references)]
    except BaseException:
        _remove_created(created)
        raise
    suffix = Path(paths["image"]).suffix.lower() if isinstance(order.image, (str, Path)) else ".png"
    inputs = RunInputs(
        image=paths["image"], source=paths["source"], mask=paths["mask"], references=references,
        policy=None if order.policy is None else str(Path(order.policy).resolve()),
        backend=order.backend, model=order.model, base_url=order.base_url,
        polish=settings.polish if order.polish is None else order.polish, approve=order.approve,
        seed=settings.seed, out_dir=str(folder), output_format=OUTPUT_FORMATS.get(suffix, "PNG"),
        only_kinds=None if order.only_kinds is None else list(order.only_kinds), skip_kinds=list(order.skip_kinds))
    try:
        return start_run(inputs, budget, progress=progress, approver=approver, run_id=run_id, db=db)
    except InputError:
        _remove_created(created)  # refused before the loop ran: nothing of this command is left
        raise


def _created_by_us(folder: Path) -> list[Path]:
    """The folders this command will create for ``folder`` (itself and missing parents), outermost
    first: what :func:`_remove_created` may delete on a refusal."""
    missing = []
    for path in [folder, *folder.parents]:
        if path.exists():
            break
        missing.append(path)
    return list(reversed(missing))


def _remove_created(created: list[Path]) -> None:
    import shutil

    if created:
        shutil.rmtree(created[0], ignore_errors=True)


def resume_repair(run_id: str, progress: Progress | None = None, approver: Approver | None = None,
                  max_passes: int | None = None, max_usd: float | None = None, max_seconds: float | None = None,
                  db: str | Path | None = None) -> "RunState":
    """Continue a run from its last checkpoint; budget fields given replace its limits (a run that ran
    out of budget goes on). The backend must still be usable when there is work left."""
    from fixloop.agent.runner import load_run, resume_run

    paused = load_run(run_id, db)
    limits = paused.budget.model_copy(update={k: v for k, v in (
        ("max_passes", max_passes), ("max_usd", max_usd), ("max_seconds", max_seconds)) if v is not None})
    if not paused.finished or limits != paused.budget:
        backend_ready(paused.inputs.backend, paused.inputs.model, resolve_policy(paused.inputs.policy))
    return resume_run(run_id, progress=progress, approver=approver, db=db, budget=limits)


def answer_approval(run_id: str, approve: bool, progress: Progress | None = None,
                    db: str | Path | None = None) -> "RunState":
    """Answer the paid call a run waits on; the run goes on (and may stop at the next one)."""
    state = inspect_run(run_id, db)
    if state.finished:
        raise InputError(f"run {run_id!r} is finished: there is nothing to approve")
    if not waiting_for_approval(run_id, db):
        raise InputError(f"run {run_id!r} is not waiting for an approval")
    answered = False

    def once(question: dict[str, Any]) -> bool | None:
        nonlocal answered
        if answered:
            raise _AskAgain()
        answered = True
        return approve

    try:
        return resume_repair(run_id, progress=progress, approver=once, db=db)
    except _AskAgain:  # the next paid call waits for its own answer
        return inspect_run(run_id, db)


class _AskAgain(Exception):
    """Internal: the run reached another paid call; it waits in its checkpoint."""


def waiting_for_approval(run_id: str, db: str | Path | None = None) -> dict[str, Any] | None:
    """The question a paused run waits on, or None."""
    from fixloop.agent.runner import open_graph

    with open_graph(db) as graph:
        snapshot = graph.get_state({"configurable": {"thread_id": run_id}})
    return snapshot.interrupts[0].value if snapshot.interrupts else None


def inspect_run(run_id: str, db: str | Path | None = None) -> "RunState":
    """The checkpointed state of a run (raises InputError for an unknown id)."""
    from fixloop.agent.runner import load_run

    return load_run(run_id, db)


def run_report(state: "RunState") -> "RepairReport | None":
    """``report.json`` of a finished run, as the typed model (None while the run goes on)."""
    from fixloop.agent.state import RepairReport

    path = Path(state.inputs.out_dir) / "report.json"
    if not state.finished or not path.exists():
        return None
    return RepairReport.model_validate_json(path.read_text(encoding="utf-8"))


def list_runs(db: str | Path | None = None) -> list["RunState"]:
    """Every run in the checkpoint store, newest first."""
    from fixloop.agent.runner import list_runs as listed

    return listed(db)


def checkpoint_path() -> Path:
    from fixloop.agent.runner import checkpoint_path as path

    return path()
