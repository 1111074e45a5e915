"""Does the repair loop resolve the defects it can repair locally, and make nothing worse?

    python -m bench.repair_eval [--photos DIR] [--split fit|report|all] [--limit N] [--jobs N]
                                [--kinds KIND ...] [--passes N] [--out FILE.json]

Seven kinds of defect that need no generative model are injected into the shared photos (builders of
``tests/defects.py``): ``darker`` (-1 EV), ``brighter`` (+1 EV), ``warmer`` (+40 mired), ``cooler``
(-40 mired), ``mirrored`` (flipped left-right), ``spilled`` (an edit that ran 15 % of the width
outside its mask) and ``halo`` (a bright 3-px fringe around the people, as a loose cut-out leaves).
Each case runs through ``fixloop repair --backend local --budget-passes 3`` (in-process:
``agent.runner.start_run``, one SQLite file per worker) against the photo as its source.

Per kind, out of the cases whose input the checks flag with that kind (a case the checks do not
flag is counted as ``not flagged``, not as resolved):

- ``resolved``: no P0/P1 finding of the injected kind (that counts toward the verdict) on the final image;
- ``clean``: the final image passes (no P0/P1 at all that counts);
- ``worse``: the final image has a counted P0/P1 kind that the input did not have (listed apart when
  verify judged it not the repair's doing, e.g. ``texture_blur clipped_in_input``: detail the input
  had already lost to clipping, which a darkening pass shows);
- ``edge detail`` (halo): the detail on the people's outline of the final image where the halo was
  resolved, as a share of the source's (median; mean |Laplacian| in a 9-px band across the outline):
  below 1, the repair softened the edge; above 1, some of the fringe's own edges are left;
- ``rollbacks``: attempts rolled back because verify judged a P0/P1 to be caused or made worse by the
  repair (``new_defect``, ``made_worse``), with the kinds that caused them.

``--out`` writes every case (attempts with their causes and side effects) as JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTOS = Path(os.environ.get("FIXLOOP_PHOTOS", REPO.parent / "shared" / "data" / "photos"))
KIND_OF = {"darker": "exposure_drift", "brighter": "exposure_drift", "warmer": "color_temperature_drift",
           "cooler": "color_temperature_drift", "mirrored": "mirrored", "spilled": "mask_spill", "halo": "edge_halo"}
ROLLBACK_CAUSES = ("new_defect", "made_worse")


def _cases() -> dict[str, Callable[[np.ndarray], Any]]:
    from tests import defects

    return {
        "darker": lambda im: defects.exposure(im, -1.0),
        "brighter": lambda im: defects.exposure(im, 1.0),
        "warmer": lambda im: defects.white_balance(im, 40.0),
        "cooler": lambda im: defects.white_balance(im, -40.0),
        "mirrored": lambda im: defects.flip(im),
        "spilled": lambda im: defects.edit_spills_outside_mask(im, 0.15),
        "halo": lambda im: defects.halo_ring(im, 0.6) if defects.person_mask(im).mean() >= 0.02 else None,
    }


class _Record:
    def __init__(self, kind: str, priority: str, inherited: bool = False, **_: Any):
        self.kind, self.priority, self.inherited = kind, priority, inherited


def _counted(findings, fail_on=("P0", "P1")) -> set[str]:
    return {f.kind for f in findings if f.priority in fail_on and not getattr(f, "inherited", False)}


def run_case(photo: str, kind: str, passes: int, work: str) -> dict[str, Any]:
    """One injected case through the loop: what the input had, what the final image has, the attempts."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from PIL import Image

    from fixloop.agent.runner import start_run
    from fixloop.agent.state import Budget, RunInputs
    from fixloop.checks.images import load_image, to_uint8

    image = to_uint8(load_image(photo).pixels)[..., :3]
    case = _cases()[kind](image)
    row: dict[str, Any] = {"photo": Path(photo).name, "kind": kind}
    if case is None:
        return {**row, "skipped": "no person to ring"}
    folder = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=work))
    paths = {"image": folder / "candidate.png", "source": folder / "source.png"}
    Image.fromarray(case.candidate).save(paths["image"])
    Image.fromarray(case.source).save(paths["source"])
    if case.mask is not None:
        paths["mask"] = folder / "mask.png"
        Image.fromarray(case.mask.astype(np.uint8) * 255).save(paths["mask"])
    inputs = RunInputs(image=str(paths["image"]), source=str(paths["source"]),
                       mask=str(paths["mask"]) if "mask" in paths else None, backend="local",
                       out_dir=str(folder / "run"))
    started = time.perf_counter()
    state = start_run(inputs, Budget(max_passes=passes), db=Path(work) / f"runs-{os.getpid()}.sqlite")
    first = getattr(state, "input_findings", None)  # older loops kept no copy of the input's findings
    if first is None:
        first = [_Record(**f) for f in state.attempts[0].findings_before] if state.attempts else state.findings
    before = _counted(first)
    after = _counted(state.findings)
    if kind == "halo":
        current = Path(state.current_image)
        current = current if current.is_absolute() else Path(inputs.out_dir) / current
        final = to_uint8(load_image(current).pixels)[..., :3]
        row["edge_detail"] = edge_detail(case.source, case.candidate, final)
    return {
        **row,
        "flagged": KIND_OF[kind] in before,
        "resolved": KIND_OF[kind] not in after,
        "clean": not after,
        "worse": sorted(after - before),
        "input": sorted(before),
        "final": sorted(after),
        "stop": state.stop.value if state.stop else None,
        "seconds": round(time.perf_counter() - started, 2),
        "attempts": [{"tool": a.plan.tool, "target": a.plan.target.kind, "outcome": a.outcome.value if a.outcome else None,
                      "cause": a.cause.value if a.cause else None, "reason": a.reason,
                      "side_effects": [e.model_dump(mode="json") for e in getattr(a, "side_effects", [])]}
                     for a in state.attempts],
    }


def edge_detail(source: np.ndarray, candidate: np.ndarray, final: np.ndarray) -> dict[str, float]:
    """Detail on the people's outline (a 9-px band across it): mean |Laplacian| of the grey image, for
    the candidate and the final image as a share of the source's. Below 1: the edge got softer."""
    import cv2

    from tests.defects import person_mask

    people = person_mask(source).astype(np.uint8)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    band = (cv2.dilate(people, disk) - cv2.erode(people, disk)).astype(bool)

    def detail(image: np.ndarray) -> float:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return float(np.abs(cv2.Laplacian(grey, cv2.CV_32F))[band].mean())

    base = detail(source)
    return {"candidate": round(detail(candidate) / base, 4), "final": round(detail(final) / base, 4)}


def summarise(rows: list[dict[str, Any]], kinds: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        mine = [r for r in rows if r["kind"] == kind and "skipped" not in r]
        flagged = [r for r in mine if r["flagged"]]
        rollbacks = Counter()
        for r in mine:
            for a in r["attempts"]:
                if a["cause"] in ROLLBACK_CAUSES:
                    rollbacks[a["reason"].split(":")[1].split("(")[0].strip() if ":" in a["reason"] else a["cause"]] += 1
        details = [r["edge_detail"]["final"] for r in flagged if "edge_detail" in r and r["resolved"]]
        excused = Counter()
        for r in mine:
            rules = {e["kind"]: e["rule"] for a in r["attempts"] if a["outcome"] == "accepted"
                     for e in a["side_effects"] if e["rule"] != "caused"}
            for k in r["worse"]:
                if k in rules:
                    excused[f"{k} {rules[k]}"] += 1
        out[kind] = {"worse_excused": dict(excused), "edge_detail_final": round(float(np.median(details)), 3) if details else None,
                     "cases": len(mine), "flagged": len(flagged),
                     "resolved": sum(r["resolved"] for r in flagged), "clean": sum(r["clean"] for r in flagged),
                     "worse": sum(bool(r["worse"]) for r in mine),
                     "rollbacks": sum(rollbacks.values()), "rollback_kinds": dict(rollbacks)}
    return out


def format_summary(summary: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'kind':<10}{'cases':>6}{'flagged':>8}{'resolved':>9}{'clean':>7}{'worse':>7}{'rollbacks':>10}  rolled back for"]
    for kind, s in summary.items():
        why = ", ".join(f"{k} {n}" for k, n in sorted(s["rollback_kinds"].items())) or "-"
        lines.append(f"{kind:<10}{s['cases']:>6}{s['flagged']:>8}{s['resolved']:>9}{s['clean']:>7}{s['worse']:>7}"
                     f"{s['rollbacks']:>10}  {why}")
        if s.get("worse_excused"):
            lines.append(f"{'':<10}worse, but verify judged it not the repair's: "
                         + ", ".join(f"{k} {n}" for k, n in sorted(s["worse_excused"].items())))
        if s.get("edge_detail_final") is not None:
            lines.append(f"{'':<10}edge detail on the people's outline where the halo was resolved: median "
                         f"{s['edge_detail_final']:.3f} of the source's")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=PHOTOS)
    parser.add_argument("--split", choices=("fit", "report", "all"), default="report")
    parser.add_argument("--limit", type=int, default=None, help="at most N photos")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--kinds", nargs="*", choices=list(KIND_OF), default=list(KIND_OF))
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from bench.accuracy import read_manifest, split_halves

    manifest = read_manifest(args.photos)
    halves = split_halves(manifest)
    names = sorted(n for n in manifest if args.split == "all" or halves[n] == args.split)[: args.limit]
    jobs = [(str(args.photos / n), kind) for n in names for kind in args.kinds]
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fixloop-repair-eval-") as work:
        with ProcessPoolExecutor(max(1, args.jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_case, photo, kind, args.passes, work) for photo, kind in jobs]
            for index, future in enumerate(futures, 1):
                row = future.result()
                rows.append(row)
                print(f"  {index}/{len(jobs)} {row['photo']} {row['kind']}: "
                      f"{'skipped' if 'skipped' in row else ('resolved' if row['resolved'] else 'open') + (' worse ' + ','.join(row['worse']) if row['worse'] else '')}",
                      file=sys.stderr)
    summary = summarise(rows, args.kinds)
    print(format_summary(summary))
    print(f"\n{len(names)} photos ({args.split} half), {len(jobs)} cases, --budget-passes {args.passes}, "
          f"{time.perf_counter() - started:.0f} s")
    for row in rows:
        if "skipped" in row or (row["resolved"] and not row["worse"]) or not row["flagged"]:
            continue
        print(f"  {row['photo']} {row['kind']}: final {row['final']}; "
              + "; ".join(f"{a['tool']} {a['cause']}" for a in row["attempts"]))
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
