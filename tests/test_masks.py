"""tools/masks.py: small hand-drawn masks and the exact arrays each function must return."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import photo
from fixloop.tools import masks


def grid(text: str) -> np.ndarray:
    """A bool mask drawn as rows of '#' (True) and '.' (False)."""
    return np.array([[c == "#" for c in row.strip()] for row in text.strip().splitlines()], dtype=bool)


SQUARE = grid("""
.......
.......
..###..
..###..
..###..
.......
.......
""")


def test_grid_helper_reads_what_it_draws():
    assert SQUARE.shape == (7, 7) and SQUARE.sum() == 9 and SQUARE[2:5, 2:5].all()


# ---- boxes ----------------------------------------------------------------------------------------


def test_box_mask_rounds_outwards_and_clips():
    expected = grid("""
    .....
    .###.
    .###.
    .....
    """)
    np.testing.assert_array_equal(masks.box_mask((4, 5), (1, 1, 4, 3)), expected)
    np.testing.assert_array_equal(masks.box_mask((4, 5), (1.2, 1.0, 3.4, 2.5)), expected)  # partial pixels count
    clipped = grid("""
    ..###
    ..###
    .....
    .....
    """)
    np.testing.assert_array_equal(masks.box_mask((4, 5, 3), (2, -3, 9, 2)), clipped)


def test_mask_box_is_tight_and_exclusive():
    assert masks.mask_box(SQUARE) == (2, 2, 5, 5)
    assert masks.mask_box(np.zeros((3, 3), bool)) is None
    assert masks.mask_box(grid("#..\n...\n..#")) == (0, 0, 3, 3)


# ---- dilation, erosion, feather and composite-back ------------------------------------------------


def test_dilate_by_one_is_a_plus_shaped_disc():
    expected = grid("""
    .......
    ..###..
    .#####.
    .#####.
    .#####.
    ..###..
    .......
    """)
    np.testing.assert_array_equal(masks.dilate(SQUARE, 1), expected)


def test_dilate_by_one_and_a_half_reaches_the_diagonal():
    expected = grid("""
    .......
    .#####.
    .#####.
    .#####.
    .#####.
    .#####.
    .......
    """)
    np.testing.assert_array_equal(masks.dilate(SQUARE, 1.5), expected)


def test_dilate_zero_and_empty_are_copies():
    out = masks.dilate(SQUARE, 0)
    np.testing.assert_array_equal(out, SQUARE)
    assert out is not SQUARE
    np.testing.assert_array_equal(masks.dilate(np.zeros((3, 3), bool), 2), np.zeros((3, 3), bool))


def test_erode_keeps_the_core_and_ignores_the_frame_border():
    expected = grid("""
    .......
    .......
    .......
    ...#...
    .......
    .......
    .......
    """)
    np.testing.assert_array_equal(masks.erode(SQUARE, 1), expected)
    # a band along the top of the frame loses only its lower row: the frame edge is not a boundary
    band = grid("""
    #####
    #####
    .....
    """)
    np.testing.assert_array_equal(masks.erode(band, 1), grid("#####\n.....\n....."))


def smoothstep(t: float) -> float:
    t = min(max(t, 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


def test_feather_inside_stays_zero_outside_the_mask():
    # the rim is 1 px from the outside, the centre 2 px: smoothstep((d - 0.5) / 2) -> 0.15625, 0.84375
    expected = np.zeros((7, 7), np.float32)
    expected[2:5, 2:5] = 0.15625
    expected[3, 3] = 0.84375
    out = masks.feather(SQUARE, 2)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert (out[~SQUARE] == 0).all()


def test_feather_outside_keeps_the_mask_whole():
    d = smoothstep(1.0 - (np.sqrt(2.0) - 0.5) / 1.0)  # a diagonal neighbour is sqrt(2) px away
    e = smoothstep(0.5)  # an edge neighbour is 1 px away: 1 - (1 - 0.5) / 1
    expected = np.array([
        [0, 0, 0, 0, 0, 0, 0],
        [0, d, e, e, e, d, 0],
        [0, e, 1, 1, 1, e, 0],
        [0, e, 1, 1, 1, e, 0],
        [0, e, 1, 1, 1, e, 0],
        [0, d, e, e, e, d, 0],
        [0, 0, 0, 0, 0, 0, 0],
    ], dtype=np.float32)
    out = masks.feather(SQUARE, 1, side="outside")
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_feather_center_straddles_the_boundary():
    out = masks.feather(SQUARE, 2, side="center")
    # half the ramp either side: 0.5 + (d - 0.5) / 2 inside, 0.5 - (d - 0.5) / 2 outside
    assert out[3, 3] == pytest.approx(smoothstep(1.25)) == 1.0
    assert out[2, 3] == pytest.approx(smoothstep(0.75))
    assert out[1, 3] == pytest.approx(smoothstep(0.25))
    assert out[0, 3] == pytest.approx(smoothstep(-0.25)) == 0.0


def test_feather_width_zero_is_the_hard_mask():
    np.testing.assert_array_equal(masks.feather(SQUARE, 0), SQUARE.astype(np.float32))
    with pytest.raises(ValueError, match="side"):
        masks.feather(SQUARE, 1, side="middle")


def test_default_feather_is_half_a_percent_of_the_diagonal_at_least_two_px():
    assert masks.default_feather((3000, 4000, 3)) == 25.0  # 5000 px diagonal
    assert masks.default_feather((480, 640)) == 4.0
    assert masks.default_feather((53, 80, 3)) == masks.MIN_FEATHER_PX == 2.0


def test_composite_keeps_the_base_outside_the_mask_and_fades_in_inside():
    base = np.zeros((9, 9, 3), np.uint8)
    top = np.full((9, 9, 3), 200, np.uint8)
    mask = np.zeros((9, 9), bool)
    mask[2:7, 2:7] = True
    hard = masks.composite(base, top, mask, 0)
    np.testing.assert_array_equal(hard[..., 0], np.where(mask, 200, 0))
    soft = masks.composite(base, top, mask, 2)[..., 0]
    expected = np.zeros((9, 9), np.uint8)
    expected[2:7, 2:7] = 31  # 200 x 0.15625, one pixel in from the edge
    expected[3:6, 3:6] = 169  # 200 x 0.84375
    expected[4, 4] = 200  # three pixels in: all top
    np.testing.assert_array_equal(soft, expected)
    corner = np.zeros((9, 9), bool)
    corner[:4, :4] = True  # touches the image border: no fade along it
    at_border = masks.composite(base, top, corner, 2)[..., 0]
    assert at_border[0, 0] == 200 and at_border[3, 0] == 31 and at_border[4, 0] == 0


# ---- masks with context, crop boxes and resizing -------------------------------------------------


def test_contact_zone_is_a_band_under_the_object_wider_than_it():
    obj = grid("""
    ............
    ....####....
    ....####....
    ....####....
    ....####....
    ....####....
    ............
    ............
    ............
    ............
    """)
    # object box x 4..8, y 1..6 (4 x 5): band x 3..9 (spread 1), y 5..8 (overlap 1 up, depth 2 down)
    expected = grid("""
    ............
    ............
    ............
    ............
    ............
    ...######...
    ...######...
    ...######...
    ............
    ............
    """)
    out = masks.contact_zone(obj.shape, obj, depth=0.4, spread=0.25, overlap=0.2)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(masks.contact_zone(obj.shape, (4, 1, 8, 6), 0.4, 0.25, 0.2), expected)
    assert out.sum(axis=1).max() > obj.sum(axis=1).max()  # wider than the object


def test_crop_box_pads_and_clips_or_slides_inside():
    assert masks.crop_box(SQUARE, SQUARE.shape, padding=1) == (1, 1, 6, 6)
    assert masks.crop_box(SQUARE, SQUARE.shape, padding=3) == (0, 0, 7, 7)  # clipped at the frame
    corner = (0, 0, 2, 2)
    assert masks.crop_box(corner, (10, 10), padding=2) == (0, 0, 4, 4)
    assert masks.crop_box(corner, (10, 10), padding=2, keep_size=True) == (0, 0, 6, 6)  # same context as mid-frame
    assert masks.crop_box((8, 8, 10, 10), (10, 10), padding=2, keep_size=True) == (4, 4, 10, 10)
    # a share of the region's longer side, when that is more than the px padding
    assert masks.crop_box((4, 4, 8, 6), (20, 20), padding=1, padding_fraction=0.5) == (2, 2, 10, 8)


def test_crop_box_refuses_an_empty_region():
    with pytest.raises(ValueError, match="empty"):
        masks.crop_box(np.zeros((4, 4), bool), (4, 4), padding=1)


def test_crop_padding_is_the_larger_of_px_and_share_rounded_up():
    assert masks.crop_padding((0, 0, 10, 4), padding=1, padding_fraction=0.25) == 3  # 2.5 px -> 3
    assert masks.crop_padding((0, 0, 10, 4), padding=5, padding_fraction=0.25) == 5
    assert masks.crop_padding(SQUARE, padding=0, padding_fraction=1.0) == 3  # the mask's 3 px box


def test_resize_mask_nearest_or_any_coverage():
    dot = np.zeros((4, 4), bool)
    dot[1, 1] = True
    assert not masks.resize_mask(dot, (2, 2)).any()  # nearest neighbour can lose a thin mask ...
    np.testing.assert_array_equal(masks.resize_mask(dot, (2, 2), any_coverage=True), grid("""
    #.
    ..
    """))  # ... any coverage keeps it
    corner = grid("""
    #.
    ..
    """)
    np.testing.assert_array_equal(masks.resize_mask(corner, (4, 4)), grid("""
    ##..
    ##..
    ....
    ....
    """))
    np.testing.assert_array_equal(masks.resize_mask(corner, (4, 4), any_coverage=True), grid("""
    ###.
    ###.
    ###.
    ....
    """))  # bilinear: every pixel whose interpolation touches the mask pixel
    same = masks.resize_mask(corner, (2, 2))
    assert same is not corner and same.dtype == bool


def test_resize_averages_to_shrink_and_copies_at_the_same_size():
    image = np.repeat(np.arange(16, dtype=np.uint8).reshape(4, 4, 1), 3, axis=2)
    np.testing.assert_array_equal(masks.resize(image, (2, 2))[..., 0], [[3, 5], [11, 13]])  # 2 x 2 means, rounded
    same = masks.resize(image, (4, 4))
    assert same is not image and np.array_equal(same, image)
    assert masks.resize(image, (8, 6)).shape == (6, 8, 3)


def test_functions_never_write_into_their_inputs():
    original = SQUARE.copy()
    for call in (lambda m: masks.dilate(m, 2), lambda m: masks.erode(m, 1), lambda m: masks.feather(m, 2),
                 lambda m: masks.crop_box(m, m.shape, 1), lambda m: masks.contact_zone(m.shape, m),
                 lambda m: masks.resize_mask(m, (7, 7)), lambda m: masks.resize_mask(m, (3, 3), any_coverage=True)):
        call(SQUARE)
        np.testing.assert_array_equal(SQUARE, original)


# ---- on a real photo -----------------------------------------------------------------------------


def test_composite_on_a_real_photo_keeps_every_pixel_outside_and_the_core_inside():
    image = photo("face_obama_01.jpg")
    edited = 255 - image
    mask = masks.box_mask(image.shape, (100, 80, 300, 260))
    width = masks.default_feather(image.shape)
    out = masks.composite(image, edited, mask, width)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~mask], image[~mask])
    core = masks.erode(mask, width + 0.5)
    np.testing.assert_array_equal(out[core], edited[core])
    seam = mask & ~core
    assert (out[seam] != edited[seam]).any() and (out[seam] != image[seam]).any()
