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
    from fixloop.checks.engine import check_files
    from fixloop.checks.images import InputError
    from fixloop.checks.policy import load_policy

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
        from fixloop.apps.render import print_report

        print_report(report)
    raise typer.Exit(VERDICT_EXIT[report.verdict])


@app.command("checks")
def list_checks() -> None:
    """List the registered checks with their stage, priority and required inputs."""
    from rich.console import Console
    from rich.table import Table

    from fixloop.checks.base import REGISTRY
    from fixloop.checks.policy import load_policy

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

    from fixloop.checks.images import InputError
    from fixloop.checks.models import MODELS, model_status
    from fixloop.checks.policy import load_policy

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
def schema(
    repair_report: bool = typer.Option(False, "--repair", help="the schema of a repair run's report.json instead"),
) -> None:
    """Print the JSON Schema of the `check --json` report (or, with --repair, of `repair`'s report.json)."""
    if repair_report:
        from fixloop.agent.state import repair_schema_text

        sys.stdout.write(repair_schema_text())
        return
    from fixloop.checks.report import schema_text

    sys.stdout.write(schema_text())


@app.command()
def example(
    out: Path = typer.Option(Path("examples/out"), "--out", "-o", help="folder to write the example into"),
) -> None:
    """Write a worked example: a source photo, an edit mask and a broken edit of it."""
    from fixloop.agent.example import write_example

    try:
        paths = write_example(out)
    except OSError as exc:
        _fail_input(f"could not write the example to {str(out)!r} ({exc.strerror}): choose a writable folder")
    for role, path in paths.items():
        typer.echo(f"{role:10s} {path}")


# ---- fix: one repair tool by hand ------------------------------------------------------------------

# Local tools that take their region (and settings) from a check's finding when no --mask is given.
FINDING_CHECKS = {"local.defringe": "edge_halo", "local.expand_canvas": "subject_cropped"}
# Local tools that cannot run without --mask and no check can stand in for it.
MASK_REQUIRED = {
    "local.composite_back": "the edit mask (--mask): outside it the source is restored",
    "local.crop_first": "the region to repair (--mask), or repair=local.defringe to take it from edge_halo",
}


def _parse_params(items: List[str]) -> dict:
    """``k=v`` pairs; a value that reads as JSON (numbers, true/false, lists, objects) is taken as such."""
    import json

    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _fail_input(f"--param {item!r} is not KEY=VALUE")
        try:
            parsed[key.strip()] = json.loads(value)
        except ValueError:
            parsed[key.strip()] = value
    return parsed


def _image_format(path: Path) -> str:
    from PIL import Image

    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        _fail_input(f"cannot write {str(path)!r}: give the output a .png, .jpg, .webp or .tif name")
    return fmt


def _save_image(array, path: Path, fmt: str) -> None:
    from PIL import Image

    from fixloop.checks.report import atomic_path

    image = Image.fromarray(array)
    if fmt == "JPEG" and image.mode == "RGBA":
        image = image.convert("RGB")
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt)


def _finding_for(checks: List[str], decoded, source, references, policy):
    """Run ``checks`` on the image; the first finding (one with a region first), or None.
    A check that cannot run is an input error; a check that crashed is a check error."""
    from fixloop.checks.context import CheckContext
    from fixloop.checks.engine import run_checks
    from fixloop.checks.images import InputError

    ctx = CheckContext.build(decoded, source, None, references, max_side=policy.analysis.max_side)
    report = run_checks(ctx, policy, names=checks)
    for run in report.checks:
        if run.status.value == "error":
            typer.echo(f"fixloop: {run.name} failed while looking for the region: {run.error}", err=True)
            raise typer.Exit(EXIT_CHECK_ERROR)
    if all(run.status.value == "skipped" for run in report.checks):
        reasons = "; ".join(f"{run.name} {run.reason}" for run in report.checks)
        raise InputError(f"the check that finds the region could not run ({reasons}): pass --mask")
    with_region = [f for f in report.findings if f.mask is not None]
    return (with_region or report.findings or [None])[0]


@app.command()
def fix(
    image: Path = typer.Argument(..., help="the image to repair"),
    tool: str = typer.Option(..., "--tool", "-t", help="repair tool, e.g. local.exposure_color, local.defringe, openai"),
    template: Optional[str] = typer.Option(None, "--template", help="repair template (hands, face, texture-edge, ...)"),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="prompt for a generative tool (openai, diffusers)"),
    negative_prompt: Optional[str] = typer.Option(None, "--negative-prompt", help="negative prompt (diffusers)"),
    source: Optional[Path] = typer.Option(None, "--source", "-s", help="the image before the broken edit"),
    mask: Optional[Path] = typer.Option(None, "--mask", "-m", help="where the repair may change pixels (white); "
                                        "without it the matching check's finding supplies it"),
    reference: List[Path] = typer.Option([], "--reference", "-r", help="reference image (repeatable)"),
    param: List[str] = typer.Option([], "--param", help="tool setting KEY=VALUE (repeatable), e.g. feather=12"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output file (default: IMAGE-fixed.png beside IMAGE)"),
    mask_out: Optional[Path] = typer.Option(None, "--mask-out", help="also write the mask the tool used or made "
                                            "(the outpaint mask of local.expand_canvas) as a PNG"),
    policy: Optional[Path] = typer.Option(None, "--policy", "-p", help="TOML policy for the check that finds the region"),
) -> None:
    """Run one repair tool on IMAGE and write the result (never over an input)."""
    import numpy as np

    from fixloop.checks.images import InputError, load_image, to_uint8
    from fixloop.checks.policy import load_policy
    from fixloop.tools.base import RepairError, RepairRequest

    parameters = _parse_params(param)
    target = out if out is not None else image.with_name(f"{image.stem}-fixed.png")
    inputs = {p.resolve() for p in (image, source, mask, policy, *reference) if p is not None}
    for path, flag in ((target, "--out"), (mask_out, "--mask-out")):
        if path is not None and path.resolve() in inputs:
            _fail_input(f"output {str(path)!r} is one of the inputs: choose another {flag}")
    if mask_out is not None and mask_out.resolve() == target.resolve():
        _fail_input("--mask-out and the output image are the same file")
    fmt = _image_format(target)
    mask_fmt = None if mask_out is None else _image_format(mask_out)
    try:
        from fixloop.tools.base import load_tool

        spec = load_tool(tool)
    except KeyError as exc:  # an unknown --tool: the registry suggests the closest
        _fail_input(str(exc.args[0]))

    try:
        loaded_policy = load_policy(policy)
        decoded = load_image(image, "image")
        decoded_source = None if source is None else load_image(source, "source")
        decoded_refs = [load_image(r, "reference") for r in reference]
        pixels = to_uint8(decoded.pixels)
        region = None if mask is None else _mask_for(mask, decoded, decoded_source)
        if region is None and tool in MASK_REQUIRED and parameters.get("repair") not in FINDING_CHECKS:
            raise InputError(f"{tool} needs {MASK_REQUIRED[tool]}")

        # Without --mask, the region (and for local tools the finding itself) comes from the check
        # that reports what this repair fixes.
        checks = [] if region is not None else _checks_for(tool, template, parameters)
        finding = None
        if checks:
            finding = _finding_for(checks, decoded, decoded_source, decoded_refs, loaded_policy)
            if finding is None:
                typer.echo(f"{', '.join(checks)}: no finding on {image}, nothing to repair; nothing written")
                raise typer.Exit(EXIT_PASS)
            if tool.startswith("local."):
                parameters["finding"] = finding
            if tool != "local.expand_canvas":  # that one reads how far to extend, not a region
                region = finding.mask  # None for a whole-image defect (exposure, colour)

        if template is not None and prompt is None and not tool.startswith("local."):
            # A generative tool with a template and no hand-written prompt: render the template,
            # its slots filled from the finding (and the image size for "left hand / right hand").
            from fixloop.prompts import render

            slots = {"image_size": [pixels.shape[1], pixels.shape[0]]}
            rendered = render(template, finding, request=slots)
            prompt = rendered.gpt_image_prompt if tool == "openai" else rendered.positive
            negative_prompt = negative_prompt or rendered.negative
            if tool == "diffusers":
                parameters = {**rendered.diffusion_parameters(), **parameters}

        request = RepairRequest(
            image=pixels,
            mask=region,
            source=None if decoded_source is None else to_uint8(decoded_source.pixels),
            references=[to_uint8(r.pixels) for r in decoded_refs],
            prompt=prompt,
            negative_prompt=negative_prompt,
            template=template,
            parameters=parameters,
        )
        result = spec.function(request)
    except (InputError, RepairError) as exc:
        _fail_input(str(exc))

    fixed = result.image
    if decoded.alpha is not None and fixed.shape[:2] == pixels.shape[:2] and fmt != "JPEG":
        fixed = np.dstack([fixed, to_uint8(decoded.alpha)])  # a cut-out stays a cut-out
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _save_image(fixed, target, fmt)
        if mask_out is not None and result.mask is not None:
            _save_image(result.mask.astype(np.uint8) * 255, mask_out, mask_fmt)
        elif mask_out is not None:
            typer.echo(f"fixloop: {result.tool} used no mask; {mask_out} not written", err=True)
    except OSError as exc:
        _fail_input(f"could not write {str(target)!r} ({exc.strerror}): choose a writable --out")

    h, w = result.image.shape[:2]
    typer.echo(f"{result.tool}: wrote {target} ({w}x{h}) in {result.seconds:.2f} s, cost ${result.cost_usd:.4f}")
    raise typer.Exit(EXIT_PASS)


# ---- repair: the loop -------------------------------------------------------------------------------

BACKENDS = ("local", "openai", "diffusers")
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}


def _backend_ready(backend: str, model: Optional[str], policy) -> None:
    """Fail early, in one line, when the backend cannot run at all (no key, no model, no library)."""
    import importlib.util
    import os

    from fixloop.checks.images import InputError

    if backend == "openai" and not os.environ.get("OPENAI_API_KEY"):
        raise InputError("--backend openai needs an API key: set OPENAI_API_KEY (and OPENAI_BASE_URL for another endpoint)")
    if backend == "diffusers":
        if importlib.util.find_spec("diffusers") is None or importlib.util.find_spec("torch") is None:
            raise InputError("--backend diffusers needs torch and diffusers: pip install 'fixloop[diffusion]'")
        if not (model or policy.repair.diffusers_model or os.environ.get("FIXLOOP_DIFFUSION_MODEL")):
            raise InputError("--backend diffusers needs an inpainting checkpoint: pass --model PATH_OR_HUB_ID "
                             "or set FIXLOOP_DIFFUSION_MODEL")


@app.command()
def repair(
    image: Optional[Path] = typer.Argument(None, help="the image to repair (not needed with --resume)"),
    source: Optional[Path] = typer.Option(None, "--source", "-s", help="the image before the broken edit"),
    mask: Optional[Path] = typer.Option(None, "--mask", "-m", help="edit mask: white = where the edit was allowed"),
    reference: List[Path] = typer.Option([], "--reference", "-r", help="identity / style reference (repeatable)"),
    backend: str = typer.Option("local", "--backend", "-b", help="local (offline, free), openai (GPT Image) or diffusers"),
    model: Optional[str] = typer.Option(None, "--model", help="GPT Image model, or the diffusers inpainting checkpoint"),
    budget_passes: Optional[int] = typer.Option(None, "--budget-passes", min=0, help="repair attempts at most (policy default 8)"),
    budget_usd: Optional[float] = typer.Option(None, "--budget-usd", min=0.0, help="US dollars at most (policy default 2.00)"),
    budget_seconds: Optional[float] = typer.Option(None, "--budget-seconds", min=1.0, help="wall seconds at most (policy default 900)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="run folder (default: fixloop-runs/RUN_ID)"),
    resume: Optional[str] = typer.Option(None, "--resume", help="continue the run with this id from its last checkpoint "
                                         "(with --budget-*: new limits; a run that ran out of budget goes on)"),
    approve: bool = typer.Option(False, "--approve", help="ask before every paid repair"),
    polish: Optional[bool] = typer.Option(None, "--polish/--no-polish", help="also repair P2 findings at the end"),
    policy: Optional[Path] = typer.Option(None, "--policy", "-p", help="TOML policy laid over the defaults"),
    as_json: bool = typer.Option(False, "--json", help="print report.json on stdout (progress stays on stderr)"),
) -> None:
    """Repair IMAGE in a checked loop: inspect, fix the worst defect, verify, repeat; write final, report, review."""
    from fixloop.apps.progress import ConsoleProgress, ask_approval
    from fixloop.agent.runner import new_run_id, resume_run, start_run
    from fixloop.agent.state import Budget, RunInputs
    from fixloop.checks.images import InputError
    from fixloop.checks.policy import load_policy

    if (image is None) == (resume is None):
        _fail_input("give IMAGE to start a run, or --resume RUN_ID to continue one (not both)")
    if backend not in BACKENDS:
        _fail_input(f"--backend {backend!r}: use one of {', '.join(BACKENDS)}")
    progress = ConsoleProgress()
    approver = ask_approval(progress.console) if approve else None
    run_id = resume
    try:
        if resume is not None:
            from fixloop.agent.runner import load_run

            paused = load_run(resume)
            limits = paused.budget.model_copy(update={k: v for k, v in (
                ("max_passes", budget_passes), ("max_usd", budget_usd), ("max_seconds", budget_seconds))
                if v is not None})
            if not paused.finished or limits != paused.budget:  # the backend must still be usable
                _backend_ready(paused.inputs.backend, paused.inputs.model, load_policy(paused.inputs.policy))
            state = resume_run(resume, progress=progress, approver=approver or (ask_approval(progress.console)),
                               budget=limits)
        else:
            loaded = load_policy(policy)
            _backend_ready(backend, model, loaded)
            settings = loaded.repair
            budget = Budget(max_passes=settings.max_passes if budget_passes is None else budget_passes,
                            max_usd=settings.max_usd if budget_usd is None else budget_usd,
                            max_seconds=settings.max_seconds if budget_seconds is None else budget_seconds)
            run_id = new_run_id()
            folder = (out or Path("fixloop-runs") / run_id).resolve()
            inputs_given = [p.resolve() for p in (image, source, mask, policy, *reference) if p is not None]
            if folder in inputs_given or any(p.parent == folder and p.name.startswith(("final.", "review.", "report."))
                                             for p in inputs_given):
                raise InputError(f"--out {str(out)!r} would overwrite an input: choose another folder")
            if (folder / "report.json").exists() or (folder / "attempts").exists():
                raise InputError(f"--out {str(folder)!r} already holds another run: choose a new folder "
                                 "(or --resume that run)")
            inputs = RunInputs(
                image=str(image.resolve()), source=None if source is None else str(source.resolve()),
                mask=None if mask is None else str(mask.resolve()), references=[str(r.resolve()) for r in reference],
                policy=None if policy is None else str(policy.resolve()), backend=backend, model=model,
                polish=settings.polish if polish is None else polish, approve=approve, seed=settings.seed,
                out_dir=str(folder), output_format=OUTPUT_FORMATS.get(image.suffix.lower(), "PNG"))
            state = start_run(inputs, budget, progress=progress, approver=approver, run_id=run_id)
    except InputError as exc:
        progress.stop()
        _fail_input(str(exc))
    except OSError as exc:
        progress.stop()
        _fail_input(f"could not write the run folder ({exc.strerror}: {exc.filename}): choose a writable --out")
    except KeyboardInterrupt:
        progress.stop()
        hint = f"; continue it with fixloop repair --resume {run_id}" if run_id else ""
        typer.echo(f"fixloop: interrupted{hint}", err=True)
        raise typer.Exit(130)
    progress.stop()
    if as_json:
        report = Path(state.inputs.out_dir) / "report.json"
        sys.stdout.write(report.read_text(encoding="utf-8") if report.exists() else "{}\n")
    if not state.finished:
        typer.echo(f"fixloop: run {state.run_id} is paused before a paid repair; continue it with "
                   f"fixloop repair --resume {state.run_id}", err=True)
        raise typer.Exit(EXIT_FAIL)
    raise typer.Exit(VERDICT_EXIT.get(state.verdict or "error", EXIT_CHECK_ERROR))


@app.command("runs")
def list_runs_command() -> None:
    """List the repair runs in the checkpoint file, newest first (ids for --resume)."""
    from rich.console import Console
    from rich.table import Table

    from fixloop.agent.runner import checkpoint_path, list_runs

    from fixloop.checks.images import InputError

    try:
        runs = list_runs()
    except InputError as exc:
        _fail_input(str(exc))
    table = Table(title=f"fixloop runs ({checkpoint_path()})")
    table.add_column("run id", no_wrap=True)
    for column in ("image", "backend", "status", "passes", "spent", "folder"):
        table.add_column(column, overflow="fold")
    for state in runs:
        status = (state.stop_reason or "finished") if state.finished else "interrupted: --resume it"
        table.add_row(state.run_id, Path(state.inputs.image).name, state.inputs.backend, status,
                      str(state.spend.passes), f"${state.spend.usd:.4f}", state.inputs.out_dir)
    Console().print(table)


def _mask_for(path: Path, decoded, decoded_source):
    """--mask at the image's size (a mask at the source's size is scaled when the framing matches)."""
    import cv2
    import numpy as np

    from fixloop.checks.images import InputError, load_mask

    region = load_mask(path)
    width, height = decoded.size
    if region.shape != (height, width):
        sw, sh = decoded_source.size if decoded_source is not None else (0, 1)
        if region.shape != (sh, sw) or abs((width / height) / (sw / sh) - 1) > 0.03:
            raise InputError(f"mask {str(path)!r} is {region.shape[1]}x{region.shape[0]} but the image is "
                             f"{width}x{height}: export the mask at the image's size")
        region = cv2.resize(region.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    if not region.any():
        raise InputError(f"mask {str(path)!r} is empty (no white pixels): paint the area to repair in white")
    return region


def _checks_for(tool: str, template: Optional[str], parameters: dict) -> List[str]:
    """The checks whose finding supplies a repair's region when --mask is missing (none: no check)."""
    from fixloop.checks.base import DEFECT_KINDS
    from fixloop.checks.images import InputError

    if tool == "local.expand_canvas":
        return [] if ("aspect" in parameters or "extend" in parameters) else [FINDING_CHECKS[tool]]
    if tool in FINDING_CHECKS:
        return [FINDING_CHECKS[tool]]
    if tool == "local.crop_first":
        return [FINDING_CHECKS[parameters["repair"]]] if parameters.get("repair") in FINDING_CHECKS else []
    if template is None or tool.startswith("local."):
        return []
    kinds = [k.name for k in DEFECT_KINDS.values() if k.template == template]
    if not kinds:
        raise InputError(f"no check reports defects for template {template!r}: pass --mask")
    return kinds


def main() -> None:
    app()


if __name__ == "__main__":
    main()
