"""Run the registered checks over one context and turn their results into a :class:`Report`.

A check that raises :class:`CheckSkipped`, or lacks a required input, is ``skipped`` with the
reason. Any other exception makes that check ``error`` and the verdict ``error``: a crashed
detector must never look like a clean image.

Inherited findings. A defect the source already has in the same way is not the edit's doing. Checks
that compare with the source say so themselves (``subject_cropped`` on a framing the source had); for
checks registered ``inheritable`` (``hand_malformed``, ``subject_cropped``), the engine marks a
candidate finding ``inherited`` when either

- the pixels of its region are the source's own: their grey levels correlate with the source's (in
  the candidate's frame, ``ctx.registered_source``) at ``KEPT_CORRELATION`` or more (re-lit,
  re-white-balanced or re-encoded, not redrawn), where that source covers ``KEPT_MIN_COVER`` of the
  region. The edit did
  not touch what the finding is about, so the defect, real or a model's misreading, was the source's.
  On the shared photos, hand findings after +-1 EV, +-30 mired or JPEG q80 correlated 0.985 or more;
  findings on hands that ``tests/defects.py`` redrew (a finger added or erased, a hand duplicated or
  pasted) spread from 0.27 up to 1.0, the highest being hands the edit left alone (in-sample); or
- the check, run on the source alone with the same settings, finds its kind at the same place
  (boxes, carried into the candidate's frame, overlapping by ``INHERIT_OVERLAP`` of the smaller one,
  or both whole-image); checks that already compare with the source skip this
  (``judge_source_alone=False``: ``subject_cropped``).

An inherited finding is reported but does not count toward the verdict unless the policy's
``gate.count_inherited`` is true.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import fixloop.checks.all  # noqa: F401  (registers every check)
from fixloop.checks.base import REGISTRY, CheckSkipped, Finding
from fixloop.checks.blas import one_blas_thread
from fixloop.checks.context import CheckContext
from fixloop.checks.geometry import correlation
from fixloop.checks.policy import Policy, load_policy
from fixloop.checks.report import CheckRun, CheckStatus, InputSummary, Report

INPUT_HINTS = {
    "source": "needs the image before the edit (--source)",
    "mask": "needs the edit mask (--mask)",
    "references": "needs identity reference images (--reference)",
    "history": "needs earlier passes (--history)",
}


def _missing_input(ctx: CheckContext, requirement: str) -> str | None:
    if requirement == "source":
        if ctx.source is None:
            return INPUT_HINTS["source"]
        if not ctx.aligned:
            return "candidate and source are framed differently (aspect ratio changed), so pixels cannot be compared"
        return None
    if requirement == "mask":
        return INPUT_HINTS["mask"] if ctx.mask is None else None
    if requirement == "references":
        return INPUT_HINTS["references"] if not ctx.references else None
    if requirement == "history":
        return INPUT_HINTS["history"] if not ctx.history else None
    raise ValueError(f"unknown requirement {requirement!r}")


def run_checks(
    ctx: CheckContext,
    policy: Policy | None = None,
    names: Sequence[str] | None = None,
    started: float | None = None,
) -> Report:
    """Run the enabled checks (or just ``names``) and return the report with its verdict."""
    policy = policy or load_policy()
    started = time.perf_counter() if started is None else started
    specs = [REGISTRY.get(name) for name in names] if names else list(REGISTRY)
    specs = [spec for spec in specs if names or policy.params(spec.name).enabled]
    with one_blas_thread():  # OpenBLAS's spinning threads cost more CPU than they save here (checks/blas.py)
        _link_same_content(ctx)
        threads = min(check_threads(), len(specs))
        if threads > 1:
            # longest first, so the long model checks overlap each other and the short ones fill in
            order = sorted(range(len(specs)), key=lambda i: LONGEST_FIRST.index(specs[i].name)
                           if specs[i].name in LONGEST_FIRST else len(LONGEST_FIRST))
            with ThreadPoolExecutor(threads, thread_name_prefix="fixloop-check") as pool:
                done = dict(zip(order, pool.map(lambda i: _run_one(ctx, specs[i], policy), order)))
            results = [done[i] for i in range(len(specs))]
        else:
            results = [_run_one(ctx, spec, policy) for spec in specs]
    findings: list[Finding] = [f for _, found in results for f in found]
    runs: list[CheckRun] = [run for run, _ in results]
    findings.sort(key=lambda f: f.sort_key)
    return Report(
        verdict=_verdict(findings, runs, policy),
        findings=findings,
        checks=runs,
        inputs=_summary(ctx),
        policy=policy.name,
        seconds=round(time.perf_counter() - started, 4),
    )


def _link_same_content(ctx: CheckContext) -> None:
    """A candidate that is its source only re-lit, re-coloured or re-encoded, in the same frame, takes
    the source's analyses of people (pose, faces, hands) instead of running the models on it again
    (:meth:`CheckContext.link_same_content`). A registration that fails here leaves them unlinked; the
    checks that need it report the failure themselves."""
    if ctx.source is None or not ctx.aligned or ctx.candidate.same_content_as is not None:
        return
    try:
        ctx.link_same_content()
    except Exception:  # noqa: BLE001 - reported by the checks that use the registration
        pass


def _run_one(ctx: CheckContext, spec, policy: Policy) -> tuple[CheckRun, list[Finding]]:
    """One check over the context: its run record and its findings (inherited ones marked)."""
    params = policy.params(spec.name)
    t0 = time.perf_counter()
    reason = next((r for r in (_missing_input(ctx, req) for req in spec.requires) if r), None)
    if reason is not None:
        return CheckRun(name=spec.name, status=CheckStatus.skipped, seconds=0.0, reason=reason), []
    try:
        found = spec.function(ctx, params)
    except CheckSkipped as skipped:
        return CheckRun(name=spec.name, status=CheckStatus.skipped,
                        seconds=round(time.perf_counter() - t0, 4), reason=str(skipped)), []
    except Exception as exc:  # noqa: BLE001 - reported, and it turns the verdict to 'error'
        return CheckRun(name=spec.name, status=CheckStatus.error, seconds=round(time.perf_counter() - t0, 4),
                        error=f"{type(exc).__name__}: {exc}"), []
    if found and spec.inheritable:
        found = _mark_inherited(ctx, spec, params, found)
    return CheckRun(name=spec.name, status=CheckStatus.ok, seconds=round(time.perf_counter() - t0, 4),
                    findings=len(found)), list(found)


# Threads one run of the checks may use (FIXLOOP_CHECK_THREADS; unset: 1, the checks one by one).
CHECK_THREADS_ENV = "FIXLOOP_CHECK_THREADS"
MAX_CHECK_THREADS = 4
# The order checks are started in when they run in threads: the longest first (new 1024-px pairs,
# bench/checks_speed.py); checks not named start after these, in the registry's order.
LONGEST_FIRST = ("identity_drift", "hand_malformed", "subject_cropped", "mask_spill", "texture_blur",
                 "perspective_broken", "color_temperature_drift", "mirrored", "exposure_drift", "edge_halo")


def check_threads() -> int:
    """How many threads one run of the checks uses: ``FIXLOOP_CHECK_THREADS`` when set (at most
    ``MAX_CHECK_THREADS``), else 1. Off by default: on the shared 2-core machine (load 5-10) two
    threads gave 3 % wall time back at best and cost 6-15 % more CPU (measured while dlib's own
    descriptor, which holds Python's GIL, still ran; it runs in numpy now, checks/dlib_resnet.py). The reports are the same either way: every shared analysis is computed once
    and is a function of the pixels alone."""
    value = os.environ.get(CHECK_THREADS_ENV, "").strip()
    try:
        return max(1, min(MAX_CHECK_THREADS, int(value))) if value else 1
    except ValueError:
        return 1


# Share of the smaller box two findings must share to be "at the same place".
INHERIT_OVERLAP = 0.3
# Grey-level correlation with the source above which a finding's region is the source's own pixels.
KEPT_CORRELATION = 0.98
# ... judged only where the registered source covers at least this share of the region.
KEPT_MIN_COVER = 0.9


def _mark_inherited(ctx: CheckContext, spec, params, found: list[Finding]) -> list[Finding]:
    """``found`` with the findings the source alone also has (same kind, same place) marked inherited.
    When the registration found that the picture moved (mirror, rotation, zoom, shift), the source's
    pixels and places are taken in the candidate's frame."""
    if ctx.source is None or not ctx.aligned:
        return found
    kept = [f.model_copy(update={"inherited": True, "evidence": {**f.evidence, "inherited_because": why}})
            if (why := _kept_pixels(ctx, f)) else f for f in found]
    if all(f.inherited for f in kept) or not spec.judge_source_alone:
        return kept
    found = kept
    source_alone = ctx.shared("source_alone", lambda: CheckContext(candidate=ctx.source))
    try:
        before = spec.function(source_alone, params)
    except Exception:  # noqa: BLE001 - the source could not be judged: nothing is known to be inherited
        return found
    (cw, ch), (sw, sh) = ctx.candidate.original_size, ctx.source.original_size
    registration = ctx.registration
    if registration.identity:
        boxes = [None if f.region is None or f.region.box is None else
                 [f.region.box[0] * cw / sw, f.region.box[1] * ch / sh, f.region.box[2] * cw / sw,
                  f.region.box[3] * ch / sh]
                 for f in before if f.kind == spec.name]
    else:  # source px -> source analysis px -> candidate analysis px (the registration's inverse) -> candidate px
        import numpy as np

        (aw, ah), (saw, sah) = ctx.size, ctx.source.size
        to_candidate = np.linalg.inv(np.vstack([registration.to_source, [0.0, 0.0, 1.0]]))[:2]
        boxes = []
        for f in before:
            if f.kind != spec.name:
                continue
            if f.region is None or f.region.box is None:
                boxes.append(None)
                continue
            x0, y0, x1, y1 = (float(v) for v in f.region.box)
            corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]) * [saw / sw, sah / sh]
            moved = corners @ to_candidate[:, :2].T + to_candidate[:, 2]
            lo, hi = moved.min(axis=0) * [cw / aw, ch / ah], moved.max(axis=0) * [cw / aw, ch / ah]
            boxes.append([max(0.0, lo[0]), max(0.0, lo[1]), min(float(cw), hi[0]), min(float(ch), hi[1])])
    marked = []
    for finding in found:
        box = None if finding.region is None else finding.region.box
        if not finding.inherited and any(_same_place(box, other) for other in boxes):
            why = "the source alone has it at the same place"
            finding = finding.model_copy(update={"inherited": True, "evidence": {**finding.evidence, "inherited_because": why}})
        marked.append(finding)
    return marked


def _kept_pixels(ctx: CheckContext, finding: Finding) -> str | None:
    """Why ``finding``'s region is the source's own pixels, or None when it is not (or has no box).
    The region is compared with the registered source (the source in the candidate's frame, the source
    itself when the picture did not move); a region the moved source covers less than ``KEPT_MIN_COVER``
    of is not judged the source's (the rest of it would be the candidate's own pixels)."""
    if finding.region is None or finding.region.box is None:
        return None
    box = [v / ctx.scale_to_candidate for v in finding.region.box]
    valid = ctx.registration.valid  # None: the source covers every pixel
    if valid is not None:
        h, w = valid.shape
        c0, r0 = max(0, int(round(box[0]))), max(0, int(round(box[1])))
        c1, r1 = min(w, int(round(box[2]))), min(h, int(round(box[3])))
        if c1 <= c0 or r1 <= r0 or float(valid[r0:r1, c0:c1].mean()) < KEPT_MIN_COVER:
            return None
    value = correlation(ctx.registered_source.gray, ctx.candidate.gray, box, 0.0, max(0.8, (box[2] - box[0]) / 200))
    if value is None or value < KEPT_CORRELATION:
        return None
    return f"the region's pixels are the source's (grey correlation {value:.3f} >= {KEPT_CORRELATION})"


def _same_place(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return smaller > 0 and inter / smaller >= INHERIT_OVERLAP


def _verdict(findings: list[Finding], runs: list[CheckRun], policy: Policy) -> str:
    if any(run.status is CheckStatus.error for run in runs):
        return "error"
    if any(policy.gate.counts(f) for f in findings):
        return "fail"
    return "pass"


def _summary(ctx: CheckContext) -> InputSummary:
    return InputSummary(
        candidate=ctx.candidate.path,
        candidate_size=list(ctx.candidate.original_size),
        source=None if ctx.source is None else ctx.source.path,
        source_size=None if ctx.source is None else list(ctx.source.original_size),
        mask=ctx.mask_path,
        references=[r.path or "<array>" for r in ctx.references],
        history=[h.path or "<array>" for h in ctx.history],
        analysis_size=list(ctx.size),
        notes=list(ctx.notes),
    )


def check_files(
    candidate: str,
    source: str | None = None,
    mask: str | None = None,
    references: Sequence[str] = (),
    history: Sequence[str] = (),
    policy: Policy | None = None,
    names: Sequence[str] | None = None,
) -> Report:
    """Decode the files once and run the checks: the in-process form of ``fixloop check``."""
    started = time.perf_counter()
    policy = policy or load_policy()
    ctx = CheckContext.from_paths(candidate, source, mask, references, history,
                                  max_side=policy.analysis.max_side)
    return run_checks(ctx, policy, names, started=started)
