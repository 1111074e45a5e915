"""What a finished repair run leaves in its folder: final image, report.json and review sheet."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fixloop.agent.state import Outcome, RepairReport, RunState
from fixloop.checks.images import to_uint8

if TYPE_CHECKING:
    from fixloop.agent.context import RunContext

FORMAT_SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif"}
ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
# Plan parameters that are plumbing, not settings worth printing on the sheet.
HIDDEN_PARAMETERS = {"finding", "base_url", "api_key", "attempt", "prices"}


def final_name(fmt: str) -> str:
    return "final" + FORMAT_SUFFIX.get(fmt, ".png")


def overhead_per_pass(state: RunState) -> float | None:
    """Node time outside the checks and the tools, per pass: what the loop itself costs."""
    spend = state.spend
    if spend.passes == 0:
        return None
    return round(max(0.0, spend.seconds - spend.check_seconds - spend.tool_seconds) / spend.passes, 4)


def build_report(state: RunState, final_image: str | None, review_sheet: str | None) -> RepairReport:
    return RepairReport(
        run_id=state.run_id, verdict=state.verdict, stop=state.stop, stop_reason=state.stop_reason,
        final_image=final_image,
        review_sheet=review_sheet, inputs=state.inputs, budget=state.budget, spend=state.spend,
        loop_overhead_seconds_per_pass=overhead_per_pass(state), findings=state.findings,
        open_defects=[*state.open_defects.values(), *state.held_back.values()], check_notes=state.check_notes, attempts=state.attempts)


def review_repairs(state: RunState, ctx: "RunContext") -> list:
    """The accepted attempts as the review sheet shows them."""
    from fixloop.agent.review import ReviewRepair

    repairs = []
    for attempt in state.attempts:
        if attempt.outcome != Outcome.accepted or attempt.image is None:
            continue
        plan = attempt.plan
        parameters = {k: v for k, v in {**plan.parameters, **attempt.tool_parameters}.items()
                      if k not in HIDDEN_PARAMETERS}
        parameters["tool"] = plan.tool
        box = plan.target.box
        repairs.append(ReviewRepair(
            title=f"pass {attempt.index} · {plan.target.kind} ({plan.target.priority}) · {plan.tool}"
                  f"{' · salvage' if plan.salvage else ''} · {attempt.reason}",
            stage=plan.target.stage,
            before=ctx.image_array(attempt.before_image),
            after=ctx.image_array(attempt.image),
            mask=None if attempt.mask is None else ctx.files.mask(attempt.mask),
            control=None if attempt.control is None else ctx.files.image(attempt.control),
            box=None if box is None else tuple(box),
            parameters=parameters,
        ))
    return repairs


def write_outputs(state: RunState, ctx: "RunContext") -> RepairReport:
    """Write final image, review.png and report.json (in that order: the report names the others)."""
    write_images(state, ctx)
    return write_report(state, ctx)


def write_report(state: RunState, ctx: "RunContext") -> RepairReport:
    report = build_report(state, final_name(state.inputs.output_format), "review.png")
    ctx.files.save_text(report.model_dump_json(indent=2) + "\n", "report.json")
    return report


def write_images(state: RunState, ctx: "RunContext") -> None:
    """The final image (the input's format; a cut-out keeps its alpha) and the review sheet."""
    from fixloop.agent.review import render_review

    files = ctx.files
    fmt = state.inputs.output_format
    final = ctx.image_array(state.current_image)
    if ctx.input_alpha is not None and ctx.input_alpha.shape == final.shape[:2] and fmt in ALPHA_FORMATS:
        final = np.dstack([final, to_uint8(ctx.input_alpha)])  # a cut-out stays a cut-out
    files.save_image(final, final_name(fmt), fmt, compress_level=6)

    accepted = sum(1 for a in state.attempts if a.outcome == Outcome.accepted)
    notes = [f"stop: {state.stop_reason}",
             f"{state.spend.passes} pass(es), {accepted} accepted, ${state.spend.usd:.4f} spent, "
             f"{state.spend.seconds:.1f} s"]
    notes += [f"open: {d.kind} ({d.priority}): {d.reason}; would fix: {d.would_fix}"
              for d in [*state.open_defects.values(), *state.held_back.values()]]
    review_file = "review.png"
    render_review(ctx.image_array(state.inputs.image), ctx.image_array(state.current_image),
                  review_repairs(state, ctx), files.target(review_file),
                  title=f"fixloop repair · run {state.run_id} · backend {state.inputs.backend} · "
                        f"final verdict {state.verdict}",
                  notes=notes)
