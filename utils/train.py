"""Training and evaluation: one `fit` for every embedding network + loss head (utils/README.md: how it is fast)."""
from __future__ import annotations

import hashlib
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import losses, models
from .cache import code_text, key as cache_key, source_hash
from .augment import gaussian_noise, random_affine, random_shift  # notebooks 01, 10 and 11's lesson cells
from .mixup import mixup_loss  # notebook 08's lesson cell
from .pair_losses import PKSampler  # notebook 09's lesson cell
from .data import ImageData, atomic_save, cache_dir


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA), and ask cuDNN for deterministic convolutions.

    On the CPU the same seed gives the same numbers. On a GPU, deterministic cuDNN removes the main
    source of run-to-run noise, but some CUDA kernels (e.g. the scatter-adds in the backward pass of
    indexing) stay nondeterministic, so GPU runs agree to a few decimals, not bit for bit.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def choose_precision(device_type: str, capability: tuple[int, int] | None = None) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, gradient scaler?) for a device: CPU float32; CUDA ≥ 8.0 bfloat16; older GPUs
    float16 with a scaler (utils/README.md)."""
    if device_type != "cuda":
        return None, False
    if capability is None:
        capability = torch.cuda.get_device_capability()
    return (torch.bfloat16, False) if tuple(capability) >= (8, 0) else (torch.float16, True)


def param_groups(model: nn.Module, head: nn.Module, lr: float, wd: float) -> list[dict]:
    """Every trainable parameter of the model and the head, once, by one rule for every method:
    matrices and convolution kernels (ndim > 1: the class weights too) get weight decay `wd`; biases,
    norm layers' scales and learned scalars (L2-softmax's α) get none."""
    params = [p for p in (*model.parameters(), *head.parameters()) if p.requires_grad]
    return [{"params": [p for p in params if p.ndim > 1], "lr": lr, "weight_decay": wd},
            {"params": [p for p in params if p.ndim <= 1], "lr": lr, "weight_decay": 0.0}]


class NaNLossError(FloatingPointError):
    """The loss became NaN or infinite."""


def fit(model: nn.Module, head: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
        epochs: int = 15, bs: int = 128, lr: float = 3e-3, wd: float = 1e-2,
        augment: int = 0, affine: dict | None = None, noise: float = 0.0, mixup: float = 0.0,
        sampler: PKSampler | None = None, valid: tuple[torch.Tensor, torch.Tensor] | None = None,
        seed: int = 0, device: torch.device | str | None = None, amp: bool | None = None,
        progress: bool | None = None) -> pd.DataFrame:
    """Train `model` + `head` with AdamW and fastai's one-cycle schedule; return the per-epoch history.

    x: uint8 images N×C×H×W, y: int64 labels. `augment` (max shift, pixels), `affine` (`random_affine`'s
    keywords), `noise` (σ), `mixup` (Beta(α, α)); a `sampler` (`PKSampler`) gives P×K batches; `valid` = (x, y)
    scored after every epoch. utils/README.md: what every argument does."""
    from fastprogress.fastprogress import master_bar, progress_bar

    device = torch.device(device) if device is not None else default_device()
    amp = (device.type == "cuda") if amp is None else amp
    amp_dtype, use_scaler = choose_precision(device.type) if amp else (None, False)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    progress = os.environ.get("DML_PROGRESS", "1") != "0" if progress is None else bool(progress)  # headless: quiet
    if mixup and not hasattr(head, "reduction"):
        raise ValueError(f"mixup mixes the losses of single images, and the {losses.name_of(head)!r} head learns from "
                         f"pairs/triplets of the batch (no per-sample loss, mixup is not supported): use mixup=0")
    if mixup and losses.uses_inputs(head):
        raise ValueError(f"mixup mixes labels, and the {losses.name_of(head)!r} head learns from the inputs: "
                         f"use mixup=0 (or noise= / augment= to vary the inputs)")
    model.to(device).to(memory_format=torch.channels_last)
    head.to(device)
    x, y = x.to(device), y.to(device)
    g = torch.Generator(device=device).manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(param_groups(model, head, lr, wd), lr=lr, betas=(0.95, 0.99))
    steps = sampler.steps(len(y)) if sampler is not None else math.ceil(len(y) / bs)
    total = epochs * steps
    # OneCycleLR divides by zero when pct_start·total_steps == 1 (4 steps), and a 1-step schedule's
    # only lr is its final ≈0 one; one spare step at the end avoids both
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[gr["lr"] for gr in opt.param_groups], total_steps=total + (total in (1, 4)),
        pct_start=0.25, cycle_momentum=True, base_momentum=0.85, max_momentum=0.95)
    if hasattr(head, "begin"):
        head.begin(total)
    rows = []
    mb = master_bar(range(epochs)) if progress else None
    for epoch in (mb if progress else range(epochs)):
        t0 = time.perf_counter()
        model.train(), head.train()
        if sampler is not None:
            order = sampler.epoch(y, g).flatten()
            bs = len(order) // steps
        else:
            order = torch.randperm(len(y), generator=g, device=device)
        losses_buf = torch.zeros(steps, device=device)
        batches = range(steps)
        for i in (progress_bar(batches, parent=mb) if progress else batches):
            idx = order[i * bs:(i + 1) * bs]
            xb, yb = x[idx], y[idx]
            if augment:
                xb = random_shift(xb, augment, g)
            if affine is not None:
                xb = random_affine(xb, g, **affine)
            clean = xb
            if noise:
                xb = gaussian_noise(xb, noise, g)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                if mixup:
                    loss = mixup_loss(model, head, xb, yb, mixup, g)
                elif losses.uses_inputs(head):
                    loss = head(model(xb), yb, inputs=clean)
                else:
                    loss = head(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            lr_used = opt.param_groups[0]["lr"]
            sched.step()
            if hasattr(head, "step"):
                head.step()
            losses_buf[i] = loss.detach().float()
            if (i + 1) % 50 == 0 or i == steps - 1:
                _check_finite(losses_buf[:i + 1], head, epoch, steps)
        row = {"epoch": epoch + 1, "train_loss": losses_buf.mean().item(), "lr": lr_used}
        if valid is not None and losses.has_logits(head):
            row.update(evaluate(model, head, *valid, device=device, amp=amp))
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        if progress:
            mb.write(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    return pd.DataFrame(rows)


def _check_finite(buf: torch.Tensor, head: nn.Module, epoch: int, steps: int) -> None:
    bad = ~torch.isfinite(buf)
    if bad.any():
        step = int(torch.nonzero(bad)[0]) + epoch * steps + 1
        raise NaNLossError(
            f"the {losses.name_of(head)!r} head produced a non-finite loss ({buf[bad][0].item()}) at step {step} "
            f"(epoch {epoch + 1}). Try a lower learning rate, a smaller scale/margin, or amp=False.")


@torch.no_grad()
def embed(model: nn.Module, x: torch.Tensor, bs: int = 1024, device: torch.device | str | None = None,
          amp: bool | None = None) -> torch.Tensor:
    """Embeddings of `x` in eval mode, batched, returned as float32 on the CPU."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    amp = (device.type == "cuda") if amp is None else amp
    amp_dtype = choose_precision(device.type)[0] if amp else None
    model.eval()
    out = []
    for i in range(0, len(x), bs):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out.append(model(x[i:i + bs].to(device)).float().cpu())
    return torch.cat(out) if out else torch.empty(0, getattr(model, "emb_dim", 0))


@torch.no_grad()
def evaluate(model: nn.Module, head: nn.Module, x: torch.Tensor, y: torch.Tensor,
             device: torch.device | str | None = None, amp: bool | None = None) -> dict[str, float]:
    """Test loss, plain cross-entropy and accuracy.

    `test_loss` is the head's own objective (with its margin, SphereFace's current λ, the center
    term): it grows with m and s by construction, so it cannot compare heads or settings. `test_ce` is
    the cross-entropy of the margin-free logits `head.logits` — use it (or `test_acc`) to compare.
    """
    emb = embed(model, x, device=device, amp=amp)
    head_dev = next(head.parameters(), torch.empty(0)).device
    emb, y = emb.to(head_dev), y.to(head_dev)
    head.eval()
    logits = head.logits(emb)
    return {"test_loss": head(emb, y).mean().item(),
            "test_ce": F.cross_entropy(logits, y).item(),
            "test_acc": (logits.argmax(1) == y).float().mean().item()}


@torch.no_grad()
def predict(model: nn.Module, head: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeddings, class probabilities) for `x`, on the CPU."""
    emb = embed(model, x)
    dev = next(head.parameters(), torch.empty(0)).device
    return emb, head.eval().logits(emb.to(dev)).softmax(1).cpu()


# ----------------------------------------------------------------------------- cached training
@dataclass
class Trained:
    """A trained embedding network, its head, the history, and the cache key it was stored under."""
    model: nn.Module
    head: nn.Module
    history: pd.DataFrame
    key: str
    config: dict
    from_cache: bool = False


TRAINING_CODE = ("models.py", "cnn.py", "heads.py", "losses.py", "pair_losses.py", "mixup.py", "augment.py", "train.py")


def training_code(arch: str, head: str) -> tuple[str, ...]:
    """The `utils` modules a trained network depends on: `TRAINING_CODE`, plus the module that defines the
    architecture or the head when another module registered it (e.g. a head added by `app.recognizer`), so
    that editing that module retrains too."""
    import inspect

    here, names = Path(__file__).resolve().parent, list(TRAINING_CODE)
    for obj in (models.ARCHS.get(arch), losses._REGISTRY.get(head)):
        src = Path(inspect.getsourcefile(obj)).resolve() if obj is not None else None
        if src is not None and src.parent == here and src.name not in names:
            names.append(src.name)
    return tuple(names)


def class_code(cls: type) -> str:
    """A hash of what a class's methods do (`code_text` of each one's source: docstrings and comments left out),
    also for a class defined in a notebook cell, whose source file is the cell."""
    import inspect
    import textwrap

    h = hashlib.sha1(cls.__qualname__.encode())
    for name, member in sorted(vars(cls).items()):
        func = getattr(member, "__func__", getattr(member, "fget", member))
        if inspect.isfunction(func):
            h.update(name.encode() + code_text(textwrap.dedent(inspect.getsource(func))).encode())
        elif not name.startswith("__"):
            h.update(name.encode() + repr(member).encode())
    for base in cls.__bases__:
        if base.__module__ not in ("builtins", "torch.nn.modules.module"):
            h.update(class_code(base).encode())
    return h.hexdigest()[:12]


def data_fingerprint(x: torch.Tensor, y: torch.Tensor) -> str:
    """Content hash of a training set (images and labels)."""
    h = hashlib.sha1()
    h.update(x.contiguous().cpu().numpy().tobytes())
    h.update(y.contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def train(data: ImageData, head: str | type[nn.Module] = "softmax", *, arch: str = "cnn", emb_dim: int = 64,
          hparams: dict | None = None, epochs: int = 15, bs: int = 128, lr: float = 3e-3,
          wd: float = 1e-2, augment: int = 0, affine: dict | None = None, noise: float = 0.0,
          mixup: float = 0.0, pk: tuple[int, int] | None = None, seed: int = 0, arch_kw: dict | None = None,
          validate: bool = True, cache: bool = True, progress: bool | None = None) -> Trained:
    """Seed, build `arch` + `head`, fit on `data`'s train split (test split as validation), cache.

    `head` is a name of `losses.make` or a head class (e.g. one edited in a notebook cell, keyed by its own code);
    `pk=(P, K)`: class-balanced batches. The cache key covers every argument, the data and the training code
    (utils/README.md)."""
    hparams, arch_kw = dict(hparams or {}), dict(arch_kw or {})
    head_class, head = (None, head) if isinstance(head, str) else (head, head.__name__)
    sampler = PKSampler(*pk) if pk is not None else None
    bs = pk[0] * pk[1] if pk is not None else bs
    config = dict(arch=arch, arch_kw=arch_kw, emb_dim=emb_dim, head=head, hparams=hparams,
                  epochs=epochs, bs=bs, lr=lr, wd=wd, augment=augment, mixup=mixup, seed=seed,
                  data=data_fingerprint(data.x_train, data.y_train),
                  affine=affine, noise=float(noise), pk=list(pk) if pk is not None else None,
                  test=data_fingerprint(data.x_test, data.y_test), code=source_hash(training_code(arch, head)) + (class_code(head_class) if head_class else ""))
    key = cache_key(config)
    path = cache_dir() / "models" / f"{arch}-{head}-{key}.pt"
    seed_everything(seed)
    net = models.make_model(arch, in_channels=data.x_train.shape[1], emb_dim=emb_dim, **arch_kw)
    if head_class is None:
        hd = losses.make(head, emb_dim=emb_dim, n_classes=len(data.classes), **hparams)
    else:
        hd = head_class(emb_dim=emb_dim, n_classes=len(data.classes), **hparams)
    if cache and path.is_file():
        state = torch.load(path, weights_only=True, map_location="cpu")
        net.load_state_dict(state["model"])
        hd.load_state_dict(state["head"])
        device = default_device()
        return Trained(net.to(device), hd.to(device), pd.DataFrame(state["history"]), key, config, True)
    hist = fit(net, hd, data.x_train, data.y_train, epochs=epochs, bs=bs, lr=lr, wd=wd,
               augment=augment, affine=affine, noise=noise, mixup=mixup, sampler=sampler,
               valid=(data.x_test, data.y_test) if validate else None, seed=seed, progress=progress)
    if cache:
        atomic_save({"model": net.state_dict(), "head": hd.state_dict(),
                     "history": hist.to_dict("list"), "config": config}, path)
    return Trained(net, hd, hist, key, config, False)


def compare(data: ImageData, heads: dict[str, tuple[str, dict]], seeds: list[int],
            progress: bool = False, **train_kw) -> pd.DataFrame:
    """Train every `label: (head, hparams)` on every seed (cached); one row per run."""
    rows = []
    for label, (head, hparams) in heads.items():
        for seed in seeds:
            r = train(data, head, hparams=hparams, seed=seed, progress=progress, **train_kw)
            last = r.history.iloc[-1]
            rows.append({"method": label, "head": losses.name_of(r.head), "seed": seed, "test_acc": float(last["test_acc"]),
                         "test_ce": float(last["test_ce"]), "test_loss": float(last["test_loss"]), "train_seconds": float(r.history["seconds"].sum()),
                         "from_cache": r.from_cache})
    return pd.DataFrame(rows)


def summarize(runs: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """Mean, std and count of `metric` per method, in the order the methods first appear."""
    return runs.groupby("method", sort=False)[metric].agg(["mean", "std", "count"])
