"""The margin heads (arcface, cosface, sphereface) and center loss.

The angular heads are checked against pytorch-metric-learning's ArcFaceLoss, CosFaceLoss and
SphereFaceLoss. Its conventions: W has shape (emb_dim, n_classes) (= our `.weight.T`), ArcFace's
margin is in degrees, `scale` is our s (SphereFace: scale=1, logits carry ‖x‖), and its default
MeanReducer averages the per-sample cross-entropies, like our reduction='mean'. The reference runs in
float64 (its acos is unclamped, so float32 would be the less accurate side near θ = 0 and π).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from utils import losses, mixup, models, train

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
# PML's LargeMarginSoftmaxLoss calls scipy.special.binom on tensors, which NumPy 2 warns about
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")

D, C, B = 16, 5, 32


def _reference(name: str, hp: dict):
    """The PML loss with the same hyperparameters as our head `name` with `hp`."""
    if name == "arcface":
        return pml_losses.ArcFaceLoss(C, D, margin=math.degrees(hp["m"]), scale=hp["s"])
    if name == "cosface":
        return pml_losses.CosFaceLoss(C, D, margin=hp["m"], scale=hp["s"])
    assert hp["lambda_base"] == hp["lambda_min"] == 0   # PML has no λ blend
    return pml_losses.SphereFaceLoss(C, D, margin=hp["m"], scale=1.0)


ANGULAR = {"arcface": dict(s=16.0, m=0.3), "cosface": dict(s=16.0, m=0.35),
           "sphereface": dict(m=4, lambda_base=0.0, lambda_min=0.0)}
# s=16 saturates the softmax near θ_y = 0 (tiny gradients), so s=2 checks the margin branch there too
CASES = [(n, hp) for n, hp in ANGULAR.items()] + [
    ("arcface", dict(s=2.0, m=0.5)), ("cosface", dict(s=2.0, m=0.2)),
    ("sphereface", dict(m=2, lambda_base=0.0, lambda_min=0.0))]


def _inputs(kind: str, head: torch.nn.Module, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random embeddings, or ones at a small angle (~0.01–0.05 rad) to the target class weight
    ("near0") or to its opposite ("nearpi"), with norms between 2 and 10."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, C, (B,), generator=g)
    if kind == "random":
        return 3 * torch.randn(B, D, generator=g), y
    w = F.normalize(head.weight.detach(), dim=1)[y]
    noise = torch.randn(B, D, generator=g)
    noise = noise - (noise * w).sum(1, keepdim=True) * w            # orthogonal to w
    angle = 0.01 + 0.04 * torch.rand(B, 1, generator=g)
    direction = w if kind == "near0" else -w
    x = torch.cos(angle) * direction + torch.sin(angle) * F.normalize(noise, dim=1)
    return x * (2 + 8 * torch.rand(B, 1, generator=g)), y


def _ours(head, x, y):
    x = x.clone().requires_grad_(True)
    head.zero_grad()
    loss = head(x, y)
    loss.backward()
    return loss.detach(), x.grad, head.weight.grad.clone()


def _pml(loss_fn, head, x, y):
    loss_fn = loss_fn.double()
    with torch.no_grad():
        loss_fn.W.copy_(head.weight.detach().T.double())
    x = x.double().clone().requires_grad_(True)
    loss = loss_fn(x, y)
    loss.backward()
    return loss.detach(), x.grad, loss_fn.W.grad.T


@pytest.mark.parametrize("kind", ["random", "near0", "nearpi"])
@pytest.mark.parametrize("name,hp", CASES, ids=[f"{n}-{'-'.join(map(str, hp.values()))}" for n, hp in CASES])
def test_angular_heads_match_pytorch_metric_learning(name, hp, kind):
    torch.manual_seed(1)
    head = losses.make(name, emb_dim=D, n_classes=C, **hp)
    x, y = _inputs(kind, head)
    loss, gx, gw = _ours(head, x, y)
    ref_loss, ref_gx, ref_gw = _pml(_reference(name, hp), head, x, y)
    for t in (loss, gx, gw):
        assert torch.isfinite(t).all()
    assert torch.allclose(loss.double(), ref_loss, rtol=1e-4, atol=1e-5), (loss, ref_loss)
    for ours, ref in ((gx, ref_gx), (gw, ref_gw)):   # float32 vs float64: relative to the largest entry
        tol = 1e-3 * ref.abs().max().item()
        assert torch.allclose(ours.double(), ref, rtol=1e-3, atol=tol), (ours - ref).abs().max()


@pytest.mark.parametrize("name", list(ANGULAR))
def test_angular_logits_match_pytorch_metric_learning(name):
    hp = ANGULAR[name]
    head = losses.make(name, emb_dim=D, n_classes=C, **hp)
    x, _ = _inputs("random", head)
    ref = _reference(name, hp).double()
    with torch.no_grad():
        ref.W.copy_(head.weight.T.double())
        assert torch.allclose(head.logits(x).double(), ref.get_logits(x.double()), atol=1e-4)


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("name", list(ANGULAR))
def test_angular_heads_finite_gradients_at_exactly_0_and_pi(name, sign):
    head = losses.make(name, emb_dim=D, n_classes=C, **ANGULAR[name])
    y = torch.arange(C).repeat(2)
    x = sign * 3 * head.weight.detach()[y]               # θ_y exactly 0 (sign=1) or π (sign=-1)
    loss, gx, gw = _ours(head, x, y)
    assert torch.isfinite(loss) and torch.isfinite(gx).all() and torch.isfinite(gw).all()


# ----------------------------------------------------------------------------- center loss
def test_center_loss_hand_formula():
    torch.manual_seed(0)
    head = losses.make("center", emb_dim=D, n_classes=C, lam=0.3, alpha=0.1)
    with torch.no_grad():
        head.centers.normal_()
    x, y = torch.randn(B, D), torch.randint(0, C, (B,))
    logits = x @ head.weight.T + head.bias
    ce = -logits.log_softmax(1)[torch.arange(B), y]
    pull = torch.stack([0.5 * ((x[i] - head.centers[y[i]]) ** 2).sum() for i in range(B)])
    expected = ce + 0.3 * pull
    with torch.no_grad():
        assert torch.allclose(head(x, y), expected.mean(), atol=1e-5)
        head.reduction = "none"
        assert torch.allclose(head(x, y), expected, atol=1e-5)
        assert torch.allclose(head.logits(x), logits, atol=1e-5)


def test_center_loss_gradient_wrt_embeddings():
    """∂L/∂x_i = ∂CE/∂x_i + λ(x_i − c_{y_i})/B; the centers are no parameter and get no gradient."""
    torch.manual_seed(0)
    head = losses.make("center", emb_dim=D, n_classes=C, lam=0.5)
    with torch.no_grad():
        head.weight.zero_(), head.bias.zero_(), head.centers.normal_()   # CE gradient wrt x is 0
    x, y = torch.randn(B, D, requires_grad=True), torch.randint(0, C, (B,))
    head(x, y).backward()
    assert torch.allclose(x.grad, 0.5 * (x - head.centers[y]).detach() / B, atol=1e-6)
    assert "centers" not in dict(head.named_parameters()) and "centers" in dict(head.named_buffers())


def test_center_update_is_wen_et_al_algorithm_1():
    """c_j ← c_j − α Σ_{y_i=j}(c_j − x_i)/(1 + n_j), by hand, once per step, from the batch before the step."""
    head = losses.make("center", emb_dim=2, n_classes=3, alpha=0.5).train()
    with torch.no_grad():
        head.centers.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0], [5.0, -5.0]]))
    x = torch.tensor([[3.0, 1.0], [1.0, 3.0], [2.0, 2.0]], requires_grad=True)
    y = torch.tensor([0, 0, 1])                                   # class 2 absent: stays put
    head(x, y).backward()
    head.step()
    # class 0: n=2, Σ(c − x) = (1−3 + 1−1, 1−1 + 1−3) = (−2, −2) → c − 0.5·(−2, −2)/3
    # class 1: n=1, Σ(c − x) = (−2, −2) → c − 0.5·(−2, −2)/2
    expected = torch.tensor([[1 + 1 / 3, 1 + 1 / 3], [0.5, 0.5], [5.0, -5.0]])
    assert torch.allclose(head.centers, expected, atol=1e-6)
    head.step()                                                   # no new batch: no second update
    assert torch.allclose(head.centers, expected, atol=1e-6)
    head.eval()
    with torch.no_grad():
        head(x, y)
    head.step()                                                   # evaluation never moves the centers
    assert torch.allclose(head.centers, expected, atol=1e-6)


def test_center_update_does_not_depend_on_the_embedding_scale():
    """α is a fraction of the way to the batch mean: ×10 embeddings lag their means by the same fraction."""
    lags = []
    for scale in (1.0, 10.0):
        torch.manual_seed(0)
        head = losses.make("center", emb_dim=4, n_classes=2, alpha=0.5).train()
        means = scale * torch.tensor([[1.0, 2.0, 3.0, 4.0], [-4.0, 0.0, 1.0, 2.0]])
        for _ in range(20):
            y = torch.arange(16) % 2
            head(means[y] + 0.01 * scale * torch.randn(16, 4), y)
            head.step()
        lags.append(((head.centers - means).norm(dim=1) / means.norm(dim=1)).max().item())
    assert lags[0] < 0.01 and lags[1] < 0.01


@pytest.mark.parametrize("name,hp", [(n, {}) for n in losses.NAMES] + [("l2softmax", {"learn_alpha": True})])
def test_weight_decay_by_parameter_same_rule_for_every_head(name, hp):
    """Matrices (conv kernels, the embedding layer, class weights) are decayed; biases, BN scales and α not."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(),
                                torch.nn.Linear(8, D))
    head = losses.make(name, emb_dim=D, n_classes=C, **hp)
    groups = train.param_groups(model, head, lr=1e-3, wd=0.1)
    decay = {id(p) for g in groups if g["weight_decay"] == 0.1 for p in g["params"]}
    plain = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    for n, p in [*model.named_parameters(), *head.named_parameters()]:
        assert (id(p) in decay) == (p.ndim > 1) and (id(p) in plain) == (p.ndim <= 1), n
    assert id(head.weight) in decay


# ----------------------------------------------------------------------------- every head
def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    x = torch.randint(0, 256, (12, 1, 8, 8), dtype=torch.uint8)
    y = torch.arange(12) % 3
    return models.SmallCNN(in_channels=1, emb_dim=8, width=4), x, y


@pytest.mark.parametrize("name", losses.NAMES)
def test_one_fit_step_changes_every_head_parameter(name):
    model, x, y = _tiny()
    head = losses.make(name, emb_dim=8, n_classes=3)
    before = {n: p.detach().clone() for n, p in head.named_parameters()}
    assert before
    train.fit(model, head, x, y, epochs=1, bs=len(y), progress=False, device="cpu")
    for n, p in head.named_parameters():
        assert not torch.equal(before[n], p.detach()), f"{name}.{n} did not change"
    if name == "sphereface":
        assert int(head.iteration) == 1
    if name == "center":
        assert head.centers.abs().sum() > 0                       # moved from 0 by the center update


@pytest.mark.parametrize("name", losses.NAMES)
def test_mixup_loss_is_finite(name):
    model, x, y = _tiny()
    head = losses.make(name, emb_dim=8, n_classes=3)
    loss = mixup.mixup_loss(model, head, x, y, 0.4, torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())
    assert head.reduction == "mean"


@pytest.mark.parametrize("name", losses.NAMES)
def test_per_sample_mean_equals_mean(name):
    torch.manual_seed(0)
    head = losses.make(name, emb_dim=D, n_classes=C)
    x, y = 3 * torch.randn(B, D), torch.randint(0, C, (B,))
    with torch.no_grad():
        mean = head(x, y)
        head.reduction = "none"
        each = head(x, y)
    assert each.shape == (B,) and mean.ndim == 0
    assert torch.allclose(each.mean(), mean, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", losses.NAMES)
def test_low_precision_inputs_give_finite_losses(name, dtype):
    torch.manual_seed(0)
    head = losses.make(name, emb_dim=D, n_classes=C)
    y = torch.randint(0, C, (B,))
    x = (3 * torch.randn(B, D)).to(dtype)
    x[:C] = (3 * head.weight.detach()[:C]).to(dtype)        # θ = 0 for these (in fp32 at least)
    x[C:2 * C] = (-3 * head.weight.detach()[:C]).to(dtype)  # θ = π
    y[:C] = y[C:2 * C] = torch.arange(C)
    x.requires_grad_(True)
    loss = head(x, y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(x.grad.float()).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):          # as in fit(amp=True)
        loss = head(x.detach().float(), y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


# ----------------------------------------------------------------------------- sphereface
def test_sphereface_official_lambda_schedule():
    head = losses.make("sphereface", emb_dim=D, n_classes=C, schedule="official")   # 1000, 0.12, 1, 5
    head.train()
    head.begin(100)                                           # the official schedule ignores the run's length
    assert math.isclose(head.current_lambda().item(), 1000 / 1.12, rel_tol=1e-6)    # 892.9: iter counts from 1
    for it in range(3000):
        if it in (0, 1, 10, 100, 1000, 1656, 1658, 2999):
            expected = max(5.0, 1000 * (1 + 0.12 * (it + 1)) ** -1)
            assert math.isclose(head.current_lambda().item(), expected, rel_tol=1e-5), it
        head.step()
    head.eval()
    head.step()                                               # eval mode: the counter stays
    assert int(head.iteration) == 3000 and head.current_lambda().item() == 5.0
    other = losses.make("sphereface", emb_dim=D, n_classes=C, lambda_base=100, gamma=0.5,
                        power=2, lambda_min=0.0, schedule="official")
    other.iteration.fill_(7)
    assert math.isclose(other.current_lambda().item(), 100 * (1 + 0.5 * 8) ** -2, rel_tol=1e-5)


@pytest.mark.parametrize("total", [40, 96, 200, 28000])
def test_sphereface_fraction_schedule_reaches_its_floor_at_the_same_fraction(total):
    head = losses.make("sphereface", emb_dim=D, n_classes=C, floor_at=0.5).train()
    head.begin(total)
    lams = []
    for _ in range(total):
        lams.append(head.current_lambda().item())
        head.step()
    assert lams[0] > 50 and lams[-1] == 5.0
    assert math.isclose(lams[total // 2 - 1], 5.0, rel_tol=1e-4)     # step total/2 (1-based) is the first at the floor
    assert lams[total // 2 - 2] > 5.0 and all(a >= b for a, b in zip(lams, lams[1:]))


def test_sphereface_margin_arrives_in_a_short_fit():
    """In a 40-step run through `fit`, λ reaches λ_min = 5 (the official per-step γ would still be at 172)."""
    model = models.SmallCNN(in_channels=1, emb_dim=8, width=4)
    x, y = torch.randint(0, 256, (40 * 4, 1, 8, 8), dtype=torch.uint8), torch.arange(160) % 3
    head = losses.make("sphereface", emb_dim=8, n_classes=3)
    train.fit(model, head, x, y, epochs=1, bs=4, progress=False, device="cpu")
    assert int(head.iteration) == 40 and head.current_lambda().item() == 5.0
    official = losses.make("sphereface", emb_dim=8, n_classes=3, schedule="official")
    official.iteration.fill_(40)
    assert official.current_lambda().item() > 150
    plain = losses.make("sphereface", emb_dim=D, n_classes=C, lambda_base=0, lambda_min=0)
    for _ in range(5):
        assert plain.current_lambda().item() == 0.0
        plain.step()


@pytest.mark.parametrize("lambdas", [(0.0, 0.0), (1000.0, 5.0)])
def test_sphereface_target_logit_formula(lambdas):
    lambda_base, lambda_min = lambdas
    head = losses.make("sphereface", emb_dim=2, n_classes=2, lambda_base=lambda_base,
                       lambda_min=lambda_min)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))   # class 0 along the x axis
    head.iteration.fill_(10)
    lam = max(lambda_min, lambda_base / (1 + 0.12 * 11))          # the 11th step
    r = 3.0
    for theta, k in [(0.3, 0), (1.0, 1), (2.0, 2), (3.0, 3)]:
        x = r * torch.tensor([[math.cos(theta), math.sin(theta)]])
        psi = (-1) ** k * math.cos(4 * theta) - 2 * k
        logits = head.train_logits(x, torch.tensor([0]))
        assert math.isclose(logits[0, 0].item(), r * (lam * math.cos(theta) + psi) / (1 + lam),
                            rel_tol=1e-4, abs_tol=1e-4)
        assert math.isclose(logits[0, 1].item(), r * math.sin(theta), abs_tol=1e-5)   # no margin
        assert torch.allclose(head.logits(x), r * torch.tensor([[math.cos(theta), math.sin(theta)]]),
                              atol=1e-5)


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_sphereface_psi_decreases_on_0_pi(m):
    head = losses.make("sphereface", emb_dim=2, n_classes=2, m=m)
    theta = torch.linspace(0, math.pi, 2001, dtype=torch.float64)
    psi = head.psi(torch.cos(theta))
    assert (psi.diff() < 0).all()
    assert math.isclose(psi[0].item(), 1.0) and math.isclose(psi[-1].item(), 1 - 2 * m, abs_tol=1e-9)
    inner = theta[1:-1]                                   # away from the clamped ends: ψ = cos(mθ)…
    k = torch.floor(m * inner / math.pi)
    assert torch.allclose(head.psi(torch.cos(inner)), (-1) ** k * torch.cos(m * inner) - 2 * k,
                          atol=1e-9)
