"""Live progress of a repair run on the terminal (stderr, so ``--json`` keeps stdout clean).

One line per event (what was found, the target, the plan, the verdict), and a spinner that says
what is running now: stage, target, attempt and spend. Without a terminal the spinner is silent and
the lines are plain text.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

MARK = {"accepted": "[green]✓ accepted[/green]", "rolled_back": "[yellow]↺ rolled back[/yellow]",
        "failed": "[red]✗ failed[/red]", "declined": "[yellow]– declined[/yellow]"}


class ConsoleProgress:
    """A ``progress(event, **data)`` callback for :mod:`agent.runner` that prints with Rich."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self._status = None
        self._spent = 0.0
        self._attempt = 0

    def say(self, markup: str, hang: int = 4) -> None:
        """One progress line, wrapped between words with a hanging indent (see apps.text.say)."""
        from fixloop.apps.text import say

        say(self.console, markup, hang)

    def _spin(self, text: str) -> None:
        if not self.console.is_terminal:
            return
        if self._status is None:
            self._status = self.console.status(text)
            self._status.start()
        else:
            self._status.update(text)

    def _path(self, path: str) -> str:
        """A path shortened from the left so that it fits on one line."""
        from fixloop.apps.text import shorten_left

        return shorten_left(path, max(20, self.console.width - 6))

    def stop(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def __call__(self, event: str, **data: Any) -> None:
        handler = getattr(self, f"on_{event}", None)
        if handler is not None:
            handler(**data)

    def on_start(self, state) -> None:
        b = state.budget
        self.say(f"[bold]fixloop repair[/bold] run [cyan]{state.run_id}[/cyan] -> {escape(self._path(state.inputs.out_dir))}")
        self.say(f"  backend {state.inputs.backend}; budget {b.max_passes} passes, ${b.max_usd:.2f}, "
                           f"{b.max_seconds:.0f} s")
        self._spin("inspecting the input")

    def on_resume(self, state) -> None:
        self._spent, self._attempt = state.spend.usd, state.spend.passes
        where = "finished" if state.finished else f"after pass {state.spend.passes}"
        self.say(f"[bold]fixloop repair[/bold] resuming run [cyan]{state.run_id}[/cyan] ({where}, "
                           f"${state.spend.usd:.4f} spent)")

    def on_inspect(self, findings, verdict) -> None:
        counts = {p: sum(1 for f in findings if f.priority == p) for p in ("P0", "P1", "P2")}
        self.say(f"inspect: {len(findings)} finding(s), P0 {counts['P0']} · P1 {counts['P1']} · "
                           f"P2 {counts['P2']}; verdict {verdict}")
        for f in findings:
            self.say(f"  {f.stage:9s} {f.priority} {f.kind}: {escape(f.message)}")

    def on_target(self, target, tries) -> None:
        self.say(f"[bold]▶ {target.stage} · {target.kind}[/bold] ({target.priority}, "
                           f"{target.score:g} {escape(target.unit)}){f' · try {tries + 1}' if tries else ''}")

    def on_plan(self, plan, attempt) -> None:
        cost = f" · about ${plan.estimated_usd:.4f}" if plan.paid else ""
        self.say(f"  plan: {plan.tool} ({plan.template}) · {escape(plan.change)}{cost}")

    def on_repair(self, plan, attempt) -> None:
        self._attempt = attempt
        self._spin(f"pass {attempt} · {plan.target.stage} · {plan.target.kind} · {plan.tool} · "
                   f"${self._spent:.4f} spent")

    def on_verdict(self, attempt) -> None:
        self._spent += attempt.cost_usd
        spend = f" · {attempt.seconds:.2f} s" + (f" · ${attempt.cost_usd:.4f}" if attempt.cost_usd else "")
        self.say(f"  {MARK.get(attempt.outcome.value, attempt.outcome.value)}: {escape(attempt.reason)}{spend}")
        self._spin(f"checking · ${self._spent:.4f} spent")

    def on_open(self, defect) -> None:
        self.say(f"  [yellow]○ left open[/yellow]: {defect.kind} ({defect.priority}): {escape(defect.reason)}")
        self.say(f"    would fix: {escape(defect.would_fix)}")

    def on_closed(self, defects) -> None:
        """Defects left open (or held back) before that the checks no longer find on the new image."""
        for defect in defects:
            from fixloop.agent.state import OpenCause

            was = "held back" if defect.cause == OpenCause.held_back else "left open"
            self.say(f"  [green]● no longer found[/green]: {defect.kind} ({defect.priority}), {was} "
                               "before: not open any more")

    def on_finish(self, state) -> None:
        self.stop()
        colour = {"pass": "green", "fail": "red"}.get(state.verdict or "", "yellow")
        self.say(f"[bold]done[/bold]: {escape(state.stop_reason or '')}")
        self.say(f"  final verdict [{colour}]{state.verdict}[/{colour}] · {state.spend.passes} pass(es) · "
                           f"${state.spend.usd:.4f} · {state.spend.seconds:.1f} s")
        for defect in [*state.open_defects.values(), *state.held_back.values()]:
            self.say(f"  [yellow]open[/yellow] {defect.kind} ({defect.priority}): {escape(defect.reason)}")
        from fixloop.agent.outputs import final_name

        for name in (final_name(state.inputs.output_format), "report.json", "review.png"):
            self.say(f"  {escape(self._path(state.inputs.out_dir + '/' + name))}")


def ask_approval(console: Console):
    """An approver that asks on the terminal; no answer (end of input) counts as no."""
    from rich.prompt import Confirm

    def approver(question: dict[str, Any]) -> bool:
        console.print(f"[bold]approve?[/bold] {escape(question['question'])} about ${question['estimated_usd']:.4f} "
                      f"(spent ${question['spent_usd']:.4f} of ${question['budget_usd']:.2f})")
        try:
            return Confirm.ask("run it", console=console, default=False)
        except EOFError:
            return False

    return approver
