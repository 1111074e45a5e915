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
    x = image.astype(np.float32) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def to_srgb(linear: np.ndarray) -> np.ndarray:
    x = np.clip(linear, 0, 1)
    y = np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055)
    return np.clip(np.rint(y * 255), 0, 255).astype(np.uint8)


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
    from checks.color import white_balance_gains

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
