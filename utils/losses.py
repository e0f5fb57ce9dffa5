"""The loss heads by name (`make("arcface", emb_dim=64, n_classes=10, s=16)`) and the six classification methods
the notebooks compare (`METHODS`); the heads are written in notebooks 01-04, 09-11 (utils/README.md)."""
from __future__ import annotations

from typing import Callable

from torch import nn

from .autoencoders import ReconstructionHead, reconstruction_error  # noqa: F401
from .heads import (ArcFaceHead, CenterLossHead, CosFaceHead, L2SoftmaxHead, SoftmaxHead,  # noqa: F401
                    SphereFaceHead, alpha_low)
from .pair_losses import ContrastiveHead, PrototypicalHead, SiameseHead, TripletHead  # noqa: F401

_REGISTRY: dict[str, type[nn.Module]] = {}
NAMES: list[str] = []       # classification heads: class weights and logits
PAIR_NAMES: list[str] = []  # pair and triplet heads: an embedding only (has_logits = False)
RECONSTRUCTION_NAMES: list[str] = []  # objectives on the inputs themselves (uses_inputs = True)


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make a head available as `make(name, …)` (listed in `NAMES`; in
    `RECONSTRUCTION_NAMES` when it uses the inputs; else in `PAIR_NAMES` when it has no logits)."""
    def wrap(cls: type) -> type:
        _REGISTRY[name] = cls
        (NAMES if has_logits(cls) else RECONSTRUCTION_NAMES if uses_inputs(cls) else PAIR_NAMES).append(name)
        return cls
    return wrap


def make(name: str, emb_dim: int, n_classes: int, **hparams) -> nn.Module:
    """Build the head called `name` (one of `NAMES` or `PAIR_NAMES`) with its hyperparameters."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown loss head {name!r}: choose one of {NAMES + PAIR_NAMES + RECONSTRUCTION_NAMES}")
    head = _REGISTRY[name](emb_dim=emb_dim, n_classes=n_classes, **hparams)
    head.name = name
    return head


def has_logits(head) -> bool:
    """Whether a head (or head class) classifies: it has `logits` and does not say `has_logits = False`."""
    return getattr(head, "has_logits", hasattr(head, "logits"))


def uses_inputs(head) -> bool:
    """Whether a head compares the network's output with its input (`fit` passes `inputs=`)."""
    return getattr(head, "uses_inputs", False)


def name_of(head) -> str:
    """The name a head was made under (`make`), else its class's name."""
    return getattr(head, "name", type(head).__name__)


# The classification heads are the lesson cells of notebooks 01-04, saved to `utils.heads`.
for _name, _cls in (("softmax", SoftmaxHead), ("l2softmax", L2SoftmaxHead), ("arcface", ArcFaceHead),
                    ("cosface", CosFaceHead), ("sphereface", SphereFaceHead), ("center", CenterLossHead)):
    register(_name)(_cls)


# The six methods the notebooks compare: display name -> (head name, hyperparameters).
METHODS: dict[str, tuple[str, dict]] = {
    "softmax": ("softmax", {}),
    "L2-softmax": ("l2softmax", {"alpha": 16.0}),
    "ArcFace": ("arcface", {}),
    "CosFace": ("cosface", {}),
    "SphereFace": ("sphereface", {}),
    "center loss": ("center", {}),
}


# The pair, triplet and episode heads are the lesson cells of notebooks 09-10 (`utils.pair_losses`), the
# autoencoders' objective that of notebook 11 (`utils.autoencoders`).
RECONSTRUCTION_ERRORS = ("mse", "mae")
for _name, _cls in (("contrastive", ContrastiveHead), ("triplet", TripletHead), ("siamese", SiameseHead),
                    ("proto", PrototypicalHead), ("reconstruction", ReconstructionHead)):
    register(_name)(_cls)
