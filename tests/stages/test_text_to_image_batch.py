"""FLUX batches on the tiny preset (CPU, fp32): a request's image does not depend on its companions,
requests are grouped by settings, and a batch's limits hold.

Tolerance (fp32, CPU): the pipeline's float image of a batched request is within 1e-5 of its image
alone (measured: mean 1.3e-7, max 1.6e-6 on [0, 1], from matrix products of another row count),
so the uint8 image differs by at most 1 level in a few pixels (mean at most 0.01 of 255). The GPU
check at full size is ``scripts/flux_check.py``.
"""

import numpy as np
import pytest
import torch

from gen3d.config import TextToImageConfig
from gen3d.errors import StageOutputError
from gen3d.stages.text_to_image import TextToImage
from gen3d.stages.text_to_image_batch import (
    ImageRequest,
    decode_per_sample_,
    group_by_settings,
)
from tests.stages.test_text_to_image import TINY

#: Largest mean and max absolute pixel difference (of 255) between a batched image and the same request alone.
CPU_MEAN_TOLERANCE = 0.01
CPU_MAX_TOLERANCE = 1
#: Largest absolute difference of the pipeline's float image (on [0, 1]).
CPU_FLOAT_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def stage() -> TextToImage:
    return TextToImage.from_config(TextToImageConfig(**{**TINY, "max_batch_size": 4}))


def request(prompt: str, seed: int, steps: int = 4, size: int = 64) -> ImageRequest:
    return ImageRequest(prompt, seed, steps, size, size)


def pixel_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    difference = np.abs(a.astype(int) - b.astype(int))
    return float(difference.mean()), int(difference.max())


def test_a_request_gets_the_same_image_whatever_its_companions(stage: TextToImage) -> None:
    target = request("a red wooden cube", seed=7)
    alone = stage.generate_batch([target])[0].image
    batches = [
        [target, request("a sleeping cat", 1)],
        [request("a blue teapot", 2), target, request("a tall lamp", 3)],
        [request("x", 4), request("a sports car with long text " * 3, 5), request("y", 6), target],
        [target, target],
    ]
    for batch in batches:
        images = stage.generate_batch(batch)
        mean, most = pixel_difference(images[batch.index(target)].image, alone)
        assert mean <= CPU_MEAN_TOLERANCE and most <= CPU_MAX_TOLERANCE, (len(batch), mean, most)
    # Companions are not copies of the target: their own images differ.
    cat = stage.generate_batch([target, request("a sleeping cat", 1)])[1].image
    assert pixel_difference(cat, alone)[0] > 1.0


def test_the_float_image_is_within_rounding_of_the_image_alone(stage: TextToImage) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a replica (Ray gives CPU stages one thread): other kernels for other row counts
    try:

        def float_images(requests: list[ImageRequest]) -> np.ndarray:
            generators = [torch.Generator().manual_seed(r.seed) for r in requests]
            with torch.inference_mode():
                return stage.pipe(prompt=[r.prompt for r in requests], num_inference_steps=4, width=64, height=64,
                                  guidance_scale=0.0, max_sequence_length=32, generator=generators, output_type="np").images  # fmt: skip

        target = request("a copper kettle", 11)
        alone = float_images([target])[0]
        batched = float_images([request("c0", 0), request("c1", 1), target])[2]
        assert np.abs(batched - alone).max() <= CPU_FLOAT_TOLERANCE
    finally:
        torch.set_num_threads(threads)


def test_single_generate_is_a_batch_of_one(stage: TextToImage) -> None:
    single = stage.generate("a red wooden cube", 7, 4, 64, 64).image
    np.testing.assert_array_equal(single, stage.generate_batch([request("a red wooden cube", 7)])[0].image)


def test_batch_limits_and_mixed_settings_are_bugs(stage: TextToImage) -> None:
    with pytest.raises(ValueError, match="a batch holds 1 to 4 requests, got 5"):
        stage.generate_batch([request("a", seed) for seed in range(5)])
    with pytest.raises(ValueError, match="a batch holds 1 to 4 requests, got 0"):
        stage.generate_batch([])
    with pytest.raises(ValueError, match="must share steps, width and height"):
        stage.generate_batch([request("a", 0), request("b", 1, steps=3)])


def test_a_non_finite_image_fails_only_its_own_request(stage: TextToImage, monkeypatch: pytest.MonkeyPatch) -> None:
    real_pipe = stage.pipe

    class PoisonSecond:
        """The pipeline, with the second sample's image made non-finite."""

        def __call__(self, **kwargs):
            output = real_pipe(**kwargs)
            output.images[1][0, 0, 0] = np.nan
            return output

    monkeypatch.setattr(stage, "pipe", PoisonSecond())
    first, second = stage.generate_batch([request("a", 0), request("b", 1)])
    assert first.image.shape == (64, 64, 3) and isinstance(second, StageOutputError)


def test_requests_are_grouped_by_settings_in_order() -> None:
    requests = [request("a", 0), request("b", 0, steps=3), request("c", 0), request("d", 0, size=32), request("e", 0, steps=3)]
    assert group_by_settings(requests) == [[0, 2], [1, 4], [3]]
    assert group_by_settings([]) == []


def test_the_vae_decodes_one_sample_at_a_time_and_is_wrapped_once() -> None:
    seen = []

    class Vae(torch.nn.Module):
        def decode(self, latents: torch.Tensor, return_dict: bool = True):
            seen.append(tuple(latents.shape))
            return (latents * 2,)

    vae = Vae()
    decode_per_sample_(vae)
    decode_per_sample_(vae)  # a second stage over the same models
    (images,) = vae.decode(torch.arange(6.0).reshape(3, 2), return_dict=False)
    assert seen == [(1, 2)] * 3
    torch.testing.assert_close(images, torch.arange(6.0).reshape(3, 2) * 2)
