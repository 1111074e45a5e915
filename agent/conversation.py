"""Repair by conversation: message -> typed request -> service -> reply, as a LangGraph graph.

One conversation is one thread of this graph, checkpointed in the same SQLite file as the repair
runs (thread id ``conversation:<id>``), so a conversation goes on after a restart: the images, the
steps taken, the last findings, the budget and a run waiting for an approval are all in its state.

    understand -> dispatch -> check | repair -> run | adjust | undo | explain | status | set_budget
               | approve | reject | cancel | help | unclear -> dispatch -> ... -> reply

- **understand** reads the message into a :class:`~agent.intent.Request` (the model parser or the
  offline rules, whichever the context holds), gives each attached image its role, and lists the
  actions to run.
- One node per action; each does its work through :mod:`agent.service` and adds lines to the reply.
  A repair is two nodes: **repair** records the order in the state (so a process killed while the
  loop runs picks the run up again on the next message), **run** runs or resumes it.
- **reply** closes the turn: the reply text, the images made, and whether a paid call waits.

The conversation never says a defect is fixed unless verify accepted a repair of it and the checks
no longer find it; it asks before every paid call (the run waits in its own checkpoint); a light
change ("a bit warmer") continues from the current image, the last one a step produced, and undo
goes back one step or to the original.
"""

from __future__ import annotations

import operator
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
import secrets
from typing import Annotated, Any, Callable, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field

from fixloop.agent.intent import ImageRole, LightChange, Request, parse_rules
from fixloop.checks.images import InputError

THREAD_PREFIX = "conversation:"
Progress = Callable[..., None]
Parser = Callable[[str], Request]

# The failure library's defects in a sentence each: what a person sees, and what repairs it.
KIND_WORDS: dict[str, tuple[str, str]] = {
    "mask_spill": ("the edit changed pixels outside the area it was allowed to change",
                   "restore the original outside the edit mask (free, needs the original and the mask), or "
                   "redo the edit on a narrower region"),
    "subject_cropped": ("the frame cuts through the subject (head, hands or feet)",
                        "grow the canvas and outpaint the missing part (a generative backend)"),
    "perspective_broken": ("verticals lean or the horizon tilts against the original",
                           "redraw under structure control (a generative backend)"),
    "mirrored": ("the picture came back flipped left-right", "flip it back (free) when nothing else changed"),
    "subjects_swapped": ("two people exchanged identity, clothing or place",
                         "per-subject masks and descriptions (a generative backend)"),
    "sticker_object": ("an inserted object looks pasted on, without a contact shadow",
                       "repaint the object's base and the surface under it (a generative backend)"),
    "exposure_drift": ("the picture got darker or brighter than the original",
                       "one exposure pass matched to the original (free, needs the original)"),
    "color_temperature_drift": ("the white balance drifted warmer or cooler than the original",
                                "one white-balance pass matched to the original (free, needs the original)"),
    "light_direction_mismatch": ("the edited part is lit from another side than the scene",
                                 "relight the region to the scene's light (a generative backend)"),
    "identity_drift": ("a face no longer looks like the same person",
                       "a face-only repair with an identity reference (a generative backend)"),
    "hand_malformed": ("a hand has the wrong number of fingers, broken joints or an extra hand",
                       "repaint only that hand, one hand per pass (a generative backend)"),
    "texture_blur": ("fine texture got softer than in the original",
                     "upscale first, then a low-denoise local repaint (a generative backend)"),
    "edge_halo": ("a bright or dark fringe runs along a subject's outline",
                  "defringe the edge ring (free), else repaint the ring (a generative backend)"),
}
# Repairs the offline backend can make, and what each needs.
FREE_REPAIRS: dict[str, tuple[str, ...]] = {
    "exposure_drift": ("source",), "color_temperature_drift": ("source",), "mask_spill": ("source", "mask"),
    "mirrored": (), "edge_halo": (),
}


# ---- state ----------------------------------------------------------------------------------------


class Attachment(BaseModel):
    """An image that came with a message (already saved by the front end), and the role it was given."""

    model_config = ConfigDict(extra="forbid")

    path: str
    role: ImageRole | None = None  # given by the front end (/source PATH); None: the conversation decides
    name: str | None = None  # the file's own name (a Slack upload's), read for "original" / "before"


class Step(BaseModel):
    """One image of the conversation's history: the input, an accepted repair, a light change."""

    model_config = ConfigDict(extra="forbid")

    image: str
    label: str
    kind: Literal["input", "repair", "adjust"]
    run_id: str | None = None


class FindingNote(BaseModel):
    """A finding as the conversation tells it."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    priority: str
    stage: str
    message: str
    box: list[int] | None = None


class OpenNote(BaseModel):
    """A defect a repair run left open: why, and what would fix it."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    priority: str
    reason: str
    would_fix: str


class RunOrderNote(BaseModel):
    """A repair the conversation started (or is about to): enough to start it again or resume it."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    out: str
    image: str
    only_kinds: list[str] | None = None
    skip_kinds: list[str] = Field(default_factory=list)
    max_usd: float | None = None
    steps_before: int = 1  # steps the history had when the run started (its results go after them)


class Waiting(BaseModel):
    """A paid call a repair run waits on."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    question: str
    estimated_usd: float = 0.0


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    text: str


class Reply(BaseModel):
    """What the conversation answers to one message."""

    model_config = ConfigDict(extra="forbid")

    text: str = ""
    understood: str = ""  # the request, in one line
    images: list[tuple[str, str]] = Field(default_factory=list)  # (what it is, path) made by this message
    review_sheet: str | None = None
    final_image: str | None = None  # set when a repair produced an image with at least one accepted repair
    waiting: Waiting | None = None  # a paid call waits for approve / reject
    findings: list[FindingNote] = Field(default_factory=list)  # of the current image, when this message checked it
    verdict: str | None = None


class ConversationState(BaseModel):
    """One conversation. The settings and history persist; ``message`` to ``reply`` are per message."""

    model_config = ConfigDict(extra="forbid")

    conversation_id: str
    out_dir: str
    backend: str = "local"
    model: str | None = None
    max_usd: float | None = None  # None: the policy's default
    free_only: bool = False
    protect: list[str] = Field(default_factory=list)  # regions the user asked to keep, standing
    source: str | None = None
    mask: str | None = None
    references: list[str] = Field(default_factory=list)
    steps: list[Step] = Field(default_factory=list)  # steps[0] is the original edit; steps[-1] the current image
    findings: list[FindingNote] = Field(default_factory=list)  # of the image checked last
    checked_image: str | None = None  # which image ``findings`` describe
    skipped: list[str] = Field(default_factory=list)  # checks skipped on it, and why
    verdict: str | None = None
    open: list[OpenNote] = Field(default_factory=list)  # left open by the last repair run
    runs: list[str] = Field(default_factory=list)
    spent_usd: float = 0.0
    order: RunOrderNote | None = None  # a repair recorded but not yet finished (a killed process resumes it)
    waiting: Waiting | None = None
    turns: Annotated[list[Turn], operator.add] = Field(default_factory=list)
    # per message
    message: str = ""
    attachments: list[Attachment] = Field(default_factory=list)
    request: Request | None = None
    todo: list[str] = Field(default_factory=list)
    lines: list[str] = Field(default_factory=list)
    reply: Reply = Field(default_factory=Reply)

    @property
    def current(self) -> str | None:
        return self.steps[-1].image if self.steps else None


CHECKPOINT_TYPES = [(__name__, cls.__name__) for cls in (
    Attachment, Step, FindingNote, OpenNote, RunOrderNote, Waiting, Turn, Reply, ConversationState)] + [
    ("fixloop.agent.intent", "Request"), ("fixloop.agent.intent", "LightChange")]


@dataclass
class ConversationContext:
    """What one process of a conversation holds: the parser, the progress callback, the checkpoint file."""

    parse: Parser = parse_rules
    progress: Progress | None = None
    db: str | Path | None = None
    policy: str | Path | None = None


# ---- helpers --------------------------------------------------------------------------------------


def _say(state: ConversationState, *lines: str) -> list[str]:
    return [*state.lines, *[line for line in lines if line is not None]]


def _pop(state: ConversationState) -> list[str]:
    return state.todo[1:]


def _step_file(state: ConversationState, label: str) -> Path:
    folder = Path(state.out_dir) / "steps"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{len(state.steps):02d}-{label}.png"


def _notes_of(report) -> list[FindingNote]:
    return [FindingNote(kind=f.kind, priority=f.priority.value, stage=f.stage.value, message=f.message,
                        box=None if f.region is None else f.region.box) for f in report.findings]


def _skipped_of(report) -> list[str]:
    return [f"{run.name}: {run.reason}" for run in report.checks if run.status.value == "skipped"]


def _needs_original(skipped: list[str]) -> bool:
    return any("source" in s or "original" in s for s in skipped)


def free_repair(kind: str, has_source: bool, has_mask: bool) -> bool:
    """Whether the offline backend can repair ``kind`` with the images the conversation has."""
    needs = FREE_REPAIRS.get(kind)
    if needs is None:
        return False
    return ("source" not in needs or has_source) and ("mask" not in needs or has_mask)


def _finding_lines(findings: list[FindingNote]) -> list[str]:
    return [f"  {i}. {f.kind} ({f.priority}, {f.stage}): {f.message}" for i, f in enumerate(findings, 1)]


def _money(state: ConversationState) -> str:
    if state.free_only:
        return "free repairs only"
    limit = "the default limit ($2.00)" if state.max_usd is None else f"${state.max_usd:.2f}"
    return f"${state.spent_usd:.4f} spent of {limit}"


def _paid_backend(backend: str) -> bool:
    """A backend whose calls cost money (its registry entry says so)."""
    from fixloop.tools.base import load_backend

    try:
        return load_backend(backend).paid
    except KeyError:
        return False


def check_sheet(image_path: str, findings: list[FindingNote], verdict: str, target: Path,
                notes: list[str]) -> Path:
    """A one-panel review sheet of a check: the image with each finding's box and number, and the
    findings listed below it."""
    from PIL import Image, ImageDraw

    from fixloop.checks.report import atomic_path

    image = Image.open(image_path).convert("RGB")
    scale = min(1.0, 640 / max(image.size))
    panel = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    lines = [f"fixloop check · verdict {verdict.upper()} · {len(findings)} finding(s)"]
    lines += [f"{i}. {f.kind} ({f.priority}, {f.stage}): {f.message}" for i, f in enumerate(findings, 1)]
    lines += notes
    wrapped: list[str] = []
    width_chars = max(40, panel.width // 7)
    for line in lines:
        while len(line) > width_chars:
            cut = line.rfind(" ", 0, width_chars)
            cut = cut if cut > 0 else width_chars
            wrapped.append(line[:cut])
            line = "    " + line[cut:].lstrip()
        wrapped.append(line)
    sheet = Image.new("RGB", (panel.width + 24, panel.height + 24 + 16 * len(wrapped) + 12), "white")
    sheet.paste(panel, (12, 12))
    draw = ImageDraw.Draw(sheet)
    for i, f in enumerate(findings, 1):
        if f.box is None:
            continue
        x0, y0, x1, y1 = (round(v * scale) + 12 for v in f.box)
        colour = (220, 0, 90) if f.priority == "P0" else (240, 140, 0)
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=3)
        draw.text((x0 + 4, y0 + 2), str(i), fill=colour)
    y = panel.height + 24
    for line in wrapped:
        draw.text((12, y), line, fill=(25, 25, 25))
        y += 16
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        sheet.save(tmp, format="PNG")
    return target


# ---- nodes ----------------------------------------------------------------------------------------


def understand(state: ConversationState, runtime) -> dict:
    ctx: ConversationContext = runtime.context
    request = ctx.parse(state.message) if state.message.strip() else Request(actions=[])
    request = request.canonical() if state.message.strip() else request
    update: dict[str, Any] = {"request": request, "lines": [], "reply": Reply(understood=request.summary())}
    lines: list[str] = []
    steps, source, mask, references = list(state.steps), state.source, state.mask, list(state.references)
    new_candidate = False
    for attachment, role in assign_roles(state.attachments, request, has_candidate=bool(steps)):
        name = attachment.name or Path(attachment.path).name
        if role == "candidate":
            steps, new_candidate = [Step(image=attachment.path, label="input", kind="input")], True
            lines.append(f"I took {name} as the edit to work on.")
        elif role == "source":
            source = attachment.path
            lines.append(f"I took {name} as the original (before the edit).")
        elif role == "mask":
            mask = attachment.path
            lines.append(f"I took {name} as the edit mask (white = where the edit was allowed).")
        else:
            references.append(attachment.path)
            lines.append(f"I took {name} as a reference (what the person or product looks like).")
    if request.image_role and not state.attachments:
        lines.append(f"Send the {request.image_role} image with that message (attach it), and I will use it.")
    todo = [a for a in request.actions if a != "unclear" or not state.attachments]
    if state.attachments and not todo and steps:
        todo = ["check"]  # a new image (or a new original) without a word: look at it
    if state.order is not None and state.waiting is None:
        todo = ["run", *todo]  # a repair the last process did not finish: pick it up first
        lines.append(f"Picking up repair run {state.order.run_id}, which was still going when I stopped.")
    protect = sorted((set(state.protect) | set(request.protect)) - set(request.regions))
    if new_candidate:
        update.update(findings=[], checked_image=None, skipped=[], verdict=None, open=[])
    update.update(steps=steps, source=source, mask=mask, references=references, todo=todo, protect=protect,
                  lines=lines, turns=[Turn(role="user", text=state.message)])
    return update


def assign_roles(attachments: list[Attachment], request: Request, has_candidate: bool) -> list[tuple[Attachment, str]]:
    """The role of each image of a message. A role the front end gave stands. Among several images
    without roles, one named as a mask is the edit mask; two are the edit and its original: the one
    whose name says original / source / before is the original, else the second (more are
    references). One image takes the role the text gives it ("this is the original"), else it is a
    new edit to work on."""
    given = [(a, a.role) for a in attachments if a.role]
    free = [a for a in attachments if not a.role]
    if len(free) >= 2:  # among several images, one named as the mask is the mask
        masks = [a for a in free if "mask" in (a.name or Path(a.path).name).lower()]
        given += [(a, "mask") for a in masks[:1]]
        free = [a for a in free if a not in masks[:1]]
    if len(free) >= 2:
        named = [a for a in free if any(w in (a.name or Path(a.path).name).lower()
                                        for w in ("original", "source", "before", "orig"))]
        original = named[0] if named else free[1]
        edit = next(a for a in free if a is not original)
        rest = [a for a in free if a is not original and a is not edit]
        return given + [(edit, "candidate"), (original, "source")] + [(a, "reference") for a in rest]
    if free:
        role = request.image_role or "candidate"
        if role != "candidate" and not has_candidate and not given:
            role = "candidate"  # nothing to compare it with yet: it is the edit
        return given + [(free[0], role)]
    return given


def check(state: ConversationState, runtime) -> dict:
    from fixloop.agent import service

    ctx: ConversationContext = runtime.context
    if not state.steps:
        return {"todo": _pop(state), "lines": _say(state, "Send me an image first (attach it, or /attach PATH).")}
    report = service.check(state.current, source=state.source, mask=state.mask, references=state.references,
                           policy=ctx.policy)
    findings, skipped = _notes_of(report), _skipped_of(report)
    lines = [f"Verdict: {report.verdict.upper()}."]
    if findings:
        lines.append(f"{len(findings)} problem(s), worst first:")
        lines += _finding_lines(findings)
    else:
        lines.append("I found no defect.")
    if state.source is None and _needs_original(skipped):
        lines.append("Without the original, the checks that compare with it were skipped (exposure, colour, "
                     "spill, blur and others): send it and say 'this is the original'.")
    must = [f for f in findings if f.priority in ("P0", "P1")]
    if must:
        free = [f.kind for f in must if free_repair(f.kind, state.source is not None, state.mask is not None)]
        other = [f.kind for f in must if f.kind not in free]
        if free:
            lines.append(f"I can repair for free: {', '.join(dict.fromkeys(free))}.")
        if other and not _generative(state.backend):
            lines.append(f"{', '.join(dict.fromkeys(other))} need(s) a generative backend (openai or diffusers); "
                         "the offline one cannot redraw them.")
        elif other:
            lines.append(f"{', '.join(dict.fromkeys(other))} need(s) a {state.backend} edit"
                         + (" (paid: I will ask before each call)." if _paid_backend(state.backend) else "."))
        lines.append("Say 'fix it' (or 'fix only the hands', 'keep her face').")
    sheet = check_sheet(state.current, findings, report.verdict,
                        Path(state.out_dir) / "checks" / f"{len(state.turns):03d}-check.png",
                        [f"skipped: {s}" for s in skipped[:6]])
    lines.append(f"Review sheet: {sheet}")
    reply = state.reply.model_copy(update={
        "review_sheet": str(sheet), "findings": findings, "verdict": report.verdict,
        "images": [*state.reply.images, ("review sheet", str(sheet))]})
    return {"todo": _pop(state), "lines": _say(state, *lines), "findings": findings, "skipped": skipped,
            "verdict": report.verdict, "checked_image": state.current, "reply": reply}


def repair(state: ConversationState, runtime) -> dict:
    """Record the repair order; the next node runs it (so a killed process can pick it up)."""
    from fixloop.agent import service

    if not state.steps:
        return {"todo": _pop(state), "lines": _say(state, "Send me an image first (attach it, or /attach PATH).")}
    if state.waiting is not None:
        return {"todo": _pop(state), "lines": _say(state, f"Run {state.waiting.run_id} still waits for your answer: "
                                                          f"{state.waiting.question} (yes / no)")}
    request = state.request or Request()
    wanted = request.wanted_kinds()
    skip = sorted(set(request.protected_kinds()) | set(Request(protect=state.protect).protected_kinds()))
    if wanted:
        skip = [k for k in skip if k not in (request.targets or [])]
    run_id = service.new_run_id()
    order = RunOrderNote(run_id=run_id, out=str(Path(state.out_dir) / "runs" / run_id), image=state.current,
                         only_kinds=wanted, skip_kinds=skip,
                         max_usd=0.0 if state.free_only else state.max_usd, steps_before=len(state.steps))
    lines = []
    if wanted:
        lines.append(f"Repairing only: {', '.join(wanted)}.")
    if state.protect:
        lines.append(f"Keeping as they are: {', '.join(state.protect)}"
                     + (f" (no {', '.join(skip)} repair)." if skip else "."))
    return {"todo": ["run", *_pop(state)], "order": order, "lines": _say(state, *lines)}


def run(state: ConversationState, runtime) -> dict:
    """Start the recorded repair, or resume it when its run already exists (a restart)."""
    from fixloop.agent import service

    ctx: ConversationContext = runtime.context
    order = state.order
    if order is None:
        return {"todo": _pop(state)}
    try:
        existing = service.inspect_run(order.run_id, ctx.db)
    except InputError:
        existing = None
    try:
        if existing is None:
            result = service.start_repair(service.RepairOrder(
                image=order.image, source=state.source, mask=state.mask, references=state.references,
                backend=state.backend, model=state.model, max_usd=order.max_usd, out=order.out,
                approve=_paid_backend(state.backend), policy=ctx.policy, run_id=order.run_id,
                only_kinds=order.only_kinds, skip_kinds=order.skip_kinds), progress=ctx.progress, db=ctx.db)
        else:
            result = service.resume_repair(order.run_id, progress=ctx.progress, db=ctx.db)
    except InputError as exc:
        return {"todo": _pop(state), "order": None, "lines": _say(state, f"I could not run the repair: {exc}")}
    runs = state.runs if order.run_id in state.runs else [*state.runs, order.run_id]
    return {"todo": _pop(state), "runs": runs, **_after_run(state, result, ctx)}


def _after_run(state: ConversationState, result, ctx: ConversationContext) -> dict:
    """What a repair run (finished, or waiting on a paid call) means for the conversation."""
    from fixloop.agent import service
    from fixloop.agent.state import Outcome

    order = state.order
    if not result.finished:
        question = service.waiting_for_approval(result.run_id, ctx.db) or {}
        waiting = Waiting(run_id=result.run_id, question=question.get("question", "Run the paid repair?"),
                          estimated_usd=float(question.get("estimated_usd", 0.0)))
        lines = [f"{waiting.question} It costs about ${waiting.estimated_usd:.4f} ({_money(state)}). "
                 "Approve? (yes / no)"]
        reply = state.reply.model_copy(update={"waiting": waiting})
        return {"waiting": waiting, "lines": _say(state, *lines), "reply": reply,
                "spent_usd": round(state.spent_usd + 0.0, 6)}

    folder = Path(result.inputs.out_dir)
    accepted = [a for a in result.attempts if a.outcome == Outcome.accepted and a.image]
    left = {f.kind for f in result.findings}
    steps = list(state.steps[: order.steps_before]) if order else list(state.steps)
    for attempt in accepted:
        steps.append(Step(image=str(folder / attempt.image), label=f"{attempt.plan.target.kind} repair",
                          kind="repair", run_id=result.run_id))
    report = service.run_report(result)
    final = folder / report.final_image if report and report.final_image else None
    if accepted and final is not None and final.exists():
        steps[-1] = steps[-1].model_copy(update={"image": str(final)})
    sheet = folder / report.review_sheet if report and report.review_sheet else None

    fixed, improved = [], []
    for attempt in accepted:
        kinds = [attempt.plan.target.kind] + [k.split("@")[0] for k in attempt.plan.also_fixes]
        for kind in kinds:
            (improved if kind in left else fixed).append(kind)
    fixed = list(dict.fromkeys(fixed))
    improved = [k for k in dict.fromkeys(improved) if k not in fixed]
    open_notes = [OpenNote(kind=d.kind, priority=d.priority, reason=d.reason, would_fix=d.would_fix)
                  for d in [*result.open_defects.values(), *result.held_back.values()]]
    findings = [FindingNote(kind=f.kind, priority=f.priority, stage=f.stage, message=f.message, box=f.box)
                for f in result.findings]
    spent = state.spent_usd + result.spend.usd
    lines = []
    if fixed:
        lines.append(f"Repaired, and verified by the checks: {', '.join(fixed)}.")
    if improved:
        lines.append(f"Improved but still found: {', '.join(improved)}.")
    before = {f["kind"] for f in (result.attempts[0].findings_before if result.attempts else [])}
    gone = sorted(before - left - set(fixed) - set(improved))
    if accepted and gone:
        lines.append(f"No longer found after those repairs: {', '.join(gone)}.")
    if not accepted:
        lines.append("No repair was accepted: the image is unchanged.")
    rolled = [a for a in result.attempts if a.outcome != Outcome.accepted]
    if rolled:
        lines.append(f"{len(rolled)} attempt(s) rolled back or not made: "
                     + "; ".join(f"{a.plan.target.kind}: {a.reason}" for a in rolled[:3]) + ".")
    for note in open_notes:
        lines.append(f"Still open: {note.kind} ({note.priority}): {note.reason}. What would fix it: {note.would_fix}.")
    wanted = set(order.only_kinds or []) if order else set()
    untouched = [f.kind for f in findings if f.priority in ("P0", "P1") and f.kind not in fixed
                 and f.kind not in {n.kind for n in open_notes}
                 and ((wanted and f.kind not in wanted) or (order and f.kind in order.skip_kinds))]
    if untouched:
        lines.append(f"Left alone, as you asked: {', '.join(dict.fromkeys(untouched))}.")
    lines.append(f"Verdict now: {(result.verdict or 'error').upper()} · {result.spend.passes} pass(es) · "
                 f"${result.spend.usd:.4f} this run.")
    images = list(state.reply.images)
    if accepted and final is not None:
        lines.append(f"Final image: {final}")
        images.append(("repaired image", str(final)))
    if sheet is not None and sheet.exists():
        lines.append(f"Review sheet: {sheet}")
        images.append(("review sheet", str(sheet)))
    reply = state.reply.model_copy(update={
        "images": images, "review_sheet": str(sheet) if sheet else None,
        "final_image": str(final) if accepted and final else None, "findings": findings,
        "verdict": result.verdict, "waiting": None})
    return {"steps": steps, "order": None, "waiting": None, "findings": findings, "verdict": result.verdict,
            "checked_image": steps[-1].image if steps else None, "open": open_notes, "spent_usd": round(spent, 6),
            "lines": _say(state, *lines), "reply": reply}


def adjust(state: ConversationState, runtime) -> dict:
    """A light change relative to the current image, measured after it is made."""
    ctx: ConversationContext = runtime.context
    request = state.request or Request()
    light = request.light or LightChange()
    if not state.steps:
        return {"todo": _pop(state), "lines": _say(state, "Send me an image first (attach it, or /attach PATH).")}
    if light.empty:
        return {"todo": _pop(state), "lines": _say(state, "Say how: 'a bit warmer', 'half a stop brighter', '5000 K'.")}
    try:
        path, measured = relight(state.current, light, _step_file(state, _adjust_label(light)), ctx.policy)
    except InputError as exc:
        return {"todo": _pop(state), "lines": _say(state, f"I could not change the light: {exc}")}
    steps = [*state.steps, Step(image=str(path), label=_adjust_label(light), kind="adjust")]
    line = (f"Made it {_adjust_words(light)} (from {Path(state.current).name}); measured against it: "
            f"{measured['ev']:+.2f} EV, {measured['mired']:+.1f} mired. Image: {path}")
    reply = state.reply.model_copy(update={"images": [*state.reply.images, ("adjusted image", str(path))],
                                           "final_image": str(path)})
    return {"todo": _pop(state), "steps": steps, "lines": _say(state, line), "reply": reply}


def _adjust_label(light: LightChange) -> str:
    bits = []
    if light.ev:
        bits.append(f"{light.ev:+g}ev")
    if light.mired:
        bits.append(f"{light.mired:+g}mired")
    if light.kelvin:
        bits.append(f"{light.kelvin:g}k")
    return "adjust-" + "-".join(bits)


def _adjust_words(light: LightChange) -> str:
    words = []
    if light.mired:
        words.append(f"{'warmer' if light.mired > 0 else 'cooler'} by {abs(light.mired):g} mired")
    if light.ev:
        words.append(f"{'brighter' if light.ev > 0 else 'darker'} by {abs(light.ev):g} EV")
    if light.kelvin:
        words.append(f"lit to {light.kelvin:g} K")
    return " and ".join(words)


def relight(image: str, light: LightChange, target: Path, policy=None) -> tuple[Path, dict[str, float]]:
    """``image`` re-lit by ``light`` with ``local.exposure_color`` (through the service), written to
    ``target``; returns the path and the change measured against ``image`` with the checks' own
    measures (EV of the mean luminance, mired of the white point)."""
    from fixloop.agent import service
    from fixloop.checks.color import white_point
    from fixloop.checks.images import to_uint8
    from fixloop.tools.local import estimate_illuminant

    pixels = to_uint8(service.decode_image(image).pixels)
    parameters: dict[str, Any] = {}
    if light.ev:
        parameters["ev"] = light.ev
    if light.kelvin:
        parameters["cct"] = light.kelvin
    elif light.mired:
        # the picture's own light, as the tool estimates it, moved by the asked shift
        now = white_point(estimate_illuminant(pixels)).mired
        parameters["cct"] = round(1e6 / max(1e6 / 15000, min(1e6 / 1500, now + light.mired)), 1)
    if "cct" not in parameters:
        parameters["white_balance"] = False
    outcome = service.fix(pixels, "local.exposure_color", parameters=parameters, policy=policy)
    service.write_fix(outcome, target)
    return target, measure_change(pixels, outcome.image[..., :3])


def measure_change(before, after) -> dict[str, float]:
    """EV and mired of ``after`` against ``before``, as exposure_drift and color_temperature_drift measure."""
    from fixloop.checks.color import measure_white_balance
    from fixloop.checks.context import CheckContext
    from fixloop.checks.exposure import measure_exposure

    ctx = CheckContext.from_arrays(after, before)
    change = measure_exposure(ctx.registered_source, ctx.candidate, ctx.registered_unedited_region())
    return {"ev": float(change.ev), "mired": float(measure_white_balance(ctx).mired)}


def undo(state: ConversationState, runtime) -> dict:
    request = state.request or Request()
    if len(state.steps) <= 1:
        text = "There is nothing to undo: this is the original." if state.steps else "There is nothing to undo."
        return {"todo": _pop(state), "lines": _say(state, text)}
    steps = state.steps[:1] if request.undo_all else state.steps[:-1]
    gone = state.steps[len(steps):]
    line = (f"Undone: {', '.join(s.label for s in reversed(gone))}. Now at "
            f"{'the original' if len(steps) == 1 else steps[-1].label}: {steps[-1].image}")
    return {"todo": _pop(state), "steps": steps, "lines": _say(state, line)}


def explain(state: ConversationState, runtime) -> dict:
    request = state.request or Request()
    asked = request.wanted_kinds() or []
    lines: list[str] = []
    findings = state.findings
    for kind in asked:
        looks, fixes = KIND_WORDS.get(kind, ("", ""))
        found = [f for f in findings if f.kind == kind]
        lines.append(f"{kind}: {looks}. " + (f"Here: {found[0].message} " if found else
                                            "I do not find it on the current image. ") + f"What repairs it: {fixes}.")
    if not asked:
        if not findings and state.verdict is None:
            lines.append("I have not checked an image yet: send one, or say 'check'.")
        elif not findings:
            lines.append("The last check found no defect.")
        for f in findings:
            looks, fixes = KIND_WORDS.get(f.kind, ("", ""))
            lines.append(f"{f.kind} ({f.priority}, {f.stage} stage): {f.message} That is {looks}; "
                         f"what repairs it: {fixes}.")
        if findings:
            lines.append("I repair structure first, then light, then detail: a detail repaired on a wrong "
                         "structure is wasted.")
    for note in state.open:
        if not asked or note.kind in asked:
            lines.append(f"Left open by the last run: {note.kind}: {note.reason}; would fix: {note.would_fix}.")
    if state.skipped and not asked:
        lines.append("Skipped: " + "; ".join(state.skipped[:5]) + ".")
    return {"todo": _pop(state), "lines": _say(state, *lines)}


def status(state: ConversationState, runtime) -> dict:
    lines = [f"Conversation {state.conversation_id} · backend {state.backend} · {_money(state)}."]
    if not state.steps:
        lines.append("No image yet.")
    else:
        lines.append(f"Current image: {state.current} ({len(state.steps) - 1} step(s) after the original).")
        for i, step in enumerate(state.steps):
            lines.append(f"  {i}. {step.label}: {step.image}")
    roles = [f"original {state.source}" if state.source else "no original",
             f"mask {state.mask}" if state.mask else "no mask",
             f"{len(state.references)} reference(s)"]
    lines.append("Images: " + ", ".join(roles) + ".")
    if state.verdict is not None:
        kinds = ", ".join(f"{f.kind} ({f.priority})" for f in state.findings) or "none"
        lines.append(f"Last verdict: {state.verdict.upper()}; findings: {kinds}.")
    if state.protect:
        lines.append(f"Keeping: {', '.join(state.protect)}.")
    if state.runs:
        lines.append(f"Repair runs: {', '.join(state.runs)}.")
    if state.waiting is not None:
        lines.append(f"Waiting for your answer: {state.waiting.question} (about ${state.waiting.estimated_usd:.4f})")
    return {"todo": _pop(state), "lines": _say(state, *lines)}


def set_budget(state: ConversationState, runtime) -> dict:
    request = state.request or Request()
    update: dict[str, Any] = {"todo": _pop(state)}
    if request.free_only:
        update.update(free_only=True)
        line = "From now on: free (local) repairs only; I will not make a paid call."
    elif request.max_usd is not None:
        update.update(max_usd=request.max_usd, free_only=request.max_usd == 0)
        line = f"Budget set: at most ${request.max_usd:.2f} for paid repairs (${state.spent_usd:.4f} spent so far)."
    else:
        line = f"Budget: {_money(state)}."
    update["lines"] = _say(state, line)
    return update


def _answer(state: ConversationState, runtime, approve: bool) -> dict:
    from fixloop.agent import service

    ctx: ConversationContext = runtime.context
    if state.waiting is None:
        return {"todo": _pop(state), "lines": _say(state, "Nothing is waiting for an approval.")}
    try:
        result = service.answer_approval(state.waiting.run_id, approve, progress=ctx.progress, db=ctx.db)
    except InputError as exc:
        return {"todo": _pop(state), "waiting": None, "order": None, "lines": _say(state, f"{exc}.")}
    said = "Approved: running the paid repair." if approve else "Declined: no paid call; the free repairs go on."
    working = state.model_copy(update={"lines": _say(state, said), "waiting": None})
    return {"todo": _pop(state), **_after_run(working, result, ctx)}


def approve(state: ConversationState, runtime) -> dict:
    return _answer(state, runtime, True)


def reject(state: ConversationState, runtime) -> dict:
    return _answer(state, runtime, False)


def cancel(state: ConversationState, runtime) -> dict:
    if state.waiting is None:
        return {"todo": [], "lines": _say(state, "Nothing is running; nothing to cancel.")}
    line = (f"Cancelled: run {state.waiting.run_id} stays where it stopped, nothing was paid for it; the image "
            f"is still {state.current}.")
    return {"todo": [], "waiting": None, "order": None, "lines": _say(state, line)}


HELP = ("I check edited images and repair what broke. Send an image (and its original: 'this is the original'), "
        "then say: 'check', 'fix it', 'fix only the hands', 'keep her face', 'make it a bit warmer', "
        "'half a stop brighter', 'undo', 'back to the original', 'why?', 'status', 'no more than $1', "
        "'free fixes only'. Before any paid repair I ask, and wait for yes or no.")


def help_node(state: ConversationState, runtime) -> dict:
    return {"todo": _pop(state), "lines": _say(state, HELP)}


def unclear(state: ConversationState, runtime) -> dict:
    return {"todo": _pop(state), "lines": _say(state, "I did not understand that. " + HELP)}


def reply(state: ConversationState, runtime) -> dict:
    request = state.request or Request()
    lines = list(state.lines)
    if not lines and (request.protect or request.regions):
        lines.append(f"Noted: I will keep {', '.join(state.protect)} as they are." if state.protect
                     else "Noted.")
    text = "\n".join(lines) or "OK."
    final = state.reply.model_copy(update={"text": text, "waiting": state.waiting})
    return {"reply": final, "turns": [Turn(role="assistant", text=text)], "todo": [], "attachments": []}


# ---- routing and assembly -------------------------------------------------------------------------

ACTION_NODES = {"check": check, "repair": repair, "run": run, "adjust": adjust, "undo": undo, "explain": explain,
                "status": status, "set_budget": set_budget, "approve": approve, "reject": reject,
                "cancel": cancel, "help": help_node, "unclear": unclear}


def next_action(state: ConversationState) -> str:
    return state.todo[0] if state.todo and state.todo[0] in ACTION_NODES else "reply"


def build_graph():
    from langgraph.graph import END, START, StateGraph

    graph = StateGraph(ConversationState, context_schema=ConversationContext)
    graph.add_node("understand", understand)
    for name, node in ACTION_NODES.items():
        graph.add_node(name, node)
    graph.add_node("reply", reply)
    graph.add_edge(START, "understand")
    for name in ("understand", *ACTION_NODES):
        graph.add_conditional_edges(name, next_action, [*ACTION_NODES, "reply"])
    graph.add_edge("reply", END)
    return graph


# ---- the conversation as front ends use it ---------------------------------------------------------


def _generative(backend: str) -> bool:
    """A backend that can redraw a region (its registry entry names a generative tool)."""
    from fixloop.tools.base import load_backend

    try:
        return load_backend(backend).tool is not None
    except KeyError:
        return False


def new_conversation_id(prefix: str = "chat") -> str:
    return f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def default_backend() -> str:
    """``openai`` when a key is set, else the offline ``local`` backend."""
    return "openai" if os.environ.get("OPENAI_API_KEY") else "local"


class Conversation:
    """One conversation, open on its checkpoint file.

        with Conversation.open("chat-1", out_dir="fixloop-chat/chat-1") as chat:
            answer = chat.send("check this", [Attachment(path="edit.png")])
    """

    def __init__(self, conversation_id: str, graph, context: ConversationContext, settings: dict[str, Any]):
        self.conversation_id = conversation_id
        self._graph, self.context, self._settings = graph, context, settings
        self.config = {"configurable": {"thread_id": THREAD_PREFIX + conversation_id}, "recursion_limit": 200}

    @classmethod
    @contextmanager
    def open(cls, conversation_id: str, out_dir: str | Path | None = None, backend: str | None = None,
             model: str | None = None, max_usd: float | None = None, parser: Parser | None = None,
             progress: Progress | None = None, db: str | Path | None = None,
             policy: str | Path | None = None) -> Iterator["Conversation"]:
        from fixloop.agent.runner import open_checkpointer

        with open_checkpointer(db, CHECKPOINT_TYPES) as saver:
            graph = build_graph().compile(checkpointer=saver)
            context = ConversationContext(parse=parser or parse_rules, progress=progress, db=db, policy=policy)
            settings = {"out_dir": str(Path(out_dir or Path("fixloop-chat") / conversation_id).resolve()),
                        "backend": backend, "model": model, "max_usd": max_usd}
            yield cls(conversation_id, graph, context, settings)

    @property
    def backend(self) -> str:
        """The backend this conversation uses: the one given, else the one it had, else the default."""
        if self._settings.get("backend"):
            return self._settings["backend"]
        current = self.state()
        return current.backend if current is not None else default_backend()

    @property
    def out_dir(self) -> str:
        current = self.state()
        return current.out_dir if current is not None else self._settings["out_dir"]

    @property
    def exists(self) -> bool:
        return bool(self._graph.get_state(self.config).values)

    def state(self) -> ConversationState | None:
        values = self._graph.get_state(self.config).values
        return ConversationState.model_validate(values) if values else None

    def send(self, message: str, attachments: list[Attachment] | None = None) -> Reply:
        """One message in, the reply out (the state is checkpointed after every step)."""
        payload: dict[str, Any] = {"message": message, "attachments": attachments or [], "lines": [],
                                   "reply": Reply()}
        if not self.exists:
            payload.update(conversation_id=self.conversation_id, backend=self.backend,
                           **{k: v for k, v in self._settings.items() if v is not None and k != "backend"})
        else:  # a conversation going on keeps its folder; settings given again replace its own
            payload.update({k: v for k, v in self._settings.items() if v is not None and k != "out_dir"})
        result = self._graph.invoke(payload, self.config, context=self.context)
        return Reply.model_validate(result["reply"]) if isinstance(result, dict) else result.reply
