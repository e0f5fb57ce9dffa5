"""Loss heads: one small `nn.Module` per method, all with the same interface.

    head = make("l2softmax", emb_dim=64, n_classes=10, alpha=16)
    loss = head(embeddings, labels)     # scalar ("mean") or per-sample ("none", used by mixup)
    logits = head.logits(embeddings)    # for prediction (no margin)

A head owns its parameters (class weights `.weight` of shape (n_classes, emb_dim) where the method
has them) and says how they are optimized through `param_groups(lr)` — center loss, for one, updates
its centers at a rate of its own. `step()` is called once per optimizer step (margin schedules).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

_REGISTRY: dict[str, type["Head"]] = {}
NAMES: list[str] = []


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make a head available as `make(name, …)`."""
    def wrap(cls: type) -> type:
        cls.name = name
        _REGISTRY[name] = cls
        NAMES.append(name)
        return cls
    return wrap


def make(name: str, emb_dim: int, n_classes: int, **hparams) -> "Head":
    """Build the head called `name` (one of `NAMES`) with its hyperparameters."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown loss head {name!r}: choose one of {NAMES}")
    return _REGISTRY[name](emb_dim=emb_dim, n_classes=n_classes, **hparams)


class Head(nn.Module):
    """Base class: subclasses implement `logits(x)` and, if the loss is not plain
    cross-entropy on those logits, `train_logits(x, y)` (margins) or `forward`."""

    name = "head"

    def __init__(self, emb_dim: int, n_classes: int, reduction: str = "mean"):
        super().__init__()
        self.emb_dim, self.n_classes, self.reduction = emb_dim, n_classes, reduction

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def train_logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Logits the loss is computed on (with the margin applied to the target class)."""
        return self.logits(x)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(self.train_logits(x.float(), y), y, reduction="none")
        return self.reduce(loss)

    def reduce(self, per_sample: torch.Tensor) -> torch.Tensor:
        if self.reduction == "none":
            return per_sample
        if self.reduction == "mean":
            return per_sample.mean()
        raise ValueError(f"reduction must be 'mean' or 'none', not {self.reduction!r}")

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer parameter groups for this head (default: all parameters at the model's lr)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr}] if params else []

    def step(self) -> None:
        """Called after each optimizer step (annealing schedules); nothing by default."""

    def extra_repr(self) -> str:
        return f"emb_dim={self.emb_dim}, n_classes={self.n_classes}, reduction={self.reduction!r}"


@register("softmax")
class SoftmaxHead(Head):
    """Plain softmax: logits = W x + b, loss = cross-entropy. The baseline."""

    def __init__(self, emb_dim: int, n_classes: int, bias: bool = True, reduction: str = "mean"):
        super().__init__(emb_dim, n_classes, reduction)
        layer = nn.Linear(emb_dim, n_classes, bias=bias)
        self.weight, self.bias = layer.weight, layer.bias

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.float(), self.weight, self.bias)


@register("l2softmax")
class L2SoftmaxHead(SoftmaxHead):
    """L2-constrained softmax (Ranjan et al. 2017): logits = W (alpha · x / ‖x‖) + b.

    Every embedding is projected onto the sphere of radius `alpha` before the linear classifier,
    so easy and hard samples get the same norm. `learn_alpha=True` makes alpha a parameter
    (initialized at `alpha`). The paper's lower bound for a target probability p with C classes
    is `alpha_low(p, C)`.
    """

    def __init__(self, emb_dim: int, n_classes: int, alpha: float = 16.0, learn_alpha: bool = False,
                 bias: bool = True, reduction: str = "mean"):
        super().__init__(emb_dim, n_classes, bias=bias, reduction=reduction)
        a = torch.tensor(float(alpha))
        if learn_alpha:
            self.alpha = nn.Parameter(a)
        else:
            self.register_buffer("alpha", a)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """alpha · x / ‖x‖, per sample."""
        return self.alpha * F.normalize(x.float(), dim=1, eps=1e-12)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.scale(x), self.weight, self.bias)

    def extra_repr(self) -> str:
        kind = "learned" if isinstance(self.alpha, nn.Parameter) else "fixed"
        return super().extra_repr() + f", alpha={float(self.alpha):.3g} ({kind})"


def alpha_low(p: float, n_classes: int) -> float:
    """Ranjan et al.'s lower bound on alpha for mean class probability p: log(p (C−2) / (1−p))."""
    if not 0 < p < 1 or n_classes < 3:
        raise ValueError("need 0 < p < 1 and at least 3 classes")
    return math.log(p * (n_classes - 2) / (1 - p))
