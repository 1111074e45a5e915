"""Repair templates and the renderer that turns one into prompts.

A template (``prompts/<name>.toml``, one per repair of the failure library) has the same parts
every time: the task, what to preserve, what to change, composition rules, a do-not list, the slots
its text uses, and the diffusion starting parameters (denoise, guidance, steps, control, reference
scale) as ranges from the failure library. Each do-not entry has a clause for GPT Image ("Do not:
add, remove or merge fingers") and the phrases that say the same in a diffusion negative prompt.

:func:`render` fills the slots, in this order (later wins): a slot's default in the template; an
evidence value of the finding with the slot's name; what the finding's evidence says, read per
defect kind (a subject_cropped finding's ``extend``, a hand_malformed finding's hand box and
handedness, a colour finding's mired shift, ...); then the request, whose values are the user's
and override everything. A slot left without a value is an error that names it and says what it
wants; a rendered prompt never carries a literal ``{placeholder}``.

    rendered = render("hands", finding)                       # slots from the finding
    rendered = render("light-direction", request={"light_direction": "the window at the upper left"})
    rendered.gpt_image_prompt, rendered.positive, rendered.negative, rendered.diffusion_parameters()
"""

from __future__ import annotations

import difflib
import math
import string
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fixloop.checks.base import Finding
from fixloop.tools.base import RepairError

CONTROL_TYPES = ("canny", "openpose", "depth")
# Request keys that are not slots: structured inputs the renderer turns into slot text ...
STRUCTURED_KEYS = {
    "extend": "per-side canvas extension in px, e.g. {'top': 120, 'left': 80} (fills edges and extend_px)",
    "subjects": "one description per person: a list, or {place: description} (fills subjects)",
    "image_size": "(width, height) of the picture, to say where a hand or face is",
}
# ... and overrides of the diffusion starting parameters (names as tools/diffusion.py takes them).
DIFFUSION_KEYS = ("strength", "guidance", "steps", "control", "control_scale", "ip_adapter_scale")


class TemplateError(RepairError):
    """A template that cannot be found, loaded or rendered."""


class MissingSlotError(TemplateError):
    """Slots left without a value: neither the finding, the request nor a default filled them."""

    def __init__(self, template: str, missing: dict[str, str]):
        self.template = template
        self.missing = missing
        wanted = "; ".join(f"{name!r} ({help_text})" for name, help_text in missing.items())
        super().__init__(f"template {template!r} needs {wanted}: pass it in the request")


# ---- the template file ------------------------------------------------------------------------


class Slot(BaseModel):
    """One slot of a template: what it wants, and its default when the template has one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    help: str = Field(min_length=1, description="what the slot wants, with an example")
    default: str | None = Field(None, min_length=1, description="text used when nothing fills the slot")
    choices: dict[str, str] = Field(default_factory=dict,
                                    description="named values and the text each one stands for")


class DoNot(BaseModel):
    """One do-not entry: a clause for GPT Image and the phrases of the diffusion negative prompt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clause: str = Field(min_length=1, description="completes 'Do not ...'")
    negative: str = Field(min_length=1, description="comma-separated phrases for the negative prompt")


Range = tuple[float, float]


class ControlOption(BaseModel):
    """A ControlNet the repair may use, its scale range and when it fits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["canny", "openpose", "depth"]
    scale: Range
    use_for: str = Field(min_length=1)


class DiffusionStart(BaseModel):
    """Where a diffusion repair starts: the failure library's ranges for this repair."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["inpaint", "img2img"]
    positive: str = Field(min_length=1, description="the diffusion positive prompt (slots allowed)")
    denoise: Range
    guidance: Range
    steps: tuple[int, int]
    control: Literal["none", "canny", "openpose", "depth"] = "none"
    controls: tuple[ControlOption, ...] = ()
    reference_scale: Range | None = None
    reference_use: str | None = None

    @model_validator(mode="after")
    def _sane(self) -> "DiffusionStart":
        limits = {"denoise": (0.0, 1.0), "guidance": (0.0, 30.0), "steps": (1, 200), "reference_scale": (0.0, 1.5)}
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if value is not None and not (low <= value[0] <= value[1] <= high):
                raise ValueError(f"{name} range {list(value)} must be ordered and within {low}-{high}")
        for option in self.controls:
            if not 0.0 <= option.scale[0] <= option.scale[1] <= 2.0:
                raise ValueError(f"{option.type} scale range {list(option.scale)} must be ordered and within 0-2")
        types = [option.type for option in self.controls]
        if len(set(types)) != len(types):
            raise ValueError(f"control types listed twice: {types}")
        if self.control != "none" and self.control not in types:
            raise ValueError(f"control {self.control!r} is not among the listed controls {types}")
        if (self.reference_scale is None) != (self.reference_use is None):
            raise ValueError("reference_scale and reference_use go together")
        return self


class Template(BaseModel):
    """One repair template, as its TOML file states it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    summary: str = Field(min_length=1)
    kinds: tuple[str, ...] = Field(min_length=1, description="the defect kinds this template repairs")
    note: str | None = Field(None, description="advice for whoever picks the tool (not part of any prompt)")
    task: str = Field(min_length=1)
    preserve: tuple[str, ...] = Field(min_length=1)
    change: tuple[str, ...] = Field(min_length=1)
    composition: tuple[str, ...] = Field(min_length=1)
    do_not: tuple[DoNot, ...] = Field(min_length=1)
    slots: dict[str, Slot] = Field(default_factory=dict)
    diffusion: DiffusionStart

    def texts(self) -> list[str]:
        """Every piece of text that gets rendered."""
        return [self.task, *self.preserve, *self.change, *self.composition,
                *(d.clause for d in self.do_not), *(d.negative for d in self.do_not), self.diffusion.positive]

    @model_validator(mode="after")
    def _slots_match_text(self) -> "Template":
        used: set[str] = set()
        for text in self.texts():
            used |= placeholders(text)
        undeclared = sorted(used - set(self.slots))
        if undeclared:
            raise ValueError(f"text uses slot(s) {undeclared} that [slots] does not declare")
        unused = sorted(set(self.slots) - used)
        if unused:
            raise ValueError(f"slot(s) {unused} are declared but no text uses them")
        return self

    @property
    def required_slots(self) -> list[str]:
        """Slots without a default: the finding or the request must fill them."""
        return [name for name, slot in self.slots.items() if slot.default is None]


def placeholders(text: str) -> set[str]:
    """The ``{slot}`` names in ``text``; anything else in braces (formats, escapes, stray braces) is refused."""
    names = set()
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"unbalanced braces in {text!r}") from exc
    for literal, name, spec, conversion in parsed:
        if "{" in literal or "}" in literal:
            raise ValueError(f"literal braces are not allowed in template text: {text!r}")
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"slot {{{name}}} in {text!r} must be a plain name, no format or conversion")
        names.add(name)
    return names


def template_names() -> list[str]:
    """Names of the templates shipped in this package."""
    return sorted(p.name[:-5] for p in resources.files(__package__).iterdir() if p.name.endswith(".toml"))


@lru_cache(maxsize=None)
def load_template(name: str) -> Template:
    """The template ``name`` (e.g. ``hands``); an unknown name suggests the closest."""
    names = template_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"known templates: {', '.join(names)}"
        raise TemplateError(f"unknown repair template {name!r}: {hint}")
    path = resources.files(__package__) / f"{name}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        template = Template.model_validate(data)
    except (tomllib.TOMLDecodeError, ValidationError, ValueError) as exc:
        raise TemplateError(f"template file {name}.toml is invalid: {exc}") from exc
    if template.name != name:
        raise TemplateError(f"template file {name}.toml names itself {template.name!r}")
    return template


# ---- the rendered result ----------------------------------------------------------------------


@dataclass
class RenderedPrompt:
    """A template filled for one repair: the GPT Image prompt, the diffusion prompts and start."""

    gpt_image_prompt: str
    positive: str  # diffusion positive prompt
    negative: str  # diffusion negative prompt, from the do-not list
    template: str
    diffusion: dict[str, Any]  # starting parameters and their ranges
    slots: dict[str, str] = field(default_factory=dict)  # the slot values used
    sources: dict[str, str] = field(default_factory=dict)  # slot -> request | finding | evidence | default

    def diffusion_parameters(self) -> dict[str, Any]:
        """The starting values as ``tools/diffusion.py`` takes them (``request.parameters``)."""
        d = self.diffusion
        out = {"strength": d["strength"], "guidance": d["guidance"], "steps": d["steps"]}
        if d["control"] is not None:
            out["control"], out["control_scale"] = d["control"], d["control_scale"]
        if d["ip_adapter_scale"] is not None:
            out["ip_adapter_scale"] = d["ip_adapter_scale"]
        return out


# ---- how slot text is written -----------------------------------------------------------------


def _and(items: list[str]) -> str:
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _slot_text(name: str, value: Any) -> str:
    """A user's slot value as text: strings as given, numbers plainly, lists joined with 'and'."""
    if isinstance(value, bool) or value is None:
        raise TemplateError(f"slot {name!r} needs text, got {value!r}")
    if isinstance(value, (int, float)):
        text = _number(value)
    elif isinstance(value, str):
        text = value
    elif isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
        text = _and([str(v).strip() for v in value])
    else:
        raise TemplateError(f"slot {name!r} needs text or a list of texts, got {type(value).__name__}")
    text = " ".join(text.split()).rstrip(".").strip()
    if not text:
        raise TemplateError(f"slot {name!r} is empty: give it some text or leave it out")
    if "{" in text or "}" in text:
        raise TemplateError(f"slot {name!r} contains a brace: {text!r}")
    return text


def _where(fx: float, fy: float) -> str:
    """'at the lower left of the picture' from a point given as shares of the width and height."""
    col = "left" if fx < 1 / 3 else "right" if fx > 2 / 3 else ""
    row = "top" if fy < 1 / 3 else "bottom" if fy > 2 / 3 else ""
    if not col and not row:
        return "in the middle of the picture"
    if col and row:
        return f"at the {'upper' if row == 'top' else 'lower'} {col} of the picture"
    return f"at the {col or row} of the picture"


def _image_size(finding: Finding | None, request: dict[str, Any]) -> tuple[int, int] | None:
    """(width, height): the request's ``image_size``, or the finding's full-resolution mask."""
    size = request.get("image_size")
    if size is not None:
        try:
            w, h = (int(v) for v in size)
        except (TypeError, ValueError):
            raise TemplateError(f"image_size must be (width, height), got {size!r}") from None
        if w <= 0 or h <= 0:
            raise TemplateError(f"image_size must be positive, got {size!r}")
        return w, h
    if finding is not None and finding.mask is not None:
        return int(finding.mask.shape[1]), int(finding.mask.shape[0])
    return None


def extend_slots(extend: Any) -> dict[str, str]:
    """edges / extend_px from ``{side: px}``: 'the top and left edges' / '120 px at the top and 80 px at the left'."""
    if not isinstance(extend, dict) or not extend:
        raise TemplateError(f"extend must be {{side: px}}, e.g. {{'top': 120}}, got {extend!r}")
    order = ("top", "bottom", "left", "right")
    unknown = [side for side in extend if side not in order]
    if unknown:
        raise TemplateError(f"extend has unknown side(s) {unknown}: use top, bottom, left, right")
    sides = [s for s in order if s in extend and int(extend[s]) > 0]
    if not sides:
        raise TemplateError(f"extend adds nothing: {extend!r}")
    edges = f"the {_and(sides)} edge{'s' if len(sides) > 1 else ''}"
    amounts = _and([f"{int(extend[s])} px at the {s}" for s in sides])
    return {"edges": edges, "extend_px": amounts}


def subjects_text(subjects: Any) -> str:
    """Per-subject descriptions as one phrase, 'the woman in red (on the left); the man (on the right)', from
    a list of texts, ``{place: description}``, or a list of ``{"place": ..., "description": ...}``."""
    if isinstance(subjects, str):
        return _slot_text("subjects", subjects)
    if isinstance(subjects, dict):
        items = [f"{_slot_text('subjects', text)} ({place})" for place, text in subjects.items()]
    elif isinstance(subjects, (list, tuple)):
        items = []
        for entry in subjects:
            if isinstance(entry, dict):
                place, text = entry.get("place") or entry.get("position"), entry.get("description")
                if not text:
                    raise TemplateError(f"each subject needs a 'description', got {entry!r}")
                items.append(f"{_slot_text('subjects', text)} ({place})" if place else _slot_text("subjects", text))
            else:
                items.append(_slot_text("subjects", entry))
    else:
        raise TemplateError(f"subjects must be a list or a {{place: description}} table, got {subjects!r}")
    if len(items) < 2:
        raise TemplateError("two-subjects needs a description for each person: give at least two")
    return "; ".join(items)


# ---- what each kind of finding says ------------------------------------------------------------


def _cropped(finding: Finding, ev: dict, size) -> dict[str, str]:
    out = extend_slots(ev["extend"]) if ev.get("extend") else {}
    by_person: dict[str, list[str]] = {}
    for part in ev.get("parts", []):
        parts = by_person.setdefault(str(part.get("person", "the subject")), [])
        if part.get("part") and part["part"] not in parts:
            parts.append(str(part["part"]))
    if by_person:
        owners = [f"{'the main subject' if p == 'main subject' else p}'s {_and(parts)}" for p, parts in by_person.items()]
        out["cut_parts"] = _and(owners)
    return out


def _perspective(finding: Finding, ev: dict, size) -> dict[str, str]:
    which, degrees = ev.get("which"), abs(finding.score)
    sense = "counter-clockwise" if finding.score > 0 else "clockwise"
    if which == "horizon":
        return {"problem": f"the horizon tilts {degrees:.1f}° {sense} compared with the source"}
    if which == "verticals":
        return {"problem": f"the verticals lean {degrees:.1f}° {sense} compared with the source"}
    if which:
        return {"problem": f"the whole picture is turned {degrees:.1f}° {sense} compared with the source"}
    return {}


def _swapped(finding: Finding, ev: dict, size) -> dict[str, str]:
    here, was, now = ev.get("face_position"), ev.get("was"), ev.get("now_looks_like")
    if not (here and was):
        return {}
    here = "" if here == "only face" else f" {here}"
    if ev.get("kind") == "swapped" and ev.get("other_face_position") and now:
        return {"subjects": f"the face{here} belongs to {was}, and the face {ev['other_face_position']} to {now}"}
    tail = f", not to {now}" if now else ""
    return {"subjects": f"the face{here} belongs to {was}{tail}, and every other face keeps its own person"}


def _exposure(finding: Finding, ev: dict, size) -> dict[str, str]:
    out = {}
    baseline = ev.get("baseline", "the source")
    if ev.get("ev_change") is not None:
        change = float(ev["ev_change"])
        way = "darker" if change < 0 else "brighter"
        out["drift"] = f"it turned {abs(change):.2f} EV {way} than {baseline}"
    out["target_exposure"] = f"that of {baseline}"
    return out


def _colour(finding: Finding, ev: dict, size) -> dict[str, str]:
    out = {}
    if finding.unit == "Duv" and ev.get("tint_shift_duv") is not None:
        tint = float(ev["tint_shift_duv"])
        out["drift"] = f"it took a {'green' if tint > 0 else 'magenta'} tint against the source"
    elif ev.get("mired_shift") is not None:
        mired = float(ev["mired_shift"])
        way = "warmer (more yellow)" if mired > 0 else "cooler (more blue)"
        kelvin = ""
        if ev.get("cct_before_k") and ev.get("cct_after_k"):
            kelvin = f", about {ev['cct_before_k']:.0f} K to {ev['cct_after_k']:.0f} K"
        out["drift"] = f"its colours turned {way}: the white balance moved {abs(mired):.0f} mired{kelvin}"
    if ev.get("cct_before_k"):
        out["target_white_balance"] = f"that of the source picture (about {ev['cct_before_k']:.0f} K)"
    return out


def _halo(finding: Finding, ev: dict, size) -> dict[str, str]:
    where = {"alpha": "the cut-out edge", "mask": "the edge of the edited area", "edges": "the subject's outline"}
    polarity = ev.get("polarity")
    if polarity not in ("bright", "dark"):
        return {}
    along = where.get(ev.get("boundary"), "the subject's outline")
    return {"defect": f"a {polarity} fringe runs along {along}"}


def _blur(finding: Finding, ev: dict, size) -> dict[str, str]:
    return {"defect": f"the texture is softer than in the source (fine detail at {finding.score:.0%} of the source's)"}


def _face(finding: Finding, ev: dict, size) -> dict[str, str]:
    out = {}
    if ev.get("compared_with"):
        out["person"] = str(ev["compared_with"])
    centre = ev.get("face_centre")
    if centre and len(centre) == 2 and ev.get("faces_compared", 1) > 1:
        out["face"] = f"the face {_where(float(centre[0]), float(centre[1]))}"
    return out


def _hand(finding: Finding, ev: dict, size) -> dict[str, str]:
    rule = ev.get("rule")
    if rule == "extra_hand":
        return {"hand": "the hands at this person's wrists, keeping only as many as the arms can hold"}
    if rule == "hand_appeared":
        return {"hand": "the hand that the source does not have, so that it belongs to an arm or is gone"}
    if rule == "hand_vanished":
        return {"hand": "the hand the source has and the edit lost, as it is in the source"}
    box, handed = ev.get("hand_box"), ev.get("handedness")
    # MediaPipe labels handedness as if the photo were a mirrored selfie: its "Left" is the person's right hand.
    side = {"Left": "right", "Right": "left"}.get(str(handed))
    words = f"the person's {side} hand" if side else "the hand"
    if box and size:
        fx = (float(box[0]) + float(box[2])) / 2.0 / size[0]
        fy = (float(box[1]) + float(box[3])) / 2.0 / size[1]
        words += f" ({_where(fx, fy)})" if side else f" {_where(fx, fy)}"
    elif not side:
        return {}
    return {"hand": words}


def _spill(finding: Finding, ev: dict, size) -> dict[str, str]:
    if ev.get("global_change"):
        return {"spill": "across the whole picture"}
    sides = []
    for region in ev.get("regions", []):
        side = region.get("side")
        phrase = "around the masked area" if side == "around" else f"{side} the masked area"
        if side and phrase not in sides:
            sides.append(phrase)
    return {"spill": _and(sides)} if sides else {}


FROM_FINDING: dict[str, Callable[[Finding, dict, Any], dict[str, str]]] = {
    "subject_cropped": _cropped,
    "perspective_broken": _perspective,
    "subjects_swapped": _swapped,
    "exposure_drift": _exposure,
    "color_temperature_drift": _colour,
    "edge_halo": _halo,
    "texture_blur": _blur,
    "identity_drift": _face,
    "hand_malformed": _hand,
    "mask_spill": _spill,
}


# ---- rendering --------------------------------------------------------------------------------


def _check_request(template: Template, request: dict[str, Any]) -> None:
    known = [*template.slots, *STRUCTURED_KEYS, *DIFFUSION_KEYS]
    fills = {"extend": "extend_px", "subjects": "subjects"}
    for key in request:
        if key in fills and fills[key] not in template.slots:
            raise TemplateError(f"template {template.name!r} has no use for {key!r} (it fills {fills[key]!r})")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"template slots: {', '.join(template.slots) or 'none'}"
            raise TemplateError(f"template {template.name!r} has no slot {key!r}: {hint}")


def _fill_slots(template: Template, finding: Finding | None, request: dict[str, Any]) -> tuple[dict, dict]:
    values: dict[str, str] = {}
    sources: dict[str, str] = {}

    def offer(found: dict[str, str], source: str) -> None:
        for name, text in found.items():
            if name in template.slots:
                values[name] = _slot_text(name, text)
                sources[name] = source

    offer({n: s.default for n, s in template.slots.items() if s.default is not None}, "default")
    size = _image_size(finding, request)
    if finding is not None:
        evidence = finding.evidence or {}
        offer({n: v for n, v in evidence.items() if n in template.slots and isinstance(v, (str, int, float))
               and not isinstance(v, bool)}, "evidence")
        reader = FROM_FINDING.get(finding.kind)
        if reader is not None:
            offer(reader(finding, evidence, size), "finding")
    if "extend" in request:
        offer(extend_slots(request["extend"]), "request")
    if "subjects" in request and "subjects" in template.slots:
        offer({"subjects": subjects_text(request["subjects"])}, "request")
    offer({n: v for n, v in request.items() if n in template.slots and n != "subjects"}, "request")

    missing = {n: s.help for n, s in template.slots.items() if n not in values}
    if missing:
        raise MissingSlotError(template.name, missing)
    for name, slot in template.slots.items():  # a named value stands for its text
        key = " ".join(values[name].lower().replace("_", " ").replace("-", " ").split())
        if key in slot.choices:
            values[name] = slot.choices[key]
    return values, sources


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fill(text: str, values: dict[str, str]) -> str:
    out = text.format_map(values)
    if "{" in out or "}" in out:  # cannot happen for a validated template; guard the promise anyway
        raise TemplateError(f"a placeholder survived rendering: {out!r}")
    return out


def _midpoint(bounds, digits: int = 2) -> float:
    return round((bounds[0] + bounds[1]) / 2.0, digits)


def _diffusion(template: Template, request: dict[str, Any]) -> dict[str, Any]:
    start = template.diffusion
    options = {o.type: o for o in start.controls}
    control = request.get("control", start.control)
    if control is None:
        control = "none"
    if control != "none" and control not in options:
        offered = ", ".join(options) or "none"
        raise TemplateError(f"template {template.name!r} offers control {offered} (or 'none'), not {control!r}")
    chosen = options.get(control)
    d: dict[str, Any] = {
        "mode": start.mode,
        "strength": _midpoint(start.denoise),
        "strength_range": list(start.denoise),
        "guidance": _midpoint(start.guidance, 1),
        "guidance_range": list(start.guidance),
        "steps": int(math.floor((start.steps[0] + start.steps[1]) / 2.0 + 0.5)),
        "steps_range": list(start.steps),
        "control": None if chosen is None else chosen.type,
        "control_scale": None if chosen is None else _midpoint(chosen.scale),
        "control_scale_range": None if chosen is None else list(chosen.scale),
        "control_options": [o.model_dump() | {"scale": list(o.scale)} for o in start.controls],
        "ip_adapter_scale": None if start.reference_scale is None else _midpoint(start.reference_scale),
        "ip_adapter_scale_range": None if start.reference_scale is None else list(start.reference_scale),
        "reference_use": start.reference_use,
    }
    for key in ("strength", "guidance", "steps", "control_scale", "ip_adapter_scale"):
        if key in request:
            value = request[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TemplateError(f"{key} must be a number, got {value!r}")
            if key == "control_scale" and d["control"] is None:
                raise TemplateError("control_scale given but no control is chosen: pass control too")
            d[key] = int(value) if key == "steps" else float(value)
    return d


def render(template_name: str, finding: Finding | None = None, request: dict[str, Any] | None = None) -> RenderedPrompt:
    """Fill template ``template_name`` from ``finding`` and ``request`` (the request wins)."""
    template = load_template(template_name)
    request = dict(request or {})
    if finding is not None and finding.repair_template != template.name:
        raise TemplateError(f"a {finding.kind} finding is repaired with template {finding.repair_template!r}, "
                            f"not {template.name!r}")
    _check_request(template, request)
    values, sources = _fill_slots(template, finding, request)

    def fill(text: str) -> str:
        return _fill(text, values)

    sections = [
        f"Task: {_capital(fill(template.task))}",
        "Keep unchanged:\n" + "\n".join(f"- {_capital(fill(t))}" for t in template.preserve),
        "Change:\n" + "\n".join(f"- {_capital(fill(t))}" for t in template.change),
        "Composition:\n" + "\n".join(f"- {_capital(fill(t))}" for t in template.composition),
        "Do not:\n" + "\n".join(f"- {fill(d.clause)}" for d in template.do_not),
    ]
    phrases: list[str] = []
    for entry in template.do_not:
        for phrase in fill(entry.negative).split(","):
            phrase = phrase.strip()
            if phrase and phrase not in phrases:
                phrases.append(phrase)
    return RenderedPrompt(
        gpt_image_prompt="\n\n".join(sections),
        positive=fill(template.diffusion.positive),
        negative=", ".join(phrases),
        template=template.name,
        diffusion=_diffusion(template, request),
        slots=values,
        sources=sources,
    )
