"""Speed of the checks at 1024 px: median per check (warm, in-process) and a whole `fixloop check`
warm in-process and as a cold CLI call (a new process: imports, decoding, every check).

    python -m bench.checks_speed [--repeats 7] [--photo NAME]

The pair is a shared photo scaled to 1024 px on its long side (the source) and an edit of it that
spilled outside its mask and drifted darker and warmer (the candidate), so every check runs. Prints
medians and the ratio of the whole run to the sum of its checks.
"""

from __future__ import annotations

import argparse
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


def make_pair(photo: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from fixloop.agent.example import build_example

    if photo and (PHOTOS / photo).is_file():
        source = np.asarray(Image.open(PHOTOS / photo).convert("RGB"))
    else:
        source = build_example()["source"]
    h, w = source.shape[:2]
    scale = 1024 / max(h, w)
    source = cv2.resize(source, (round(w * scale), round(h * scale)),
                        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    h, w = source.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    mask[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = 255
    candidate = source.copy()
    candidate[h // 3 : 2 * h // 3, w // 4 : 2 * w // 3] = 255 - candidate[h // 3 : 2 * h // 3, w // 4 : 2 * w // 3]
    candidate = np.clip(candidate.astype(np.float32) * np.array([0.85, 0.8, 0.7]), 0, 255).astype(np.uint8)
    return source, mask, candidate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--photo", default="gen_clean_01.jpg")
    args = parser.parse_args()

    from fixloop.checks.base import REGISTRY
    from fixloop.checks.engine import check_files
    from fixloop.checks.policy import load_policy

    source, mask, candidate = make_pair(args.photo)
    with tempfile.TemporaryDirectory() as folder:
        paths = {}
        for role, array in (("source", source), ("mask", mask), ("candidate", candidate)):
            paths[role] = str(Path(folder) / f"{role}.png")
            Image.fromarray(array).save(paths[role])
        policy = load_policy()
        check_files(paths["candidate"], paths["source"], paths["mask"], policy=policy)  # warm-up

        per_check: dict[str, list[float]] = {name: [] for name in REGISTRY.names()}
        whole: list[float] = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            report = check_files(paths["candidate"], paths["source"], paths["mask"], policy=policy)
            whole.append(time.perf_counter() - t0)
            for run in report.checks:
                per_check[run.name].append(run.seconds)

        cli = str(Path(sys.executable).with_name("fixloop"))
        cold: list[float] = []
        for _ in range(max(3, args.repeats // 2)):
            t0 = time.perf_counter()
            subprocess.run([cli, "check", paths["candidate"], "--source", paths["source"], "--mask",
                            paths["mask"], "--json"], capture_output=True, check=False)
            cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run([cli, "--help"], capture_output=True, check=False)
        help_seconds = time.perf_counter() - t0

    h, w = source.shape[:2]
    print(f"image {w}x{h} ({args.photo}), {args.repeats} repeats, medians")
    print(f"{'check':28s} {'ms':>8s}")
    medians = {name: statistics.median(times) * 1000 for name, times in per_check.items() if times}
    for name, ms in sorted(medians.items(), key=lambda item: -item[1]):
        print(f"{name:28s} {ms:8.1f}")
    total_checks = sum(medians.values())
    whole_ms = statistics.median(whole) * 1000
    print(f"{'sum of checks':28s} {total_checks:8.1f}")
    print(f"{'whole check, warm':28s} {whole_ms:8.1f}   (ratio to sum of checks {whole_ms / total_checks:.2f})")
    print(f"{'whole check, cold CLI':28s} {statistics.median(cold) * 1000:8.1f}")
    print(f"{'fixloop --help':28s} {help_seconds * 1000:8.1f}")


if __name__ == "__main__":
    main()
