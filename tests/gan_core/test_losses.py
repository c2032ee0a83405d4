"""Losses on known inputs (hinge, WGAN, the gradient penalty on critics whose input gradients are known);
VGG-19 features against torchvision's own network."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import vgg19

from gan_core.losses import (
    VGG19Features,
    d_hinge_loss,
    d_wgan_loss,
    feature_matching_loss,
    g_hinge_loss,
    gradient_penalty,
    pixel_loss,
)
from gan_core.weights import WeightsError


def test_hinge_known_values():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - x) = 0, 0.5, 2 -> mean 5/6
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + x) = 0, 1, 2 -> mean 1
    assert float(d_hinge_loss(real, fake)) == pytest.approx(5 / 6 + 1)
    assert float(g_hinge_loss(fake)) == pytest.approx(1 / 3)
    assert d_hinge_loss(real.bfloat16(), fake.bfloat16()).dtype == torch.float32


def test_wgan_known_values():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.0])
    assert float(d_wgan_loss(real, fake)) == pytest.approx(-1 / 3 - 0.5)  # mean fake - mean real
    assert d_wgan_loss(real.bfloat16(), fake.bfloat16()).dtype == torch.float32


def test_gradient_penalty_of_a_linear_critic_is_its_weight_norm_minus_one_squared():
    """D(x) = <w, x> has gradient w at every x: the penalty is (||w|| - 1)^2 whatever the interpolates."""
    w = torch.zeros(3, 4, 4)
    w[0, 0, :3] = torch.tensor([1.0, 2.0, 2.0])  # ||w|| = 3

    def critic(x):
        return (x * w).flatten(1).sum(1, keepdim=True)

    real, fake = torch.rand(5, 3, 4, 4), torch.rand(5, 3, 4, 4)
    assert float(gradient_penalty(critic, real, fake)) == pytest.approx(4.0)
    assert float(gradient_penalty(lambda x: critic(x) / 3, real, fake)) == pytest.approx(0.0, abs=1e-10)


def test_gradient_penalty_is_taken_at_per_sample_interpolates_and_reaches_the_critic_parameters():
    """D(x) = c/2 ||x||^2 has gradient c x: the penalty at x = a real + (1 - a) fake, one a per sample drawn
    from the given generator, and its derivative in c (the penalty is part of the critic's loss)."""
    c = torch.tensor(0.7, requires_grad=True)

    def critic(x):
        return 0.5 * c * x.flatten(1).square().sum(1, keepdim=True)

    real, fake = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    penalty = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(3))
    a = torch.rand(4, 1, 1, 1, generator=torch.Generator().manual_seed(3))
    norms = (a * real + (1 - a) * fake).flatten(1).norm(dim=1)
    assert float(penalty.detach()) == pytest.approx(float(((0.7 * norms - 1) ** 2).mean()), rel=1e-5)
    (dc,) = torch.autograd.grad(penalty, c)
    assert float(dc) == pytest.approx(float((2 * (0.7 * norms - 1) * norms).mean()), rel=1e-4)
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(critic, real, fake[:2])


def test_pixel_and_feature_matching():
    a, b = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5)
    assert float(pixel_loss(a, b, "l1")) == pytest.approx(0.5)
    assert float(pixel_loss(a, b, "mse")) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="'l1' or 'mse'"):
        pixel_loss(a, b, "l2")
    f = [torch.ones(2, 3), torch.zeros(4)]
    r = [torch.zeros(2, 3, requires_grad=True), torch.ones(4)]
    assert float(feature_matching_loss(f, r)) == pytest.approx(2.0)


def test_vgg_features_match_torchvision(vgg_weights):
    """Our extractor loads the file through the resolver and returns torchvision's activations."""
    ours = VGG19Features(("relu1_1", "relu3_1", "conv5_4"), vgg_weights, imagenet_normalize=True)
    ref = vgg19(weights=None).features
    ref.load_state_dict({k[len("features.") :]: v for k, v in torch.load(vgg_weights).items()})
    ref.eval()
    x = torch.rand(2, 3, 32, 40)
    xn = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        outs = ours(x)
        torch.testing.assert_close(outs[0], ref[:2](xn))
        torch.testing.assert_close(outs[1], ref[:12](xn))
        conv54 = ref[:35](xn)
        torch.testing.assert_close(outs[2], conv54)
        assert (conv54 < 0).any()  # pre-activation: conv5_4 before its ReLU
    assert not any(p.requires_grad for p in ours.parameters())
    ours.train()
    assert not ours.net.training
    loss = ours.loss(x, x.flip(-1))
    assert loss > 0 and float(ours.loss(x, x)) == 0.0


def test_vgg_missing_weights_are_a_clear_error(tmp_path, monkeypatch):
    from gan_core import weights

    monkeypatch.setenv("SAN_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # a developer's own weights/vgg19 file must not hide the error path
    repo_manifest = weights.REPO_WEIGHTS / "manifest.json"
    (tmp_path / "manifest.json").write_bytes(repo_manifest.read_bytes())
    monkeypatch.setattr(weights, "REPO_WEIGHTS", tmp_path / "no-repo-weights")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("SAN_GAN_OFFLINE", "1")
    with pytest.raises(WeightsError, match=r"(?s)vgg19-dcbb9e9d\.pth .*Put the file at one of"):
        VGG19Features(("conv5_4",), "vgg19")
    with pytest.raises(ValueError, match="unknown VGG-19 layer"):
        VGG19Features(("relu9_9",), "vgg19")
