"""The review sheet of agent/review.py on real photos: the three top panels, the mask / control panel,
the 200 % close-ups, the reproduction footer (only the fields a tool used), the header of a run that
repaired nothing and the atomic PNG write."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from PIL import Image

from fixloop.agent.review import (
    CLOSEUP_MAX_SIDE,
    FOOTER_FIELDS,
    GAP,
    LINE_HEIGHT,
    MARGIN,
    MASK_ALPHA,
    MASK_COLOUR,
    ReviewRepair,
    closeup_window,
    footer_lines,
    header_lines,
    middle_panel,
    render_review,
    review_image,
)
from tests.conftest import photo, photo_names

PANEL = 256  # small panels keep the template searches quick

OPENAI = {"tool": "openai", "model": "gpt-image-2", "size": "1024x1536", "quality": "high", "n": 1}
DIFFUSERS = {"tool": "diffusers", "model": "runwayml/stable-diffusion-inpainting", "strength": 0.3,
             "guidance": 5.0, "steps": 40, "seed": 0, "scheduler": None, "scheduler_used": "EulerDiscreteScheduler",
             "control": "openpose", "control_scale": 0.7, "ip_adapter": None, "ip_adapter_scale": 0.6,
             "size": None, "working_size": [512, 512]}


# ---- helpers ---------------------------------------------------------------------------------------

def scaled(image: np.ndarray, height: int = PANEL) -> np.ndarray:
    """The image as a top-row panel: ``height`` px high, aspect kept, INTER_AREA."""
    width = round(image.shape[1] * height / image.shape[0])
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def doubled(crop: np.ndarray) -> np.ndarray:
    return cv2.resize(crop, (crop.shape[1] * 2, crop.shape[0] * 2), interpolation=cv2.INTER_NEAREST)


def locate(sheet: np.ndarray, template: np.ndarray) -> tuple[int, int, float]:
    """Where ``template`` fits the sheet best: (x, y, mean absolute difference there)."""
    scores = cv2.matchTemplate(sheet.astype(np.float32), template.astype(np.float32), cv2.TM_SQDIFF)
    _, _, (x, y), _ = cv2.minMaxLoc(scores)
    h, w = template.shape[:2]
    diff = np.abs(sheet[y:y + h, x:x + w].astype(np.int16) - template.astype(np.int16)).mean()
    return x, y, float(diff)


def brighten_inside(image: np.ndarray, mask: np.ndarray, amount: int = 60) -> np.ndarray:
    out = image.copy()
    out[mask] = np.clip(out[mask].astype(np.int16) + amount, 0, 255).astype(np.uint8)
    return out


def tinted(panel: np.ndarray) -> np.ndarray:
    """``panel`` under the mask tint, as the mask overlay draws it (float)."""
    return panel.astype(np.float32) * (1 - MASK_ALPHA) + MASK_COLOUR * MASK_ALPHA


def frame(shape: tuple[int, ...], width: int = 2) -> np.ndarray:
    """True on the ``width`` px edge of an image of ``shape``."""
    edge = np.ones(shape[:2], dtype=bool)
    edge[width:-width, width:-width] = False
    return edge


def rectangle(shape: tuple[int, ...], x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros(shape[:2], dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def blur_repaired(image: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(before, after): a blurred patch inside ``box`` and the sharp photo that repaired it."""
    x0, y0, x1, y1 = box
    before = image.copy()
    before[y0:y1, x0:x1] = cv2.GaussianBlur(image, (0, 0), 4)[y0:y1, x0:x1]
    return before, image.copy()


def detail_repair(image: np.ndarray, box: tuple[int, int, int, int], title: str = "detail") -> ReviewRepair:
    before, after = blur_repaired(image, box)
    return ReviewRepair(title, "detail", before, after, box=box, parameters=dict(DIFFUSERS))


# ---- row 1 -----------------------------------------------------------------------------------------

def test_top_row_shows_scaled_input_mask_overlay_and_output():
    image = photo("face_obama_01.jpg")  # 910 x 1137
    mask = rectangle(image.shape, 250, 300, 650, 700)
    output = brighten_inside(image, mask)
    repair = ReviewRepair("pass 1 · exposure_drift (P1) · local.exposure_color", "light", image, output,
                          mask=mask, parameters={"tool": "local.exposure_color"})
    sheet = review_image(image, output, [repair], title="fixloop repair · run test · verdict pass",
                         panel_height=PANEL)

    panel_in, panel_out = scaled(image), scaled(output)
    pw = panel_in.shape[1]
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[2] == 3
    assert sheet.shape[1] >= 3 * pw + 2 * GAP and sheet.shape[0] > PANEL
    x_in, y_in, diff_in = locate(sheet, panel_in)
    assert diff_in < 0.5
    x_out, y_out, diff_out = locate(sheet, panel_out)
    assert diff_out < 0.5
    assert y_out == y_in and x_out == x_in + 2 * (pw + GAP)  # input | middle | output, side by side

    middle = sheet[y_in:y_in + PANEL, x_in + pw + GAP:x_in + 2 * pw + GAP].astype(np.int16)
    covered = cv2.resize(mask.astype(np.float32), (pw, PANEL), interpolation=cv2.INTER_AREA) > 0
    kernel = np.ones((7, 7), np.uint8)
    inside = cv2.erode(covered.astype(np.uint8), kernel).astype(bool)
    outside = ~cv2.dilate(covered.astype(np.uint8), kernel).astype(bool)
    change = np.abs(middle - panel_in.astype(np.int16)).sum(axis=2)
    assert change[inside].mean() > 40  # tinted where the repair could change pixels
    assert (middle[inside][:, 0] - middle[inside][:, 1]).mean() > 40  # towards magenta: red over green
    assert change[outside].max() == 0  # the input itself everywhere else
    assert (change[covered & ~inside] > 0).mean() > 0.5  # the outline marks the mask's edge


def test_control_map_fills_the_middle_panel():
    image = photo("hand_ok_01.jpg")  # 848 x 565
    control = cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 100, 200)
    mask = rectangle(image.shape, 300, 150, 600, 450)
    output = brighten_inside(image, mask, 30)
    repair = ReviewRepair("pass 1 · hand_malformed (P0) · diffusers", "structure", image, output, mask=mask,
                          control=control, parameters=dict(DIFFUSERS))
    sheet = review_image(image, output, [repair], panel_height=PANEL)

    x_in, y_in, _ = locate(sheet, scaled(image))
    x_map, y_map, diff = locate(sheet, scaled(np.dstack([control] * 3)))
    assert diff < 0.5
    assert y_map == y_in and x_map == x_in + scaled(image).shape[1] + GAP
    assert "control: openpose" in footer_lines(repair)


def test_no_mask_shows_the_whole_image_mask():
    image = photo("body_skier_01.jpg")
    output = np.clip(image.astype(np.float32) * 1.3, 0, 255).astype(np.uint8)  # a global exposure pass
    repair = ReviewRepair("pass 1 · exposure_drift (P1)", "light", image, output,
                          parameters={"tool": "local.exposure_color"})
    sheet = review_image(image, output, [repair], panel_height=PANEL)

    panel_in = scaled(image)
    x_in, y_in, _ = locate(sheet, panel_in)
    pw = panel_in.shape[1]
    middle = sheet[y_in:y_in + PANEL, x_in + pw + GAP:x_in + 2 * pw + GAP].astype(np.float32)
    edge = frame(middle.shape)
    assert np.abs(middle - tinted(panel_in))[~edge].max() <= 1  # the mask tint over the whole input
    assert (middle[edge] == MASK_COLOUR).all()  # its outline is the frame
    assert np.abs(middle - scaled(output).astype(np.float32)).mean() > 20  # not to be taken for the output
    panel, label = middle_panel(image, output, [repair], PANEL)
    assert label == "repair mask: whole image" and np.array_equal(panel, middle.astype(np.uint8))


def test_a_maskless_repair_beside_masked_ones_adds_the_frame():
    image = photo("face_obama_01.jpg")
    mask = rectangle(image.shape, 250, 300, 650, 700)
    lit = np.clip(image.astype(np.float32) * 1.2, 0, 255).astype(np.uint8)
    output = brighten_inside(lit, mask)
    repairs = [ReviewRepair("pass 1 · exposure", "light", image, lit, parameters={"tool": "local.exposure_color"}),
               ReviewRepair("pass 2 · local", "structure", lit, output, mask=mask, parameters={"tool": "x"})]
    panel, label = middle_panel(image, output, repairs, PANEL)
    assert label == "repair mask; whole image (frame) for 1 repair"

    panel_in = scaled(image).astype(np.int16)
    change = np.abs(panel.astype(np.int16) - panel_in).sum(axis=2)
    covered = cv2.resize(mask.astype(np.float32), panel.shape[1::-1], interpolation=cv2.INTER_AREA) > 0
    kernel = np.ones((7, 7), np.uint8)
    inside = cv2.erode(covered.astype(np.uint8), kernel).astype(bool)
    outside = ~cv2.dilate(covered.astype(np.uint8), kernel).astype(bool)
    edge = frame(panel.shape)
    assert change[inside].mean() > 40  # the local mask is tinted
    assert change[outside & ~frame(panel.shape, 4)].max() == 0  # the rest is the input, untinted
    assert (panel[edge] == MASK_COLOUR).all()  # the whole-image repair: the frame


def test_canvas_expansion_draws_the_mask_over_the_output():
    image = photo("body_skier_01.jpg")  # 640 x 425
    output = cv2.copyMakeBorder(image, 0, 0, 80, 80, cv2.BORDER_REFLECT)
    new = np.zeros(output.shape[:2], dtype=bool)
    new[:, :80] = new[:, -80:] = True  # the invented border is where the repair painted
    repair = ReviewRepair("pass 1 · crop_tight (P2) · local.expand_canvas", "structure", image, output, mask=new,
                          parameters={"tool": "local.expand_canvas", "size": [output.shape[1], output.shape[0]]})
    sheet = review_image(image, output, [repair], panel_height=PANEL)

    panel_in, panel_out = scaled(image), scaled(output)
    x_in, y_in, diff_in = locate(sheet, panel_in)
    x_out, y_out, diff_out = locate(sheet, panel_out)
    assert diff_in < 0.5 and diff_out < 0.5
    mid_x, mid_w = x_in + panel_in.shape[1] + GAP, panel_out.shape[1]
    assert x_out == mid_x + mid_w + GAP  # the middle panel has the output's width
    middle = sheet[y_in:y_in + PANEL, mid_x:mid_x + mid_w].astype(np.int16)
    change = np.abs(middle - panel_out.astype(np.int16)).sum(axis=2)
    border = round(80 * PANEL / output.shape[0])
    assert change[:, 2:border - 3].mean() > 40 and change[:, -border + 3:-2].mean() > 40
    assert change[:, border + 4:-border - 4].max() == 0
    assert "size: 800x425" in footer_lines(repair)


def test_nothing_repaired_shows_the_input_once_and_says_so():
    image = photo("body_skier_01.jpg")
    notes = ["stop: clean: no P0/P1 defect left", "0 pass(es), 0 accepted, $0.0000 spent, 2.7 s"]
    sheet = review_image(image, image, [], title="run x", notes=notes, panel_height=PANEL)
    panel_in = scaled(image)
    x_in, y_in, diff = locate(sheet, panel_in)
    assert diff < 0.5
    assert sheet.shape[1] == max(panel_in.shape[1], 200) + 2 * MARGIN  # one panel: no copies beside it
    assert header_lines(image, image, [], "run x", notes) == [
        "run x", "nothing was repaired: stop: clean: no P0/P1 defect left", notes[1],
        "input 640x425, output unchanged"]
    assert y_in == MARGIN + 4 * LINE_HEIGHT + GAP + LINE_HEIGHT  # four header lines, the panel's title, the panel
    assert sheet.shape[0] == y_in + PANEL + 2 * GAP + MARGIN  # no footer: the notes are in the header
    assert header_lines(image, image, [])[0] == "nothing was repaired: no repair was accepted"

    other = np.ascontiguousarray(image[:, ::-1])  # an output that differs all the same: input | output
    sheet = review_image(image, other, [], notes=notes, panel_height=PANEL)
    x_in, y_in, _ = locate(sheet, panel_in)
    x_out, y_out, diff_out = locate(sheet, scaled(other))
    assert diff_out < 0.5 and y_out == y_in and x_out == x_in + panel_in.shape[1] + GAP
    assert sheet.shape[1] == 2 * panel_in.shape[1] + GAP + 2 * MARGIN
    assert header_lines(image, other, [], notes=notes)[-1] == "input 640x425, output 640x425"


# ---- row 2: close-ups ------------------------------------------------------------------------------

def test_closeup_window_pads_a_quarter_per_side_and_clamps():
    assert closeup_window((300, 200, 400, 280), 1024, 768) == (275, 180, 425, 300)
    assert closeup_window((0, 10, 40, 50), 1024, 768) == (0, 0, 50, 60)  # clamped at the left and top
    assert closeup_window((1000, 740, 1024, 768), 1024, 768) == (994, 733, 1024, 768)


def test_closeup_window_shrinks_around_the_centre_instead_of_scaling_down():
    side = CLOSEUP_MAX_SIDE // 2
    x0, y0, x1, y1 = closeup_window((200, 100, 800, 600), 1024, 768)
    assert (x1 - x0, y1 - y0) == (side, side)
    assert abs((x0 + x1) / 2 - 500) <= 1 and abs((y0 + y1) / 2 - 350) <= 1
    x0, y0, x1, y1 = closeup_window((0, 0, 1024, 30), 1024, 768)  # a wide strip at the top edge
    assert (x0, x1 - x0) == (412, side) and (y0, y1) == (0, 38)
    x0, y0, x1, y1 = closeup_window((900, 600, 1024, 768), 1024, 768)  # near the corner: stays inside
    assert x1 <= 1024 and y1 <= 768 and x1 - x0 <= side and y1 - y0 == side


def test_closeups_are_true_200_percent_crops_of_before_and_after():
    image = photo("gen_clean_01.jpg")  # 1024 x 1360
    box = (400, 500, 520, 600)
    repair = detail_repair(image, box, "pass 2 · blur_local (P1) · diffusers")
    sheet = review_image(image, image, [repair], panel_height=PANEL)

    x0, y0, x1, y1 = closeup_window(box, image.shape[1], image.shape[0])
    assert (x0, y0, x1, y1) == (370, 475, 550, 625)
    bx, by, before_diff = locate(sheet, doubled(repair.before[y0:y1, x0:x1]))
    ax, ay, after_diff = locate(sheet, doubled(repair.after[y0:y1, x0:x1]))
    assert before_diff == 0 and after_diff == 0  # pixel for pixel: nearest-neighbour 2x
    assert ay == by and ax == bx + 2 * (x1 - x0) + GAP  # before | after, side by side
    _, top, _ = locate(sheet, scaled(image))
    assert by > top + PANEL  # below the top row


def test_closeup_row_only_with_a_detail_repair():
    image = photo("gen_clean_01.jpg")
    box = (400, 500, 520, 600)
    detail = detail_repair(image, box)
    light = ReviewRepair("light", "light", detail.before, detail.after, box=box, parameters={})
    without = review_image(image, image, [light], panel_height=PANEL)
    with_row = review_image(image, image, [light, detail], panel_height=PANEL)
    x0, y0, x1, y1 = closeup_window(box, image.shape[1], image.shape[0])
    crop = doubled(detail.after[y0:y1, x0:x1])
    assert with_row.shape[0] - without.shape[0] >= crop.shape[0]
    assert locate(with_row, crop)[2] == 0
    assert locate(without, crop)[2] > 5


def test_closeup_uses_the_mask_bounding_box_without_a_box():
    image = photo("face_obama_01.jpg")
    mask = rectangle(image.shape, 420, 380, 500, 460)
    output = brighten_inside(image, mask, 40)
    repair = ReviewRepair("pass 3 · halo (P2)", "detail", image, output, mask=mask, parameters={})
    sheet = review_image(image, output, [repair], panel_height=PANEL)
    x0, y0, x1, y1 = closeup_window((420, 380, 500, 460), image.shape[1], image.shape[0])
    assert locate(sheet, doubled(output[y0:y1, x0:x1]))[2] == 0
    assert locate(sheet, doubled(image[y0:y1, x0:x1]))[2] == 0


def test_closeup_before_window_is_scaled_when_sizes_differ():
    image = photo("body_skier_01.jpg")  # 640 x 425
    after = cv2.resize(image, (1280, 850), interpolation=cv2.INTER_LANCZOS4)  # an upscaling repair
    repair = ReviewRepair("pass 2 · upscale", "detail", image, after, box=(600, 300, 760, 420), parameters={})
    sheet = review_image(image, after, [repair], panel_height=PANEL)
    x0, y0, x1, y1 = closeup_window(repair.box, 1280, 850)
    assert locate(sheet, doubled(after[y0:y1, x0:x1]))[2] == 0
    assert locate(sheet, doubled(image[y0 // 2:y1 // 2, x0 // 2:x1 // 2]))[2] == 0


def test_at_most_four_closeups():
    image = photo("gen_clean_01.jpg")
    boxes = [(100 + 150 * i, 200, 200 + 150 * i, 300) for i in range(5)]
    repairs = [detail_repair(image, box, f"detail {i}") for i, box in enumerate(boxes)]
    sheet = review_image(image, image, repairs, panel_height=PANEL)
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = closeup_window(box, image.shape[1], image.shape[0])
        before_crop = doubled(repairs[i].before[y0:y1, x0:x1])  # the blurred patch is unique to each repair
        found = locate(sheet, before_crop)[2] == 0
        assert found == (i < 4), i


# ---- footer ----------------------------------------------------------------------------------------

def test_footer_lists_only_the_fields_the_tool_used():
    image = photo("body_skier_01.jpg")
    repair = ReviewRepair("pass 2 · hand_malformed (P0) · openai gpt-image-2", "structure", image, image,
                          parameters=dict(OPENAI))
    lines = footer_lines(repair)
    assert lines == ["pass 2 · hand_malformed (P0) · openai gpt-image-2 [structure]",
                     "backend/model: openai gpt-image-2", "size: 1024x1536", "quality: high"]
    local = footer_lines(ReviewRepair("pass 1", "light", image, image,
                                      parameters={"tool": "local.exposure_color", "ev_applied": 0.48}))
    assert local == ["pass 1 [light]", "backend/model: local.exposure_color"]  # no dozen "-" fields
    assert footer_lines(ReviewRepair("p", "light", image, image))[1:] == ["backend/model: -"]  # always shown
    labels = [label for label, _ in FOOTER_FIELDS]
    assert not any(line.endswith(": -") for line in lines + local)
    assert [line.split(":")[0] for line in lines[1:]] == labels[:3]


def test_footer_reads_the_diffusers_settings():
    image = photo("body_skier_01.jpg")
    lines = footer_lines(ReviewRepair("pass 3", "detail", image, image, parameters=dict(DIFFUSERS)))
    assert lines[1:] == [  # no quality, no sampler: diffusers has neither
        "backend/model: diffusers runwayml/stable-diffusion-inpainting",
        "size: 512x512",  # the working size when no size was asked for
        "denoise: 0.3",
        "CFG: 5",
        "steps: 40",
        "scheduler: EulerDiscreteScheduler",  # the one that ran when the checkpoint's own was kept
        "seed: 0",  # a zero seed is a seed, not a gap
        "control: openpose",
        "control scale: 0.7",
    ]  # no IP-Adapter: its default reference scale is not shown as used
    with_adapter = footer_lines(ReviewRepair("p", "detail", image, image,
                                             parameters=DIFFUSERS | {"ip_adapter": "h94/IP-Adapter"}))
    assert with_adapter[-1] == "reference scale: 0.6"


def test_footer_accepts_the_other_key_spellings():
    image = photo("body_skier_01.jpg")
    parameters = {"tool": "diffusers", "model": "sdxl", "denoise": 0.55, "cfg": 6.5, "sampler": "dpm++_2m",
                  "scheduler": "karras", "reference_scale": 0.7, "control": None, "control_scale": 0.6}
    lines = footer_lines(ReviewRepair("pass 1", "structure", image, image, parameters=parameters))
    assert lines[1:] == ["backend/model: diffusers sdxl", "denoise: 0.55", "CFG: 6.5", "sampler: dpm++_2m",
                         "scheduler: karras", "reference scale: 0.7"]  # no control, so no control scale
    assert not any(line.startswith("control") for line in lines)
    assert footer_lines(ReviewRepair("g", "light", image, image, parameters={"guidance_scale": 7}))[1:] == [
        "backend/model: -", "CFG: 7"]
    assert footer_lines(ReviewRepair("c", "light", image, image,
                                     parameters={"tool": "local.composite_back", "feather": 2}))[1:] == [
        "backend/model: local.composite_back"]


def test_notes_add_footer_lines_and_long_ones_wrap():
    image = photo("body_skier_01.jpg")
    repairs = [ReviewRepair("pass 1", "light", image, image, parameters={"tool": "local.exposure_color"})]
    plain = review_image(image, image, repairs, panel_height=PANEL)
    noted = review_image(image, image, repairs, notes=["stop: all checks pass", "spend $0.17"], panel_height=PANEL)
    assert noted.shape[0] - plain.shape[0] == 2 * LINE_HEIGHT
    long = review_image(image, image, repairs, notes=["open defect " * 80], panel_height=PANEL)
    assert long.shape[0] - plain.shape[0] >= 3 * LINE_HEIGHT
    assert long.shape[1] == plain.shape[1]  # wrapped to the sheet, never widening it
    footer = noted[plain.shape[0] - 12:]
    assert (footer < 128).any()  # dark text on the light background
    # nothing repaired: the notes are in the header, wrapped the same way
    plain, noted = (review_image(image, image, [], notes=notes, panel_height=PANEL)
                    for notes in (["stop: x"], ["stop: x", "spend $0.17", "open defect " * 80]))
    assert noted.shape[0] - plain.shape[0] >= 4 * LINE_HEIGHT and noted.shape[1] == plain.shape[1]


# ---- writing and validation ------------------------------------------------------------------------

def test_render_writes_the_png_atomically(tmp_path):
    image = photo("face_obama_01.jpg")
    mask = rectangle(image.shape, 250, 300, 650, 700)
    output = brighten_inside(image, mask)
    repairs = [ReviewRepair("pass 1", "light", image, output, mask=mask, parameters={"tool": "local.exposure_color"}),
               detail_repair(output, (400, 400, 500, 500), "pass 2")]
    target = tmp_path / "sheets" / "review.png"
    returned = render_review(image, output, repairs, target, title="run", panel_height=PANEL)
    assert returned == target and target.is_file()
    assert os.listdir(target.parent) == ["review.png"]  # no temp file left behind
    with Image.open(target) as decoded:
        assert decoded.format == "PNG" and decoded.mode == "RGB"
        pixels = np.asarray(decoded)
    assert np.array_equal(pixels, review_image(image, output, repairs, title="run", panel_height=PANEL))


def test_render_refuses_a_path_without_png_suffix(tmp_path):
    image = photo("body_skier_01.jpg")
    for name in ("review.jpg", "review"):
        with pytest.raises(ValueError, match="png"):
            render_review(image, image, [], tmp_path / name)
    assert os.listdir(tmp_path) == []


def test_bad_inputs_raise_one_line_value_errors():
    image = photo("body_skier_01.jpg")
    good = ReviewRepair("r", "light", image, image)
    cases = {
        "input_image": dict(input_image=image.astype(np.float32)),
        "output_image": dict(output_image=image[..., 0]),
        "repairs\\[0\\].before": dict(repairs=[ReviewRepair("r", "light", image.astype(np.int32), image)]),
        "repairs\\[1\\].mask": dict(repairs=[good, ReviewRepair("r", "light", image, image,
                                                                 mask=np.zeros((5, 5), bool))]),
        "repairs\\[0\\].stage": dict(repairs=[ReviewRepair("r", "fix", image, image)]),
        "repairs\\[0\\].box": dict(repairs=[ReviewRepair("r", "detail", image, image, box=(50, 50, 50, 80))]),
        "repairs\\[0\\].control": dict(repairs=[ReviewRepair("r", "light", image, image,
                                                             control=np.zeros((8, 8), np.float32))]),
        "panel_height": dict(panel_height=0),
    }
    for name, change in cases.items():
        arguments = dict(input_image=image, output_image=image, repairs=[good]) | change
        panel_height = arguments.pop("panel_height", PANEL)
        with pytest.raises(ValueError, match=name) as error:
            review_image(**arguments, panel_height=panel_height)
        assert "\n" not in str(error.value)


def test_every_photo_size_renders():
    for name in photo_names()[::6]:
        image = photo(name)
        h, w = image.shape[:2]
        box = (w // 3, h // 3, w // 3 + max(1, w // 10), h // 3 + max(1, h // 10))
        sheet = review_image(image, image, [detail_repair(image, box, name)], title=name, panel_height=PANEL)
        assert locate(sheet, scaled(image))[2] < 0.5, name
