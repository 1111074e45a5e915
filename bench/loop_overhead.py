"""The repair loop's own cost per pass: time outside the checks and the tools, warm and in-process.

    python -m bench.loop_overhead [--runs 7] [--no-progress] [--profile auto|always|never]

Runs ``agent.runner.start_run`` on the shipped example (``agent.example``: repaired by the local
backend in 2 passes, exposure/colour then composite-back) once to warm up (models and imports load
once per process, as in real use), then ``--runs`` times, each into a fresh run folder and a fresh
checkpoint file, with the CLI's progress printer writing to a console that is not a terminal.

Per run it splits the wall time of the ``start_run`` call into

- check and tool time (``spend.check_seconds``, ``spend.tool_seconds``);
- node overhead: node time outside checks and tools (``spend.seconds`` minus both; what
  ``report.json`` calls ``loop_overhead_seconds_per_pass`` times the passes), of which the finish
  node's writes (final image, review sheet, report);
- framework time: ``wall - spend.seconds``: opening the run (decoding the inputs), compiling the
  graph, LangGraph scheduling, SQLite checkpoint writes, ``get_state`` and the report's own write;

and divides by the passes. The parts of the framework time and the per-node times come from
wrapping functions in this process only (nothing in the repository is changed): the node functions
in ``agent.graph``, ``RunContext.open``, ``agent.runner.open_graph``, ``SqliteSaver.put``/``put_writes``
and ``agent.outputs.write_images`` / ``write_report``. Prints medians and the ratios of overhead to check + tool time.
With ``--profile auto`` a run is profiled (cProfile, switched off inside checks and tools) when the
overhead is over 50 ms per pass. Writes everything to bench/results/loop_overhead.json.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "loop_overhead.json"
NODES = ("inspect", "triage", "plan", "approve", "repair", "verify", "finish")
PROFILE_THRESHOLD_S = 0.050  # overhead per pass above which --profile auto profiles a run


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = "none"
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores, "gpu": gpu, "python": platform.python_version(),
            "platform": platform.platform(terse=True)}


class Probe:
    """Timings of the wrapped functions during one run (and a profiler to pause in checks/tools)."""

    def __init__(self) -> None:
        self.reset()
        self.profiler: cProfile.Profile | None = None

    def reset(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.nodes: list[dict[str, Any]] = []  # one entry per node call, in order

    def add(self, key: str, seconds: float) -> None:
        self.seconds[key] += seconds
        self.calls[key] += 1

    @contextlib.contextmanager
    def paused(self):
        """Switch the profiler off inside checks and tools (their cost is not the loop's)."""
        if self.profiler is None:
            yield
            return
        self.profiler.disable()
        try:
            yield
        finally:
            self.profiler.enable()


@contextlib.contextmanager
def instrument(probe: Probe):
    """Wrap the loop's functions for the duration; restores every one on exit."""
    import fixloop.agent.graph as graph_mod
    import fixloop.agent.outputs as outputs_mod
    import fixloop.agent.runner as runner_mod
    from langgraph.checkpoint.sqlite import SqliteSaver

    restore: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, new: Any) -> None:
        restore.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)))
        setattr(owner, name, new)

    def timed(key: str, func: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                probe.add(key, time.perf_counter() - t0)
        wrapper.__name__ = getattr(func, "__name__", key)
        wrapper.__qualname__ = getattr(func, "__qualname__", key)
        return wrapper

    # nodes: wall time of each call and the spend it reported (build_graph looks them up at call time)
    def node_wrapper(name: str, func: Callable) -> Callable:
        def node(state, runtime):
            before = state.spend
            t0 = time.perf_counter()
            update = func(state, runtime)
            wall = time.perf_counter() - t0
            after = update.get("spend", before) if isinstance(update, dict) else before
            probe.nodes.append({
                "node": name, "wall": wall, "spend": after.seconds - before.seconds,
                "check": after.check_seconds - before.check_seconds,
                "tool": after.tool_seconds - before.tool_seconds})
            return update
        node.__name__ = node.__qualname__ = name  # LangGraph names nothing after it, but tracebacks do
        return node

    for name in NODES:
        patch(graph_mod, name, node_wrapper(name, getattr(graph_mod, name)))

    # checks and tools: only to pause the profiler (their time is already in the spend)
    original_check = graph_mod.RunContext.check

    def check(self, *args, **kwargs):
        with probe.paused():
            return original_check(self, *args, **kwargs)
    patch(graph_mod.RunContext, "check", check)

    original_outside = graph_mod.outside_change

    def outside_change(*args, **kwargs):
        with probe.paused():
            return original_outside(*args, **kwargs)
    patch(graph_mod, "outside_change", outside_change)

    original_load_tool = graph_mod.load_tool

    def load_tool(name):
        import dataclasses

        spec = original_load_tool(name)
        function = spec.function

        def paused_function(*args, **kwargs):
            with probe.paused():
                return function(*args, **kwargs)
        return dataclasses.replace(spec, function=paused_function)
    patch(graph_mod, "load_tool", load_tool)

    # framework parts
    open_func = graph_mod.RunContext.__dict__["open"].__func__
    patch(graph_mod.RunContext, "open", classmethod(timed("open_context", open_func)))

    original_open_graph = runner_mod.open_graph

    @contextlib.contextmanager
    def open_graph(db=None):
        t0 = time.perf_counter()
        with original_open_graph(db) as graph:
            probe.add("open_graph", time.perf_counter() - t0)
            graph.get_state = timed("get_state", graph.get_state)
            yield graph
    patch(runner_mod, "open_graph", open_graph)

    patch(SqliteSaver, "put", timed("checkpoint_put", SqliteSaver.put))
    patch(SqliteSaver, "put_writes", timed("checkpoint_put_writes", SqliteSaver.put_writes))
    patch(outputs_mod, "write_images", timed("finish_writes", outputs_mod.write_images))
    patch(outputs_mod, "write_report", timed("finish_writes", outputs_mod.write_report))
    try:
        yield probe
    finally:
        for owner, name, value in reversed(restore):
            setattr(owner, name, value)


def progress_printer(enabled: bool):
    """The CLI's progress callback, printing into memory (a console that is not a terminal)."""
    if not enabled:
        return None
    from rich.console import Console

    from fixloop.apps.progress import ConsoleProgress

    return ConsoleProgress(Console(file=io.StringIO(), force_terminal=False, highlight=False, soft_wrap=True))


def one_run(inputs_dir: Path, work: Path, index: int, probe: Probe, progress: bool) -> dict[str, Any]:
    from fixloop.agent.runner import start_run
    from fixloop.agent.state import Budget, RunInputs

    paths = {role: str(inputs_dir / f"{role}.png") for role in ("source", "mask", "candidate")}
    out_dir = work / f"run-{index:02d}"
    inputs = RunInputs(image=paths["candidate"], source=paths["source"], mask=paths["mask"],
                       out_dir=str(out_dir), backend="local")
    probe.reset()
    printer = progress_printer(progress)
    t0 = time.perf_counter()
    state = start_run(inputs, Budget(), progress=printer, db=work / f"runs-{index:02d}.sqlite")
    wall = time.perf_counter() - t0
    if printer is not None:
        printer.stop()
    spend = state.spend
    s = probe.seconds
    nodes_wall = sum(n["wall"] for n in probe.nodes)
    checkpoint = s["checkpoint_put"] + s["checkpoint_put_writes"]
    setup = s["open_context"] + s["open_graph"]
    return {
        "wall": wall, "passes": spend.passes, "seconds": spend.seconds, "check": spend.check_seconds,
        "tool": spend.tool_seconds, "node_overhead": spend.seconds - spend.check_seconds - spend.tool_seconds,
        "framework": wall - spend.seconds, "finish_writes": s["finish_writes"],
        "setup": setup, "checkpoint": checkpoint, "get_state": s["get_state"],
        # node time the spend misses (the finish node's writes, mostly)
        "node_unspent": nodes_wall - sum(n["spend"] for n in probe.nodes),
        # what is left for LangGraph itself: scheduling, channel updates, state validation
        "scheduling": wall - nodes_wall - setup - checkpoint - s["get_state"],
        "checkpoints": probe.calls["checkpoint_put"], "steps": len(probe.nodes),
        "nodes": [dict(n) for n in probe.nodes],
        "attempts": [(a.plan.tool, a.outcome.value if a.outcome else None) for a in state.attempts],
        "verdict": state.verdict, "stop_reason": state.stop_reason,
    }


def per_node(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per node name: median over runs of its summed wall, check, tool and other time in a run."""
    table: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for n in run["nodes"]:
            row = sums[n["node"]]
            row["calls"] += 1
            row["wall"] += n["wall"]
            row["check"] += n["check"]
            row["tool"] += n["tool"]
            row["other"] += n["wall"] - n["check"] - n["tool"]
        for name, row in sums.items():
            for key, value in row.items():
                table.setdefault(name, {}).setdefault(key, []).append(value)
    order = {name: i for i, name in enumerate(NODES)}
    return {name: {key: statistics.median(values) for key, values in cols.items()}
            for name, cols in sorted(table.items(), key=lambda item: order.get(item[0], 99))}


def profile_run(inputs_dir: Path, work: Path, probe: Probe, progress: bool, top: int = 25) -> dict[str, Any]:
    """One more run under cProfile, paused inside checks and tools."""
    profiler = cProfile.Profile()
    probe.profiler = profiler
    profiler.enable()
    try:
        run = one_run(inputs_dir, work, 999, probe, progress)
    finally:
        profiler.disable()
        probe.profiler = None
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    rows = []
    for (filename, line, func), (cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = filename
        for marker in ("site-packages/", str(REPO) + "/"):
            if marker in filename:
                where = filename.split(marker, 1)[1]
        rows.append({"function": f"{where}:{line}({func})", "calls": nc, "tottime": tt, "cumtime": ct})
    by_cum = sorted(rows, key=lambda r: -r["cumtime"])[:top]
    by_tot = sorted(rows, key=lambda r: -r["tottime"])[:top]
    return {"run": {k: v for k, v in run.items() if k != "nodes"}, "by_cumtime": by_cum, "by_tottime": by_tot}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-progress", action="store_true", help="run without the CLI's progress printer")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                        help=f"profile one more run (auto: when overhead > {PROFILE_THRESHOLD_S * 1000:.0f} ms per pass)")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    args = parser.parse_args()
    progress = not args.no_progress

    from fixloop.agent.example import write_example

    work = Path(tempfile.mkdtemp(prefix="fixloop-bench-"))
    probe = Probe()
    try:
        inputs_dir = work / "inputs"
        write_example(inputs_dir)
        with instrument(probe):
            warm = one_run(inputs_dir, work, 0, probe, progress)  # warm-up: imports, models, caches
            runs = [one_run(inputs_dir, work, i, probe, progress) for i in range(1, args.runs + 1)]
            med = {key: statistics.median(r[key] for r in runs) for key in (
                "wall", "seconds", "check", "tool", "node_overhead", "framework", "finish_writes", "setup",
                "checkpoint", "get_state", "node_unspent", "scheduling", "passes", "checkpoints", "steps")}
            passes = med["passes"] or 1
            overhead = (med["node_overhead"] + med["framework"]) / passes
            profile = None
            if args.profile == "always" or (args.profile == "auto" and overhead > PROFILE_THRESHOLD_S):
                profile = profile_run(inputs_dir, work, probe, progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    info = machine()
    ms = lambda seconds: seconds * 1000  # noqa: E731
    pp = lambda key: med[key] / passes  # noqa: E731
    work_pp = pp("check") + pp("tool")
    print(f"machine: {info['cpu']}, {info['cores']} cores, GPU {info['gpu']}, Python {info['python']}")
    print(f"example 512x512, backend local, {args.runs} runs after 1 warm-up, progress printer "
          f"{'on (to memory)' if progress else 'off'}, medians")
    print(f"passes per run {med['passes']:g} ({', '.join(f'{t} {o}' for t, o in runs[0]['attempts'])}); "
          f"{med['steps']:g} node calls, {med['checkpoints']:g} checkpoints; stop: {runs[0]['stop_reason']}")
    print(f"warm-up run {ms(warm['wall']):.1f} ms")
    print()
    print(f"{'':42s} {'run ms':>9s} {'per pass ms':>12s}")
    rows = [
        ("whole run (start_run)", "wall"),
        ("  checks", "check"),
        ("  tools", "tool"),
        ("  node time outside checks and tools", "node_overhead"),
        ("    of which finish (final, review, report)", "finish_writes"),
        ("  framework (wall - spend.seconds)", "framework"),
        ("    of which open context + compile graph", "setup"),
        ("    of which SQLite checkpoint writes", "checkpoint"),
        ("    of which get_state", "get_state"),
        ("    of which LangGraph scheduling (rest)", "scheduling"),
    ]
    for label, key in rows:
        print(f"{label:42s} {ms(med[key]):9.1f} {ms(pp(key)):12.1f}")
    print()
    ratios = {
        "node_overhead": pp("node_overhead") / work_pp,
        "framework": pp("framework") / work_pp,
        "node_overhead_without_finish_writes": (pp("node_overhead") - pp("finish_writes")) / work_pp,
        "total_overhead": overhead / work_pp,
    }
    print(f"check + tool per pass {ms(work_pp):.1f} ms; overhead / (check + tool):")
    print(f"  node overhead                     {ratios['node_overhead']:.3f}")
    print(f"  framework                         {ratios['framework']:.3f}")
    print(f"  node overhead w/o finish writes   {ratios['node_overhead_without_finish_writes']:.3f}")
    print(f"  node + framework                  {ratios['total_overhead']:.3f}"
          f"   ({ms(overhead):.1f} ms per pass)")
    print()
    nodes = per_node(runs)
    print(f"{'node (summed per run)':22s} {'calls':>5s} {'wall ms':>9s} {'check ms':>9s} {'tool ms':>9s} {'other ms':>9s}")
    for name, row in nodes.items():
        print(f"{name:22s} {row['calls']:5g} {ms(row['wall']):9.1f} {ms(row['check']):9.1f} "
              f"{ms(row['tool']):9.1f} {ms(row['other']):9.1f}")
    if profile is not None:
        print()
        print("profile of one more run, cProfile paused inside checks and tools (top by cumulative time):")
        print(f"{'cum ms':>9s} {'own ms':>9s} {'calls':>7s}  function")
        for row in profile["by_cumtime"][:15]:
            print(f"{ms(row['cumtime']):9.1f} {ms(row['tottime']):9.1f} {row['calls']:7d}  {row['function']}")
        print("top by own time:")
        for row in profile["by_tottime"][:10]:
            print(f"{ms(row['cumtime']):9.1f} {ms(row['tottime']):9.1f} {row['calls']:7d}  {row['function']}")

    result = {
        "benchmark": "loop_overhead", "machine": info, "runs": args.runs, "progress": progress,
        "example": "agent.example (512x512), backend local",
        "median_seconds_per_run": med, "median_seconds_per_pass": {
            key: pp(key) for key in ("wall", "check", "tool", "node_overhead", "framework", "finish_writes",
                                     "setup", "checkpoint", "get_state", "scheduling")},
        "ratios_to_check_plus_tool": ratios, "per_node_median_seconds": nodes,
        "warmup_wall_seconds": warm["wall"],
        "finish_writes_note": "timed by wrapping agent.outputs.write_images and write_report inside the run; "
                              "the images are in the finish node's spend, the report's own write is not",
        "raw_runs": runs, "profile": profile,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nwrote {args.json.relative_to(REPO) if args.json.is_relative_to(REPO) else args.json}")


if __name__ == "__main__":
    main()
