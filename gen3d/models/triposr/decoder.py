"""``decoder``: the NeRF MLP mapping triplane features to density and colour logits."""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class NeRFMLPConfig:
    """Args: in_channels: 3 planes x scene-code channels; n_neurons: width;
    n_hidden_layers: Linear+activation pairs before the output Linear; activation: ``silu``."""

    in_channels: int = 120
    n_neurons: int = 64
    n_hidden_layers: int = 9
    activation: str = "silu"


class NeRFMLP(nn.Module):
    """``layers``: Linear, SiLU, (Linear, SiLU) x (n_hidden_layers - 1), Linear(n, 4).

    The Sequential indices (Linear at 0, 2, ..., 2 * n_hidden_layers) are part of the checkpoint keys.
    """

    Config = NeRFMLPConfig

    def __init__(self, cfg: NeRFMLPConfig) -> None:
        super().__init__()
        if cfg.activation != "silu":
            raise ValueError(f"decoder.activation: expected 'silu', got {cfg.activation!r}")
        if cfg.n_hidden_layers < 1:
            raise ValueError(f"decoder.n_hidden_layers: expected >= 1, got {cfg.n_hidden_layers}")
        self.cfg = cfg
        modules: list[nn.Module] = [nn.Linear(cfg.in_channels, cfg.n_neurons), nn.SiLU()]
        for _ in range(cfg.n_hidden_layers - 1):
            modules += [nn.Linear(cfg.n_neurons, cfg.n_neurons), nn.SiLU()]
        modules.append(nn.Linear(cfg.n_neurons, 4))
        self.layers = nn.Sequential(*modules)

    @property
    def first(self) -> nn.Linear:
        """The input Linear; it is linear in the features, which lets grids be evaluated per plane."""
        return self.layers[0]

    def head(self, pre_activation: torch.Tensor) -> torch.Tensor:
        """Rest of the MLP after the first Linear: (..., n_neurons) -> (..., 4)."""
        return self.layers[1:](pre_activation)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(..., in_channels) -> (..., 4): density logit then three colour logits."""
        return self.layers(features)
