"""Networks: image (uint8 or float) -> embedding vector, and autoencoders: image -> image.

Heads (the losses) live in `utils.losses`; an autoencoder trains with the `reconstruction` head.
"""
from __future__ import annotations

import torch
from torch import nn

from .autoencoders import DCAE, ConvAutoencoder, SuperResolution, superres_article, unet_autoencoder  # noqa: F401


class ToFloat(nn.Module):
    """uint8 0..255 images -> float, standardized by fixed per-data-set constants."""

    def __init__(self, mean: float = 0.5, std: float = 0.25):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        return (x - self.mean) / self.std


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3×3 conv + BN + ReLU, then 2×2 max-pool."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.MaxPool2d(2))


class SmallCNN(nn.Module):
    """The small CNN of the articles: 3 conv blocks -> global average -> linear embedding.

    The embedding is the raw output of the last linear layer (no ReLU, no normalization), so the
    heads decide what to do with its norm.
    """

    def __init__(self, in_channels: int = 1, emb_dim: int = 64, width: int = 16):
        super().__init__()
        self.emb_dim = emb_dim
        self.features = nn.Sequential(
            ToFloat(), conv_block(in_channels, width), conv_block(width, 2 * width),
            conv_block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embed = nn.Linear(4 * width, emb_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.features(x))


def resnet18(in_channels: int = 3, emb_dim: int = 64) -> nn.Module:
    """torchvision's ResNet18 for 28×28 / 32×32 inputs, from random weights: 3×3 stride-1 stem, no max-pool, linear
    embedding (ImageNet-pretrained backbones: `utils.pretrained`)."""
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Linear(512, emb_dim)
    net.emb_dim = emb_dim
    return nn.Sequential(ToFloat(), net)


# The autoencoders are notebook 11's lesson cells (`utils.autoencoders`).
ARCHS = {"cnn": SmallCNN, "resnet18": resnet18,
         "conv_ae": ConvAutoencoder, "unet_ae": unet_autoencoder, "superres_ae": SuperResolution,
         "superres_article": superres_article, "dcae": DCAE}
# image -> image: train them with the "reconstruction" head
AUTOENCODERS = ("conv_ae", "unet_ae", "superres_ae", "superres_article", "dcae")


def make_model(arch: str = "cnn", in_channels: int = 1, emb_dim: int = 64, **kw) -> nn.Module:
    """Build a network by name: an embedding network (`cnn`, `resnet18`) or an autoencoder (`AUTOENCODERS`)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}: choose one of {sorted(ARCHS)}")
    model = ARCHS[arch](in_channels=in_channels, emb_dim=emb_dim, **kw)
    model.emb_dim = emb_dim
    return model
