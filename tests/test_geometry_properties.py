"""Property-based tests (Hypothesis) of the geometry every repair depends on (issue 14): canvas growth
and placement, mask scaling and placement, crop boxes, and the feathered composite that never changes
a pixel outside its mask."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixloop.tools.base import RepairError, RepairRequest
from fixloop.tools.local import MAX_CANVAS_PIXELS, composite_back, expand_canvas, parse_aspect
from fixloop.tools.masks import composite, crop_box, feather, resize_mask

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
sides = st.integers(min_value=1, max_value=96)


@st.composite
def images(draw, min_side: int = 1, max_side: int = 64):
    h = draw(st.integers(min_side, max_side))
    w = draw(st.integers(min_side, max_side))
    seed = draw(st.integers(0, 2**16))
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@st.composite
def masks(draw, shape):
    h, w = shape
    x0 = draw(st.integers(0, w - 1))
    y0 = draw(st.integers(0, h - 1))
    x1 = draw(st.integers(x0 + 1, w))
    y1 = draw(st.integers(y0 + 1, h))
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    if draw(st.booleans()):  # a second, ragged part
        seed = draw(st.integers(0, 2**16))
        mask |= np.random.default_rng(seed).random((h, w)) < 0.05
    return mask


# ---- canvas growth and placement ----------------------------------------------------------------------

aspects = st.sampled_from(["1:1", "2:1", "1:2", "3:2", "2:3", "16:9", "9:16", "4:1", "1:4", "20:1", "1:20"])
extends = st.fixed_dictionaries({}, optional={s: st.integers(0, 200) for s in ("left", "top", "right", "bottom")})


@FAST
@given(image=images(), aspect=st.none() | aspects, extend=st.none() | extends,
       anchor=st.sampled_from(["center", "left", "top", "right", "bottom"]),
       fill=st.sampled_from(["reflect", "blur", "replicate"]), multiple=st.sampled_from([1, 2, 8, 16]))
def test_canvas_growth_keeps_the_picture_where_it_says_and_terminates(image, aspect, extend, anchor, fill, multiple):
    parameters = {"anchor": anchor, "fill": fill, "multiple": multiple}
    if aspect is not None:
        parameters["aspect"] = aspect
    if extend is not None:
        parameters["extend"] = extend
    if aspect is None and extend is None:
        parameters["aspect"] = "1:1"
    h, w = image.shape[:2]
    try:
        result = expand_canvas(RepairRequest(image=image, parameters=parameters))
    except RepairError as exc:  # nothing to grow, too far, too large: one line
        assert "\n" not in str(exc)
        return
    out = result.image
    left, top = result.parameters["offset"]
    pad = result.parameters["extend"]
    assert out.shape[:2] == (h + pad["top"] + pad["bottom"], w + pad["left"] + pad["right"])
    assert (left, top) == (pad["left"], pad["top"])
    assert np.array_equal(out[top:top + h, left:left + w], image)  # the original, pixel for pixel
    assert out.shape[0] * out.shape[1] <= MAX_CANVAS_PIXELS
    assert out.shape[0] % multiple == 0 and out.shape[1] % multiple == 0
    assert not result.mask[top:top + h, left:left + w].any()  # the outpaint mask is the new area only
    assert result.mask.sum() == out.shape[0] * out.shape[1] - h * w
    if aspect is not None and multiple == 1:
        ratio = parse_aspect(aspect)
        ow, oh = out.shape[1], out.shape[0]
        assert abs(ow / oh - ratio) <= max(1 / oh, ratio / ow) * 1.01 or (extend and any(extend.values()))
    if anchor in ("left", "right", "top", "bottom") and extend is None:
        assert pad[anchor] == 0  # the anchored side keeps its edge


# ---- mask scaling and placement -------------------------------------------------------------------------


@FAST
@given(data=st.data(), h=st.integers(1, 80), w=st.integers(1, 80), nh=st.integers(1, 160), nw=st.integers(1, 160))
def test_mask_scaling_keeps_its_size_and_never_loses_the_mask(data, h, w, nh, nw):
    mask = data.draw(masks((h, w)))
    nearest = resize_mask(mask, (nw, nh))
    covering = resize_mask(mask, (nw, nh), any_coverage=True)
    assert nearest.shape == covering.shape == (nh, nw)
    assert nearest.dtype == covering.dtype == bool
    assert covering.any()  # any coverage: a thin mask survives any downscale
    assert not (nearest & ~covering).any()  # nearest neighbour never reaches past the covered pixels
    if (nh, nw) == (h, w):
        assert np.array_equal(nearest, mask)
    if nh % h == 0 and nw % w == 0:  # an integer enlargement places every pixel on its block
        assert np.array_equal(nearest, np.kron(mask, np.ones((nh // h, nw // w), bool)))


# ---- crop boxes -------------------------------------------------------------------------------------------


@FAST
@given(data=st.data(), h=st.integers(1, 120), w=st.integers(1, 120), padding=st.integers(0, 50),
       fraction=st.floats(0, 2), keep_size=st.booleans())
def test_crop_boxes_contain_the_region_and_stay_inside_the_image(data, h, w, padding, fraction, keep_size):
    mask = data.draw(masks((h, w)))
    x0, y0, x1, y1 = crop_box(mask, (h, w), padding=padding, padding_fraction=fraction, keep_size=keep_size)
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    ys, xs = np.nonzero(mask)
    assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
    if not keep_size:  # clipped only: the box never grows past the padding asked for
        pad = max(padding, int(np.ceil(fraction * max(xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()))))
        assert x0 >= xs.min() - pad and y0 >= ys.min() - pad and x1 <= xs.max() + 1 + pad and y1 <= ys.max() + 1 + pad


# ---- feathered composite -------------------------------------------------------------------------------------


@FAST
@given(data=st.data(), image=images(), width=st.floats(0, 40), side=st.sampled_from(["inside", "outside", "center"]))
def test_a_feathered_composite_never_changes_a_pixel_outside_its_mask(data, image, width, side):
    h, w = image.shape[:2]
    mask = data.draw(masks((h, w)))
    top = np.random.default_rng(1).integers(0, 256, image.shape, dtype=np.uint8)
    weight = feather(mask, width, side)
    assert weight.shape == mask.shape and 0 <= weight.min() and weight.max() <= 1
    out = composite(image, top, mask, width, side)
    if side == "inside":
        assert np.array_equal(out[~mask], image[~mask])  # the composite-back guarantee
        assert (weight[~mask] == 0).all()
    elif side == "outside":
        assert (weight[mask] == 1).all()  # the seam lies outside: the whole mask is the top's
        assert np.array_equal(out[mask], top[mask])
    else:  # the seam straddles the boundary: the weight never falls as one goes into the mask
        assert weight[mask].min() >= weight[~mask].max() - 1e-6 if (~mask).any() else True


@FAST
@given(data=st.data(), image=images(min_side=2), width=st.floats(0, 30))
def test_composite_back_restores_the_source_exactly_outside_the_mask(data, image, width):
    h, w = image.shape[:2]
    mask = data.draw(masks((h, w)))
    edited = 255 - image
    result = composite_back(RepairRequest(image=edited, source=image, mask=mask,
                                          parameters={"feather": width, "seam": "inside"}))
    assert np.array_equal(result.image[~mask], image[~mask])
    assert result.image.shape == image.shape
