"""Hand defects of known kind made on real hand photos, from MediaPipe's landmarks (issue 13, part 2).

Each builder takes (image, amount) and returns a ``tests.defects.Case`` whose candidate carries one
defect at a known hand, the photo as its source; it raises ValueError when the photo has no usable
hand (none found, palm under ``MIN_PALM_PX``, or the hand touches the frame). ``amount`` picks which
finger or pair (0 = the straighter choice, 1 = the other), so that one photo gives two positives.

* ``finger_duplicate``: an outer finger (index or little) copied beside itself, one finger width
  outwards: six fingers side by side.
* ``finger_missing``: an inner finger (middle or ring) removed and the gap filled (inpainted from
  its neighbours): four fingers.
* ``fingers_fused``: two neighbouring fingers (index-middle or ring-little) with the gap between them
  filled with skin: a paddle.
* ``hand_no_arm``: the hand cut at the wrist and pasted where no person is (selfie segmentation):
  a disembodied hand.
* ``hand_mirrored``: the hand replaced, in place, by its mirror image about its own axis (wrist to
  middle knuckle): the thumb on the wrong side, a left hand on a right arm.

``DEFECT_AT`` says where each builder put its defect (a box, image pixels) so tests can check that
a finding lies there.
"""

from __future__ import annotations

import cv2
import numpy as np

from tests.defects import HAND_FINGERS, Case, hand_landmarks, jpeg

MIN_PALM_PX = 36.0  # image px (2-D wrist to middle knuckle); smaller hands are not usable
DEFECT_AT: dict[int, tuple[float, float, float, float]] = {}  # id(candidate) -> box of the defect


def _palm(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[9, :2] - points[0, :2]))


def usable_hand(image: np.ndarray) -> np.ndarray:
    """The largest hand whose palm is at least MIN_PALM_PX and whose landmarks keep half a palm from
    every border; ValueError when there is none."""
    h, w = image.shape[:2]
    for points in hand_landmarks(image):
        palm = _palm(points)
        if palm < MIN_PALM_PX:
            break
        xy = points[:, :2]
        if xy[:, 0].min() >= 0.5 * palm and xy[:, 1].min() >= 0.5 * palm and \
                xy[:, 0].max() <= w - 0.5 * palm and xy[:, 1].max() <= h - 0.5 * palm:
            return points
    raise ValueError(f"no usable hand (palm at least {MIN_PALM_PX:g} px, clear of the frame)")


def _straightness(points: np.ndarray, f: int) -> float:
    chain = HAND_FINGERS[f]
    path = sum(float(np.linalg.norm(points[chain[i + 1], :2] - points[chain[i], :2])) for i in range(3))
    return float(np.linalg.norm(points[chain[3], :2] - points[chain[0], :2])) / max(path, 1e-6)


def _pick(points: np.ndarray, choices: list, amount: float, score) -> object:
    ranked = sorted(choices, key=lambda c: -score(c))
    return ranked[int(round(amount)) % len(ranked)]


def _finger_width(points: np.ndarray) -> float:
    """Mean distance between neighbouring knuckles (5-9, 9-13, 13-17): one finger's width."""
    return float(np.mean([np.linalg.norm(points[a, :2] - points[b, :2]) for a, b in ((5, 9), (9, 13), (13, 17))]))


def _box(points: np.ndarray, pad: float) -> tuple[float, float, float, float]:
    xy = np.asarray(points)[:, :2]
    return (float(xy[:, 0].min() - pad), float(xy[:, 1].min() - pad), float(xy[:, 0].max() + pad),
            float(xy[:, 1].max() + pad))


def _finish(image: np.ndarray, out: np.ndarray, box) -> Case:
    candidate = jpeg(out, 90)
    DEFECT_AT[id(candidate)] = box
    return Case(candidate=candidate, source=image)


def defect_box(case: Case) -> tuple[float, float, float, float]:
    return DEFECT_AT[id(case.candidate)]


def _tip_extended(points: np.ndarray, chain, palm: float, past: float) -> np.ndarray:
    last = points[chain[3], :2] - points[chain[2], :2]
    return points[chain[3], :2] + last / max(float(np.linalg.norm(last)), 1e-6) * past * palm


def finger_duplicate(image: np.ndarray, amount: float = 0.0) -> Case:
    """An outer finger (index or little; ``amount`` 0 the straighter) copied one finger width
    outwards, beside itself."""
    points = usable_hand(image)
    palm, width = _palm(points), _finger_width(points)
    f = _pick(points, [1, 4], amount, lambda f: _straightness(points, f))
    chain = HAND_FINGERS[f]
    neighbour = HAND_FINGERS[2 if f == 1 else 3][0]
    base, tip = points[chain[0], :2], _tip_extended(points, chain, palm, 0.08)
    mask = np.zeros(image.shape[:2], np.float32)
    cv2.line(mask, tuple(int(v) for v in np.round(base)), tuple(int(v) for v in np.round(tip)), 1.0,
             max(2, int(round(0.9 * width))))
    outwards = points[chain[0], :2] - points[neighbour, :2]
    outwards /= max(float(np.linalg.norm(outwards)), 1e-6)
    dx, dy = outwards * 1.05 * width
    h, w = image.shape[:2]
    move = np.float32([[1, 0, dx], [0, 1, dy]])
    moved = cv2.warpAffine(image, move, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    alpha = cv2.GaussianBlur(cv2.warpAffine(mask, move, (w, h)), (0, 0), max(1.0, 0.03 * palm))[..., None]
    out = np.clip(np.rint(image * (1 - alpha) + moved * alpha), 0, 255).astype(np.uint8)
    copy = np.array([base, tip]) + [dx, dy]
    return _finish(image, out, _box(np.vstack([copy, points[chain, :2]]), 0.5 * width))


def finger_missing(image: np.ndarray, amount: float = 0.0) -> Case:
    """An inner finger (middle or ring; ``amount`` 0 the straighter) removed from just above its
    knuckle to past its tip, the gap filled from its neighbours: four fingers."""
    points = usable_hand(image)
    palm, width = _palm(points), _finger_width(points)
    f = _pick(points, [2, 3], amount, lambda f: _straightness(points, f))
    chain = HAND_FINGERS[f]
    base = points[chain[0], :2] * 0.8 + points[chain[1], :2] * 0.2
    tip = _tip_extended(points, chain, palm, 0.12)
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.line(mask, tuple(int(v) for v in np.round(base)), tuple(int(v) for v in np.round(tip)), 255,
             max(2, int(round(1.05 * width))))
    out = cv2.inpaint(image, mask, max(3, int(0.1 * palm)), cv2.INPAINT_TELEA)
    return _finish(image, out, _box(np.array([base, tip]), 0.6 * width))


def fingers_fused(image: np.ndarray, amount: float = 0.0) -> Case:
    """Two neighbouring fingers (index-middle or ring-little; ``amount`` 0 the straighter pair) with
    the gap between them filled with skin from knuckle to tip: one paddle where two fingers were."""
    points = usable_hand(image)
    palm, width = _palm(points), _finger_width(points)
    a, b = _pick(points, [(1, 2), (3, 4)], amount, lambda p: _straightness(points, p[0]) + _straightness(points, p[1]))
    ca, cb = HAND_FINGERS[a], HAND_FINGERS[b]
    side_a = [points[i, :2] for i in ca[:3]] + [_tip_extended(points, ca, palm, 0.0)]
    side_b = [points[i, :2] for i in cb[:3]] + [_tip_extended(points, cb, palm, 0.0)]
    polygon = np.array(side_a + side_b[::-1])
    region = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(region, [np.round(polygon).astype(np.int32)], 255)
    region = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
    # keep the fingers themselves (their axes, a third of a finger either side) as the colour source
    fingers = np.zeros_like(region)
    for chain in (ca, cb):
        for i in range(3):
            cv2.line(fingers, tuple(int(v) for v in np.round(points[chain[i], :2])),
                     tuple(int(v) for v in np.round(points[chain[i + 1], :2])), 255, max(1, int(round(0.5 * width))))
    gap = cv2.bitwise_and(region, cv2.bitwise_not(fingers))
    out = cv2.inpaint(image, gap, max(3, int(0.15 * palm)), cv2.INPAINT_TELEA)
    soft = cv2.GaussianBlur(out, (0, 0), max(1.0, 0.04 * palm))  # a smooth, seamless paddle
    alpha = cv2.GaussianBlur((region > 0).astype(np.float32), (0, 0), max(1.0, 0.03 * palm))[..., None]
    out = np.clip(np.rint(out * (1 - alpha) + soft * alpha), 0, 255).astype(np.uint8)
    return _finish(image, out, _box(polygon, 0.3 * width))


def hand_no_arm(image: np.ndarray, amount: float = 0.0) -> Case:
    """The hand cut at the wrist (its landmarks' hull and a little more, nothing past the wrist)
    pasted where no person is, a palm length or more from the frame: a hand without an arm.
    ValueError when the photo has no such place."""
    from fixloop.checks.analyses import person_mask
    from fixloop.checks.context import CheckContext

    points = usable_hand(image)
    palm = _palm(points)
    h, w = image.shape[:2]
    region = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(region, cv2.convexHull(np.round(points[:, :2]).astype(np.int32)), 1)
    r = max(1, int(round(0.12 * palm)))
    region = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    axis = (points[9, :2] - points[0, :2]) / palm
    yy, xx = np.mgrid[0:h, 0:w]
    region[((xx - points[0, 0]) * axis[0] + (yy - points[0, 1]) * axis[1]) < -0.05 * palm] = 0  # nothing past the wrist
    ctx = CheckContext.from_arrays(image)
    people = cv2.resize(person_mask(ctx.candidate), (w, h)) > 0.3
    ys, xs = np.nonzero(region)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    bw, bh = x1 - x0, y1 - y0
    margin = int(0.3 * palm)
    room = int(1.1 * palm)  # the frame leaves room for an arm: the arm's absence is the defect
    best, place = None, None
    step = max(4, int(0.25 * palm))
    for ty in range(room, h - bh - room, step):
        for tx in range(room, w - bw - room, step):
            window = people[max(0, ty - margin):ty + bh + margin, max(0, tx - margin):tx + bw + margin]
            cover = float(window.mean())
            away = abs(tx - x0) + abs(ty - y0)
            key = (round(cover, 2), -away)
            if best is None or key < best:
                best, place = key, (tx, ty)
    if place is None or best[0] > 0.02:
        raise ValueError("no place without a person for the hand")
    dx, dy = place[0] - x0, place[1] - y0
    move = np.float32([[1, 0, dx], [0, 1, dy]])
    moved = cv2.warpAffine(image, move, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    alpha = cv2.GaussianBlur(cv2.warpAffine(region.astype(np.float32), move, (w, h)), (0, 0),
                             max(1.0, 0.04 * palm))[..., None]
    out = np.clip(np.rint(image * (1 - alpha) + moved * alpha), 0, 255).astype(np.uint8)
    return _finish(image, out, (float(place[0]), float(place[1]), float(place[0] + bw), float(place[1] + bh)))


def hand_mirrored(image: np.ndarray, amount: float = 0.0) -> Case:
    """The hand replaced in place by its mirror image about its own axis (the line from the wrist
    through the middle knuckle): the thumb on the other side, the wrong hand on this arm."""
    points = usable_hand(image)
    palm = _palm(points)
    h, w = image.shape[:2]
    p, q = points[0, :2], points[9, :2]
    d = (q - p) / palm
    reflect = np.outer(d, d) * 2 - np.eye(2)  # reflection about the line through p along d
    matrix = np.hstack([reflect, (p - reflect @ p)[:, None]]).astype(np.float32)
    region = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(region, cv2.convexHull(np.round(points[:, :2]).astype(np.int32)), 255)
    r = max(1, int(round(0.15 * palm)))
    region = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    mirrored_points = points[:, :2] @ reflect.T + (p - reflect @ p)
    cleared = cv2.inpaint(image, region, max(3, int(0.1 * palm)), cv2.INPAINT_TELEA)
    moved = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    alpha = cv2.GaussianBlur(cv2.warpAffine(region.astype(np.float32) / 255, matrix, (w, h)), (0, 0),
                             max(1.0, 0.03 * palm))[..., None]
    out = np.clip(np.rint(cleared * (1 - alpha) + moved * alpha), 0, 255).astype(np.uint8)
    return _finish(image, out, _box(np.vstack([points[:, :2], mirrored_points]), 0.1 * palm))


HAND_DEFECTS = {
    "finger_duplicate": finger_duplicate,
    "finger_missing": finger_missing,
    "fingers_fused": fingers_fused,
    "hand_no_arm": hand_no_arm,
    "hand_mirrored": hand_mirrored,
}
