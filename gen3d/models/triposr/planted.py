"""A planted field with an analytic surface, for tests and benchmarks with random weights.

Random weights give an arbitrary (often empty or noise-like) surface at the official threshold;
planting a sphere makes mesh extraction measurable and checkable while exercising the same code.
"""

import math

import torch

from gen3d.models.triposr.decoder import NeRFMLP
from gen3d.models.triposr.system import TripoSR

#: Planted sphere radius in world units (the box is ±0.87).
SPHERE_RADIUS = 0.5
#: Colour logits planted in the decoder's last layer.
COLOR_LOGITS = (0.5, -1.0, 2.0)
#: Pre-activation at which colour units cross the decoder's SiLUs (silu(x) = x to 1e-4 near it).
COLOUR_CARRY = 12.0


def _silu(x: float) -> float:
    return x / (1.0 + math.exp(-x))


def plant_sphere(model: TripoSR, steepness: float, plane_size: int = 256) -> torch.Tensor:
    """Set ``model.decoder`` and return a scene code whose ``density_act == 25`` surface is a sphere.

    Args:
        model: any size; its decoder weights are overwritten.
        steepness: k below; larger k gives a sharper density edge (robust to half precision).
        plane_size: side of the returned (3, C, S, S) float32 scene code.

    Plane 0 channel 0 holds u_x^2 + u_y^2 and plane 1 channel 0 holds u_z^2 (u = p / radius) at
    the texel centres, so the bilinear features sum to s = |u|^2; ``plant_decoder`` puts the
    surface at s = r0^2.
    """
    radius = model.cfg.renderer.radius
    channels = model.cfg.post_processor.out_channels
    centres = (torch.arange(plane_size, dtype=torch.float64) * 2 + 1) / plane_size - 1
    rows, cols = torch.meshgrid(centres, centres, indexing="ij")  # [height, width]
    code = torch.zeros(3, channels, plane_size, plane_size, dtype=torch.float64)
    code[0, 0] = rows**2 + cols**2
    code[1, 0] = rows**2  # plane 1 is (x, z) with z along the height
    r0_sq = (SPHERE_RADIUS / radius) ** 2
    plant_decoder(model.decoder, {0: -1.0, channels: -1.0}, r0_sq, steepness)
    return code.float().to(model.decoder.first.weight.device)


def plant_decoder(
    decoder: NeRFMLP,
    level: dict[int, float],
    level_bias: float,
    steepness: float,
    colours: tuple[dict[int, float], ...] | None = None,
) -> None:
    """Set ``decoder`` so that ``density_act == 25`` exactly where ``L(f) = 0``, dense where ``L > 0``.

    ``L(f) = sum(level[i] * f[i]) + level_bias`` over the decoder's input features ``f`` (plane-major,
    3 x scene-code channels). Unit 0 carries ``offset + steepness * L`` through one SiLU per layer:
    monotone in L where it matters, so the level set is exactly L = 0; the output bias is solved in
    plain Python so that raw - 1 = ln 25 there.

    Args:
        decoder: any size with at least 4 neurons; its weights are overwritten.
        level: feature index -> weight of L.
        level_bias: constant of L.
        steepness: larger gives a sharper density edge (robust to half precision).
        colours: per RGB channel, feature index -> weight of its colour logit; None gives the
            constant ``COLOR_LOGITS``. Each rides ``COLOUR_CARRY`` above zero through the SiLUs,
            where SiLU is the identity to 1e-4, and the output subtracts the carried constant.
    """
    offset, out_weight = 2.0, 3.0
    linears = [m for m in decoder.layers if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for layer in linears:
            layer.weight.zero_()
            layer.bias.zero_()
        for index, weight in level.items():
            linears[0].weight[0, index] = steepness * weight
        linears[0].bias[0] = offset + steepness * level_bias
        value, carried = _silu(offset), _silu(COLOUR_CARRY)
        for layer in linears[1:-1]:
            layer.weight[0, 0] = 1.0
            value, carried = _silu(value), _silu(carried)
        linears[-1].weight[0, 0] = out_weight
        linears[-1].bias[0] = 1.0 + math.log(25.0) - out_weight * value
        if colours is None:
            linears[-1].bias[1:4] = torch.tensor(COLOR_LOGITS)
            return
        for unit, inputs in enumerate(colours, start=1):
            for index, weight in inputs.items():
                linears[0].weight[unit, index] = weight
            linears[0].bias[unit] = COLOUR_CARRY
            for layer in linears[1:]:
                layer.weight[unit, unit] = 1.0
            linears[-1].bias[unit] = -carried


def plant_sphere_in_weights(model: TripoSR, steepness: float = 6.0) -> None:
    """Make the whole model produce the planted sphere, whatever the input image.

    This is for the random-weight service modes, whose scene codes come from ``forward``. The
    backbone's output projection is zeroed, so its residual hands back the triplane tokens
    unchanged. Channel 0 of the tokens holds ``plant_sphere``'s pattern at token resolution. The
    upsampler copies channel 0, and ``plant_sphere`` sets the decoder. Every matrix keeps its
    shape, so the FLOPs stay the real ones.

    Args:
        model: a random-weight TripoSR, modified in place.
        steepness: as in ``plant_sphere``.
    """
    plant_sphere(model, steepness)
    planes = model.tokenizer.embeddings
    size = planes.shape[-1]
    centres = (torch.arange(size, dtype=torch.float32, device=planes.device) * 2 + 1) / size - 1
    rows, cols = torch.meshgrid(centres, centres, indexing="ij")
    upsample = model.post_processor.upsample
    with torch.no_grad():
        planes[:, 0] = 0.0
        planes[0, 0] = rows**2 + cols**2
        planes[1, 0] = rows**2
        model.backbone.proj_out.weight.zero_()
        model.backbone.proj_out.bias.zero_()
        upsample.weight.zero_()
        upsample.bias.zero_()
        upsample.weight[0, 0] = 1.0
