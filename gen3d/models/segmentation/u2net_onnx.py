"""U^2-Net and IS-Net, rembg's ``u2net`` and ``isnet-general-use`` architectures, as random-weight ONNX.

The ``random`` mode of the background stage needs the real architecture at full size without the
weights (speed and memory on the GPU), and tests need the same graph small. Both are built here
from the published architectures (Qin et al., "U^2-Net", 2020; "Highly Accurate Dichotomous Image
Segmentation", 2022): nested U-blocks (RSU) of 3x3 conv + ReLU (batch norm folded into the conv,
as in exported graphs), 2x2 ceil-mode max pooling and bilinear upsampling, six side outputs.

Graph: input ``input`` (1, 3, S, S) float32, output 0 ``mask`` (1, 1, S, S) in (0, 1) -- the
fused map for U^2-Net, the first side output for IS-Net, which is what rembg reads. Resize
targets are constants because rembg always feeds a session one size (320 for u2net, 1024 for
IS-Net: ``gen3d.models.segmentation.mask_predictors.SESSION_SPECS``).
"""

import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

logger = logging.getLogger(__name__)

#: Bump when a graph or its initialisation changes, so cached files are never stale.
RANDOM_MODEL_VERSION = 1
OPSET = 17
SEED = 0


@dataclass(frozen=True)
class RSU:
    """One residual U-block.

    Attributes:
        height: 7, 6, 5 or 4 levels; ``dilated`` replaces pooling by dilations 1, 2, 4, 8 (RSU-4F).
        mid: channels inside the block.
        out: channels of the block's output.
    """

    height: int
    mid: int
    out: int
    dilated: bool = False


#: Encoder stages 1-6 and decoder stages 5d-1d of U^2-Net; IS-Net uses the same blocks.
ENCODER = (RSU(7, 32, 64), RSU(6, 32, 128), RSU(5, 64, 256), RSU(4, 128, 512), RSU(4, 256, 512, True),
           RSU(4, 256, 512, True))
DECODER = (RSU(4, 256, 512, True), RSU(4, 128, 256), RSU(5, 64, 128), RSU(6, 32, 64), RSU(7, 16, 64))
#: IS-Net's stride-2 stem width.
ISNET_STEM = 64
#: rembg session names of the architectures built here.
ARCHITECTURES = ("u2net", "isnet-general-use")


class _Builder:
    """Accumulates nodes and random initialisers, tracking each value's (C, H, W)."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.shapes: dict[str, tuple[int, int, int]] = {"input": (3, size, size)}

    def _name(self, prefix: str) -> str:
        return f"{prefix}_{len(self.nodes)}"

    def _initializer(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def conv(self, x: str, out: int, kernel: int = 3, dilation: int = 1, stride: int = 1, relu: bool = True) -> str:
        """3x3 (or ``kernel``) convolution with bias and 'same' padding, then ReLU unless ``relu`` is False."""
        channels, height, width = self.shapes[x]
        name = self._name("conv")
        fan_in = channels * kernel * kernel
        # std 1/sqrt(fan_in) rather than He's sqrt(2/fan_in): residual adds double the variance
        # per block, and this keeps activations well inside fp16's range through the network.
        weight = self._initializer(
            f"{name}.weight", self.rng.normal(0, 1 / math.sqrt(fan_in), (out, channels, kernel, kernel)).astype(np.float32)
        )
        bias = self._initializer(f"{name}.bias", self.rng.normal(0, 0.01, (out,)).astype(np.float32))
        pad = dilation * (kernel // 2)
        self.nodes.append(helper.make_node(
            "Conv", [x, weight, bias], [name], kernel_shape=[kernel, kernel], pads=[pad] * 4,
            dilations=[dilation, dilation], strides=[stride, stride],
        ))
        self.shapes[name] = (out, (height + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1,
                             (width + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1)
        return self.unary("Relu", name) if relu else name

    def unary(self, op: str, x: str) -> str:
        name = self._name(op.lower())
        self.nodes.append(helper.make_node(op, [x], [name]))
        self.shapes[name] = self.shapes[x]
        return name

    def pool(self, x: str) -> str:
        """2x2 max pooling, stride 2, ceil mode (odd sides keep their last row and column)."""
        channels, height, width = self.shapes[x]
        name = self._name("pool")
        self.nodes.append(helper.make_node("MaxPool", [x], [name], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1))
        self.shapes[name] = (channels, math.ceil(height / 2), math.ceil(width / 2))
        return name

    def upsample_like(self, x: str, like: str) -> str:
        """Bilinear resize of ``x`` to the spatial size of ``like`` (half-pixel centres)."""
        channels = self.shapes[x][0]
        _, height, width = self.shapes[like]
        if self.shapes[x][1:] == (height, width):
            return x
        name = self._name("resize")
        sizes = self._initializer(f"{name}.sizes", np.array([1, channels, height, width], np.int64))
        self.nodes.append(helper.make_node(
            "Resize", [x, "", "", sizes], [name], mode="linear", coordinate_transformation_mode="half_pixel",
        ))
        self.shapes[name] = (channels, height, width)
        return name

    def binary(self, op: str, a: str, b: str) -> str:
        name = self._name(op.lower())
        self.nodes.append(helper.make_node(op, [a, b], [name]))
        self.shapes[name] = self.shapes[a]
        return name

    def concat(self, parts: list[str]) -> str:
        name = self._name("concat")
        self.nodes.append(helper.make_node("Concat", parts, [name], axis=1))
        _, height, width = self.shapes[parts[0]]
        self.shapes[name] = (sum(self.shapes[p][0] for p in parts), height, width)
        return name

    def rsu(self, x: str, block: RSU) -> str:
        """One residual U-block: an encoder-decoder of ``height`` levels plus the input conv."""
        entry = self.conv(x, block.out)
        levels = [self.conv(entry, block.mid)]
        for level in range(2, block.height):
            below = levels[-1] if block.dilated else self.pool(levels[-1])
            levels.append(self.conv(below, block.mid, dilation=2 ** (level - 1) if block.dilated else 1))
        bottom_dilation = 2 ** (block.height - 1) if block.dilated else 2
        decoded = self.conv(levels[-1], block.mid, dilation=bottom_dilation)
        for level in range(block.height - 1, 0, -1):
            skip = levels[level - 1]
            width = block.out if level == 1 else block.mid
            dilation = 2 ** (level - 1) if block.dilated else 1
            decoded = self.conv(self.concat([decoded, skip]), width, dilation=dilation)
            if level > 1 and not block.dilated:
                decoded = self.upsample_like(decoded, levels[level - 2])
        return self.binary("Add", decoded, entry)


def _scaled(block: RSU, divisor: int) -> RSU:
    return RSU(block.height, max(block.mid // divisor, 2), max(block.out // divisor, 2), block.dilated)


def build_rsu_net(architecture: str, size: int, width_divisor: int = 1, seed: int = SEED) -> onnx.ModelProto:
    """Build U^2-Net (``u2net``) or IS-Net (``isnet-general-use``) with random weights.

    Args:
        architecture: ``u2net`` or ``isnet-general-use``.
        size: input side S (rembg feeds 320 and 1024).
        width_divisor: divide every channel count by this (1: the real architecture; 16: a tiny
            test net with the same graph).
        seed: seed of the random weights.

    Returns:
        A checked model: ``input`` (1, 3, S, S) -> ``mask`` (1, 1, S, S) and five more side outputs.

    Raises:
        ValueError: unknown architecture.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture: expected one of {ARCHITECTURES}, got {architecture!r}")
    b = _Builder(size, np.random.default_rng(seed))
    encoder = [_scaled(block, width_divisor) for block in ENCODER]
    decoder = [_scaled(block, width_divisor) for block in DECODER]
    x = "input"
    if architecture == "isnet-general-use":
        x = b.conv(x, max(ISNET_STEM // width_divisor, 2), stride=2, relu=False)
    # 1. encoder: six RSU stages with pooling between them.
    skips = []
    for index, block in enumerate(encoder):
        x = b.rsu(x if index == 0 else b.pool(x), block)
        skips.append(x)
    # 2. decoder: upsample, concatenate the skip of the same level, RSU.
    decoded = [skips[-1]]
    for block, skip in zip(decoder, reversed(skips[:-1])):
        decoded.append(b.rsu(b.concat([b.upsample_like(decoded[-1], skip), skip]), block))
    # 3. side outputs, finest first, each brought to the output size.
    target = "input" if architecture == "isnet-general-use" else decoded[-1]
    sides = [b.upsample_like(b.conv(level, 1, relu=False), target) for level in reversed(decoded)]
    if architecture == "u2net":
        outputs = [b.conv(b.concat(sides), 1, kernel=1, relu=False)] + sides
    else:
        outputs = sides
    names = ["mask"] + [f"side{index}" for index in range(1, len(outputs))]
    for name, logits in zip(names, outputs):
        b.nodes.append(helper.make_node("Sigmoid", [logits], [name]))
    graph = helper.make_graph(
        b.nodes, f"gen3d_random_{architecture}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 1, size, size]) for name in names],
        b.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="gen3d")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def random_model_filename(architecture: str, size: int) -> str:
    """Cache file name of the full-size random net (``gen3d-random-<arch>-<size>-v<N>.onnx``)."""
    return f"gen3d-random-{architecture}-{size}-v{RANDOM_MODEL_VERSION}.onnx"


def write_onnx_atomically(model: onnx.ModelProto, path: Path) -> Path:
    """Write ``model`` to ``path`` through a temporary file and a rename.

    Replicas starting together never read a half-written file; the file is world-readable so
    replicas running as other users can load it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(model.SerializeToString())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def ensure_random_model(architecture: str, size: int, directory: Path) -> Path:
    """The full-size random net of ``architecture`` for input side ``size`` in ``directory``,
    built and written when absent.

    The file name carries the version and the weights are seeded, so an existing file is the
    same model and is reused (building and writing the 176 MB file takes a few seconds).
    """
    path = directory / random_model_filename(architecture, size)
    if not path.is_file():
        logger.info("writing the full-size random %s to %s", architecture, path)
        write_onnx_atomically(build_rsu_net(architecture, size), path)
    return path
