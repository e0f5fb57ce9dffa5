"""Embedding networks: shapes for 28×28 and 32×32 inputs, uint8 and float inputs, clear errors."""
from __future__ import annotations

import pytest
import torch

from utils import models


@pytest.mark.parametrize("arch", ["cnn", "resnet18"])
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_embedding_shape(arch, channels, size):
    net = models.make_model(arch, in_channels=channels, emb_dim=16).eval()
    x = torch.randint(0, 256, (3, channels, size, size), dtype=torch.uint8)
    with torch.no_grad():
        out = net(x)
    assert out.shape == (3, 16) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert net.emb_dim == 16


def test_uint8_and_scaled_float_inputs_agree():
    net = models.SmallCNN().eval()
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(net(x), net(x.float() / 255), atol=1e-5)


def test_resnet_stem_keeps_resolution():
    net = models.resnet18(in_channels=1, emb_dim=8)
    resnet = net[1]
    assert resnet.conv1.kernel_size == (3, 3) and resnet.conv1.stride == (1, 1)
    assert isinstance(resnet.maxpool, torch.nn.Identity)


def test_unknown_architecture_lists_the_choices():
    with pytest.raises(ValueError, match="cnn"):
        models.make_model("vgg")
