"""``tokenizer``: the learned triplane tokens the backbone starts from."""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class TriplaneTokenizerConfig:
    """Args: plane_size: side of each plane in tokens; num_channels: channels per token."""

    plane_size: int = 32
    num_channels: int = 1024


class Triplane1DTokenizer(nn.Module):
    """Three learned (C, P, P) planes, flattened to a token sequence and back."""

    Config = TriplaneTokenizerConfig

    def __init__(self, cfg: TriplaneTokenizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        scale = cfg.num_channels**-0.5
        self.embeddings = nn.Parameter(torch.randn(3, cfg.num_channels, cfg.plane_size, cfg.plane_size) * scale)

    def forward(self, batch_size: int) -> torch.Tensor:
        """Tokens (B, C, 3 * P * P), flattened plane-major, then row, then column."""
        planes = self.embeddings.unsqueeze(0).expand(batch_size, -1, -1, -1, -1)
        return planes.permute(0, 2, 1, 3, 4).reshape(batch_size, self.cfg.num_channels, -1)

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, C, 3 * P * P) -> planes (B, 3, C, P, P); inverse of ``forward``'s flattening."""
        batch, channels, _ = tokens.shape
        size = self.cfg.plane_size
        return tokens.view(batch, channels, 3, size, size).permute(0, 2, 1, 3, 4)
