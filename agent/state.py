"""The typed state of one repair run, as the LangGraph graph carries and checkpoints it.

Everything here is plain data (pydantic models of strings, numbers and file paths): images and
masks live as PNG files in the run's folder and the state names them. That keeps every checkpoint
small, lets a run resume in a fresh process from the files alone, and makes ``report.json`` a dump
of the same models.

The pieces, in the order a run fills them:

- :class:`RunInputs`: what the user asked for (image, source, mask, references, backend, budget).
- :class:`FindingRecord`: one finding of the checks, with its mask as a file and a stable ``key``
  that follows the same defect from one pass to the next.
- :class:`RepairPlan`: what the planner chose for the target: template, tool, mask, parameters, the
  rendered prompt, and which rung of the escalation ladder it is.
- :class:`Attempt`: one executed plan: its output, cost, time, findings before and after, and
  whether verify accepted it or rolled it back, and why (:class:`AttemptCause`, with the sentence).
- :class:`OpenDefect`: a defect the run leaves open (no backend can repair it, it resisted its
  ladder, the user declined the paid call, a structure defect blocked it), why
  (:class:`OpenCause`, with the sentence), and the plan that would fix it.
- :class:`RunState`: the graph's state: the above plus the current image, the spend and why the
  run stopped (:class:`StopReason`, with the sentence).

Every "why" is a typed field beside its sentence: the loop, the service and the front ends decide
on the enum, and show the sentence to people.
"""

from __future__ import annotations

import json
import operator
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Backend = Literal["local", "openai", "diffusers"]


class Budget(BaseModel):
    """Limits of one run. A run stops gracefully, with the best image so far, at the first one reached."""

    model_config = ConfigDict(extra="forbid")

    max_passes: int = Field(8, ge=0, description="repair attempts at most (each tool call is one pass)")
    max_usd: float = Field(2.0, ge=0, description="US dollars at most, paid calls included before they are made")
    max_seconds: float = Field(900.0, gt=0, description="wall seconds at most, checks and tools included")


class Spend(BaseModel):
    """What a run has used so far; carried across resumes."""

    model_config = ConfigDict(extra="forbid")

    passes: int = 0
    usd: float = 0.0
    seconds: float = 0.0  # wall time inside the graph's nodes, summed over every process of the run
    check_seconds: float = 0.0  # of which: running the checks (inspect, verify)
    tool_seconds: float = 0.0  # of which: running repair tools


class RunInputs(BaseModel):
    """What the user asked for. Paths are absolute; nothing at these paths is ever written."""

    model_config = ConfigDict(extra="forbid")

    image: str
    source: str | None = None
    mask: str | None = None
    references: list[str] = Field(default_factory=list)
    policy: str | None = None
    backend: Backend = "local"
    model: str | None = None  # GPT Image model (openai) or checkpoint (diffusers); None = the tool's default
    base_url: str | None = None  # another OpenAI-compatible endpoint (tests use a loopback server)
    polish: bool = False  # also repair P2 findings in a final polish pass
    approve: bool = False  # pause before every paid repair and ask
    seed: int = 1234  # locked for the whole run
    out_dir: str
    output_format: str = "PNG"  # PIL format name of final.<ext>: the input's own format where writable
    only_kinds: list[str] | None = None  # repair only these defect kinds (None: every P0/P1 found); a chat's "fix only the hands"
    skip_kinds: list[str] = Field(default_factory=list)  # never repair these kinds: they would redraw a part the user keeps ("keep her face")

    @model_validator(mode="after")
    def _absolute_paths(self) -> "RunInputs":
        """Paths are stored absolute, so a run resumes from any working directory."""
        for name in ("image", "source", "mask", "policy", "out_dir"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, str(Path(value).expanduser().resolve()))
        self.references = [str(Path(r).expanduser().resolve()) for r in self.references]
        return self


class FindingRecord(BaseModel):
    """One finding, as the loop tracks it. ``key`` names the same defect across passes."""

    model_config = ConfigDict(extra="forbid")

    key: str  # "<kind>" for a whole-image defect, "<kind>@x0,y0,x1,y1" for a region (first seen)
    kind: str
    stage: str
    priority: str
    score: float
    threshold: float
    unit: str
    message: str
    template: str
    box: list[int] | None = None
    mask_file: str | None = None  # PNG in the run folder, candidate pixels, white = the defect
    evidence: dict[str, Any] = Field(default_factory=dict)
    inherited: bool = False  # the source has it in the same way: not a target, holds nothing back

    def brief(self) -> dict[str, Any]:
        """The part a report needs to compare before and after."""
        return {"key": self.key, "kind": self.kind, "priority": self.priority, "score": self.score,
                "threshold": self.threshold, "unit": self.unit}


class MaskSource(str, Enum):
    """Where a plan's mask comes from."""

    none = "none"  # a whole-image repair (exposure/colour, flip)
    finding = "finding"  # the target finding's own mask (grown by ``mask_grow_px``)
    edit_mask = "edit_mask"  # the user's edit mask (composite-back: restore outside it)
    previous_attempt = "previous_attempt"  # the mask of the attempt being salvaged


class RepairPlan(BaseModel):
    """What to run for one target. The planner fills it; the repair node executes it as is."""

    model_config = ConfigDict(extra="forbid")

    target: FindingRecord
    template: str
    tool: str
    paid: bool = False
    rung: int = 0  # position on the target's escalation ladder (0 = first repair)
    change: str = "first repair"  # the one variable this rung changed, in words
    mask_source: MaskSource = MaskSource.none
    mask_grow_px: int = 0
    parameters: dict[str, Any] = Field(default_factory=dict)  # JSON-able tool settings
    prompt: str | None = None
    negative_prompt: str | None = None
    references: list[str] = Field(default_factory=list)  # identity / style references the tool gets (paths)
    prepare: str | None = None  # a local step run first: "expand_canvas" (outpaint a cropped subject)
    salvage: bool = False  # composite a rejected output back inside its mask instead of a new call
    base_image: str | None = None  # repair this file instead of the current image (salvage a rejected output)
    estimated_usd: float = 0.0
    also_fixes: list[str] = Field(default_factory=list)  # other open keys the same pass targets (exposure + colour)


class Outcome(str, Enum):
    """What became of an attempt (the broad verdict; :class:`AttemptCause` says why)."""

    accepted = "accepted"
    rolled_back = "rolled_back"
    failed = "failed"  # the tool raised (API error, moderation block, bad input): nothing to verify
    declined = "declined"  # the user said no to a paid call (--approve)


class AttemptCause(str, Enum):
    """Why an attempt ended as it did. Control flow reads this, never the ``reason`` sentence."""

    accepted = "accepted"  # the target is gone or clearly improved, nothing else got worse
    # rolled back by verify
    no_progress = "no_progress"  # the target did not improve enough
    new_defect = "new_defect"  # a new P0/P1 finding appeared
    made_worse = "made_worse"  # a finding already there got much worse
    spilled = "spilled"  # the repair changed pixels outside its mask (the planner may salvage it)
    unverified = "unverified"  # whether it changed pixels outside its mask could not be measured
    check_error = "check_error"  # a check failed on the output
    output_unreadable = "output_unreadable"  # the output does not fit the run's inputs: it cannot be checked
    # failed: the tool raised, nothing to verify
    tool_error = "tool_error"  # the tool refused or failed with its own error (RepairError)
    tool_crashed = "tool_crashed"  # the tool raised something else
    moderation = "moderation"  # the backend's safety system blocked the request
    declined = "declined"  # the user said no to the paid call (--approve)
    not_verified = "not_verified"  # the run stopped (step limit) between the tool call and verify


class SideEffectRule(str, Enum):
    """Which rule of verify decided about a finding that was not there before an attempt."""

    caused = "caused"  # new, P0/P1, where the repair changed pixels: the repair made it (rolled back)
    inherited = "inherited"  # the source has it in the same way: not the edit's, not the repair's
    in_input = "in_input"  # the run's input already had it at the same place
    untouched = "untouched"  # the repair did not change the pixels of its region: it cannot have caused it
    clipped_in_input = "clipped_in_input"  # detail lost where the run's input was already clipped: not a new blur
    detail_kept = "detail_kept"  # a loss of detail where the attempt left as much detail as the image before it had
    traded = "traded"  # a P2 side effect of a repair that removed its target: accepted, reported


class SideEffect(BaseModel):
    """A finding after an attempt that the image before it did not have, and what verify made of it."""

    model_config = ConfigDict(extra="forbid")

    key: str
    kind: str
    priority: str
    rule: SideEffectRule
    worse: bool = False  # a finding that was there and got worse (a P2 traded), not a new one


class OpenCause(str, Enum):
    """Why a defect stays open. Control flow reads this, never the ``reason`` sentence."""

    no_backend = "no_backend"  # no repair for this kind on the run's backend (or without the inputs it needs)
    resisted_ladder = "resisted_ladder"  # every rung of its escalation ladder was tried and rejected
    budget_usd = "budget_usd"  # the next paid call would pass the dollar budget
    unpriced = "unpriced"  # the model has no price, so its calls cannot be kept within the dollar budget
    declined = "declined"  # the user said no to the paid call (--approve)
    moderation = "moderation"  # the backend's safety system blocked the request
    held_back = "held_back"  # a detail defect not attempted while a structure defect is open
    template_unfillable = "template_unfillable"  # the repair template cannot be filled from the finding


# Open causes that are the dollar budget's doing: a run whose P0/P1 defects stay open for one of
# these stopped because of the budget, and a resume with a larger budget tries them again.
MONEY_CAUSES = (OpenCause.budget_usd, OpenCause.unpriced)


class StopReason(str, Enum):
    """Why a run stopped. ``RunState.stop_reason`` carries the sentence for people."""

    clean = "clean"  # no P0/P1 (with --polish: no P2 either) defect left on the final image
    stuck = "stuck"  # P0/P1 defects left, every one of them open or held back
    budget_passes = "budget_passes"  # the pass limit was reached
    budget_usd = "budget_usd"  # dollars spent, or a needed paid call would pass (or cannot be priced within) the limit
    budget_seconds = "budget_seconds"  # the wall-time limit was reached
    error = "error"  # a check failed on the current image
    recursion_limit = "recursion_limit"  # the graph's step backstop fired
    cancelled = "cancelled"  # the caller cancelled the run (a service job); the best image so far is delivered


BUDGET_STOPS = (StopReason.budget_passes, StopReason.budget_usd, StopReason.budget_seconds)


class Attempt(BaseModel):
    """One executed plan and its verdict."""

    model_config = ConfigDict(extra="forbid")

    index: int  # 1-based pass number
    plan: RepairPlan
    before_image: str | None = None  # the image the attempt started from
    image: str | None = None  # the attempt's output PNG (relative to the run folder)
    mask: str | None = None  # the mask the tool used (PNG, relative)
    control: str | None = None  # the control map a diffusion repair conditioned on (PNG, relative)
    canvas_extend: dict[str, int] | None = None  # px an outpaint added per side (top, bottom, left, right)
    tool_parameters: dict[str, Any] = Field(default_factory=dict)  # what the tool reports it used
    cost_usd: float = 0.0
    seconds: float = 0.0  # tool time
    check_seconds: float = 0.0  # verify time
    findings_before: list[dict[str, Any]] = Field(default_factory=list)
    findings_after: list[dict[str, Any]] = Field(default_factory=list)
    outcome: Outcome | None = None
    cause: AttemptCause | None = None  # why, typed (None until the attempt is judged)
    reason: str = ""  # why, in words
    notes: list[str] = Field(default_factory=list)
    side_effects: list[SideEffect] = Field(default_factory=list)  # findings new or worse after it, and the rule applied


class OpenDefect(BaseModel):
    """A defect the run leaves open, why, and the plan that would fix it."""

    model_config = ConfigDict(extra="forbid")

    key: str
    kind: str
    priority: str
    cause: OpenCause  # why, typed
    reason: str  # why, in words
    would_fix: str  # in words: template, tool, mask and settings that would repair it
    box: list[int] | None = None  # the finding's box when it was left open (None: a whole-image defect)


class RunState(BaseModel):
    """The graph's state. Nodes return partial updates; ``attempts`` accumulates."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    inputs: RunInputs
    budget: Budget = Field(default_factory=Budget)
    spend: Spend = Field(default_factory=Spend)
    current_image: str | None = None  # the accepted image so far (file in the run folder, or the input)
    canvas_pad: dict[str, int] = Field(default_factory=dict)  # px accepted outpaints added per side: where the input sits now
    findings: list[FindingRecord] = Field(default_factory=list)  # of the current image
    input_findings: list[FindingRecord] = Field(default_factory=list)  # of the run's input, placed on the current image
    verdict: str | None = None  # of the current image: pass | fail | error
    check_notes: list[str] = Field(default_factory=list)  # checks that were skipped or errored, and why
    target: FindingRecord | None = None
    plan: RepairPlan | None = None
    pending: Attempt | None = None  # the attempt between repair and verify
    attempts: Annotated[list[Attempt], operator.add] = Field(default_factory=list)
    tries: dict[str, int] = Field(default_factory=dict)  # finding key -> attempts spent on it
    open_defects: dict[str, OpenDefect] = Field(default_factory=dict)  # key -> why it stays open
    held_back: dict[str, OpenDefect] = Field(default_factory=dict)  # detail defects an open structure defect holds back (recomputed by every triage)
    approved: bool | None = None  # the user's answer for the pending paid plan
    stop: StopReason | None = None  # why the run stopped, typed (None while it runs)
    stop_reason: str | None = None  # why the run stopped, in words
    finished: bool = False


class RepairReport(BaseModel):
    """``report.json`` of a repair run: the whole record, for people and pipelines."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["1"] = "1"
    run_id: str
    verdict: str | None = Field(description="of the final image: pass | fail | error")
    stop: StopReason | None = Field(description="why the run stopped (typed; stop_reason says it in words)")
    stop_reason: str | None
    final_image: str | None = Field(description="file in the run folder")
    review_sheet: str | None
    inputs: RunInputs
    budget: Budget
    spend: Spend
    loop_overhead_seconds_per_pass: float | None = Field(
        description="node time outside checks and tools, per pass (the loop's own cost)")
    findings: list[FindingRecord] = Field(description="what the checks find on the final image")
    open_defects: list[OpenDefect]
    check_notes: list[str]
    attempts: list[Attempt]


REPAIR_SCHEMA_PATH = Path(__file__).with_name("repair_report.schema.json")


def repair_schema_text() -> str:
    """The JSON Schema of ``report.json`` of a repair run (published beside this module)."""
    return json.dumps(RepairReport.model_json_schema(), indent=2, sort_keys=True) + "\n"


# Every class a checkpoint may hold; the checkpointer refuses to load any other.
CHECKPOINT_TYPES = [(__name__, cls.__name__) for cls in (
    Budget, Spend, RunInputs, FindingRecord, MaskSource, RepairPlan, Outcome, AttemptCause, SideEffectRule, SideEffect, Attempt, OpenCause,
    OpenDefect, StopReason, RunState)]
