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
  After an accepted repair the defects left open (or held back) are judged again on the new image:
  one the checks no longer find is no longer open, so the report only names what is still there.
- **finish** writes ``final.png``, ``report.json`` and ``review.png``.

Why an attempt ended, why a defect stays open and why the run stopped are typed
(:class:`~agent.state.AttemptCause`, :class:`~agent.state.OpenCause`,
:class:`~agent.state.StopReason`), each with its sentence beside it: no decision reads a message's text.

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
from fixloop.agent.findings import flip_records, plain_data, record_findings, shift_records, still_open
from fixloop.agent.planner import PlanContext, find_fallback, plan_repair
from fixloop.agent.state import (Attempt, AttemptCause, MaskSource, OpenCause, OpenDefect, Outcome, RunState,
                                 Spend, StopReason)
from fixloop.agent.triage import restrict, triage as choose_next
from fixloop.agent.verify import changed_pixels, clipped_pixels, judge, outside_change
from fixloop.checks.images import InputError
from fixloop.tools.base import backend_for_tool, load_tool


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
    return {"current_image": image_path, "findings": findings, "input_findings": findings, "verdict": report.verdict,
            "check_notes": _check_notes(report), "spend": _spend(state, started, check_seconds=check_seconds)}


def triage(state: RunState, runtime: Runtime[RunContext]) -> dict:
    started = time.perf_counter()
    ctx = runtime.context
    findings = restrict(state.findings, state.inputs.only_kinds, state.inputs.skip_kinds,
                        inherited=ctx.policy.gate.count_inherited)
    result = choose_next(findings, state.open_defects, [p.value for p in ctx.policy.gate.fail_on],
                         state.inputs.polish, state.budget, state.spend, state.verdict)
    update: dict[str, Any] = {"target": result.target, "plan": None, "held_back": result.blocked}
    if result.stop is not None:
        update.update(stop=result.stop, stop_reason=_unasked(result.stop_reason, result.stop, state, ctx))
    else:
        ctx.tell("target", target=result.target, tries=state.tries.get(result.target.key, 0))
    update["spend"] = _spend(state, started)
    return update


def _unasked(sentence: str, stop: StopReason, state: RunState, ctx: RunContext) -> str:
    """The stop sentence of a run restricted to some kinds, naming the P0/P1 defects it was not asked
    to repair, so a "clean" run never reads as a clean image when the checks still find some."""
    fail_on = [p.value for p in ctx.policy.gate.fail_on]
    asked = {f.key for f in restrict(state.findings, state.inputs.only_kinds, state.inputs.skip_kinds)}
    others = sorted({f.kind for f in state.findings if f.priority in fail_on and f.key not in asked
                     and (ctx.policy.gate.count_inherited or not f.inherited)})
    if stop != StopReason.clean or not others:
        return sentence
    return f"clean: no P0/P1 defect of the kinds asked for left ({', '.join(others)} not asked for)"


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
        model=state.inputs.model or None,
        base_url=state.inputs.base_url, seed=state.inputs.seed,
        spent_usd=state.spend.usd, max_usd=state.budget.max_usd, paid_costs=paid,
        fallback=find_fallback(state.inputs.backend, settings.backends))
    decision = plan_repair(state.target, state.findings, state.attempts, plan_ctx)
    update: dict[str, Any] = {"plan": decision.plan, "approved": None}
    if decision.open:
        update["open_defects"] = {**state.open_defects, decision.open.key: decision.open}
        ctx.tell("open", defect=decision.open)
    else:
        ctx.tell("plan", plan=decision.plan, attempt=state.spend.passes + 1)
    update["spend"] = _spend(state, started)
    return update


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
                       outcome=Outcome.declined, cause=AttemptCause.declined,
                       reason="declined: the paid call was not approved")
    defect = OpenDefect(key=plan.target.key, kind=plan.target.kind, priority=plan.target.priority,
                        cause=OpenCause.declined, box=plan.target.box, reason="the paid repair was declined",
                        would_fix=f"{plan.tool} with the {plan.template} template")
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


class ToolFailed(Exception):
    """A repair tool raised: the attempt fails with this cause (the run goes on)."""

    def __init__(self, cause: AttemptCause, reason: str):
        super().__init__(reason)
        self.cause, self.reason = cause, reason


def _call_tool(name: str, request):
    """Run one repair tool. What the tool raises becomes :class:`ToolFailed`; the loop's own errors
    (building masks, saving files) are not caught here and end the run as the bugs they are."""
    from fixloop.tools.base import ModerationBlocked, RepairError

    function = load_tool(name).function
    try:
        return function(request)
    except ModerationBlocked as exc:
        raise ToolFailed(AttemptCause.moderation, f"moderation: {exc}") from exc
    except RepairError as exc:
        raise ToolFailed(AttemptCause.tool_error, f"tool error: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - a crashed tool is one failed attempt, reported, not the end of the run
        raise ToolFailed(AttemptCause.tool_crashed, f"tool crashed: {type(exc).__name__}: {exc}") from exc


def _unreachable(failure: ToolFailed) -> bool:
    """The tool said its endpoint cannot be reached at all (not a refusal, not a bad answer)."""
    try:
        from fixloop.tools.openai_images import EndpointUnreachable
    except ImportError:  # pragma: no cover - the openai tool ships with fixloop
        return False
    return isinstance(failure.__cause__, EndpointUnreachable)


def repair(state: RunState, runtime: Runtime[RunContext]) -> dict:
    from fixloop.agent.findings import to_finding
    from fixloop.tools.base import RepairRequest

    started = time.perf_counter()
    ctx = runtime.context
    plan = state.plan
    index = len(state.attempts) + 1
    attempt = Attempt(index=index, plan=plan, before_image=state.current_image)
    before = ctx.image_array(state.current_image)
    tool_seconds, cost = 0.0, 0.0
    image = ctx.image_array(plan.base_image) if plan.base_image else before
    mask = _repair_mask(plan, state, ctx, image)
    source = before if plan.salvage else ctx.source_pixels(image, state.canvas_pad)
    parameters = dict(plan.parameters)
    parameters.pop("attempt", None)
    if plan.tool == "openai":  # retries and waits stay inside what the run's seconds budget has left
        left = state.budget.max_seconds - state.spend.seconds - (time.perf_counter() - started)
        parameters["deadline_s"] = round(max(1.0, left), 3)
    if plan.tool.startswith("local.") and plan.tool != "local.composite_back":
        parameters["finding"] = to_finding(plan.target, mask if plan.mask_source == MaskSource.finding else None)
    references = [ctx.image_array(r) for r in plan.references]
    try:
        if plan.prepare == "expand_canvas":
            t0 = time.perf_counter()
            grown = _call_tool("local.expand_canvas",
                               RepairRequest(image=image, parameters={"finding": to_finding(plan.target)}))
            tool_seconds += time.perf_counter() - t0
            image, mask = grown.image, grown.mask
            attempt.canvas_extend = {k: int(v) for k, v in grown.parameters["extend"].items()}
            attempt.notes.append(f"canvas grown to {image.shape[1]}x{image.shape[0]} for the outpaint")
        request = RepairRequest(image=image, mask=mask, source=source, references=references,
                                prompt=plan.prompt, negative_prompt=plan.negative_prompt,
                                template=plan.template, parameters=parameters)
        ctx.tell("repair", plan=plan, attempt=index)
        t0 = time.perf_counter()
        try:
            result = _call_tool(plan.tool, request)
        finally:
            tool_seconds += time.perf_counter() - t0
        cost = float(result.cost_usd)
        if plan.paid and result.parameters.get("cost_known") is False:
            cost = max(cost, plan.estimated_usd)  # no usage block: book the estimate, so the budget still holds
            attempt.notes.append(f"the response reported no usage: ${cost:.4f} (the estimate) booked")
        if plan.prepare == "expand_canvas" and result.image.shape == image.shape:
            # An outpaint only adds the new strip: the part of the picture that was there comes back
            # pixel for pixel (a GPT Image round trip would resample it), the seam fading inside the strip.
            t0 = time.perf_counter()
            kept = _call_tool("local.composite_back",
                              RepairRequest(image=result.image, mask=mask, source=image, parameters={"seam": "inside"}))
            tool_seconds += time.perf_counter() - t0
            result.image = kept.image
            attempt.notes.append("the picture inside the old frame was restored exactly; only the new strip is generated")
    except ToolFailed as failure:
        attempt.outcome, attempt.cause, attempt.reason = Outcome.failed, failure.cause, failure.reason
        attempt.cost_usd, attempt.seconds = round(cost, 6), round(tool_seconds, 4)  # the real time it took
        update = {"pending": attempt, "spend": _spend(state, started, passes=1, usd=cost, tool_seconds=tool_seconds)}
        if _unreachable(failure):  # every later attempt would wait the same way: the run ends with its report
            update.update(stop=StopReason.stuck, stop_reason=f"stopped: the {plan.tool} backend cannot be reached "
                                                             f"({failure.reason})")
        return update

    name = f"attempts/{index:02d}-{plan.tool}.png"
    attempt.image = ctx.files.save_image(result.image, name)
    attempt.mask = _changed_mask(plan, before, result, mask, ctx, index)
    if result.control is not None:
        attempt.control = ctx.files.save_image(result.control, f"attempts/{index:02d}-control.png")
    attempt.tool_parameters = plain_data(result.parameters)
    attempt.cost_usd = round(cost, 6)
    attempt.seconds = round(tool_seconds, 4)
    attempt.notes.extend(result.notes)
    return {"pending": attempt,
            "spend": _spend(state, started, passes=1, usd=cost, tool_seconds=tool_seconds)}


def _changed_mask(plan, image: np.ndarray, result, mask: np.ndarray | None, ctx: RunContext,
                  index: int) -> str | None:
    """Where the attempt may have changed pixels, saved for the report and the review sheet.

    A generative tool: the mask it was given (verify measures what it did outside it). A local tool:
    the pixels it did change (composite-back changes what lies *outside* its edit mask, a salvage
    what lies inside); none for a pass that changes every pixel by design (exposure/colour)."""
    if backend_for_tool(plan.tool) is not None:
        used = result.mask if result.mask is not None else mask
    elif plan.tool == "local.exposure_color" or result.image.shape != image.shape:
        used = result.mask if result.image.shape != image.shape else None
    else:
        used = np.any(result.image != image, axis=2)
        if not used.any():
            used = None
        else:  # a region, not speckle: pixels that happened to come back equal (clipped black) fill in
            import cv2

            side = max(3, int(round(0.015 * float(np.hypot(*used.shape)))) | 1)
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
            used = cv2.morphologyEx(used.astype(np.uint8), cv2.MORPH_CLOSE, kernel) > 0
    if used is None or used.shape != result.image.shape[:2]:
        return None
    return ctx.files.save_mask(used, f"attempts/{index:02d}-mask.png")


def verify(state: RunState, runtime: Runtime[RunContext]) -> dict:
    started = time.perf_counter()
    ctx = runtime.context
    attempt = state.pending.model_copy(deep=True)
    target = attempt.plan.target
    tries = {**state.tries, target.key: state.tries.get(target.key, 0) + 1}
    update: dict[str, Any] = {"pending": None, "plan": None, "tries": tries}
    attempt.findings_before = [f.brief() for f in state.findings]
    check_seconds = 0.0
    closed: list[OpenDefect] = []  # defects left open or held back that the checks no longer find
    if attempt.outcome == Outcome.failed:
        if attempt.cause == AttemptCause.moderation:
            update["open_defects"] = {**state.open_defects, target.key: OpenDefect(
                key=target.key, kind=target.kind, priority=target.priority, cause=OpenCause.moderation,
                box=target.box, reason=attempt.reason,
                would_fix="reword the request, or repair it with --backend diffusers")}
    else:
        after_image = ctx.image_array(attempt.image)
        before_image = ctx.image_array(state.current_image)
        pad = _grown(state.canvas_pad, attempt.canvas_extend)
        t0 = time.perf_counter()
        try:
            report = ctx.check(after_image, pad)
        except InputError as exc:  # the output does not fit the run's inputs any more: it cannot be judged
            attempt.outcome, attempt.cause = Outcome.rolled_back, AttemptCause.output_unreadable
            attempt.reason = f"the output could not be checked: {exc}"
            ctx.tell("verdict", attempt=attempt)
            return {**update, "attempts": [attempt], "spend": _spend(state, started)}
        spill = None
        if backend_for_tool(attempt.plan.tool) is not None and attempt.plan.prepare is None:
            # a generative repair may change any pixel: what it did outside its mask is measured, and a
            # measure that cannot run is not read as "nothing changed" (see agent.verify)
            mask = ctx.files.mask(attempt.mask) if attempt.mask is not None else None
            spill = outside_change(before_image, after_image, mask, ctx.policy)
        check_seconds = time.perf_counter() - t0
        # on a grown canvas the old picture moved right/down by the new left/top strips; on a flipped
        # one every region moved to its mirror place: so did the findings, and the defects left open
        before = _moved(state.findings, attempt, after_image)
        after = record_findings(report.findings, before, ctx.files, f"work/pass-{attempt.index:02d}")
        attempt.findings_after = [f.brief() for f in after]
        attempt.check_seconds = round(check_seconds, 4)
        settings = ctx.policy.repair
        input_findings = _moved(state.input_findings, attempt, after_image)
        verdict = judge(attempt.plan, before, after, [p.value for p in ctx.policy.gate.fail_on],
                        settings.min_improvement, settings.worse_factor, report.verdict, spill,
                        input_findings=input_findings,
                        changed=changed_pixels(before_image, after_image, ctx.source_pixels(after_image, pad)),
                        input_clipped=_input_clipped(state, ctx, after_image), images=(before_image, after_image))
        attempt.outcome = Outcome.accepted if verdict.accepted else Outcome.rolled_back
        attempt.cause, attempt.reason = verdict.cause, verdict.reason
        attempt.notes.extend(verdict.notes)
        attempt.side_effects = verdict.side_effects
        if verdict.accepted:
            # what was left open (or held back) is judged again on the new image: a defect the checks
            # no longer find is no longer open
            open_defects, gone = still_open(_moved_open(state.open_defects, attempt, after_image), after)
            held_back, released = still_open(_moved_open(state.held_back, attempt, after_image), after)
            update.update(current_image=attempt.image, findings=after, input_findings=input_findings,
                          verdict=report.verdict,
                          check_notes=_check_notes(report), canvas_pad=pad,
                          open_defects=open_defects, held_back=held_back)
            closed = [*gone, *released]
            attempt.notes.extend(f"{d.kind} ({d.priority}) is no longer found on the new image: no longer "
                                 f"{'held back' if d.cause == OpenCause.held_back else 'open'}" for d in closed)
    ctx.tell("verdict", attempt=attempt)
    if closed:
        ctx.tell("closed", defects=closed)
    update["attempts"] = [attempt]
    update["spend"] = _spend(state, started, check_seconds=check_seconds)
    return update


def _input_clipped(state: RunState, ctx: RunContext, after_image: np.ndarray) -> np.ndarray | None:
    """Where the run's input was clipped, on the current image's pixels; None once an accepted outpaint
    or flip has moved the picture (then no region is excused by it)."""
    moved = state.canvas_pad or any(a.outcome == Outcome.accepted and _flip_axis(a) for a in state.attempts)
    image = ctx.image_array(state.inputs.image)
    if moved or image.shape[:2] != after_image.shape[:2]:
        return None
    return clipped_pixels(image)


def _flip_axis(attempt: Attempt) -> str | None:
    """The axis an attempt flipped the picture on (None when it did not flip it)."""
    if attempt.plan.tool != "local.flip_back":
        return None
    return str(attempt.tool_parameters.get("axis", "horizontal"))


def _moved(records, attempt: Attempt, after_image: np.ndarray):
    """``records`` of the image before ``attempt`` placed on its output (grown canvas, flip)."""
    records = shift_records(records, attempt.canvas_extend)
    axis = _flip_axis(attempt)
    if axis is not None:
        records = flip_records(records, axis, (after_image.shape[1], after_image.shape[0]))
    return records


def _moved_open(defects: dict[str, OpenDefect], attempt: Attempt, after_image: np.ndarray) -> dict[str, OpenDefect]:
    """Open defects placed on the output like the findings (their boxes; keys stay)."""
    return dict(zip(defects, _moved(list(defects.values()), attempt, after_image)))


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
    return "finish" if state.stop is not None else "plan"


def after_plan(state: RunState) -> str:
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
    graph.add_conditional_edges("plan", after_plan, ["approve", "repair", "triage"])
    graph.add_conditional_edges("approve", after_approve, ["repair", "triage"])
    graph.add_edge("repair", "verify")
    graph.add_edge("verify", "triage")
    graph.add_edge("finish", END)
    return graph


def recursion_limit(max_passes: int) -> int:
    """Backstop on graph steps: a pass takes at most 5 (triage, plan, approve, repair, verify), a
    defect left open 2 (triage, plan); the budget normally ends a run long before this."""
    return 5 * max_passes + 200
