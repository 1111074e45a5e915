"""The repair loop as a LangGraph StateGraph.

    inspect -> triage -> plan -> [approve] -> repair -> verify -> triage -> ... -> finish

- **inspect** runs every enabled check on the input once.
- **triage** picks the next target in the failure library's order, or stops the run (nothing left,
  everything left is open, or the budget is spent): see :mod:`agent.triage`.
- **plan** maps the target to template, tool, mask and parameters, one rung further up its
  escalation ladder after each failed attempt: see :mod:`agent.planner`. A defect no backend can
  repair is recorded as open, with the plan that would fix it, and triage picks the next one.
- **approve** (only with ``--approve``, only before a paid call) pauses the graph with a LangGraph
  interrupt; the answer resumes it.
- **repair** runs the tool. It never writes over an input: the output and the mask it used are new
  files in the run folder.
- **verify** runs the checks on the output and accepts it or rolls back: see :mod:`agent.verify`.
- **finish** writes ``final.png``, ``report.json`` and ``review.png``.

The state (:class:`agent.state.RunState`) is checkpointed after every node with LangGraph's SQLite
checkpointer, under the run id; a run killed after a paid call resumes at verify and never pays for
that call again. Images, masks, the decoded source and the loaded models are not in the state:
:class:`RunContext` holds them for one process and rebuilds them from the files on resume.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from fixloop.agent.context import RunContext
from fixloop.agent.findings import plain_data, record_findings, shift_records
from fixloop.agent.planner import PlanContext, plan_repair
from fixloop.agent.state import Attempt, MaskSource, OpenDefect, Outcome, RunState, Spend
from fixloop.agent.triage import restrict, triage as choose_next
from fixloop.agent.verify import judge, outside_change
from fixloop.checks.images import InputError
from fixloop.tools.base import load_tool


def _spend(state: RunState, started: float, **extra: float) -> Spend:
    """The run's spend with this node's wall time (and ``extra`` increments) added."""
    spend = state.spend.model_copy()
    spend.seconds += time.perf_counter() - started
    for key, value in extra.items():
        setattr(spend, key, getattr(spend, key) + value)
    return spend


def _check_notes(report) -> list[str]:
    return [f"{run.name} {run.status.value}: {run.reason or run.error}" for run in report.checks
            if run.status.value != "ok"]


# ---- nodes --------------------------------------------------------------------------------------


def inspect(state: RunState, runtime: Runtime[RunContext]) -> dict:
    ctx = runtime.context
    started = time.perf_counter()
    image_path = state.current_image or state.inputs.image
    image = ctx.image_array(image_path)
    t0 = time.perf_counter()
    report = ctx.check(image, state.canvas_pad)
    check_seconds = time.perf_counter() - t0
    findings = record_findings(report.findings, [], ctx.files, "work/pass-00")
    ctx.tell("inspect", findings=findings, verdict=report.verdict)
    return {"current_image": image_path, "findings": findings, "verdict": report.verdict,
            "check_notes": _check_notes(report), "spend": _spend(state, started, check_seconds=check_seconds)}


def triage(state: RunState, runtime: Runtime[RunContext]) -> dict:
    started = time.perf_counter()
    ctx = runtime.context
    result = choose_next(restrict(state.findings, state.inputs.only_kinds, state.inputs.skip_kinds), state.open_defects, [p.value for p in ctx.policy.gate.fail_on],
                         state.inputs.polish, state.budget, state.spend, state.verdict)
    update: dict[str, Any] = {"target": result.target, "plan": None, "held_back": result.blocked}
    if result.stop_reason:
        update["stop_reason"] = result.stop_reason
    else:
        ctx.tell("target", target=result.target, tries=state.tries.get(result.target.key, 0))
    update["spend"] = _spend(state, started)
    return update


def plan(state: RunState, runtime: Runtime[RunContext]) -> dict:
    started = time.perf_counter()
    ctx = runtime.context
    image = ctx.image_array(state.current_image)
    settings = ctx.policy.repair
    paid = [a.cost_usd for a in state.attempts if a.plan.paid and a.cost_usd > 0]
    plan_ctx = PlanContext(
        backend=state.inputs.backend, settings=settings, image_size=(image.shape[1], image.shape[0]),
        has_source=ctx.source is not None, has_mask=ctx.mask_for(image, state.canvas_pad) is not None,
        references=list(state.inputs.references), source=state.inputs.source,
        model=state.inputs.model or (settings.openai_model if state.inputs.backend == "openai" else None) or None,
        base_url=state.inputs.base_url, seed=state.inputs.seed,
        spent_usd=state.spend.usd, max_usd=state.budget.max_usd, paid_costs=paid,
        diffusers_fallback=_diffusers_fallback(settings) if state.inputs.backend == "openai" else None)
    decision = plan_repair(state.target, state.findings, state.attempts, plan_ctx)
    update: dict[str, Any] = {"plan": decision.plan, "approved": None}
    if decision.stop:
        update["stop_reason"] = decision.stop
    elif decision.open:
        update["open_defects"] = {**state.open_defects, decision.open.key: decision.open}
        ctx.tell("open", defect=decision.open)
    else:
        ctx.tell("plan", plan=decision.plan, attempt=state.spend.passes + 1)
    update["spend"] = _spend(state, started)
    return update


def _diffusers_fallback(settings) -> str | None:
    """The diffusion checkpoint a GPT Image run may switch to, when one is configured and diffusers is installed."""
    import importlib.util
    import os

    model = settings.diffusers_model or os.environ.get("FIXLOOP_DIFFUSION_MODEL")
    if not model or importlib.util.find_spec("diffusers") is None:
        return None
    return model


def approve(state: RunState, runtime: Runtime[RunContext]) -> dict:
    """Pause before a paid call and ask (a LangGraph interrupt); the resume value is the answer."""
    plan = state.plan
    answer = interrupt({
        "question": f"Run a paid {plan.tool} edit for {plan.target.kind} ({plan.change})?",
        "tool": plan.tool, "target": plan.target.key, "estimated_usd": plan.estimated_usd,
        "spent_usd": round(state.spend.usd, 4), "budget_usd": state.budget.max_usd,
    })
    if answer:
        return {"approved": True}
    declined = Attempt(index=len(state.attempts) + 1, plan=plan, before_image=state.current_image,
                       outcome=Outcome.declined, reason="declined: the paid call was not approved")
    defect = OpenDefect(key=plan.target.key, kind=plan.target.kind, priority=plan.target.priority,
                        reason="the paid repair was declined", would_fix=f"{plan.tool} with the {plan.template} template")
    return {"approved": False, "plan": None, "attempts": [declined],
            "open_defects": {**state.open_defects, defect.key: defect}}


def _repair_mask(plan, state: RunState, ctx: RunContext, image: np.ndarray) -> np.ndarray | None:
    from fixloop.tools.masks import dilate

    mask = None
    if plan.mask_source == MaskSource.edit_mask:
        mask = ctx.mask_for(image, state.canvas_pad)
    elif plan.mask_source == MaskSource.finding and plan.target.mask_file:
        mask = ctx.files.mask(plan.target.mask_file)
    elif plan.mask_source == MaskSource.previous_attempt:
        rejected = next(a for a in reversed(state.attempts) if a.image == plan.base_image)
        mask = ctx.files.mask(rejected.mask)
    if mask is not None and plan.mask_grow_px:
        mask = dilate(mask, plan.mask_grow_px)
    return mask


def repair(state: RunState, runtime: Runtime[RunContext]) -> dict:
    from fixloop.agent.findings import to_finding
    from fixloop.tools.base import ModerationBlocked, RepairError, RepairRequest

    started = time.perf_counter()
    ctx = runtime.context
    plan = state.plan
    index = len(state.attempts) + 1
    attempt = Attempt(index=index, plan=plan, before_image=state.current_image)
    before = ctx.image_array(state.current_image)
    tool_seconds, cost = 0.0, 0.0
    try:
        image = ctx.image_array(plan.base_image) if plan.base_image else before
        mask = _repair_mask(plan, state, ctx, image)
        source = before if plan.salvage else ctx.source_pixels(image, state.canvas_pad)
        parameters = dict(plan.parameters)
        parameters.pop("attempt", None)
        if plan.tool.startswith("local.") and plan.tool != "local.composite_back":
            parameters["finding"] = to_finding(plan.target, mask if plan.mask_source == MaskSource.finding else None)
        if plan.prepare == "expand_canvas":
            t0 = time.perf_counter()
            grown = load_tool("local.expand_canvas").function(
                RepairRequest(image=image, parameters={"finding": to_finding(plan.target)}))
            tool_seconds += time.perf_counter() - t0
            image, mask = grown.image, grown.mask
            attempt.canvas_extend = {k: int(v) for k, v in grown.parameters["extend"].items()}
            attempt.notes.append(f"canvas grown to {image.shape[1]}x{image.shape[0]} for the outpaint")
        request = RepairRequest(image=image, mask=mask, source=source,
                                references=[ctx.image_array(r) for r in plan.references],
                                prompt=plan.prompt, negative_prompt=plan.negative_prompt,
                                template=plan.template, parameters=parameters)
        ctx.tell("repair", plan=plan, attempt=index)
        t0 = time.perf_counter()
        result = load_tool(plan.tool).function(request)
        tool_seconds += time.perf_counter() - t0
        cost = float(result.cost_usd)
        if plan.paid and result.parameters.get("cost_known") is False:
            cost = max(cost, plan.estimated_usd)  # no usage block: book the estimate, so the budget still holds
            attempt.notes.append(f"the response reported no usage: ${cost:.4f} (the estimate) booked")
        if plan.prepare == "expand_canvas" and result.image.shape == image.shape:
            # An outpaint only adds the new strip: the part of the picture that was there comes back
            # pixel for pixel (a GPT Image round trip would resample it), the seam fading inside the strip.
            t0 = time.perf_counter()
            kept = load_tool("local.composite_back").function(
                RepairRequest(image=result.image, mask=mask, source=image, parameters={"seam": "inside"}))
            tool_seconds += time.perf_counter() - t0
            result.image = kept.image
            attempt.notes.append("the picture inside the old frame was restored exactly; only the new strip is generated")
        name = f"attempts/{index:02d}-{plan.tool}.png"
        attempt.image = ctx.files.save_image(result.image, name)
        # the mask where the tool changed pixels (an exposure pass changes every pixel; its mask only
        # says where it measured, so it is not kept)
        used_mask = None if plan.tool == "local.exposure_color" else (result.mask if result.mask is not None else mask)
        if used_mask is not None and used_mask.shape == result.image.shape[:2]:
            attempt.mask = ctx.files.save_mask(used_mask, f"attempts/{index:02d}-mask.png")
        if result.control is not None:
            attempt.control = ctx.files.save_image(result.control, f"attempts/{index:02d}-control.png")
        attempt.tool_parameters = plain_data(result.parameters)
        attempt.cost_usd = round(cost, 6)
        attempt.seconds = round(tool_seconds, 4)
        attempt.notes.extend(result.notes)
    except ModerationBlocked as exc:
        attempt.outcome, attempt.reason = Outcome.failed, f"moderation: {exc}"
    except RepairError as exc:
        attempt.outcome, attempt.reason = Outcome.failed, f"tool error: {exc}"
    except Exception as exc:  # noqa: BLE001 - a crashed tool is one failed attempt, reported, not the end of the run
        attempt.outcome, attempt.reason = Outcome.failed, f"tool crashed: {type(exc).__name__}: {exc}"
    return {"pending": attempt,
            "spend": _spend(state, started, passes=1, usd=cost, tool_seconds=tool_seconds)}


def verify(state: RunState, runtime: Runtime[RunContext]) -> dict:
    started = time.perf_counter()
    ctx = runtime.context
    attempt = state.pending.model_copy(deep=True)
    key = attempt.plan.target.key
    tries = {**state.tries, key: state.tries.get(key, 0) + 1}
    update: dict[str, Any] = {"pending": None, "plan": None, "tries": tries}
    attempt.findings_before = [f.brief() for f in state.findings]
    check_seconds = 0.0
    if attempt.outcome == Outcome.failed:
        if attempt.reason.startswith("moderation"):
            update["open_defects"] = {**state.open_defects, key: OpenDefect(
                key=key, kind=attempt.plan.target.kind, priority=attempt.plan.target.priority,
                reason=attempt.reason, would_fix="reword the request, or repair it with --backend diffusers")}
    else:
        after_image = ctx.image_array(attempt.image)
        before_image = ctx.image_array(state.current_image)
        pad = _grown(state.canvas_pad, attempt.canvas_extend)
        t0 = time.perf_counter()
        try:
            report = ctx.check(after_image, pad)
        except InputError as exc:  # the output does not fit the run's inputs any more: it cannot be judged
            attempt.outcome, attempt.reason = Outcome.rolled_back, f"the output could not be checked: {exc}"
            ctx.tell("verdict", attempt=attempt)
            return {**update, "attempts": [attempt], "spend": _spend(state, started)}
        spill = None
        generative = attempt.plan.tool in ("openai", "diffusers")
        if generative and attempt.mask is not None and attempt.plan.prepare is None:
            spill = outside_change(before_image, after_image, ctx.files.mask(attempt.mask), ctx.policy)
        check_seconds = time.perf_counter() - t0
        # on a grown canvas the old picture moved right/down by the new left/top strips: so did its findings
        before = shift_records(state.findings, attempt.canvas_extend)
        after = record_findings(report.findings, before, ctx.files, f"work/pass-{attempt.index:02d}")
        attempt.findings_after = [f.brief() for f in after]
        attempt.check_seconds = round(check_seconds, 4)
        settings = ctx.policy.repair
        verdict = judge(attempt.plan, before, after, [p.value for p in ctx.policy.gate.fail_on],
                        settings.min_improvement, settings.worse_factor, report.verdict, spill)
        attempt.outcome = Outcome.accepted if verdict.accepted else Outcome.rolled_back
        attempt.reason = verdict.reason
        if verdict.accepted:
            update.update(current_image=attempt.image, current_pass=attempt.index, findings=after,
                          verdict=report.verdict, check_notes=_check_notes(report), canvas_pad=pad)
    ctx.tell("verdict", attempt=attempt)
    update["attempts"] = [attempt]
    update["spend"] = _spend(state, started, check_seconds=check_seconds)
    return update


def _grown(pad: dict[str, int], extend: dict[str, int] | None) -> dict[str, int]:
    """The canvas padding after one more outpaint (px per side, added up)."""
    if not extend:
        return dict(pad)
    return {side: int(pad.get(side, 0)) + int(extend.get(side, 0)) for side in ("top", "bottom", "left", "right")}


def finish(state: RunState, runtime: Runtime[RunContext]) -> dict:
    from fixloop.agent.outputs import write_images, write_report

    started = time.perf_counter()
    ctx = runtime.context
    write_images(state, ctx)
    spend = _spend(state, started)  # the report's own write is the one thing it cannot count
    final = state.model_copy(update={"spend": spend, "finished": True})
    write_report(final, ctx)
    ctx.tell("finish", state=final)
    return {"finished": True, "spend": spend}


# ---- edges --------------------------------------------------------------------------------------


def after_triage(state: RunState) -> str:
    return "finish" if state.stop_reason else "plan"


def after_plan(state: RunState) -> str:
    if state.stop_reason:
        return "finish"
    if state.plan is None:
        return "triage"  # the target was left open; pick the next one
    if state.plan.paid and state.inputs.approve:
        return "approve"
    return "repair"


def after_approve(state: RunState) -> str:
    return "repair" if state.approved else "triage"


def build_graph() -> StateGraph:
    graph = StateGraph(RunState, context_schema=RunContext)
    for name, node in (("inspect", inspect), ("triage", triage), ("plan", plan), ("approve", approve),
                       ("repair", repair), ("verify", verify), ("finish", finish)):
        graph.add_node(name, node)
    graph.add_edge(START, "inspect")
    graph.add_edge("inspect", "triage")
    graph.add_conditional_edges("triage", after_triage, ["plan", "finish"])
    graph.add_conditional_edges("plan", after_plan, ["approve", "repair", "triage", "finish"])
    graph.add_conditional_edges("approve", after_approve, ["repair", "triage"])
    graph.add_edge("repair", "verify")
    graph.add_edge("verify", "triage")
    graph.add_edge("finish", END)
    return graph


def recursion_limit(max_passes: int) -> int:
    """Backstop on graph steps: a pass takes at most 5 (triage, plan, approve, repair, verify), a
    defect left open 2 (triage, plan); the budget normally ends a run long before this."""
    return 5 * max_passes + 200
