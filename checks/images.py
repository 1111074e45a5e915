"""Decoding images once, the same way for every input.

Every file goes through :func:`load_image`: EXIF orientation applied, grey / palette / RGBA / CMYK /
16-bit / float inputs turned into RGB float32 in [0, 1] (sRGB-encoded) plus an optional alpha
channel. Anything that cannot be read raises :class:`InputError` with a one-line message that names
the file and says what to do.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# A decoded image larger than this is refused as a likely decompression bomb (about 16k x 16k).
MAX_PIXELS = 268_000_000


class InputError(Exception):
    """Bad input: the message is one line naming the file and what to do."""


@dataclass(frozen=True)
class DecodedImage:
    """A decoded file at its own resolution."""

    path: str | None
    pixels: np.ndarray  # H x W x 3 RGB, sRGB-encoded: uint8 for 8-bit files, float32 in [0, 1] for deeper ones
    alpha: np.ndarray | None  # H x W float32 in [0, 1], None when the file has no transparency
    mode: str  # the file's own PIL mode, for reports

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)"""
        return (self.pixels.shape[1], self.pixels.shape[0])

    @property
    def rgb(self) -> np.ndarray:
        """float32 RGB in [0, 1]"""
        return as_float(self.pixels)

    @property
    def uint8(self) -> np.ndarray:
        return to_uint8(self.pixels)


def load_image(path: str | Path, role: str = "image") -> DecodedImage:
    """Decode ``path`` into a :class:`DecodedImage`; ``role`` names the input in error messages."""
    path = Path(path)
    label = f"{role} {str(path)!r}"
    if not path.exists():
        raise InputError(f"{label} does not exist: check the path")
    if not path.is_file():
        raise InputError(f"{label} is not a file: pass an image file")
    return _decode(path, label, str(path))


def load_image_bytes(data: bytes, role: str = "image", name: str = "upload") -> DecodedImage:
    """Decode an image held in memory (an upload, a chat attachment) exactly as :func:`load_image`
    decodes a file; ``name`` stands for it in messages and reports."""
    import io

    if not data:
        raise InputError(f"{role} {name!r} is empty: send the image file's bytes")
    return _decode(io.BytesIO(data), f"{role} {name!r}", None)


def _decode(source, label: str, path: str | None) -> DecodedImage:
    """Open, fully load and orient one image (a path or a file object); every failure is an InputError."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as opened:
                opened.load()
                image = ImageOps.exif_transpose(opened)
                mode = opened.mode
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(
            f"{label} is too large to decode safely (over {MAX_PIXELS:,} pixels): downscale it first"
        ) from None
    except UnidentifiedImageError:
        raise InputError(f"{label} is not an image Pillow can read: pass a PNG, JPEG, WebP or TIFF") from None
    except OSError as exc:
        raise InputError(f"{label} could not be decoded ({exc}): the file is truncated or corrupt, export it again") from None
    return decoded_from_pil(image, path, mode)


def decoded_from_pil(image, path: str | None = None, mode: str | None = None) -> DecodedImage:
    """Turn any PIL image into RGB float32 plus optional alpha."""
    mode = mode or image.mode
    alpha = None
    if image.mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0
        image = image.convert("RGB") if image.mode != "LA" else image.convert("L")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        grey = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if grey.max(initial=0) > 255 or image.mode.startswith("I;16") else 255.0
        grey = np.clip(grey / peak, 0, 1)
        pixels = np.repeat(grey[..., None], 3, axis=2)
    elif image.mode == "F":
        grey = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
        pixels = np.repeat(grey[..., None], 3, axis=2)
    elif image.mode == "L" or image.mode == "1":
        grey = np.asarray(image.convert("L"), dtype=np.uint8)
        pixels = np.repeat(grey[..., None], 3, axis=2)
    else:
        # RGB, CMYK, YCbCr, LAB, HSV and the rest: Pillow's own conversion to RGB.
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if alpha is not None and float(alpha.min()) >= 1.0:
        alpha = None  # an opaque alpha channel carries no boundary
    return DecodedImage(path=path, pixels=np.ascontiguousarray(pixels), alpha=alpha, mode=mode)


def decoded_from_array(array: np.ndarray, path: str | None = None) -> DecodedImage:
    """Wrap an in-memory array (H x W x 3/4 uint8 or float in [0, 1]) as a decoded image."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise InputError(f"image array has shape {array.shape}: pass H x W x 3 (RGB) or H x W x 4 (RGBA)")
    pixels = array[..., :3] if array.dtype == np.uint8 else np.clip(array[..., :3], 0, 1).astype(np.float32)
    alpha = as_float(array[..., 3]) if array.shape[2] == 4 else None
    if alpha is not None and float(alpha.min()) >= 1.0:
        alpha = None
    return DecodedImage(path=path, pixels=np.ascontiguousarray(pixels), alpha=alpha,
                        mode="RGBA" if alpha is not None else "RGB")


def load_mask(path: str | Path) -> np.ndarray:
    """Read an edit mask: white (>= 128) is where the edit was allowed. Returns a bool array.

    A mask given as a transparent PNG in the GPT Image convention (alpha 0 = edit here) is read from
    its alpha channel instead.
    """
    return mask_from_decoded(load_image(path, role="mask"))


def mask_from_decoded(decoded: DecodedImage) -> np.ndarray:
    """The edit mask a decoded image stands for (see :func:`load_mask`)."""
    rgb = decoded.rgb
    if decoded.alpha is not None and float(np.ptp(rgb)) < 1e-6:
        return decoded.alpha < 0.5
    return rgb.mean(axis=2) >= 0.5


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """uint8 as is; float [0, 1] -> uint8, rounded."""
    if pixels.dtype == np.uint8:
        return pixels
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


def as_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1]; float as float32."""
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) * np.float32(1 / 255)
    return pixels.astype(np.float32, copy=False)


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """The sRGB transfer function removed: sRGB-encoded values in [0, 1] -> linear light (same dtype)."""
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def linear_to_srgb8(linear: np.ndarray) -> np.ndarray:
    """Linear light -> sRGB-encoded uint8, clipped to [0, 1] first."""
    x = np.clip(linear, 0.0, 1.0)
    encoded = np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    return np.clip(np.rint(encoded * 255.0), 0, 255).astype(np.uint8)


# Linear light of each 8-bit sRGB level (float64), for table look-ups.
SRGB8_TO_LINEAR = srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0)
