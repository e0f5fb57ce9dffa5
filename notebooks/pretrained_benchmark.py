"""Notebook 13's kit, beside the notebook it serves: what the pretrained backbones (`utils.pretrained`) are
checked with (`classify`: ImageNet's top classes), and how they join the anomaly benchmark of notebooks 07
and 08: `fine_tuned` makes a benchmark method of a backbone, `run_frozen` writes the frozen-feature
method's rows into the benchmark's CSV (same cases, same columns, same resumable keys)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from utils import anomaly, benchmark
from utils.cache import key as cache_key
from utils.data import ImageData
from utils.pretrained import BACKBONES, FeatureBank, features, load, spec


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
                     code=("pretrained.py", "imagenet_input.py", "anomaly.py", "protocol.py", "benchmark.py",
                           "notebooks/pretrained_benchmark.py"), n=12)


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
