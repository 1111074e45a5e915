"""Findings as the loop tracks them: records with their masks on disk, followed from pass to pass.

A check reports findings afresh on every image. The loop needs to know that the hand_malformed
finding after a repair is the same defect as the one before it (so it can say "improved" or "gone",
and count attempts per defect). :func:`match_keys` gives each new finding the key of the old finding
of the same kind whose region it overlaps, or a new key. :func:`still_open` asks the same question
of the defects a run has left open: one the checks no longer find on the current image (a tilt that
was only the mirror's, gone once the picture is flipped back) is no longer open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence, TypeVar

import numpy as np

from fixloop.agent.state import FindingRecord, OpenDefect
from fixloop.checks.base import Finding, Region

if TYPE_CHECKING:
    from fixloop.agent.files import RunFiles

# Two findings of one kind are one defect when both cover the whole image, or both have regions
# that overlap this much (intersection over the smaller box). A regional finding and a whole-image
# one are different defects (a soft patch that became a soft picture is a new, wider defect).
SAME_REGION_OVERLAP = 0.3

Boxed = TypeVar("Boxed", FindingRecord, OpenDefect)  # a record with a ``box`` (None: whole image)


def _overlap(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection area over the smaller box's area."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return inter / smaller if smaller > 0 else 0.0


def same_place(a: Sequence[int] | None, b: Sequence[int] | None) -> bool:
    """Both whole-image, or regions that overlap by ``SAME_REGION_OVERLAP``."""
    if a is None or b is None:
        return a is None and b is None
    return _overlap(a, b) >= SAME_REGION_OVERLAP


def new_key(kind: str, box: Sequence[int] | None) -> str:
    return kind if box is None else f"{kind}@{','.join(str(int(v)) for v in box)}"


def match_keys(findings: Sequence[Finding], previous: Sequence[FindingRecord]) -> list[str]:
    """One key per finding: the key of the previous record it continues, else a new one."""
    taken: set[str] = set()
    old_keys = {old.key for old in previous}
    keys: list[str] = []
    for finding in findings:
        box = None if finding.region is None else finding.region.box
        key = None
        for old in previous:
            if old.kind != finding.kind or old.key in taken:
                continue
            if same_place(box, old.box):
                key = old.key
                break
        if key is None:
            key = new_key(finding.kind, box)
            while key in taken or key in old_keys:  # never reuse a key another defect had
                key += "+"
        taken.add(key)
        keys.append(key)
    return keys


def still_open(defects: Mapping[str, OpenDefect],
               findings: Sequence[FindingRecord]) -> tuple[dict[str, OpenDefect], list[OpenDefect]]:
    """(still open, gone): the defects of ``defects`` the checks still find among ``findings`` (of
    the current image), and those they no longer find.

    A defect is still found when a finding has its key, or, should the keys differ, when a finding of
    its kind sits at its place (both whole-image, or boxes that overlap); it is then kept under that
    finding's key and box, so triage does not take it for a new defect. A defect no finding matches
    is gone: an open list never names what the checks no longer find.
    """
    by_key = {f.key: f for f in findings}
    kept: dict[str, OpenDefect] = {}
    gone: list[OpenDefect] = []
    for key, defect in defects.items():
        match = by_key.get(key)
        if match is not None and match.kind == defect.kind:
            kept[key] = defect
    for key, defect in defects.items():
        if key in kept:
            continue
        match = next((f for f in findings if f.kind == defect.kind and f.key not in kept
                      and f.key not in defects and same_place(f.box, defect.box)), None)
        if match is None:
            gone.append(defect)
        else:
            kept[match.key] = defect.model_copy(update={"key": match.key, "box": match.box})
    return kept, gone


def record_findings(findings: Sequence[Finding], previous: Sequence[FindingRecord], files: "RunFiles",
                    prefix: str) -> list[FindingRecord]:
    """Records of ``findings`` (keys carried over from ``previous``), their masks saved in the run folder."""
    records = []
    for index, (finding, key) in enumerate(zip(findings, match_keys(findings, previous))):
        mask_file = None
        if finding.mask is not None and finding.mask.any():
            mask_file = files.save_mask(finding.mask, f"{prefix}-finding-{index:02d}-{finding.kind}.png")
        records.append(FindingRecord(
            key=key,
            kind=finding.kind,
            stage=finding.stage.value,
            priority=finding.priority.value,
            score=finding.score,
            threshold=finding.threshold,
            unit=finding.unit,
            message=finding.message,
            template=finding.repair_template,
            box=None if finding.region is None else finding.region.box,
            mask_file=mask_file,
            evidence=plain_data(finding.evidence),
            inherited=finding.inherited,
        ))
    return records


def shift_records(records: Sequence[Boxed], extend: dict[str, int] | None) -> list[Boxed]:
    """``records`` (findings or open defects) with their boxes moved onto a canvas grown by ``extend``
    (px per side): the old picture now starts ``left`` px right and ``top`` px down. Keys stay as
    they were."""
    dx, dy = (int((extend or {}).get(side, 0)) for side in ("left", "top"))
    if not (dx or dy):
        return list(records)
    return [r if r.box is None else r.model_copy(update={"box": [r.box[0] + dx, r.box[1] + dy, r.box[2] + dx, r.box[3] + dy]})
            for r in records]


def flip_records(records: Sequence[Boxed], axis: str, size: tuple[int, int]) -> list[Boxed]:
    """``records`` (findings or open defects) with their boxes mirrored as a flip of the picture
    (``size`` = (w, h)) moved them: ``axis`` "horizontal" is left-right, "vertical" upside down.
    Keys stay as they were."""
    w, h = size
    flipped = []
    for r in records:
        if r.box is None:
            flipped.append(r)
            continue
        x0, y0, x1, y1 = r.box
        box = [w - x1, y0, w - x0, y1] if axis == "horizontal" else [x0, h - y1, x1, h - y0]
        flipped.append(r.model_copy(update={"box": box}))
    return flipped


def to_finding(record: FindingRecord, mask: np.ndarray | None = None) -> Finding:
    """A :class:`Finding` again (for the prompt renderer and the local tools that read one)."""
    region = None
    if record.box is not None:
        region = Region(box=list(record.box))
    return Finding(kind=record.kind, stage=record.stage, priority=record.priority, score=record.score,
                   threshold=record.threshold, unit=record.unit, message=record.message,
                   repair_template=record.template, region=region, evidence=dict(record.evidence),
                   check=record.kind, mask=mask)


MAX_SEVERITY = 1e6


def severity(record: FindingRecord | dict) -> float:
    """How far past its limit a finding is, >= 1 (1 = at the limit), whichever way its score runs.

    Most scores grow with the defect (EV off, share of pixels changed): |score| / |threshold|. Some
    fall (texture_blur's detail ratio, a finger gap, a face similarity): |threshold| / |score|. A
    finding only exists past its limit, so the side of the limit its score is on tells which.
    """
    score = abs(record["score"] if isinstance(record, dict) else record.score)
    threshold = abs(record.get("threshold", 0.0) if isinstance(record, dict) else record.threshold)
    if threshold == 0:
        return score
    if score >= threshold:
        return score / threshold
    return threshold / score if score > 0 else MAX_SEVERITY


def plain_data(value):
    """Evidence as JSON-able data (numpy scalars and arrays become numbers and lists)."""
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
