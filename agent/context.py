"""RunContext: what one process of a repair run holds besides the checkpointed state.

The decoded inputs (source, edit mask, references, a cut-out's alpha), the policy, the run folder
and the progress callback. None of it is in the state: it is rebuilt from the files when a run
resumes in a fresh process. It also knows the geometry of the run: after an outpaint grew the
canvas, where the source and the edit mask sit on the new picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from fixloop.agent.files import RunFiles
from fixloop.agent.state import RunInputs
from fixloop.checks.context import same_aspect
from fixloop.checks.images import DecodedImage, decoded_from_array, load_image, load_mask, to_uint8
from fixloop.checks.policy import Policy, load_policy

Progress = Callable[..., None]


@dataclass
class RunContext:
    """What one process of a run holds besides the state: decoded inputs, policy, files, progress."""

    inputs: RunInputs
    policy: Policy
    files: RunFiles
    source: DecodedImage | None = None
    edit_mask: np.ndarray | None = None  # bool, the source's (or the input's) size
    references: list[DecodedImage] = field(default_factory=list)
    input_alpha: np.ndarray | None = None  # a cut-out's alpha: checks see it, the final keeps it
    progress: Progress | None = None
    _analysed: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, inputs: RunInputs, progress: Progress | None = None) -> "RunContext":
        """Decode the inputs once (raises InputError with a one-line message on bad input)."""
        policy = load_policy(inputs.policy)
        protected = [inputs.image, inputs.source, inputs.mask, inputs.policy, *inputs.references]
        files = RunFiles(inputs.out_dir, protected)
        decoded = load_image(inputs.image, "image")
        files.remember(inputs.image, to_uint8(decoded.pixels))
        ctx = cls(
            inputs=inputs, policy=policy, files=files,
            source=None if inputs.source is None else load_image(inputs.source, "source"),
            edit_mask=None if inputs.mask is None else load_mask(inputs.mask),
            references=[load_image(r, "reference") for r in inputs.references],
            input_alpha=decoded.alpha, progress=progress)
        # Inputs that cannot go together (a mask of another size, an empty mask) fail here, before a
        # checkpoint or a file exists, with the checks' own one-line message.
        from fixloop.checks.context import CheckContext

        CheckContext.build(decoded, ctx.source, ctx.edit_mask, ctx.references,
                           max_side=policy.analysis.max_side, mask_name=f"mask {inputs.mask!r}")
        files.root.mkdir(parents=True, exist_ok=True)
        return ctx

    def tell(self, event: str, **data: Any) -> None:
        if self.progress is not None:
            self.progress(event, **data)

    def image_array(self, path: str) -> np.ndarray:
        return self.files.image(path)

    def source_pixels(self, image: np.ndarray | None = None, pad: dict[str, int] | None = None) -> np.ndarray | None:
        """The source as the tools get it: on a canvas grown by ``pad``, placed where the input sits
        (see :meth:`framed_source`)."""
        framed = None if image is None else self.framed_source(image, pad)
        if framed is not None:
            return framed
        return None if self.source is None else to_uint8(self.source.pixels)

    def framed_source(self, image: np.ndarray, pad: dict[str, int] | None) -> np.ndarray | None:
        """After an outpaint grew the canvas, the source no longer lines up with the image. This puts
        it back in line: the image with the old frame's area replaced by the source. Comparisons
        against the source (spill, exposure, colour, blur, mirror) then measure the old frame, and the
        new strips, identical on both sides and inside the (grown) edit mask, count as edited.
        None when nothing was grown or the source is framed another way."""
        import cv2

        if self.source is None or not pad or not any(pad.values()):
            return None
        top, bottom, left, right = (int(pad.get(k, 0)) for k in ("top", "bottom", "left", "right"))
        h, w = image.shape[0] - top - bottom, image.shape[1] - left - right
        source = to_uint8(self.source.pixels)
        sh, sw = source.shape[:2]
        if h <= 0 or w <= 0 or not same_aspect((w, h), (sw, sh)):
            return None
        if (sh, sw) != (h, w):
            source = cv2.resize(source, (w, h), interpolation=cv2.INTER_AREA if sw > w else cv2.INTER_CUBIC)
        framed = image.copy()
        framed[top:top + h, left:left + w] = source
        return framed

    def mask_for(self, image: np.ndarray, pad: dict[str, int] | None = None) -> np.ndarray | None:
        """The user's edit mask on ``image``: as given at its size; placed at ``pad`` (px added per
        side by an accepted outpaint) on a grown canvas, the new area outside it; scaled when only
        the resolution changed; None when the framing changed some other way."""
        import cv2

        if self.edit_mask is None:
            return None
        h, w = image.shape[:2]
        if self.edit_mask.shape == (h, w):
            return self.edit_mask
        mh, mw = self.edit_mask.shape
        if pad and any(pad.values()):
            top, bottom, left, right = (int(pad.get(k, 0)) for k in ("top", "bottom", "left", "right"))
            inner = (h - top - bottom, w - left - right)
            if inner[0] > 0 and inner[1] > 0 and same_aspect((inner[1], inner[0]), (mw, mh)):
                frame = self.edit_mask if (mh, mw) == inner else cv2.resize(
                    self.edit_mask.astype(np.uint8), inner[::-1], interpolation=cv2.INTER_NEAREST) > 0
                # the new strips were generated: they count as edited
                return np.pad(frame, ((top, bottom), (left, right)), constant_values=True)
        if not same_aspect((w, h), (mw, mh)):
            return None
        return cv2.resize(self.edit_mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0

    def check(self, image: np.ndarray, pad: dict[str, int] | None = None):
        """Run the enabled checks on ``image`` against the run's source, mask and references.
        ``pad``: px added per side by accepted outpaints (where the input now sits on the canvas)."""
        from fixloop.checks.context import CheckContext
        from fixloop.checks.engine import run_checks

        candidate = image
        if self.input_alpha is not None and self.input_alpha.shape == image.shape[:2]:
            candidate = np.dstack([image, to_uint8(self.input_alpha)])
        # The mask belongs to the source when there is one (the checks compare the two); without a
        # source it belongs to the image. On a grown canvas both follow the image (framed_source):
        # the new strips count as edited.
        source, mask, key = self.source, self.edit_mask, "source"
        framed = self.framed_source(image, pad)
        if framed is not None:
            source, key = decoded_from_array(framed), f"source:{sorted(pad.items())}"
            mask = self.mask_for(image, pad)
            if mask is None:  # no edit mask given: only the new strips count as edited
                mask = np.ones(image.shape[:2], dtype=bool)
                mask[pad.get("top", 0):image.shape[0] - pad.get("bottom", 0),
                     pad.get("left", 0):image.shape[1] - pad.get("right", 0)] = False
        elif source is None:
            mask = self.mask_for(image, pad)
        ctx = CheckContext.build(decoded_from_array(candidate), source, mask, self.references,
                                 max_side=self.policy.analysis.max_side)
        # The source and references are analysed once per run (and per canvas), not once per pass.
        if ctx.source is not None:
            ctx.source = self._analysed.setdefault(f"{key}:{ctx.size}", ctx.source)
        if ctx.references:
            ctx.references = self._analysed.setdefault("references", ctx.references)
        ctx.mask_path = self.inputs.mask
        return run_checks(ctx, self.policy)
