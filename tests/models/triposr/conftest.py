"""Shared fixtures for the TripoSR tests."""

import pytest
import torch

from gen3d.models.triposr import TripoSR, TripoSRConfig


@pytest.fixture
def tiny_model() -> TripoSR:
    torch.manual_seed(0)
    return TripoSR.from_config(TripoSRConfig.tiny())
