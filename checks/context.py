"""What a check looks at: the candidate, its optional source, edit mask, references and history.

Images are decoded once and brought to one common *analysis size* once: when the candidate and the
source differ in size (a backend returns 1024x1536 for a 1000x1500 input), both are compared at the
smaller of the two, so that resampling alone never looks like blur. Derived views (grey, CIELAB,
linear light) and model analyses are computed on first use and cached on the context and its images,
so checks that need the same thing share it. A context belongs to one run of the checks, whose checks
may run in a few threads (:func:`fixloop.checks.engine.run_checks`); the models behind the analyses
are shared by every thread of the process (:mod:`fixloop.checks.analyses`).

An image's shared analyses (pose, faces, hands, embeddings, line segments, band energies, ...) are
also kept in the process's :data:`STORE` under a digest of its pixels, for the last few images: the
repair loop and a server check many candidates against one source, whose analyses are then computed
once. A stored analysis is what computing it again would give, so no report depends on the store.

Candidate and source are comparable when their aspect ratios agree within ``ASPECT_TOLERANCE``
(:func:`same_aspect`, the one test of that for every layer). Comparable is not yet pixel-aligned:
an edit may have mirrored, turned, zoomed or shifted the picture. :attr:`CheckContext.registration`
brings the source into the candidate's frame once per context (:mod:`fixloop.checks.registration`),
and the checks that compare pixels read :attr:`CheckContext.registered_source` and
:meth:`CheckContext.registered_unedited_region`; ``source`` stays the image as given, for the
structure checks that measure the geometry itself.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import cv2
import numpy as np

from fixloop.checks.base import Region
from fixloop.checks.geometry import fit_size, grow_mask, mask_box, pixel_box, resize_image, resize_mask, share
from fixloop.checks.images import (
    SRGB8_TO_LINEAR,
    DecodedImage,
    InputError,
    as_float,
    decoded_from_array,
    load_image,
    load_mask,
    srgb_to_linear,
    to_uint8,
)

if TYPE_CHECKING:
    from fixloop.checks.registration import Registration

# Largest side at which checks measure; bigger inputs are measured at this size.
DEFAULT_MAX_SIDE = 2048
# Candidate and source whose aspect ratios differ by more than this are not pixel-aligned.
ASPECT_TOLERANCE = 0.03


def same_aspect(size_a: Sequence[int], size_b: Sequence[int], tolerance: float = ASPECT_TOLERANCE) -> bool:
    """True when two (w, h) sizes have the same aspect ratio within ``tolerance`` (relative): one is
    a resampled copy of the other rather than a re-framing. Pass numpy shapes as ``(shape[1], shape[0])``."""
    (wa, ha), (wb, hb) = size_a[:2], size_b[:2]
    return abs((wa / ha) / (wb / hb) - 1.0) <= tolerance


_MISSING = object()


def compute_once(lock: threading.Lock, cache: dict, pending: dict, key: str, compute: Callable[[], Any],
                 stored: Callable[[], Any] | None = None, store: Callable[[Any], None] | None = None) -> Any:
    """``cache[key]``, computed by ``compute()`` once however many threads ask at the same time (a
    second one waits for the first; if the first fails, it computes it itself). ``stored()`` may find
    it elsewhere first (``_MISSING`` when not); ``store(value)`` keeps a new one there."""
    while True:
        with lock:
            value = cache.get(key, _MISSING)
            if value is not _MISSING:
                return value
            event = pending.get(key)
            if event is None:
                value = _MISSING if stored is None else stored()
                if value is not _MISSING:
                    cache[key] = value
                    return value
                event = pending[key] = threading.Event()
                break
        event.wait()
    try:
        value = compute()
    except BaseException:
        with lock:
            del pending[key]
        event.set()
        raise
    with lock:
        cache[key] = value
        del pending[key]
    if store is not None:
        store(value)
    event.set()
    return value


class Memo:
    """A small least-recently-used map, safe to share between threads."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            if key not in self._items:
                return default
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: str, value: Any) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class AnalysisStore:
    """The analyses of the last few images this process has seen, keyed by the images' pixels.

    The repair loop checks every candidate against the same source, a server checks many candidates
    of one upload, a gate meets the same reference again and again: an image whose pixels (at the
    analysis size, alpha included) were analysed before gets its pose, faces, hands, embeddings and
    other shared analyses back instead of running the models again. Every analysis is a function of
    the pixels alone, so a stored result is the one a new run would compute. Bounded: the analyses
    of at most ``images`` images are kept, least recently used dropped first. Thread-safe."""

    def __init__(self, images: int = 4):
        self._images = Memo(images)
        self._lock = threading.Lock()

    @property
    def images(self) -> int:
        return self._images.size

    @images.setter
    def images(self, value: int) -> None:
        self._images.size = value
        if value <= 0:
            self._images.clear()

    def get(self, digest: str, key: str) -> Any:
        entry = self._images.get(digest)
        return _MISSING if entry is None else entry.get(key, _MISSING)

    def put(self, digest: str, key: str, value: Any) -> None:
        with self._lock:
            entry = self._images.get(digest)
            if entry is None:
                entry = {}
                self._images.put(digest, entry)
            entry[key] = value

    def clear(self) -> None:
        self._images.clear()

    def __len__(self) -> int:
        return len(self._images)


# The process's store (``STORE.images = 0`` turns it off; ``STORE.clear()`` empties it).
STORE = AnalysisStore(4)


class AnalysisImage:
    """One image at the analysis size, with lazily computed, cached views.

    ``shared`` analyses are computed once per image (a second thread asking for one that is being
    computed waits for it) and kept in the process's :data:`STORE` under the pixels' digest."""

    def __init__(self, decoded: DecodedImage, size: tuple[int, int]):
        self.decoded = decoded
        self.path = decoded.path
        self.original_size = decoded.size
        self.size = size
        self.pixels = resize_image(decoded.pixels, size)  # uint8, or float32 for deep inputs
        self.alpha = None if decoded.alpha is None else resize_image(decoded.alpha, size)
        self._analyses: dict[str, Any] = {}
        self._pending: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        # The image whose content this one shows unchanged (its source, only re-lit, re-coloured or
        # re-encoded: :mod:`fixloop.checks.content`): the analyses of people are read from that image.
        self.same_content_as: "AnalysisImage | None" = None

    @cached_property
    def digest(self) -> str:
        """SHA-256 of the analysis pixels (and alpha): the key of this image's analyses in the store."""
        h = hashlib.sha256(f"{self.pixels.shape}{self.pixels.dtype}".encode())
        h.update(np.ascontiguousarray(self.pixels).data)
        if self.alpha is not None:
            h.update(np.ascontiguousarray(self.alpha, dtype=np.float32).data)
        return h.hexdigest()

    def shared(self, key: str, compute: Callable[[], Any]) -> Any:
        """Compute an analysis of this image (pose, faces, hands, ...) once and cache it. The result
        is shared by every check and thread that asks for it: never modify it."""
        value = self._analyses.get(key, _MISSING)
        if value is not _MISSING:
            return value
        digest = self.digest
        return compute_once(self._lock, self._analyses, self._pending, key, compute,
                            stored=lambda: STORE.get(digest, key), store=lambda v: STORE.put(digest, key, v))

    def computed(self, key: str) -> bool:
        """True when analysis ``key`` is at hand (computed here or found in the store)."""
        return key in self._analyses or STORE.get(self.digest, key) is not _MISSING

    @cached_property
    def uint8(self) -> np.ndarray:
        return to_uint8(self.pixels)

    @cached_property
    def rgb(self) -> np.ndarray:
        """float32 RGB in [0, 1], sRGB-encoded"""
        if self.pixels.dtype == np.uint8:  # a table look-up: the same values as as_float, faster
            return cv2.LUT(self.pixels, UINT8_TO_FLOAT)
        return as_float(self.pixels)

    @cached_property
    def gray(self) -> np.ndarray:
        """Luma (Rec. 601 weights, as OpenCV), float32 in [0, 1]."""
        return cv2.cvtColor(self.rgb, cv2.COLOR_RGB2GRAY)

    @cached_property
    def linear(self) -> np.ndarray:
        """Linear-light RGB (sRGB transfer removed)."""
        if self.pixels.dtype == np.uint8:
            return cv2.LUT(self.pixels, SRGB_TO_LINEAR)
        return srgb_to_linear(self.rgb).astype(np.float32)

    @cached_property
    def luminance(self) -> np.ndarray:
        """Relative luminance Y (Rec. 709 primaries, linear light)."""
        if self.pixels.dtype == np.uint8:
            # each channel's weighted linear value from a table, summed in the same order as below
            terms = cv2.LUT(self.pixels, WEIGHTED_LINEAR)
            return (terms[..., 0] + terms[..., 1]) + terms[..., 2]
        lin = self.linear
        return (0.2126 * lin[..., 0] + 0.7152 * lin[..., 1] + 0.0722 * lin[..., 2]).astype(np.float32)

    @cached_property
    def lab(self) -> np.ndarray:
        """CIELAB (D65), L* in [0, 100] (OpenCV's float conversion; matches scikit-image to < 0.5)."""
        return cv2.cvtColor(self.rgb, cv2.COLOR_RGB2Lab)


SRGB_TO_LINEAR = SRGB8_TO_LINEAR.astype(np.float32)
# uint8 -> float32 [0, 1] exactly as images.as_float computes it, as a table
UINT8_TO_FLOAT = as_float(np.arange(256, dtype=np.uint8))
# per channel: the Rec. 709 weight times the linear value (float32, as AnalysisImage.luminance's float path)
WEIGHTED_LINEAR = np.stack([np.float32(0.2126) * SRGB_TO_LINEAR, np.float32(0.7152) * SRGB_TO_LINEAR,
                            np.float32(0.0722) * SRGB_TO_LINEAR], axis=1)[:, None, :].copy()


def analysis_size(sizes: Sequence[tuple[int, int]], max_side: int) -> tuple[int, int]:
    """The smallest of the given (w, h) sizes by area, capped so its long side is <= max_side."""
    return fit_size(min(sizes, key=lambda s: s[0] * s[1]), max_side)[0]


@dataclass
class CheckContext:
    """Everything one run of the checks looks at, decoded once and shared between checks."""

    candidate: AnalysisImage
    source: AnalysisImage | None = None
    mask: np.ndarray | None = None  # bool, analysis size, True = the edit was allowed here
    references: list[AnalysisImage] = field(default_factory=list)
    history: list[AnalysisImage] = field(default_factory=list)  # earlier passes, oldest first
    notes: list[str] = field(default_factory=list)  # facts about the inputs worth reporting
    mask_path: str | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)
    _pending: dict[str, threading.Event] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def size(self) -> tuple[int, int]:
        """The analysis size (w, h) every array of the context has."""
        return self.candidate.size

    @property
    def scale_to_candidate(self) -> float:
        """Multiply analysis coordinates by this to get candidate-pixel coordinates."""
        return self.candidate.original_size[0] / self.size[0]

    @property
    def aligned(self) -> bool:
        """True when a source exists and its framing matches the candidate's (same aspect ratio)."""
        if self.source is None:
            return False
        return not any("aspect" in note for note in self.notes)

    @property
    def registration(self) -> "Registration":
        """The source registered to the candidate (mirror, rotation, zoom, shift), computed once per
        context and shared by every check (:mod:`fixloop.checks.registration`)."""
        from fixloop.checks.registration import register

        return self.shared("registration", lambda: register(self))

    @property
    def registered_source(self) -> AnalysisImage | None:
        """The source in the candidate's frame, for pixel comparisons: ``source`` itself when the
        picture did not move (or without a source)."""
        return None if self.source is None else self.registration.source

    def link_same_content(self) -> bool:
        """When the candidate is its source only re-lit, re-coloured or re-encoded, in the same frame
        (:func:`fixloop.checks.content.same_content`), let the candidate's analyses of people be the
        source's (``candidate.same_content_as``); True when linked."""
        from fixloop.checks.content import same_content

        if self.source is None or not same_content(self):
            return False
        self.candidate.same_content_as = self.source
        return True

    def shared(self, key: str, compute: Callable[[], Any]) -> Any:
        """Compute ``key`` once per context and hand the same result to every check that asks (checks
        of one run may run in several threads: a second one asking while it is computed waits for it)."""
        value = self._cache.get(key, _MISSING)
        if value is not _MISSING:
            return value
        return compute_once(self._lock, self._cache, self._pending, key, compute)

    def unedited_region(self, margin: float = 0.02, min_fraction: float = 0.10) -> np.ndarray:
        """Pixels the edit was not allowed to touch: outside the mask grown by ``margin`` of the
        image diagonal. Falls back to the whole image when no mask is given or too little is left.
        """

        def compute() -> np.ndarray:
            whole = np.ones(self.size[::-1], dtype=bool)
            if self.mask is None:
                return whole
            radius = max(1, round(margin * float(np.hypot(*self.size))))
            grown = grow_mask(self.mask, radius)
            outside = ~grown
            return outside if share(outside) >= min_fraction else whole

        return self.shared(f"unedited_region:{margin}:{min_fraction}", compute)

    def registered_unedited_region(self, margin: float = 0.02, min_fraction: float = 0.10) -> np.ndarray:
        """:meth:`unedited_region` in the candidate's frame, for comparisons with :attr:`registered_source`:
        outside the registered edit mask grown by ``margin`` of the diagonal, and only where the
        registered source covers the candidate. The same array as :meth:`unedited_region` when the
        source did not move."""
        registration = self.registration
        if registration.identity:
            return self.unedited_region(margin, min_fraction)

        def compute() -> np.ndarray:
            whole = np.ones(self.size[::-1], dtype=bool) if registration.valid is None else registration.valid
            if registration.mask is None:
                return whole
            radius = max(1, round(margin * float(np.hypot(*self.size))))
            outside = ~grow_mask(registration.mask, radius) & whole
            return outside if share(outside) >= min_fraction else whole

        return self.shared(f"registered_unedited_region:{margin}:{min_fraction}", compute)

    def candidate_box(self, box: Sequence[float]) -> list[int]:
        """Analysis-size box [x0, y0, x1, y1] -> candidate-pixel box, clipped to the image."""
        s = self.scale_to_candidate
        return list(pixel_box([v * s for v in box], self.candidate.original_size))

    def candidate_mask(self, mask: np.ndarray) -> np.ndarray:
        """Analysis-size bool mask (or a coarser grid over the analysis image) -> candidate-resolution
        bool mask (nearest neighbour)."""
        return resize_mask(mask, self.candidate.original_size)

    def box_region(self, box: Sequence[float], digits: int = 5) -> Region:
        """A finding's region from an analysis-size box: the box in candidate pixels and its share of
        the image (rounded to ``digits``)."""
        cbox = self.candidate_box(box)
        w, h = self.candidate.original_size
        area = max(0, cbox[2] - cbox[0]) * max(0, cbox[3] - cbox[1]) / float(w * h)
        return Region(box=cbox, area_fraction=round(area, digits))

    def mask_region(self, mask: np.ndarray, cell: float | tuple[float, float] = 1) -> tuple[Region, np.ndarray]:
        """A finding's region and candidate-resolution mask from a bool mask over the analysis image,
        or over a coarser grid whose cells are ``cell`` analysis px (tiles, a working copy): the box of
        its True cells in candidate pixels and the share of the image the mask covers."""
        full = self.candidate_mask(mask)
        box = mask_box(mask, cell)
        return Region.of_mask(full, None if box is None else self.candidate_box(box)), full

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        candidate: DecodedImage,
        source: DecodedImage | None = None,
        mask: np.ndarray | None = None,
        references: Sequence[DecodedImage] = (),
        history: Sequence[DecodedImage] = (),
        max_side: int = DEFAULT_MAX_SIDE,
        mask_name: str = "mask",
    ) -> "CheckContext":
        """Bring decoded inputs to the analysis size and validate how they fit together."""
        notes: list[str] = []
        sizes = [candidate.size]
        if source is not None:
            cw, ch = candidate.size
            sw, sh = source.size
            if not same_aspect(candidate.size, source.size):
                notes.append(
                    f"candidate aspect {cw}x{ch} differs from source aspect {sw}x{sh}: "
                    "pixel-aligned comparisons are skipped"
                )
            else:
                sizes.append(source.size)
        size = analysis_size(sizes, max_side)
        if source is not None and source.size != candidate.size and not notes:
            notes.append(f"candidate {candidate.size[0]}x{candidate.size[1]} and source "
                         f"{source.size[0]}x{source.size[1]} compared at {size[0]}x{size[1]}")
        analysed_mask = None
        if mask is not None:
            base = source if source is not None else candidate
            expected = (base.size[1], base.size[0])
            if mask.shape != expected:
                what = "source" if source is not None else "candidate"
                raise InputError(
                    f"{mask_name} is {mask.shape[1]}x{mask.shape[0]} but the {what} is "
                    f"{expected[1]}x{expected[0]}: export the mask at the {what}'s size"
                )
            if not mask.any():
                raise InputError(f"{mask_name} is empty (no white pixels): paint the area the edit was allowed to change in white")
            analysed_mask = resize_image(mask.astype(np.float32), size) >= 0.5
        return cls(
            candidate=AnalysisImage(candidate, size),
            source=None if source is None else AnalysisImage(source, size),
            mask=analysed_mask,
            references=[AnalysisImage(r, _fit(r.size, max_side)) for r in references],
            history=[AnalysisImage(h, size) for h in history],
            notes=notes,
        )

    @classmethod
    def from_paths(
        cls,
        candidate: str | Path,
        source: str | Path | None = None,
        mask: str | Path | None = None,
        references: Sequence[str | Path] = (),
        history: Sequence[str | Path] = (),
        max_side: int = DEFAULT_MAX_SIDE,
    ) -> "CheckContext":
        """Decode every input file once; raises :class:`InputError` on bad input."""
        ctx = cls.build(
            load_image(candidate, "candidate"),
            None if source is None else load_image(source, "source"),
            None if mask is None else load_mask(mask),
            [load_image(r, "reference") for r in references],
            [load_image(h, "history image") for h in history],
            max_side=max_side,
            mask_name="mask" if mask is None else f"mask {str(mask)!r}",
        )
        ctx.mask_path = None if mask is None else str(mask)
        return ctx

    @classmethod
    def from_arrays(
        cls,
        candidate: np.ndarray,
        source: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        references: Sequence[np.ndarray] = (),
        history: Sequence[np.ndarray] = (),
        max_side: int = DEFAULT_MAX_SIDE,
    ) -> "CheckContext":
        """In-process entry: uint8 (or [0, 1] float) RGB/RGBA arrays; the mask is bool or 0/255."""
        return cls.build(
            decoded_from_array(candidate),
            None if source is None else decoded_from_array(source),
            None if mask is None else (np.asarray(mask) > (127 if np.asarray(mask).dtype == np.uint8 else 0.5)),
            [decoded_from_array(r) for r in references],
            [decoded_from_array(h) for h in history],
            max_side=max_side,
        )


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    return analysis_size([size], max_side)
