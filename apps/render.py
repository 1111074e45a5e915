"""The check report on a terminal: findings in repair order, what each check did, the verdict.

Each finding is one row (priority, kind, stage, what was measured against its limit, where) with its
message on indented lines under it, wrapped between words, so the output reads at 80 columns and
uses the room of a wide terminal. Kinds and check names are never broken; paths that cannot fit are
shortened from the left.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from fixloop.apps.text import shorten_left, wrap
from fixloop.checks.report import Report

VERDICT_STYLE = {"pass": "bold green", "fail": "bold red", "error": "bold magenta"}
PRIORITY_STYLE = {"P0": "bold red", "P1": "yellow", "P2": "cyan"}


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def _say(console: Console, line: str, style: str = "") -> None:
    console.print(Text(line, style=style), soft_wrap=True)


def print_verdict(report: Report, console: Console | None = None) -> None:
    """The one line ``--quiet`` prints."""
    console = console or Console()
    counts = {p: sum(1 for f in report.findings if f.priority.value == p and not f.inherited) for p in ("P0", "P1", "P2")}
    inherited = sum(1 for f in report.findings if f.inherited)
    tail = f" · {inherited} inherited" if inherited else ""
    line = Text.assemble(("verdict: ", ""), (report.verdict.upper(), VERDICT_STYLE[report.verdict]),
                         f"  P0 {counts['P0']} · P1 {counts['P1']} · P2 {counts['P2']}{tail}  ({report.seconds:.2f} s)")
    console.print(line, soft_wrap=True)


def print_report(report: Report, console: Console | None = None) -> None:
    console = console or Console()
    width = console.width
    inputs = report.inputs
    for role, path, size in (("candidate", inputs.candidate, inputs.candidate_size),
                             ("source", inputs.source, inputs.source_size), ("mask", inputs.mask, None)):
        if role != "candidate" and not path:
            continue
        tail = "" if not size else f"  ({size[0]}x{size[1]})"
        shown = shorten_left(path or "<in memory>", max(12, width - 11 - len(tail)))
        _say(console, f"{role:<10}{shown}{tail}")
    for note in inputs.notes:
        for line in wrap(f"note: {note}", width, 0, 4):
            _say(console, line, "dim")

    if report.findings:
        _say(console, "findings, in repair order:", "bold")
        kind_width = max(len(f.kind) for f in report.findings)
        for finding in report.findings:
            box = finding.region.box if finding.region and finding.region.box else None
            measured = f"{_number(finding.score)} {finding.unit} (limit {_number(finding.threshold)})"
            where = "" if box is None else f"at {box[0]},{box[1]}-{box[2]},{box[3]}"
            head = f"{finding.kind:<{kind_width}}  {finding.stage.value:<9}"
            priority = finding.priority.value
            line = Text.assemble("  ", (priority, PRIORITY_STYLE[priority]), f"  {head}")
            rest = f"{measured}  {where}".rstrip()
            if len(line.plain) + 2 + len(rest) <= width:
                line.append(f"  {rest}")
                console.print(line, soft_wrap=True)
            else:
                console.print(line, soft_wrap=True)
                for text in wrap(rest, width, 6):
                    _say(console, text)
            message = finding.message
            if finding.inherited:
                message = f"(inherited: the source has it too; not counted) {message}"
            for text in wrap(message, width, 6):
                _say(console, text)
    else:
        _say(console, "no defects found by the checks that ran")

    ran = [c.name for c in report.checks if c.status.value == "ok"]
    for line in wrap(f"checks run: {', '.join(ran) or 'none'}", width, 0, 4):
        _say(console, line, "dim")
    for run in report.checks:
        if run.status.value == "skipped":
            for line in wrap(f"skipped {run.name}: {run.reason}", width, 0, 4):
                _say(console, line, "dim")
        elif run.status.value == "error":
            for line in wrap(f"error in {run.name}: {run.error}", width, 0, 4):
                _say(console, line, "bold magenta")
    print_verdict(report, console)
