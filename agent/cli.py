"""The `fixloop` command line.

Heavy libraries (OpenCV, scikit-image, MediaPipe) are imported inside the commands, so that
`fixloop --help` stays fast.

Exit codes, shared by every command that judges an image:
0 pass, 1 fail (a P0/P1 defect was found), 2 bad input or usage, 3 a check errored.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

EXIT_PASS, EXIT_FAIL, EXIT_BAD_INPUT, EXIT_CHECK_ERROR = 0, 1, 2, 3
VERDICT_EXIT = {"pass": EXIT_PASS, "fail": EXIT_FAIL, "error": EXIT_CHECK_ERROR}

app = typer.Typer(
    name="fixloop",
    help="Catch and repair broken image edits.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail_input(message: str) -> None:
    typer.echo(f"fixloop: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


@app.command()
def check(
    candidate: Path = typer.Argument(..., help="the edited image to inspect"),
    source: Optional[Path] = typer.Option(None, "--source", "-s", help="the image before the edit"),
    mask: Optional[Path] = typer.Option(None, "--mask", "-m", help="edit mask at the source's size: white = where the edit was allowed"),
    reference: List[Path] = typer.Option([], "--reference", "-r", help="identity reference image (repeatable)"),
    history: List[Path] = typer.Option([], "--history", help="earlier passes, oldest first (repeatable)"),
    policy: Optional[Path] = typer.Option(None, "--policy", "-p", help="TOML policy laid over the defaults"),
    only: List[str] = typer.Option([], "--only", help="run only this check (repeatable)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as one JSON object on stdout"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="folder for report.json and finding masks"),
) -> None:
    """Inspect CANDIDATE for defects; compare it with --source when given."""
    from checks.engine import check_files
    from checks.images import InputError
    from checks.policy import load_policy

    try:
        loaded_policy = load_policy(policy)
        report = check_files(
            str(candidate),
            None if source is None else str(source),
            None if mask is None else str(mask),
            [str(r) for r in reference],
            [str(h) for h in history],
            policy=loaded_policy,
            names=only or None,
        )
        if out is not None:
            protected = [candidate, source, mask, policy, *reference, *history]
            report.write(out, protected=[p for p in protected if p is not None])
    except InputError as exc:
        _fail_input(str(exc))
    except KeyError as exc:  # an unknown --only name: the registry suggests the closest
        _fail_input(str(exc.args[0]))
    except OSError as exc:
        _fail_input(f"could not write to {str(out)!r} ({exc.strerror}): choose a writable --out folder")

    if as_json:
        sys.stdout.write(report.to_json() + "\n")
    else:
        from agent.render import print_report

        print_report(report)
    raise typer.Exit(VERDICT_EXIT[report.verdict])


@app.command("checks")
def list_checks() -> None:
    """List the registered checks with their stage, priority and required inputs."""
    from rich.console import Console
    from rich.table import Table

    from checks.base import REGISTRY
    from checks.policy import load_policy

    policy = load_policy()
    table = Table(title="fixloop checks")
    for column in ("check", "stage", "priority", "needs", "what it measures"):
        table.add_column(column)
    for spec in REGISTRY:
        params = policy.params(spec.name)
        table.add_row(spec.name, spec.kind.stage.value, params.priority.value,
                      ", ".join(spec.requires) or "-", spec.description)
    Console().print(table)


@app.command("models")
def list_models(
    policy: Optional[Path] = typer.Option(None, "--policy", "-p", help="TOML policy whose model paths to use"),
) -> None:
    """List every model file the checks use: found or missing, where, its size, and how to install it."""
    from rich.console import Console
    from rich.table import Table

    from checks.images import InputError
    from checks.models import MODELS, model_status
    from checks.policy import load_policy

    try:
        loaded = load_policy(policy)
    except InputError as exc:
        _fail_input(str(exc))
    # a model path named in the policy (identity checks' insightface_model) is searched first
    explicit = next((getattr(loaded.params(name), "insightface_model", "") for name in ("identity_drift", "subjects_swapped")
                     if name in loaded.checks and getattr(loaded.params(name), "insightface_model", "")), None)
    table = Table(title="fixloop models")
    found = 0
    for column in ("model", "used by", "status", "path", "size", "install"):
        table.add_column(column, overflow="fold")
    for name in MODELS:
        status = model_status(name, explicit if name == "insightface_arcface" else None)
        spec = status.spec
        if status.found:
            found += 1
            size = status.size or 0
            table.add_row(name, ", ".join(spec.used_by), "[green]found[/green]", str(status.path),
                          f"{size / 1e6:.1f} MB", "-")
        else:
            looked = "not found; looked in: " + ", ".join(str(p) for p in status.looked)
            table.add_row(name, ", ".join(spec.used_by), "[red]missing[/red]", looked, "-", spec.install)
    table.caption = f"{found} of {len(MODELS)} model files found"
    Console().print(table)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the `check --json` report."""
    from checks.report import schema_text

    sys.stdout.write(schema_text())


@app.command()
def example(
    out: Path = typer.Option(Path("examples/out"), "--out", "-o", help="folder to write the example into"),
) -> None:
    """Write a worked example: a source photo, an edit mask and a broken edit of it."""
    from agent.example import write_example

    try:
        paths = write_example(out)
    except OSError as exc:
        _fail_input(f"could not write the example to {str(out)!r} ({exc.strerror}): choose a writable folder")
    for role, path in paths.items():
        typer.echo(f"{role:10s} {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
