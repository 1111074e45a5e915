"""Throughput and memory of `fixloop gate`, and CleanVision on the same images.

    python -m bench.gate_speed [--pairs 24] [--repeats 3] [--small 1000] [--large 0] [--no-ray] [--no-cleanvision]

1. **Speed.** ``--pairs`` 1024-px pairs, each with its source and edit mask, made from the shared
   photos with injected defects (0.6 EV darker, a spill outside the mask, a sigma-2 blur, +25 mired,
   and honest re-encodes). Each is run through the real command (`fixloop gate --manifest ... --json`
   in a fresh process, as a pipeline runs it) with ``--jobs 1``, ``--jobs 2`` and ``--engine ray
   --jobs 2``, ``--repeats`` times each. Reported: medians of pairs/s over the whole run (worker
   start-up and model loads included) and steady pairs/s (first row to last row), the 2-job / 1-job
   ratio and Ray / local.
2. **Memory.** ``--small`` (and ``--large``, 0 = skip) rows of small synthetic pairs (128x96, cycling
   through 100 distinct pairs), ``--jobs 2``: each worker's resident memory after its first image,
   at the end and at its peak, and the driver's peak.
3. **Side by side.** The same candidates through CleanVision 0.3.7 (``Imagelab.find_issues``), if it
   is installed (``pip install 'fixloop[bench]'``): images/s and which injected defects each flagged.

Writes everything to bench/results/gate_speed.json (or ``--results PATH``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import platform
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
PHOTOS = Path(os.environ.get("FIXLOOP_PHOTOS", REPO.parent / "shared" / "data" / "photos"))
RESULTS = REPO / "bench" / "results" / "gate_speed.json"
SIDE = 1024
# injected defect -> how it is made (tests/defects.py) and the amount
DEFECTS = [("exposure", -0.6), ("edit_spills_outside_mask", 0.15), ("blur", 2.0), ("white_balance", 25.0),
           ("clean_reencode", 0.0)]


def photo_names() -> list[str]:
    with open(PHOTOS / "manifest.csv", newline="", encoding="utf-8") as handle:
        return sorted(row["file"] for row in csv.DictReader(handle))


def scaled(name: str, side: int = SIDE) -> np.ndarray:
    image = np.asarray(Image.open(PHOTOS / name).convert("RGB"))
    h, w = image.shape[:2]
    scale = side / max(h, w)
    return cv2.resize(image, (round(w * scale), round(h * scale)),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def build_pairs(folder: Path, count: int) -> tuple[Path, dict[str, str]]:
    """``count`` 1024-px (candidate, source, mask) sets and their manifest; returns it and id -> defect."""
    sys.path.insert(0, str(REPO))
    from tests import defects

    names = photo_names()
    labels: dict[str, str] = {}
    rows = []
    for index in range(count):
        defect, amount = DEFECTS[index % len(DEFECTS)]
        source = scaled(names[(index * 7) % len(names)])
        case = defects.make(defect, source, amount)
        mask = case.mask if case.mask is not None else defects.centre_box_mask(source.shape, 0.4)
        image_id = f"p{index:03d}-{defect}"
        Image.fromarray(source).save(folder / f"{image_id}-source.png")
        Image.fromarray(case.candidate).save(folder / f"{image_id}.jpg", quality=92)
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{image_id}-mask.png")
        rows.append({"id": image_id, "candidate": f"{image_id}.jpg", "source": f"{image_id}-source.png",
                     "mask": f"{image_id}-mask.png"})
        labels[image_id] = defect
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "candidate", "source", "mask"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest, labels


def build_small(folder: Path, rows: int, distinct: int = 100) -> Path:
    """A manifest of ``rows`` small synthetic pairs (cycling through ``distinct`` files on disk)."""
    h, w = 96, 128
    yy, xx = np.mgrid[0:h, 0:w]
    mask = np.zeros((h, w), np.uint8)
    mask[30:66, 40:88] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    for i in range(distinct):
        source = np.stack([(xx * 2 + i * 7) % 256, (yy * 2 + i * 13) % 256, (xx + yy + i * 31) % 256], -1).astype(np.uint8)
        candidate = source.copy()
        candidate[30:66, 40:88] = 255 - candidate[30:66, 40:88]
        if i % 2:
            candidate = (candidate * 0.7).astype(np.uint8)
        Image.fromarray(source).save(folder / f"s{i}.png")
        Image.fromarray(candidate).save(folder / f"c{i}.png")
    manifest = folder / f"small-{rows}.csv"
    with open(manifest, "w", encoding="utf-8") as handle:
        handle.write("id,candidate,source,mask\n")
        for k in range(rows):
            handle.write(f"r{k},c{k % distinct}.png,s{k % distinct}.png,mask.png\n")
    return manifest


def run_gate(manifest: Path, out: Path, jobs: int, engine: str = "local") -> dict:
    command = [sys.executable, "-m", "fixloop.apps.cli", "gate", "--manifest", str(manifest), "--out", str(out),
               "--jobs", str(jobs), "--engine", engine, "--json"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1, 3):
        raise SystemExit(f"gate failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    summary = json.loads(done.stdout)
    summary["process_seconds"] = round(wall, 3)
    return summary


def rows_of(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


def speed(manifest: Path, work: Path, repeats: int, with_ray: bool) -> dict:
    settings = [("local", 1), ("local", 2)] + ([("ray", 2)] if with_ray else [])
    runs: dict[str, list[dict]] = {f"{engine}-{jobs}": [] for engine, jobs in settings}
    for repeat in range(repeats):
        for engine, jobs in settings:  # interleaved, so a busy spell on the machine hits every setting
            out = work / f"out-{engine}-{jobs}-{repeat}"
            summary = run_gate(manifest, out, jobs, engine)
            runs[f"{engine}-{jobs}"].append(summary)
            print(f"  {engine} --jobs {jobs} #{repeat + 1}: {summary['checked']} pairs in {summary['process_seconds']:.1f} s "
                  f"({summary['checked'] / summary['process_seconds']:.2f} pairs/s whole, "
                  f"{summary['steady_images_per_second'] or 0:.2f} steady)", flush=True)
    medians = {}
    for key, summaries in runs.items():
        medians[key] = {
            "pairs_per_second_whole": round(statistics.median(s["checked"] / s["process_seconds"] for s in summaries), 3),
            "pairs_per_second_steady": round(statistics.median(s["steady_images_per_second"] or 0 for s in summaries), 3),
            "seconds_to_first_row": round(statistics.median(s["seconds_to_first_row"] or 0 for s in summaries), 3),
            "process_seconds": [s["process_seconds"] for s in summaries],
            "median_seconds_per_pair_in_worker": round(statistics.median(
                r["seconds"] for s in summaries for r in rows_of(Path(s["out"])).values()), 3),
            # CPU time (all threads of the worker) per pair: what contention on a shared machine does not inflate
            "median_cpu_seconds_per_pair": round(statistics.median(
                r.get("cpu_seconds") or 0 for s in summaries for r in rows_of(Path(s["out"])).values()), 3),
        }
    result = {"medians": medians}
    for kind in ("whole", "steady"):
        one, two = medians["local-1"][f"pairs_per_second_{kind}"], medians["local-2"][f"pairs_per_second_{kind}"]
        result[f"jobs2_over_jobs1_{kind}"] = round(two / one, 3) if one else None
        if "ray-2" in medians:
            result[f"ray_over_local_{kind}"] = round(medians["ray-2"][f"pairs_per_second_{kind}"] / two, 3) if two else None
    if "ray-2" in medians:
        local_rows, ray_rows = (rows_of(Path(runs[k][-1]["out"])) for k in ("local-2", "ray-2"))
        strip = lambda rows: {k: {f: v for f, v in r.items() if f not in ("seconds", "cpu_seconds")}  # noqa: E731
                              for k, r in rows.items()}
        result["ray_rows_equal_local_rows"] = strip(local_rows) == strip(ray_rows)
    result["last_local_2"] = runs["local-2"][-1]
    return result


def memory(work: Path, sizes: list[int]) -> dict:
    found = {}
    for rows in sizes:
        manifest = build_small(work, rows)
        summary = run_gate(manifest, work / f"out-small-{rows}", 2)
        found[str(rows)] = {
            "seconds": summary["process_seconds"],
            "images_per_second": round(summary["checked"] / summary["process_seconds"], 2),
            "workers": [{k: w.get(k) for k in ("pid", "images", "rss_mb_first_image", "rss_mb", "peak_rss_mb")}
                        for w in summary["workers"]],
            "driver_peak_rss_mb": summary.get("driver_peak_rss_mb"),
        }
        peaks = [w["peak_rss_mb"] for w in summary["workers"]]
        print(f"  {rows} small pairs: {summary['process_seconds']:.0f} s; worker peak RSS "
              f"{', '.join(f'{p:.0f}' for p in peaks)} MiB (after its first image "
              f"{', '.join(str(round(w.get('rss_mb_first_image') or 0)) for w in summary['workers'])} MiB); "
              f"driver peak {summary.get('driver_peak_rss_mb')} MiB", flush=True)
    return found


def cleanvision(manifest: Path, labels: dict[str, str], gate_rows: dict[str, dict]) -> dict:
    """CleanVision on the candidates the gate saw: images/s, and per injected defect how many images
    each tool flagged."""
    try:
        import cleanvision
        from cleanvision import Imagelab
    except ImportError as exc:
        return {"installed": False, "why": f"{exc}: pip install 'fixloop[bench]' (cleanvision==0.3.7 installs beside "
                                           "the pins: it adds ImageHash, PyWavelets and tabulate only)"}
    folder = manifest.parent
    paths = [str(folder / f"{image_id}.jpg") for image_id in labels]
    lab = Imagelab(filepaths=paths)
    started = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bars
        lab.find_issues(verbose=False)
    seconds = time.perf_counter() - started
    issue_columns = [c for c in lab.issues.columns if c.startswith("is_") and c.endswith("_issue")]
    flagged_cv = {Path(p).stem: [c[3:-6] for c in issue_columns if bool(lab.issues.loc[p, c])] for p in paths}
    per_defect = {}
    for image_id, defect in labels.items():
        entry = per_defect.setdefault(defect, {"images": 0, "gate_flagged": 0, "cleanvision_flagged": 0,
                                               "gate_kinds": {}, "cleanvision_issues": {}})
        entry["images"] += 1
        row = gate_rows.get(image_id, {})
        if row.get("verdict") == "fail":
            entry["gate_flagged"] += 1
        for kind in {f["kind"] for f in row.get("findings", [])}:
            entry["gate_kinds"][kind] = entry["gate_kinds"].get(kind, 0) + 1
        issues = [i for i in flagged_cv[image_id] if i not in ("near_duplicates", "exact_duplicates")]
        if issues:
            entry["cleanvision_flagged"] += 1
        for issue in flagged_cv[image_id]:
            entry["cleanvision_issues"][issue] = entry["cleanvision_issues"].get(issue, 0) + 1
    return {"installed": True, "version": cleanvision.__version__, "images": len(paths), "seconds": round(seconds, 3),
            "images_per_second": round(len(paths) / seconds, 2), "per_defect": per_defect,
            "note": "CleanVision sees the candidate alone (it has no notion of a source or mask); duplicate issues "
                    "are not counted as flags of a defect"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small", type=int, default=1000, help="rows of small synthetic pairs for memory (0: skip)")
    parser.add_argument("--large", type=int, default=0, help="a second, larger memory run, e.g. 10000 (0: skip)")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--no-cleanvision", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write the figures (JSON)")
    args = parser.parse_args()

    import importlib.util

    with_ray = not args.no_ray and importlib.util.find_spec("ray") is not None
    report: dict = {"benchmark": "gate_speed", "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                                                           "platform": platform.platform(),
                                                           "load_average_at_start": os.getloadavg()},
                    "pairs": args.pairs, "side": SIDE, "repeats": args.repeats}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gate-bench-") as tmp:
        work = Path(tmp)
        pairs = work / "pairs"
        pairs.mkdir()
        manifest, labels = build_pairs(pairs, args.pairs)
        print(f"{args.pairs} pairs at {SIDE} px with source and mask in {pairs}", flush=True)
        report["speed"] = speed(manifest, work, args.repeats, with_ray)
        gate_rows = rows_of(Path(report["speed"].pop("last_local_2")["out"]))
        if not args.no_cleanvision:
            report["cleanvision"] = cleanvision(manifest, labels, gate_rows)
        else:
            report["cleanvision"] = {"installed": None, "why": "skipped (--no-cleanvision)"}
        sizes = [n for n in (args.small, args.large) if n > 0]
        if sizes:
            small = work / "small"
            small.mkdir()
            report["memory"] = memory(small, sizes)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report["bench_seconds"] = round(time.perf_counter() - started, 1)

    medians = report["speed"]["medians"]
    print("\nsetting        pairs/s whole  pairs/s steady  first row s  s/pair in worker  CPU s/pair")
    for key, m in medians.items():
        print(f"{key:14s} {m['pairs_per_second_whole']:13.2f} {m['pairs_per_second_steady']:15.2f} "
              f"{m['seconds_to_first_row']:12.1f} {m['median_seconds_per_pair_in_worker']:17.3f} "
              f"{m['median_cpu_seconds_per_pair']:11.3f}")
    load = report["machine"]
    print(f"load average (1 min) at start {load['load_average_at_start'][0]:.1f}, at end "
          f"{load['load_average_at_end'][0]:.1f} on {load['cores']} cores")
    s = report["speed"]
    print(f"jobs 2 / jobs 1: {s['jobs2_over_jobs1_whole']}x whole, {s['jobs2_over_jobs1_steady']}x steady")
    if "ray_over_local_whole" in s:
        print(f"ray / local (jobs 2): {s['ray_over_local_whole']}x whole, {s['ray_over_local_steady']}x steady; "
              f"rows equal: {s['ray_rows_equal_local_rows']}")
    cv = report["cleanvision"]
    if cv.get("installed"):
        print(f"CleanVision {cv['version']}: {cv['images_per_second']} images/s on the {cv['images']} candidates")
        for defect, entry in cv["per_defect"].items():
            print(f"  {defect:26s} gate flagged {entry['gate_flagged']}/{entry['images']}  "
                  f"CleanVision flagged {entry['cleanvision_flagged']}/{entry['images']}")
    else:
        print(f"CleanVision: {cv['why']}")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.results} ({report['bench_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
