"""Human-readable report: a Rich table of findings in repair order, what each check did, the verdict."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from fixloop.checks.report import Report

VERDICT_STYLE = {"pass": "bold green", "fail": "bold red", "error": "bold magenta"}
PRIORITY_STYLE = {"P0": "bold red", "P1": "yellow", "P2": "cyan"}


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def print_report(report: Report, console: Console | None = None) -> None:
    console = console or Console()
    inputs = report.inputs
    console.print(f"[bold]candidate[/] {inputs.candidate}  ({inputs.candidate_size[0]}x{inputs.candidate_size[1]})")
    if inputs.source:
        console.print(f"[bold]source[/]    {inputs.source}  ({inputs.source_size[0]}x{inputs.source_size[1]})")
    if inputs.mask:
        console.print(f"[bold]mask[/]      {inputs.mask}")
    for note in inputs.notes:
        console.print(f"[dim]note: {note}[/]")

    if report.findings:
        table = Table(title="findings (repair order)", show_lines=False)
        for column in ("kind", "priority", "stage", "measured", "limit", "where", "message"):
            table.add_column(column, overflow="fold")
        for finding in report.findings:
            box = finding.region.box if finding.region and finding.region.box else None
            table.add_row(
                finding.kind,
                f"[{PRIORITY_STYLE[finding.priority.value]}]{finding.priority.value}[/]",
                finding.stage.value,
                f"{_number(finding.score)} {finding.unit}",
                f"{_number(finding.threshold)}",
                "-" if box is None else f"{box[0]},{box[1]}-{box[2]},{box[3]}",
                finding.message,
            )
        console.print(table)
    else:
        console.print("no defects found by the checks that ran")

    skipped = [c for c in report.checks if c.status.value == "skipped"]
    errors = [c for c in report.checks if c.status.value == "error"]
    ran = [c for c in report.checks if c.status.value == "ok"]
    console.print(f"[dim]checks run: {', '.join(c.name for c in ran) or 'none'}[/]")
    for run in skipped:
        console.print(f"[dim]skipped {run.name}: {run.reason}[/]")
    for run in errors:
        console.print(f"[bold magenta]error in {run.name}: {run.error}[/]")
    style = VERDICT_STYLE[report.verdict]
    console.print(f"verdict: [{style}]{report.verdict.upper()}[/]  ({report.seconds:.2f} s)")
