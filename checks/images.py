"""Decoding images once, the same way for every input.

Every file goes through :func:`load_image`: EXIF orientation applied, grey / palette / RGBA / CMYK /
16-bit / float inputs turned into RGB float32 in [0, 1] (sRGB-encoded) plus an optional alpha
channel. Anything that cannot be read raises :class:`InputError` with a one-line message that names
the file and says what to do.
"""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Decoded pixels at most (the policy's ``analysis.max_pixels`` default): a JPEG larger than this is
# decoded reduced (Pillow's ``draft``, 1/2 to 1/8 scale), any other image larger than this is refused
# before its pixels are read. 40 MP keeps a whole check under 1.5 GB (bench/fuzz.py measures it).
MAX_PIXELS = 40_000_000
# The shapes every command accepts: at least MIN_SIDE px a side, at most MAX_ASPECT long side : short
# side (crops down to 32 px a side and panoramas up to 10:1 are checked; a 1x1 or a 3-px strip is not).
MIN_SIDE = 16
MAX_ASPECT = 16.0
# Pillow's own limit on text / ICC chunks it inflates (a 64 MB zTXt is refused, not inflated).
MAX_CHUNK_BYTES = 1 << 20

_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, KeyError,
                  ZeroDivisionError, OverflowError, RuntimeError, MemoryError)


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


def load_image(path: str | Path, role: str = "image", max_pixels: int | None = None) -> DecodedImage:
    """Decode ``path`` into a :class:`DecodedImage`; ``role`` names the input in error messages.
    An image over ``max_pixels`` (default :data:`MAX_PIXELS`) is decoded reduced when it is a JPEG,
    else refused."""
    path = Path(path)
    label = f"{role} {str(path)!r}"
    try:
        if not path.exists():
            raise InputError(f"{label} does not exist: check the path")
        if not path.is_file():
            raise InputError(f"{label} is not a file: pass an image file")
    except OSError as exc:  # a name too long, a folder that cannot be read
        raise InputError(f"{label} cannot be read ({exc.strerror or exc}): check the path") from None
    try:
        data = path.read_bytes()
    except OSError:  # let Pillow say what is wrong, as it always has
        return _decode(path, label, str(path), max_pixels)
    return _decode_cached(data, label, str(path), max_pixels)


# Decoded files kept by their bytes (the repair loop and a server check many candidates against one
# source file and one mask): the last few, up to DECODED_KEEP_BYTES of pixels each.
DECODED_KEEP = 4
DECODED_KEEP_BYTES = 16 << 20
_DECODED: OrderedDict[str, DecodedImage] = OrderedDict()
_DECODED_LOCK = threading.Lock()


def _decode_cached(data: bytes, label: str, path: str | None, max_pixels: int | None) -> DecodedImage:
    """:func:`_decode` of a file's bytes, or the image decoded from the same bytes before (its arrays
    are read-only: they are shared)."""
    import hashlib
    import io

    key = f"{hashlib.sha256(data).hexdigest()}:{int(max_pixels or MAX_PIXELS)}"
    with _DECODED_LOCK:
        hit = _DECODED.get(key)
        if hit is not None:
            _DECODED.move_to_end(key)
    if hit is not None:
        return dataclasses.replace(hit, path=path)
    decoded = _decode(io.BytesIO(data), label, path, max_pixels)
    if decoded.pixels.nbytes <= DECODED_KEEP_BYTES and DECODED_KEEP > 0:
        for array in (decoded.pixels, decoded.alpha):
            if array is not None:
                array.setflags(write=False)
        with _DECODED_LOCK:
            _DECODED[key] = decoded
            while len(_DECODED) > DECODED_KEEP:
                _DECODED.popitem(last=False)
    return decoded


def load_image_bytes(data: bytes, role: str = "image", name: str = "upload",
                     max_pixels: int | None = None) -> DecodedImage:
    """Decode an image held in memory (an upload, a chat attachment) exactly as :func:`load_image`
    decodes a file; ``name`` stands for it in messages and reports."""
    if not data:
        raise InputError(f"{role} {name!r} is empty: send the image file's bytes")
    return _decode_cached(bytes(data), f"{role} {name!r}", None, max_pixels)


def check_shape(size: tuple[int, int], label: str) -> None:
    """Refuse, in one line, a shape no command handles: a side under :data:`MIN_SIDE` px or an
    aspect beyond :data:`MAX_ASPECT`."""
    width, height = size
    if min(width, height) < MIN_SIDE:
        raise InputError(f"{label} is {width}x{height}: fixloop needs at least {MIN_SIDE} px a side")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise InputError(f"{label} is {width}x{height}: fixloop handles aspects up to {MAX_ASPECT:g}:1, "
                         "crop it first")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


def _decode(source, label: str, path: str | None, max_pixels: int | None = None) -> DecodedImage:
    """Open, fully load and orient one image (a path or a file object); every failure is an InputError
    of one line, whatever Pillow raised (a truncated chunk, an inflated text bomb, a corrupt EXIF)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    limit = int(max_pixels or MAX_PIXELS)
    too_large = (f"{label} is too large to decode safely (over {limit:,} pixels): downscale it first")
    _configure_once()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's "Corrupt EXIF data", libtiff's own chatter
            with _quiet_native(), Image.open(source) as opened:
                width, height = opened.size
                if width < 1 or height < 1:
                    raise InputError(f"{label} has no pixels ({width}x{height}): export it again")
                if width * height > limit:
                    if opened.format != "JPEG":
                        raise InputError(too_large)
                    reduce = 1  # JPEG decodes at 1/1, 1/2, 1/4 or 1/8 scale
                    while reduce < 8 and (width // reduce) * (height // reduce) > limit:
                        reduce *= 2
                    opened.draft(opened.mode if opened.mode in ("RGB", "L") else None,
                                 (-(-width // reduce), -(-height // reduce)))
                    if opened.size[0] * opened.size[1] > limit:
                        raise InputError(too_large)
                opened.load()
                mode = opened.mode
                try:
                    # turned upright in place: no copy of an image without an EXIF orientation
                    ImageOps.exif_transpose(opened, in_place=True)
                except _DECODE_ERRORS as exc:
                    raise InputError(f"{label} has a corrupt EXIF block ({_one_line(exc)}): "
                                     "export it again") from None
                decoded = decoded_from_pil(opened, path, mode)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{label} is not an image Pillow can read: pass a PNG, JPEG, WebP or TIFF") from None
    except (MemoryError, Image.DecompressionBombError):
        raise InputError(too_large) from None
    except _DECODE_ERRORS as exc:
        raise InputError(f"{label} could not be decoded ({_one_line(exc)}): the file is truncated or "
                         "corrupt, export it again") from None
    return decoded


_NATIVE_QUIET = False
_CONFIGURED = False


def _configure_once() -> None:
    """Pillow's process-wide limits, set once (never per call, so threads see one setting): its
    bomb backstop at 268 MP (our per-call cap is lower), text / ICC chunks inflated to 1 MB at most."""
    global _CONFIGURED
    if _CONFIGURED:
        return
    from PIL import Image, PngImagePlugin

    Image.MAX_IMAGE_PIXELS = 268_000_000
    PngImagePlugin.MAX_TEXT_CHUNK = MAX_CHUNK_BYTES
    PngImagePlugin.MAX_TEXT_MEMORY = 4 * MAX_CHUNK_BYTES
    _CONFIGURED = True


def _quiet_native():
    """Silence native decoders' own warnings through their settings, once per process: libtiff's
    warning handler (Pillow sets none unless asked) and OpenCV's log level."""
    import contextlib

    global _NATIVE_QUIET
    if not _NATIVE_QUIET:
        _NATIVE_QUIET = True
        try:
            import cv2

            cv2.setLogLevel(0) if hasattr(cv2, "setLogLevel") else None
        except Exception:  # noqa: BLE001  (OpenCV is optional for decoding)
            pass
        try:
            import ctypes

            from PIL import _imaging, features

            if features.check("libtiff"):
                # the libtiff Pillow links (found through its own module's dependencies, not the system's)
                lib = ctypes.CDLL(_imaging.__file__)
                # its warnings and its errors ("Using code not yet in table."): Pillow raises the
                # error itself, which becomes the one line of an InputError
                for name in ("TIFFSetWarningHandler", "TIFFSetErrorHandler"):
                    if hasattr(lib, name):
                        setter = getattr(lib, name)
                        setter.restype = ctypes.c_void_p
                        setter.argtypes = [ctypes.c_void_p]
                        setter(None)
        except Exception:  # noqa: BLE001  (best effort: no libtiff, no handler)
            pass
    return contextlib.nullcontext()


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
    elif image.mode == "RGB":
        pixels = np.asarray(image, dtype=np.uint8)
    else:
        # CMYK, YCbCr, LAB, HSV and the rest: Pillow's own conversion to RGB.
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


# An 8-bit pixel is white in a mask when the mean of its three channels is at least 0.5, i.e. when
# the channels add up to at least 383 (1.5 x 255, rounded up).
MASK_LEVEL_SUM = 383


def mask_from_decoded(decoded: DecodedImage) -> np.ndarray:
    """The edit mask a decoded image stands for (see :func:`load_mask`)."""
    pixels = decoded.pixels
    if pixels.dtype == np.uint8:  # the float rule below, in integers
        if decoded.alpha is not None and int(pixels.max()) == int(pixels.min()):
            return decoded.alpha < 0.5
        total = pixels[..., 0].astype(np.uint16)
        total += pixels[..., 1]
        total += pixels[..., 2]
        return total >= MASK_LEVEL_SUM
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
