"""Decoding: every input mode becomes RGB once, and bad files give one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fixloop.checks import images
from fixloop.checks.context import CheckContext
from fixloop.checks.images import InputError, load_image, load_mask
from tests.conftest import PHOTOS, photo


@pytest.fixture(scope="module")
def rgb():
    return photo("face_obama_01.jpg")[:200, :300]


def test_modes_decode_to_rgb(tmp_path, rgb):
    base = Image.fromarray(rgb)
    cases = {
        "grey.png": base.convert("L"),
        "palette.png": base.convert("P"),
        "cmyk.jpg": base.convert("CMYK"),
        "rgba.png": base.convert("RGBA"),
        "bw.png": base.convert("1"),
    }
    for name, image in cases.items():
        image.save(tmp_path / name)
        decoded = load_image(tmp_path / name)
        assert decoded.size == (300, 200), name
        assert decoded.rgb.shape == (200, 300, 3) and decoded.rgb.dtype == np.float32, name
        assert 0.0 <= decoded.rgb.min() and decoded.rgb.max() <= 1.0, name
    grey = load_image(tmp_path / "grey.png").rgb
    assert np.array_equal(grey[..., 0], grey[..., 2])
    # CMYK goes through Pillow's conversion and stays close to the original colours.
    assert np.abs(load_image(tmp_path / "cmyk.jpg").uint8.astype(int) - rgb).mean() < 12


def test_sixteen_bit_keeps_its_range(tmp_path):
    ramp = (np.linspace(0, 65535, 256 * 64).reshape(64, 256)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    decoded = load_image(tmp_path / "deep.png")
    assert decoded.pixels.dtype == np.float32
    assert decoded.rgb.min() == pytest.approx(0.0) and decoded.rgb.max() == pytest.approx(1.0)


def test_alpha_is_kept_only_when_it_is_transparent(tmp_path, rgb):
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "opaque.png")
    assert load_image(tmp_path / "opaque.png").alpha is None
    rgba[:50, :50, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "cutout.png")
    alpha = load_image(tmp_path / "cutout.png").alpha
    assert alpha is not None and alpha[:50, :50].max() == 0 and alpha[60:, 60:].min() == 1


def test_exif_orientation_is_applied(tmp_path, rgb):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(rgb).save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    decoded = load_image(tmp_path / "rotated.jpg")
    assert decoded.size == (200, 300)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_bytes(b"this is not an image at all"), "is not an image"),
        (lambda p: p.write_bytes((PHOTOS / "face_obama_01.jpg").read_bytes()[:4000]), "truncated or corrupt"),
    ],
    ids=["missing", "not-an-image", "truncated"],
)
def test_bad_files_raise_one_line_errors(tmp_path, make, expected):
    path = tmp_path / "input.jpg"
    make(path)
    with pytest.raises(InputError) as caught:
        load_image(path, "candidate")
    message = str(caught.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    Image.new("L", (400, 400)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 100 * 100)
    with pytest.raises(InputError, match="too large to decode safely"):
        load_image(tmp_path / "big.png")


def test_mask_conventions(tmp_path):
    white_is_edit = np.zeros((40, 60), np.uint8)
    white_is_edit[10:20, 10:30] = 255
    Image.fromarray(white_is_edit).save(tmp_path / "mask.png")
    assert load_mask(tmp_path / "mask.png").sum() == 200
    # GPT Image convention: a transparent PNG whose alpha is 0 where the edit may happen.
    api = np.zeros((40, 60, 4), np.uint8)
    api[..., 3] = 255
    api[10:20, 10:30, 3] = 0
    Image.fromarray(api).save(tmp_path / "api_mask.png")
    assert np.array_equal(load_mask(tmp_path / "api_mask.png"), white_is_edit > 0)


def test_mask_must_match_the_source_and_not_be_empty(rgb):
    with pytest.raises(InputError, match="export the mask at the source's size"):
        CheckContext.from_arrays(rgb, rgb, mask=np.ones((10, 10), bool))
    with pytest.raises(InputError, match="is empty"):
        CheckContext.from_arrays(rgb, rgb, mask=np.zeros(rgb.shape[:2], bool))


def test_candidate_and_source_are_compared_at_the_smaller_size():
    import cv2

    source = photo("gen_clean_01.jpg")  # 1024 x 1360
    bigger = cv2.resize(source, (1088, 1445), interpolation=cv2.INTER_CUBIC)
    ctx = CheckContext.from_arrays(bigger, source)
    assert ctx.size == (1024, 1360)
    assert ctx.candidate.original_size == (1088, 1445)
    assert ctx.aligned and ctx.notes  # the resize is noted in the report
    assert ctx.candidate_box([0, 0, 1024, 1360]) == [0, 0, 1088, 1445]


def test_a_reframed_candidate_is_not_pixel_aligned():
    source = photo("gen_clean_01.jpg")
    ctx = CheckContext.from_arrays(source[:800], source)
    assert not ctx.aligned and "aspect" in ctx.notes[0]


def test_same_aspect_is_the_one_tolerance_for_pixel_alignment():
    from fixloop.checks.context import ASPECT_TOLERANCE, same_aspect

    assert ASPECT_TOLERANCE == 0.03
    assert same_aspect((1000, 1500), (1024, 1536))  # a backend's resampled copy
    assert same_aspect((1000, 1500), (1000, 1544))  # 2.9 % apart
    assert not same_aspect((1000, 1500), (1000, 1547))  # 3.1 % apart
    assert not same_aspect((1000, 1500), (1000, 1200))  # re-framed
    shape = (1360, 1024, 3)  # numpy shapes go in as (w, h)
    assert same_aspect((shape[1], shape[0]), (1088, 1445))


# ---- geometry helpers: tiny hand-drawn cases, exact answers ----------------------------------------

def test_boxes():
    from fixloop.checks.geometry import mask_box, pixel_box, points_box, union_box

    points = np.array([[2.0, 3.0], [5.5, 1.0], [4.0, 7.25]])
    assert points_box(points) == (2.0, 1.0, 5.5, 7.25)
    assert points_box(points, grow=1.0) == (1.0, 0.0, 6.5, 8.25)
    assert union_box([(0, 1, 2, 3), (1, 0, 5, 2)]) == (0.0, 0.0, 5.0, 3.0)
    assert pixel_box((1.2, 0.5, 3.1, 2.9), (10, 10)) == (1, 0, 4, 3)
    assert pixel_box((1.2, 0.5, 3.1, 2.9), (4, 2), grow=1.0) == (0, 0, 4, 2)  # clipped to the image
    assert pixel_box((12.0, 1.0, 15.0, 3.0), (10, 10)) == (10, 1, 10, 3)  # outside: empty
    mask = np.array([[0, 0, 0, 0],
                     [0, 1, 0, 0],
                     [0, 1, 1, 0]], bool)
    assert mask_box(mask) == (1, 1, 3, 3)
    assert mask_box(mask, cell=(8, 4)) == (8, 4, 24, 12)  # a grid of 8 x 4 px tiles
    assert mask_box(np.zeros((2, 2), bool)) is None


def test_disc_and_masks():
    from fixloop.checks.geometry import disc, resize_mask

    assert disc(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    mask = np.array([[1, 0],
                     [0, 1]], bool)
    assert resize_mask(mask, (4, 2)).tolist() == [[True, True, False, False], [False, False, True, True]]
    assert resize_mask(mask, (2, 2)).dtype == bool


def test_shrink_never_enlarges_and_keeps_the_aspect():
    from fixloop.checks.geometry import fit_size, shrink

    assert fit_size((2000, 1000), 500) == ((500, 250), 0.25)
    assert fit_size((300, 200), 500) == ((300, 200), 1.0)
    small = np.ones((4, 6), np.float32)
    assert shrink(small, 10)[0] is small
    half, scale = shrink(np.arange(16, dtype=np.float32).reshape(4, 4), 2)
    assert scale == 0.5 and half.tolist() == [[2.5, 4.5], [10.5, 12.5]]  # area means of 2 x 2 blocks
