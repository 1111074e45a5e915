"""`fixloop gate`: many images through the checks, on worker processes or on Ray, with a report a
pipeline reads (results.jsonl, summary.json, junit.xml) and one a person reads (report.html).

    plan = prepare(GateOptions(inputs=["edits/"], sources="originals/", masks="masks/", out="gate"))
    outcome = run(plan, progress=GateProgress())
    outcome.summary["exit_code"]   # 0 all passed, 1 some failed, 3 some could not be checked

The steps: find the inputs (a manifest, or candidate files paired with --sources / --masks by file
stem: :func:`fixloop.agent.batch.pair_by_stem`); check the output folder (never an input, never
another run unless --resume); keep the rows a resumed run may keep; run the rest on the engine,
appending each row to results.jsonl as it arrives (flushed, so a kill loses only the images in
flight); then write summary.json, junit.xml and report.html, each atomically.

Engines: ``local`` runs N spawned worker processes (MediaPipe is not fork-safe), each building one
:class:`~fixloop.agent.batch.GateChecker` (every model loaded once) and checking one image at a
time; a worker that dies (a decoder crash) costs an error row for its image and is replaced.
``ray`` runs the same checker as Ray Data ``map_batches`` over an actor pool of N actors, on a local
Ray started for the run or on the cluster at ``--ray-address`` (there the paths must be readable
from every node).
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from fixloop.agent import batch
from fixloop.agent.batch import GateItem
from fixloop.checks.images import InputError

ENGINES = ("local", "ray")
OUTPUT_NAMES = ("results.jsonl", "summary.json", "junit.xml", "report.html")
RowSink = Callable[[dict[str, Any]], None]
# glog and TensorFlow builds that read these stay quiet in the workers (set unless the user set them)
QUIET_NATIVE = {name: os.environ.get(name, value) for name, value in (("GLOG_minloglevel", "2"),
                                                                         ("TF_CPP_MIN_LOG_LEVEL", "3"))}


class GateAborted(Exception):
    """The run cannot go on at all (no worker could start): one line, exit 3."""


@dataclass
class GateOptions:
    """The command line, as given."""

    inputs: Sequence[str] = ()
    manifest: str | Path | None = None
    sources: str | Path | None = None
    masks: str | Path | None = None
    policy: str | Path | None = None
    fail_on: str | None = None
    jobs: int | None = None
    engine: str = "local"
    ray_address: str | None = None
    out: str | Path = "fixloop-gate"
    resume: bool = False


@dataclass
class GatePlan:
    """A validated run: the items in input order and everything the engines need."""

    items: list[GateItem]
    out: Path
    policy: str | None  # the policy file (absolute) or None for the default
    policy_name: str
    fail_on: list[str]
    digest: str
    jobs: int
    engine: str
    ray_address: str | None
    resume: bool
    pairing: dict[str, list[str]] | None = None
    manifest: str | None = None

    def output(self, name: str) -> Path:
        return self.out / name


@dataclass
class GateOutcome:
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    outputs: dict[str, Path] = field(default_factory=dict)


# ---- 1. inputs and output folder --------------------------------------------------------------------


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def collect_candidates(inputs: Sequence[str]) -> list[Path]:
    """Candidate files from files, folders (their image files, not sub-folders) and globs, in order,
    each once. An input that names nothing is bad usage."""
    found: list[Path] = []
    seen: set[Path] = set()
    for spec in inputs:
        path = Path(spec).expanduser()
        if path.is_dir():
            files = sorted(f for f in path.iterdir() if f.is_file() and batch.is_image_file(f))
        elif any(ch in spec for ch in "*?["):
            files = sorted(Path(m) for m in glob.glob(os.path.expanduser(spec), recursive=True)
                           if Path(m).is_file() and batch.is_image_file(Path(m)))
        elif path.is_file():
            files = [path]  # named explicitly: checked even with an odd suffix (an error row if unreadable)
        else:
            raise InputError(f"input {spec!r} does not exist: give image files, folders or globs")
        if not files:
            raise InputError(f"input {spec!r} holds no images ({', '.join(batch.IMAGE_SUFFIXES)})")
        for file in files:
            resolved = file.resolve()
            if resolved not in seen:
                seen.add(resolved)
                found.append(resolved)
    return found


def _folder_images(folder: str | Path, flag: str) -> list[Path]:
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise InputError(f"{flag} {str(folder)!r} is not a folder: give the folder that holds them")
    return sorted(f.resolve() for f in path.iterdir() if f.is_file() and batch.is_image_file(f))


def prepare(options: GateOptions) -> GatePlan:
    """Validate the command line and find the inputs; every problem is one InputError line."""
    inputs = list(options.inputs or ())
    if options.engine not in ENGINES:
        raise InputError(f"--engine {options.engine!r}: use local or ray")
    if options.ray_address and options.engine != "ray":
        raise InputError("--ray-address needs --engine ray")
    if options.engine == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise InputError("--engine ray needs Ray: pip install 'fixloop[ray]'")
    jobs = default_jobs() if options.jobs is None else options.jobs
    if jobs < 1:
        raise InputError(f"--jobs {jobs}: give at least 1 worker")
    fail_on = batch.parse_fail_on(options.fail_on)
    policy = batch.gate_policy(options.policy, fail_on)

    pairing = None
    if options.manifest is not None:
        if inputs:
            raise InputError("give a --manifest or INPUT files/folders, not both")
        if options.sources is not None or options.masks is not None:
            raise InputError("--sources and --masks pair folder inputs; a manifest names its source and mask columns")
        items = batch.read_manifest(options.manifest)
    elif inputs:
        candidates = collect_candidates(inputs)
        sources = None if options.sources is None else _folder_images(options.sources, "--sources")
        masks = None if options.masks is None else _folder_images(options.masks, "--masks")
        folders = {c.parent for c in candidates}
        for flag, folder in (("--sources", options.sources), ("--masks", options.masks)):
            if folder is not None and Path(folder).expanduser().resolve() in folders:
                raise InputError(f"{flag} {str(folder)!r} is also an input folder: keep candidates, sources "
                                 "and masks in separate folders")
        paired = batch.pair_by_stem(candidates, sources, masks)
        items, pairing = paired.items, paired.as_dict()
    else:
        raise InputError("nothing to check: give INPUT files, folders or globs, or --manifest FILE")

    out = Path(options.out).expanduser().resolve()
    _check_out(out, items, [options.manifest, options.policy], options.resume)
    return GatePlan(items=items, out=out, policy=None if options.policy is None else str(Path(options.policy).resolve()),
                    policy_name=policy.name, fail_on=[p.value for p in policy.gate.fail_on],
                    digest=batch.policy_digest(policy), jobs=jobs, engine=options.engine,
                    ray_address=options.ray_address, resume=options.resume, pairing=pairing,
                    manifest=None if options.manifest is None else str(Path(options.manifest).resolve()))


def _check_out(out: Path, items: Sequence[GateItem], others: Sequence[str | Path | None], resume: bool) -> None:
    """--out is a folder fixloop may write: no output lands on an input; another run needs --resume."""
    given = {Path(p).resolve() for item in items for p in item.paths()}
    given |= {Path(p).resolve() for p in others if p is not None}
    if out in given or (out.exists() and not out.is_dir()):
        raise InputError(f"--out {str(out)!r} is a file: give a folder for the gate's outputs")
    for name in OUTPUT_NAMES:
        if (out / name) in given:
            raise InputError(f"--out {str(out)!r} would overwrite the input {str(out / name)!r}: choose another folder")
    results = out / "results.jsonl"
    if not resume and results.is_file() and results.stat().st_size > 0:
        raise InputError(f"--out {str(out)!r} already holds a gate run: pass --resume to continue it, "
                         "or choose another folder")


# ---- 2. resume ---------------------------------------------------------------------------------------


def _keys(items: Sequence[GateItem], digest: str) -> dict[str, str]:
    """Resume keys, hashed on a few threads (hashlib releases the GIL on large files)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip((i.id for i in items), pool.map(lambda i: batch.input_key(i, digest), items)))


def _kept_rows(plan: GatePlan) -> list[dict[str, Any]]:
    """Rows of the earlier run whose inputs and policy are unchanged; results.jsonl is rewritten to
    hold just those (a half-written last line, rows of images no longer given and stale rows go)."""
    from fixloop.checks.report import atomic_path

    results = plan.output("results.jsonl")
    if not plan.resume or not results.is_file():
        return []
    rows, _ = batch.read_rows(results.read_text(encoding="utf-8", errors="replace"))
    latest = {row["id"]: row for row in rows if isinstance(row.get("id"), str)}
    wanted = [item for item in plan.items if item.id in latest]
    keys = _keys(wanted, plan.digest)
    kept = [latest[item.id] for item in wanted if latest[item.id].get("key") == keys[item.id]]
    with atomic_path(results) as tmp:
        Path(tmp).write_text("".join(_line(row) for row in kept), encoding="utf-8")
    return kept


def _line(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"


# ---- 3. engines ---------------------------------------------------------------------------------------


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables while a worker process starts (it inherits them), then restore."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _worker_main(conn, policy: str | None, fail_on: list[str], threads: int) -> None:
    """A local worker: build one checker (every model loaded once), then check items until told to stop."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what Ctrl-C stops
    _quiet_worker_stderr()
    try:
        checker = batch.GateChecker(policy, fail_on, threads=threads)
    except BaseException as exc:  # noqa: BLE001 - reported to the driver, which stops the run
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", checker.stats()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the driver is gone
            return
        if message is None:
            return
        row = checker.check(GateItem.from_dict(message))
        row["_worker"] = checker.stats()
        conn.send(("row", row))


def _quiet_worker_stderr() -> None:
    """A worker is a process the gate owns: keep MediaPipe's native start-up notes (one set per model and
    worker) off the terminal. The checks' own filter is used where the checks offer one; otherwise
    file descriptor 2 goes to /dev/null while Python's stderr keeps the terminal (tracebacks still show).
    FIXLOOP_NATIVE_LOGS=1 keeps the notes."""
    if os.environ.get("FIXLOOP_NATIVE_LOGS") == "1":
        return
    from fixloop.checks import models

    quiet = getattr(models, "quiet_native_logs", None)
    if quiet is not None:
        quiet()
        return
    try:
        sys.stderr.flush()
        terminal = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        sys.stderr = terminal
    except (OSError, ValueError, AttributeError):
        pass


@dataclass
class _Slot:
    process: Any
    conn: Any
    item: GateItem | None = None
    ready: bool = False


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


def run_local(plan: GatePlan, items: Sequence[GateItem], sink: RowSink) -> None:
    """Check ``items`` on ``plan.jobs`` spawned worker processes, one image in flight per worker."""
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")
    threads = batch.worker_threads(plan.jobs)
    pending = deque(items)
    slots: list[_Slot] = []
    startup_deaths = 0

    def start() -> None:
        parent, child = context.Pipe()
        with _environment({**batch.thread_environment(threads), **QUIET_NATIVE}):
            process = context.Process(target=_worker_main, args=(child, plan.policy, plan.fail_on, threads),
                                      daemon=True, name="fixloop-gate-worker")
            process.start()
        child.close()
        slots.append(_Slot(process, parent))

    def feed(slot: _Slot) -> None:
        if pending:
            slot.item = pending.popleft()
            slot.conn.send(slot.item.to_dict())
        else:
            slot.item = None
            slot.conn.send(None)
            retire(slot)

    def retire(slot: _Slot) -> None:
        slot.process.join(timeout=10)
        if slot.process.is_alive():
            slot.process.terminate()
        slot.conn.close()
        slots.remove(slot)

    def died(slot: _Slot) -> None:
        nonlocal startup_deaths
        slot.process.join(timeout=5)
        why = _death(slot.process.exitcode)
        retire(slot)
        if slot.item is not None:
            sink(batch.error_row(slot.item, f"the worker checking this image died ({why}); the run went on",
                                 batch.input_key(slot.item, plan.digest)))
        elif not slot.ready:
            startup_deaths += 1
            if startup_deaths >= 3:
                raise GateAborted(f"gate workers die while starting ({why}): run fixloop check on one image to see why")
        if pending and len(slots) < plan.jobs:
            start()

    try:
        for _ in range(min(plan.jobs, len(pending))):
            start()
        while slots:
            by_conn = {slot.conn: slot for slot in slots}
            by_sentinel = {slot.process.sentinel: slot for slot in slots}
            for ready in wait([*by_conn, *by_sentinel]):
                slot = by_conn.get(ready) or by_sentinel.get(ready)
                if slot not in slots:
                    continue
                if ready in by_sentinel and slot.conn.poll():
                    ready = slot.conn  # a last message is still in the pipe: read it first
                if ready is not slot.conn:
                    died(slot)
                    continue
                try:
                    kind, payload = slot.conn.recv()
                except (EOFError, OSError):
                    died(slot)
                    continue
                if kind == "failed":
                    raise GateAborted(f"a gate worker could not start: {payload}")
                if kind == "row":
                    sink(payload)
                slot.ready = True
                feed(slot)
    finally:
        for slot in list(slots):
            if slot.process.is_alive():
                slot.process.terminate()
            slot.process.join(timeout=5)


class RayChecker:
    """A Ray Data actor: one GateChecker (every model loaded once per actor); a batch of JSON items in,
    a batch of JSON rows out."""

    def __init__(self, policy: str | None, fail_on: list[str], threads: int):
        self.checker = batch.GateChecker(policy, fail_on, threads=threads)

    def __call__(self, items: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        rows = []
        for text in items["item"]:
            row = self.checker.check(GateItem.from_dict(json.loads(str(text))))
            row["_worker"] = self.checker.stats()
            rows.append(json.dumps(row, ensure_ascii=False))
        return {"row": np.array(rows, dtype=object)}


@contextmanager
def _native_stderr_quiet() -> Iterator[None]:
    """Ray's C++ core writes notes for its own developers to file descriptor 2 (e.g. about actor
    restarts); send those to /dev/null while Python's own stderr (the progress bar, warnings) keeps the
    terminal. FIXLOOP_NATIVE_LOGS=1 keeps them."""
    if os.environ.get("FIXLOOP_NATIVE_LOGS") == "1":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    previous = sys.stderr
    terminal = os.fdopen(os.dup(saved), "w", buffering=1, encoding=getattr(previous, "encoding", None) or "utf-8",
                         errors="replace")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    sys.stderr = terminal
    try:
        yield
    finally:
        terminal.flush()
        sys.stderr = previous
        os.dup2(saved, 2)
        for fd in (saved, devnull):
            os.close(fd)
        terminal.close()


def run_ray(plan: GatePlan, items: Sequence[GateItem], sink: RowSink) -> None:
    """Check ``items`` as Ray Data ``map_batches`` over an actor pool of ``plan.jobs`` actors."""
    import logging

    import ray

    threads = 1 if plan.ray_address else batch.worker_threads(plan.jobs)
    started_here = not ray.is_initialized()
    with _native_stderr_quiet():
        if started_here:
            with _environment({"RAY_USAGE_STATS_ENABLED": "0"}):
                ray.init(address=plan.ray_address, num_cpus=None if plan.ray_address else max(plan.jobs, default_jobs()),
                         include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                         configure_logging=True)
        try:
            _ray_rows(plan, items, sink, threads)
        finally:
            if started_here:
                ray.shutdown()


def _ray_rows(plan: GatePlan, items: Sequence[GateItem], sink: RowSink, threads: int) -> None:
    """The dataset: one JSON item per row in, one JSON result row per row out, as they finish."""
    import logging

    import ray.data

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    # One block per image: Ray Data hands a block's rows back together, and a row must reach
    # results.jsonl as soon as its image is checked (a kill loses only the images in flight). The cost
    # is a few ms per image, against a check's hundreds.
    dataset = ray.data.from_items([{"item": json.dumps(item.to_dict())} for item in items],
                                  override_num_blocks=len(items))
    checked = dataset.map_batches(
        RayChecker, fn_constructor_args=(plan.policy, plan.fail_on, threads), batch_size=1,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=min(plan.jobs, len(items))), num_cpus=1,
        runtime_env={"env_vars": batch.thread_environment(threads)})
    for record in checked.iter_rows():
        sink(json.loads(record["row"]))


# ---- 4. the run -----------------------------------------------------------------------------------------


def run(plan: GatePlan, progress: "GateProgress | None" = None) -> GateOutcome:
    """Check every item not already done and write the four outputs; returns the summary."""
    started = time.perf_counter()
    try:
        plan.out.mkdir(parents=True, exist_ok=True)
        kept = _kept_rows(plan)
        results = plan.output("results.jsonl")
        if not kept:
            results.write_text("", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"could not write to --out {str(plan.out)!r} ({exc.strerror}): choose a writable folder") from None
    done = {row["id"] for row in kept}
    todo = [item for item in plan.items if item.id not in done]
    workers: dict[int, dict[str, Any]] = {}
    checked = 0
    arrivals: list[float] = []  # when the first and the latest row came in
    if progress is not None:
        progress.start(len(plan.items), kept)

    with open(results, "a", encoding="utf-8") as handle:
        def sink(row: dict[str, Any]) -> None:
            nonlocal checked
            worker = row.pop("_worker", None)
            if worker is not None:  # its latest stats, and its memory after its first image (to see growth)
                first = workers.get(worker["pid"], {}).get("rss_mb_first_image", worker.get("rss_mb"))
                workers[worker["pid"]] = {**worker, "rss_mb_first_image": first}
            handle.write(_line(row))
            handle.flush()
            checked += 1
            arrivals[min(len(arrivals), 1):] = [time.perf_counter()]
            if progress is not None:
                progress.advance(row)

        try:
            if todo:
                (run_ray if plan.engine == "ray" else run_local)(plan, todo, sink)
        finally:
            if progress is not None:
                progress.stop()
    seconds = time.perf_counter() - started
    timing = {"seconds_to_first_row": round(arrivals[0] - started, 3) if arrivals else None,
              "steady_images_per_second": (round((checked - 1) / (arrivals[-1] - arrivals[0]), 3)
                                           if len(arrivals) == 2 and arrivals[-1] > arrivals[0] else None)}
    return finish(plan, checked=checked, seconds=seconds, workers=list(workers.values()), timing=timing)


def finish(plan: GatePlan, checked: int, seconds: float, workers: list[dict[str, Any]],
           timing: dict[str, Any] | None = None) -> GateOutcome:
    """Read results.jsonl back (the whole run, resumed rows included) and write the summary, the JUnit
    file and the HTML report."""
    from fixloop.apps.gate_report import write_report
    from fixloop.checks.report import atomic_path

    rows_by_id = {row["id"]: row for row in batch.read_rows(plan.output("results.jsonl").read_text(encoding="utf-8"))[0]}
    rows = [rows_by_id[item.id] for item in plan.items if item.id in rows_by_id]
    summary = batch.summarise(rows)
    summary.update({
        "checked": checked,
        "resumed": len(rows) - checked,
        "seconds": round(seconds, 3),
        "images_per_second": round(checked / seconds, 3) if seconds > 0 else None,
        **(timing or {}),
        "engine": plan.engine,
        "jobs": plan.jobs,
        "policy": {"name": plan.policy_name, "fail_on": plan.fail_on, "digest": plan.digest},
        "inputs": {"manifest": plan.manifest, "images": len(plan.items)},
        "unpaired": plan.pairing,
        "errors": [{"id": row["id"], "error": row.get("error")} for row in rows if row.get("verdict") == "error"][:50],
        "workers": sorted(workers, key=lambda w: w["pid"]),
        "driver_peak_rss_mb": batch.memory_mb()[1],
        "out": str(plan.out),
    })
    outputs = {name: plan.output(name) for name in OUTPUT_NAMES}
    with atomic_path(outputs["summary.json"]) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    with atomic_path(outputs["junit.xml"]) as tmp:
        Path(tmp).write_bytes(junit_xml(rows, summary))
    write_report(rows, summary, outputs["report.html"])
    return GateOutcome(summary=summary, rows=rows, outputs=outputs)


# ---- 5. JUnit -------------------------------------------------------------------------------------------


def _xml_safe(text: Any) -> str:
    """XML 1.0 has no place for most control characters (a file name or message may hold one)."""
    return "".join(ch if ch in "\t\n\r" or ord(ch) >= 0x20 else "\ufffd" for ch in str(text))


def _finding_line(finding: dict[str, Any]) -> str:
    return (f"{finding['priority']} {finding['kind']} ({finding['stage']}): {finding['message']} "
            f"[measured {finding['score']:.4g} {finding['unit']}, limit {finding['threshold']:.4g}]")


def junit_xml(rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> bytes:
    """One testsuite, one testcase per image: a failure carries the findings that failed it, an error
    the reason the image could not be checked."""
    import datetime
    import xml.etree.ElementTree as ET

    verdicts = summary["verdicts"]
    fail_on = set(summary["policy"]["fail_on"])
    total_time = f"{sum(float(r.get('seconds') or 0) for r in rows):.3f}"
    counts = {"tests": str(len(rows)), "failures": str(verdicts["fail"]), "errors": str(verdicts["error"]),
              "skipped": "0", "time": total_time}
    suites = ET.Element("testsuites", name="fixloop gate", **{k: v for k, v in counts.items() if k != "skipped"})
    suite = ET.SubElement(suites, "testsuite", name="fixloop gate", **counts,
                          timestamp=datetime.datetime.now().replace(microsecond=0).isoformat())
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="policy", value=_xml_safe(summary["policy"]["name"]))
    ET.SubElement(properties, "property", name="fail_on", value=",".join(summary["policy"]["fail_on"]))
    for row in rows:
        case = ET.SubElement(suite, "testcase", classname="fixloop.gate", name=_xml_safe(row["id"]),
                             time=f"{float(row.get('seconds') or 0):.3f}", file=_xml_safe(row["candidate"]))
        findings = row.get("findings") or []
        if row.get("verdict") == "fail":
            failing = [f for f in findings if f["priority"] in fail_on] or findings
            failure = ET.SubElement(case, "failure", type=",".join(dict.fromkeys(f["kind"] for f in failing)),
                                    message=_xml_safe("; ".join(f"{f['priority']} {f['kind']}: {f['message']}"
                                                                for f in failing)))
            failure.text = _xml_safe("\n".join(_finding_line(f) for f in findings))
        elif row.get("verdict") != "pass":
            error = ET.SubElement(case, "error", type="error", message=_xml_safe(row.get("error") or "not checked"))
            error.text = _xml_safe(row.get("error") or "not checked")
        elif findings:  # P2 polish notes on a passing image
            ET.SubElement(case, "system-out").text = _xml_safe("\n".join(_finding_line(f) for f in findings))
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True) + b"\n"


# ---- 6. what a person sees on the terminal ----------------------------------------------------------------


class GateProgress:
    """A Rich progress bar on stderr: images done of all, images/s, ETA, and the counts so far."""

    def __init__(self, console=None):
        from rich.console import Console

        self.console = console or Console(stderr=True, highlight=False)
        self._progress = None
        self._task = None
        self._counts = {v: 0 for v in batch.VERDICTS}
        self._checked = 0
        self._started = 0.0

    def start(self, total: int, kept: Sequence[dict[str, Any]]) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        for row in kept:
            self._counts[row.get("verdict") if row.get("verdict") in self._counts else "error"] += 1
        self._progress = Progress(
            TextColumn("[bold]gate[/bold]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("{task.fields[counts]}"), console=self.console, transient=False)
        self._progress.start()
        self._task = self._progress.add_task("gate", total=total, completed=len(kept), rate="- img/s",
                                             counts=self._count_text())
        self._started = time.perf_counter()

    def _count_text(self) -> str:
        c = self._counts
        return f"[green]{c['pass']} pass[/green] [red]{c['fail']} fail[/red] [yellow]{c['error']} error[/yellow]"

    def advance(self, row: dict[str, Any]) -> None:
        self._counts[row.get("verdict") if row.get("verdict") in self._counts else "error"] += 1
        self._checked += 1
        elapsed = max(time.perf_counter() - self._started, 1e-6)
        self._progress.update(self._task, advance=1, rate=f"{self._checked / elapsed:.1f} img/s",
                              counts=self._count_text())

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def print_verdict(outcome: GateOutcome) -> None:
    """The one line ``--quiet`` prints."""
    s = outcome.summary
    v = s["verdicts"]
    verdict = "ERROR" if v["error"] else "FAIL" if v["fail"] else "PASS"
    print(f"verdict: {verdict}  {s['total']} images: {v['pass']} pass · {v['fail']} fail · {v['error']} error")


def print_summary(outcome: GateOutcome, console=None) -> None:
    """The run in a few lines: counts, speed, the commonest defects, errors, unpaired inputs, outputs."""
    from rich.console import Console
    from rich.markup import escape

    from fixloop.apps.text import say

    console = console or Console(highlight=False)
    s = outcome.summary
    v = s["verdicts"]
    resumed = f" ({s['resumed']} from the earlier run)" if s["resumed"] else ""
    rate = f"{s['images_per_second']:.2f} images/s" if s.get("images_per_second") else "-"
    say(console, f"[bold]fixloop gate[/bold]: {s['total']} images{resumed}: [green]{v['pass']} pass[/green] · "
                  f"[red]{v['fail']} fail[/red] · [yellow]{v['error']} error[/yellow]; {s['checked']} checked in "
                  f"{s['seconds']:.1f} s ({rate}, {s['engine']}, {s['jobs']} job(s))")
    kinds = " · ".join(f"{kind} {n['images']}" for kind, n in list(s["kinds"].items())[:8] if n["images"])
    if kinds:
        say(console, f"  images per defect: {kinds}")
    for entry in s["errors"][:5]:
        say(console, f"  [yellow]error[/yellow] {escape(entry['id'])}: {escape(entry['error'] or '')}")
    if v["error"] > 5:
        say(console, f"  ... {v['error'] - 5} more error rows in results.jsonl")
    pairing = s.get("unpaired") or {}
    for key, label in (("without_source", "candidates without a source"), ("without_mask", "candidates without a mask"),
                       ("unused_sources", "sources no candidate took"), ("unused_masks", "masks no candidate took")):
        names = pairing.get(key) or []
        if names:
            shown = ", ".join(Path(n).name for n in names[:5]) + (", ..." if len(names) > 5 else "")
            say(console, f"  {label} ({len(names)}): {escape(shown)}")
    say(console, f"  wrote {escape(str(outcome.outputs['report.html']))} (and results.jsonl, summary.json, "
                  f"junit.xml beside it)")
