"""Case builders for identity_drift and subjects_swapped on the shared photos (issue 13, part 3).

Every builder is ``(image, amount) -> tests.defects.Case`` as in ``tests/defects.py``; the photo is
recognised from its pixels (a builder is handed a copy of a decoded shared photo) so that the
manifest's ``person_id`` can choose donors. A builder that cannot make its case on a photo (no face,
too few faces, no donor) raises ``ValueError`` (the bench counts that case as not made).

- ``face_paste_other`` (amount = donor rank 0, 1, 2, ...): another person's face (a single-face
  portrait of a different ``person_id``; photos without a ``person_id`` show nobody of the portraits)
  pasted over the largest face, aligned on the eyes, nose and mouth, colour-matched and feathered
  (``defects.transplant_face``), saved as JPEG q90. Donors are ranked per photo by a SHA-256 of the
  two names, so each photo gets its own donors, always the same.
- ``face_paste_same`` (amount = donor rank): the same person's face from another photo of the same
  ``person_id`` pasted the same way: identity is kept, nothing may be reported.
- ``face_swap_pair`` (amount = pair index k): in a photo with two or more faces at least
  ``MIN_FACE_PX`` wide (analysis size, the checks' ``min_face_px``), the k-th pair of faces (pairs of
  the faces ordered by width, largest first: (0, 1), (0, 2), (1, 2), (0, 3), ...) exchanged.
- ``*_small``: the pasted and clean cases with the whole picture scaled so that the largest face is
  ``SMALL_FACE_PX`` (30) px wide at analysis size (faces the checks skipped below 40 px).
- clean variants of the photo (the source left as it was): ``face_clean_jpeg`` (JPEG at quality
  ``amount``), ``face_clean_ev`` (``amount`` EV, re-encoded q90), ``face_clean_shift`` (the picture moved
  by ``amount`` of its width right and down, the border filled by reflection, re-encoded q90).
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import os
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from tests.defects import Case, face_keypoints, jpeg, to_linear, to_srgb, transplant_face

PHOTOS = Path(os.environ.get("FIXLOOP_PHOTOS", Path(__file__).resolve().parents[2] / "shared" / "data" / "photos"))
MIN_FACE_PX = 40.0  # analysis px: the checks' min_face_px; narrower faces are not compared by the checks


@lru_cache(maxsize=1)
def _manifest() -> dict[str, dict[str, str]]:
    with open(PHOTOS / "manifest.csv", newline="", encoding="utf-8") as handle:
        return {row["file"]: row for row in csv.DictReader(handle)}


def _digest(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).data).hexdigest()


@lru_cache(maxsize=1)
def _names_by_digest() -> dict[str, str]:
    from fixloop.checks.images import load_image, to_uint8

    return {_digest(to_uint8(load_image(PHOTOS / name).pixels)): name for name in _manifest()}


@lru_cache(maxsize=None)
def _decoded(name: str) -> np.ndarray:
    from fixloop.checks.images import load_image, to_uint8

    return to_uint8(load_image(PHOTOS / name).pixels)


def photo_name(image: np.ndarray) -> str:
    """The shared photo whose decoded pixels ``image`` are (ValueError for any other image)."""
    name = _names_by_digest().get(_digest(image))
    if name is None:
        raise ValueError("not one of the shared photos: donors cannot be chosen")
    return name


def people(name: str) -> set[str]:
    return {p for p in _manifest()[name]["person_id"].split(";") if p}


@lru_cache(maxsize=None)
def _faces(name: str) -> tuple:
    return tuple(face_keypoints(_decoded(name)))


def _analysis_scale(image: np.ndarray) -> float:
    """Candidate px per analysis px (the checks measure face widths at analysis size)."""
    from fixloop.checks.context import CheckContext

    return float(CheckContext.from_arrays(image).scale_to_candidate)


def _largest(found) -> tuple[np.ndarray, np.ndarray]:
    return max(found, key=lambda item: item[0][2] - item[0][0])


def _ranked(name: str, donors: list[str]) -> list[str]:
    return sorted(donors, key=lambda d: hashlib.sha256(f"{name}|{d}".encode()).hexdigest())


def _single_face_portraits() -> list[str]:
    return [n for n, row in _manifest().items() if row["category"] == "face" and row["faces_visible"] == "1"
            and row["people_count"] == "1" and row["person_id"]]


def _paste(image: np.ndarray, donor_name: str) -> Case:
    found = face_keypoints(image)
    if not found:
        raise ValueError("no face in the photo")
    box, points = _largest(found)
    donor = _faces(donor_name)
    if len(donor) != 1:
        raise ValueError(f"donor {donor_name} shows {len(donor)} faces")
    (_, donor_points), = donor
    candidate = transplant_face(image, _decoded(donor_name), donor_points, points, box)
    return Case(candidate=jpeg(candidate, 90), source=image)


def donors_other(name: str) -> list[str]:
    mine = people(name)
    return _ranked(name, [d for d in _single_face_portraits() if d != name and not (people(d) & mine)])


def donors_same(name: str) -> list[str]:
    """Other photos of the person whose face is the largest in ``name`` (portraits only: one person)."""
    mine = people(name)
    row = _manifest()[name]
    if len(mine) != 1 or row["faces_visible"] != "1":
        return []  # which face is whose is not labelled
    return _ranked(name, [d for d in _single_face_portraits() if d != name and people(d) == mine])


def _paste_donor(image: np.ndarray, donors: list[str], amount: float, missing: str) -> Case:
    """Paste the face of donor number ``amount``; ValueError(``missing``) when there is no such donor."""
    k = int(amount)
    if k >= len(donors):
        raise ValueError(missing)
    return _paste(image, donors[k])


def face_paste_other(image: np.ndarray, amount: float = 0.0) -> Case:
    return _paste_donor(image, donors_other(photo_name(image)), amount, "no such donor")


def face_paste_same(image: np.ndarray, amount: float = 0.0) -> Case:
    return _paste_donor(image, donors_same(photo_name(image)), amount, "no other photo of this person")


def face_pairs(image: np.ndarray) -> list[tuple[int, int]]:
    """Pairs (a, b) of indices into ``face_keypoints(image)`` of faces at least MIN_FACE_PX wide at
    analysis size, faces ordered by width (largest first), pairs in the order (0, 1), (0, 2), (1, 2), ..."""
    found = face_keypoints(image)
    scale = _analysis_scale(image)
    order = [i for i in sorted(range(len(found)), key=lambda i: -(found[i][0][2] - found[i][0][0]))
             if (found[i][0][2] - found[i][0][0]) / scale >= MIN_FACE_PX]
    pairs = sorted(itertools.combinations(range(len(order)), 2), key=lambda p: (p[1], p[0]))
    return [(order[a], order[b]) for a, b in pairs]


def face_swap_pair(image: np.ndarray, amount: float = 0.0) -> Case:
    found = face_keypoints(image)
    pairs = face_pairs(image)
    k = int(amount)
    if k >= len(pairs):
        raise ValueError(f"photo has {len(pairs)} pairs of faces wide enough to compare")
    a, b = pairs[k]
    (box_a, pts_a), (box_b, pts_b) = found[a], found[b]
    swapped = transplant_face(image, image, pts_b, pts_a, box_a)
    swapped = transplant_face(swapped, image, pts_a, pts_b, box_b)
    return Case(candidate=jpeg(swapped, 90), source=image)


def face_clean_jpeg(image: np.ndarray, amount: float = 80.0) -> Case:
    return Case(candidate=jpeg(image, int(amount)), source=image)


def face_clean_ev(image: np.ndarray, amount: float = 0.5) -> Case:
    out = to_srgb(to_linear(image) * 2.0 ** amount)
    return Case(candidate=jpeg(out, 90), source=image)


def face_clean_shift(image: np.ndarray, amount: float = 0.02) -> Case:
    h, w = image.shape[:2]
    dx = dy = amount * w
    moved = cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT)
    return Case(candidate=jpeg(moved, 90), source=image)


# ---- small faces: the whole case scaled so that the largest face is SMALL_FACE_PX wide ---------------

SMALL_FACE_PX = 30.0  # analysis px (the checks' min_face_px is 40: these faces were skipped before)


def _scaled_small(image: np.ndarray, case: Case) -> Case:
    """``case`` (source and candidate) scaled so that the largest face of ``image`` is SMALL_FACE_PX
    wide at analysis size; ValueError when it already is narrower."""
    found = face_keypoints(image)
    if not found:
        raise ValueError("no face in the photo")
    box, _ = _largest(found)
    width = float(box[2] - box[0]) / _analysis_scale(image)
    if width <= SMALL_FACE_PX:
        raise ValueError(f"the largest face is {width:.0f} px wide already")
    scale = SMALL_FACE_PX / float(box[2] - box[0])  # the scaled image is below the analysis size
    shrink = lambda im: cv2.resize(im, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)  # noqa: E731
    return Case(candidate=jpeg(shrink(case.candidate), 90), source=shrink(case.source))


def face_paste_other_small(image: np.ndarray, amount: float = 0.0) -> Case:
    """face_paste_other (donor rank ``amount``), then the whole picture scaled to a SMALL_FACE_PX face."""
    return _scaled_small(image, face_paste_other(image, amount))


def face_paste_same_small(image: np.ndarray, amount: float = 0.0) -> Case:
    return _scaled_small(image, face_paste_same(image, amount))


def face_clean_small(image: np.ndarray, amount: float = 0.0) -> Case:
    """The picture with a SMALL_FACE_PX face, clean: amount 0 = +0.5 EV, 1 = -0.5 EV, 2 = JPEG q80."""
    variant = {0: lambda im: face_clean_ev(im, 0.5), 1: lambda im: face_clean_ev(im, -0.5),
               2: lambda im: face_clean_jpeg(im, 80)}[int(amount)]
    return _scaled_small(image, variant(image))


BUILDERS = {
    "face_paste_other_small": face_paste_other_small,
    "face_paste_same_small": face_paste_same_small,
    "face_clean_small": face_clean_small,
    "face_paste_other": face_paste_other,
    "face_paste_same": face_paste_same,
    "face_swap_pair": face_swap_pair,
    "face_clean_jpeg": face_clean_jpeg,
    "face_clean_ev": face_clean_ev,
    "face_clean_shift": face_clean_shift,
}
