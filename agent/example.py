"""A worked example built at run time from a public-domain photo that scikit-image ships.

The astronaut portrait (NASA, public domain) is the source. The "edit" was meant to recolour the
mission patch area inside the mask, but, as edits often do, it also changed a band outside the
mask, made the whole picture darker and turned it warmer. `fixloop check` should find all three.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fixloop.checks.color import white_balance_gains
from fixloop.checks.images import linear_to_srgb8, srgb_to_linear
from fixloop.checks.report import atomic_path

EXAMPLE_EV = -0.5  # the edit darkened the picture by half a stop
EXAMPLE_MIRED = 30.0  # and warmed it by 30 mired


def build_example() -> dict[str, np.ndarray]:
    """source, mask (uint8, 255 = edit allowed) and the broken candidate, as arrays."""
    from skimage import data

    source = data.astronaut()  # 512 x 512 RGB
    h, w = source.shape[:2]
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[300:420, 330:470] = 255  # the chest with the mission patch: where the edit was allowed

    hsv = cv2.cvtColor(source, cv2.COLOR_RGB2HSV).astype(np.int32)
    hsv[..., 0] = (hsv[..., 0] + 60) % 180
    recoloured = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    edited = source.copy()
    touched = mask.astype(bool).copy()
    touched[300:420, 250:330] = True  # the spill: the edit leaked left of its mask
    edited[touched] = recoloured[touched]
    linear = srgb_to_linear(edited.astype(np.float32) / 255.0)
    candidate = linear_to_srgb8(linear * 2.0**EXAMPLE_EV * white_balance_gains(EXAMPLE_MIRED))
    return {"source": source, "mask": mask, "candidate": candidate}


def write_example(out_dir: str | Path) -> dict[str, Path]:
    """Write source.png, mask.png and candidate.png into ``out_dir``; returns their paths."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for role, array in build_example().items():
        path = out / f"{role}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(array).save(tmp, format="PNG")
        paths[role] = path
    return paths
