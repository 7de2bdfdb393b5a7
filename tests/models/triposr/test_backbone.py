"""Our backbone equals diffusers' Transformer2DModel configured as in the spec (tiny sizes)."""

import torch
from diffusers import Transformer2DModel

from gen3d.models.triposr.backbone import Transformer1D, Transformer1DConfig


def test_backbone_matches_diffusers_transformer2d() -> None:
    torch.manual_seed(0)
    cfg = Transformer1DConfig(in_channels=64, num_attention_heads=2, attention_head_dim=32, num_layers=2, cross_attention_dim=24)
    ours = Transformer1D(cfg).eval()
    reference = Transformer2DModel(
        num_attention_heads=2,
        attention_head_dim=32,
        in_channels=64,
        num_layers=2,
        cross_attention_dim=24,
        norm_num_groups=32,
        use_linear_projection=True,
        activation_fn="geglu",
        attention_bias=False,
        norm_type="layer_norm",
    ).eval()
    reference.load_state_dict(ours.state_dict(), strict=True)
    tokens = torch.randn(2, 64, 3 * 4 * 4)
    context = torch.randn(2, 17, 24)
    with torch.no_grad():
        expected = reference(tokens.unsqueeze(-1), encoder_hidden_states=context).sample.squeeze(-1)
        torch.testing.assert_close(ours(tokens, context), expected, rtol=1e-4, atol=1e-5)
