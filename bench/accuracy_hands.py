"""bench.accuracy rows for hand_malformed: cases and builders of their own, kept apart from the
other kinds' rows so that each can grow without touching the rest.

Three groups of rows (issue 13, part 2):

* hand defects made on the real hand photos (``tests/hand_defects.py`` and the older builders of
  ``tests/defects.py``), judged without a source: found only where a finding's region meets the
  hand the defect was made on. Thresholds moved for issue 13 were fitted on the fit half of these
  and of the clean rows (``Spec.tuned_on="fit"``), so ``--split report`` figures are held out;
* the clean photos and clean variants of them (false alarms), the same split;
* the shared set's real generated images with hand defects (``tests/test_hands.py``'s FOUND and
  MISSED): out-of-sample, never used to fit, whatever half they fall in.
"""

from __future__ import annotations

from typing import Callable

# builder, amounts (one positive each), the row's label
DEFECT_ROWS = (
    ("finger_duplicate", (0.0, 1.0), "finger duplicated beside itself"),
    ("finger_missing", (0.0, 1.0), "finger removed, gap filled"),
    ("fingers_fused", (0.0, 1.0), "two fingers fused"),
    ("hand_no_arm", (0.0,), "hand pasted with no arm"),
    ("hand_mirrored", (0.0,), "hand mirrored onto the wrong side"),
    ("hand_duplicate", (1.1,), "hand duplicated beside itself"),
    ("finger_add", (35.0,), "sixth finger (copy turned 35°)"),
    ("finger_erase", (0.0,), "finger painted out"),
)


def _real(name: str, row: dict) -> bool:
    return row["category"] != "gen"


def judge_at_hand(report, case, ctx, builder, amount, photo) -> dict:
    """Found: a finding whose region meets the box where the defect was made (for builders that
    record it; the older builders: any finding). ``placed`` says which."""
    from tests.hand_defects import DEFECT_AT

    rules = sorted({r for f in report.findings for r in f.evidence.get("rules", [])}) or None
    box = DEFECT_AT.pop(id(case.candidate), None)
    if box is None:
        return {"hit": bool(report.findings), "detail": rules}
    x0, y0, x1, y1 = box

    def meets(f) -> bool:
        if f.region is None or f.region.box is None:
            return False
        a0, b0, a1, b1 = f.region.box
        return a0 < x1 and x0 < a1 and b0 < y1 and y0 < b1

    at = [f for f in report.findings if meets(f)]
    return {"hit": bool(at), "placed": bool(at), "detail": sorted({r for f in at for r in f.evidence["rules"]}) or rules}


def specs() -> list:
    """hand_malformed rows: made defects, clean photos and variants, generated images."""
    from bench.accuracy import Spec, judge_any, note_alarms, note_misses
    from tests.test_hands import FOUND, MISSED

    hand_defects = set(FOUND) | set(MISSED)
    no_hand_defect = lambda name, row: name not in hand_defects  # noqa: E731
    rows = []
    for builder, amounts, label in DEFECT_ROWS:
        rows.append(Spec("hand_malformed", f"made: {label}", "defect",
                         tuple((builder, a, "alone") for a in amounts), photos=_real, judge=judge_at_hand,
                         note=note_misses, tuned_on="fit"))
    rows.append(Spec("hand_malformed", "real photos with hands (manifest)", "clean", (("untouched", 0.0, "alone"),),
                     photos=lambda name, row: _real(name, row) and int(row["hands_visible"] or 0) > 0,
                     judge=judge_any, note=note_alarms, tuned_on="fit"))
    for builder, amount, label in (("untouched", 0.0, "other photos"),
                                   ("mirrored_only", 0.0, "other photos, mirrored"),
                                   ("jpeg_only", 70.0, "other photos, JPEG q70"),
                                   ("rotate", 5.0, "other photos, rotated 5°"),
                                   ("downscale", 0.5, "other photos, scaled to 50 %")):
        rows.append(Spec("hand_malformed", label, "clean", ((builder, amount, "alone"),), readme="0/50",
                         photos=no_hand_defect, judge=judge_any, note=note_alarms, tuned_on="fit"))
    # Out-of-sample: never fitted on, in either half.
    rows.append(Spec("hand_malformed", "generated images with hand defects (out-of-sample)", "defect",
                     (("untouched", 0.0, "alone"),), readme="4/5", photos=lambda name, row: name in hand_defects,
                     judge=judge_any, note=note_misses))
    return rows


def builders() -> dict[str, Callable]:
    """More case builders by name: (image, amount) -> tests.defects.Case."""
    from tests.hand_defects import HAND_DEFECTS

    return dict(HAND_DEFECTS)
