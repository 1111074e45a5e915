"""Detection figures of the README's "Measured" section, regenerated on the shared photos.

    python -m bench.accuracy [--photos DIR] [--only KIND ...] [--split fit|report|all]
                             [--limit N] [--tuned-on all|fit] [--out FILE.json]

Every case is made with the defect builders of ``tests/defects.py`` and judged the way the matching
``tests/test_*.py`` judges it, but on every shared photo the case applies to (not only on the tests'
samples). Each photo is decoded once; each case is built once per photo and each of its inputs
(candidate alone, with source, with an edit mask) is one ``CheckContext`` shared by the checks that
look at it; only the check under test runs (``run_checks(..., names=[kind])``).

Prints one table: kind, case, found / total (cases with a defect), false alarms / total (cases
without one), checks that skipped, whether the figure is in-sample or held-out, the README's figure
and a note (readings, placement). ``--out`` writes the same rows with every per-photo result as JSON.

Split: the photos are split into a "fit" half and a "report" half, deterministically (per category,
ordered by a SHA-256 of the file name, alternating). ``--split all`` (the default) runs all photos.
Today's thresholds (``checks/default_policy.toml``) were tuned on all photos, so every figure is
in-sample; once thresholds are fitted on the fit half, ``--tuned-on fit --split report`` labels the
figures held-out.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PHOTOS = Path(os.environ.get("FIXLOOP_PHOTOS", REPO.parent / "shared" / "data" / "photos"))
# The photos today's thresholds were tuned on: "all" (the whole shared set) or "fit" (the fit half).
TUNED_ON = "all"


# ---- the photos: manifest, split, order -----------------------------------------------------------


def read_manifest(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}


def split_halves(manifest: dict[str, dict[str, str]]) -> dict[str, str]:
    """file -> "fit" or "report": per category, photos ordered by SHA-256 of their name alternate
    fit, report, fit, ... (a category of n photos gives ceil(n/2) to fit). Depends on the names only."""
    by_category: dict[str, list[str]] = defaultdict(list)
    for name, row in manifest.items():
        by_category[row["category"]].append(name)
    halves = {}
    for names in by_category.values():
        for i, name in enumerate(sorted(names, key=lambda n: hashlib.sha256(n.encode("utf-8")).hexdigest())):
            halves[name] = "fit" if i % 2 == 0 else "report"
    return halves


def spread_order(manifest: dict[str, dict[str, str]]) -> list[str]:
    """Photos round-robin over the categories (each sorted by name), so ``--limit N`` takes a spread."""
    by_category: dict[str, list[str]] = defaultdict(list)
    for name in sorted(manifest):
        by_category[manifest[name]["category"]].append(name)
    categories = sorted(by_category, key=lambda c: (-len(by_category[c]), c))
    return sorted(manifest, key=lambda n: (by_category[manifest[n]["category"]].index(n),
                                           categories.index(manifest[n]["category"])))


def sample_label(split: str, tuned_on: str) -> str:
    """in-sample when the thresholds were tuned on any of the photos reported on."""
    return "held-out" if tuned_on == "fit" and split == "report" else "in-sample"


def load_photo(path: Path) -> np.ndarray:
    """As tests/conftest.py: H x W x 3 uint8 RGB."""
    from fixloop.checks.images import load_image, to_uint8

    return to_uint8(load_image(path).pixels)


# ---- the cases ------------------------------------------------------------------------------------


@dataclass
class Trial:
    """One photo, one variant of a spec: what came out."""

    photo: str
    variant: str
    status: str  # ok, skipped, error, n/a (the defect cannot be made on this photo)
    hit: bool = False  # defect specs: found; clean specs: a false alarm
    reading: float | None = None
    placed: bool | None = None  # a second criterion (placed where the defect is, right sign and size)
    detail: Any = None


@dataclass
class Spec:
    kind: str  # the check under test
    case: str  # what the row says
    expect: str  # "defect" (found / total) or "clean" (false alarms / total)
    variants: tuple[tuple[str, float, str], ...]  # (builder, amount, inputs) tried on each photo
    readme: str = ""  # the README's figure for this row
    photos: Callable[[str, dict[str, str]], bool] = lambda name, row: True
    judge: Callable[..., dict] | None = None  # (report, case, ctx, builder, amount, photo) -> Trial fields
    note: Callable[[list[Trial]], str] | None = None
    pairs: str | None = None  # identity: "same" or "different" person pairs of the photos' embeddings
    tuned_on: str | None = None  # "fit" where this row's thresholds were fitted on the fit half only
    trials: list[Trial] = field(default_factory=list)


def _first(report):
    return report.findings[0] if report.findings else None


def judge_any(report, case, ctx, builder, amount, photo) -> dict:
    return {"hit": bool(report.findings),
            "detail": sorted({r for f in report.findings for r in f.evidence.get("rules", [])}) or None}


def judge_exposure(report, case, ctx, builder, amount, photo) -> dict:
    """As test_light: a finding with the sign of the change; the reading is the EV it measured."""
    f = _first(report)
    reading = f.evidence.get("ev_change") if f else None
    return {"hit": f is not None and reading is not None and np.sign(reading) == np.sign(amount),
            "reading": reading}


def judge_white_balance(report, case, ctx, builder, amount, photo) -> dict:
    """As test_light: a finding with the sign of the shift; the reading is measure_white_balance's mired."""
    from fixloop.checks.color import measure_white_balance

    f = _first(report)
    return {"hit": f is not None and np.sign(f.score) == np.sign(amount),
            "reading": round(float(measure_white_balance(ctx).mired), 3)}


def judge_spill(report, case, ctx, builder, amount, photo) -> dict:
    """As test_spill: found; placed = the finding's box ends at the mask's left edge and says "left of"."""
    f = _first(report)
    if f is None:
        return {"hit": False}
    x0 = int(np.argmax(case.mask.any(axis=0)))
    regions = f.evidence.get("regions") or [{}]
    placed = f.region.box[2] <= x0 + 2 and regions[0].get("side") == "left of"
    return {"hit": True, "placed": bool(placed), "reading": f.score}


def judge_blur_region(report, case, ctx, builder, amount, photo) -> dict:
    """As test_blur: found as a region (not the whole image) whose centre lies in the blurred box."""
    from tests.defects import blur_region_box

    f = _first(report)
    if f is None:
        return {"hit": False, "detail": "none"}
    bx0, by0, bx1, by1 = blur_region_box(case.candidate.shape)
    x0, y0, x1, y1 = f.region.box
    as_region = "over the whole image" not in f.message and bx0 <= (x0 + x1) / 2 <= bx1 and by0 <= (y0 + y1) / 2 <= by1
    return {"hit": bool(as_region), "detail": "region" if as_region else "whole image or elsewhere", "reading": f.score}


def judge_rotation(report, case, ctx, builder, amount, photo) -> dict:
    """As test_perspective: found; placed = read as a whole-image rotation within 0.4° of the truth."""
    f = _first(report)
    if f is None:
        return {"hit": False}
    placed = f.evidence.get("which") == "whole image rotated" and abs(f.score - amount) <= 0.4
    return {"hit": True, "reading": f.score, "placed": bool(placed), "detail": f.evidence.get("which")}


def judge_crop(report, case, ctx, builder, amount, photo) -> dict:
    """As test_crop: a finding at the edge the crop cut."""
    from tests.test_crop import _wanted_edge

    wanted = _wanted_edge(builder, case, photo)
    f = _first(report)
    edges = f.evidence.get("edges", []) if f else []
    return {"hit": wanted in edges, "detail": {"wanted": wanted, "edges": edges}}


# -- notes under the rows --


def _names(trials: list[Trial], limit: int = 4) -> str:
    names = [t.photo.rsplit(".", 1)[0] + (f" ({t.variant})" if t.variant else "") for t in trials]
    return ", ".join(names[:limit]) + (f" +{len(names) - limit}" if len(names) > limit else "")


def note_misses(trials: list[Trial]) -> str:
    missed = [t for t in trials if t.status in ("ok", "skipped") and not t.hit]
    return f"missed: {_names(missed)}" if missed else ""


def note_alarms(trials: list[Trial]) -> str:
    alarms = [t for t in trials if t.hit]
    return f"alarms: {_names(alarms)}" if alarms else ""


def note_reading(unit: str, truth: float, within: float, sample: list[str] | None = None) -> Callable[[list[Trial]], str]:
    def note(trials: list[Trial]) -> str:
        read = [t for t in trials if t.reading is not None]
        if not read:
            return note_misses(trials)
        values = np.array([t.reading for t in read])
        close = np.abs(values - truth) <= within + 1e-9
        text = (f"reads median {np.median(values):+.2f} {unit} [{values.min():+.2f}, {values.max():+.2f}], "
                f"within ±{within:g}: {int(close.sum())}/{len(read)}")
        if sample:
            in_sample = [bool(c) for t, c in zip(read, close) if t.photo in sample]
            if in_sample:
                text += f" (tests' sample {sum(in_sample)}/{len(in_sample)})"
        missed = note_misses(trials)
        return text + (f"; {missed}" if missed else "")

    return note


def note_placed(what: str) -> Callable[[list[Trial]], str]:
    def note(trials: list[Trial]) -> str:
        found = [t for t in trials if t.hit]
        text = f"{what} {sum(bool(t.placed) for t in found)}/{len(found)}"
        missed = note_misses(trials)
        return text + (f"; {missed}" if missed else "")

    return note


def note_blur_region(trials: list[Trial]) -> str:
    any_finding = sum(t.detail != "none" for t in trials if t.status == "ok")
    missed = note_misses(trials)
    return f"any finding {any_finding}/{len(trials)}" + (f"; {missed}" if missed else "")


def note_pairs(trials: list[Trial]) -> str:
    distances = [t.reading for t in trials if t.reading is not None]
    if not distances:
        return ""
    return f"distance min {min(distances):.3f} max {max(distances):.3f}"


def build_specs() -> list[Spec]:
    from tests.test_crop import CUTS
    from tests.test_light import SAMPLE as LIGHT_SAMPLE
    from tests.test_reencode import MEASUREMENT_CHECKS

    whole_body = lambda name, row: row["full_body"] == "yes" and row["cropped_at_border"] == "none"  # noqa: E731
    reencode_readme = {"edge_halo": "0/55"}
    specs: list[Spec] = []

    # Honest re-encodes (tests/test_reencode.py): JPEG q85 at 90 % size, centre mask (30 %), each check.
    for kind in MEASUREMENT_CHECKS:
        specs.append(Spec(kind, "honest re-encode (q85, 90 %, centre mask)", "clean",
                          (("clean_reencode", 0.0, "centre0.3"),), readme=reencode_readme.get(kind, "0/55"),
                          tuned_on=None if kind == "mask_spill" else "fit", note=note_alarms))

    # exposure_drift and color_temperature_drift (tests/test_light.py).
    for ev in (-0.5, 0.4, 0.6):
        specs.append(Spec("exposure_drift", f"exposure {ev:+.1f} EV", "defect", (("exposure", ev, "case"),),
                          readme="reads -0.50 ± 0.01 EV (tests' 8)" if ev < 0 else "found; reads lower (clipping)",
                          judge=judge_exposure, tuned_on="fit", note=note_reading("EV", ev, 0.01, LIGHT_SAMPLE)))
    for mired in (-25.0, 25.0):
        specs.append(Spec("color_temperature_drift", f"white balance {mired:+.0f} mired", "defect",
                          (("white_balance", mired, "case"),), readme="within 3 mired on 7/8 (tests' 8)",
                          judge=judge_white_balance, tuned_on="fit",
                          note=note_reading("mired", mired, 3.0, LIGHT_SAMPLE)))

    # mask_spill (tests/test_spill.py).
    specs.append(Spec("mask_spill", "spill band 15% width", "defect", (("edit_spills_outside_mask", 0.15, "case"),),
                      readme="51/55, always left", judge=judge_spill, note=note_placed("placed left of the mask")))
    specs.append(Spec("mask_spill", "face outside the mask darkened 0.4 EV and softened", "defect",
                      (("spill_on_face", -0.4, "case"),), readme="issue 13: 21/24 unseen", judge=judge_any,
                      tuned_on="fit", note=note_misses))
    specs.append(Spec("mask_spill", "edit inside the mask (q85)", "clean", (("edit_inside_mask", 0.0, "case"),),
                      readme="0/55", note=note_alarms))
    specs.append(Spec("mask_spill", "edit inside the mask, resized 1.024x", "clean",
                      (("edit_inside_mask_resized", 1.024, "case"),), readme="0/55", note=note_alarms))

    # texture_blur (tests/test_blur.py).
    for sigma in (1.5, 2.0):
        specs.append(Spec("texture_blur", f"gaussian blur σ {sigma:g}", "defect", (("blur", sigma, "case"),),
                          readme="55/55", tuned_on="fit", note=note_misses))
    # The region row stays in-sample: on the fit half min_region_fraction (0.02, all photos) costs it a quarter
    # whose soft tiles cover 1.1 % (found at <= 0.011); the fit half's clean rows bound that value on no side.
    specs.append(Spec("texture_blur", "σ 2 blur of a quarter, as a region", "defect", (("blur_region", 2.0, "case"),),
                      readme="54/55", judge=judge_blur_region, note=note_blur_region))
    for builder, amount, label in (("upscale", 2.0, "2x upscale of a smaller source"),
                                   ("exposure", -1.0, "exposure -1.0 EV"),
                                   ("white_balance", 40.0, "white balance +40 mired")):
        specs.append(Spec("texture_blur", label, "clean", ((builder, amount, "case"),), readme="0/55",
                          tuned_on="fit", note=note_alarms))

    # mirrored (tests/test_mirror.py): flips, also edited or re-exposed; 13 kinds of other edits.
    for builder, amount, label, readme in (("flip", 0.0, "mirror", "55/55"),
                                           ("flip_and_edit", 0.0, "mirror + edit in the mask", "55/55"),
                                           ("flip_and_exposure", -1.0, "mirror + exposure -1.0 EV", "55/55"),
                                           ("flip_and_exposure", 0.7, "mirror + exposure +0.7 EV", "55/55")):
        specs.append(Spec("mirrored", label, "defect", ((builder, amount, "case"),), readme=readme, tuned_on="fit",
                          note=note_misses))
    non_mirroring = (("clean_reencode", 0.0), ("exposure", -0.5), ("white_balance", 25.0), ("blur", 2.0),
                     ("blur_region", 2.0), ("rotate", 4.0), ("tilt_horizon", 3.0), ("lean_verticals", -3.0),
                     ("upscale", 2.0), ("downscale", 0.5), ("edit_inside_mask", 0.0),
                     ("edit_inside_mask_resized", 1.024), ("edit_spills_outside_mask", 0.15))
    specs.append(Spec("mirrored", f"{len(non_mirroring)} kinds of non-mirroring edits", "clean",
                      tuple((b, a, "case") for b, a in non_mirroring), readme="0 (13 kinds x 55)", tuned_on="fit",
                      note=note_alarms))

    # perspective_broken (tests/test_perspective.py); its clean re-encodes are in the re-encode rows.
    for degrees, readme in ((2.0, "55/55"), (-2.0, "54/55")):
        specs.append(Spec("perspective_broken", f"rotation {degrees:+g}°", "defect", (("rotate", degrees, "case"),),
                          readme=readme, judge=judge_rotation, tuned_on="fit",
                          note=note_placed("whole-image rotation within 0.4°")))

    # edge_halo (tests/test_halo.py): a 3-px bright ring in each mode; clean inputs in each mode. The ring rows
    # with a mask and alone stay in-sample: on the fit half growth_threshold (12 L*) and edge_min_length (0.7),
    # set on all photos, cost them rings found at <= 5.5 L* and <= 0.56 diagonals, values no clean row bounds.
    for builder, label, readme in (("halo_ring_cutout", "bright ring, cut-out (alpha)", "55/55"),
                                   ("halo_ring_mask", "bright ring, edit mask + source", "50/55"),
                                   ("halo_ring_single", "bright ring, single image", "18/55")):
        specs.append(Spec("edge_halo", label, "defect", ((builder, 0.8, "case"),), readme=readme,
                          tuned_on="fit" if builder == "halo_ring_cutout" else None, note=note_misses))
    for builder, amount, inputs, label in (("untouched", 0.0, "alone", "clean photo, single image"),
                                           ("clean_reencode", 0.0, "alone", "re-encode, single image"),
                                           ("tight_cutout", 0.0, "case", "clean cut-out (tight matte)"),
                                           ("halo_ring_mask", 0.0, "case", "clean edit mask + source, no ring")):
        specs.append(Spec("edge_halo", label, "clean", ((builder, amount, inputs),), readme="0/55", tuned_on="fit",
                          note=note_alarms))

    # identity_drift (tests/test_identity.py): every labelled pair of single-face portraits.
    portrait = lambda name, row: row["category"] == "face"  # noqa: E731
    specs.append(Spec("identity_drift", "different-person portrait pairs", "defect", (("untouched", 0.0, "alone"),),
                      readme="195/195 (min 0.506)", photos=portrait, pairs="different", note=note_pairs))
    specs.append(Spec("identity_drift", "same-person portrait pairs", "clean", (("untouched", 0.0, "alone"),),
                      readme="0/15 (max 0.387)", photos=portrait, pairs="same", note=note_pairs))

    # subject_cropped (tests/test_crop.py): the whole-body photos cropped, with and without the source.
    readme_crop = {"crop_through_face": "7/7", "crop_through_shins": "7/7", "crop_half_right": "7/7",
                   "crop_through_hand": "6/6"}
    for defect, amount, _edge, _least in CUTS:
        label = defect.removeprefix("crop_").replace("_", " ")
        specs.append(Spec("subject_cropped", f"crop {label}, with source", "defect", ((defect, amount, "case"),),
                          readme=readme_crop[defect], photos=whole_body, judge=judge_crop, tuned_on="fit",
                          note=note_misses))
        specs.append(Spec("subject_cropped", f"crop {label}, no source", "defect", ((defect, amount, "alone"),),
                          readme="4-5 of 6" if defect == "crop_through_hand" else "4-5/7", photos=whole_body,
                          judge=judge_crop, tuned_on="fit", note=note_misses))
    specs.append(Spec("subject_cropped", "photos labelled uncropped, no source", "clean", (("untouched", 0.0, "alone"),),
                      readme="0/8", photos=lambda name, row: row["cropped_at_border"] == "none", tuned_on="fit",
                      note=note_alarms))

    # Rows of their own modules: hands (bench/accuracy_hands.py) and faces (bench/accuracy_faces.py).
    from bench import accuracy_faces, accuracy_hands

    specs += accuracy_hands.specs() + accuracy_faces.specs()
    return specs


def builders() -> dict[str, Callable]:
    """tests/defects.py's builders, plus the plain variants the tests write inline."""
    from tests import defects
    from tests.test_halo import tight_matte

    out = dict(defects.DEFECTS)
    out["untouched"] = lambda image, amount: defects.Case(candidate=image)
    out["mirrored_only"] = lambda image, amount: defects.Case(candidate=np.ascontiguousarray(image[:, ::-1]))
    out["jpeg_only"] = lambda image, amount: defects.Case(candidate=defects.jpeg(image, int(amount)))
    out["tight_cutout"] = lambda image, amount: defects.Case(candidate=np.dstack([image, tight_matte(image)]))
    from bench import accuracy_faces, accuracy_hands

    out.update(accuracy_hands.builders())
    out.update(accuracy_faces.builders())
    return out


def make_context(case, inputs: str):
    from fixloop.checks.context import CheckContext
    from tests.defects import centre_box_mask

    if inputs == "alone":
        return CheckContext.from_arrays(case.candidate)
    if inputs == "centre0.3":
        return CheckContext.from_arrays(case.candidate, case.source, centre_box_mask(case.source.shape, 0.3))
    return CheckContext.from_arrays(case.candidate, case.source, case.mask)


# ---- running --------------------------------------------------------------------------------------


def variant_label(spec: Spec, builder: str, amount: float) -> str:
    return f"{builder} {amount:g}" if len(spec.variants) > 1 else ""


def run(specs: list[Spec], plan: dict[int, list[str]], folder: Path, policy) -> None:
    """Run every spec on its photos: each photo decoded once, each case built once."""
    from fixloop.checks.engine import run_checks
    from fixloop.checks.identity import DlibEmbedder, embedded_faces

    build = builders()
    embedder = None
    photos = []
    for names in plan.values():
        photos += [n for n in names if n not in photos]
    started = time.perf_counter()
    for index, name in enumerate(photos, 1):
        t0 = time.perf_counter()
        image = load_photo(folder / name)
        # (builder, amount) -> inputs -> [(spec, variant label)]
        work: dict[tuple[str, float], dict[str, list[Spec]]] = defaultdict(lambda: defaultdict(list))
        for i, spec in enumerate(specs):
            if name in plan[i]:
                for builder, amount, inputs in spec.variants:
                    work[(builder, amount)][inputs].append(spec)
        runs = 0
        for (builder, amount), by_inputs in work.items():
            try:
                case = build[builder](image.copy(), amount)
            except ValueError as error:  # no pose / no hand in this photo: the defect cannot be placed
                for spec in {id(s): s for group in by_inputs.values() for s in group}.values():
                    spec.trials.append(Trial(name, variant_label(spec, builder, amount), "n/a", detail=str(error)))
                continue
            for inputs, group in by_inputs.items():
                ctx = make_context(case, inputs)
                for spec in group:
                    label = variant_label(spec, builder, amount)
                    if spec.pairs:
                        if embedder is None:
                            embedder = DlibEmbedder(policy.params("identity_drift").dlib_threshold)
                        found = embedded_faces(ctx.candidate, embedder)
                        vector = found[0].vector if len(found) == 1 else None
                        spec.trials.append(Trial(name, label, "ok" if vector is not None else "skipped",
                                                 detail=vector))
                        continue
                    report = run_checks(ctx, policy, names=[spec.kind])
                    runs += 1
                    status = report.checks[0].status.value
                    if status == "error":
                        print(f"  {spec.kind} on {name} ({builder} {amount:g}): error {report.checks[0].error}",
                              file=sys.stderr)
                        spec.trials.append(Trial(name, label, "error", detail=report.checks[0].error))
                        continue
                    fields = (spec.judge or judge_any)(report, case, ctx, builder, amount, name)
                    spec.trials.append(Trial(name, label, status, **fields))
        elapsed = time.perf_counter() - started
        print(f"[{index}/{len(photos)}] {name}: {runs} check runs in {time.perf_counter() - t0:.1f} s "
              f"(elapsed {elapsed:.0f} s)", file=sys.stderr, flush=True)


def finish_pairs(spec: Spec, manifest: dict[str, dict[str, str]], threshold_same: Callable[[float], bool]) -> None:
    """Turn the portraits' embeddings into pair trials: different people must be told apart, the same
    person must not be."""
    import itertools

    embedded = {t.photo: t.detail for t in spec.trials if t.status == "ok"}
    trials = []
    for a, b in itertools.combinations(sorted(embedded), 2):
        same_person = manifest[a]["person_id"] == manifest[b]["person_id"] and manifest[a]["person_id"] != ""
        if same_person != (spec.pairs == "same"):
            continue
        distance = float(np.linalg.norm(embedded[a] - embedded[b]))
        told_apart = not threshold_same(distance)
        trials.append(Trial(f"{a} | {b}", "", "ok", hit=told_apart, reading=round(distance, 6)))
    spec.trials = trials


def summarise(spec: Spec, label: str) -> dict:
    counted = [t for t in spec.trials if t.status in ("ok", "skipped")]
    hits = sum(t.hit for t in counted)
    row = {
        "kind": spec.kind,
        "case": spec.case,
        "expect": spec.expect,
        "total": len(counted),
        "found": hits if spec.expect == "defect" else None,
        "false_alarms": hits if spec.expect == "clean" else None,
        "skipped": sum(t.status == "skipped" for t in counted),
        "not_made": sum(t.status == "n/a" for t in spec.trials),
        "errors": sum(t.status == "error" for t in spec.trials),
        "sample": label,
        "readme": spec.readme,
        "note": spec.note(spec.trials) if spec.note else "",
        "variants": [f"{b} {a:g} ({i})" for b, a, i in spec.variants],
        "trials": [{"photo": t.photo, **({"variant": t.variant} if t.variant else {}), "status": t.status,
                    "hit": bool(t.hit), **({"reading": t.reading} if t.reading is not None else {}),
                    **({"placed": t.placed} if t.placed is not None else {}),
                    **({"detail": t.detail} if isinstance(t.detail, (str, list, dict)) else {})}
                   for t in spec.trials],
    }
    return row


def print_table(rows: list[dict]) -> None:
    header = ("kind", "case", "found", "false alarms", "skipped", "sample", "README", "note")
    table = []
    for r in rows:
        found = f"{r['found']}/{r['total']}" if r["expect"] == "defect" else "-"
        alarms = f"{r['false_alarms']}/{r['total']}" if r["expect"] == "clean" else "-"
        skipped = str(r["skipped"]) + (f" +{r['errors']} err" if r["errors"] else "")
        table.append((r["kind"], r["case"], found, alarms, skipped, r["sample"], r["readme"], r["note"]))
    widths = [max(len(str(x)) for x in column) for column in zip(header, *table)]
    widths[-1] = 0
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    print(line(header))
    print(line(["-" * w for w in widths[:-1]] + ["----"]))
    for cells in table:
        print(line(cells))


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=PHOTOS, help="the shared photo folder (with manifest.csv)")
    parser.add_argument("--only", nargs="+", metavar="KIND", help="only these checks (e.g. mirrored mask_spill)")
    parser.add_argument("--split", choices=("fit", "report", "all"), default="all",
                        help="which half of the photos to run on (default all)")
    parser.add_argument("--tuned-on", choices=("all", "fit"), default=TUNED_ON,
                        help="the photos the thresholds were tuned on (labels rows in-sample / held-out)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="at most N photos per case")
    parser.add_argument("--out", type=Path, help="write the rows and every per-photo result as JSON")
    args = parser.parse_args(argv)

    folder = args.photos.resolve()
    if not (folder / "manifest.csv").is_file():
        parser.error(f"no manifest.csv in {folder}: pass --photos or set FIXLOOP_PHOTOS")
    os.environ["FIXLOOP_PHOTOS"] = str(folder)  # the test modules the cases come from read it on import
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))

    from fixloop.checks.policy import load_policy

    manifest = read_manifest(folder)
    halves = split_halves(manifest)
    order = [n for n in spread_order(manifest) if args.split == "all" or halves[n] == args.split]
    specs = build_specs()
    kinds = sorted({s.kind for s in specs})
    if args.only:
        unknown = sorted(set(args.only) - set(kinds))
        if unknown:
            parser.error(f"unknown kind(s) {', '.join(unknown)}; known: {', '.join(kinds)}")
        specs = [s for s in specs if s.kind in args.only]
    plan = {}
    for i, spec in enumerate(specs):
        eligible = [n for n in order if spec.photos(n, manifest[n])]
        plan[i] = eligible[: args.limit] if args.limit else eligible
    label = sample_label(args.split, args.tuned_on)
    print(f"bench.accuracy: {len(order)} photos (split {args.split}), {len(specs)} cases, "
          f"limit {args.limit or 'none'}", file=sys.stderr, flush=True)

    policy = load_policy()
    t0 = time.perf_counter()
    run(specs, plan, folder, policy)
    for spec in specs:
        if spec.pairs:
            threshold = policy.params("identity_drift").dlib_threshold
            finish_pairs(spec, manifest, lambda d: d <= threshold)
    seconds = time.perf_counter() - t0
    rows = [summarise(spec, sample_label(args.split, spec.tuned_on or args.tuned_on)) for spec in specs]

    print(f"Detection on the shared photos ({len(order)} in split '{args.split}', thresholds tuned on "
          f"{'all photos' if args.tuned_on == 'all' else 'the fit half'}); {seconds:.0f} s")
    print_table(rows)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "photos": str(folder),
            "split": args.split,
            "tuned_on": args.tuned_on,
            "limit": args.limit,
            "photo_count": len(order),
            "halves": {n: halves[n] for n in sorted(halves)},
            "seconds": round(seconds, 1),
            "commit": git_commit(),
            "python": platform.python_version(),
            "rows": rows,
        }
        args.out.write_text(json.dumps(data, indent=1, default=float) + "\n", encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
