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
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print the verdict line only"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="folder for report.json and finding masks"),
) -> None:
    """Inspect CANDIDATE for defects; compare it with --source when given."""
    from fixloop.agent import service
    from fixloop.checks.images import InputError

    try:
        if out is not None:
            service.check_report_folder(out)  # before any work: nothing is computed for a folder that cannot take it
        report = service.check(candidate, source, mask, reference, history, policy=policy, only=only or None)
        if out is not None:
            service.write_check_report(report, out, protected=[candidate, source, mask, policy, *reference, *history])
    except InputError as exc:
        _fail_input(str(exc))

    if as_json:
        sys.stdout.write(report.to_json() + "\n")
    else:
        from fixloop.apps.render import print_report, print_verdict

        (print_verdict if quiet else print_report)(report)
    raise typer.Exit(VERDICT_EXIT[report.verdict])


@app.command("checks")
def list_checks() -> None:
    """List the registered checks with their stage, priority and required inputs."""
    from rich.console import Console
    from rich.text import Text

    from fixloop.apps.text import columns, wrap
    from fixloop.checks.base import REGISTRY
    from fixloop.checks.policy import load_policy

    console = Console(highlight=False)
    policy = load_policy()
    specs = list(REGISTRY)
    name_width = max(len(spec.name) for spec in specs)
    console.print(Text(columns(["check", "priority", "stage", "needs"], [name_width, 8, 9, 0]), style="bold"),
                  soft_wrap=True)
    for spec in specs:
        row = [spec.name, policy.params(spec.name).priority.value, spec.kind.stage.value,
               ", ".join(spec.requires) or "-"]
        console.print(columns(row, [name_width, 8, 9, 0]), soft_wrap=True)
        for line in wrap(spec.description, console.width, 4):
            console.print(Text(line, style="dim"), soft_wrap=True)


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


@app.command()
def fix(
    image: Path = typer.Argument(..., help="the image to repair"),
    tool: str = typer.Option(..., "--tool", "-t", help="repair tool, e.g. local.exposure_color, local.defringe, openai"),
    template: Optional[str] = typer.Option(None, "--template", help="repair template (hands, face, texture-edge, ...; "
                                           "fixloop templates lists them)"),
    slot: List[str] = typer.Option([], "--slot", help="fill a template slot NAME=TEXT (repeatable), e.g. "
                                    "--slot hand=\"the left hand\"; fixloop templates lists each template's slots"),
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
    from fixloop.agent import service
    from fixloop.checks.images import InputError

    try:
        target = service.fix_target(image, out, mask_out, [image, source, mask, policy, *reference])
        outcome = service.fix(image, tool, template=template, slots=service.parse_slots(slot), prompt=prompt,
                              negative_prompt=negative_prompt, source=source, mask=mask, references=reference,
                              parameters=service.parse_params(param), policy=policy)
        if outcome.result is None:
            typer.echo(f"{', '.join(outcome.checked)}: no finding on {image}, nothing to repair; nothing written")
            raise typer.Exit(EXIT_PASS)
        for note in service.write_fix(outcome, target, mask_out):
            typer.echo(f"fixloop: {note}", err=True)
    except InputError as exc:
        _fail_input(str(exc))
    except service.CheckFailed as exc:
        typer.echo(f"fixloop: {exc}", err=True)
        raise typer.Exit(EXIT_CHECK_ERROR)

    result = outcome.result
    h, w = result.image.shape[:2]
    typer.echo(f"{result.tool}: wrote {target} ({w}x{h}) in {result.seconds:.2f} s, cost ${result.cost_usd:.4f}")
    raise typer.Exit(EXIT_PASS)


@app.command("templates")
def list_templates() -> None:
    """List the repair templates, what each repairs and the slots --slot can fill."""
    from rich.console import Console
    from rich.markup import escape

    from fixloop.agent import service

    import textwrap

    console = Console(highlight=False)
    width = max(40, min(console.width, 100))

    def wrapped(text: str, indent: int) -> str:
        return escape(textwrap.fill(text, width, initial_indent=" " * indent, subsequent_indent=" " * indent))

    for info in service.templates():
        console.print(f"[bold]{info.name}[/bold]  ({', '.join(info.kinds) or '-'})")
        console.print(wrapped(info.summary, 2))
        for name, wants in info.slots.items():
            needed = " [yellow](needed)[/yellow]" if name in info.required else ""
            console.print(f"    --slot {name}=TEXT{needed}")
            console.print(wrapped(wants, 8))


@app.command("backends")
def list_backends(
    policy: Optional[Path] = typer.Option(None, "--policy", "-p", help="TOML policy whose backend settings to use"),
) -> None:
    """List the repair backends: whether each can run here, what it reads, its policy settings."""
    import textwrap

    from rich.console import Console
    from rich.markup import escape

    from fixloop.agent import service
    from fixloop.checks.images import InputError

    try:
        found = service.backends(policy)
    except InputError as exc:
        _fail_input(str(exc))
    console = Console(highlight=False)
    width = max(40, min(console.width, 100))

    def wrapped(text: str, indent: int) -> str:
        return escape(textwrap.fill(text, width, initial_indent=" " * indent, subsequent_indent=" " * indent))

    for info in found:
        state = "[green]ready[/green]" if info.ready == "ready" else "[yellow]not ready[/yellow]"
        console.print(f"[bold]{info.name}[/bold]  {'paid' if info.paid else 'free'} · {state}")
        console.print(wrapped(info.description, 2))
        if info.ready != "ready":
            console.print(wrapped(info.ready, 2))
        for name, wants in info.env.items():
            console.print(wrapped(f"${name}: {wants}", 4))
        for name, wants in info.settings.items():
            console.print(wrapped(f"[repair.backends.{info.name}] {name}: {wants}", 4))


# ---- repair: the loop -------------------------------------------------------------------------------


@app.command()
def repair(
    image: Optional[Path] = typer.Argument(None, help="the image to repair (not needed with --resume)"),
    source: Optional[Path] = typer.Option(None, "--source", "-s", help="the image before the broken edit"),
    mask: Optional[Path] = typer.Option(None, "--mask", "-m", help="edit mask: white = where the edit was allowed"),
    reference: List[Path] = typer.Option([], "--reference", "-r", help="identity / style reference (repeatable)"),
    backend: str = typer.Option("local", "--backend", "-b", help="local (offline, free), openai (GPT Image), diffusers, "
                                "...: fixloop backends lists them"),
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
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress; print the final verdict line only"),
) -> None:
    """Repair IMAGE in a checked loop: inspect, fix the worst defect, verify, repeat; write final, report, review."""
    from fixloop.agent import service
    from fixloop.apps.interrupt import exit_soon_after_ctrl_c
    from fixloop.apps.progress import ConsoleProgress, ask_approval
    from fixloop.checks.images import InputError

    if (image is None) == (resume is None):
        _fail_input("give IMAGE to start a run, or --resume RUN_ID to continue one (not both)")
    from rich.console import Console

    # --quiet silences progress, but never a question the run must ask (--approve)
    progress = ConsoleProgress(Console(stderr=True, highlight=False, soft_wrap=True, quiet=quiet and not approve))
    approver = ask_approval(progress.console) if approve else None
    run_id = resume

    def interrupted_line() -> str:
        hint = f"; continue it with fixloop repair --resume {run_id}" if run_id else ""
        return f"fixloop: interrupted{hint}"

    exit_soon_after_ctrl_c(interrupted_line)  # a second way out, should unwinding hang
    try:
        if resume is not None:
            state = service.resume_repair(resume, progress=progress, approver=approver or ask_approval(progress.console),
                                          max_passes=budget_passes, max_usd=budget_usd, max_seconds=budget_seconds)
        else:
            run_id = service.new_run_id()
            order = service.RepairOrder(
                image=image, source=source, mask=mask, references=reference, backend=backend, model=model,
                max_passes=budget_passes, max_usd=budget_usd, max_seconds=budget_seconds, out=out,
                approve=approve, polish=polish, policy=policy, run_id=run_id)
            state = service.start_repair(order, progress=progress, approver=approver)
    except InputError as exc:
        progress.stop()
        _fail_input(str(exc))
    except OSError as exc:
        progress.stop()
        _fail_input(f"could not write the run folder ({exc.strerror}: {exc.filename}): choose a writable --out")
    except KeyboardInterrupt:
        progress.stop()
        typer.echo(interrupted_line(), err=True)
        raise typer.Exit(130)
    progress.stop()
    if as_json:
        report = Path(state.inputs.out_dir) / "report.json"
        sys.stdout.write(report.read_text(encoding="utf-8") if report.exists() else "{}\n")
    if quiet and state.finished:
        typer.echo(f"verdict: {(state.verdict or 'error').upper()}  {state.spend.passes} pass(es) · "
                   f"${state.spend.usd:.4f} · {state.stop_reason}")
    if not state.finished:
        typer.echo(f"fixloop: run {state.run_id} is paused before a paid repair; continue it with "
                   f"fixloop repair --resume {state.run_id}", err=True)
        raise typer.Exit(EXIT_FAIL)
    raise typer.Exit(VERDICT_EXIT.get(state.verdict or "error", EXIT_CHECK_ERROR))


@app.command("runs")
def list_runs_command() -> None:
    """List the repair runs in the checkpoint file, newest first (ids for --resume)."""
    from rich.console import Console
    from rich.text import Text

    from fixloop.agent import service
    from fixloop.apps.text import columns, shorten_left, wrap
    from fixloop.checks.images import InputError

    try:
        runs = service.list_runs()
    except InputError as exc:
        _fail_input(str(exc))
    console = Console(highlight=False)
    width = console.width
    for line in wrap(f"fixloop runs in {service.checkpoint_path()}", width):
        console.print(Text(line, style="bold"), soft_wrap=True)
    if not runs:
        console.print("no runs yet", soft_wrap=True)
    for state in runs:
        status = (state.stop_reason or "finished") if state.finished else "interrupted: --resume it"
        head = columns([state.run_id, state.inputs.backend, f"{state.spend.passes} pass(es)",
                        f"${state.spend.usd:.4f}", state.verdict or "-"], [22, 9, 10, 8, 0])
        console.print(Text(head, style="cyan"), soft_wrap=True)
        image = shorten_left(state.inputs.image, width - 12)
        folder = shorten_left(state.inputs.out_dir, width - 12)
        for line in [f"    image   {image}", f"    folder  {folder}", *wrap(status, width, 4)]:
            console.print(line, soft_wrap=True)


@app.command()
def gate(
    inputs: Optional[List[str]] = typer.Argument(None, help="candidate images: files, folders or globs "
                                                 "(or give --manifest)"),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="CSV or JSONL with columns id, candidate, source, "
                                            "mask, reference (';' between references); paths relative to its folder"),
    sources: Optional[Path] = typer.Option(None, "--sources", help="folder of sources, paired with candidates by file stem"),
    masks: Optional[Path] = typer.Option(None, "--masks", help="folder of edit masks, paired with candidates by file stem"),
    policy: Optional[Path] = typer.Option(None, "--policy", "-p", help="TOML policy laid over the defaults"),
    fail_on: Optional[str] = typer.Option(None, "--fail-on", help="priorities that fail an image, e.g. P0,P1 "
                                          "(default: the policy's)"),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="workers, each loading the models once "
                                       "(default: the machine's cores)"),
    engine: str = typer.Option("local", "--engine", help="local (worker processes) or ray (Ray Data actor pool)"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to run on (default: a local "
                                              "Ray started for the run)"),
    out: Path = typer.Option(Path("fixloop-gate"), "--out", "-o", help="folder for results.jsonl, summary.json, "
                             "junit.xml and report.html"),
    resume: bool = typer.Option(False, "--resume", help="skip images already in --out's results.jsonl with the same "
                                "files and policy"),
    as_json: bool = typer.Option(False, "--json", help="print summary.json on stdout (progress stays on stderr)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar; print the verdict line only"),
) -> None:
    """Check many images: pass/fail per image, results.jsonl, summary.json, junit.xml and report.html in --out.

    Folders pair by file stem: edits/a.jpg takes sources/a.* and masks/a.*; an unpaired candidate is checked alone.

    Exit codes: 0 every image passed, 1 one failed, 2 bad usage, 3 one could not be checked (3 wins).
    """
    import json

    from fixloop.apps import gate as gating
    from fixloop.checks.images import InputError

    options = gating.GateOptions(inputs=inputs or [], manifest=manifest, sources=sources, masks=masks, policy=policy,
                                 fail_on=fail_on, jobs=jobs, engine=engine, ray_address=ray_address, out=out,
                                 resume=resume)
    try:
        plan = gating.prepare(options)
        outcome = gating.run(plan, progress=None if quiet else gating.GateProgress())
    except InputError as exc:
        _fail_input(str(exc))
    except gating.GateAborted as exc:
        typer.echo(f"fixloop: {exc}", err=True)
        raise typer.Exit(EXIT_CHECK_ERROR)
    except KeyboardInterrupt:
        typer.echo(f"fixloop: interrupted; continue with the same command and --resume (--out {out})", err=True)
        raise typer.Exit(130)
    if as_json:
        sys.stdout.write(json.dumps(outcome.summary, indent=2, ensure_ascii=False) + "\n")
    elif quiet:
        gating.print_verdict(outcome)
    else:
        gating.print_summary(outcome)
    raise typer.Exit(outcome.summary["exit_code"])


@app.command()
def chat(
    image: Optional[Path] = typer.Argument(None, help="the edited image to talk about (or attach one later)"),
    source: Optional[Path] = typer.Option(None, "--source", "-s", help="the image before the edit"),
    reference: List[Path] = typer.Option([], "--reference", "-r", help="identity / style reference (repeatable)"),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="local, openai or diffusers (default: openai "
                                          "when OPENAI_API_KEY is set, else local)"),
    model: Optional[str] = typer.Option(None, "--model", help="GPT Image model, or the diffusers checkpoint"),
    budget_usd: Optional[float] = typer.Option(None, "--budget-usd", min=0.0, help="US dollars at most for paid repairs"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="folder for the images it makes "
                                       "(default: fixloop-chat/CONVERSATION_ID)"),
    conversation: Optional[str] = typer.Option(None, "--conversation", "-c", help="continue this conversation"),
) -> None:
    """Talk to fixloop: check, repair, adjust the light, undo; one message per line when stdin is not a terminal."""
    from fixloop.apps.chat import ChatUsageError, run_chat
    from fixloop.checks.images import InputError

    try:
        code = run_chat(image, source, reference, backend=backend, budget_usd=budget_usd, out=out,
                        conversation=conversation, model=model)
    except (ChatUsageError, InputError) as exc:
        _fail_input(str(exc))
    raise typer.Exit(code)


@app.command()
def slack(
    http: bool = typer.Option(False, "--http", help="HTTP mode: events at /slack/events, verified with "
                              "SLACK_SIGNING_SECRET (default: Socket Mode with SLACK_APP_TOKEN)"),
    port: int = typer.Option(3000, "--port", min=1, max=65535, help="port of the HTTP mode"),
    backend: Optional[str] = typer.Option(None, "--backend", "-b", help="local, openai or diffusers (default: openai "
                                          "when OPENAI_API_KEY is set, else local)"),
    model: Optional[str] = typer.Option(None, "--model", help="GPT Image model, or the diffusers checkpoint"),
    budget_usd: Optional[float] = typer.Option(None, "--budget-usd", min=0.0, help="US dollars at most per conversation"),
    out: Path = typer.Option(Path("fixloop-slack"), "--out", "-o", help="folder for downloads and the images it makes"),
) -> None:
    """Run the Slack bot: a mention or DM with an image gets the verdict, the review sheet and repairs in its thread."""
    from fixloop.apps.slack import SlackSetupError, run_bot
    from fixloop.checks.images import InputError

    try:
        run_bot(http=http, port=port, backend=backend, model=model, budget_usd=budget_usd, out=out)
    except (SlackSetupError, InputError) as exc:
        _fail_input(str(exc))


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (loopback by default)"),
    port: int = typer.Option(8000, "--port", help="port to listen on"),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="repair runs that go on at once"),
    key_file: Optional[Path] = typer.Option(None, "--key-file", help="API keys, one a line (else FIXLOOP_API_KEYS)"),
) -> None:
    """Start the HTTP API and the review pages (every /v1 route needs Authorization: Bearer KEY)."""
    from fixloop.checks.images import InputError

    try:
        from fixloop.apps.http import serve as run_server

        run_server(host=host, port=port, workers=workers, key_file=key_file)
    except InputError as exc:
        _fail_input(str(exc))


def main(argv: list[str] | None = None) -> None:
    """The console script. Usage errors (no argument, an unknown option, a value out of range) are one
    ``fixloop: ...`` line and exit 2, like every other refusal; ``--help`` is Typer's own."""
    # Typer 0.29 carries its own copy of click; its usage errors are these classes
    from typer._click.exceptions import NoArgsIsHelpError, UsageError

    from fixloop.checks.models import quiet_native_logs

    quiet_native_logs()  # this process owns stderr: MediaPipe's native notes are filtered out, once

    try:
        code = app(args=argv, standalone_mode=False, prog_name="fixloop")
    except NoArgsIsHelpError:  # `fixloop` alone: Typer has printed the help
        raise SystemExit(EXIT_BAD_INPUT) from None
    except UsageError as exc:
        command = exc.ctx.command_path if exc.ctx else "fixloop"
        typer.echo(f"fixloop: {exc.format_message()} (see {command} --help)", err=True)
        raise SystemExit(EXIT_BAD_INPUT) from None
    except typer.Abort:
        typer.echo("fixloop: interrupted", err=True)
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
