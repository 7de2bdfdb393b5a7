"""A planted field with an analytic surface, for tests and benchmarks with random weights.

Random weights give an arbitrary (often empty or noise-like) surface at the official threshold;
planting a sphere makes mesh extraction measurable and checkable while exercising the same code.
"""

import math

import torch

from gen3d.triposr.system import TripoSR

#: Planted sphere radius in world units (the box is ±0.87).
SPHERE_RADIUS = 0.5
#: Colour logits planted in the decoder's last layer.
COLOR_LOGITS = (0.5, -1.0, 2.0)


def _silu(x: float) -> float:
    return x / (1.0 + math.exp(-x))


def plant_sphere(model: TripoSR, steepness: float, plane_size: int = 256) -> torch.Tensor:
    """Set ``model.decoder`` and return a scene code whose ``density_act == 25`` surface is a sphere.

    Args:
        model: any size; its decoder weights are overwritten.
        steepness: k below; larger k gives a sharper density edge (robust to half precision).
        plane_size: side of the returned (3, C, S, S) float32 scene code.

    Plane 0 channel 0 holds u_x^2 + u_y^2 and plane 1 channel 0 holds u_z^2 (u = p / radius) at
    the texel centres, so the bilinear features sum to |u|^2. The decoder maps s = |u|^2 through
    c + k (r0^2 - s), then SiLUs on one unit: monotone in s where it matters, so the level set is
    exactly s = r0^2; the output bias is solved in plain Python so that raw - 1 = ln 25 there.
    """
    radius = model.cfg.renderer.radius
    channels = model.cfg.post_processor.out_channels
    centres = (torch.arange(plane_size, dtype=torch.float64) * 2 + 1) / plane_size - 1
    rows, cols = torch.meshgrid(centres, centres, indexing="ij")  # [height, width]
    code = torch.zeros(3, channels, plane_size, plane_size, dtype=torch.float64)
    code[0, 0] = rows**2 + cols**2
    code[1, 0] = rows**2  # plane 1 is (x, z) with z along the height
    r0_sq = (SPHERE_RADIUS / radius) ** 2
    offset, out_weight = 2.0, 3.0
    linears = [m for m in model.decoder.layers if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for layer in linears:
            layer.weight.zero_()
            layer.bias.zero_()
        linears[0].weight[0, 0] = -steepness
        linears[0].weight[0, channels] = -steepness
        linears[0].bias[0] = offset + steepness * r0_sq
        value = _silu(offset)
        for layer in linears[1:-1]:
            layer.weight[0, 0] = 1.0
            value = _silu(value)
        linears[-1].weight[0, 0] = out_weight
        linears[-1].bias[0] = 1.0 + math.log(25.0) - out_weight * value
        linears[-1].bias[1:4] = torch.tensor(COLOR_LOGITS)
    return code.float().to(model.decoder.first.weight.device)


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
