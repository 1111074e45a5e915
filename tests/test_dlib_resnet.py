"""dlib's ResNet face descriptor run in numpy (checks/dlib_resnet.py) against dlib's own.

Every face MediaPipe finds on the shared photos is cut into dlib's aligned chip the way identity_drift
cuts it; dlib-bin's ``compute_face_descriptor`` and the numpy network must give the same 128 numbers
(float rounding apart), so the embedder's calibrated thresholds hold unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest

from fixloop.checks import dlib_resnet, models
from fixloop.checks.analyses import faces
from fixloop.checks.context import CheckContext
from fixloop.checks.identity import DLIB_CHIP_PADDING, DLIB_CHIP_PX
from tests.conftest import photo, photo_names

dlib = pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def descriptor_path():
    return models.locate("dlib_face_descriptor")


@pytest.fixture(scope="module")
def chips():
    """dlib's 150 px chip of every face MediaPipe finds on the shared photos (at most 2 per photo)."""
    predictor = dlib.shape_predictor(str(models.locate("dlib_shape_predictor_5")))
    out = []
    for name in photo_names():
        image = CheckContext.from_arrays(photo(name)).candidate
        pixels = np.ascontiguousarray(image.uint8[..., :3])
        for face in faces(image)[:2]:
            x0, y0, x1, y1 = (int(round(float(v))) for v in face.box)
            shape = predictor(pixels, dlib.rectangle(x0, y0, x1, y1))
            out.append((name, np.ascontiguousarray(
                dlib.get_face_chip(pixels, shape, size=DLIB_CHIP_PX, padding=DLIB_CHIP_PADDING))))
    return out


def test_same_descriptors_as_dlib_on_every_shared_face(descriptor_path, chips):
    network = dlib_resnet.load(str(descriptor_path))
    recognizer = dlib.face_recognition_model_v1(str(descriptor_path))
    assert len(chips) >= 40
    worst = 0.0
    for name, chip in chips:
        theirs = np.array(recognizer.compute_face_descriptor(chip))
        ours = dlib_resnet.describe(network, chip)
        assert ours.shape == (128,) and ours.dtype == np.float32
        assert 0.5 < np.linalg.norm(theirs) < 2.0, name
        worst = max(worst, float(np.abs(ours - theirs).max()))
        # unit vectors, the embedder's output: identical to the sixth decimal
        unit = ours / np.linalg.norm(ours) - theirs / np.linalg.norm(theirs)
        assert np.abs(unit).max() < 1e-5, name
    print(f"\n{len(chips)} faces, largest difference from dlib's descriptor {worst:.2e}")
    assert worst < 1e-5


def test_the_stem_and_blocks_have_dlibs_shapes(descriptor_path):
    network = dlib_resnet.load(str(descriptor_path))
    assert network.channel_mean == pytest.approx([122.782, 117.001, 104.298], abs=1e-3)
    assert network.stem.weights.shape == (7 * 7 * 3, 32) and network.stem.stride == 2
    assert [b[0].weights.shape[1] for b in network.blocks] == [f for f, _ in dlib_resnet.BLOCKS]
    assert network.fc.shape == (256, 128)
    # the strided layers are not padded, the stride-1 3x3 convolutions by one pixel
    assert network.stem.padding == 0 and network.blocks[3][0].padding == 0 and network.blocks[0][0].padding == 1


def test_a_file_that_is_not_the_descriptor_says_so(tmp_path, descriptor_path):
    other = tmp_path / "shape_predictor.dat"
    other.write_bytes(models.locate("dlib_shape_predictor_5").read_bytes()[:4096])
    with pytest.raises(dlib_resnet.NotDlibDescriptor, match="not dlib's ResNet face descriptor"):
        dlib_resnet.load(str(other))
    cut = tmp_path / "cut.dat"
    cut.write_bytes(descriptor_path.read_bytes()[:2_000_000])
    with pytest.raises(dlib_resnet.NotDlibDescriptor):
        dlib_resnet.load(str(cut))


def test_a_chip_of_the_wrong_size_is_refused(descriptor_path):
    network = dlib_resnet.load(str(descriptor_path))
    with pytest.raises(ValueError, match="150 x 150 RGB"):
        dlib_resnet.describe(network, np.zeros((112, 112, 3), dtype=np.uint8))


def test_dlib_integers_read_as_dlib_writes_them():
    # low nibble: bytes that follow (little-endian); 0x80: negative
    assert dlib_resnet._read_int(bytes([0x02, 0x80, 0x12]), 0) == (4736, 3)
    assert dlib_resnet._read_int(bytes([0x81, 0x11]), 0) == (-17, 2)
    assert dlib_resnet._read_int(bytes([0x00]), 0) == (0, 1)
    value, _ = dlib_resnet._read_float(bytes([0x03, 0x62, 0x90, 0xF5, 0x81, 0x11]), 0)
    assert value == pytest.approx(122.782, abs=1e-4)
