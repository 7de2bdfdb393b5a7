"""What batching FLUX needs beside the stage: the request a batch holds, its grouping, and a per-sample decode.

A batch is one pipeline call for requests of equal (steps, width, height). The Serve deployment
groups what ``@serve.batch`` hands it with :func:`group_by_settings`; ``TextToImage.generate_batch``
runs each group.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import _pytree as pytree


@dataclass(frozen=True)
class ImageRequest:
    """One text-to-image request, as a batch holds it.

    Attributes:
        prompt: the text.
        seed: seeds this request's initial latent noise.
        steps: denoising steps, one of ``allowed_steps``.
        width, height: pixels, each one of ``allowed_sizes``.
    """

    prompt: str
    seed: int
    steps: int
    width: int
    height: int

    @property
    def settings(self) -> tuple[int, int, int]:
        """What requests of one pipeline call share: (steps, width, height)."""
        return (self.steps, self.width, self.height)


def group_by_settings(requests: Sequence[ImageRequest]) -> list[list[int]]:
    """Indices of ``requests`` grouped by equal (steps, width, height), groups in order of first appearance."""
    groups: dict[tuple[int, int, int], list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(request.settings, []).append(index)
    return list(groups.values())


def per_sample(decode: Callable[..., Any]) -> Callable[..., Any]:
    """``decode`` applied to one sample of the batch at a time, the outputs concatenated.

    A batch's decode then equals each sample's own, and its memory stays that of one sample.
    """

    def decode_each(latents: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        outputs = [decode(latents[index : index + 1], *args, **kwargs) for index in range(latents.shape[0])]
        return pytree.tree_map(lambda *parts: torch.cat(parts), *outputs)

    decode_each.per_sample = True  # type: ignore[attr-defined]
    return decode_each


def decode_per_sample_(vae: torch.nn.Module) -> None:
    """Route ``vae.decode`` through :func:`per_sample`, once (stages built over shared models wrap it once)."""
    if not getattr(vae.decode, "per_sample", False):
        vae.decode = per_sample(vae.decode)
