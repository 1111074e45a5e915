"""Progress events of a repair run as plain lines and small JSON data, for every front end.

The loop reports ``progress(event, **data)`` with its own typed objects (see :mod:`agent.runner`):
``start``, ``resume``, ``inspect``, ``target``, ``plan``, ``open``, ``repair``, ``verdict``, ``closed``,
``finish``.
:func:`describe` turns one into what a front end that is not a terminal shows or stores: the same
stage / target / plan / verdict lines the CLI prints (without colour markup), and the few values a
page draws from (the input's findings with their boxes, an attempt's outcome, the final verdict).

    lines = describe("verdict", attempt=attempt)   # -> ProgressLine(event="verdict", text="✓ accepted: ...", ...)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MARK = {"accepted": "✓ accepted", "rolled_back": "↺ rolled back", "failed": "✗ failed", "declined": "– declined"}


@dataclass
class ProgressLine:
    """One event as a line of text, with the data a page needs (JSON-able)."""

    event: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)


def as_text(value: Any) -> str:
    """A stop reason or cause as text, whether it is a string or a typed value with a message."""
    if value is None:
        return ""
    for name in ("message", "text", "reason"):
        inner = getattr(value, name, None)
        if isinstance(inner, str):
            return inner
    return str(getattr(value, "value", value))


def _finding(f: Any) -> dict[str, Any]:
    return {"key": f.key, "kind": f.kind, "stage": f.stage, "priority": f.priority, "score": f.score,
            "threshold": f.threshold, "unit": f.unit, "message": f.message, "box": f.box}


def describe(event: str, **data: Any) -> list[ProgressLine]:
    """The lines of one progress event (an unknown event gives one line naming it)."""
    handler = _HANDLERS.get(event)
    if handler is None:
        return [ProgressLine(event, event)]
    return handler(**data)


def _start(state) -> list[ProgressLine]:
    b = state.budget
    return [ProgressLine("start", f"fixloop repair run {state.run_id}: backend {state.inputs.backend}; budget "
                                  f"{b.max_passes} passes, ${b.max_usd:.2f}, {b.max_seconds:.0f} s",
                         {"backend": state.inputs.backend})]


def _resume(state) -> list[ProgressLine]:
    where = "finished" if state.finished else f"after pass {state.spend.passes}"
    return [ProgressLine("resume", f"resuming run {state.run_id} ({where}, ${state.spend.usd:.4f} spent)",
                         {"passes": state.spend.passes, "usd": state.spend.usd})]


def _inspect(findings, verdict) -> list[ProgressLine]:
    counts = {p: sum(1 for f in findings if f.priority == p) for p in ("P0", "P1", "P2")}
    head = ProgressLine("inspect", f"inspect: {len(findings)} finding(s), P0 {counts['P0']} · P1 {counts['P1']} · "
                                   f"P2 {counts['P2']}; verdict {verdict}",
                        {"verdict": verdict, "findings": [_finding(f) for f in findings]})
    return [head, *(ProgressLine("finding", f"  {f.stage} {f.priority} {f.kind}: {f.message}") for f in findings)]


def _target(target, tries) -> list[ProgressLine]:
    again = f" · try {tries + 1}" if tries else ""
    return [ProgressLine("target", f"▶ {target.stage} · {target.kind} ({target.priority}, {target.score:g} "
                                   f"{target.unit}){again}", {"key": target.key, "kind": target.kind})]


def _plan(plan, attempt) -> list[ProgressLine]:
    cost = f" · about ${plan.estimated_usd:.4f}" if plan.paid else ""
    return [ProgressLine("plan", f"  plan: {plan.tool} ({plan.template}) · {plan.change}{cost}",
                         {"attempt": attempt, "tool": plan.tool, "template": plan.template, "paid": plan.paid})]


def _repair(plan, attempt) -> list[ProgressLine]:
    return [ProgressLine("repair", f"  pass {attempt}: running {plan.tool}",
                         {"attempt": attempt, "tool": plan.tool})]


def _verdict(attempt) -> list[ProgressLine]:
    outcome = attempt.outcome.value if attempt.outcome is not None else "unknown"
    spend = f" · {attempt.seconds:.2f} s" + (f" · ${attempt.cost_usd:.4f}" if attempt.cost_usd else "")
    return [ProgressLine("verdict", f"  {MARK.get(outcome, outcome)}: {as_text(attempt.reason)}{spend}",
                         {"attempt": attempt.index, "outcome": outcome, "cost_usd": attempt.cost_usd})]


def _open(defect) -> list[ProgressLine]:
    return [ProgressLine("open", f"  ○ left open: {defect.kind} ({defect.priority}): {as_text(defect.reason)}; "
                                 f"would fix: {defect.would_fix}", {"key": defect.key, "kind": defect.kind})]


def _closed(defects) -> list[ProgressLine]:
    return [ProgressLine("closed", f"  ● no longer open: {d.kind} ({d.priority}) is not found on the new image",
                         {"key": d.key, "kind": d.kind}) for d in defects]


def _finish(state) -> list[ProgressLine]:
    return [ProgressLine("finish", f"done: {as_text(state.stop_reason)} · final verdict {state.verdict} · "
                                   f"{state.spend.passes} pass(es) · ${state.spend.usd:.4f} · {state.spend.seconds:.1f} s",
                         {"verdict": state.verdict, "stop_reason": as_text(state.stop_reason),
                          "passes": state.spend.passes, "usd": state.spend.usd})]


_HANDLERS = {"start": _start, "resume": _resume, "inspect": _inspect, "target": _target, "plan": _plan,
             "repair": _repair, "verdict": _verdict, "open": _open, "closed": _closed,
             "finish": _finish}
