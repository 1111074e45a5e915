"""From a target finding to a repair plan, and what to change after a failed attempt.

Each defect kind has an **escalation ladder**: the smallest repair first, then one variable
changed per rung (a wider mask, a denoise further into its range, a control map, another tool).
The rung is the number of attempts already spent on the defect; a defect that has climbed its
whole ladder (at most ``max_attempts_per_defect`` rungs) is left open and reported, never retried
forever.

- Local rungs (deterministic OpenCV repairs) come first wherever one fits: an exposure/colour pass,
  composite-back, a flip, a defringe. They are free and change no content.
- Generative rungs use the run's backend: a GPT Image edit (``openai``) or a diffusion inpaint
  (``diffusers``), with the defect's repair template rendered into the prompt. Seed, size and
  sampler stay locked for the run; the parameters start inside the failure library's ranges. What a
  backend can do (raise a denoise strength, take a control map, keep the pixels outside its mask)
  and what a call costs come from its registry entry (:func:`fixloop.tools.base.load_backend`), its
  settings from the policy's ``[repair.backends.NAME]`` table. With a backend that treats the mask
  as a hint (GPT Image) and another one ready that keeps every pixel outside it (a diffusion
  checkpoint configured), a region repair the first could not do switches to the second on the
  same mask.
- **Salvage**: a generative attempt that verify rejected because it changed pixels outside its mask
  (GPT Image treats the mask as a hint) is not paid for twice. The next attempt composites that
  output back inside its mask over the image it started from, so the repaired region is kept and
  the drifted pixels are never delivered.
- A defect no available backend can repair (a malformed hand with only the local backend) gets an
  :class:`~agent.state.OpenDefect` that says which template, tool and settings would fix it.
- An exposure or colour correction is always its own pass (``local.exposure_color``, which changes
  no content); when both drifts are open it corrects both in that one pass.
- Before a paid call the planner estimates its cost; a call that would pass the dollar budget is
  not made: its defect stays open for the dollar budget (:attr:`OpenCause.budget_usd`; free repairs
  of other defects go on), and that reason becomes the run's stop reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from fixloop.agent.state import (Attempt, AttemptCause, FindingRecord, MaskSource, OpenCause, OpenDefect, Outcome,
                                 RepairPlan)
from fixloop.checks.policy import RepairSettings

GENERATIVE = "generative"  # placeholder tool of a rung: the run's backend
SWITCH_BACKEND = "switch:fallback"  # a rung that leaves a mask-as-hint backend for one that keeps unmasked pixels
LIGHT_KINDS = ("exposure_drift", "color_temperature_drift")


@dataclass(frozen=True)
class Rung:
    """One step of a ladder: the tool, where its mask comes from, and what it changes.

    ``does`` says what the repair is (shown as "first repair: ..." when it is the first rung a run
    can use); ``change`` says what it changes from the rung before it.
    """

    tool: str
    does: str
    change: str
    mask: MaskSource = MaskSource.none
    grow: int = 0  # steps of ``wider_mask`` the mask grows by
    parameters: dict[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()  # "source", "mask", "no_source", "control" (a control model set), "strength", "fallback"
    prepare: str | None = None
    strength: str = "low"  # diffusion denoise: "low" end of the template's range, or "mid"
    control: bool = False  # diffusion: add the template's control map


@dataclass
class PlanContext:
    """What the planner may use besides the target: the run's inputs, backend and spend."""

    backend: str
    settings: RepairSettings
    image_size: tuple[int, int]  # current image (w, h)
    has_source: bool
    has_mask: bool
    references: list[str] = field(default_factory=list)
    source: str | None = None
    model: str | None = None
    base_url: str | None = None
    seed: int = 1234
    spent_usd: float = 0.0
    max_usd: float = 0.0
    paid_costs: list[float] = field(default_factory=list)
    fallback: tuple[str, str] | None = None  # (backend, model) to switch to on a mask-as-hint backend

    def spec(self, backend: str | None = None):
        """The registry entry of ``backend`` (default: the run's)."""
        from fixloop.tools.base import load_backend

        return load_backend(backend or self.backend)

    def setting(self, key: str, backend: str | None = None) -> str:
        """One of a backend's settings: the policy's value, else the backend's declared default."""
        name = backend or self.backend
        return self.spec(name).settings_from(self.settings.backends.get(name)).get(key, "")


def find_fallback(backend: str, backend_settings: dict[str, dict[str, Any]]) -> tuple[str, str] | None:
    """For a backend that treats its mask as a hint: another backend, ready now, whose tool keeps
    every pixel outside the mask (its model from the policy or its environment variable)."""
    from fixloop.tools.base import all_backends, load_backend

    if load_backend(backend).keeps_unmasked:
        return None
    for spec in all_backends():
        if spec.name == backend or spec.tool is None or not spec.keeps_unmasked:
            continue
        named = spec.settings_from(backend_settings.get(spec.name)).get("model") or None
        model = spec.resolve_model(named) if (named or spec.model_env) else None
        if model and spec.is_ready(model):
            return spec.name, model
    return None


@dataclass
class Decision:
    """Exactly one of: a plan to run, or a defect to leave open (triage then picks the next one)."""

    plan: RepairPlan | None = None
    open: OpenDefect | None = None


# ---- the ladders --------------------------------------------------------------------------------


def _generative(kind: str, backend: str) -> list[Rung]:
    """The generative rungs of a defect; each changes one variable from the rung before it."""
    from fixloop.tools.base import load_backend

    masked = MaskSource.finding
    if kind == "subject_cropped":
        does = "grow the canvas where the subject is cut and outpaint the new area"
        return [Rung(GENERATIVE, does, does, prepare="expand_canvas"),
                Rung(GENERATIVE, does, "denoise to the middle of its range", prepare="expand_canvas",
                     strength="mid", needs=("strength",))]
    if kind in ("perspective_broken", "mirrored"):
        does = "redraw the whole image under the template's structure rules"
        return [Rung(GENERATIVE, does, does),
                Rung(GENERATIVE, does, "add a control map of the structure", control=True, needs=("control",)),
                Rung(GENERATIVE, does, "denoise to the middle of its range", strength="mid", needs=("strength",))]
    if load_backend(backend).strength:
        does = "inpaint the finding's mask at the low end of the template's denoise range"
        return [Rung(GENERATIVE, does, does, masked),
                Rung(GENERATIVE, does, "denoise to the middle of its range", masked, strength="mid"),
                Rung(GENERATIVE, does, "add a control map", masked, strength="mid", control=True, needs=("control",)),
                Rung(GENERATIVE, does, "wider mask", masked, grow=1, strength="mid")]
    does = "the template as a GPT Image edit on the finding's mask"
    return [Rung(GENERATIVE, does, does, masked),
            Rung(GENERATIVE, does, "wider mask", masked, grow=1),
            Rung(SWITCH_BACKEND, does, "switch backend: a diffusion inpaint on the same mask keeps every "
                 "pixel outside it", masked, grow=1, needs=("fallback",)),
            Rung(GENERATIVE, does, "wider mask again", masked, grow=2)]


def ladder(kind: str, backend: str) -> list[Rung]:
    """Every rung for ``kind``, before filtering by what the run has."""
    if kind in LIGHT_KINDS:
        outside = "one exposure + white-balance pass matched to the source outside the edit mask"
        rungs = [Rung("local.exposure_color", outside, outside, MaskSource.edit_mask, needs=("source", "mask")),
                 Rung("local.exposure_color", "one exposure + white-balance pass matched to the source on the "
                      "whole image", "matched on the whole image instead of outside the mask", needs=("source",))]
        if kind == "exposure_drift":  # measured against the first pass when there is no source
            back = "exposure set back by the EV measured against the first pass"
            rungs.append(Rung("local.exposure_color", back, back, parameters={"white_balance": False},
                              needs=("no_source",)))
        return rungs
    if kind == "mask_spill":
        does = "restore the source outside the edit mask"
        return [Rung("local.composite_back", does, does, MaskSource.edit_mask, needs=("source", "mask")),
                Rung("local.composite_back", does, "seam moved across the mask edge", MaskSource.edit_mask,
                     parameters={"seam": "center"}, needs=("source", "mask"))]
    if kind == "mirrored":
        return [Rung("local.flip_back", "flip back left-right", "flip back left-right"), *_generative(kind, backend)]
    if kind == "edge_halo":
        does = "defringe the edge ring"
        return [Rung("local.defringe", does, does, MaskSource.finding),
                Rung("local.defringe", does, "wider edge ring", MaskSource.finding, parameters={"grow": 2}),
                *_generative(kind, backend)]
    return _generative(kind, backend)


def _template_has_control(kind: str) -> bool:
    from fixloop.checks.base import DEFECT_KINDS
    from fixloop.prompts.render import load_template

    template = DEFECT_KINDS[kind].template if kind in DEFECT_KINDS else None
    return bool(template) and load_template(template).diffusion.control not in (None, "none")


def _usable(rung: Rung, ctx: PlanContext) -> bool:
    spec = ctx.spec()
    if rung.tool == GENERATIVE and spec.tool is None:
        return False
    for need in rung.needs:
        if need == "fallback" and (spec.keeps_unmasked or not ctx.fallback):
            return False
        if need == "source" and not ctx.has_source:
            return False
        if need == "no_source" and ctx.has_source:
            return False
        if need == "mask" and not ctx.has_mask:
            return False
        if need == "control" and not (spec.control and ctx.setting("controlnet")):
            return False
        if need == "strength" and not spec.strength:
            return False
    return True


def usable_ladder(kind: str, ctx: PlanContext) -> list[Rung]:
    """The rungs this run can climb, at most ``max_attempts_per_defect``. A control-map rung needs a
    template that names a control; once a rung adds the control map, the rungs after it keep it
    (so each still changes one variable)."""
    from dataclasses import replace

    rungs = [r for r in ladder(kind, ctx.backend) if _usable(r, ctx)
             and not (r.control and not _template_has_control(kind))]
    sticky = False
    for index, rung in enumerate(rungs):
        if sticky and not rung.control:
            rungs[index] = replace(rung, control=True)
        sticky = sticky or rung.control
    return rungs[: ctx.settings.max_attempts_per_defect]


# ---- cost ---------------------------------------------------------------------------------------


def estimate_usd(ctx: PlanContext, quality: str, backend: str | None = None) -> float | None:
    """Estimated dollars of the next paid call: the backend's own estimate at the size actually
    requested, then (once a paid call was made) the dearest call so far. None when the model has no
    price (its calls cannot be kept within a dollar budget)."""
    spec = ctx.spec(backend)
    model = ctx.model or ctx.setting("model", spec.name) or None
    estimate = spec.estimate_usd(model, ctx.image_size, quality)
    if estimate is None:
        return None
    return max(ctx.paid_costs) if ctx.paid_costs else estimate


# ---- the plan -----------------------------------------------------------------------------------


def _spilled(attempt: Attempt) -> bool:
    return attempt.outcome == Outcome.rolled_back and attempt.cause == AttemptCause.spilled


def would_fix(kind: str, template: str) -> str:
    """In words, the repair that would fix ``kind`` on a generative backend."""
    from fixloop.prompts.render import load_template

    start = load_template(template).diffusion
    control = f" with {start.control} control" if start.control not in (None, "none") else ""
    return (f"the {template} template as a GPT Image edit (--backend openai) or as a diffusion "
            f"{start.mode} at denoise {start.denoise[0]:.2f}-{start.denoise[1]:.2f}{control} (--backend diffusers)"
            f"{' on the finding' + chr(39) + 's mask' if kind not in ('perspective_broken', 'subject_cropped') else ''}")


def plan_repair(target: FindingRecord, findings: Sequence[FindingRecord], history: Sequence[Attempt],
                ctx: PlanContext) -> Decision:
    """The next attempt on ``target`` given the attempts already made on it (``history``)."""
    mine = [a for a in history if a.plan.target.key == target.key]
    if mine and _spilled(mine[-1]) and mine[-1].image and not mine[-1].plan.salvage:
        return Decision(plan=_salvage(target, mine[-1]))

    rungs = usable_ladder(target.kind, ctx)
    rung_index = sum(1 for a in mine if not a.plan.salvage)
    if rung_index >= len(rungs):
        if not rungs:
            cause = OpenCause.no_backend
            needs_source = any("source" in r.needs for r in ladder(target.kind, ctx.backend)
                               if r.tool != GENERATIVE or ctx.backend != "local")
            reason = (f"no {ctx.backend} repair for {target.kind}" +
                      (" without the source image" if needs_source and not ctx.has_source else ""))
        else:
            cause = OpenCause.resisted_ladder
            reason = f"resisted all {len(rungs)} rung(s) of its ladder"
            if mine:
                reason += f"; last attempt: {mine[-1].reason}"
        return Decision(open=OpenDefect(key=target.key, kind=target.kind, priority=target.priority, cause=cause,
                                        box=target.box, reason=reason,
                                        would_fix=would_fix(target.kind, target.template)))
    rung = rungs[rung_index]
    change = f"first repair: {rung.does}" if rung_index == 0 else rung.change
    plan = RepairPlan(target=target, template=target.template, tool=rung.tool, rung=rung_index,
                      change=change, mask_source=rung.mask, parameters=dict(rung.parameters),
                      prepare=rung.prepare)
    if rung.grow:
        diagonal = (ctx.image_size[0] ** 2 + ctx.image_size[1] ** 2) ** 0.5
        plan.mask_grow_px = int(round(rung.grow * ctx.settings.wider_mask * diagonal))
    if rung.tool == "local.exposure_color":
        others = [f.key for f in findings if f.kind in LIGHT_KINDS and f.key != target.key]
        plan.also_fixes = others  # one pass corrects both exposure and white balance
        if "no_source" in rung.needs:
            plan.parameters["ev"] = -float(target.evidence.get("ev_change", target.score))
    if rung.tool in (GENERATIVE, SWITCH_BACKEND):
        return _generative_plan(plan, rung, target, ctx)
    return Decision(plan=plan)


def _salvage(target: FindingRecord, rejected: Attempt) -> RepairPlan:
    return RepairPlan(
        target=target, template=target.template, tool="local.composite_back", rung=rejected.plan.rung,
        change=f"salvage: keep attempt {rejected.index}'s repair inside its mask and restore everything outside "
               "it (the edit changed pixels outside its mask)",
        mask_source=MaskSource.previous_attempt, salvage=True, base_image=rejected.image,
        parameters={"seam": "inside", "attempt": rejected.index})


def _over_budget(plan: RepairPlan, cause: OpenCause, reason: str) -> Decision:
    """A paid call the dollar budget does not allow: the defect stays open (free repairs of other
    defects still run), and the run's stop reason says it was the budget."""
    target = plan.target
    return Decision(open=OpenDefect(key=target.key, kind=target.kind, priority=target.priority, cause=cause,
                                    box=target.box, reason=reason,
                                    would_fix=f"{plan.tool} with the {plan.template} template ({plan.change}); "
                                              + ("raise --budget-usd to allow it" if cause == OpenCause.budget_usd
                                                 else "give the model a price, or choose a priced model")))


def _control_option(start: dict[str, Any]) -> tuple[str, float] | None:
    """(control type, scale) for the control-map rung: the template's own control, except depth,
    which needs a depth map the loop does not have; then the template's next option (canny for
    perspective), at the middle of its scale range."""
    options = [o for o in start["control_options"] if o["type"] != "depth"]
    if start["control"] not in (None, "none", "depth"):
        return start["control"], start["control_scale"]
    if not options:
        return None
    low, high = options[0]["scale"]
    return options[0]["type"], round((low + high) / 2, 2)


def _generative_plan(plan: RepairPlan, rung: Rung, target: FindingRecord, ctx: PlanContext) -> Decision:
    from fixloop.agent.findings import to_finding
    from fixloop.prompts.render import TemplateError, render

    request: dict[str, Any] = {"image_size": list(ctx.image_size)}
    try:
        rendered = render(target.template, to_finding(target), request=request)
    except TemplateError as exc:
        return Decision(open=OpenDefect(key=target.key, kind=target.kind, priority=target.priority,
                                        cause=OpenCause.template_unfillable, box=target.box,
                                        reason=f"the {target.template} template cannot be filled from the finding: {exc}",
                                        would_fix=would_fix(target.kind, target.template)))
    switched = rung.tool == SWITCH_BACKEND
    backend = ctx.fallback[0] if switched else ctx.backend
    spec = ctx.spec(backend)
    plan.tool = spec.tool
    plan.references = list(ctx.references)
    if target.kind == "identity_drift" and not plan.references and ctx.source:
        plan.references = [ctx.source]  # the face before the edit is the identity reference
    plan.paid = spec.paid
    if spec.prompt_style == "gpt_image":
        plan.prompt = rendered.gpt_image_prompt
        quality = ctx.setting("quality", backend) or "high"
        plan.parameters.update({"quality": quality})
        if ctx.model:
            plan.parameters["model"] = ctx.model
        if ctx.base_url:
            plan.parameters["base_url"] = ctx.base_url
        estimate = estimate_usd(ctx, quality, backend) if spec.paid else 0.0
        if estimate is None:
            return _over_budget(plan, OpenCause.unpriced,
                                f"budget: model {ctx.model!r} has no price in the price table, so its calls "
                                      "cannot be kept within the dollar budget: add it (tools/prices.toml format)")
        plan.estimated_usd = round(estimate, 4)
        if ctx.spent_usd + plan.estimated_usd > ctx.max_usd:  # a $0 budget allows no paid call
            return _over_budget(plan, OpenCause.budget_usd,
                                f"budget: the next paid repair (about ${plan.estimated_usd:.4f}) would pass "
                                      f"the ${ctx.max_usd:.2f} budget (${ctx.spent_usd:.4f} spent)")
        return Decision(plan=plan)
    # a diffusion backend: the template's starting parameters, denoise at the low end or the middle of its range
    plan.prompt, plan.negative_prompt = rendered.positive, rendered.negative
    start = rendered.diffusion
    low, high = start["strength_range"]
    params = {"strength": round(low if rung.strength == "low" else (low + high) / 2, 3),
              "guidance": start["guidance"], "steps": start["steps"], "seed": ctx.seed}
    if rung.control:
        control = _control_option(start)
        if control is not None:
            params.update(control=control[0], control_scale=control[1], controlnet=ctx.setting("controlnet", backend))
    model = ctx.fallback[1] if switched else (ctx.model or ctx.setting("model", backend))
    if model:
        params["model"] = model
    plan.parameters.update(params)
    return Decision(plan=plan)
