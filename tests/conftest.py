"""Shared fixtures: the ../shared data folder (tests skip cleanly without it) and seeding."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SAN_SHARED_DIR", REPO.parent / "shared"))


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (research-only images, never copied into the repository)."""
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"shared data not found at {data}")
    return data


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture
def vgg_weights(tmp_path_factory) -> Path:
    """A VGG-19-shaped state dict with random weights, made by the test (the real ImageNet file is 548 MiB
    and cannot be downloaded here). It exercises the loading and layer plumbing, not the perceptual values."""
    from torchvision.models import vgg19

    path = tmp_path_factory.getbasetemp() / "vgg19-test-random.pth"
    if not path.exists():
        torch.manual_seed(123)
        feats = vgg19(weights=None).features
        torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, path)
    return path
