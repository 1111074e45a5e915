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


# ---- dilation, erosion, ring, feather -------------------------------------------------------------


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


def test_edge_ring_covers_both_sides_of_the_boundary():
    expected = grid("""
    .......
    ..###..
    .#####.
    .##.##.
    .#####.
    ..###..
    .......
    """)
    np.testing.assert_array_equal(masks.edge_ring(SQUARE, 1), expected)
    ring = masks.edge_ring(SQUARE, 1)
    assert (ring & SQUARE).sum() == 8 and (ring & ~SQUARE).sum() == 12  # inside and outside


def test_edge_ring_of_a_vertical_boundary_is_two_columns_per_px():
    half = grid("""
    ###...
    ###...
    ###...
    """)
    expected = grid("""
    .####.
    .####.
    .####.
    """)
    np.testing.assert_array_equal(masks.edge_ring(half, 2), expected)


def test_edge_ring_without_a_boundary_is_empty():
    assert not masks.edge_ring(np.ones((4, 4), bool), 2).any()
    assert not masks.edge_ring(np.zeros((4, 4), bool), 2).any()


def test_feather_inside_stays_zero_outside_the_mask():
    t = 1.0 / 3.0
    expected = np.zeros((7, 7), np.float32)
    expected[2:5, 2:5] = t
    expected[3, 3] = 2 * t
    out = masks.feather(SQUARE, 2)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert (out[~SQUARE] == 0).all()


def test_feather_outside_keeps_the_mask_whole():
    d = 1.0 - np.sqrt(2.0) / 2.0  # a diagonal neighbour is sqrt(2) px away, fading over 2 steps
    expected = np.array([
        [0, 0, 0, 0, 0, 0, 0],
        [0, d, .5, .5, .5, d, 0],
        [0, .5, 1, 1, 1, .5, 0],
        [0, .5, 1, 1, 1, .5, 0],
        [0, .5, 1, 1, 1, .5, 0],
        [0, d, .5, .5, .5, d, 0],
        [0, 0, 0, 0, 0, 0, 0],
    ], dtype=np.float32)
    out = masks.feather(SQUARE, 1, side="outside")
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_feather_centre_is_the_mean_of_both_sides():
    out = masks.feather(SQUARE, 1, side="centre")
    expected = (masks.feather(SQUARE, 1, "inside") + masks.feather(SQUARE, 1, "outside")) / 2
    np.testing.assert_allclose(out, expected, atol=1e-7)
    assert out[3, 3] == 1.0 and out[2, 3] == pytest.approx(0.75) and out[1, 3] == pytest.approx(0.25)


def test_feather_width_zero_is_the_hard_mask():
    np.testing.assert_array_equal(masks.feather(SQUARE, 0), SQUARE.astype(np.float32))
    with pytest.raises(ValueError, match="side"):
        masks.feather(SQUARE, 1, side="middle")


# ---- masks with context -------------------------------------------------------------------------


def test_face_context_mask_is_the_ellipse_of_the_grown_box():
    # box 4 x 4 at (2, 2); grown 0.25 per side, 0.5 up, 0.25 down -> x 1..7, y 0..7: centre (4, 3.5),
    # half-axes 3 and 3.5. Row 0 (centre y 0.5): |x + 0.5 - 4| <= 3 * sqrt(1 - (3/3.5)^2) = 1.55 -> x 2..5;
    # row 2: <= 2.87 -> x 1..6; row 3: <= 3 -> x 1..6; row 7 (centre 7.5) lies outside.
    expected = grid("""
    ..####..
    ..####..
    .######.
    .######.
    .######.
    ..####..
    ..####..
    ........
    """)
    out = masks.face_context_mask((8, 8), (2, 2, 6, 6), grow_side=0.25, grow_top=0.5, grow_bottom=0.25)
    np.testing.assert_array_equal(out, expected)
    # the context is real: rows above the face box (hairline) and columns beside it (ears) are in
    assert out[:2].any() and out[:, 1].any() and out[:, 6].any()


def test_face_context_mask_without_growth_is_the_inscribed_ellipse():
    expected = grid("""
    .......
    ..###..
    .#####.
    .#####.
    .#####.
    ..###..
    .......
    """)
    np.testing.assert_array_equal(masks.face_context_mask((7, 7), (1, 1, 6, 6), 0, 0, 0), expected)


def test_hand_context_mask_extends_towards_the_wrist_and_adds_a_margin():
    # hand box 4 x 4 at (3, 2); wrist below: +2 rows (0.5 of 4); margin ceil(0.25 * 4) = 1 on every side
    expected = grid("""
    ..........
    ..######..
    ..######..
    ..######..
    ..######..
    ..######..
    ..######..
    ..######..
    ..######..
    ..........
    """)
    out = masks.hand_context_mask((10, 10), (3, 2, 7, 6), wrist="bottom", wrist_extension=0.5, margin=0.25)
    np.testing.assert_array_equal(out, expected)


def test_hand_context_mask_reads_the_wrist_side_from_landmarks_and_adds_the_contact_box():
    landmarks = np.zeros((21, 2))
    landmarks[:] = [5.5, 3.5]  # the fingers bunched at the hand's middle
    landmarks[0] = [2.2, 3.5]  # wrist (landmark 0) to the left of the middle-finger base (landmark 9)
    landmarks[9] = [4.0, 3.6]
    landmarks[8] = [7.9, 4.2]  # a fingertip: box x 2..8, y 3..5
    assert masks.wrist_side(landmarks) == "left"
    # box (2, 3, 8, 5) is 6 x 2; wrist left by ceil(0.5 * 6) = 3 -> x from -1; margin ceil(0.2 * 6) = 2
    expected = grid("""
    ............
    ##########..
    ##########..
    ##########..
    ##########..
    ##########..
    ##########..
    ..........##
    ..........##
    """)
    out = masks.hand_context_mask((9, 12), landmarks=landmarks, wrist_extension=0.5, margin=0.2,
                                  contact=(12, 9, 13, 10))
    np.testing.assert_array_equal(out, expected)


def test_hand_context_mask_needs_a_box_or_landmarks():
    with pytest.raises(ValueError, match="box"):
        masks.hand_context_mask((5, 5))
    with pytest.raises(ValueError, match="wrist"):
        masks.hand_context_mask((5, 5), (1, 1, 3, 3), wrist="under")


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


def test_outpaint_canvas_marks_the_new_area():
    out = masks.outpaint_canvas((3, 4), {"top": 1, "right": 2})
    assert (out.width, out.height, out.original_box) == (6, 4, (0, 1, 4, 4))
    expected = grid("""
    ######
    ....##
    ....##
    ....##
    """)
    np.testing.assert_array_equal(out.mask, expected)


def test_outpaint_canvas_overlap_reaches_into_the_extended_sides_only():
    out = masks.outpaint_canvas((3, 4), {"top": 1, "right": 2}, overlap=1)
    expected = grid("""
    ######
    ######
    ...###
    ...###
    """)
    np.testing.assert_array_equal(out.mask, expected)


def test_outpaint_canvas_rejects_bad_sides():
    with pytest.raises(ValueError, match="unknown side"):
        masks.outpaint_canvas((3, 3), {"up": 4})
    with pytest.raises(ValueError, match="nothing to outpaint"):
        masks.outpaint_canvas((3, 3), {"top": 0})


def test_functions_never_write_into_their_inputs():
    original = SQUARE.copy()
    for call in (lambda m: masks.dilate(m, 2), lambda m: masks.erode(m, 1), lambda m: masks.edge_ring(m, 1),
                 lambda m: masks.feather(m, 2), lambda m: masks.crop_box(m, m.shape, 1),
                 lambda m: masks.contact_zone(m.shape, m)):
        call(SQUARE)
        np.testing.assert_array_equal(SQUARE, original)


# ---- on real photos ------------------------------------------------------------------------------


def test_face_mask_on_a_real_portrait_covers_the_face_box_and_its_surroundings():
    """MediaPipe's face box of a real portrait: the mask holds the whole box and reaches above it
    (hairline), below it (chin) and beside it (ears), without spreading over the picture."""
    from tests import defects

    image = photo("face_obama_01.jpg")
    (box, _), *_ = defects.face_keypoints(image)
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    mask = masks.face_context_mask(image.shape, box)
    assert mask.shape == image.shape[:2]
    assert mask[y0:y1, x0:x1].all()
    bh, bw = y1 - y0, x1 - x0
    ys, xs = np.nonzero(mask)
    assert ys.min() <= y0 - 0.4 * bh and ys.max() >= y1 + 0.2 * bh - 1  # hairline and chin
    assert xs.min() <= x0 - 0.25 * bw and xs.max() >= x1 + 0.25 * bw - 1  # ears
    assert 1.8 < mask.sum() / (bw * bh) < 2.6  # the grown ellipse: pi/4 * 1.6 * 1.75 = 2.2 box areas
    assert mask.mean() < 0.5


def test_hand_mask_on_a_real_hand_reaches_down_to_the_wrist():
    """The raised hand of gen_hand_malformed_03: landmarks from MediaPipe; the wrist is below the hand."""
    from tests import defects

    image = photo("gen_hand_malformed_03.jpg")
    points = defects.hand_landmarks(image)[0]
    assert masks.wrist_side(points) == "bottom"
    mask = masks.hand_context_mask(image.shape, landmarks=points)
    xs, ys = points[:, 0].astype(int), points[:, 1].astype(int)
    assert mask[ys, xs].all()  # every landmark
    hand_h = ys.max() - ys.min()
    below = np.nonzero(mask.any(axis=1))[0].max()
    assert below >= min(image.shape[0] - 1, ys.max() + 0.5 * hand_h)  # the wrist extension
    assert mask.mean() < 0.25  # the hand, not the picture


def test_outpaint_canvas_for_a_real_photo():
    image = photo("body_skier_01.jpg")
    h, w = image.shape[:2]
    out = masks.outpaint_canvas(image.shape, {"top": 52, "left": 10}, overlap=4)
    assert (out.height, out.width, out.original_box) == (h + 52, w + 10, (10, 52, w + 10, h + 52))
    new_area = out.height * out.width - h * w
    overlap = 4 * w + 4 * h - 16  # the top and left strips of the original, their corner counted once
    assert out.mask.sum() == new_area + overlap
