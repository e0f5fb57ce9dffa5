"""How much does fastai's data pipeline cost? One training epoch of the same CNN, three ways.

    python scripts/benchmark_fastai.py                      # MNIST (60,000 images), one epoch each
    python scripts/benchmark_fastai.py --dataset digits --n-per-class 20   # seconds, offline

1. `utils.train.fit`: the images sit in memory as one uint8 tensor; a batch is an index slice.
2. fastai `Learner.fit_one_cycle` on the same in-memory tensors (fastai's DataLoader, which
   fetches and collates item by item).
3. fastai's standard image pipeline: PNG files in class folders, `ImageDataLoaders.from_folder`.

All three train the same network (small CNN + linear softmax classifier), batch 128, one-cycle
AdamW, for one epoch; only the training time is measured (writing the PNG files is not).
Prints a table and writes it as JSON (`--out`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this repository's utils
import torch  # noqa: E402
from torch import nn  # noqa: E402

from utils import data as D, losses, models, train as T  # noqa: E402


def network(n_classes: int, seed: int) -> tuple[nn.Module, nn.Module]:
    """The same fresh CNN and softmax head for every contender."""
    torch.manual_seed(seed)
    return models.make_model("cnn", in_channels=1, emb_dim=64), losses.make("softmax", emb_dim=64, n_classes=n_classes)


class Classifier(nn.Module):
    """image -> class logits, for a fastai `Learner` whose loss takes (logits, labels)."""

    def __init__(self, net: nn.Module, head: nn.Module):
        super().__init__()
        self.net, self.head = net, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head.logits(self.net(x))


def run_utils(d: D.ImageData, bs: int, seed: int) -> float:
    net, head = network(len(d.classes), seed)
    t0 = time.perf_counter()
    T.fit(net, head, d.x_train, d.y_train, epochs=1, bs=bs, augment=2, seed=seed, progress=False)
    return time.perf_counter() - t0


def run_fastai_tensors(d: D.ImageData, bs: int, seed: int) -> float:
    from fastai.vision.all import CrossEntropyLossFlat, DataLoaders, Learner
    from torch.utils.data import TensorDataset

    net, head = network(len(d.classes), seed)
    train_ds = TensorDataset(d.x_train, d.y_train)
    valid_ds = TensorDataset(d.x_test[:bs], d.y_test[:bs])
    dls = DataLoaders.from_dsets(train_ds, valid_ds, bs=bs, shuffle=True, num_workers=0)
    learn = Learner(dls, Classifier(net, head), loss_func=CrossEntropyLossFlat())
    return _fit_one_epoch(learn)


def write_png_folder(d: D.ImageData, root: Path) -> None:
    """train/<class>/<i>.png and valid/<class>/<i>.png, the layout fastai tutorials start from."""
    from PIL import Image

    for split, x, y in (("train", d.x_train, d.y_train), ("valid", d.x_test[:256], d.y_test[:256])):
        for i, (img, label) in enumerate(zip(x[:, 0].numpy(), y.tolist())):
            folder = root / split / d.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i}.png")


def run_fastai_folder(d: D.ImageData, bs: int, seed: int, root: Path) -> float:
    from fastai.vision.all import CrossEntropyLossFlat, ImageDataLoaders, Learner, PILImageBW

    net, head = network(len(d.classes), seed)
    dls = ImageDataLoaders.from_folder(root, train="train", valid="valid", bs=bs, img_cls=PILImageBW,
                                       seed=seed, num_workers=min(2, os.cpu_count() or 1))
    learn = Learner(dls, Classifier(net, head), loss_func=CrossEntropyLossFlat())
    return _fit_one_epoch(learn)


def _fit_one_epoch(learn) -> float:
    with learn.no_bar(), learn.no_logging():
        t0 = time.perf_counter()
        learn.fit_one_cycle(1, 3e-3)
        return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--n-per-class", type=int, default=None, help="training images per class (default: all)")
    ap.add_argument("--bs", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/benchmark_fastai.json")
    args = ap.parse_args(argv)

    d = D.load(args.dataset, fallback="digits").per_class(args.n_per_class, None, seed=args.seed)
    print(d, flush=True)
    n = len(d.y_train)
    seconds = {"utils fit (tensors in memory)": run_utils(d, args.bs, args.seed),
               "fastai Learner (tensors in memory)": run_fastai_tensors(d, args.bs, args.seed)}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_png_folder(d, Path(tmp))
        png_s = time.perf_counter() - t0
        seconds["fastai Learner (PNG image folder)"] = run_fastai_folder(d, args.bs, args.seed, Path(tmp))
    base = seconds["utils fit (tensors in memory)"]
    rows = [{"pipeline": k, "seconds": round(s, 2), "images_per_s": round(n / s, 1), "slower_than_utils": round(s / base, 2)}
            for k, s in seconds.items()]
    report = {"dataset": d.name, "train_images": n, "bs": args.bs, "epochs": 1, "device": str(T.default_device()),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "png_write_seconds": round(png_s, 1),
              "rows": rows}
    for r in rows:
        print(f"{r['pipeline']:<36} {r['seconds']:8.1f} s {r['images_per_s']:9.0f} images/s  ×{r['slower_than_utils']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
