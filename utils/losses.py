"""Loss heads: one small `nn.Module` per method, all with the same interface.

    head = make("l2softmax", emb_dim=64, n_classes=10, alpha=16)
    loss = head(embeddings, labels)     # scalar ("mean") or per-sample ("none", used by mixup)
    logits = head.logits(embeddings)    # for prediction (no margin)

A head owns its parameters (class weights `.weight` of shape (n_classes, emb_dim) where the method
has them); `utils.train.fit` optimizes all of them by one rule (matrices decayed, vectors and scalars
not). `begin(total_steps)` is called once before training and `step()` after every optimizer step:
SphereFace anneals its λ over the run, center loss moves its centers by the paper's own rule.
Every head computes its logits in float32, also inside a mixed-precision (autocast) region.

`NAMES` lists the classification heads (they have class weights and `logits`); `PAIR_NAMES` the pair
and triplet heads (contrastive, triplet, siamese, proto), which learn an embedding only: their
`has_logits` is False and their `logits` raises a TypeError. `RECONSTRUCTION_NAMES` holds the one
objective that compares a network's output with its *input* (`reconstruction`, for the autoencoders of
`utils.models`): its `uses_inputs` is True, and `fit` calls it as `head(output, labels, inputs=images)`.
`make` builds every kind.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import pairs

_REGISTRY: dict[str, type["Head"]] = {}
NAMES: list[str] = []       # classification heads: class weights and logits
PAIR_NAMES: list[str] = []  # pair and triplet heads: an embedding only (has_logits = False)
RECONSTRUCTION_NAMES: list[str] = []  # objectives on the inputs themselves (uses_inputs = True)


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make a head available as `make(name, …)` (listed in `NAMES`; in
    `RECONSTRUCTION_NAMES` when it uses the inputs; else in `PAIR_NAMES` when it has no logits)."""
    def wrap(cls: type) -> type:
        cls.name = name
        _REGISTRY[name] = cls
        (NAMES if cls.has_logits else RECONSTRUCTION_NAMES if cls.uses_inputs else PAIR_NAMES).append(name)
        return cls
    return wrap


def make(name: str, emb_dim: int, n_classes: int, **hparams) -> "Head":
    """Build the head called `name` (one of `NAMES` or `PAIR_NAMES`) with its hyperparameters."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown loss head {name!r}: choose one of {NAMES + PAIR_NAMES + RECONSTRUCTION_NAMES}")
    return _REGISTRY[name](emb_dim=emb_dim, n_classes=n_classes, **hparams)


class Head(nn.Module):
    """Base class: subclasses implement `logits(x)` and, if the loss is not plain
    cross-entropy on those logits, `train_logits(x, y)` (margins) or `forward`."""

    name = "head"
    has_logits = True  # False for the pair/triplet heads, which learn an embedding only
    uses_inputs = False  # True: `fit` passes the (clean) input images too, as `inputs=`

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

    def begin(self, total_steps: int) -> None:
        """Called by `fit` before training with the number of optimizer steps to come; nothing by default."""

    def step(self) -> None:
        """Called after each optimizer step (annealing schedules, center updates); nothing by default."""

    def extra_repr(self) -> str:
        return f"emb_dim={self.emb_dim}, n_classes={self.n_classes}, reduction={self.reduction!r}"


def _linear32(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear in float32, also inside a bf16/fp16 autocast region (margins need the precision)."""
    with torch.autocast(x.device.type, enabled=False):
        return F.linear(x.float(), weight.float(), None if bias is None else bias.float())


@register("softmax")
class SoftmaxHead(Head):
    """Plain softmax: logits = W x + b, loss = cross-entropy. The baseline."""

    def __init__(self, emb_dim: int, n_classes: int, bias: bool = True, reduction: str = "mean"):
        super().__init__(emb_dim, n_classes, reduction)
        layer = nn.Linear(emb_dim, n_classes, bias=bias)
        self.weight, self.bias = layer.weight, layer.bias

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return _linear32(x, self.weight, self.bias)


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
        return _linear32(self.scale(x), self.weight, self.bias)

    def extra_repr(self) -> str:
        kind = "learned" if isinstance(self.alpha, nn.Parameter) else "fixed"
        return super().extra_repr() + f", alpha={float(self.alpha.detach()):.3g} ({kind})"


def alpha_low(p: float, n_classes: int) -> float:
    """Ranjan et al.'s lower bound on alpha for mean class probability p: log(p (C−2) / (1−p))."""
    if not 0 < p < 1 or n_classes < 3:
        raise ValueError("need 0 < p < 1 and at least 3 classes")
    return math.log(p * (n_classes - 2) / (1 - p))


# ----------------------------------------------------------------------------- angular-margin heads
_EPS = 1e-6  # cos θ is clamped to [−1+eps, 1−eps] before acos / sqrt(1 − cos²): finite gradients at θ = 0, π


class _CosineHead(Head):
    """Base of the angular heads: class weights `.weight` (n_classes, emb_dim), no bias, and
    `cosine(x)` = cos θ_j between each embedding and each class weight (both normalized)."""

    def __init__(self, emb_dim: int, n_classes: int, reduction: str = "mean"):
        super().__init__(emb_dim, n_classes, reduction)
        self.weight = nn.Parameter(torch.randn(n_classes, emb_dim) / math.sqrt(emb_dim))

    def cosine(self, x: torch.Tensor) -> torch.Tensor:
        return _linear32(F.normalize(x.float(), dim=1), F.normalize(self.weight.float(), dim=1))

    @staticmethod
    def with_target(cos: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """`cos` with each row's entry for class y replaced by `target` (shape (B,))."""
        return cos.scatter(1, y[:, None], target[:, None])


@register("arcface")
class ArcFaceHead(_CosineHead):
    """ArcFace, additive angular margin (Deng et al. 2018).

    Weights and embeddings are normalized, cos θ_j = ŵ_j · x̂, and the target angle gets a margin m:

        L = −log e^{s·cos(θ_y + m)} / (e^{s·cos(θ_y + m)} + Σ_{j≠y} e^{s·cos θ_j})

    Past θ_y = π − m, cos(θ_y + m) would rise again, so there the target logit is s·(cos θ_y − m·sin m)
    instead, which keeps it decreasing in θ_y (insightface's easy_margin=False: th = cos(π − m),
    mm = sin(π − m)·m). The two branches do not meet: at θ_y = π − m the target cosine jumps from
    cos π = −1 to −cos m − m·sin m, i.e. by 1 − cos m − m·sin m (−0.044 at m = 0.3, where θ_y = 162.8°;
    −0.117 at m = 0.5, at 151.4°), exactly as in insightface. `logits(x)` = s·cos θ (no margin).

    Defaults s=16, m=0.3 train on MNIST-size problems (10 classes, small networks); the paper uses
    s=64, m=0.5 for face recognition with thousands of identities.
    """

    def __init__(self, emb_dim: int, n_classes: int, s: float = 16.0, m: float = 0.3,
                 reduction: str = "mean"):
        super().__init__(emb_dim, n_classes, reduction)
        self.s, self.m = float(s), float(m)
        self.th, self.mm = math.cos(math.pi - m), math.sin(math.pi - m) * m

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.s * self.cosine(x)

    def train_logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(x)
        c = cos.gather(1, y[:, None]).squeeze(1)
        cc = c.clamp(-1 + _EPS, 1 - _EPS)
        cos_theta_m = cc * math.cos(self.m) - torch.sqrt(1 - cc * cc) * math.sin(self.m)  # cos(θ + m)
        target = torch.where(c > self.th, cos_theta_m, c - self.mm)
        return self.s * self.with_target(cos, y, target)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", s={self.s:g}, m={self.m:g}"


@register("cosface")
class CosFaceHead(_CosineHead):
    """CosFace / AM-softmax, additive cosine margin (Wang et al. 2018).

    Weights and embeddings are normalized; the target cosine is lowered by m:

        L = −log e^{s·(cos θ_y − m)} / (e^{s·(cos θ_y − m)} + Σ_{j≠y} e^{s·cos θ_j})

    m=0.35 is the paper's default; s=16 suits MNIST-size problems (the paper uses s=64 for faces).
    `logits(x)` = s·cos θ (no margin).
    """

    def __init__(self, emb_dim: int, n_classes: int, s: float = 16.0, m: float = 0.35,
                 reduction: str = "mean"):
        super().__init__(emb_dim, n_classes, reduction)
        self.s, self.m = float(s), float(m)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.s * self.cosine(x)

    def train_logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(x)
        return self.s * (cos - self.m * F.one_hot(y, self.n_classes).to(cos.dtype))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", s={self.s:g}, m={self.m:g}"


@register("sphereface")
class SphereFaceHead(_CosineHead):
    """SphereFace / A-Softmax, multiplicative angular margin (Liu et al. 2017).

    Class weights are normalized (no bias), embeddings are not: logits are ‖x‖·cos θ_j, except the
    target class's, which is ‖x‖·ψ(θ_y) with an integer margin m (4 in the paper):

        ψ(θ) = (−1)^k · cos(mθ) − 2k,   k = floor(mθ / π)   (θ ∈ [kπ/m, (k+1)π/m])

    ψ extends cos(mθ) to a decreasing function on [0, π]. Training on ψ from the start is hard, so the
    paper blends in the plain cosine logit and anneals it away:

        f_y = (λ·‖x‖·cos θ_y + ‖x‖·ψ(θ_y)) / (1 + λ),   λ = max(λ_min, λ_base·(1 + γ·iter)^(−power))

    `iter` is the number of the optimizer step being taken (1 on the first, as in the official layer,
    which increments before computing λ: its first λ is 1000 / 1.12 = 892.9). Two schedules:

    - `schedule="fraction"` (default): γ is set by `begin(total_steps)` so that λ reaches λ_min after
      `floor_at` of the run (half of it by default), whatever the number of steps. The official γ was
      tuned for tens of thousands of steps; on a run of a few hundred it would leave λ at 40–80, where
      ψ carries 1–2 % of the target logit and the margin never arrives.
    - `schedule="official"`: the official constants per step (λ_base=1000, γ=0.12, power=1, λ_min=5),
      which reach λ_min after 1,659 steps.

    Before `begin` is called (a head used outside `fit`), the fraction schedule behaves like the
    official one. λ_base=0 and λ_min=0 give ψ alone (no blend). cos(mθ) is the Chebyshev polynomial
    T_m(cos θ), so the gradient is finite at every θ; only the piecewise-constant k uses acos (of a
    clamped cosine). `logits(x)` = ‖x‖·cos θ (no margin).
    """

    SCHEDULES = ("fraction", "official")

    def __init__(self, emb_dim: int, n_classes: int, m: int = 4, lambda_base: float = 1000.0,
                 gamma: float = 0.12, power: float = 1.0, lambda_min: float = 5.0,
                 schedule: str = "fraction", floor_at: float = 0.5, reduction: str = "mean"):
        super().__init__(emb_dim, n_classes, reduction)
        if int(m) != m or m < 1:
            raise ValueError(f"sphereface needs a positive integer margin m, not {m!r}")
        if schedule not in self.SCHEDULES:
            raise ValueError(f"unknown λ schedule {schedule!r}: choose one of {list(self.SCHEDULES)}")
        if not 0 < floor_at <= 1:
            raise ValueError(f"floor_at is a fraction of the run in (0, 1], got {floor_at!r}")
        self.m, self.lambda_base, self.gamma = int(m), float(lambda_base), float(gamma)
        self.power, self.lambda_min = float(power), float(lambda_min)
        self.schedule, self.floor_at = schedule, float(floor_at)
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    def begin(self, total_steps: int) -> None:
        """Fraction schedule: choose γ so that λ(floor_at · total_steps) = λ_min exactly."""
        if self.schedule != "fraction" or self.lambda_base <= self.lambda_min or self.lambda_min <= 0:
            return
        reach = max(1.0, self.floor_at * total_steps)
        self.gamma = ((self.lambda_base / self.lambda_min) ** (1 / self.power) - 1) / reach

    def current_lambda(self) -> torch.Tensor:
        """λ for the next optimizer step: max(λ_min, λ_base·(1 + γ·(iteration + 1))^(−power)) (0-d tensor)."""
        it = self.iteration.float() + 1
        lam = self.lambda_base * (1 + self.gamma * it) ** (-self.power)
        return lam.clamp_min(self.lambda_min)

    def psi(self, cos: torch.Tensor) -> torch.Tensor:
        """ψ(θ) = (−1)^k cos(mθ) − 2k, from cos θ."""
        with torch.no_grad():
            k = torch.floor(self.m * torch.acos(cos.clamp(-1 + _EPS, 1 - _EPS)) / math.pi)
        t_prev, t = torch.ones_like(cos), cos  # Chebyshev: T_0, T_1; T_{n+1} = 2c·T_n − T_{n−1}
        for _ in range(self.m - 1):
            t_prev, t = t, 2 * cos * t - t_prev
        return (1 - 2 * (k % 2)) * t - 2 * k

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x.norm(dim=1, keepdim=True) * self.cosine(x)

    def train_logits(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.float()
        cos = self.cosine(x)
        c = cos.gather(1, y[:, None]).squeeze(1)
        lam = self.current_lambda()
        target = (lam * c + self.psi(c)) / (1 + lam)
        return x.norm(dim=1, keepdim=True) * self.with_target(cos, y, target)

    def step(self) -> None:
        if self.training:
            self.iteration += 1

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", m={self.m}, schedule={self.schedule!r}, lambda_base={self.lambda_base:g}, "
                f"gamma={self.gamma:.4g}, power={self.power:g}, lambda_min={self.lambda_min:g}"
                + (f", floor_at={self.floor_at:g}" if self.schedule == "fraction" else ""))


@register("center")
class CenterLossHead(SoftmaxHead):
    """Center loss (Wen et al. 2016): softmax plus a pull of each embedding towards its class center.

        L_i = −log softmax(W x_i + b)_{y_i} + λ · ½‖x_i − c_{y_i}‖²     (reduction='mean': mean over i)

    `lam` is λ. The centers `self.centers` (n_classes, emb_dim, starting at 0) are a buffer, not a
    parameter: they move by the paper's own rule (its Algorithm 1), once per optimizer step, from the
    batch's embeddings (taken before the step):

        c_j ← c_j − α·Δc_j,   Δc_j = Σ_{i: y_i = j} (c_j − x_i) / (1 + n_j)

    where n_j counts the batch's samples of class j; classes absent from the batch stay put. α (`alpha`,
    0.5 in the paper) is a fraction of the way to the batch mean, so it does not depend on the
    embedding's scale or on the optimizer. The embedding receives the usual gradient λ·(x_i − c_{y_i}).
    `logits(x)` = W x + b. With mixup the centers follow the dominant image's label.
    """

    def __init__(self, emb_dim: int, n_classes: int, lam: float = 0.01, alpha: float = 0.5,
                 reduction: str = "mean"):
        super().__init__(emb_dim, n_classes, bias=True, reduction=reduction)
        if not 0 <= alpha <= 1:
            raise ValueError(f"the center rate alpha is a fraction in [0, 1], got {alpha!r}")
        self.lam, self.alpha = float(lam), float(alpha)
        self.register_buffer("centers", torch.zeros(n_classes, emb_dim))
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.training and torch.is_grad_enabled() and self._batch is None:
            self._batch = (x.detach(), y.detach())  # for the center update after this step
        ce = F.cross_entropy(self.logits(x), y, reduction="none")
        pull = 0.5 * (x - self.centers[y]).pow(2).sum(1)
        return self.reduce(ce + self.lam * pull)

    @torch.no_grad()
    def update_centers(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One step of Wen et al.'s center update from a batch of embeddings `x` with labels `y`."""
        x = x.to(self.centers.dtype)
        n = torch.bincount(y, minlength=self.n_classes).to(x.dtype)                      # n_j
        diff = torch.zeros_like(self.centers).index_add_(0, y, self.centers[y] - x)      # Σ (c_j − x_i)
        self.centers -= self.alpha * diff / (1 + n)[:, None]

    def step(self) -> None:
        if self._batch is not None:
            self.update_centers(*self._batch)
        self._batch = None

    def extra_repr(self) -> str:
        return super().extra_repr() + f", lam={self.lam:g}, alpha={self.alpha:g}"


# The six methods the notebooks compare: display name -> (head name, hyperparameters).
METHODS: dict[str, tuple[str, dict]] = {
    "softmax": ("softmax", {}),
    "L2-softmax": ("l2softmax", {"alpha": 16.0}),
    "ArcFace": ("arcface", {}),
    "CosFace": ("cosface", {}),
    "SphereFace": ("sphereface", {}),
    "center loss": ("center", {}),
}


# ----------------------------------------------------------------------------- pair and triplet heads
class PairHead(Head):
    """Base of the heads that learn from pairs or triplets of the batch: no class weights, no logits.

    Their loss compares the embeddings of a batch with each other (`utils.pairs`), so a batch must
    hold several images per class (`utils.pairs.PKSampler`). They learn an embedding only: classify
    or retrieve with nearest neighbours / distances between embeddings. `n_classes` is accepted (so
    `make` builds every head alike) and unused. A pair loss does not split into one loss per sample,
    so `reduction` must be "mean" and mixup (which needs per-sample losses) is not supported.
    """

    has_logits = False

    def __init__(self, emb_dim: int, n_classes: int | None = None, reduction: str = "mean"):
        super().__init__(emb_dim, n_classes, reduction)
        self._check_reduction()

    def _check_reduction(self) -> None:
        if self.reduction != "mean":
            raise ValueError(
                f"the {self.name!r} head learns from pairs/triplets of the batch and has no per-sample "
                f"loss: reduction must be 'mean', not {self.reduction!r} (mixup is not supported for "
                f"pair and triplet heads)")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError(
            f"the {self.name!r} head is a pair/triplet loss: it learns an embedding only and has no "
            f"classes and no logits. Compare embeddings instead (nearest neighbours, distances).")

    def extra_repr(self) -> str:
        return f"emb_dim={self.emb_dim}"


AVERAGES = ("all", "nonzero")   # a pair/triplet loss: mean over all its terms (the papers), or over the non-zero ones (PML)


def _mean_nonzero(losses: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the entries of `losses` (≥ 0; those selected by `mask`) that are > 0; 0 if none are.

    pytorch-metric-learning's AvgNonZeroReducer: easy pairs/triplets (loss 0) do not dilute the mean.
    Computed as sum / max(1, count), without indexing, so there is no GPU sync and the graph (and the
    zero gradient) survives an all-zero batch."""
    chosen = losses if mask is None else torch.where(mask, losses, torch.zeros_like(losses))
    return chosen.sum() / (chosen > 0).sum().clamp_min(1)


@register("contrastive")
class ContrastiveHead(PairHead):
    """Contrastive loss (Hadsell, Chopra & LeCun 2006) on every pair of the batch.

    With d the Euclidean distance between the (by default L2-normalized) embeddings, the paper's
    loss (the default, `squared=True, average="all"`) is, over the batch's pairs,

        same label:       L = ½ [d − m_pos]₊²       pulled together (Hadsell et al.: m_pos = 0, ½ d²)
        different labels: L = ½ [m_neg − d]₊²       pushed apart until m_neg

        loss = mean of L over all pairs (the paper's sum over pairs, divided by their number)

    `squared=False, average="nonzero"` is pytorch-metric-learning's `ContrastiveLoss()` exactly:
    unsquared hinges [d − m_pos]₊ and [m_neg − d]₊, and its AvgNonZeroReducer — each kind of pair
    averaged over its pairs with a non-zero loss only (a kind with none gives 0), the two summed.
    """

    def __init__(self, emb_dim: int, n_classes: int | None = None, pos_margin: float = 0.0,
                 neg_margin: float = 1.0, normalize: bool = True, squared: bool = True,
                 average: str = "all", reduction: str = "mean"):
        super().__init__(emb_dim, n_classes, reduction)
        if average not in AVERAGES:
            raise ValueError(f"unknown average {average!r}: choose one of {list(AVERAGES)}")
        self.pos_margin, self.neg_margin = float(pos_margin), float(neg_margin)
        self.normalize, self.squared, self.average = bool(normalize), bool(squared), average

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._check_reduction()
        d = pairs.distances(x.float(), self.normalize)
        pos, neg = pairs.pair_masks(y)
        pull, push = F.relu(d - self.pos_margin), F.relu(self.neg_margin - d)
        if self.squared:
            pull, push = 0.5 * pull ** 2, 0.5 * push ** 2
        if self.average == "all":
            per_pair = torch.where(pos, pull, torch.zeros_like(pull)) + torch.where(neg, push, torch.zeros_like(push))
            return per_pair.sum() / (pos | neg).sum().clamp_min(1)
        return _mean_nonzero(pull, pos) + _mean_nonzero(push, neg)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", pos_margin={self.pos_margin:g}, neg_margin={self.neg_margin:g}, "
                f"normalize={self.normalize}, squared={self.squared}, average={self.average!r}")


@register("triplet")
class TripletHead(PairHead):
    """Triplet loss (Schroff, Kalenichenko & Philbin 2015, FaceNet) on triplets mined from the batch.

    An anchor a, a positive p (same label) and a negative n (another label): the negative should be
    farther from the anchor than the positive by at least the margin α. FaceNet's form (the default,
    `squared=True, average="all"`) uses squared distances between L2-normalized embeddings (its unit
    hypersphere, α = 0.2) and the mean over the mined triplets:

        L(a, p, n) = [‖a − p‖² − ‖a − n‖² + α]₊

    `squared=False` uses distances, [d_ap − d_an + α]₊ (Hermans et al.'s batch hard), and
    `squared=False, average="nonzero"` is pytorch-metric-learning's `TripletMarginLoss(margin)`
    exactly (its AvgNonZeroReducer: the mean over the triplets with a non-zero loss, 0 if none).
    `mining` picks the triplets (`utils.pairs.MINERS`), comparing the same (squared or not) distances:

    - "all": every valid triplet of the batch (O(B³), mostly easy ones);
    - "semi_hard" (default): d_ap < d_an ≤ d_ap + α, FaceNet's semi-hard condition. FaceNet chose one such
      negative per anchor-positive pair; this keeps every semi-hard triplet (PML's
      `TripletMarginMiner("semihard")`);
    - "hard": d_an ≤ d_ap;
    - "batch_hard": per anchor its farthest positive and nearest negative (Hermans, Beyer & Leibe
      2017), with `squared=False` as they used it (on squared distances batch hard tends to collapse
      every embedding to one point). Cheap (one triplet per anchor, O(B²)), it keeps learning when
      almost all triplets are already easy, and it needs no huge batch: FaceNet's semi-hard mining
      relied on batches of ~1,800 images, while batch hard with P×K batches (`PKSampler`) works at
      B = 128.

    For teaching, every forward in training mode records (as tensors, adding no GPU sync) the
    fraction of ALL valid triplets of the batch with a non-zero loss, the fraction of the mined ones,
    and the counts; `stats` returns them as a DataFrame, one row per training step (reset by `begin`).
    """

    def __init__(self, emb_dim: int, n_classes: int | None = None, margin: float = 0.2,
                 mining: str = "semi_hard", normalize: bool = True, squared: bool = True,
                 average: str = "all", reduction: str = "mean"):
        super().__init__(emb_dim, n_classes, reduction)
        if mining not in pairs.MINERS:
            raise ValueError(f"unknown triplet mining {mining!r}: choose one of {list(pairs.MINERS)}")
        if average not in AVERAGES:
            raise ValueError(f"unknown average {average!r}: choose one of {list(AVERAGES)}")
        self.margin, self.mining, self.normalize = float(margin), mining, bool(normalize)
        self.squared, self.average = bool(squared), average
        self._stats: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._check_reduction()
        d = pairs.distances(x.float(), self.normalize)
        if self.squared:
            d = d ** 2
        a, p, n = pairs.mine(self.mining, d.detach(), y, self.margin)
        per_triplet = F.relu(d[a, p] - d[a, n] + self.margin)
        if self.training:
            self._record(d.detach(), y, per_triplet.detach())
        if self.average == "all":
            return per_triplet.sum() / max(len(per_triplet), 1)
        return _mean_nonzero(per_triplet)

    @torch.no_grad()
    def _record(self, d: torch.Tensor, y: torch.Tensor, per_triplet: torch.Tensor) -> None:
        active_all, n_all = pairs.active_fraction(d, y, self.margin)
        n_mined = torch.tensor(float(len(per_triplet)), device=d.device)
        active_mined = (per_triplet > 0).sum() / n_mined if len(per_triplet) else torch.full_like(n_mined, math.nan)
        self._stats.append(torch.stack([active_all.float(), active_mined.float(), n_mined, n_all.float()]))

    STAT_COLUMNS = ("active_all", "active_mined", "n_mined", "n_all")

    @property
    def stats(self) -> "pd.DataFrame":
        """pandas DataFrame, one row per training-mode forward since `begin` (index `step`, from 1):
        `active_all` = fraction of all valid triplets of the batch with a non-zero loss, `active_mined`
        = the same among the mined triplets (NaN when none were mined), `n_mined`, `n_all` = counts."""
        import pandas as pd

        rows = torch.stack(self._stats) if self._stats else torch.empty(0, len(self.STAT_COLUMNS))
        df = pd.DataFrame(rows.cpu().numpy(), columns=list(self.STAT_COLUMNS))
        df.index = pd.RangeIndex(1, len(df) + 1, name="step")
        return df.astype({"n_mined": "int64", "n_all": "int64"})

    def begin(self, total_steps: int) -> None:
        """Start a fresh record of the triplet statistics."""
        self._stats = []

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", margin={self.margin:g}, mining={self.mining!r}, "
                f"normalize={self.normalize}, squared={self.squared}, average={self.average!r}")


@register("siamese")
class SiameseHead(PairHead):
    """Siamese network (Koch, Zemel & Salakhutdinov 2015): a learned verdict "same class?" for a pair.

    The twin networks are the embedding model applied to both images. As in the paper, its output
    goes through a sigmoid (h = σ(f(x)), Koch's sigmoid features), and the head weighs the
    component-wise L1 distance of the two feature vectors with learned α_j and a bias b:

        p(same | x1, x2) = σ(Σ_j α_j |h1_j − h2_j| + b)

    trained with binary cross-entropy on balanced same/different pairs: every same-class pair i < j
    of the batch and as many different-class pairs drawn at random (Koch et al. sampled balanced
    pairs from the whole training set; here they are drawn inside P×K batches, `PKSampler`). α and b
    are `self.alpha` (an `nn.Linear(emb_dim, 1)`). At test time `same_probability` scores pairs:
    one-shot classification picks the support image with the highest p(same). The rest of the
    paper's recipe (its 4-conv network with a 4,096-d layer, SGD with per-layer rates, 150,000 pairs ×
    8 affine distortions) is the training set-up, not the head.
    """

    def __init__(self, emb_dim: int, n_classes: int | None = None, reduction: str = "mean"):
        super().__init__(emb_dim, n_classes, reduction)
        self.alpha = nn.Linear(emb_dim, 1)

    def pair_logits(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Σ_j α_j |σ(x1_j) − σ(x2_j)| + b over the last dimension (x1, x2 broadcast), in float32."""
        diff = (torch.sigmoid(x1.float()) - torch.sigmoid(x2.float())).abs()
        return _linear32(diff, self.alpha.weight, self.alpha.bias).squeeze(-1)

    def same_probability(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """p(same class) for pairs of network outputs, by broadcasting over the leading dimensions:
        x1, x2 of shape (N, D) give N probabilities; (N, 1, D) and (1, M, D) give an N×M table."""
        return torch.sigmoid(self.pair_logits(x1, x2))

    def balanced_pairs(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Indices i, j and target same (0/1) of every same-class pair i < j of the batch and as many
        different-class pairs drawn at random (one, when the batch has no same-class pair)."""
        i, j = torch.triu_indices(len(y), len(y), offset=1, device=y.device)
        same = y[i] == y[j]
        rank = torch.rand(len(i), device=y.device).masked_fill(same, 2.0).argsort().argsort()
        keep = same | (rank < same.sum().clamp_min(1))
        return i[keep], j[keep], same[keep].float()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._check_reduction()
        i, j, same = self.balanced_pairs(y)
        return F.binary_cross_entropy_with_logits(self.pair_logits(x[i], x[j]), same)


@register("proto")
class PrototypicalHead(PairHead):
    """Prototypical networks (Snell, Swersky & Zemel 2017): classify by the nearest class mean.

    Each P×K batch is an episode: in every class, the first half of its images (⌊K/2⌋, at least one)
    are the support and the rest are queries. A class's prototype is the mean embedding of its support,
    c_k = mean f(x_s); each query is classified by a softmax over the negative squared Euclidean
    distances to the batch's prototypes,

        p(y = k | x) = softmax_k(−‖f(x) − c_k‖²),   loss = mean cross-entropy over the queries.

    The classes are the batch's, never a fixed list, so it learns an embedding only (no weights); at
    test time a one-shot support image is its class's prototype. Needs K ≥ 2 (`PKSampler`).
    """

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self._check_reduction()
        x = x.float()
        _, inv = torch.unique(y, return_inverse=True)
        onehot = F.one_hot(inv).to(x.dtype)                            # B×P
        rank = ((onehot.cumsum(0) - 1) * onehot).sum(1)                # position of each image in its class
        count = onehot.sum(0)[inv]
        support = rank < torch.clamp(torch.div(count, 2, rounding_mode="floor"), min=1)
        s_onehot = onehot * support[:, None]
        n_support = s_onehot.sum(0)
        protos = (s_onehot.T @ x) / n_support.clamp_min(1)[:, None]   # P×D
        d2 = torch.cdist(x, protos).pow(2)
        logits = (-d2).masked_fill(n_support[None, :] == 0, float("-inf"))
        ce = F.cross_entropy(logits, inv, reduction="none")
        query = (~support).to(x.dtype)
        return (ce * query).sum() / query.sum().clamp_min(1)


# ----------------------------------------------------------------------------- reconstruction
RECONSTRUCTION_ERRORS = ("mse", "mae")


def reconstruction_error(output: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """One error per image: the mean over its pixels (and channels) of (output − target)² ("mse") or
    |output − target| ("mae"). `target` may be uint8 (0..255, scaled to 0..1) or float in 0..1, the
    range of an autoencoder's sigmoid output. Computed in float32."""
    if kind not in RECONSTRUCTION_ERRORS:
        raise ValueError(f"unknown reconstruction error {kind!r}: choose one of {list(RECONSTRUCTION_ERRORS)}")
    if output.shape != target.shape:
        raise ValueError(f"the output {tuple(output.shape)} and the target {tuple(target.shape)} must have "
                         f"the same shape (an autoencoder returns images of its input's size)")
    t = target.float() / 255 if target.dtype == torch.uint8 else target.float()
    diff = output.float() - t
    err = diff.square() if kind == "mse" else diff.abs()
    return err.flatten(1).mean(1)


@register("reconstruction")
class ReconstructionHead(Head):
    """The autoencoder's objective: how far the network's output is from its own input.

        loss = mean over images of reconstruction_error(output, input, `loss`)   ("mae" or "mse")

    The network is an image -> image model (`utils.models.AUTOENCODERS`); labels are ignored. `fit`
    passes the clean batch as `inputs`, and with `noise` > 0 feeds the network a noisy copy — a
    denoising autoencoder (Vincent et al. 2008): it must undo the noise, not copy it. No parameters,
    no logits. `emb_dim` and `n_classes` are accepted (so `make` builds every head alike) and unused.
    """

    has_logits = False
    uses_inputs = True

    def __init__(self, emb_dim: int | None = None, n_classes: int | None = None, loss: str = "mae",
                 reduction: str = "mean"):
        super().__init__(emb_dim, n_classes, reduction)
        if loss not in RECONSTRUCTION_ERRORS:
            raise ValueError(f"unknown reconstruction loss {loss!r}: choose one of {list(RECONSTRUCTION_ERRORS)}")
        self.loss = loss

    def forward(self, output: torch.Tensor, y: torch.Tensor | None = None, inputs: torch.Tensor | None = None) -> torch.Tensor:
        if inputs is None:
            raise TypeError("the 'reconstruction' head compares the output with the input images: call it as "
                            "head(output, labels, inputs=images)")
        return self.reduce(reconstruction_error(output, inputs, self.loss))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("the 'reconstruction' head trains an autoencoder: it has no classes and no logits. "
                        "Score images by their reconstruction error (utils.anomaly.reconstruction_scores).")

    def extra_repr(self) -> str:
        return f"loss={self.loss!r}, reduction={self.reduction!r}"
