"""gen3d.models.segmentation.onnx_torch against onnxruntime (the reference) on graphs with the operators rembg's nets use.

The real IS-Net graph is compared in tests/stages/test_background_real.py when npm can fetch it.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from gen3d.models.segmentation.onnx_torch import OnnxTorchModule
from gen3d.models.segmentation.tiny_onnx import build_tiny_segmentation_model
from gen3d.models.segmentation.u2net_onnx import build_rsu_net


def run_both(model: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(onnxruntime's output 0, the torch module's) for input ``x``."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.inference_mode():
        got = OnnxTorchModule(model, x.shape)(torch.from_numpy(x))
    assert got.dtype == torch.float32
    return expected, got.numpy()


def test_tiny_border_net_matches_onnxruntime() -> None:
    x = np.random.default_rng(0).normal(size=(1, 3, 48, 40)).astype(np.float32)
    x[:, :, 10:30, 12:28] += 1.5
    expected, got = run_both(build_tiny_segmentation_model(), x)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("architecture", ["u2net", "isnet-general-use"])
@pytest.mark.parametrize("size", [64, 75])  # 75: odd sides through ceil-mode pooling and resizes
def test_rsu_nets_match_onnxruntime(architecture: str, size: int) -> None:
    model = build_rsu_net(architecture, size, width_divisor=16)
    x = np.random.default_rng(1).normal(size=(1, 3, size, size)).astype(np.float32)
    expected, got = run_both(model, x)
    assert expected.shape == (1, 1, size, size)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_unsorted_nodes_are_run_in_dependency_order() -> None:
    """Exporters may store nodes out of order (the imgly IS-Net stores its input Cast last)."""
    model = build_rsu_net("isnet-general-use", 64, width_divisor=16)
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes[::-1])
    x = np.random.default_rng(2).normal(size=(1, 3, 64, 64)).astype(np.float32)
    with torch.inference_mode():
        got = OnnxTorchModule(model, x.shape)(torch.from_numpy(x)).numpy()
    expected, _ = run_both(build_rsu_net("isnet-general-use", 64, width_divisor=16), x)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def shape_sized_fp16_graph() -> onnx.ModelProto:
    """An fp16 graph like the imgly IS-Net: input Cast to fp16, a conv, an upsample sized by
    ``Shape -> Slice -> Concat`` of the input, Resize in fp32 between Casts, Sigmoid, Cast out."""
    rng = np.random.default_rng(3)
    ints = lambda name, values: numpy_helper.from_array(np.array(values, np.int64), name)  # noqa: E731
    initializers = [
        numpy_helper.from_array(rng.normal(0, 0.3, (2, 3, 3, 3)).astype(np.float16), "w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (2,)).astype(np.float16), "b"),
        ints("zero", [0]), ints("two", [2]), ints("four", [4]), ints("hw_start", [2]),
    ]
    nodes = [
        helper.make_node("Cast", ["x"], ["x16"], to=TensorProto.FLOAT16),
        helper.make_node("Conv", ["x16", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Shape", ["c"], ["c_shape"]),
        helper.make_node("Slice", ["c_shape", "zero", "two"], ["nc"]),
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("Slice", ["x_shape", "hw_start", "four"], ["hw"]),
        helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
        helper.make_node("Cast", ["c"], ["c32"], to=TensorProto.FLOAT),
        helper.make_node("Resize", ["c32", "", "", "sizes"], ["up32"], mode="linear",
                         coordinate_transformation_mode="half_pixel"),
        helper.make_node("Cast", ["up32"], ["up"], to=TensorProto.FLOAT16),
        helper.make_node("Sigmoid", ["up"], ["p16"]),
        helper.make_node("Cast", ["p16"], ["p"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes, "fp16_shape_sized",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 20, 22])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 2, 20, 22])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def test_shape_chains_are_folded_and_float_casts_follow_the_module_dtype() -> None:
    model = shape_sized_fp16_graph()
    x = np.random.default_rng(4).normal(size=(1, 3, 20, 22)).astype(np.float32)
    expected, got = run_both(model, x)
    np.testing.assert_allclose(got, expected, atol=2e-3)  # onnxruntime computes in fp16, the module in fp32
    module = OnnxTorchModule(model, x.shape)
    assert [step.node.op for step in module._steps] == ["Cast", "Conv", "Cast", "Resize", "Cast", "Sigmoid", "Cast"]
    with torch.inference_mode():
        low = module.to(torch.bfloat16)(torch.from_numpy(x))
    assert low.dtype == torch.bfloat16
    np.testing.assert_allclose(low.float().numpy(), expected, atol=2e-2)


def test_only_the_requested_output_is_computed() -> None:
    model = build_rsu_net("u2net", 32, width_divisor=16)
    full = OnnxTorchModule(model, (1, 3, 32, 32), output_index=0)
    coarsest = OnnxTorchModule(model, (1, 3, 32, 32), output_index=6)  # side output of the deepest stage
    assert len(coarsest._steps) < len(full._steps)


def test_unsupported_operator_is_named_at_construction() -> None:
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["y"], perm=[0, 1, 3, 2])], "t",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 3, 2])],
    )
    with pytest.raises(ValueError, match="Transpose"):
        OnnxTorchModule(helper.make_model(graph), (1, 1, 2, 3))


def test_unsupported_resize_mode_is_named_at_construction() -> None:
    graph = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], mode="cubic")], "r",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])],
        [numpy_helper.from_array(np.array([1, 1, 8, 8], np.int64), "sizes")],
    )
    with pytest.raises(ValueError, match="cubic"):
        OnnxTorchModule(helper.make_model(graph), (1, 1, 4, 4))


def test_wrong_input_shape_is_refused() -> None:
    module = OnnxTorchModule(build_tiny_segmentation_model(), (1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\(1, 3, 16, 16\)"):
        module(torch.zeros(1, 3, 32, 32))
