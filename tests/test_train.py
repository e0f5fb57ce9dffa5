"""Training: augmentation, learning on a small real problem, seeding, every parameter optimized,
the NaN guard, mixup, the training cache, embeddings and the learning-rate finder (all on CPU, tiny)."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from utils import augment, cache, losses, models, train
from utils.data import ImageData

NUMBERS = ["train_loss", "lr", "test_loss", "test_acc"]   # history columns that must be reproducible


def tiny_net(seed: int = 0, emb_dim: int = 8) -> models.SmallCNN:
    torch.manual_seed(seed)
    return models.SmallCNN(in_channels=1, emb_dim=emb_dim, width=4)


def tiny_batch(n: int = 12, n_classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g), torch.arange(n) % n_classes


def state(*modules) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of `modules`, copied."""
    return {f"{i}.{k}": v.detach().clone() for i, m in enumerate(modules) for k, v in m.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- random_shift
def test_random_shift_keeps_shape_and_dtype():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 10, 12), dtype=torch.uint8)
    out = augment.random_shift(x, 2, g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    xf = x.float()
    assert augment.random_shift(xf, 2, g).dtype == torch.float32


def test_random_shift_pad_0_is_identity():
    x = torch.randint(0, 256, (4, 2, 9, 9), dtype=torch.uint8)
    assert torch.equal(augment.random_shift(x, 0, torch.Generator().manual_seed(0)), x)


def test_random_shift_moves_a_centred_blob_without_losing_it():
    x = torch.zeros(64, 1, 12, 12, dtype=torch.uint8)
    x[:, :, 5:7, 5:7] = torch.arange(1, 65, dtype=torch.uint8).view(64, 1, 1, 1)   # 2×2 blob, margin 5
    out = augment.random_shift(x, 3, torch.Generator().manual_seed(0))
    assert torch.equal(out.sum((1, 2, 3)), x.sum((1, 2, 3)))        # nothing cropped, nothing added
    moved = [(out[i] != x[i]).any().item() for i in range(64)]
    assert 40 < sum(moved) < 64                                     # most move; (0, 0) is a 1-in-49 draw
    for i in range(64):                                             # a pure translation by ≤ 3 pixels
        r, c = torch.nonzero(out[i, 0]).min(0).values.tolist()
        assert abs(r - 5) <= 3 and abs(c - 5) <= 3
        assert torch.equal(out[i, 0, r:r + 2, c:c + 2], x[i, 0, 5:7, 5:7])


def test_random_shift_is_seeded():
    x = torch.randint(0, 256, (8, 1, 10, 10), dtype=torch.uint8)
    a, b, c = (augment.random_shift(x, 2, torch.Generator().manual_seed(s)) for s in (0, 0, 1))
    assert torch.equal(a, b) and not torch.equal(a, c)


# ----------------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def learned(small_digits):
    """A width-8 CNN + softmax trained for 5 epochs on 200 digits (a few CPU seconds)."""
    d = small_digits
    torch.manual_seed(0)
    model = models.SmallCNN(in_channels=1, emb_dim=16, width=8)
    head = losses.make("softmax", emb_dim=16, n_classes=10)
    hist = train.fit(model, head, d.x_train, d.y_train, epochs=5, bs=20, lr=1e-2,
                     valid=(d.x_test, d.y_test), progress=False, device="cpu")
    return model, head, hist


def test_history_has_one_row_per_epoch(learned):
    hist = learned[2]
    assert isinstance(hist, pd.DataFrame) and hist["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert set(NUMBERS + ["seconds"]) <= set(hist.columns)
    assert all(math.isfinite(v) for v in hist[NUMBERS].to_numpy().ravel())


def test_loss_falls_and_accuracy_is_well_above_chance(learned, small_digits):
    model, head, hist = learned
    assert hist["train_loss"].iloc[-1] < 0.7 * hist["train_loss"].iloc[0]
    assert hist["test_loss"].iloc[-1] < hist["test_loss"].iloc[0]
    assert hist["test_acc"].iloc[-1] > 0.5                          # chance is 0.1
    acc = (train.predict(model, head, small_digits.x_test)[1].argmax(1) == small_digits.y_test).float().mean().item()
    assert acc == pytest.approx(hist["test_acc"].iloc[-1], abs=1e-6)


def test_one_cycle_schedule_ends_low(learned):
    lr = learned[2]["lr"]
    assert lr.iloc[-1] < 1e-4 < lr.max() <= 1e-2 + 1e-12


def test_evaluate_matches_predict(learned, small_digits):
    model, head, _ = learned
    d = small_digits
    ev = train.evaluate(model, head, d.x_test, d.y_test)
    emb, prob = train.predict(model, head, d.x_test)
    assert prob.shape == (len(d.y_test), 10) and torch.allclose(prob.sum(1), torch.ones(len(d.y_test)))
    assert ev["test_acc"] == pytest.approx((prob.argmax(1) == d.y_test).float().mean().item())
    assert ev["test_loss"] == pytest.approx(head(emb, d.y_test).item(), rel=1e-5)


def _fit_tiny(seed: int, data: ImageData, **kw) -> tuple[pd.DataFrame, dict]:
    train.seed_everything(seed)
    model = models.SmallCNN(in_channels=1, emb_dim=8, width=4)
    head = losses.make("l2softmax", emb_dim=8, n_classes=10, learn_alpha=True)
    hist = train.fit(model, head, data.x_train, data.y_train, epochs=2, bs=16, augment=2,
                     valid=(data.x_test, data.y_test), seed=seed, progress=False, device="cpu", **kw)
    return hist, state(model, head)


@pytest.fixture(scope="module")
def tiny_digits(small_digits):
    return small_digits.per_class(n_train=5, n_test=2, seed=0)


def test_same_seed_same_history_and_weights(tiny_digits):
    h1, w1 = _fit_tiny(0, tiny_digits)
    h2, w2 = _fit_tiny(0, tiny_digits)
    assert h1[NUMBERS].equals(h2[NUMBERS])
    assert same_state(w1, w2)


def test_different_seed_different_result(tiny_digits):
    h1, w1 = _fit_tiny(0, tiny_digits)
    h2, w2 = _fit_tiny(1, tiny_digits)
    assert not h1["train_loss"].equals(h2["train_loss"])
    assert not same_state(w1, w2)


# ----------------------------------------------------------------------------- every parameter optimized
HEADS = [(n, {}) for n in losses.NAMES] + [("l2softmax", {"learn_alpha": True})]


@pytest.mark.parametrize("name,hp", HEADS, ids=[n + ("-learn_alpha" if hp else "") for n, hp in HEADS])
def test_param_groups_hold_every_parameter_once(name, hp):
    model, head = tiny_net(), losses.make(name, emb_dim=8, n_classes=3, **hp)
    grouped = [p for g in train.param_groups(model, head, 1e-3, 1e-2) for p in g["params"]]
    expected = list(model.parameters()) + list(head.parameters())
    assert len(grouped) == len({id(p) for p in grouped}) == len(expected)
    assert {id(p) for p in grouped} == {id(p) for p in expected}


@pytest.mark.parametrize("name,hp", HEADS, ids=[n + ("-learn_alpha" if hp else "") for n, hp in HEADS])
def test_one_step_changes_every_parameter(name, hp):
    """After ONE optimizer step, every parameter of the network AND the head has moved."""
    model, (x, y) = tiny_net(), tiny_batch()
    head = losses.make(name, emb_dim=8, n_classes=3, **hp)
    before = {("model", n): p.detach().clone() for n, p in model.named_parameters()}
    before |= {("head", n): p.detach().clone() for n, p in head.named_parameters()}
    if hp.get("learn_alpha"):
        assert ("head", "alpha") in before
    train.fit(model, head, x, y, epochs=1, bs=len(y), lr=3e-3, progress=False, device="cpu")  # one step
    after = dict(model.named_parameters()), dict(head.named_parameters())
    # Adam's first step moves every coordinate with a gradient by about the lr (here ~1e-3):
    # a parameter left out of the optimizer, or a step at a near-zero lr, stays within 1e-4
    unchanged = [f"{w}.{n}" for (w, n), p in before.items()
                 if (p - after[w == "head"][n].detach()).abs().max() < 1e-4]
    assert not unchanged, f"not optimized: {unchanged}"


@pytest.mark.parametrize("epochs", [1, 2, 3, 4, 5])
def test_very_short_schedules_run(epochs):
    """One batch per epoch, 1–5 steps in all (4 steps made OneCycleLR divide by zero)."""
    x, y = tiny_batch()
    head = losses.make("softmax", emb_dim=8, n_classes=3)
    hist = train.fit(tiny_net(), head, x, y, epochs=epochs, bs=len(y), progress=False, device="cpu")
    assert hist["epoch"].tolist() == list(range(1, epochs + 1))
    assert all(math.isfinite(v) for v in hist[["train_loss", "lr"]].to_numpy().ravel())


# ----------------------------------------------------------------------------- NaN guard
class NaNFromStep2(losses.SoftmaxHead):
    """A softmax head whose loss turns NaN from its second call on."""
    name = "nan-from-step-2"

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.calls = 0

    def forward(self, x, y):
        self.calls += 1
        loss = super().forward(x, y)
        return loss * float("nan") if self.calls >= 2 else loss


def test_nan_loss_raises_naming_head_and_step():
    x, y = tiny_batch(n=12)
    head = NaNFromStep2(emb_dim=8, n_classes=3)
    with pytest.raises(train.NaNLossError) as e:
        train.fit(tiny_net(), head, x, y, epochs=2, bs=4, progress=False, device="cpu")
    msg = str(e.value)
    assert "nan-from-step-2" in msg and "step 2" in msg and "epoch 1" in msg
    assert isinstance(e.value, FloatingPointError)


def test_nan_from_a_monkeypatched_head(monkeypatch):
    x, y = tiny_batch(n=8)
    head = losses.make("l2softmax", emb_dim=8, n_classes=3)
    logits = head.logits
    monkeypatch.setattr(head, "logits", lambda emb: logits(emb) * float("nan"))
    with pytest.raises(train.NaNLossError, match=r"'l2softmax'.*step 1\b"):
        train.fit(tiny_net(), head, x, y, epochs=1, bs=8, progress=False, device="cpu")


# ----------------------------------------------------------------------------- mixup
def test_mixup_trains_with_finite_loss(tiny_digits):
    hist, _ = _fit_tiny(0, tiny_digits, mixup=0.4)
    plain, _ = _fit_tiny(0, tiny_digits)
    assert all(math.isfinite(v) for v in hist[NUMBERS].to_numpy().ravel())
    assert not hist["train_loss"].equals(plain["train_loss"])      # mixup really changed the batches


# ----------------------------------------------------------------------------- the training cache
TRAIN_KW = dict(arch_kw={"width": 4}, emb_dim=8, epochs=1, bs=32, progress=False)


def test_train_second_call_comes_from_cache(tiny_digits, isolated_env):
    first = train.train(tiny_digits, "l2softmax", hparams={"learn_alpha": True}, **TRAIN_KW)
    assert not first.from_cache
    assert len(list((isolated_env / "models").glob("*.pt"))) == 1
    second = train.train(tiny_digits, "l2softmax", hparams={"learn_alpha": True}, **TRAIN_KW)
    assert second.from_cache and second.key == first.key
    assert same_state(state(first.model, first.head), state(second.model, second.head))
    assert second.history[NUMBERS].equals(first.history[NUMBERS])
    assert isinstance(second.head.alpha, torch.nn.Parameter)


def _changed_data(d: ImageData, what: str) -> ImageData:
    if what == "train_pixel":
        x = d.x_train.clone()
        x[0, 0, 14, 14] ^= 1
        return ImageData(x, d.y_train, d.x_test, d.y_test, d.classes, d.source, d.name)
    if what == "train_label":
        y = d.y_train.clone()
        y[0] = (y[0] + 1) % 10
        return ImageData(d.x_train, y, d.x_test, d.y_test, d.classes, d.source, d.name)
    x = d.x_test.clone()
    x[0, 0, 14, 14] ^= 1
    return ImageData(d.x_train, d.y_train, x, d.y_test, d.classes, d.source, d.name)


CHANGES = {"epochs": dict(epochs=2), "lr": dict(lr=1e-2), "wd": dict(wd=0.0), "seed": dict(seed=1),
           "hparams": dict(hparams={"alpha": 8.0}), "head": dict(head="softmax"), "emb_dim": dict(emb_dim=4),
           "augment": dict(augment=1), "mixup": dict(mixup=0.4), "width": dict(arch_kw={"width": 2}),
           "train_pixel": None, "train_label": None, "test_pixel": None}


@pytest.mark.parametrize("change", CHANGES)
def test_any_change_retrains(tiny_digits, change):
    base = dict(TRAIN_KW, head="l2softmax")
    first = train.train(tiny_digits, **base)
    d, kw = tiny_digits, dict(base)
    if CHANGES[change] is None:
        d = _changed_data(tiny_digits, change)
    else:
        kw.update(CHANGES[change])
    again = train.train(d, **kw)
    assert again.key != first.key and not again.from_cache
    assert train.train(tiny_digits, **base).from_cache                # the original is still cached


def test_cache_false_never_writes(tiny_digits, isolated_env):
    r = train.train(tiny_digits, "softmax", cache=False, **TRAIN_KW)
    assert not r.from_cache and not list(isolated_env.rglob("*.pt"))


# ----------------------------------------------------------------------------- embed and lr_find
def test_embed_float32_cpu_shape_and_batching(learned, small_digits):
    model = learned[0]
    x = small_digits.x_test[:23]
    emb = train.embed(model, x, bs=7)
    assert emb.shape == (23, 16) and emb.dtype == torch.float32 and emb.device.type == "cpu"
    with torch.no_grad():
        assert torch.allclose(emb, model.eval()(x), atol=1e-5)
    assert not model.training
    assert train.embed(model, x[:0]).shape == (0, 16)


# ----------------------------------------------------------------------------- precision, schedule, metrics
@pytest.mark.parametrize("device,capability,expected", [
    ("cpu", None, (None, False)),
    ("cuda", (7, 5), (torch.float16, True)),     # T4 (free Colab): no native bf16 -> fp16 + gradient scaler
    ("cuda", (7, 0), (torch.float16, True)),     # V100
    ("cuda", (8, 0), (torch.bfloat16, False)),   # A100
    ("cuda", (9, 0), (torch.bfloat16, False)),   # H100
])
def test_precision_is_chosen_from_the_device(device, capability, expected):
    assert train.choose_precision(device, capability) == expected


def test_one_cycle_moves_momentum_and_history_shows_the_rate_used(tiny_digits):
    """β1 follows fastai's one-cycle (0.95 → 0.85 → 0.95); the `lr` column is the epoch's last step's rate."""
    model, head = tiny_net(), losses.make("softmax", emb_dim=8, n_classes=10)
    betas, lrs = [], []
    real_step = torch.optim.AdamW.step

    def step(self, *a, **kw):
        betas.append(self.param_groups[0]["betas"][0]), lrs.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.AdamW, "step", step)
        hist = train.fit(model, head, tiny_digits.x_train, tiny_digits.y_train, epochs=4, bs=10,
                         progress=False, device="cpu")
    steps = len(lrs) // 4
    assert betas[0] == pytest.approx(0.95) and min(betas) == pytest.approx(0.85, abs=1e-3)
    assert hist["lr"].tolist() == pytest.approx([lrs[(e + 1) * steps - 1] for e in range(4)])


def test_evaluate_reports_the_plain_cross_entropy_without_margin():
    """Identical, perfectly classified embeddings: the margin-laden loss grows with m, the plain CE does not."""
    x = torch.eye(3).repeat(4, 1) * 5
    y = torch.arange(3).repeat(4)
    out = {}
    for m in (0.3, 1.2):
        head = losses.make("arcface", emb_dim=3, n_classes=3, s=16, m=m)
        with torch.no_grad():
            head.weight.copy_(torch.eye(3))
        out[m] = train.evaluate(torch.nn.Identity(), head, x, y, device="cpu")
    assert out[0.3]["test_acc"] == out[1.2]["test_acc"] == 1.0
    assert out[1.2]["test_loss"] > 100 * out[0.3]["test_loss"]
    assert out[0.3]["test_ce"] == pytest.approx(out[1.2]["test_ce"]) and out[0.3]["test_ce"] < 1e-5


@pytest.mark.parametrize("name", losses.NAMES)
def test_every_head_computes_float32_logits_under_autocast(name):
    torch.manual_seed(0)
    head = losses.make(name, emb_dim=8, n_classes=3)
    x = torch.randn(6, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert head.logits(x).dtype == torch.float32
        assert head.logits(x).allclose(head.logits(x.float()))


def test_train_cache_is_written_atomically(tiny_digits, isolated_env, monkeypatch):
    """A save that dies half-way leaves no model file that a later call would load."""
    real_save = torch.save

    def dying_save(obj, f, *a, **kw):
        if hasattr(f, "write"):
            f.write(b"half a model")
        else:
            with open(f, "wb") as fh:
                fh.write(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train.train(tiny_digits, "softmax", **TRAIN_KW)
    monkeypatch.setattr(torch, "save", real_save)
    assert not list((isolated_env / "models").glob("*.pt"))
    assert not train.train(tiny_digits, "softmax", **TRAIN_KW).from_cache


# ----------------------------------------------------------------------------- affine, P×K batches, pair heads
def test_random_affine_is_seeded_float_and_keeps_a_blob_in_view():
    x = torch.zeros(4, 1, 16, 16, dtype=torch.uint8)
    x[:, :, 6:10, 6:10] = 255
    out = augment.random_affine(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    assert torch.equal(out, augment.random_affine(x, torch.Generator().manual_seed(0)))
    assert not torch.allclose(out[0], out[1])                         # one distortion per image
    mass = out.sum((1, 2, 3)) / (x.float() / 255).sum((1, 2, 3))
    assert ((mass > 0.7) & (mass < 1.3)).all()                        # scaled ±10 %, area ±21 %
    ident = augment.random_affine(x, torch.Generator().manual_seed(0), degrees=0, scale=0, shear=0, translate=0)
    assert torch.allclose(ident, x.float() / 255, atol=1e-5)


def test_fit_with_a_pk_sampler_sees_p_classes_of_k_per_batch(monkeypatch):
    from utils.pair_losses import PKSampler

    seen = []

    class Spy(losses.make("contrastive", 8, 4).__class__):
        def forward(self, x, y):
            seen.append(torch.bincount(y, minlength=4))
            return super().forward(x, y)
    x, y = tiny_batch(n=40, n_classes=4)
    head = Spy(emb_dim=8, n_classes=4)
    hist = train.fit(tiny_net(), head, x, y, epochs=2, sampler=PKSampler(2, 3), seed=0, progress=False,
                     valid=(x, y))
    assert len(seen) == 2 * (40 // 6)
    assert all(sorted(c.tolist())[-2:] == [3, 3] and int((c > 0).sum()) == 2 for c in seen)
    assert "test_acc" not in hist and hist.train_loss.notna().all()   # no logits: no test accuracy


@pytest.mark.parametrize("head, hp", [("contrastive", {}), ("triplet", {"mining": "batch_hard"}), ("siamese", {})])
def test_pair_heads_train_through_train_and_are_cached(tiny_digits, head, hp, isolated_env):
    r = train.train(tiny_digits, head, hparams=hp, epochs=2, pk=(4, 4), emb_dim=8, arch_kw={"width": 4},
                    progress=False)
    assert r.config["pk"] == [4, 4] and r.config["bs"] == 16 and list(r.history.columns[:2]) == ["epoch", "train_loss"]
    again = train.train(tiny_digits, head, hparams=hp, epochs=2, pk=(4, 4), emb_dim=8, arch_kw={"width": 4},
                        progress=False)
    assert again.from_cache and again.key == r.key
    other = train.train(tiny_digits, head, hparams=hp, epochs=2, pk=(2, 8), emb_dim=8, arch_kw={"width": 4},
                        progress=False, cache=False)
    assert other.key != r.key


def test_validate_false_skips_test_metrics_and_affine_is_keyed(tiny_digits):
    r = train.train(tiny_digits, "softmax", epochs=1, validate=False, emb_dim=8, arch_kw={"width": 4},
                    progress=False, cache=False)
    assert "test_acc" not in r.history
    a = train.train(tiny_digits, "softmax", epochs=1, affine={}, emb_dim=8, arch_kw={"width": 4},
                    progress=False, cache=False)
    assert a.key != r.key and a.config["affine"] == {} and "test_acc" in a.history


def test_training_code_adds_the_module_that_registered_an_architecture_or_head(monkeypatch):
    """A network or head registered by another utils module puts that module's source into the cache key."""
    from utils import notebook, plot

    assert train.training_code("cnn", "softmax") == train.TRAINING_CODE
    monkeypatch.setitem(models.ARCHS, "elsewhere", notebook.banner)        # defined in utils/notebook.py
    monkeypatch.setitem(losses._REGISTRY, "elsewhere_head", plot.style)     # defined in utils/plot.py
    assert train.training_code("elsewhere", "softmax") == (*train.TRAINING_CODE, "notebook.py")
    assert train.training_code("elsewhere", "elsewhere_head") == (*train.TRAINING_CODE, "notebook.py", "plot.py")
    assert cache.source_hash(train.training_code("elsewhere", "softmax")) != cache.source_hash(train.TRAINING_CODE)
    monkeypatch.setitem(losses._REGISTRY, "outside", test_training_code_adds_the_module_that_registered_an_architecture_or_head)
    assert train.training_code("cnn", "outside") == train.TRAINING_CODE    # not a utils module: not hashed


# ----------------------------------------------------------------------------- a head class, e.g. edited in a cell
def test_train_takes_a_head_class_and_keys_it_by_its_code(tiny_digits):
    """`train(data, ArcFaceHead)` trains what `train(data, "arcface")` trains; a class whose code differs gets
    another cache key (a learner's edit retrains), while a docstring or comment does not change it."""
    from utils.heads import ArcFaceHead

    kw = dict(emb_dim=8, epochs=1, bs=16, arch_kw={"width": 4}, progress=False)
    by_name = train.train(tiny_digits, "arcface", **kw)
    by_class = train.train(tiny_digits, ArcFaceHead, **kw)
    assert same_state(state(by_name.model, by_name.head), state(by_class.model, by_class.head))
    assert train.train(tiny_digits, ArcFaceHead, **kw).from_cache

    class Wider(ArcFaceHead):
        def train_logits(self, x, y):
            return 2 * super().train_logits(x, y)

    class Annotated(ArcFaceHead):
        """A docstring."""

        def train_logits(self, x, y):  # a comment
            """Another docstring."""
            return 2 * super().train_logits(x, y)

    Annotated.__qualname__ = Wider.__qualname__
    assert train.class_code(Wider) == train.class_code(Annotated) != train.class_code(ArcFaceHead)
    wider = train.train(tiny_digits, Wider, **kw)
    assert wider.key != by_class.key and not wider.from_cache
    assert train.compare(tiny_digits, {"mine": (ArcFaceHead, {})}, [0], **kw)["head"].tolist() == ["ArcFaceHead"]
