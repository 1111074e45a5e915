"""Hostile image files, built from bytes: chunks that bomb, truncate or lie (shared by
tests/test_hostile.py and bench/fuzz.py)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def png_bytes(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def with_chunk(kind: bytes, data: bytes, base: bytes | None = None) -> bytes:
    """A valid PNG with one extra chunk inserted right after IHDR."""
    base = base or png_bytes()
    at = 8 + 8 + 13 + 4  # signature, IHDR header, IHDR data, CRC
    return base[:at] + chunk(kind, data) + base[at:]


def bomb(size: int = 64 << 20) -> bytes:
    """zlib data that inflates to ``size`` zero bytes (about size / 1000 on disk)."""
    compressor = zlib.compressobj(9)
    block = bytes(1 << 20)
    out = b"".join(compressor.compress(block) for _ in range(size >> 20))
    return out + compressor.flush()


def hostile_files() -> dict[str, bytes]:
    """name -> the bytes of a file no decoder should turn into a traceback."""
    base = png_bytes()
    jpeg = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(jpeg, format="JPEG")
    jpeg_data = bytearray(jpeg.getvalue())
    sof = jpeg_data.find(b"\xff\xc0")
    struct.pack_into(">HH", jpeg_data, sof + 5, 16000, 16000)  # height, width of the frame
    jpeg_data += bytes(16_000 - len(jpeg_data)) if len(jpeg_data) < 16_000 else b""
    exif = b"MM\x00\x2a\x00\x00\x00\x08\x00\x05\xff\xff"  # a TIFF header whose IFD runs off the end
    files = {
        "ztxt_bomb.png": with_chunk(b"zTXt", b"Comment\x00\x00" + bomb(), base),
        "iccp_bomb.png": with_chunk(b"iCCP", b"icc\x00\x00" + bomb(), base),
        "short_phys.png": with_chunk(b"pHYs", b"\x00\x00", base),
        "short_gama.png": with_chunk(b"gAMA", b"\x00", base),
        "short_fctl.png": with_chunk(b"fcTL", b"\x00\x00\x00\x00\x00", with_chunk(b"acTL", struct.pack(">II", 1, 0), base)),
        "bad_exif.png": with_chunk(b"eXIf", exif, base),
        "garbage_exif.png": with_chunk(b"eXIf", b"not a tiff at all", base),
        "truncated.png": base[: len(base) // 2],
        "header_only.png": base[:33],
        "empty.png": b"",
        "text.png": b"hello, this is not an image\n",
        "big_header.jpg": bytes(jpeg_data),
        "truncated.jpg": jpeg.getvalue()[: len(jpeg.getvalue()) // 2],
    }
    return files


def write_hostile(folder: str | Path) -> dict[str, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in hostile_files().items():
        (folder / name).write_bytes(data)
        paths[name] = folder / name
    return paths


def write_shape(path: str | Path, width: int, height: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return Path(path)
