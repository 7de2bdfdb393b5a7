"""A demo field that follows the input image, planted in a random-weight TripoSR (tiny preset).

Hand-set weights make TripoSR's own forward lift the image: the ViT's patch embedding averages
each block of pixels, and its MLP turns the block's colour distance from the grey background into
a foreground mask; the triplane transformer's cross-attention copies each image patch into the
(y, z) tokens it covers, whose feed-forward keeps their own block, and the decoder makes the field
dense where x^2 + lambda (y^2 + z^2) < H m - eps (a pillow over the silhouette), coloured by the
patch's mean colour. Every module runs at its real shapes, so the FLOPs are the real ones.

Frames: the input camera looks from +x, the image plane is (y, z) with z up; image columns run
along +y, rows down -z. Coordinates below are normalised by the field radius (the box is +-1).
"""

from dataclasses import dataclass, replace

import torch
from torch import nn

from gen3d.models.triposr.image_tokenizer import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DINOSingleImageTokenizer,
    ViTConfig,
    ViTEmbeddings,
)
from gen3d.models.triposr.planted import plant_decoder
from gen3d.models.triposr.system import TripoSR

#: Foreground: the sum over RGB of |block mean - grey| in ImageNet-normalised units (one unit is
#: about 0.23 on the 0..1 scale); the mask rises from 0 to 1 over MASK_WIDTH above the threshold.
MASK_THRESHOLD = 0.35
MASK_WIDTH = 0.25
#: Pillow shape: x^2 + LAMBDA (y^2 + z^2) < H m - EPS. Its half-thickness is at most
#: sqrt(H - EPS) = 0.4 of the box, far inside the last texel centre (15/16), so the zero padding
#: beyond it never opens the surface.
H, EPS, LAMBDA = 0.22, 0.06, 0.1
#: Large constant channels: they dominate every LayerNorm's spread, so LayerNorms act linearly.
ANCHOR = 1000.0
#: Attention sharpness (softmax logit per unit of squared distance) and the CLS token's distance.
BETA, CLS_FAR = 200.0, 10.0
#: Slope of the soft |.| (GELU pairs) and gate strength of the feed-forward selection.
ABS_SLOPE, GATE = 10.0, 8.0
STEEPNESS = 6.0
#: Colour logit per unit of 0..1 colour above grey: sigmoid(4 (p - 0.5)) follows p near the middle.
COLOUR_GAIN = 4.0


class _Channels:
    """Hands out channel indices of one residual stream, in order."""

    def __init__(self, width: int, what: str) -> None:
        self.width, self.what, self.next = width, what, 0

    def take(self, count: int = 1) -> list[int]:
        if self.next + count > self.width:
            raise ValueError(f"plant_demo_in_weights: {self.what} has {self.width} channels, the demo needs more")
        taken = list(range(self.next, self.next + count))
        self.next += count
        return taken


@dataclass(frozen=True)
class _Layout:
    """Grid sizes of one architecture: G x G patches, each k x k blocks, one block per (y, z) token."""

    grid: int
    blocks: int
    pixels: int  # block side in pixels

    @classmethod
    def of(cls, model: TripoSR) -> "_Layout":
        cfg = model.cfg
        grid = cfg.cond_image_size // cfg.image_tokenizer.patch_size
        if cfg.tokenizer.plane_size % grid:
            raise ValueError(
                f"plant_demo_in_weights: plane_size {cfg.tokenizer.plane_size} must be a multiple of the patch grid {grid}"
            )
        blocks = cfg.tokenizer.plane_size // grid
        if cfg.image_tokenizer.patch_size % blocks:
            raise ValueError(f"plant_demo_in_weights: patch_size {cfg.image_tokenizer.patch_size} must split into {blocks} blocks")
        return cls(grid, blocks, cfg.image_tokenizer.patch_size // blocks)


def _readout(stream: int, channel: int, zero: int, spread: float) -> torch.Tensor:
    """Row reading ``channel`` back out of a LayerNorm whose spread is ``spread``.

    LayerNorm shifts every channel by the same mean; subtracting an always-zero channel cancels it.
    """
    row = torch.zeros(stream, dtype=torch.float64)
    row[channel] += spread
    row[zero] -= spread
    return row


def _anchor_spread(width: int) -> float:
    """Standard deviation over ``width`` channels of a vector holding ANCHOR in one channel."""
    return ANCHOR * (width - 1) ** 0.5 / width


def _zero_(module: nn.Module) -> None:
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.zero_()


def _unit_norms_(module: nn.Module) -> None:
    """Every LayerNorm/GroupNorm in ``module`` to weight 1, bias 0."""
    with torch.no_grad():
        for norm in module.modules():
            if isinstance(norm, (nn.LayerNorm, nn.GroupNorm)):
                norm.weight.fill_(1.0)
                norm.bias.zero_()


@dataclass(frozen=True)
class _Context:
    """Channels of the image tokens (the ViT's output) that the backbone reads."""

    mask: list[int]  # per block of a patch
    colour: list[int]  # patch mean RGB minus grey, normalised
    position: list[int]  # patch centre (y, z) and y^2 + z^2
    zero: int


def _patch_positions(layout: _Layout) -> torch.Tensor:
    """(G*G, 3) patch centres (y, z, y^2 + z^2), patches in the ViT's row-major order."""
    centres = (torch.arange(layout.grid, dtype=torch.float64) * 2 + 1) / layout.grid - 1
    rows, cols = torch.meshgrid(centres, centres, indexing="ij")
    y, z = cols.flatten(), -rows.flatten()  # image rows run down -z
    return torch.stack([y, z, y**2 + z**2], dim=1)


def _plant_positions(embeddings: ViTEmbeddings, image_size: int, layout: _Layout, position: list[int]) -> None:
    """Position embeddings whose resized grid (the model's own bicubic resize) gives the patch centres."""
    n = embeddings.grid**2
    side = embeddings.grid * embeddings.patch_size
    probe = ViTEmbeddings(replace(ViTConfig(), image_size=side, patch_size=embeddings.patch_size, hidden_size=n))
    with torch.no_grad():
        probe.position_embeddings.zero_()
        probe.position_embeddings[0, 1:] = torch.eye(n)
        resize = probe.interpolated_positions(image_size, image_size)[0, 1:].double()  # (G*G, n)
        target = _patch_positions(layout)
        solved = torch.linalg.pinv(resize) @ target
        if not torch.allclose(resize @ solved, target, atol=1e-4):
            raise ValueError("plant_demo_in_weights: the position resize cannot reach the patch centres")
        embeddings.position_embeddings[0, 1:, position] = solved.to(embeddings.position_embeddings)
        embeddings.position_embeddings[0, 0, position[2]] = CLS_FAR  # the CLS token is never attended


def _plant_image_tokenizer(tokenizer: DINOSingleImageTokenizer, image_size: int, layout: _Layout) -> _Context:
    """ViT: blocks' colour offsets from grey -> soft foreground masks; patch colours and positions."""
    vit = tokenizer.model
    width = vit.layernorm.weight.shape[0]
    k2 = layout.blocks**2
    channels = _Channels(width, "image_tokenizer hidden_size")
    offset = channels.take(3 * k2)  # block mean minus grey, per block and RGB
    raw = channels.take(k2)  # sum over RGB of |offset|
    mask, colour, position = channels.take(k2), channels.take(3), channels.take(3)
    (anchor,), (zero,) = channels.take(), channels.take()
    layers = vit.encoder.layer
    if len(layers) < 2 or layers[0].intermediate.dense.out_features < 6 * k2:
        raise ValueError("plant_demo_in_weights: the ViT needs 2 layers and 6 MLP units per block")
    _zero_(vit)
    _unit_norms_(vit)
    grey = [(0.5 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    spread = _anchor_spread(width)
    conv = vit.embeddings.patch_embeddings.projection
    patch = layout.blocks * layout.pixels
    with torch.no_grad():
        # 1. Patch embedding: block and patch means of the normalised pixels, minus grey.
        for block in range(k2):
            rows = slice(block // layout.blocks * layout.pixels, (block // layout.blocks + 1) * layout.pixels)
            cols = slice(block % layout.blocks * layout.pixels, (block % layout.blocks + 1) * layout.pixels)
            for rgb in range(3):
                conv.weight[offset[3 * block + rgb], rgb, rows, cols] = 1.0 / layout.pixels**2
                conv.bias[offset[3 * block + rgb]] = -grey[rgb]
        for rgb in range(3):
            conv.weight[colour[rgb], rgb] = 1.0 / patch**2
            conv.bias[colour[rgb]] = -grey[rgb]
        conv.bias[anchor] = ANCHOR
        vit.embeddings.cls_token[0, 0, anchor] = ANCHOR
        _plant_positions(vit.embeddings, image_size, layout, position)
        # 2. Layer 0's MLP: raw = sum |offset| as (GELU(a x) + GELU(-a x)) / a.
        first = layers[0]
        for block in range(k2):
            for rgb in range(3):
                read = _readout(width, offset[3 * block + rgb], zero, spread)
                for sign, unit in ((1.0, 6 * block + 2 * rgb), (-1.0, 6 * block + 2 * rgb + 1)):
                    first.intermediate.dense.weight[unit] = (sign * ABS_SLOPE * read).to(conv.weight)
                    first.output.dense.weight[raw[block], unit] = 1.0 / ABS_SLOPE
        # 3. Layer 1's MLP: mask = GELU(s) - GELU(s - 1), s = (raw - threshold) / width: a soft step.
        second = layers[1]
        for block in range(k2):
            read = _readout(width, raw[block], zero, spread) / MASK_WIDTH
            for unit, shift, sign in ((2 * block, 0.0, 1.0), (2 * block + 1, 1.0, -1.0)):
                second.intermediate.dense.weight[unit] = read.to(conv.weight)
                second.intermediate.dense.bias[unit] = -MASK_THRESHOLD / MASK_WIDTH - shift
                second.output.dense.weight[mask[block], unit] = sign
    return _Context(mask, colour, position, zero)


@dataclass(frozen=True)
class _Tokens:
    """Channels of the triplane tokens (and the backbone's residual stream)."""

    anchor: int
    zero: int
    one: int
    query: list[int]  # (y, z) of the patch a (y, z) token copies
    block: list[int]  # one-hot: which block of its patch the token is
    x: list[int]  # x^2, x of plane-0 tokens
    yz: list[int]  # y^2 + z^2, y, z of plane-2 tokens
    copied: list[int]  # the patch's masks (per block) and colour, after cross-attention
    mask: int  # the token's own block's mask, after the feed-forward


def _token_values(layout: _Layout, size: int, t: _Tokens, width: int) -> torch.Tensor:
    """The planted ``tokenizer.embeddings``: (3, C, P, P) float64."""
    centres = (torch.arange(size, dtype=torch.float64) * 2 + 1) / size - 1
    rows, cols = torch.meshgrid(centres, centres, indexing="ij")  # a plane's first coordinate runs along its width
    planes = torch.zeros(3, width, size, size, dtype=torch.float64)
    planes[:, t.anchor] = ANCHOR
    planes[:, t.one] = 1.0
    planes[0, t.x[0]], planes[0, t.x[1]] = cols**2, cols  # plane 0 is (x, y)
    planes[2, t.yz[0]], planes[2, t.yz[1]], planes[2, t.yz[2]] = cols**2 + rows**2, cols, rows  # plane 2 is (y, z)
    index = torch.arange(size)
    image_row = (size - 1 - index)[:, None].expand(size, size)  # token row a holds image block row P-1-a
    image_col = index[None, :].expand(size, size)
    planes[2, t.query[0]] = (2 * (image_col // layout.blocks) + 1).double() / layout.grid - 1
    planes[2, t.query[1]] = 1 - (2 * (image_row // layout.blocks) + 1).double() / layout.grid
    block = (image_row % layout.blocks) * layout.blocks + image_col % layout.blocks
    # The outer ring of tokens keeps no block, so the mask is zero there and the surface closes
    # inside the box (the zero padding beyond the last texel would otherwise open it).
    inner = (index > 0) & (index < size - 1)
    inner = inner[:, None] & inner[None, :]
    for b, channel in enumerate(t.block):
        planes[2, channel] = ((block == b) & inner).double()
    return planes


def _plant_backbone(model: TripoSR, layout: _Layout, context: _Context) -> _Tokens:
    """Tokens, GroupNorm, proj_in, block 0's cross-attention and feed-forward, proj_out."""
    backbone, size = model.backbone, model.cfg.tokenizer.plane_size
    width, k2 = backbone.cfg.in_channels, layout.blocks**2
    channels = _Channels(width, "backbone in_channels")
    (anchor,), (zero,), (one,) = channels.take(), channels.take(), channels.take()
    t = _Tokens(anchor, zero, one, channels.take(2), channels.take(k2), channels.take(2), channels.take(3),
                channels.take(k2 + 3), channels.take()[0])
    heads, head_dim = backbone.cfg.num_attention_heads, backbone.cfg.attention_head_dim
    block0 = backbone.transformer_blocks[0]
    if head_dim < max(3, k2 + 3) or block0.ff.net[2].in_features < k2:
        raise ValueError("plant_demo_in_weights: the backbone's heads are too narrow for the demo")
    planes = _token_values(layout, size, t, width)
    _zero_(backbone)
    _unit_norms_(backbone)
    tokens_spread = _anchor_spread(width)
    context_width = model.image_tokenizer.model.layernorm.weight.shape[0]
    context_spread = _anchor_spread(context_width)
    weight = backbone.proj_in.weight
    with torch.no_grad():
        model.tokenizer.embeddings.copy_(planes.to(weight))
        # 1. GroupNorm then proj_in hand the tokens over unchanged: the norm's affine undoes its own
        #    statistics, which are constants because the tokens are.
        groups = planes.permute(1, 0, 2, 3).reshape(backbone.norm.num_groups, -1)
        mean, std = groups.mean(dim=1), (groups.var(dim=1, unbiased=False) + backbone.norm.eps).sqrt()
        per_channel = width // backbone.norm.num_groups
        backbone.norm.weight.copy_(std.repeat_interleave(per_channel).to(weight))
        backbone.norm.bias.copy_(mean.repeat_interleave(per_channel).to(weight))
        backbone.proj_in.weight.copy_(torch.eye(width).to(weight))
        # 2. Cross-attention: logit = 2 beta q.k - beta |k|^2 peaks where the key is the query's patch.
        scale = head_dim**0.5  # cancels SDPA's 1/sqrt(head_dim)
        attn = block0.attn2
        for head in range(heads):
            for dim, (query, key) in enumerate(zip((*t.query, t.one), context.position)):
                factor = scale * (-BETA if query == t.one else 2 * BETA)
                row = head * head_dim + dim
                attn.to_q.weight[row] = (factor * _readout(width, query, zero, tokens_spread)).to(weight)
                attn.to_k.weight[row] = _readout(context_width, key, context.zero, context_spread).to(weight)
        for dim, source in enumerate(context.mask + context.colour):
            attn.to_v.weight[dim] = _readout(context_width, source, context.zero, context_spread).to(weight)
            attn.to_out[0].weight[t.copied[dim], dim] = 1.0
        # 3. Feed-forward (GEGLU): mask = sum over blocks of copied mask * [token is that block].
        proj, inner = block0.ff.net[0].proj, block0.ff.net[2].in_features
        for b in range(k2):
            proj.weight[b] = _readout(width, t.copied[b], zero, tokens_spread).to(weight)
            gate = 2 * _readout(width, t.block[b], zero, tokens_spread) - _readout(width, one, zero, tokens_spread)
            proj.weight[inner + b] = (GATE * gate).to(weight)
            block0.ff.net[2].weight[t.mask, b] = 1.0 / GATE
        # 4. proj_out hands on the token's mask and its patch's colour (the tokens come back by the residual).
        for channel in (t.mask, *t.copied[k2:]):
            backbone.proj_out.weight[channel, channel] = 1.0
    return t


def _plant_upsample(model: TripoSR, t: _Tokens, k2: int) -> dict[str, int]:
    """Scene-code channels: exact x^2 (plane 0) and y^2 + z^2 (plane 2) at texel centres, mask, RGB."""
    upsample, size = model.post_processor.upsample, model.cfg.tokenizer.plane_size
    code = {"x2": 0, "mask": 1, "r2": 2, "rgb": 3}
    if upsample.out_channels < 6:
        raise ValueError("plant_demo_in_weights: the scene code needs 6 channels")
    offsets = [(2 * i - 1) / (2 * size) for i in range(2)]  # texel centre minus token centre
    _zero_(upsample)
    with torch.no_grad():
        for i, di in enumerate(offsets):  # kernel row: along the plane's height
            for j, dj in enumerate(offsets):  # kernel column: along its width
                # (c + d)^2 = c^2 + 2 c d + d^2 with c the token centre and d the texel offset.
                upsample.weight[t.x[0], code["x2"], i, j] = 1.0
                upsample.weight[t.x[1], code["x2"], i, j] = 2 * dj
                upsample.weight[t.yz[0], code["r2"], i, j] = 1.0
                upsample.weight[t.yz[1], code["r2"], i, j] = 2 * dj
                upsample.weight[t.yz[2], code["r2"], i, j] = 2 * di
                upsample.weight[t.one, code["x2"], i, j] = dj**2
                upsample.weight[t.one, code["r2"], i, j] = di**2 + dj**2
                upsample.weight[t.mask, code["mask"], i, j] = 1.0
                for rgb in range(3):
                    upsample.weight[t.copied[k2 + rgb], code["rgb"] + rgb, i, j] = 1.0
    return code


def plant_demo_in_weights(model: TripoSR) -> None:
    """Make ``model``'s forward lift the input image's silhouette and colours (tiny demo).

    The same image always gives the same scene code; different silhouettes or colours give
    different meshes. Every matrix keeps its shape, so the FLOPs are those of the architecture.

    Args:
        model: a random-weight TripoSR (float32), modified in place.

    Raises:
        ValueError: a part of the architecture is too small for the planted construction.
    """
    if model.dtype != torch.float32:
        raise ValueError(f"plant_demo_in_weights: needs float32 weights (its LayerNorm anchors), got {model.dtype}")
    layout = _Layout.of(model)
    context = _plant_image_tokenizer(model.image_tokenizer, model.cfg.cond_image_size, layout)
    tokens = _plant_backbone(model, layout, context)
    code = _plant_upsample(model, tokens, layout.blocks**2)
    channels = model.cfg.post_processor.out_channels
    plane0, plane2 = 0, 2 * channels
    level = {plane2 + code["mask"]: H, plane0 + code["x2"]: -1.0, plane2 + code["r2"]: -LAMBDA}
    colours = tuple({plane2 + code["rgb"] + rgb: COLOUR_GAIN * std} for rgb, std in enumerate(IMAGENET_STD))
    plant_decoder(model.decoder, level, -EPS, STEEPNESS, colours)
