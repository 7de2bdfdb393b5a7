"""``post_processor``: upsamples the backbone's planes into the scene code."""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class TriplaneUpsampleConfig:
    """Args: in_channels: backbone channels; out_channels: scene-code channels per plane."""

    in_channels: int = 1024
    out_channels: int = 40


class TriplaneUpsampleNetwork(nn.Module):
    """One stride-2 transposed convolution per plane (shared weights)."""

    Config = TriplaneUpsampleConfig

    def __init__(self, cfg: TriplaneUpsampleConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.upsample = nn.ConvTranspose2d(cfg.in_channels, cfg.out_channels, kernel_size=2, stride=2)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        """(B, 3, Ci, P, P) -> scene code (B, 3, Co, 2P, 2P)."""
        batch = planes.shape[0]
        out = self.upsample(planes.flatten(0, 1))
        return out.unflatten(0, (batch, 3))
