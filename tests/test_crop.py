"""subject_cropped on the shared photos: crops made here from whole-body photos, portraits, the manifest.

The whole-body photos are the manifest rows with ``full_body = yes`` and ``cropped_at_border = none``
(7 photos). Each crop is placed from the photo's own pose (tests/defects.py) and judged twice: the
candidate alone (single image) and with the photo as its source (a re-framing the check can map).
Run with ``-s`` to see the per-case table and the agreement with the manifest.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from fixloop.checks.context import CheckContext
from fixloop.checks.engine import run_checks
from tests import defects
from tests.conftest import manifest, photo, photo_names

WHOLE_BODY = sorted(n for n, r in manifest().items() if r["full_body"] == "yes" and r["cropped_at_border"] == "none")
EDGES = ("top", "bottom", "left", "right")


@lru_cache(maxsize=None)
def _case(defect: str, name: str, amount: float) -> defects.Case:
    return defects.make(defect, photo(name), amount)


def _run(candidate, source=None, policy=None):
    report = run_checks(CheckContext.from_arrays(candidate, source), policy, names=["subject_cropped"])
    return report.checks[0], (report.findings[0] if report.findings else None)


def _edges(finding) -> list[str]:
    return [] if finding is None else finding.evidence["edges"]


def test_whole_body_set():
    assert len(WHOLE_BODY) == 7
    with pytest.raises(ValueError, match="no hand"):
        defects.crop_through_hand(photo("body_seated_01.jpg"))


# (defect, amount, edge it must be found at, least number found of 7 on the candidate alone)
CUTS = [
    ("crop_through_face", 0.5, "top", 5),  # top edge half-way between the eyes and the mouth
    ("crop_through_shins", 0.5, "bottom", 5),  # bottom edge half-way from the knees to the ankles
    ("crop_half_right", 0.0, "right", 4),  # right edge through the nose line: half the person gone
    ("crop_through_hand", 0.5, "right|left", 4),  # side edge through the palm of the outermost seen hand
]
NO_SEEN_HAND = {"body_seated_01.jpg"}  # both hands hidden (pose visibility 0.05 and 0.40): no hand crop


@pytest.mark.parametrize("defect,amount,edge,least", CUTS, ids=[c[0] for c in CUTS])
def test_injected_crops_found_at_the_right_edge(defect, amount, edge, least, policy):
    alone, with_source = 0, 0
    names = [n for n in WHOLE_BODY if not (defect == "crop_through_hand" and n in NO_SEEN_HAND)]
    for name in names:
        case = _case(defect, name, amount)
        h, w = case.candidate.shape[:2]
        wanted = _wanted_edge(defect, case, name)
        run, finding = _run(case.candidate, None, policy)
        found_alone = wanted in _edges(finding)
        alone += found_alone
        run_s, finding_s = _run(case.candidate, case.source, policy)
        assert run_s.status.value == "ok", (name, run_s.reason)
        assert finding_s is not None and wanted in _edges(finding_s), (name, finding_s and finding_s.evidence)
        assert not finding_s.inherited, name  # the edit's crop, not the source's framing
        with_source += 1
        for f in (finding, finding_s):
            if f is None or wanted not in _edges(f):
                continue
            assert f.kind == "subject_cropped" and f.priority.value == "P0" and f.stage.value == "structure"
            extend = f.evidence["extend"]
            assert extend[wanted] > 0
            side = w if wanted in ("left", "right") else h
            assert f.evidence["extend_fraction"][wanted] == pytest.approx(extend[wanted] / side, abs=1e-3)
            x0, y0, x1, y1 = f.region.box
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert finding_s.evidence["source_reframed"] is True
        assert finding_s.evidence["whole_in_source"], finding_s.evidence
        assert "whole in the source" in finding_s.message
        print(f"{defect} {name}: alone {_edges(finding) or run.reason or '-'} | with source {_edges(finding_s)}")
    print(f"{defect}: found at the {edge} edge alone {alone}/{len(names)}, with the source {with_source}/{len(names)}")
    assert alone >= least


def _wanted_edge(defect: str, case: defects.Case, name: str) -> str:
    if defect != "crop_through_hand":
        return {"crop_through_face": "top", "crop_through_shins": "bottom", "crop_half_right": "right"}[defect]
    return "right" if case.candidate.shape[1] < case.source.shape[1] and _kept_left(case) else "left"


def _kept_left(case: defects.Case) -> bool:
    w = case.candidate.shape[1]
    return bool(np.abs(case.source[:, :w].astype(int) - case.candidate.astype(int)).mean() < 8)


@pytest.mark.parametrize("defect,amount,edge", [("crop_through_face", 0.5, "top"),
                                                ("crop_through_shins", 0.5, "bottom"),
                                                ("crop_half_right", 0.0, "right")])
def test_extension_holds_the_person(defect, amount, edge, policy):
    """Growing the crop by the reported extension (taken from the source) leaves nothing cut at that edge."""
    for name in ("body_skier_01.jpg", "body_soccer_01.jpg"):
        case = _case(defect, name, amount)
        _, finding = _run(case.candidate, case.source, policy)
        assert finding is not None and edge in finding.evidence["edges"]
        px = finding.evidence["extend"][edge]
        h, w = case.candidate.shape[:2]
        grown = {"top": case.source[max(0, case.source.shape[0] - h - px):],
                 "bottom": case.source[: h + px],
                 "right": case.source[:, : w + px]}[edge]
        _, again = _run(grown, None, policy)
        assert edge not in _edges(again), (name, again and again.evidence)


def test_whole_people_near_the_edge_are_not_cropped(policy):
    """The frame tightened around the whole person: no finding at 10 % of their height, at most one
    of seven at 5 % (a 130 x 174 px crop of the smallest person, whose heel the pose puts past the edge)."""
    counts = {}
    for amount in (0.1, 0.05):
        flagged = []
        for name in WHOLE_BODY:
            case = _case("crop_whole_margin", name, amount)
            for source in (None, case.source):
                run, finding = _run(case.candidate, source, policy)
                assert run.status.value == "ok", (name, run.reason)
                if finding is not None:
                    flagged.append((name, source is not None, finding.evidence["parts"]))
        counts[amount] = flagged
        print(f"whole person, margin {amount:.0%} of their height: {len(flagged)} of 14 runs flagged {flagged}")
    assert counts[0.1] == []
    assert len({name for name, _, _ in counts[0.05]}) <= 1


def test_uncropped_whole_body_photos_pass(policy):
    for name in WHOLE_BODY:
        run, finding = _run(photo(name), None, policy)
        assert run.status.value == "ok" and finding is None, (name, finding and finding.evidence)


def test_portraits_are_not_cut_at_the_bottom(policy):
    """Head-and-shoulders and half-body portraits: the torso running out of the bottom edge (and the
    shoulders out of the sides) is a framing. Only a cut face or hand, or feet under a knee in the
    frame (a rider, face_harington_03), is reported."""
    with_findings = {}
    for name in photo_names("face"):
        run, finding = _run(photo(name), None, policy)
        assert run.status.value == "ok", (name, run.reason)
        if finding is None:
            continue
        with_findings[name] = [(p["part"], p["edge"]) for p in finding.evidence["parts"]]
        for part, edge in with_findings[name]:
            assert part != "torso" or edge in ("left", "right")
            if edge == "bottom":
                assert part.endswith("foot"), (name, part)
    print("face_* photos with a finding:", with_findings)
    assert with_findings["face_obama_partial_01.jpg"] == [("face", "left"), ("torso", "left")]
    assert len(with_findings) <= 4  # of 21; the two hand findings (biden_01, obama_02) are pose guesses of hidden hands


def test_agreement_with_the_manifest(policy):
    """All 55 photos against ``cropped_at_border`` (edges that cut any person, background figures and
    every portrait's bottom edge included): no finding on a photo labelled none, and most edges found
    are labelled."""
    rows = manifest()
    found, skipped = {}, []
    for name in photo_names():
        run, finding = _run(photo(name), None, policy)
        if run.status.value == "skipped":
            skipped.append(name)
        found[name] = set(_edges(finding))
    labels = {n: set() if r["cropped_at_border"] == "none" else set(r["cropped_at_border"].split(";"))
              for n, r in rows.items()}
    table = []
    for edge in EDGES:
        tp = sum(edge in found[n] and edge in labels[n] for n in found)
        fp = sum(edge in found[n] and edge not in labels[n] for n in found)
        fn = sum(edge not in found[n] and edge in labels[n] for n in found)
        tn = len(found) - tp - fp - fn
        table.append((edge, tp, fp, fn, tn))
        print(f"{edge:6s} found&labelled {tp:2d}  found only {fp:2d}  labelled only {fn:2d}  neither {tn:2d}")
    print("skipped (no pose, no face):", skipped)
    none = [n for n in found if not labels[n]]
    assert len(found) == 55 and len(none) == 8
    assert not any(found[n] for n in none)
    tp = sum(t[1] for t in table)
    fp = sum(t[2] for t in table)
    assert tp >= 7 and fp <= 2  # found only: body_skiers_01 bottom (a boot cut, unlabelled), face_biden_01 right


def test_second_main_face_cut_at_a_side(policy):
    """Faces other than the pose person are judged too: the right half of group_couple_01 cuts the
    left person's face (person 2 there: the pose follows the right person)."""
    image = photo("group_couple_01.jpg")
    run, finding = _run(image[:, int(0.78 * image.shape[1]):], None, policy)
    assert finding is not None, run
    parts = finding.evidence["parts"]
    assert any(p["part"] == "face" and p["edge"] == "left" for p in parts), parts


def test_cut_already_in_the_source_is_not_the_edit(policy):
    from fixloop.checks.context import CheckContext
    from fixloop.checks.engine import run_checks
    from fixloop.checks.policy import load_policy

    image = photo("face_obama_partial_01.jpg")
    candidate = defects.jpeg(image, 90)
    run, finding = _run(candidate, image, policy)
    assert run.status.value == "ok" and finding is not None and finding.inherited, finding
    assert "left" in finding.evidence["edges"] and "as the source's frame already did" in finding.message
    assert finding.evidence["cut_in_source"] and not finding.evidence["whole_in_source"]
    report = run_checks(CheckContext.from_arrays(candidate, image), policy, names=["subject_cropped"])
    assert report.verdict == "pass", report.findings  # inherited: not the edit's doing
    strict = load_policy()
    strict.gate.count_inherited = True
    assert run_checks(CheckContext.from_arrays(candidate, image), strict, names=["subject_cropped"]).verdict == "fail"


def test_no_person_is_skipped(policy):
    run, finding = _run(photo("composite_clean_lemur_01.png"), None, policy)
    assert run.status.value == "skipped" and "no person" in run.reason and finding is None
