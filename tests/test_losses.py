"""Loss heads: the registry, shapes, softmax and L2-constrained softmax against hand formulas,
learnable alpha, per-sample reduction, gradients, and Ranjan et al.'s lower bound on alpha."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from utils import losses, train

D, C, B = 8, 5, 16


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return 3 * torch.randn(B, D, generator=g), torch.randint(0, C, (B,), generator=g)


# ----------------------------------------------------------------------------- registry and shapes
def test_names_include_the_article_heads():
    assert {"softmax", "l2softmax"} <= set(losses.NAMES)
    assert len(set(losses.NAMES)) == len(losses.NAMES)


@pytest.mark.parametrize("name", losses.NAMES)
def test_make_builds_every_head(name, batch):
    x, y = batch
    head = losses.make(name, emb_dim=D, n_classes=C)
    assert isinstance(head, torch.nn.Module) and head.name == name and losses.has_logits(head)
    assert head.logits(x).shape == (B, C)
    assert head.weight.shape == (C, D)
    loss = head(x, y)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_unknown_head_lists_the_choices():
    with pytest.raises(ValueError) as e:
        losses.make("triplet-ish", emb_dim=D, n_classes=C)
    assert all(n in str(e.value) for n in losses.NAMES)


@pytest.mark.parametrize("name", losses.NAMES)
def test_per_sample_losses_average_to_the_mean_loss(name, batch):
    x, y = batch
    torch.manual_seed(0)
    mean_head = losses.make(name, emb_dim=D, n_classes=C)
    torch.manual_seed(0)
    each_head = losses.make(name, emb_dim=D, n_classes=C)
    each_head.reduction = "none"
    each = each_head(x, y)
    assert each.shape == (B,)
    assert torch.allclose(each.mean(), mean_head(x, y), atol=1e-6)
    assert not torch.allclose(each, each.mean().expand(B))          # genuinely per sample


@pytest.mark.parametrize("name", losses.NAMES)
def test_gradients_are_finite(name, batch):
    x, y = batch
    x = x.clone().requires_grad_(True)
    head = losses.make(name, emb_dim=D, n_classes=C)
    head(x, y).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for n, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n


# ----------------------------------------------------------------------------- softmax
def test_softmax_equals_hand_cross_entropy(batch):
    x, y = batch
    head = losses.make("softmax", emb_dim=D, n_classes=C)
    expected = F.cross_entropy(x @ head.weight.T + head.bias, y)
    assert torch.allclose(head(x, y), expected, atol=1e-6)
    assert torch.allclose(head.logits(x), x @ head.weight.T + head.bias, atol=1e-6)


# ----------------------------------------------------------------------------- L2-constrained softmax
def test_l2_scaled_features_have_norm_alpha(batch):
    x, _ = batch
    x = torch.cat([x, 1e-6 * torch.randn(1, D), 1e4 * torch.randn(1, D)])   # tiny and huge norms too
    head = losses.make("l2softmax", emb_dim=D, n_classes=C, alpha=7.5)
    scaled = head.alpha * F.normalize(x, dim=1)                        # what `logits` feeds the classifier
    with torch.no_grad():
        assert torch.allclose(head.logits(x), scaled @ head.weight.T + head.bias, atol=1e-3, rtol=1e-5)
    norms = scaled.norm(dim=1)
    assert torch.allclose(norms, torch.full_like(norms, 7.5), rtol=1e-5)


def test_l2_scaling_keeps_direction(batch):
    x, _ = batch
    head = losses.make("l2softmax", emb_dim=D, n_classes=C, alpha=4.0)
    with torch.no_grad():
        assert torch.allclose(head.logits(x), head.logits(0.01 * x), atol=1e-5)   # only the direction counts
        assert not torch.allclose(head.logits(x), head.logits(-x), atol=1e-3)


@pytest.mark.parametrize("alpha", [1.0, 16.0])
def test_l2softmax_equals_hand_formula(alpha, batch):
    x, y = batch
    head = losses.make("l2softmax", emb_dim=D, n_classes=C, alpha=alpha)
    z = alpha * x / x.norm(dim=1, keepdim=True)
    expected = F.cross_entropy(z @ head.weight.T + head.bias, y)
    assert torch.allclose(head(x, y), expected, atol=1e-5)


def test_l2softmax_ignores_the_embedding_norm(batch):
    x, y = batch
    head = losses.make("l2softmax", emb_dim=D, n_classes=C)
    assert torch.allclose(head(x, y), head(10 * x, y), atol=1e-5)
    plain = losses.make("softmax", emb_dim=D, n_classes=C)
    assert not torch.allclose(plain(x, y), plain(10 * x, y))


def test_fixed_alpha_is_a_buffer_not_a_parameter():
    head = losses.make("l2softmax", emb_dim=D, n_classes=C, alpha=16)
    assert "alpha" not in dict(head.named_parameters()) and "alpha" in dict(head.named_buffers())
    assert not head.alpha.requires_grad


def test_learnable_alpha_is_a_parameter_with_a_gradient(batch):
    x, y = batch
    head = losses.make("l2softmax", emb_dim=D, n_classes=C, alpha=3.0, learn_alpha=True)
    assert isinstance(head.alpha, nn.Parameter) and float(head.alpha.detach()) == 3.0
    groups = train.param_groups(nn.Linear(2, 2), head, 1e-3, 1e-2)
    assert [g["weight_decay"] for g in groups if any(p is head.alpha for p in g["params"])] == [0.0]
    head(x, y).backward()
    assert head.alpha.grad is not None and torch.isfinite(head.alpha.grad) and head.alpha.grad != 0


# ----------------------------------------------------------------------------- alpha lower bound
def test_alpha_low_formula():
    assert losses.alpha_low(0.9, 10) == pytest.approx(math.log(0.9 * 8 / 0.1))
    assert losses.alpha_low(0.99, 10) > losses.alpha_low(0.9, 10)          # surer -> larger alpha
    assert losses.alpha_low(0.9, 100) > losses.alpha_low(0.9, 10)          # more classes -> larger


@pytest.mark.parametrize("p,n", [(0.0, 10), (1.0, 10), (-0.5, 10), (1.5, 10), (0.9, 2)])
def test_alpha_low_rejects_bad_inputs(p, n):
    with pytest.raises(ValueError):
        losses.alpha_low(p, n)
