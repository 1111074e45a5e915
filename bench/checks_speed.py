"""Speed of the checks at 1024 px: median per check and of a whole `fixloop check` (decoding the three
files included), warm in-process and as a cold CLI call (a new process: imports, decoding, every check).

    python -m bench.checks_speed [--repeats 7] [--photo NAME] [--threads N] [--json FILE]

The pair is a shared photo scaled to 1024 px on its long side (the source) and an edit of it that
spilled outside its mask and drifted darker and warmer (the candidate), so every check runs. The
process keeps the analyses of the last few images it saw (``fixloop.checks.context.STORE``) and the
embeddings of face chips it embedded, so a warm check is measured three ways:

* ``new pair``: source and candidate are new images every time (the source brightened by one more
  level each repeat): nothing is cached, every model runs on both images. What a gate pays per pair.
* ``new candidate``: the same source, a new candidate every time (a slightly different drift): the
  source's analyses come from the store. What the repair loop and a server pay per candidate.
* ``same pair``: the same files again: every analysis comes from the store.
* ``new pair, local edit``: new images every time, the candidate changed only inside the mask (an
  honest edit): faces and hands the edit left alone are embedded and detected once (by their pixels).

Per check it prints the medians of the ``new pair`` runs, and the CPU time of the whole checks beside
their wall time (the machine is shared: CPU time is the steadier figure), with the load average at
start and end. ``--threads`` sets how many threads one run of the checks uses
(``FIXLOOP_CHECK_THREADS``; default: the engine's, :func:`fixloop.checks.engine.check_threads`, one);
with more than one, checks overlap and a check's time includes waiting for an analysis another
check is computing, so per-check figures are meaningful with ``--threads 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "photos"


def make_pair(photo: str | None, variant: int = 0, drift: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source, mask, candidate) at 1024 px. ``variant`` > 0 brightens the source by that many levels
    (a new image for every model); ``drift`` > 0 changes the candidate's colour drift a little."""
    from fixloop.agent.example import build_example

    if photo and (PHOTOS / photo).is_file():
        source = np.asarray(Image.open(PHOTOS / photo).convert("RGB"))
    else:
        source = build_example()["source"]
    h, w = source.shape[:2]
    scale = 1024 / max(h, w)
    source = cv2.resize(source, (round(w * scale), round(h * scale)),
                        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    if variant:
        source = cv2.add(source, np.full(source.shape, variant, np.uint8))
    h, w = source.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    mask[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = 255
    candidate = source.copy()
    candidate[h // 3 : 2 * h // 3, w // 4 : 2 * w // 3] = 255 - candidate[h // 3 : 2 * h // 3, w // 4 : 2 * w // 3]
    gains = np.array([0.85, 0.8, 0.7]) + 0.004 * drift
    candidate = np.clip(candidate.astype(np.float32) * gains, 0, 255).astype(np.uint8)
    return source, mask, candidate


def _save(folder: Path, name: str, array: np.ndarray) -> str:
    path = folder / f"{name}.png"
    Image.fromarray(array).save(path)
    return str(path)


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def _timed(run) -> tuple[float, float, object]:
    t0, c0 = time.perf_counter(), time.process_time()
    result = run()
    return time.perf_counter() - t0, time.process_time() - c0, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--photo", default="gen_clean_01.jpg")
    parser.add_argument("--threads", type=int, help="threads per run of the checks (FIXLOOP_CHECK_THREADS)")
    parser.add_argument("--json", help="write the medians here")
    args = parser.parse_args()
    if args.threads is not None:
        os.environ["FIXLOOP_CHECK_THREADS"] = str(args.threads)
    load_start = _load()

    from fixloop.checks.base import REGISTRY
    from fixloop.checks.engine import check_files, check_threads
    from fixloop.checks.policy import load_policy

    policy = load_policy()
    n = args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source, mask, candidate = make_pair(args.photo)
        mask_path = _save(folder, "mask", mask)
        same = (_save(folder, "candidate", candidate), _save(folder, "source", source))
        # new candidates against the same source, and new pairs (2n + 1 of each: warm-up and rounds)
        new_candidate = [(_save(folder, f"candidate_d{i}", make_pair(args.photo, 0, i)[2]), same[1])
                         for i in range(1, 2 * n + 2)]
        new_pair, local_edit = [], []
        for i in range(1, 2 * n + 2):
            s, _, c = make_pair(args.photo, i, i)
            new_pair.append((_save(folder, f"candidate_v{i}", c), _save(folder, f"source_v{i}", s)))
            s = make_pair(args.photo, 2 * n + 2 + i)[0]
            edited = s.copy()
            inside = mask > 0
            edited[inside] = 255 - edited[inside]
            local_edit.append((_save(folder, f"candidate_l{i}", edited), _save(folder, f"source_l{i}", s)))

        def check(pair):
            return check_files(pair[0], pair[1], mask_path, policy=policy)

        check(new_pair.pop())  # warm-up: models loaded, code paths compiled
        per_check: dict[str, list[float]] = {name: [] for name in REGISTRY.names()}
        wall: dict[str, list[float]] = {"new pair": [], "new candidate": [], "same pair": [],
                                        "new pair, local edit": []}
        cpu: dict[str, list[float]] = {key: [] for key in wall}
        check(same)
        for _ in range(n):  # the three ways interleaved, so that they meet the same load
            for key, pair in (("new pair", new_pair.pop()), ("new candidate", new_candidate.pop()), ("same pair", same),
                              ("new pair, local edit", local_edit.pop())):
                w, c, report = _timed(lambda: check(pair))
                wall[key].append(w)
                cpu[key].append(c)
                if key == "new pair":
                    for run in report.checks:
                        per_check[run.name].append(run.seconds)

        cli = str(Path(sys.executable).with_name("fixloop"))
        cold: list[float] = []
        for pair in new_pair[: max(3, n // 2)]:
            t0 = time.perf_counter()
            subprocess.run([cli, "check", pair[0], "--source", pair[1], "--mask", mask_path, "--json"],
                           capture_output=True, check=False)
            cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run([cli, "--help"], capture_output=True, check=False)
        help_seconds = time.perf_counter() - t0

    h, w = source.shape[:2]
    ms = lambda values: statistics.median(values) * 1000  # noqa: E731
    load_end = _load()
    threads = check_threads()
    print(f"image {w}x{h} ({args.photo}), {n} repeats, medians; {threads} thread(s) per check run; "
          f"load average (1 min) {load_start:.1f} at start, {load_end:.1f} at end, {os.cpu_count()} cores")
    print(f"{'check (new pair)':32s} {'ms':>8s}")
    medians = {name: ms(times) for name, times in per_check.items() if times}
    for name, value in sorted(medians.items(), key=lambda item: -item[1]):
        print(f"{name:32s} {value:8.1f}")
    total_checks = sum(medians.values())
    print(f"{'sum of checks':32s} {total_checks:8.1f}")
    print(f"{'whole check, warm':32s} {'wall ms':>8s} {'cpu ms':>8s}")
    for key in wall:
        print(f"{'  ' + key:32s} {ms(wall[key]):8.1f} {ms(cpu[key]):8.1f}")
    print(f"{'whole check, cold CLI':32s} {ms(cold):8.1f}")
    print(f"{'fixloop --help':32s} {help_seconds * 1000:8.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "image": [w, h], "photo": args.photo, "repeats": n, "threads": threads,
            "load_average": [load_start, load_end], "per_check_ms": medians,
            "sum_of_checks_ms": total_checks,
            "whole_warm_ms": {key: ms(values) for key, values in wall.items()},
            "whole_warm_cpu_ms": {key: ms(values) for key, values in cpu.items()},
            "cold_cli_ms": ms(cold), "help_ms": help_seconds * 1000,
        }, indent=2) + "\n")


if __name__ == "__main__":
    main()
