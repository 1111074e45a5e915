"""Findings as the loop tracks them: records with their masks on disk, followed from pass to pass.

A check reports findings afresh on every image. The loop needs to know that the hand_malformed
finding after a repair is the same defect as the one before it (so it can say "improved" or "gone",
and count attempts per defect). :func:`match_keys` gives each new finding the key of the old finding
of the same kind whose region it overlaps, or a new key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from agent.state import FindingRecord
from checks.base import Finding, Region

if TYPE_CHECKING:
    from agent.files import RunFiles

# Two regions of the same kind are one defect when they overlap this much (intersection over the
# smaller box) ...
SAME_REGION_OVERLAP = 0.3


def _overlap(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection area over the smaller box's area."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return inter / smaller if smaller > 0 else 0.0


def new_key(kind: str, box: Sequence[int] | None) -> str:
    return kind if box is None else f"{kind}@{','.join(str(int(v)) for v in box)}"


def match_keys(findings: Sequence[Finding], previous: Sequence[FindingRecord]) -> list[str]:
    """One key per finding: the key of the previous record it continues, else a new one."""
    taken: set[str] = set()
    keys: list[str] = []
    for finding in findings:
        box = None if finding.region is None else finding.region.box
        key = None
        for old in previous:
            if old.kind != finding.kind or old.key in taken:
                continue
            if box is None or old.box is None or _overlap(box, old.box) >= SAME_REGION_OVERLAP:
                key = old.key
                break
        if key is None:
            key = new_key(finding.kind, box)
            while key in taken:  # two findings of one kind with the same box: keep keys unique
                key += "+"
        taken.add(key)
        keys.append(key)
    return keys


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
            evidence=_plain(finding.evidence),
        ))
    return records


def to_finding(record: FindingRecord, mask: np.ndarray | None = None) -> Finding:
    """A :class:`Finding` again (for the prompt renderer and the local tools that read one)."""
    region = None
    if record.box is not None:
        region = Region(box=list(record.box))
    return Finding(kind=record.kind, stage=record.stage, priority=record.priority, score=record.score,
                   threshold=record.threshold, unit=record.unit, message=record.message,
                   repair_template=record.template, region=region, evidence=dict(record.evidence),
                   check=record.kind, mask=mask)


def severity(record: FindingRecord | dict) -> float:
    """How far past its limit a finding is: |score| / |threshold| (1 = at the limit)."""
    score = record["score"] if isinstance(record, dict) else record.score
    threshold = record.get("threshold", 0.0) if isinstance(record, dict) else record.threshold
    return abs(score) / abs(threshold) if threshold else abs(score)


def _plain(value):
    """Evidence as JSON-able data (numpy scalars and arrays become numbers and lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
