"""The FLUX deployment's Serve options and the builder's MPS check (no cluster needed)."""

import pytest
from ray.serve.exceptions import RayServeException

from deployments.graph import GraphArgs, check_mps
from deployments.text_to_image import max_ongoing_requests
from gen3d.config import TextToImageConfig

TINY = {"mode": "tiny", "device": "cpu", "precision": "fp32", "text_encoder_precision": "fp32", "width": 64,
        "height": 64, "allowed_sizes": [64], "max_sequence_length": 32}  # fmt: skip


def test_a_flux_replica_takes_a_running_batch_and_the_next_one() -> None:
    assert max_ongoing_requests(TextToImageConfig(**TINY)) == 4  # the shared default
    assert max_ongoing_requests(TextToImageConfig(**TINY, max_batch_size=4)) == 8


def test_mps_on_needs_the_daemon_that_gen3d_serve_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    with pytest.raises(RayServeException, match="start the service with `gen3d serve CONFIG`"):
        check_mps("on")
    check_mps("auto")
    check_mps("off")
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", "/tmp/gen3d-mps-x/pipe")
    check_mps("on")


def test_graph_args_take_an_mps_mode() -> None:
    assert GraphArgs().mps == "off" and GraphArgs(mps="auto").mps == "auto"
    with pytest.raises(ValueError, match="mps"):
        GraphArgs(mps="sometimes")
