"""Networks: image (uint8 or float) -> embedding vector, and autoencoders: image -> image.

Heads (the losses) live in `utils.losses`; an autoencoder trains with the `reconstruction` head.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn


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


def resnet18(in_channels: int = 3, emb_dim: int = 64, pretrained: bool = False) -> nn.Module:
    """torchvision's ResNet18 for 28×28 / 32×32 inputs: 3×3 stride-1 stem, no max-pool, linear embedding.

    `pretrained=True` loads ImageNet weights when they can be had (the stem is re-initialized either way,
    because its shape changes); offline it warns and starts from random weights.
    """
    from torchvision.models import ResNet18_Weights, resnet18 as tv_resnet18

    net = tv_resnet18(weights=None)
    if pretrained:
        try:
            net.load_state_dict(ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False))
        except Exception as e:  # offline
            warnings.warn(f"ImageNet weights could not be loaded ({type(e).__name__}); training from scratch")
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Linear(512, emb_dim)
    net.emb_dim = emb_dim
    return nn.Sequential(ToFloat(), net)


# ----------------------------------------------------------------------------- autoencoders
def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    """3×3 conv (same size) + batch norm + ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


def _to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float 0..1 (float input is taken as already in 0..1)."""
    return x.float().div(255) if x.dtype == torch.uint8 else x


def _same_size(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`out` resized to `like`'s height and width when pooling rounded a side down (e.g. 7 -> 3 -> 6)."""
    return out if out.shape[-2:] == like.shape[-2:] else F.interpolate(out, size=like.shape[-2:], mode="nearest")


class ConvAutoencoder(nn.Module):
    """A small convolutional autoencoder: image in 0..1 -> its reconstruction in 0..1 (sigmoid).

    The hourglass: `depth` times (conv-BN-ReLU, 2×2 max-pool) down to a `width` × H/2^depth ×
    W/2^depth bottleneck (8 × 7 × 7 for MNIST at the defaults), then `depth` times (2× nearest upsampling,
    conv-BN-ReLU) and a 3×3 conv back to the input's channels. With `skips=True` it is a small U-Net
    (Ronneberger et al. 2015): each decoder level also sees the encoder's features of the same size,
    concatenated — detail can bypass the bottleneck, which makes the model *too* capable for anomaly
    detection (it reconstructs what it never saw). `emb_dim` is accepted so that `make_model` builds
    every architecture alike, and unused: the bottleneck's size is set by `width` and `depth`.
    """

    def __init__(self, in_channels: int = 1, emb_dim: int | None = None, width: int = 8, depth: int = 2,
                 skips: bool = False):
        super().__init__()
        self.skips = bool(skips)
        self.down = nn.ModuleList(conv_bn_relu(in_channels if i == 0 else width, width) for i in range(depth))
        self.up = nn.ModuleList(conv_bn_relu(width * (2 if skips else 1), width) for _ in range(depth))
        self.out = nn.Conv2d(width, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, saved = _to_unit(x), []
        for block in self.down:
            h = block(h)
            saved.append(h)
            h = F.max_pool2d(h, 2)
        for block in self.up:
            skip = saved.pop()
            h = _same_size(F.interpolate(h, scale_factor=2, mode="nearest"), skip)
            h = block(torch.cat([h, skip], 1) if self.skips else h)
        return _same_size(torch.sigmoid(self.out(h)), x)


def unet_autoencoder(in_channels: int = 1, emb_dim: int | None = None, width: int = 8,
                     depth: int = 2) -> ConvAutoencoder:
    """`ConvAutoencoder` with skip connections: a small U-Net."""
    return ConvAutoencoder(in_channels, emb_dim, width, depth, skips=True)


class SuperResolution(nn.Module):
    """"Super-resolution" reconstruction: max-pool the image `factor`× (28×28 -> 7×7), then a learned
    convolutional decoder back to full size: log2(factor) times (2× nearest upsampling, then `convs`
    conv-BN-ReLU layers), a 3×3 conv and a sigmoid. The encoder is fixed, so the model can only learn how
    normal images look at full resolution given their coarse version. `convs=1` is our small decoder
    (`superres_ae`); `convs=2` is the article's four conv + batch-norm layers (`superres_article`).
    `emb_dim` is accepted and unused (see `ConvAutoencoder`)."""

    def __init__(self, in_channels: int = 1, emb_dim: int | None = None, width: int = 8, factor: int = 4,
                 convs: int = 1):
        super().__init__()
        if factor < 2 or factor & (factor - 1):
            raise ValueError(f"factor must be a power of two >= 2, got {factor!r}")
        if convs < 1:
            raise ValueError(f"convs (conv-BN-ReLU layers per 2× upsampling) must be >= 1, got {convs!r}")
        self.factor, self.convs = factor, int(convs)
        n = (factor.bit_length() - 1) * self.convs
        self.up = nn.ModuleList(conv_bn_relu(in_channels if i == 0 else width, width) for i in range(n))
        self.out = nn.Conv2d(width, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = _to_unit(x)
        h = F.max_pool2d(xf, self.factor)
        for i, block in enumerate(self.up):
            if i % self.convs == 0:   # each level: upsample 2×, then its `convs` layers
                h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = block(h)
        return _same_size(torch.sigmoid(self.out(h)), x)


def superres_article(in_channels: int = 1, emb_dim: int | None = None, width: int = 8,
                     factor: int = 4) -> SuperResolution:
    """The article's super-resolution model: max-pool 4×, then a decoder of four conv + batch-norm layers
    (two 3×3 conv-BN-ReLU at each of 14×14 and 28×28, after 2× nearest upsampling) and a 3×3 conv with a
    sigmoid. The layer count follows the article's listing; the width (8, as its plain autoencoder), the
    3×3 kernels, ReLU and nearest upsampling are this package's choices where the listing was not
    available to us."""
    return SuperResolution(in_channels, emb_dim, width, factor, convs=2)


class DCAE(nn.Module):
    """Ruff et al. (2018)'s deep convolutional autoencoder for MNIST, the DCAE baseline of Deep SVDD's
    Table 1 — layer for layer the `MNIST_LeNet_Autoencoder` of their code (github.com/lukasruff/
    Deep-SVDD-PyTorch, src/networks/mnist_LeNet.py):

    - encoder (the Deep SVDD network): 5×5 conv, 8 filters (no bias) + batch norm (eps 1e-4, no affine
      parameters) + leaky ReLU + 2×2 max-pool; 5×5 conv, 4 filters, the same; a linear layer (no bias)
      from 4·7·7 = 196 numbers to a `rep_dim` = 32 code;
    - decoder: the code as 2 × 4 × 4, leaky ReLU, 2× upsampling; 5×5 transposed conv to 4 channels + BN +
      leaky ReLU, 2× upsampling; 5×5 transposed conv to 8 channels (16×16 -> 14×14) + BN + leaky ReLU, 2×
      upsampling; 5×5 transposed conv to the input's channels, sigmoid. No biases anywhere.

    Inputs must be 28×28. One difference: Ruff et al. preprocess with global contrast normalization (L1)
    and a per-class min-max scaling to 0..1; here, like every model of this package, the input is the
    image in 0..1 (uint8 / 255). Their training (Adam, lr 1e-4, batches of 200, many epochs) is not part
    of the model: `utils.train.fit` trains it like the others. `emb_dim` is accepted and unused (see
    `ConvAutoencoder`); the code size is `rep_dim` (a multiple of 16).
    """

    def __init__(self, in_channels: int = 1, emb_dim: int | None = None, rep_dim: int = 32):
        super().__init__()
        if rep_dim % 16:
            raise ValueError(f"rep_dim must be a multiple of 16 (the code is reshaped to rep_dim/16 × 4 × 4), got {rep_dim!r}")
        self.rep_dim = rep_dim
        self.conv1 = nn.Conv2d(in_channels, 8, 5, bias=False, padding=2)
        self.bn1 = nn.BatchNorm2d(8, eps=1e-4, affine=False)
        self.conv2 = nn.Conv2d(8, 4, 5, bias=False, padding=2)
        self.bn2 = nn.BatchNorm2d(4, eps=1e-4, affine=False)
        self.fc1 = nn.Linear(4 * 7 * 7, rep_dim, bias=False)
        self.deconv1 = nn.ConvTranspose2d(rep_dim // 16, 4, 5, bias=False, padding=2)
        self.bn3 = nn.BatchNorm2d(4, eps=1e-4, affine=False)
        self.deconv2 = nn.ConvTranspose2d(4, 8, 5, bias=False, padding=3)
        self.bn4 = nn.BatchNorm2d(8, eps=1e-4, affine=False)
        self.deconv3 = nn.ConvTranspose2d(8, in_channels, 5, bias=False, padding=2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The `rep_dim`-dimensional code of each image."""
        if x.shape[-2:] != (28, 28):
            raise ValueError(f"DCAE is Ruff et al.'s MNIST network: it takes 28×28 images, got {tuple(x.shape[-2:])}")
        h = F.max_pool2d(F.leaky_relu(self.bn1(self.conv1(_to_unit(x)))), 2)
        h = F.max_pool2d(F.leaky_relu(self.bn2(self.conv2(h))), 2)
        return self.fc1(h.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.encode(x).view(len(x), self.rep_dim // 16, 4, 4)
        h = F.interpolate(F.leaky_relu(h), scale_factor=2)
        h = F.interpolate(F.leaky_relu(self.bn3(self.deconv1(h))), scale_factor=2)
        h = F.interpolate(F.leaky_relu(self.bn4(self.deconv2(h))), scale_factor=2)
        return torch.sigmoid(self.deconv3(h))


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
