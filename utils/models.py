"""Networks: image (uint8 or float) -> embedding vector, and autoencoders: image -> image.

Heads (the losses) live in `utils.losses`; an autoencoder trains with the `reconstruction` head.
"""
from __future__ import annotations

from torch import nn

from .autoencoders import DCAE, ConvAutoencoder, SuperResolution, superres_article, unet_autoencoder  # noqa: F401
from .cnn import SmallCNN, ToFloat  # notebook 01's lesson cell


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
