"""gen3d.parts.cuda_graphs: call signatures on any machine, capture and replay on a GPU."""

import pytest
import torch

from gen3d.parts.cuda_graphs import (
    CudaGraphed,
    call_signature,
    graph_method_,
    ungraph_method_,
)


def test_signature_keys_tensors_by_layout_and_other_arguments_by_value() -> None:
    a, b = torch.zeros(2, 3), torch.ones(2, 3)
    assert call_signature((a,), {"flag": False}) == call_signature((b,), {"flag": False})
    assert call_signature((a,), {"flag": False}) != call_signature((a,), {"flag": True})
    assert call_signature((a,), {}) != call_signature((torch.zeros(3, 2),), {})
    assert call_signature((a,), {}) != call_signature((a.to(torch.float64),), {})
    assert call_signature((a, None), {}) != call_signature((None, a), {})


def test_signature_rejects_arguments_a_graph_cannot_key_on() -> None:
    assert call_signature((), {"kwargs": {}}) != call_signature((), {"kwargs": {"scale": 1.0}})
    with pytest.raises(TypeError, match="argument 'kwargs.sizes' of type list cannot key a CUDA graph"):
        call_signature((), {"kwargs": {"sizes": [1, 2]}})


def test_graph_method_installs_and_ungraph_restores() -> None:
    layer = torch.nn.Linear(2, 2)
    forward = layer.forward
    graphed = graph_method_(layer, "forward", "layer", pool=None)
    assert layer.forward is graphed and graphed.fn == forward and graphed.captured == 0
    assert graphed.capture_s == {"warmup_runs": 0.0, "record": 0.0}
    ungraph_method_(layer, "forward")
    assert layer.forward == forward
    ungraph_method_(layer, "forward")  # nothing to undo: no error
    assert layer.forward == forward


@pytest.mark.gpu
def test_replay_computes_on_new_inputs_and_returns_fresh_tensors() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 8)).cuda()
    graphed = CudaGraphed(layer, "mlp")
    with torch.inference_mode():
        inputs = [torch.randn(16, 64, device="cuda") for _ in range(3)]
        outputs = [graphed(x) for x in inputs]
        for x, y in zip(inputs, outputs):
            torch.testing.assert_close(y, layer(x), rtol=0, atol=0)
        assert graphed.captured == 1
        assert graphed.capture_s["warmup_runs"] > 0 and graphed.capture_s["record"] > 0
        # A result survives the next replay: outputs are copies, not the graph's own buffer.
        assert outputs[0].data_ptr() != outputs[1].data_ptr()
        wide = torch.randn(4, 64, device="cuda")
        torch.testing.assert_close(graphed(wide), layer(wide), rtol=0, atol=0)
        assert graphed.captured == 2
