"""Do verdicts hold still under changes that do not touch what a check measures?

    python -m bench.stability [--photos DIR] [--split fit|report|all] [--limit N] [--jobs N]
                              [--only KIND ...] [--changes CHANGE ...] [--raw] [--out FILE.json]

For every shared photo the checks run twice against the photo as the source: once on the photo
itself (the baseline) and once on the photo after one change that no defect is made of. Each row
of the table is a check, each column a change, each cell the number of photos whose P0/P1 verdict
for that check moved (a P0/P1 finding of that kind appeared or went away), out of the photos tried.

The changes, each applied to the whole photo:

- ``+1 EV`` / ``-1 EV``: linear light times 2 or halved (highlights clip);
- ``+30 mired`` / ``-30 mired``: white point moved warmer or cooler;
- ``JPEG q80``: one JPEG round trip at quality 80;
- ``0.9x``: resized to 90 % (area filter), the checks compare at the smaller size;
- ``background``: only the pixels outside the people replaced (blurred and recoloured);
- ``edge ring``: only a 3-px ring around the people brightened (a cut-out's fringe).

The light checks (``exposure_drift``, ``color_temperature_drift``) are meant to move under the light
changes and are not counted there. Under ``background`` and ``edge ring`` only ``identity_drift`` and
``subjects_swapped`` are counted: the faces did not change, whatever else the change is.

Findings reported as ``inherited`` (the source has them in the same way) never count toward the
verdict, so they do not count here either; ``--raw`` counts them, which shows how still the
detectors themselves are before the engine marks what the source had. ``--out`` writes every photo's before/after kinds as JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTOS = Path(os.environ.get("FIXLOOP_PHOTOS", REPO.parent / "shared" / "data" / "photos"))

LIGHT_KINDS = ("exposure_drift", "color_temperature_drift")
FACE_KINDS = ("identity_drift", "subjects_swapped")
LIGHT_CHANGES = ("+1 EV", "-1 EV", "+30 mired", "-30 mired")
FACE_ONLY_CHANGES = ("background", "edge ring")


def _linear(image: np.ndarray) -> np.ndarray:
    from fixloop.checks.images import srgb_to_linear

    return srgb_to_linear(image.astype(np.float32) / 255.0)


def _srgb(linear: np.ndarray) -> np.ndarray:
    from fixloop.checks.images import linear_to_srgb8

    return linear_to_srgb8(linear)


def exposure(image: np.ndarray, ev: float) -> np.ndarray:
    return _srgb(_linear(image) * 2.0**ev)


def white_point(image: np.ndarray, mired: float) -> np.ndarray:
    from fixloop.checks.color import white_balance_gains

    return _srgb(_linear(image) * white_balance_gains(mired))


def jpeg(image: np.ndarray, quality: int = 80) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])


def resize(image: np.ndarray, factor: float = 0.9) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)


def new_background(image: np.ndarray) -> np.ndarray | None:
    """The people kept, everything else blurred hard and pushed towards blue (None: no person)."""
    from tests.defects import person_mask

    people = person_mask(image)
    if people.mean() < 0.02:
        return None
    backdrop = cv2.GaussianBlur(image, (0, 0), 12).astype(np.float32) * np.array([0.75, 0.9, 1.15], np.float32)
    weight = cv2.GaussianBlur(people.astype(np.float32), (0, 0), 1.5)[..., None]
    mixed = image.astype(np.float32) * weight + np.clip(backdrop, 0, 255) * (1.0 - weight)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def edge_ring(image: np.ndarray) -> np.ndarray | None:
    from tests.defects import paint_ring, person_mask

    people = person_mask(image)
    if people.mean() < 0.02:
        return None
    painted, _ = paint_ring(image, people, 0.6)
    return painted


CHANGES: dict[str, Callable[[np.ndarray], np.ndarray | None]] = {
    "+1 EV": lambda im: exposure(im, 1.0),
    "-1 EV": lambda im: exposure(im, -1.0),
    "+30 mired": lambda im: white_point(im, 30.0),
    "-30 mired": lambda im: white_point(im, -30.0),
    "JPEG q80": jpeg,
    "0.9x": resize,
    "background": new_background,
    "edge ring": edge_ring,
}


def counted(change: str, kind: str) -> bool:
    """Whether a verdict of ``kind`` must hold under ``change``."""
    if change in FACE_ONLY_CHANGES:
        return kind in FACE_KINDS
    if change in LIGHT_CHANGES:
        return kind not in LIGHT_KINDS
    return True


def failing_kinds(report, raw: bool = False) -> dict[str, str]:
    """kind -> the first P0/P1 message of that kind that counts toward the verdict (``raw``: inherited too)."""
    kinds: dict[str, str] = {}
    for finding in report.findings:
        if finding.priority.value in ("P0", "P1") and (raw or not getattr(finding, "inherited", False)):
            kinds.setdefault(finding.kind, finding.message)
    return kinds


def photo_rows(path: str, changes: list[str], only: list[str] | None, raw: bool = False) -> dict[str, Any]:
    """Baseline and every change of one photo: {change: {"before": {...}, "after": {...}}}."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from fixloop.checks.context import CheckContext
    from fixloop.checks.engine import run_checks
    from fixloop.checks.images import load_image, to_uint8
    from fixloop.checks.policy import load_policy

    policy = load_policy()
    image = to_uint8(load_image(path).pixels)[..., :3]
    names = only or None
    base = run_checks(CheckContext.from_arrays(image, image), policy, names=names)
    before = failing_kinds(base, raw)
    rows: dict[str, Any] = {"photo": Path(path).name, "before": before, "changes": {}}
    for change in changes:
        changed = CHANGES[change](image)
        if changed is None:
            continue
        report = run_checks(CheckContext.from_arrays(changed, image), policy, names=names)
        errors = [run.name for run in report.checks if run.status.value == "error"]
        rows["changes"][change] = {"after": failing_kinds(report, raw), "errors": errors}
    return rows


def moved(row: dict[str, Any], change: str) -> dict[str, str]:
    """kind -> "appeared: message" / "went away: message" for the counted kinds that moved."""
    before, after = row["before"], row["changes"][change]["after"]
    out = {}
    for kind in sorted(set(before) | set(after)):
        if not counted(change, kind) or (kind in before) == (kind in after):
            continue
        out[kind] = f"appeared: {after[kind]}" if kind in after else f"went away: {before[kind]}"
    return out


def table(rows: list[dict[str, Any]], changes: list[str], kinds: list[str]) -> dict[str, dict[str, list[int]]]:
    """kind -> change -> [photos whose verdict moved, photos tried]."""
    cells: dict[str, dict[str, list[int]]] = {k: {c: [0, 0] for c in changes} for k in kinds}
    for row in rows:
        for change in changes:
            if change not in row["changes"]:
                continue
            diff = moved(row, change)
            for kind in kinds:
                if counted(change, kind):
                    cells[kind][change][1] += 1
                    cells[kind][change][0] += kind in diff
    return cells


def run(photos: list[Path], changes: list[str], only: list[str] | None, jobs: int,
        progress: Callable[[str], None] | None = None, raw: bool = False) -> list[dict[str, Any]]:
    rows = []
    if jobs <= 1:
        for path in photos:
            rows.append(photo_rows(str(path), changes, only, raw))
            if progress:
                progress(path.name)
        return rows
    # spawn, not fork: a caller that already ran the models (a test session) holds their threads, and
    # a forked child can wait forever on a lock one of them held
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for row in pool.map(photo_rows, [str(p) for p in photos], [changes] * len(photos), [only] * len(photos),
                            [raw] * len(photos)):
            rows.append(row)
            if progress:
                progress(row["photo"])
    return rows


def format_table(cells: dict[str, dict[str, list[int]]], changes: list[str]) -> str:
    width = max(len(k) for k in cells) + 2
    lines = ["check".ljust(width) + "".join(c.rjust(12) for c in changes)]
    for kind, by_change in cells.items():
        line = kind.ljust(width)
        for change in changes:
            moved_n, tried = by_change[change]
            line += (f"{moved_n}/{tried}" if tried and counted(change, kind) else "-").rjust(12)
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=PHOTOS)
    parser.add_argument("--split", choices=("fit", "report", "all"), default="all")
    parser.add_argument("--limit", type=int, default=None, help="at most N photos")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--only", nargs="*", help="run only these checks")
    parser.add_argument("--changes", nargs="*", choices=list(CHANGES), default=list(CHANGES))
    parser.add_argument("--raw", action="store_true",
                        help="count inherited findings too: how still the detectors themselves are")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from bench.accuracy import read_manifest, split_halves
    from fixloop.checks.base import DEFECT_KINDS

    manifest = read_manifest(args.photos)
    halves = split_halves(manifest)
    names = sorted(n for n in manifest if args.split == "all" or halves[n] == args.split)[: args.limit]
    photos = [args.photos / n for n in names]
    started = time.perf_counter()
    done = []
    rows = run(photos, args.changes, args.only, args.jobs,
               progress=lambda name: (done.append(name), print(f"  {len(done)}/{len(photos)} {name}", file=sys.stderr)),
               raw=args.raw)
    kinds = [k for k in DEFECT_KINDS if not args.only or k in args.only]
    cells = table(rows, args.changes, kinds)
    print(format_table(cells, args.changes))
    print(f"\n{len(photos)} photos, {time.perf_counter() - started:.0f} s; cell = photos whose P0/P1 verdict "
          "of that check moved / photos tried ('-': not counted for that change)")
    for row in rows:
        for change in row["changes"]:
            for kind, what in moved(row, change).items():
                print(f"  {row['photo']} {change}: {kind} {what}")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "table": cells}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
