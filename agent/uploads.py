"""Inputs that arrive over a network (an HTTP upload, a chat attachment): judged before any work.

A front end that takes images from strangers needs three decisions the command line does not:

- :func:`sniff_image`: what the bytes are (by content, never by the name or type the client gave),
  and whether their *decoded* size is within the server's pixel cap, read from the header before a
  single pixel is decoded (a decompression bomb is refused while it is still a few kilobytes);
- :func:`policy_from_text`: a policy sent as TOML text, laid over the defaults like ``--policy FILE``,
  without a file;
- :func:`validate_inputs`: the inputs of a repair decoded and fitted together (a mask of another size,
  an empty mask) before a run id, a folder or a checkpoint exists.

Every refusal is an :class:`~fixloop.checks.images.InputError` with one line; :class:`TooLarge` (a
subclass) marks the ones a server answers with 413.
"""

from __future__ import annotations

import io
import tomllib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from fixloop.checks.images import InputError

if TYPE_CHECKING:
    from fixloop.checks.policy import Policy

# Formats fixloop decodes as images (PIL names); MPO is the JPEG phones write.
IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp", "TIFF": ".tif", "BMP": ".bmp"}


class TooLarge(InputError):
    """An input over a size cap of the server (bytes or decoded pixels)."""


@dataclass(frozen=True)
class SniffedImage:
    """An uploaded image as its header describes it (nothing decoded yet)."""

    role: str
    data: bytes
    format: str  # PIL format name
    width: int
    height: int

    @property
    def suffix(self) -> str:
        return IMAGE_FORMATS[self.format]


def megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP"


def sniff_image(data: bytes, role: str, max_pixels: int) -> SniffedImage:
    """What ``data`` is, from its content, and whether it decodes within ``max_pixels``."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InputError(f"{role} is empty: send the image file's bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:  # reads the header only
                fmt, (width, height) = opened.format, opened.size
    except Image.DecompressionBombError as exc:  # Pillow's own limit refuses it before telling its size
        import re

        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f" {megapixels(int(found.group(1)))}" if found else ""
        raise TooLarge(f"{role} would decode to{size or ' too many pixels'}, over this server's cap of "
                       f"{megapixels(max_pixels)}: downscale it") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InputError(f"{role} is not an image: send a PNG, JPEG, WebP or TIFF file") from None
    if fmt not in IMAGE_FORMATS:
        raise InputError(f"{role} is a {fmt} file: send a PNG, JPEG, WebP or TIFF file")
    if width * height > max_pixels:
        raise TooLarge(f"{role} is {width}x{height} ({megapixels(width * height)}), over this server's cap of "
                       f"{megapixels(max_pixels)}: downscale it")
    return SniffedImage(role=role, data=data, format=fmt, width=width, height=height)


# Policy keys that name files on the machine that runs the checks: a remote client may not set them.
# Every backend setting ([repair.backends.NAME]: checkpoints, ControlNets, models) is the server's.
PATH_KEYS = {"insightface_model"}
SERVER_TABLES = ("repair.backends.",)


def _path_keys(table: dict, where: str = "") -> list[str]:
    found = []
    for key, value in table.items():
        if isinstance(value, dict):
            found += _path_keys(value, f"{where}{key}.")
        elif (key in PATH_KEYS or f"{where}{key}".startswith(SERVER_TABLES)) and value not in ("", None):
            found.append(f"{where}{key}")
    return found


def policy_from_text(text: str, name: str = "policy", allow_paths: bool = False) -> "Policy":
    """A policy given as TOML text, laid over the defaults exactly as ``load_policy(path)`` lays a file.
    Unless ``allow_paths``, keys that name files on this machine (model checkpoints) are refused."""
    from fixloop.checks.policy import load_policy_text

    try:
        override = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{name} is not valid TOML ({exc}): fix the text") from None
    named = [] if allow_paths else _path_keys(override)
    if named:
        raise InputError(f"{name}: {named[0]} names a file on the server, which a remote policy cannot set: leave it out")
    return load_policy_text(text, name)


def validate_inputs(image: bytes, source: bytes | None, mask: bytes | None, references: Sequence[bytes],
                    policy: "Policy") -> None:
    """Decode the inputs of a repair and fit them together, as a run opens them; raises InputError."""
    from fixloop.agent import service
    from fixloop.checks.context import CheckContext

    decoded = service.decode_image(image, "candidate")
    CheckContext.build(decoded, None if source is None else service.decode_image(source, "source"),
                       None if mask is None else service.decode_mask(mask),
                       [service.decode_image(r, "reference") for r in references],
                       max_side=policy.analysis.max_side, mask_name="mask")
