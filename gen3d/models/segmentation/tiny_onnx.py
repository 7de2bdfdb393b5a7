"""A tiny, hand-weighted ONNX segmentation net for rembg's ``u2net_custom`` session (tiny preset).

The net has no learnt weights; its fixed weights make the mask mean "this pixel's colour differs
from the image border's colour", which is a usable foreground for object-on-plain-background
images (the tiny preset's test images). It exists so tests exercise rembg's real session code path
(``new_session`` -> ``U2netCustomSession`` -> onnxruntime -> mask post-processing) offline.

Graph, for a normalised input ``x`` of shape (B, 3, H, W) (rembg feeds 320x320):
  1. ``border`` (B, 3, 1, 1): mean colour of the four one-pixel edges.
  2. ``distance`` (B, 1, H, W): 1x1 convolution summing ``(x - border)**2`` over channels.
  3. ``mask`` (B, 1, H, W): 7x7 box convolution (fills speckle holes) with a bias that sets
     the threshold, then a sigmoid. rembg min-max normalises this output, so only its shape matters.
"""

import hashlib
import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gen3d.models.segmentation.u2net_onnx import write_onnx_atomically

logger = logging.getLogger(__name__)

#: Bumped whenever the graph or its weights change, so cached files are never stale.
TINY_MODEL_VERSION = 1
OPSET = 17
#: Squared colour distance (in rembg's ImageNet-normalised units, summed over RGB) above which a
#: pixel counts as foreground; 0.3 is about a 0.07 shift per channel on the [0, 1] scale.
DISTANCE_THRESHOLD = 0.3
#: Sigmoid slope; large enough that the mask is nearly binary away from the threshold.
GAIN = 20.0
BOX = 7


def _edge(name: str, axis: int, start: int, end: int) -> list[onnx.NodeProto]:
    """Slice one one-pixel edge of ``x`` along ``axis`` and average it to (B, 3, 1, 1)."""
    consts = [
        helper.make_node("Constant", [], [f"{name}_{key}"], value=numpy_helper.from_array(np.array([v], np.int64)))
        for key, v in (("start", start), ("end", end), ("axis", axis))
    ]
    slice_node = helper.make_node(
        "Slice", ["x", f"{name}_start", f"{name}_end", f"{name}_axis"], [f"{name}_strip"]
    )
    mean = helper.make_node("ReduceMean", [f"{name}_strip"], [f"{name}_mean"], axes=[2, 3], keepdims=1)
    return [*consts, slice_node, mean]


def build_tiny_segmentation_model() -> onnx.ModelProto:
    """Build the border-contrast segmentation graph described in the module docstring.

    Returns:
        A checked ``onnx.ModelProto`` with input ``x`` (B, 3, H, W) float32 and output ``mask``
        (B, 1, H, W) float32 in (0, 1).
    """
    last = np.iinfo(np.int64).max
    nodes: list[onnx.NodeProto] = []
    # 1. border colour: the four edges (corners counted twice, which is harmless).
    nodes += _edge("top", 2, 0, 1)
    nodes += _edge("bottom", 2, -1, last)
    nodes += _edge("left", 3, 0, 1)
    nodes += _edge("right", 3, -1, last)
    nodes += [
        helper.make_node("Sum", ["top_mean", "bottom_mean", "left_mean", "right_mean"], ["edge_sum"]),
        helper.make_node("Mul", ["edge_sum", "quarter"], ["border"]),
        # 2. squared distance to the border colour, summed over channels by a 1x1 convolution.
        helper.make_node("Sub", ["x", "border"], ["diff"]),
        helper.make_node("Mul", ["diff", "diff"], ["diff_sq"]),
        helper.make_node("Conv", ["diff_sq", "sum_weight"], ["distance"], kernel_shape=[1, 1]),
        # 3. box smoothing with the threshold folded into the bias, then a sigmoid.
        helper.make_node(
            "Conv", ["distance", "box_weight", "box_bias"], ["logits"],
            kernel_shape=[BOX, BOX], pads=[BOX // 2] * 4,
        ),
        helper.make_node("Sigmoid", ["logits"], ["mask"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array(0.25, np.float32), "quarter"),
        numpy_helper.from_array(np.ones((1, 3, 1, 1), np.float32), "sum_weight"),
        numpy_helper.from_array(np.full((1, 1, BOX, BOX), GAIN / BOX**2, np.float32), "box_weight"),
        numpy_helper.from_array(np.array([-GAIN * DISTANCE_THRESHOLD], np.float32), "box_bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "gen3d_tiny_segmentation",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", 1, "height", "width"])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="gen3d")
    # IR 8 keeps the file loadable by onnxruntime releases older than the installed one.
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def write_tiny_segmentation_model(path: str | Path) -> Path:
    """Write the tiny model to ``path`` unless an identical file is already there.

    The write is atomic (``write_onnx_atomically``), so replicas starting together never read a
    half-written file.

    Args:
        path: destination ``.onnx`` file; parent directories are created.

    Returns:
        The destination path.
    """
    path = Path(path)
    model = build_tiny_segmentation_model()
    data = model.SerializeToString()
    if path.is_file() and path.read_bytes() == data:
        return path
    write_onnx_atomically(model, path)
    logger.info("wrote tiny segmentation model to %s (sha256 %s)", path, hashlib.sha256(data).hexdigest()[:12])
    return path


def tiny_model_filename() -> str:
    """File name of the current tiny model version (``gen3d-tiny-seg-v<N>.onnx``)."""
    return f"gen3d-tiny-seg-v{TINY_MODEL_VERSION}.onnx"
