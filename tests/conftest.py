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


@pytest.fixture(scope="session")
def fid_weights(tmp_path_factory) -> Path:
    """An Inception-v3 with the FID blocks and random weights, made by the test (the real TF-ported file is
    91 MiB and cannot be downloaded here): it exercises the FID pipeline, not the values of real FIDs."""
    import torchvision
    from pyiqa.archs.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2

    path = tmp_path_factory.getbasetemp() / "pt_inception-test-random.pth"
    if not path.exists():
        torch.manual_seed(5)
        net = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = (
            FIDInceptionA(192, 32),
            FIDInceptionA(256, 64),
            FIDInceptionA(288, 64),
        )
        net.Mixed_6b, net.Mixed_6c = FIDInceptionC(768, 128), FIDInceptionC(768, 160)
        net.Mixed_6d, net.Mixed_6e = FIDInceptionC(768, 160), FIDInceptionC(768, 192)
        net.Mixed_7b, net.Mixed_7c = FIDInceptionE_1(1280), FIDInceptionE_2(2048)
        for m in net.modules():  # He init keeps activations alive through the BN layers' unit running stats
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        torch.save(net.state_dict(), path)
    return path
