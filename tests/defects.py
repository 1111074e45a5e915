"""Defects made on purpose, with a known size, to calibrate the checks on real photos.

Each function takes a clean uint8 RGB photo and returns a :class:`Case`: the candidate an edit might
have produced, the source it came from, and the edit mask when the defect involves one. All of them
are deterministic.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from fixloop.checks.images import linear_to_srgb8, srgb_to_linear


@dataclass
class Case:
    candidate: np.ndarray
    source: np.ndarray | None = None
    mask: np.ndarray | None = None  # bool, source size, True = edit allowed


def jpeg(image: np.ndarray, quality: int = 85, scale: float = 1.0) -> np.ndarray:
    """Honest re-encoding: optional resize (area) then a JPEG round trip at ``quality``."""
    if scale != 1.0:
        h, w = image.shape[:2]
        image = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def to_linear(image: np.ndarray) -> np.ndarray:
    """uint8 sRGB -> float32 linear light."""
    return srgb_to_linear(image.astype(np.float32) / 255.0)


to_srgb = linear_to_srgb8


def centre_box_mask(shape: tuple[int, ...], fraction: float = 0.3) -> np.ndarray:
    """A centred rectangle covering ``fraction`` of each side."""
    h, w = shape[:2]
    mask = np.zeros((h, w), dtype=bool)
    bh, bw = round(h * fraction), round(w * fraction)
    y0, x0 = (h - bh) // 2, (w - bw) // 2
    mask[y0 : y0 + bh, x0 : x0 + bw] = True
    return mask


# ---- the defects -----------------------------------------------------------------------------


def clean_reencode(image: np.ndarray, amount: float = 0.0) -> Case:
    """No defect: the source re-saved as JPEG q85 at 90 % size."""
    return Case(candidate=jpeg(image, 85, 0.9), source=image)


def exposure(image: np.ndarray, ev: float) -> Case:
    """The whole image scaled by 2**ev in linear light (clipping where it overflows)."""
    return Case(candidate=jpeg(to_srgb(to_linear(image) * 2.0**ev), 90), source=image)


def white_balance(image: np.ndarray, mired: float) -> Case:
    """Re-light the image from D65 to a white point ``mired`` warmer (+) or cooler (-)."""
    from fixloop.checks.color import white_balance_gains

    gains = white_balance_gains(mired)
    return Case(candidate=jpeg(to_srgb(to_linear(image) * gains), 90), source=image)


def blur(image: np.ndarray, sigma: float) -> Case:
    """Gaussian blur of the whole image (sigma in pixels)."""
    return Case(candidate=jpeg(cv2.GaussianBlur(image, (0, 0), sigma), 90), source=image)


def flip(image: np.ndarray, amount: float = 0.0) -> Case:
    """The image mirrored left-right."""
    return Case(candidate=jpeg(image[:, ::-1].copy(), 90), source=image)


def rotate(image: np.ndarray, degrees: float) -> Case:
    """Rotated by ``degrees`` (counter-clockwise) about the centre, zoomed to hide the corners."""
    h, w = image.shape[:2]
    theta = np.deg2rad(abs(degrees))
    zoom = np.cos(theta) + max(w / h, h / w) * np.sin(theta)
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, zoom)
    rotated = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return Case(candidate=jpeg(rotated, 90), source=image)


def recolour(image: np.ndarray, region: np.ndarray, shift: float = 60.0) -> np.ndarray:
    """Rotate hue and lift brightness inside ``region`` (a visible content edit)."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.int32)
    hsv[..., 0] = (hsv[..., 0] + int(shift / 2)) % 180
    hsv[..., 2] = np.clip(hsv[..., 2] + 30, 0, 255)
    edited = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    out = image.copy()
    out[region] = edited[region]
    return out


def edit_inside_mask(image: np.ndarray, amount: float = 0.0) -> Case:
    """A content edit confined to the mask, then JPEG q85: no spill."""
    mask = centre_box_mask(image.shape, 0.4)
    return Case(candidate=jpeg(recolour(image, mask), 85), source=image, mask=mask)


def edit_spills_outside_mask(image: np.ndarray, fraction: float = 0.15) -> Case:
    """A content edit in the mask that also changed a band outside it (``fraction`` of the width)."""
    mask = centre_box_mask(image.shape, 0.4)
    h, w = image.shape[:2]
    spill = mask.copy()
    x0 = int(np.argmax(mask.any(axis=0)))
    spill[:, max(0, x0 - round(fraction * w)) : x0] = mask.any(axis=1)[:, None]
    return Case(candidate=jpeg(recolour(image, spill), 85), source=image, mask=mask)


DEFECTS = {
    "clean_reencode": clean_reencode,
    "exposure": exposure,
    "white_balance": white_balance,
    "blur": blur,
    "flip": flip,
    "rotate": rotate,
    "edit_inside_mask": edit_inside_mask,
    "edit_spills_outside_mask": edit_spills_outside_mask,
}


def make(defect: str, image: np.ndarray, amount: float = 0.0) -> Case:
    return DEFECTS[defect](image, amount)


# ---- edge_halo: a bright or dark fringe ring painted just outside a segmented person ------------

_SELFIE_SEGMENTER = None  # MediaPipe's bundled selfie-segmentation model, loaded once


def person_mask(image: np.ndarray) -> np.ndarray:
    """The people in a photo (bool), from MediaPipe selfie segmentation, small specks removed."""
    global _SELFIE_SEGMENTER
    if _SELFIE_SEGMENTER is None:
        import mediapipe as mp

        _SELFIE_SEGMENTER = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
    probability = _SELFIE_SEGMENTER.process(np.ascontiguousarray(image[..., :3])).segmentation_mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    mask = cv2.morphologyEx((probability > 0.5).astype(np.uint8), cv2.MORPH_OPEN, kernel)
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel).astype(bool)


def paint_ring(image: np.ndarray, subject: np.ndarray, strength: float, width: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Blend a ``width``-px ring just outside ``subject`` towards white (strength > 0) or black (< 0).

    Returns the painted image and the subject grown by the ring (the matte a loose cut-out would use).
    """
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    grown = cv2.dilate(subject.astype(np.uint8), disk).astype(bool)
    weight = cv2.GaussianBlur((grown & ~subject).astype(np.float32), (0, 0), 0.6) * min(abs(strength), 1.0)
    target = 255.0 if strength > 0 else 0.0
    painted = image.astype(np.float32) * (1.0 - weight[..., None]) + target * weight[..., None]
    return np.clip(np.rint(painted), 0, 255).astype(np.uint8), grown


def halo_ring(image: np.ndarray, amount: float) -> Case:
    """A fringe ring around the person (``amount`` > 0 bright, < 0 dark), compared with the source."""
    painted, _ = paint_ring(image, person_mask(image), amount)
    return Case(candidate=jpeg(painted, 90), source=image)


DEFECTS["halo_ring"] = halo_ring


def halo_ring_mask(image: np.ndarray, amount: float) -> Case:
    """The same ring left by a background replacement: the edit mask is everything but the person."""
    subject = person_mask(image)
    painted, _ = paint_ring(image, subject, amount)
    return Case(candidate=jpeg(painted, 90), source=image, mask=~subject)


DEFECTS["halo_ring_mask"] = halo_ring_mask


def halo_ring_single(image: np.ndarray, amount: float) -> Case:
    """The ring on the candidate alone: no source, no mask."""
    painted, _ = paint_ring(image, person_mask(image), amount)
    return Case(candidate=jpeg(painted, 90))


DEFECTS["halo_ring_single"] = halo_ring_single


def halo_ring_cutout(image: np.ndarray, amount: float) -> Case:
    """An RGBA cut-out whose matte is the person plus the ring (a loose matte), as a PNG would hold it."""
    painted, grown = paint_ring(image, person_mask(image), amount)
    return Case(candidate=np.dstack([painted, grown.astype(np.uint8) * 255]))


DEFECTS["halo_ring_cutout"] = halo_ring_cutout


def blur_region_box(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The box ``blur_region`` softens: right half of the width, middle half of the height (25 %)."""
    h, w = shape[:2]
    return (w // 2, h // 4, w, h // 4 + h // 2)


def blur_region(image: np.ndarray, sigma: float) -> Case:
    """Gaussian blur (sigma in pixels) of one box covering 25 % of the image, then JPEG q90."""
    x0, y0, x1, y1 = blur_region_box(image.shape)
    out = image.copy()
    out[y0:y1, x0:x1] = cv2.GaussianBlur(image, (0, 0), sigma or 2.0)[y0:y1, x0:x1]
    return Case(candidate=jpeg(out, 90), source=image)


DEFECTS["blur_region"] = blur_region


def upscale(image: np.ndarray, factor: float) -> Case:
    """No defect: a smaller source (the photo shrunk by ``factor``) upscaled ``factor``x (bicubic), JPEG q90."""
    factor = factor or 2.0
    h, w = image.shape[:2]
    sw, sh = round(w / factor), round(h / factor)
    small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
    big = cv2.resize(small, (round(sw * factor), round(sh * factor)), interpolation=cv2.INTER_CUBIC)
    return Case(candidate=jpeg(big, 90), source=small)


DEFECTS["upscale"] = upscale


def downscale(image: np.ndarray, factor: float) -> Case:
    """No defect: the source shrunk to ``factor`` of its size (area), JPEG q90."""
    return Case(candidate=jpeg(image, 90, factor or 0.5), source=image)


DEFECTS["downscale"] = downscale


def edit_inside_mask_resized(image: np.ndarray, factor: float) -> Case:
    """``edit_inside_mask`` returned at another size, as a backend answering 1024x1536 for a 1000x1500
    input (``factor`` 1.024, bicubic), JPEG q85: still no spill."""
    case = edit_inside_mask(image)
    h, w = image.shape[:2]
    factor = factor or 1.024
    # the edited JPEG is resized and saved again: two generations of JPEG, as a real round trip
    resized = cv2.resize(case.candidate, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_CUBIC)
    return Case(candidate=jpeg(resized, 85), source=image, mask=case.mask)


DEFECTS["edit_inside_mask_resized"] = edit_inside_mask_resized


# ---- identity_drift / subjects_swapped: faces moved between people (group photos) ----------------


def face_keypoints(image: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(box, 4 keypoints: eyes, nose, mouth) of every MediaPipe face in ``image``, left to right, in image px."""
    from fixloop.checks.analyses import faces
    from fixloop.checks.context import CheckContext

    ctx = CheckContext.from_arrays(image)
    scale = ctx.scale_to_candidate
    found = sorted(faces(ctx.candidate), key=lambda f: f.box[0] + f.box[2])
    return [(f.box * scale, f.keypoints[:4] * scale) for f in found]


def transplant_face(target: np.ndarray, donor: np.ndarray, donor_points: np.ndarray, target_points: np.ndarray,
                    target_box: np.ndarray) -> np.ndarray:
    """Paste the donor's face (eyes, nose, mouth, cheeks) over the target face, aligned by a similarity
    transform of the keypoints, colour-matched inside the face and feathered at its border."""
    from fixloop.checks.identity import similarity_matrix

    h, w = target.shape[:2]
    warped = cv2.warpAffine(donor, similarity_matrix(donor_points, target_points), (w, h),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    x0, y0, x1, y1 = target_box
    bw, bh = x1 - x0, y1 - y0
    inner = np.zeros((h, w), dtype=np.float32)
    cv2.ellipse(inner, (int(round((x0 + x1) / 2)), int(round(y0 + 0.55 * bh))),
                (max(1, int(round(0.40 * bw))), max(1, int(round(0.50 * bh)))), 0, 0, 360, 1.0, -1)
    region = inner > 0.5
    out = warped.astype(np.float32)
    for c in range(3):  # match mean and spread of each channel to the target face
        t, d = target[..., c][region].astype(np.float32), out[..., c][region]
        out[..., c] = (out[..., c] - d.mean()) * (t.std() / max(d.std(), 1e-3)) + t.mean()
    weight = cv2.GaussianBlur(inner, (0, 0), max(1.0, 0.06 * bw))[..., None]
    blended = target.astype(np.float32) * (1 - weight) + out * weight
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def face_swap(image: np.ndarray, amount: float = 0.0) -> Case:
    """The two outermost faces of a group photo exchanged (the left person gets the right one's face)."""
    found = face_keypoints(image)
    (box_a, pts_a), (box_b, pts_b) = found[0], found[-1]
    swapped = transplant_face(image, image, pts_b, pts_a, box_a)
    swapped = transplant_face(swapped, image, pts_a, pts_b, box_b)
    return Case(candidate=jpeg(swapped, 90), source=image)


DEFECTS["face_swap"] = face_swap


def face_duplicate(image: np.ndarray, amount: float = 0.0) -> Case:
    """The leftmost face of a group photo pasted over the rightmost one (one identity twice)."""
    found = face_keypoints(image)
    (box_a, pts_a), (box_b, pts_b) = found[0], found[-1]
    return Case(candidate=jpeg(transplant_face(image, image, pts_a, pts_b, box_b), 90), source=image)


DEFECTS["face_duplicate"] = face_duplicate


# ---- mirrored / perspective_broken: flips that were also edited, horizon and verticals tilted alone --


def _mask_clear_of(shape: tuple[int, ...], box: np.ndarray) -> np.ndarray:
    """An edit mask (a box of about 30 % x 40 % of the image) placed where it stays clear of ``box``
    grown by 0.6 of its width; ValueError when no such place is left."""
    h, w = shape[:2]
    x0, y0, x1, y1 = box
    grow = 0.6 * (x1 - x0)
    for mx0, my0, mx1, my1 in ((0.65, 0.3, 0.95, 0.7), (0.05, 0.3, 0.35, 0.7), (0.3, 0.72, 0.7, 0.97),
                               (0.3, 0.03, 0.7, 0.28), (0.7, 0.7, 0.97, 0.97), (0.03, 0.7, 0.3, 0.97)):
        bx0, by0, bx1, by1 = mx0 * w, my0 * h, mx1 * w, my1 * h
        if bx1 < x0 - grow or bx0 > x1 + grow or by1 < y0 - grow or by0 > y1 + grow:
            mask = np.zeros((h, w), bool)
            mask[int(by0):int(by1), int(bx0):int(bx1)] = True
            return mask
    raise ValueError("the face leaves no room for an edit mask clear of it")


def spill_on_face(image: np.ndarray, ev: float = -0.4) -> Case:
    """An edit inside a mask placed away from the largest face, which the edit also darkened by
    ``ev`` and softened (Gaussian sigma 1.5, feathered): a spill onto a face outside the mask."""
    found = face_keypoints(image)
    if not found:
        raise ValueError("no face")
    box = max(found, key=lambda f: (f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))[0]
    mask = _mask_clear_of(image.shape, box)
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    pad = int(0.25 * (x1 - x0))
    x0, y0, x1, y1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
    weight = np.zeros((h, w), np.float32)
    weight[y0:y1, x0:x1] = 1.0
    weight = cv2.GaussianBlur(weight, (0, 0), max(2.0, 0.05 * (x1 - x0)))[..., None]
    edited = recolour(image, mask).astype(np.float32)
    darker = np.clip(to_srgb(to_linear(edited.astype(np.uint8)) * 2.0 ** ev).astype(np.float32), 0, 255)
    softened = cv2.GaussianBlur(darker, (0, 0), 1.5)
    out = np.clip(edited * (1 - weight) + softened * weight + 0.5, 0, 255).astype(np.uint8)
    return Case(candidate=jpeg(out, 90), source=image, mask=mask)


DEFECTS["spill_on_face"] = spill_on_face


def flip_and_edit(image: np.ndarray, amount: float = 0.0) -> Case:
    """The image mirrored left-right AND recoloured in the centre box (the edit mask), JPEG q85."""
    mask = centre_box_mask(image.shape, 0.4)
    return Case(candidate=jpeg(recolour(image[:, ::-1].copy(), mask), 85), source=image, mask=mask)


DEFECTS["flip_and_edit"] = flip_and_edit


def flip_and_exposure(image: np.ndarray, ev: float) -> Case:
    """The image mirrored left-right and its exposure moved by ``ev`` (linear light), JPEG q90."""
    return Case(candidate=exposure(image[:, ::-1].copy(), ev or -0.7).candidate, source=image)


DEFECTS["flip_and_exposure"] = flip_and_exposure


def _shear(image: np.ndarray, degrees: float, horizon: bool) -> np.ndarray:
    """Affine shear about the centre, zoomed to hide the borders: with ``horizon`` the horizontal lines
    turn by ``degrees`` (counter-clockwise) and the verticals stay; otherwise the verticals lean."""
    h, w = image.shape[:2]
    k = np.tan(np.deg2rad(degrees))
    if horizon:  # y' = y - k x (image y points down): horizontals turn, verticals keep their direction
        shear, zoom = np.array([[1.0, 0.0], [-k, 1.0]]), 1.0 / (1.0 - abs(k) * w / h)
    else:  # x' = x + k y: verticals lean, horizontals keep their direction
        shear, zoom = np.array([[1.0, k], [0.0, 1.0]]), 1.0 / (1.0 - abs(k) * h / w)
    linear = shear * zoom
    centre = np.array([w / 2, h / 2])
    matrix = np.hstack([linear, (centre - linear @ centre)[:, None]])
    return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def tilt_horizon(image: np.ndarray, degrees: float) -> Case:
    """Horizontal lines turned by ``degrees`` (counter-clockwise) while the verticals stay, JPEG q90."""
    return Case(candidate=jpeg(_shear(image, degrees, horizon=True), 90), source=image)


DEFECTS["tilt_horizon"] = tilt_horizon


def lean_verticals(image: np.ndarray, degrees: float) -> Case:
    """Vertical lines leaning by ``degrees`` (counter-clockwise) while the horizontals stay, JPEG q90."""
    return Case(candidate=jpeg(_shear(image, degrees, horizon=False), 90), source=image)


DEFECTS["lean_verticals"] = lean_verticals


# ---- subject_cropped: a whole person cut by a new frame (crops placed from the photo's own pose) ----


def pose_points(image: np.ndarray) -> np.ndarray:
    """33 x 4 MediaPipe pose landmarks of ``image`` (x, y in its pixels, z, visibility)."""
    from fixloop.checks.analyses import pose
    from fixloop.checks.context import CheckContext

    ctx = CheckContext.from_arrays(image)
    found = pose(ctx.candidate)
    if found is None:
        raise ValueError("no pose in this photo: a crop cannot be placed")
    marks = found.landmarks.astype(np.float64)
    marks[:, :2] *= ctx.scale_to_candidate
    return marks


def reframe(image: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> Case:
    """The photo cropped to [x0, x1) x [y0, y1) (clipped to the photo), JPEG q92; the photo is the source."""
    h, w = image.shape[:2]
    x0, y0 = int(max(0, round(x0))), int(max(0, round(y0)))
    x1, y1 = int(min(w, round(x1))), int(min(h, round(y1)))
    return Case(candidate=jpeg(np.ascontiguousarray(image[y0:y1, x0:x1]), 92), source=image)


def crop_through_face(image: np.ndarray, amount: float = 0.5) -> Case:
    """Top edge through the face, ``amount`` eye-to-mouth distances below the eye line (0 = the eyes,
    negative = the forehead)."""
    m = pose_points(image)
    eye_y, mouth_y = m[[2, 5], 1].mean(), m[[9, 10], 1].mean()
    h, w = image.shape[:2]
    return reframe(image, 0, eye_y + amount * (mouth_y - eye_y), w, h)


DEFECTS["crop_through_face"] = crop_through_face


def crop_through_shins(image: np.ndarray, amount: float = 0.5) -> Case:
    """Bottom edge ``amount`` of the way from the lower knee down to the higher ankle."""
    m = pose_points(image)
    knee_y, ankle_y = m[[25, 26], 1].max(), m[[27, 28], 1].min()
    h, w = image.shape[:2]
    return reframe(image, 0, 0, w, knee_y + amount * (ankle_y - knee_y))


DEFECTS["crop_through_shins"] = crop_through_shins


def crop_half_right(image: np.ndarray, amount: float = 0.0) -> Case:
    """Right edge through the middle of the body: the nose line, moved right by ``amount`` shoulder widths."""
    m = pose_points(image)
    h = image.shape[0]
    return reframe(image, 0, 0, m[0, 0] + amount * abs(m[11, 0] - m[12, 0]), h)


DEFECTS["crop_half_right"] = crop_half_right


def crop_through_hand(image: np.ndarray, amount: float = 0.5) -> Case:
    """A side edge through the seen hand (pose visibility >= 0.5) that reaches closest to a side,
    ``amount`` of the way from its wrist to its knuckles (the hand points that way, so its fingers are
    cut off). Raises ValueError when the pose sees no hand."""
    m = pose_points(image)
    h, w = image.shape[:2]
    options = []
    for wrist, knuckles in ((15, (17, 19)), (16, (18, 20))):
        if m[[wrist, *knuckles], 3].max() < 0.5:
            continue
        kx = m[list(knuckles), 0].mean()
        x = m[wrist, 0] + amount * (kx - m[wrist, 0])
        options.append(("right", x, w - x) if kx > m[wrist, 0] else ("left", x, x))
    if not options:
        raise ValueError("the pose sees no hand in this photo")
    edge, x, _ = min(options, key=lambda o: o[2])
    return reframe(image, 0, 0, x, h) if edge == "right" else reframe(image, x, 0, w, h)


DEFECTS["crop_through_hand"] = crop_through_hand


def crop_whole_margin(image: np.ndarray, amount: float = 0.1) -> Case:
    """No defect: the frame tightened around the whole person to ``amount`` of their height beyond the
    body (crown, toes, extrapolated fingertips) on every side the photo allows."""
    m = pose_points(image)
    eye_y, mouth_y = m[[2, 5], 1].mean(), m[[9, 10], 1].mean()
    tips = [m[w, :2] + 2.0 * (m[list(k), :2].mean(axis=0) - m[w, :2]) for w, k in ((15, (17, 19)), (16, (18, 20)))]
    points = np.vstack([m[:, :2], tips, [[m[0, 0], eye_y - 2.2 * (mouth_y - eye_y)]]])
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    pad = amount * (y1 - y0)
    return reframe(image, x0 - pad, y0 - pad, x1 + pad, y1 + pad)


DEFECTS["crop_whole_margin"] = crop_whole_margin


# ---- hand_malformed: hands duplicated, pasted, erased; fingers added and painted out --------------

HAND_FINGERS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))


def hand_landmarks(image: np.ndarray) -> list[np.ndarray]:
    """21 x 3 landmarks (image px) of every full-frame MediaPipe hand in ``image``, largest palm first."""
    from fixloop.checks.analyses import hands
    from fixloop.checks.context import CheckContext

    ctx = CheckContext.from_arrays(image)
    scale = ctx.scale_to_candidate
    found = [h.landmarks.astype(np.float64) * scale for h in hands(ctx.candidate)]
    if not found:
        raise ValueError("MediaPipe finds no hand in this photo")
    return sorted(found, key=lambda p: -float(np.linalg.norm(p[9, :2] - p[0, :2])))


def _hand_region(image: np.ndarray, points: np.ndarray, margin: float) -> tuple[np.ndarray, float]:
    """The landmarks' hull grown by ``margin`` palm lengths (bool), and the palm length (px)."""
    palm = float(np.linalg.norm(points[9, :2] - points[0, :2]))
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points[:, :2]).astype(np.int32)), 1)
    r = max(1, int(round(margin * palm)))
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return mask.astype(bool), palm


def _paste_shifted(image: np.ndarray, region: np.ndarray, dx: float, dy: float, feather: float) -> np.ndarray:
    """``image`` with the pixels of ``region`` copied (dx, dy) away, feathered by ``feather`` px."""
    h, w = image.shape[:2]
    move = np.float32([[1, 0, dx], [0, 1, dy]])
    moved = cv2.warpAffine(image, move, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    alpha = cv2.warpAffine(region.astype(np.float32), move, (w, h))
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.0, feather))[..., None]
    return np.clip(np.rint(image * (1 - alpha) + moved * alpha), 0, 255).astype(np.uint8)


def hand_duplicate(image: np.ndarray, amount: float = 1.1) -> Case:
    """A copy of the largest hand pasted beside it, ``amount`` hand widths across the hand's axis: one
    wrist, two hands (an extra hand)."""
    points = hand_landmarks(image)[0]
    region, palm = _hand_region(image, points, 0.15)
    axis = (points[9, :2] - points[0, :2]) / palm
    width = float(np.linalg.norm(points[5, :2] - points[17, :2])) + 0.3 * palm
    dx, dy = np.array([-axis[1], axis[0]]) * amount * width
    return Case(candidate=jpeg(_paste_shifted(image, region, dx, dy, 0.05 * palm), 90), source=image)


DEFECTS["hand_duplicate"] = hand_duplicate


def hand_paste(image: np.ndarray, amount: float = 0.0) -> Case:
    """A copy of the largest hand pasted at the mirrored position across the image: against the
    source, a hand appeared."""
    points = hand_landmarks(image)[0]
    region, palm = _hand_region(image, points, 0.15)
    w = image.shape[1]
    cx = float(points[:, 0].mean())
    dx = (w - cx) - cx
    if abs(dx) < 2 * palm:
        dx = 0.5 * w if cx < w / 2 else -0.5 * w
    return Case(candidate=jpeg(_paste_shifted(image, region, dx, 0.0, 0.05 * palm), 90), source=image)


DEFECTS["hand_paste"] = hand_paste


def hand_erase(image: np.ndarray, amount: float = 0.0) -> Case:
    """The largest hand painted out (inpainted from its surroundings): against the source, a hand
    vanished."""
    points = hand_landmarks(image)[0]
    region, palm = _hand_region(image, points, 0.3)
    out = cv2.inpaint(image, region.astype(np.uint8) * 255, max(3, int(0.1 * palm)), cv2.INPAINT_TELEA)
    return Case(candidate=jpeg(out, 90), source=image)


DEFECTS["hand_erase"] = hand_erase


def _straightest_finger(points: np.ndarray, fingers: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The landmark chain of the straightest of ``fingers`` (knuckle-to-tip distance / path length)."""
    def straightness(f: int) -> float:
        chain = HAND_FINGERS[f]
        path = sum(float(np.linalg.norm(points[chain[i + 1], :2] - points[chain[i], :2])) for i in range(3))
        return float(np.linalg.norm(points[chain[3], :2] - points[chain[0], :2])) / max(path, 1e-6)

    return HAND_FINGERS[max(fingers, key=straightness)]


def finger_erase(image: np.ndarray, amount: float = 0.0) -> Case:
    """The straightest finger of the largest hand (index, little, middle or ring) painted out from
    just above its knuckle to past its tip: a finger the skeleton model still expects."""
    points = hand_landmarks(image)[0]
    palm = float(np.linalg.norm(points[9, :2] - points[0, :2]))
    chain = _straightest_finger(points, (1, 4, 2, 3))
    last = points[chain[3], :2] - points[chain[2], :2]
    tip = points[chain[3], :2] + last / max(float(np.linalg.norm(last)), 1e-6) * 0.15 * palm
    base = points[chain[0], :2] * 0.7 + points[chain[1], :2] * 0.3
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.line(mask, tuple(int(v) for v in np.round(base)), tuple(int(v) for v in np.round(tip)), 255,
             max(2, int(round(0.3 * palm))))
    out = cv2.inpaint(image, mask, max(3, int(0.1 * palm)), cv2.INPAINT_TELEA)
    return Case(candidate=jpeg(out, 90), source=image)


DEFECTS["finger_erase"] = finger_erase


def finger_add(image: np.ndarray, amount: float = 35.0) -> Case:
    """A copy of the straighter outer finger (index or little) of the largest hand, turned ``amount``
    degrees about its knuckle away from the hand: a sixth finger."""
    points = hand_landmarks(image)[0]
    palm = float(np.linalg.norm(points[9, :2] - points[0, :2]))
    chain = _straightest_finger(points, (1, 4))
    knuckle, tip = points[chain[0], :2], points[chain[3], :2]
    mask = np.zeros(image.shape[:2], np.float32)
    cv2.line(mask, tuple(int(v) for v in np.round(knuckle)), tuple(int(v) for v in np.round(tip)), 1.0,
             max(2, int(round(0.2 * palm))))
    along, away = tip - knuckle, knuckle - points[9, :2]
    sign = float(np.sign(along[0] * away[1] - along[1] * away[0])) or 1.0
    h, w = image.shape[:2]
    turn = cv2.getRotationMatrix2D((float(knuckle[0]), float(knuckle[1])), -sign * amount, 1.0)
    moved = cv2.warpAffine(image, turn, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    alpha = cv2.GaussianBlur(cv2.warpAffine(mask, turn, (w, h)), (0, 0), max(1.0, 0.03 * palm))[..., None]
    out = np.clip(np.rint(image * (1 - alpha) + moved * alpha), 0, 255).astype(np.uint8)
    return Case(candidate=jpeg(out, 90), source=image)


DEFECTS["finger_add"] = finger_add
