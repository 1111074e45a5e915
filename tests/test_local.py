"""The deterministic repairs of tools/local.py on real photos: each defect injected by tests/defects.py
is found by the real check before the repair and no longer after it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fixloop.checks.color import measure_white_balance
from fixloop.checks.context import CheckContext
from fixloop.checks.engine import run_checks
from tests import defects
from tests.conftest import photo
from fixloop.tools import local
from fixloop.tools.base import TOOLS, RepairError, RepairRequest, RepairResult

LIGHT = ["exposure_drift", "color_temperature_drift"]
LIGHT_PHOTOS = ["face_obama_01.jpg", "body_bus_01.jpg", "gen_clean_01.jpg", "composite_clean_lemur_01.png"]
DRIFTS = [("exposure", -0.5), ("exposure", 0.4), ("white_balance", 30.0), ("white_balance", -30.0)]


def kinds(image, source=None, mask=None, policy=None, names=None) -> list[str]:
    ctx = CheckContext.from_arrays(image, source, mask)
    report = run_checks(ctx, policy, names=names)
    assert report.verdict != "error", [c.error for c in report.checks if c.error]
    return [f.kind for f in report.findings]


def findings(image, source=None, mask=None, policy=None, names=None):
    return run_checks(CheckContext.from_arrays(image, source, mask), policy, names=names).findings


def test_every_local_tool_is_registered_free():
    names = {"local.exposure_color", "local.composite_back", "local.expand_canvas", "local.defringe",
             "local.flip_back", "local.crop_first"}
    assert names <= set(TOOLS.names())
    assert not any(TOOLS.get(name).paid for name in names)
    with pytest.raises(KeyError, match="did you mean 'local.defringe'"):
        TOOLS.get("local.defringes")


def test_each_tool_declares_the_mask_it_needs_and_the_check_that_can_supply_it():
    needs = {name: (TOOLS.get(name).needs_mask != "", TOOLS.get(name).region_check)
             for name in ("local.exposure_color", "local.composite_back", "local.expand_canvas", "local.defringe",
                          "local.flip_back", "local.crop_first")}
    assert needs == {"local.exposure_color": (False, None), "local.composite_back": (True, None),
                     "local.expand_canvas": (False, "subject_cropped"), "local.defringe": (True, "edge_halo"),
                     "local.flip_back": (False, None), "local.crop_first": (True, None)}
    assert "--mask" in TOOLS.get("local.composite_back").needs_mask


# ---- exposure and white balance -----------------------------------------------------------------


@pytest.mark.parametrize("name", LIGHT_PHOTOS)
@pytest.mark.parametrize("defect, amount", DRIFTS)
def test_drift_matched_to_the_source_is_gone(name, defect, amount, policy):
    image = photo(name)
    case = defects.make(defect, image, amount)
    assert kinds(case.candidate, image, policy=policy, names=LIGHT) != []
    before = case.candidate.copy()
    result = TOOLS.get("local.exposure_color").function(RepairRequest(image=case.candidate, source=image))
    assert np.array_equal(case.candidate, before), "the input must not change"
    assert result.image.shape == image.shape and result.cost_usd == 0.0 and result.seconds > 0
    assert kinds(result.image, image, policy=policy, names=LIGHT) == []
    assert abs(result.parameters["ev_after"]) < 0.01 and abs(result.parameters["mired_after"]) < 1.0
    error_before = np.abs(case.candidate.astype(int) - image).mean()
    error_after = np.abs(result.image.astype(int) - image).mean()
    assert error_after < 0.5 * error_before


@pytest.mark.parametrize("name", ["face_obama_01.jpg", "group_cardgame_01.jpg"])
def test_drift_over_an_edit_is_measured_outside_the_mask_and_keeps_the_edit(name, policy):
    """An edit inside the mask plus a global darkening and warming: the correction is measured on the
    unedited pixels, is one curve per channel, and leaves the edit in place."""
    from fixloop.checks.color import white_balance_gains

    image = photo(name)
    edit = defects.edit_inside_mask(image)
    drifted = defects.jpeg(defects.to_srgb(defects.to_linear(edit.candidate) * 2 ** -0.5 * white_balance_gains(25)), 90)
    assert set(kinds(drifted, image, edit.mask, policy, LIGHT)) == set(LIGHT)
    result = local.exposure_color(RepairRequest(image=drifted, source=image, mask=edit.mask))
    assert kinds(result.image, image, edit.mask, policy, LIGHT) == []
    outside = ~edit.mask
    assert np.abs(result.image[outside].astype(int) - image[outside]).mean() < 3.0
    # the recoloured area is still recoloured: its distance to the source is that of the edit itself
    inside_edit = np.abs(edit.candidate[edit.mask].astype(int) - image[edit.mask]).mean()
    inside_now = np.abs(result.image[edit.mask].astype(int) - image[edit.mask]).mean()
    assert inside_now > 0.7 * inside_edit
    # content untouched: every output value is a function of the same channel's input value
    for c in range(3):
        pairs = np.unique(np.stack([drifted[..., c].ravel(), result.image[..., c].ravel()]), axis=1)
        assert len(np.unique(pairs[0])) == pairs.shape[1]


def _mired(before: np.ndarray, after: np.ndarray) -> float:
    return measure_white_balance(CheckContext.from_arrays(after, before)).mired


@pytest.mark.parametrize("name", ["face_dfA_01.jpg", "gen_clean_01.jpg", "body_bus_01.jpg"])
def test_named_targets_set_the_white_whatever_the_cast(name):
    image = photo(name)
    warm, cool = defects.white_balance(image, 40).candidate, defects.white_balance(image, -40).candidate
    assert _mired(cool, warm) > 70

    def to(target, picture):
        return local.exposure_color(RepairRequest(image=picture, parameters={"target": target}))

    neutral_from_warm, neutral_from_cool = to("neutral daylight", warm), to("neutral_daylight", cool)
    assert abs(_mired(neutral_from_cool.image, neutral_from_warm.image)) < 6.0
    assert neutral_from_warm.parameters["mode"] == "target" and neutral_from_warm.parameters["target"] == "neutral daylight"
    sunset, overcast = to("warm sunset", warm).image, to("cool-overcast", warm).image
    expected = 1e6 / 4500 - 1e6 / 6504
    assert abs(_mired(neutral_from_warm.image, sunset) - expected) < 2.0
    assert _mired(neutral_from_warm.image, overcast) < -10


def test_exposure_color_refuses_what_it_cannot_do():
    image = photo("body_skier_01.jpg")
    with pytest.raises(RepairError, match="nothing to match"):
        local.exposure_color(RepairRequest(image=image))
    with pytest.raises(RepairError, match="'neutral daylight'"):
        local.exposure_color(RepairRequest(image=image, parameters={"target": "tungsten"}))
    with pytest.raises(RepairError, match="framed differently"):
        local.exposure_color(RepairRequest(image=image, source=np.ascontiguousarray(image[:, :200])))
    with pytest.raises(RepairError, match="exposure=false"):
        local.exposure_color(RepairRequest(image=image, source=image,
                                           parameters={"exposure": "false", "white_balance": False}))
    with pytest.raises(RepairError, match="uint8 RGB"):
        local.exposure_color(RepairRequest(image=image.astype(np.float32), source=image))


# ---- composite back -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["face_obama_01.jpg", "body_bus_01.jpg", "group_couple_01.jpg"])
def test_composite_back_removes_mask_spill(name, policy):
    image = photo(name)
    case = defects.edit_spills_outside_mask(image)
    assert "mask_spill" in kinds(case.candidate, image, case.mask, policy, ["mask_spill"])
    feather = 10
    result = local.composite_back(RepairRequest(image=case.candidate, source=image, mask=case.mask,
                                                parameters={"feather": feather}))
    assert kinds(result.image, image, case.mask, policy, ["mask_spill"]) == []
    outside = ~case.mask
    assert np.array_equal(result.image[outside], image[outside]), "outside the mask: the source, exactly"
    depth = cv2.distanceTransform(case.mask.astype(np.uint8), cv2.DIST_L2, 5)
    deep = depth > feather + 1
    assert np.array_equal(result.image[deep], case.candidate[deep]), "deep inside: the edit, exactly"
    seam = case.mask & ~deep
    assert (result.image[seam] != case.candidate[seam]).any(), "the seam is a blend"
    assert result.cost_usd == 0.0 and result.parameters["seam"] == "inside"


def test_composite_back_weights_on_a_drawn_mask():
    """A 1 x 9 strip, mask on columns 3..5: hard, inside, centred and outside seams."""
    source = np.zeros((1, 9, 3), np.uint8)
    edit = np.full((1, 9, 3), 200, np.uint8)
    mask = np.zeros((1, 9), bool)
    mask[0, 3:6] = True

    def run(feather, seam):
        result = local.composite_back(RepairRequest(image=edit, source=source, mask=mask,
                                                    parameters={"feather": feather, "seam": seam}))
        return result.image[0, :, 0].tolist()

    assert run(0, "inside") == [0, 0, 0, 200, 200, 200, 0, 0, 0]
    # depth 1 px at the mask's edge, 2 px in its middle: (d - 0.5) / 2 -> 0.25, 0.75 -> smoothstep
    assert run(2, "inside") == [0, 0, 0, 31, 169, 31, 0, 0, 0]
    # outside: full inside, 1 - (d - 0.5) / 2 outside -> 0.75, 0.25
    assert run(2, "outside") == [0, 31, 169, 200, 200, 200, 169, 31, 0]
    assert run(2, "center") == [0, 0, 31, 169, 200, 169, 31, 0, 0]


def test_composite_back_brings_the_source_to_a_resized_result(policy):
    image = photo("gen_clean_01.jpg")
    case = defects.edit_inside_mask(image)
    bigger = cv2.resize(case.candidate, None, fx=1.25, fy=1.25, interpolation=cv2.INTER_CUBIC)
    result = local.composite_back(RepairRequest(image=bigger, source=image, mask=case.mask))
    assert result.image.shape == bigger.shape and result.mask.shape == bigger.shape[:2]
    assert any("resized" in note for note in result.notes)
    with pytest.raises(RepairError, match="needs the source"):
        local.composite_back(RepairRequest(image=bigger, mask=result.mask))
    with pytest.raises(RepairError, match="needs a mask"):
        local.composite_back(RepairRequest(image=bigger, source=image))
    with pytest.raises(RepairError, match="seam"):
        local.composite_back(RepairRequest(image=bigger, source=image, mask=result.mask, parameters={"seam": "x"}))


# ---- canvas expansion ---------------------------------------------------------------------------


def test_expand_to_an_aspect_keeps_the_picture_and_masks_the_new_area():
    image = photo("face_obama_01.jpg")  # 910 x 1137
    h, w = image.shape[:2]
    result = local.expand_canvas(RepairRequest(image=image, parameters={"aspect": "16:9"}))
    H, W = result.image.shape[:2]
    assert H == h and abs(W / H - 16 / 9) < 1e-3
    left, top = result.parameters["offset"]
    assert left == (W - w) // 2 and top == 0
    assert np.array_equal(result.image[:, left:left + w], image)
    expected = np.ones((H, W), bool)
    expected[:, left:left + w] = False
    assert np.array_equal(result.mask, expected)
    # reflected about the edge pixel: the column k px left of the picture is the picture's column k
    for k in (1, 5, 50):
        assert np.array_equal(result.image[:, left - k], image[:, k])
    blurred = local.expand_canvas(RepairRequest(image=image, parameters={"aspect": 16 / 9, "fill": "blur"}))
    assert np.array_equal(blurred.image[:, left:left + w], image)
    new = result.mask
    assert np.abs(np.diff(blurred.image[new].astype(int), axis=0)).mean() < np.abs(np.diff(result.image[new].astype(int), axis=0)).mean()


def test_expand_per_side_anchor_and_multiple():
    image = photo("body_skier_01.jpg")  # 640 x 425
    result = local.expand_canvas(RepairRequest(image=image, parameters={"extend": "left=30,bottom=700",
                                                                        "multiple": 16}))
    H, W = result.image.shape[:2]
    assert H % 16 == 0 and W % 16 == 0 and H >= 425 + 700 and W >= 640 + 30
    left, top = result.parameters["offset"]
    assert np.array_equal(result.image[top:top + 425, left:left + 640], image)
    assert result.mask.sum() == H * W - 425 * 640
    anchored = local.expand_canvas(RepairRequest(image=image, parameters={"aspect": "1:1", "anchor": "top"}))
    assert anchored.parameters["offset"] == [0, 0] and anchored.image.shape[:2] == (640, 640)
    with pytest.raises(RepairError, match="how to grow"):
        local.expand_canvas(RepairRequest(image=image))
    with pytest.raises(RepairError, match="only growing"):
        local.expand_canvas(RepairRequest(image=image, parameters={"extend": {"left": -3}}))
    with pytest.raises(RepairError, match="aspect"):
        local.expand_canvas(RepairRequest(image=image, parameters={"aspect": "wide"}))


def test_expand_by_a_subject_cropped_finding(policy):
    image = photo("body_skier_01.jpg")
    case = defects.crop_through_shins(image)
    found = [f for f in findings(case.candidate, policy=policy, names=["subject_cropped"])]
    assert found, "the shin crop is found"
    extend = found[0].evidence["extend"]
    result = local.expand_canvas(RepairRequest(image=case.candidate, parameters={"finding": found[0]}))
    h, w = case.candidate.shape[:2]
    assert result.image.shape[:2] == (h + extend.get("top", 0) + extend.get("bottom", 0),
                                      w + extend.get("left", 0) + extend.get("right", 0))
    assert result.parameters["extend"]["bottom"] == extend["bottom"] > 0


# ---- defringe -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, defect, amount", [
    ("face_obama_04.jpg", "halo_ring", 0.8),
    ("face_dfE_01.jpg", "halo_ring_mask", 0.8),
    ("group_couple_01.jpg", "halo_ring_single", 0.8),
    ("face_dfF_01.jpg", "halo_ring_mask", -0.8),
])
def test_defringe_removes_the_halo_the_check_found(name, defect, amount, policy):
    image = photo(name)
    case = defects.make(defect, image, amount)
    found = findings(case.candidate, case.source, case.mask, policy, ["edge_halo"])
    assert len(found) == 1
    ring = found[0].mask
    result = local.defringe(RepairRequest(image=case.candidate, parameters={"finding": found[0]}))
    assert result.parameters["polarity"] == ("bright" if amount > 0 else "dark")
    assert findings(result.image, case.source, case.mask, policy, ["edge_halo"]) == []
    changed = (result.image != case.candidate).any(axis=2)
    assert not (changed & ~result.mask).any() and result.mask[ring].all()
    error_before = np.abs(case.candidate[ring].astype(int) - image[ring]).mean()
    error_after = np.abs(result.image[ring].astype(int) - image[ring]).mean()
    assert error_after < 0.75 * error_before


def test_defringe_auto_polarity_and_inpaint_method(policy):
    image = photo("face_obama_04.jpg")
    case = defects.halo_ring(image, 0.8)
    ring = findings(case.candidate, case.source, None, policy, ["edge_halo"])[0].mask
    auto = local.defringe(RepairRequest(image=case.candidate, mask=ring))
    assert auto.parameters["polarity"] == "bright"
    telea = local.defringe(RepairRequest(image=case.candidate, mask=ring, parameters={"method": "telea"}))
    assert findings(telea.image, case.source, None, policy, ["edge_halo"]) == []
    with pytest.raises(RepairError, match="edge-ring mask"):
        local.defringe(RepairRequest(image=case.candidate))
    with pytest.raises(RepairError, match="polarity"):
        local.defringe(RepairRequest(image=case.candidate, mask=ring, parameters={"polarity": "grey"}))


# ---- flip back ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["face_obama_01.jpg", "body_bus_01.jpg", "group_cardgame_01.jpg"])
def test_flip_back_undoes_a_mirror(name, policy):
    image = photo(name)
    case = defects.flip(image)
    assert kinds(case.candidate, image, policy=policy, names=["mirrored"]) == ["mirrored"]
    result = local.flip_back(RepairRequest(image=case.candidate, source=image))
    assert np.array_equal(result.image, case.candidate[:, ::-1])
    assert kinds(result.image, image, policy=policy, names=["mirrored"]) == []
    assert result.parameters["flipped_correlation"] > result.parameters["direct_correlation"]


def test_flip_back_refuses_an_image_that_is_not_mirrored():
    image = photo("body_bus_01.jpg")
    with pytest.raises(RepairError, match="not mirrored"):
        local.flip_back(RepairRequest(image=image, source=image))
    forced = local.flip_back(RepairRequest(image=image, source=image, parameters={"force": True}))
    assert np.array_equal(forced.image, image[:, ::-1])
    upside = local.flip_back(RepairRequest(image=image, parameters={"axis": "vertical"}))
    assert np.array_equal(upside.image, image[::-1])


# ---- crop first ---------------------------------------------------------------------------------


def _small_mask(shape) -> np.ndarray:
    mask = np.zeros(shape[:2], bool)
    mask[400:430, 300:340] = True
    return mask


def test_crop_first_confines_the_change_to_the_padded_box():
    image = photo("face_obama_01.jpg")
    mask = _small_mask(image.shape)
    seen = {}

    def paint_red(request: RepairRequest) -> np.ndarray:
        seen["size"] = request.image.shape
        out = request.image.copy()
        out[request.mask] = (255, 0, 0)
        return out

    result = local.crop_first(RepairRequest(image=image, mask=mask, parameters={"work_side": 256}), paint_red)
    assert result.image.shape == image.shape and result.cost_usd == 0.0
    x0, y0, x1, y1 = result.parameters["box"]
    assert (x0, y0, x1, y1) == (284, 384, 356, 446)  # the 40 x 30 mask + 0.25 x 40 px, at least 16 px
    assert max(seen["size"][:2]) == 256, "the repair ran on the upscaled crop"
    outside = np.ones(mask.shape, bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(result.image[outside], image[outside])
    core = np.zeros(mask.shape, bool)
    core[404:426, 304:336] = True
    assert np.abs(result.image[core].astype(int) - (255, 0, 0)).max() <= 3
    untouched = local.crop_first(RepairRequest(image=image, mask=mask), lambda request: request.image)
    assert np.array_equal(untouched.image, image), "what the repair leaves alone comes back exactly"


def test_crop_first_runs_a_registered_tool_by_name():
    image = photo("face_obama_01.jpg")
    mask = _small_mask(image.shape)
    result = local.crop_first(RepairRequest(image=image, mask=mask, parameters={"repair": "local.flip_back"}))
    assert isinstance(result, RepairResult) and result.parameters["repair"] == "local.flip_back"
    assert result.parameters["scale"] == 4.0  # capped by max_upscale
    x0, y0, x1, y1 = result.parameters["box"]
    changed = (result.image != image).any(axis=2)
    assert changed.any() and not changed[:y0].any() and not changed[y1:].any()
    assert not changed[:, :x0].any() and not changed[:, x1:].any()
    with pytest.raises(RepairError, match="needs a repair"):
        local.crop_first(RepairRequest(image=image, mask=mask))
    with pytest.raises(RepairError, match="did you mean"):
        local.crop_first(RepairRequest(image=image, mask=mask, parameters={"repair": "local.flipback"}))
    with pytest.raises(RepairError, match="framing"):
        local.crop_first(RepairRequest(image=image, mask=mask), lambda request: request.image[:, :10].copy())
