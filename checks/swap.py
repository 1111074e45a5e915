"""subjects_swapped: two people exchanged faces, or one person's face now appears twice.

With two or more different people in the image before the edit (the source, or else the
references) and two or more faces in the candidate, every face is embedded with the identity
embedder of ``checks/identity.py`` (dlib by default, InsightFace's ArcFace when the policy says so;
embeddings are shared with ``identity_drift``). The people before the edit are grouped into
identities (faces the embedder calls one person are one identity), and each candidate face is
paired with the face that stood at the same place (face centre as a share of the image size,
optimal assignment; the source's faces are placed in the candidate's frame first, so a result that
was only mirrored, turned, zoomed or shifted pairs each face with its own person, see
:mod:`fixloop.checks.registration`). A candidate face that no longer matches its own person but matches another is
carrying that person's identity:

- both faces carry each other's identity: **swapped** (the left person now has the right person's
  face and the other way round);
- the other person still has their own face too: **duplicated** (one identity on two faces, one
  person gone);
- otherwise the identity **moved** (part of a longer cycle, or the other person left the frame).

With a source, every pair of faces the source and the candidate share is also tested without the
threshold (the **pairwise** test, run first): two faces each nearer the other's old face than its own,
by more than ``swap_margin`` (Euclidean distance of the unit-length embeddings), were exchanged. Faces of
one photo share light, lens and resolution, and different people there are often nearer each other than
the threshold (0.33 to 0.44 in three photos of the shared set), which made the check skip ("fewer than
two different people") or miss the exchange; with a source, two faces at two places are enough to test.
The **assignment** test covers an exchange where one of the two transplanted faces matches neither person
(a face pasted onto a turned or tilted head): when both faces' inner pixels changed (they no longer
correlate with the registered source's at ``unchanged_correlation``) and the two people fit the two places
better exchanged than where they stood, in total, by more than ``assignment_margin``, they were exchanged.
One face that took another's identity while that other face stayed as it was (a duplicate) leaves one
face unchanged and is kept out of it. Both tests need one of the two faces to match the other person
within the embedder's threshold: two faces replaced by two strangers are identity drift, not an exchange.
A face the detector misses after the edit where a source face stood is sought again as in
``identity_drift`` (:func:`fixloop.checks.identity.refound_faces`). The finding's score is then the smaller
of the two leads (own distance minus crossed distance) against ``swap_margin`` (for the assignment test,
their sum against ``assignment_margin``), unless the threshold test holds as well, when it is the
embedder's score as below.

Two candidate faces that the embedder calls one person, although they were two different people
before, are also reported as duplicated. Without a source, positions come from a reference that
shows several people in one frame; several single-face references give identities but no positions,
so only a duplicated identity (two candidate faces matching one reference person) can be told.

Faces the edit left alone (their inner pixels still correlate with the registered source's at
``unchanged_correlation``, see ``checks/identity.py``) were exchanged with nobody: an event whose
faces are all such faces is not reported.

Each finding's region covers the faces involved; the repair mask is each face with hairline, chin
and ears (see :func:`fixloop.checks.identity.face_repair_mask`), the input of a per-subject (two-subjects) repair.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from fixloop.checks.analyses import faces
from fixloop.checks.base import CheckSkipped, make_finding, register_check
from fixloop.checks.context import CheckContext
from fixloop.checks.geometry import union_box
from fixloop.checks.identity import (
    EmbeddedFace,
    FaceEmbedder,
    Identity,
    IdentityParams,
    cluster_faces,
    embedded_faces,
    face_repair_mask,
    faces_in_candidate_frame,
    get_embedder,
    every_face_kept,
    face_correlation,
    kept_from_source,
    pair_by_position,
    position_names,
    reference_faces,
    refound_faces,
    the_face,
    usable,
)


class SwapParams(IdentityParams):
    """Embedder, pairing and mask settings, as identity_drift's (own section of the policy), and the
    margin of the relative (pairwise) test."""

    swap_margin: float = Field(ge=0, lt=2, description="Euclidean distance between unit-length embeddings by "
                               "which each of two faces must be nearer the other person than its own")
    assignment_margin: float = Field(ge=0, lt=4, description="Euclidean distance between unit-length embeddings "
                                     "by which the exchanged pairing of two faces whose pixels both changed must be "
                                     "nearer, in total, than the kept pairing")


@dataclass(frozen=True)
class SwapEvent:
    kind: str  # "swapped", "duplicated" or "moved"
    faces: list[EmbeddedFace]  # the candidate faces involved
    score: float  # the embedder's score of the face against the person it now looks like
    own_score: float | None  # ... and against the person who stood there before
    message: str
    evidence: dict
    threshold: float | None = None  # the event's own threshold and unit (the pairwise test), else the embedder's
    unit: str | None = None


@dataclass(frozen=True)
class SwapMeasurement:
    basis: str
    people_before: int
    faces_after: int
    events: list[SwapEvent]
    scores: list[list[float]]  # before face x candidate face


def _before_faces(ctx: CheckContext, embedder: FaceEmbedder,
                  min_face_px: float) -> tuple[str, list[tuple[str, EmbeddedFace]], bool]:
    """The faces before the edit as (label, face), and whether their positions compare with the candidate's."""
    if ctx.source is not None:
        kept = usable(embedded_faces(ctx.source, embedder), min_face_px)
        names = position_names([f.centre for f in kept])  # where they stand in the source, as the labels say
        return "source", [(f"the person{' ' + n if n else ''} in the source", f)
                          for f, n in zip(faces_in_candidate_frame(ctx, kept), names)], True
    if not ctx.references:
        raise CheckSkipped("needs the image before the edit (--source) or identity reference images (--reference)")
    found = reference_faces(ctx, embedder, min_face_px)
    per_image: dict[int, list] = {}
    for (image, _), label, face in found:
        per_image.setdefault(image, []).append((label, face))
    group = max(per_image.values(), key=len, default=[])
    if len(group) >= 2:
        return "references", group, True  # one frame that shows several people: positions mean something
    return "references", [(label, face) for _, label, face in found], False


def measure_swaps(ctx: CheckContext, embedder: FaceEmbedder, params: SwapParams) -> SwapMeasurement:
    basis, labelled, positioned = _before_faces(ctx, embedder, params.min_face_px)
    before = [face for _, face in labelled]
    identities = cluster_faces([((0, i), label, face) for i, (label, face) in enumerate(labelled)], embedder)
    # Two faces of one photo share light, lens and resolution: different people there are often nearer
    # than the threshold (0.33 to 0.44 in body_women_01, body_boardgame_01, gen_hand_extra_hand_01), so
    # with a source, two faces at two places are enough: the pairwise test below needs no threshold.
    enough = len(before) >= 2 if basis == "source" else len(identities) >= 2
    if not enough:
        raise CheckSkipped(f"the {basis} show{'s' if basis == 'source' else ''} fewer than two different people "
                           f"(faces at least {params.min_face_px:.0f} px wide): no one to swap with")
    person = {i: k for k, identity in enumerate(identities) for _, i in identity.members}
    found = embedded_faces(ctx.candidate, embedder)
    if basis == "source":  # faces the detector missed where a source face stood, found again
        found = found + refound_faces(ctx.candidate, embedder, [b.box for b in before],
                                      usable(found, params.min_face_px), params.max_center_shift)
    after = usable(found, params.min_face_px)
    if len(after) < 2:
        raise CheckSkipped(f"the candidate shows fewer than two faces at least {params.min_face_px:.0f} px wide "
                           f"(the {basis} show{'s' if basis == 'source' else ''} {len(identities)} people): "
                           "nothing to compare for a swap")
    scores = [[embedder.score(b.vector, a.vector) for a in after] for b in before]
    if positioned:
        # candidate faces whose pixels no longer correlate with the registered source's: faces the edit
        # changed (None where that cannot be told: no source of the same framing)
        changed = [None if basis != "source" else _changed(ctx, a.box, params) for a in after]
        events = _positional_events(embedder, [label for label, _ in labelled], before, after, person, scores,
                                    params.max_center_shift, basis, params.swap_margin, changed,
                                    params.assignment_margin)
    else:
        events = _pooled_events(embedder, identities, after)
    return SwapMeasurement(basis=basis, people_before=len(identities), faces_after=len(after), events=events,
                           scores=scores)


def _positional_events(embedder: FaceEmbedder, labels: list[str], before: list[EmbeddedFace],
                       after: list[EmbeddedFace], person: dict[int, int], scores: list[list[float]],
                       max_shift: float, basis: str, margin: float, changed: list[bool | None] | None = None,
                       assignment_margin: float = 0.0) -> list[SwapEvent]:
    pairs = pair_by_position([b.centre for b in before], [a.centre for a in after], max_shift)
    at = {i: j for i, j, _ in pairs}  # before face -> the candidate face at its place
    where = position_names([a.centre for a in after])  # where each candidate face stands
    carried: dict[int, int] = {}  # before face i -> before face k whose identity the face at i's place now shows
    for i, j in at.items():
        if embedder.same(scores[i][j]):
            continue
        others = [k for k in range(len(before)) if person[k] != person[i] and embedder.same(scores[k][j])]
        if others:
            carried[i] = min(others, key=lambda k: embedder.dissimilarity(before[k].vector, after[j].vector))
    events: list[SwapEvent] = []
    involved: set[int] = set()
    # Every pair of faces the source and the candidate share, whatever the threshold says, is tested
    # as an exchange. Faces of one photo can be nearer each other than the threshold, so the test below
    # (which needs each face to match the other person outright) misses most exchanges in group photos.
    # - pairwise: each face nearer the other person's old face than its own by ``margin`` (Euclidean
    #   distance of unit vectors);
    # - assignment: both faces' pixels changed (see :func:`_changed`) and the exchanged pairing nearer in
    #   total than the kept one by ``assignment_margin`` (the better of the two assignments of two
    #   identities to two places). A face transplanted onto a turned or tilted head can match neither
    #   person well (group_cardgame_01: 0.484 from its own, 0.493 from the other) while its partner
    #   plainly carries the other identity (0.227 against 0.496); the pairwise test misses that. The
    #   pixel gate keeps out one face that took another's identity while that other face stayed as it
    #   was (a duplicate, whose totals can be near a tie).
    # Either test also needs one of the two faces to be the other person by the embedder's threshold: two
    # faces replaced by two strangers lead each other by chance (0.023 and 0.026 in body_women_01 and
    # group_couple_01 on the fit half, where each stranger is 0.51 or more from both people); an exchanged
    # face is 0.13 to 0.31 from the person it came from (fit half).
    tests = []
    for i, k in itertools.combinations(sorted(at, key=lambda n: before[n].centre[0]), 2):
        j, jk = at[i], at[k]
        own_i, cross_i = _distance(before[i], after[j]), _distance(before[k], after[j])
        own_k, cross_k = _distance(before[k], after[jk]), _distance(before[i], after[jk])
        lead = min(own_i - cross_i, own_k - cross_k)
        total = (own_i - cross_i) + (own_k - cross_k)
        if not (embedder.same(scores[k][j]) or embedder.same(scores[i][jk])):
            continue  # neither face is the other person: two faces replaced (identity_drift's), not exchanged
        if lead > margin:
            test = "pairwise"
        elif changed is not None and changed[j] and changed[jk] and total > assignment_margin:
            test = "assignment"
        else:
            continue
        tests.append((total, test, lead, i, k, j, jk, own_i, cross_i, own_k, cross_k))
    for total, test, lead, i, k, j, jk, own_i, cross_i, own_k, cross_k in sorted(tests, key=lambda t: -t[0]):
        if {i, k} & involved:
            continue
        involved.update({i, k})
        face, other = the_face(where[j]), the_face(where[jk])
        # when the threshold says so too (each face matches the other person and not its own), the score is
        # the embedder's; otherwise it is the test's own: the smaller of the two leads against the margin
        # (pairwise), or the total lead against the assignment margin
        outright = (embedder.same(scores[k][j]) and embedder.same(scores[i][jk])
                    and not embedder.same(scores[i][j]) and not embedder.same(scores[k][jk]))
        if outright:
            score, threshold, unit = embedder.best([scores[k][j], scores[i][jk]]), None, None
        elif test == "pairwise":
            score, threshold = lead, margin
            unit = f"Euclidean distance to its own person minus to the other person ({embedder.name} embedding, unit length)"
        else:
            score, threshold = total, assignment_margin
            unit = (f"total Euclidean distance of the kept pairing minus the exchanged pairing ({embedder.name} "
                    "embedding, unit length)")
        if test == "pairwise":
            message = (f"{face.capitalize()} and {other} have exchanged identities: {face} now looks more like "
                       f"{labels[k]} than like {labels[i]} (distance {cross_i:.3f} against {own_i:.3f}) and {other} "
                       f"more like {labels[i]} than like {labels[k]} ({cross_k:.3f} against {own_k:.3f}).")
        else:
            message = (f"{face.capitalize()} and {other} have exchanged identities: both faces changed, and "
                       f"{labels[k]} and {labels[i]} fit them better exchanged (distances {cross_i:.3f} and "
                       f"{cross_k:.3f}, together {cross_i + cross_k:.3f}) than where they stood ({own_i:.3f} and "
                       f"{own_k:.3f}, together {own_i + own_k:.3f}).")
        events.append(SwapEvent(
            kind="swapped", faces=[after[j], after[jk]], score=score, threshold=threshold, unit=unit,
            own_score=scores[i][j], message=message,
            evidence={"basis": basis, "kind": "swapped", "test": test, "face_position": where[j] or "only face",
                      "other_face_position": where[jk], "was": labels[i], "now_looks_like": labels[k],
                      "score_vs_own_person": round(scores[i][j], 4), "score_vs_other_person": round(scores[k][j], 4),
                      "other_score_vs_own_person": round(scores[k][jk], 4),
                      "other_score_vs_first_person": round(scores[i][jk], 4),
                      "distances": {"own": [round(own_i, 4), round(own_k, 4)],
                                    "crossed": [round(cross_i, 4), round(cross_k, 4)]},
                      "margin": margin, "assignment_margin": assignment_margin}))
    for i, k in sorted(carried.items(), key=lambda item: before[item[0]].centre[0]):
        if i in involved:
            continue
        j = at[i]
        face = the_face(where[j])
        base = {"basis": basis, "face_position": where[j] or "only face", "was": labels[i], "now_looks_like": labels[k],
                "score_vs_own_person": round(scores[i][j], 4), "score_vs_other_person": round(scores[k][j], 4)}
        if carried.get(k) == i and k not in involved:
            jk = at[k]
            other = the_face(where[jk])
            involved.update({i, k})
            events.append(SwapEvent(
                kind="swapped", faces=[after[j], after[jk]], score=embedder.best([scores[k][j], scores[i][jk]]),
                own_score=scores[i][j],
                message=(f"{face.capitalize()} and {other} have exchanged identities: {face} now looks like "
                         f"{labels[k]} ({embedder.describe(scores[k][j])}) and {other} like {labels[i]} "
                         f"({embedder.describe(scores[i][jk])})."),
                evidence={**base, "kind": "swapped", "other_face_position": where[jk],
                          "other_score_vs_own_person": round(scores[k][jk], 4),
                          "other_score_vs_first_person": round(scores[i][jk], 4)}))
        elif k in at and k not in involved and embedder.same(scores[k][at[k]]):
            involved.add(i)
            events.append(SwapEvent(
                kind="duplicated", faces=[after[j]], score=scores[k][j], own_score=scores[i][j],
                message=(f"{face.capitalize()} now looks like {labels[k]} ({embedder.describe(scores[k][j])}), "
                         f"who is still {where[at[k]] or 'in the picture'}: one identity is on two faces and {labels[i]} "
                         "is gone."),
                evidence={**base, "kind": "duplicated"}))
        else:
            involved.add(i)
            events.append(SwapEvent(
                kind="moved", faces=[after[j]], score=scores[k][j], own_score=scores[i][j],
                message=(f"{face.capitalize()} now carries the identity of {labels[k]} "
                         f"({embedder.describe(scores[k][j])}) instead of {labels[i]}."),
                evidence={**base, "kind": "moved"}))
    # two different people who now look like one person, though neither matches the other's old face
    paired = sorted(at.items(), key=lambda item: before[item[0]].centre[0])
    for a in range(len(paired)):
        for b in range(a + 1, len(paired)):
            (i1, j1), (i2, j2) = paired[a], paired[b]
            if person[i1] == person[i2] or {i1, i2} & involved:
                continue
            score = embedder.score(after[j1].vector, after[j2].vector)
            if embedder.same(score):
                involved.update({i1, i2})
                events.append(SwapEvent(
                    kind="duplicated", faces=[after[j1], after[j2]], score=score, own_score=None,
                    message=(f"{the_face(where[j1]).capitalize()} and {the_face(where[j2])} now look like one person "
                             f"({embedder.describe(score)} between them), though they were {labels[i1]} and "
                             f"{labels[i2]}."),
                    evidence={"basis": basis, "kind": "duplicated", "face_positions": [where[j1], where[j2]],
                              "were": [labels[i1], labels[i2]], "score_between_faces": round(score, 4),
                              "score_between_people_before": round(embedder.score(before[i1].vector,
                                                                                  before[i2].vector), 4)}))
    return events


def _changed(ctx: CheckContext, box, params: SwapParams) -> bool | None:
    """Whether the edit changed the face at ``box``: its inner pixels correlate with the registered
    source's below ``unchanged_correlation`` (:func:`fixloop.checks.identity.face_correlation`); None
    without a source of the same framing."""
    correlation = face_correlation(ctx, box)
    return None if correlation is None else correlation < params.unchanged_correlation


def _distance(a: EmbeddedFace, b: EmbeddedFace) -> float:
    """Euclidean distance of two unit-length embeddings (any embedder)."""
    return float(np.linalg.norm(a.vector - b.vector))


def _pooled_events(embedder: FaceEmbedder, identities: list[Identity], after: list[EmbeddedFace]) -> list[SwapEvent]:
    """References without positions: one reference person matched by two or more candidate faces."""
    where = position_names([a.centre for a in after])
    carriers: dict[int, list[int]] = {}
    for j, face in enumerate(after):
        best = max(range(len(identities)), key=lambda k: identities[k].similarity(face.vector))
        if embedder.same(identities[best].score(embedder, face.vector)):
            carriers.setdefault(best, []).append(j)
    events = []
    for k, js in carriers.items():
        if len(js) < 2:
            continue
        scores = [identities[k].score(embedder, after[j].vector) for j in js]
        faces_named = ", ".join(the_face(where[j]) for j in js[:-1]) + f" and {the_face(where[js[-1]])}"
        events.append(SwapEvent(
            kind="duplicated", faces=[after[j] for j in js], score=embedder.best(scores), own_score=None,
            message=(f"{faces_named[0].upper()}{faces_named[1:]} all look like {identities[k].label} "
                     f"({embedder.describe(embedder.best(scores))}): one identity is on {len(js)} faces."),
            evidence={"basis": "references", "kind": "duplicated", "face_positions": [where[j] for j in js],
                      "looks_like": identities[k].label, "scores": [round(v, 4) for v in scores]}))
    return events


@register_check("subjects_swapped", SwapParams)
def check_subjects_swapped(ctx: CheckContext, params: SwapParams):
    """With two or more people: faces whose identities crossed positions, or one identity on two faces."""
    if ctx.source is None and not ctx.references:
        raise CheckSkipped("needs the image before the edit (--source) or identity reference images (--reference)")
    if ctx.source is not None and sum(f.box[2] - f.box[0] >= params.min_face_px for f in faces(ctx.source)) < 2:
        # as measure_swaps would say, but before any face is embedded
        raise CheckSkipped(f"the source shows fewer than two different people (faces at least "
                           f"{params.min_face_px:.0f} px wide): no one to swap with")
    if every_face_kept(ctx, params, params.min_face_px, min_faces=2):
        return []  # every face is the source's own, where it was: no one was exchanged
    embedder = get_embedder(params)
    measurement = measure_swaps(ctx, embedder, params)
    findings = []
    for event in measurement.events:
        if all(kept_from_source(ctx, face.box, params) for face in event.faces):
            continue  # every face involved is the source's own, re-lit or re-encoded: nothing was exchanged
        mask = np.zeros(ctx.size[::-1], dtype=bool)
        for face in event.faces:
            mask |= face_repair_mask(ctx.size, face.box, params.mask_grow_side, params.mask_grow_top,
                                     params.mask_grow_bottom)
        full_mask = ctx.candidate_mask(mask)
        evidence = {**event.evidence, "embedder": embedder.name, "metric": embedder.metric,
                    "people_before": measurement.people_before, "faces_after": measurement.faces_after,
                    "face_boxes": [ctx.candidate_box(face.box) for face in event.faces]}
        if event.own_score is not None:
            evidence["own_score"] = round(event.own_score, 4)
        findings.append(make_finding(
            "subjects_swapped", params, score=event.score,
            threshold=embedder.threshold if event.threshold is None else event.threshold,
            unit=event.unit or embedder.unit,
            message=event.message,
            region=ctx.box_region(union_box(face.box for face in event.faces)),
            evidence=evidence, mask=full_mask,
        ))
    return findings
