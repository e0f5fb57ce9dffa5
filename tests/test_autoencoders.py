"""Autoencoders: shapes and ranges of the architectures (the article's super-resolution decoder and Ruff et al.'s DCAE
included), the reconstruction error and head, training
(loss goes down, noise, seeding, mixup refused, the classifier path unchanged), reconstruction scores on a
toy anomaly problem, the mean + 3σ threshold, Gaussian noise, and autoencoders in the benchmark grid.

Everything on tiny synthetic images made here (16×16 bars), on the CPU.
"""
from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from utils import anomaly, augment, autoencoders as AE, benchmark as B, losses, models, train
from utils.benchmark import Setting
from utils.data import ImageData


def counting(monkeypatch, module, name: str) -> list:
    """Replace `module.name` by a wrapper that records each call's arguments; return the record."""
    calls, real = [], getattr(module, name)

    def wrapper(*args, **kw):
        calls.append((args, kw))
        return real(*args, **kw)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def state(*modules) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v.detach().clone() for i, m in enumerate(modules) for k, v in m.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- toy images
def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def bars(n: int, seed: int = 0, size: int = 16) -> torch.Tensor:
    """n×1×size×size uint8: a bright 2-pixel-wide vertical bar near the centre (±2 px jitter), random
    brightness 0.8..1, faint background noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, size, size)
    col = size // 2 - 1 + torch.randint(-2, 3, (n,), generator=g)
    for i in range(n):
        x[i, 0, 2:size - 2, col[i]:col[i] + 2] = 1.0
    x = x * (0.8 + 0.2 * torch.rand(n, 1, 1, 1, generator=g)) + 0.05 * torch.rand(x.shape, generator=g)
    return _to_uint8(x)


def checkerboards(n: int, seed: int = 1, size: int = 16) -> torch.Tensor:
    """n×1×size×size uint8 checkerboards of 2×2 squares, brightness 0.8..1, faint noise."""
    g = torch.Generator().manual_seed(seed)
    i = torch.arange(size)
    board = ((i[:, None] // 2 + i[None, :] // 2) % 2).float()
    x = board.expand(n, 1, size, size) * (0.8 + 0.2 * torch.rand(n, 1, 1, 1, generator=g))
    return _to_uint8(x + 0.05 * torch.rand(n, 1, size, size, generator=g))


def horizontal_bars(n: int, seed: int = 1, size: int = 16) -> torch.Tensor:
    return bars(n, seed, size).transpose(2, 3).contiguous()


def fit_ae(arch: str, x: torch.Tensor, epochs: int = 5, noise: float = 0.0, seed: int = 0, **kw):
    torch.manual_seed(seed)
    model = models.make_model(arch, in_channels=x.shape[1], emb_dim=8)
    head = losses.make("reconstruction", emb_dim=8, n_classes=1)
    hist = train.fit(model, head, x, torch.zeros(len(x), dtype=torch.long), epochs=epochs, bs=32, lr=1e-2,
                     noise=noise, seed=seed, progress=False, device="cpu", **kw)
    return model, head, hist


@pytest.fixture(scope="module")
def bar_images():
    return bars(256)


@pytest.fixture(scope="module")
def trained_conv_ae(bar_images):
    return fit_ae("conv_ae", bar_images)


# ----------------------------------------------------------------------------- architectures
@pytest.mark.parametrize("arch", models.AUTOENCODERS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 27, 30)], ids=lambda s: "x".join(map(str, s)))
def test_autoencoders_keep_the_input_shape_and_output_0_to_1(arch, shape):
    torch.manual_seed(0)
    model = models.make_model(arch, in_channels=shape[0], emb_dim=16)
    assert model.emb_dim == 16
    x = torch.randint(0, 256, (3, *shape), dtype=torch.uint8)
    if arch == "dcae" and shape[1:] != (28, 28):   # Ruff et al.'s MNIST network: 28×28 only, and it says so
        with pytest.raises(ValueError, match="28×28"):
            model(x)
        return
    for mode in (model.train, model.eval):
        mode()
        out = model(x)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 1
    model.eval()
    with torch.no_grad():   # uint8 input is scaled /255: the same as float input in 0..1
        assert torch.allclose(model(x), model(x.float() / 255), atol=1e-6)


def test_autoencoder_registry_and_unknown_arch():
    assert set(models.AUTOENCODERS) == {"conv_ae", "unet_ae", "superres_ae", "superres_article", "dcae"}
    assert set(models.AUTOENCODERS) <= set(models.ARCHS)
    assert isinstance(models.make_model("conv_ae"), models.ConvAutoencoder)
    assert models.make_model("unet_ae").skips and not models.make_model("conv_ae").skips
    assert isinstance(models.make_model("superres_ae"), models.SuperResolution)
    with pytest.raises(ValueError, match="unknown architecture 'vae'"):
        models.make_model("vae")
    with pytest.raises(ValueError, match="factor"):
        models.make_model("superres_ae", factor=3)


def conv_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]


def test_article_superres_has_four_conv_bn_layers_after_a_4x_maxpool():
    torch.manual_seed(0)
    ours, article = models.make_model("superres_ae"), models.make_model("superres_article")
    assert isinstance(article, models.SuperResolution) and article.factor == 4 and article.convs == 2
    # the decoder: four 3×3 conv + batch norm (+ ReLU) layers, then the 3×3 output conv; ours has two
    assert len(article.up) == 4 and len(ours.up) == 2
    for block in article.up:
        conv, bn = block[0], block[1]
        assert isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (3, 3) and conv.out_channels == 8
        assert isinstance(bn, torch.nn.BatchNorm2d) and bn.num_features == 8
    assert [c.in_channels for c in conv_layers(article)] == [1, 8, 8, 8, 8]
    assert len(conv_layers(article)) == 5 and conv_layers(article)[-1].out_channels == 1
    # it sees only the 7×7 max-pooled image: inputs with the same 4×4 maxima reconstruct alike
    x = torch.zeros(2, 1, 28, 28)
    x[0, 0, 0, 0] = x[1, 0, 3, 3] = 1.0   # the same 4×4 cell, the same maximum
    article.eval()
    with torch.no_grad():
        out = article(x)
    assert out.shape == x.shape and torch.allclose(out[0], out[1])
    with pytest.raises(ValueError, match="convs"):
        models.SuperResolution(convs=0)


def test_superres_convs_1_is_the_unchanged_small_decoder():
    torch.manual_seed(0)
    a = models.make_model("superres_ae")
    torch.manual_seed(0)
    b = models.SuperResolution(convs=1)
    assert same_state(state(a), state(b))
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


def test_dcae_is_ruff_et_al_mnist_autoencoder():
    torch.manual_seed(0)
    net = models.make_model("dcae")
    assert isinstance(net, models.DCAE) and net.rep_dim == 32
    # parameter layout of Deep-SVDD-PyTorch's MNIST_LeNet_Autoencoder: no biases, BN without affine weights
    shapes = {k: tuple(p.shape) for k, p in net.named_parameters()}
    assert shapes == {"conv1.weight": (8, 1, 5, 5), "conv2.weight": (4, 8, 5, 5), "fc1.weight": (32, 196),
                      "deconv1.weight": (2, 4, 5, 5), "deconv2.weight": (4, 8, 5, 5), "deconv3.weight": (8, 1, 5, 5)}
    assert sum(p.numel() for p in net.parameters()) == 8472
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [b.num_features for b in bns] == [8, 4, 4, 8]
    assert all(not b.affine and b.eps == 1e-4 for b in bns)
    x = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    net.eval()
    with torch.no_grad():
        code, out = net.encode(x), net(x)
    assert code.shape == (5, 32)
    assert out.shape == (5, 1, 28, 28) and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="multiple of 16"):
        models.DCAE(rep_dim=20)


# ----------------------------------------------------------------------------- reconstruction error and head
def test_reconstruction_error_equals_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    out = torch.rand(4, 3, 5, 6, generator=g)
    target8 = torch.randint(0, 256, (4, 3, 5, 6), dtype=torch.uint8, generator=g)
    targetf = torch.rand(4, 3, 5, 6, generator=g) * 2    # a float target is taken as is (even above 1)
    o = out.double().numpy()
    for target, t in ((target8, target8.double().numpy() / 255), (targetf, targetf.double().numpy())):
        mse = losses.reconstruction_error(out, target, "mse")
        mae = losses.reconstruction_error(out, target, "mae")
        assert mse.shape == mae.shape == (4,)
        np.testing.assert_allclose(mse.numpy(), ((o - t) ** 2).reshape(4, -1).mean(1), rtol=1e-5)
        np.testing.assert_allclose(mae.numpy(), np.abs(o - t).reshape(4, -1).mean(1), rtol=1e-5)
    assert torch.equal(losses.reconstruction_error(out, target8), losses.reconstruction_error(out, target8, "mse"))
    assert losses.reconstruction_error(out, out, "mae").abs().max() == 0
    assert tuple(losses.RECONSTRUCTION_ERRORS) == ("mse", "mae")


def test_reconstruction_error_rejects_bad_shapes_and_kinds():
    out = torch.rand(2, 1, 5, 5)
    with pytest.raises(ValueError, match="same shape"):
        losses.reconstruction_error(out, torch.rand(2, 1, 5, 6))
    with pytest.raises(ValueError, match="same shape"):
        losses.reconstruction_error(out, torch.rand(3, 1, 5, 5))
    with pytest.raises(ValueError, match="unknown reconstruction error 'rmse'"):
        losses.reconstruction_error(out, out, "rmse")


def test_reconstruction_head():
    assert "reconstruction" in losses.RECONSTRUCTION_NAMES
    assert "reconstruction" not in losses.NAMES and "reconstruction" not in losses.PAIR_NAMES
    head = losses.make("reconstruction", emb_dim=8, n_classes=3)
    assert isinstance(head, losses.ReconstructionHead) and not losses.has_logits(head) and losses.uses_inputs(head)
    assert head.loss == "mae" and list(head.parameters()) == []
    assert not losses.uses_inputs(losses.make("softmax", emb_dim=8, n_classes=3))
    g = torch.Generator().manual_seed(0)
    out = torch.rand(5, 1, 6, 6, generator=g, requires_grad=True)
    x = torch.randint(0, 256, (5, 1, 6, 6), dtype=torch.uint8, generator=g)
    y = torch.zeros(5, dtype=torch.long)
    loss = head(out, y, inputs=x)
    assert loss.ndim == 0 and torch.allclose(loss, losses.reconstruction_error(out, x, "mae").mean())
    loss.backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    mse = losses.make("reconstruction", emb_dim=8, n_classes=3, loss="mse")
    assert torch.allclose(mse(out, y, inputs=x), losses.reconstruction_error(out, x, "mse").mean())
    head.reduction = "none"                                        # one loss per image
    assert torch.allclose(head(out, y, inputs=x), losses.reconstruction_error(out, x, "mae"))
    head.reduction = "mean"
    with pytest.raises(TypeError, match="inputs="):
        head(out, y)
    assert not hasattr(head, "logits")                              # nothing to classify with
    with pytest.raises(ValueError, match="unknown reconstruction loss"):
        losses.make("reconstruction", emb_dim=8, n_classes=3, loss="rmse")


# ----------------------------------------------------------------------------- training
@pytest.mark.parametrize("arch", models.AUTOENCODERS)
def test_fit_lowers_the_reconstruction_loss(arch, bar_images, trained_conv_ae):
    x = bars(256, size=28) if arch == "dcae" else bar_images   # DCAE takes 28×28 only
    _, _, hist = trained_conv_ae if arch == "conv_ae" else fit_ae(arch, x)
    assert list(hist.columns) == ["epoch", "train_loss", "lr", "seconds"]   # no test metrics without logits
    first, last = hist["train_loss"].iloc[0], hist["train_loss"].iloc[-1]
    assert np.isfinite(hist["train_loss"]).all()
    assert last < 0.5 * first, hist["train_loss"].tolist()


def test_denoising_training_is_seeded_and_noise_matters(bar_images):
    x = bar_images[:96]
    runs = [fit_ae("conv_ae", x, epochs=2, noise=0.2) for _ in range(2)]
    (m1, h1, hist1), (m2, h2, hist2) = runs
    pd.testing.assert_frame_equal(hist1.drop(columns="seconds"), hist2.drop(columns="seconds"))
    assert same_state(state(m1, h1), state(m2, h2))
    m0, h0, _ = fit_ae("conv_ae", x, epochs=2, noise=0.0)
    assert not same_state(state(m1, h1), state(m0, h0))
    m3, h3, _ = fit_ae("conv_ae", x, epochs=2, noise=0.2, seed=1)
    assert not same_state(state(m1, h1), state(m3, h3))


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_the_network_sees_the_noisy_batch_and_the_head_the_clean_one(bar_images, noise):
    x = bar_images[:64]
    torch.manual_seed(0)
    model = models.make_model("conv_ae", emb_dim=8)
    head = losses.make("reconstruction", emb_dim=8, n_classes=1)
    seen_model, seen_head = [], []
    model.register_forward_pre_hook(lambda m, args: seen_model.append(args[0].detach().clone()))
    real = head.forward

    def recording(output, y=None, inputs=None):
        seen_head.append(inputs.detach().clone())
        return real(output, y, inputs=inputs)

    head.forward = recording
    train.fit(model, head, x, torch.zeros(64, dtype=torch.long), epochs=1, bs=32, noise=noise,
              progress=False, device="cpu")
    assert len(seen_model) == len(seen_head) == 2
    rows = {bytes(r.numpy().tobytes()) for r in x}
    for net_in, clean in zip(seen_model, seen_head):
        assert clean.dtype == torch.uint8 and all(bytes(r.numpy().tobytes()) in rows for r in clean)
        if noise == 0:
            assert torch.equal(net_in, clean)
        else:
            assert net_in.dtype == torch.float32 and net_in.min() >= 0 and net_in.max() <= 1
            diff = net_in - clean.float() / 255
            assert 0.15 < diff.std() < 0.35       # noisy (clipping at 0 and 1 shrinks it below σ)


def test_mixup_with_the_reconstruction_head_is_refused(bar_images):
    model = models.make_model("conv_ae", emb_dim=8)
    head = losses.make("reconstruction", emb_dim=8, n_classes=1)
    before = state(model)
    with pytest.raises(ValueError, match="mixup"):
        train.fit(model, head, bar_images[:32], torch.zeros(32, dtype=torch.long), epochs=1, mixup=0.4,
                  progress=False, device="cpu")
    assert same_state(before, state(model))


def _classifier_run(**kw):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (48, 1, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.arange(48) % 3
    torch.manual_seed(0)
    model = models.SmallCNN(in_channels=1, emb_dim=8, width=4)
    head = losses.make("softmax", emb_dim=8, n_classes=3)
    hist = train.fit(model, head, x, y, epochs=2, bs=16, valid=(x, y), progress=False, device="cpu", **kw)
    return state(model, head), hist.drop(columns="seconds")


def test_classifier_training_is_unchanged_without_noise():
    omitted, zero, again = _classifier_run(), _classifier_run(noise=0.0), _classifier_run(noise=0)
    for s, h in (zero, again):
        assert same_state(omitted[0], s)
        pd.testing.assert_frame_equal(omitted[1], h)
    assert "test_acc" in omitted[1].columns
    noisy = _classifier_run(noise=0.2)          # a classifier may train on noisy inputs too
    assert not same_state(omitted[0], noisy[0])


def test_train_puts_noise_into_the_cache_key(isolated_env):
    x = bars(40)
    d = ImageData(x[:32], torch.zeros(32, dtype=torch.long), x[32:], torch.zeros(8, dtype=torch.long),
                  ["bar"], "synthetic", "bars")
    kw = dict(arch="conv_ae", emb_dim=8, epochs=1, bs=16, progress=False)
    plain = train.train(d, "reconstruction", hparams={"loss": "mae"}, **kw)
    noisy = train.train(d, "reconstruction", hparams={"loss": "mae"}, noise=0.1, **kw)
    assert plain.config["noise"] == 0.0 and noisy.config["noise"] == 0.1
    assert plain.key != noisy.key and not plain.from_cache and not noisy.from_cache
    assert "test_acc" not in noisy.history.columns
    again = train.train(d, "reconstruction", hparams={"loss": "mae"}, noise=0.1, **kw)
    assert again.from_cache and again.key == noisy.key
    assert same_state(state(again.model.cpu()), state(noisy.model.cpu()))


# ----------------------------------------------------------------------------- scores
def test_reconstruction_scores_are_per_image_and_higher_for_anomalies(trained_conv_ae):
    model = trained_conv_ae[0]
    normal = bars(60, seed=7)
    for other in (checkerboards(60), horizontal_bars(60)):
        sn = AE.reconstruction_scores(model, normal)
        sa = AE.reconstruction_scores(model, other, bs=7)      # batching changes nothing
        assert set(sn) == set(sa) == {"mse", "mae"}
        for kind in ("mse", "mae"):
            assert sn[kind].shape == sa[kind].shape == (60,)
            scores, is_anomaly = anomaly.pool(sn[kind], sa[kind])
            assert anomaly.auroc(scores, is_anomaly) > 0.9, (kind, sn[kind].mean(), sa[kind].mean())
    rec = train.embed(model, normal, bs=16)                      # an autoencoder's output: its reconstruction
    assert rec.shape == normal.shape and rec.dtype == torch.float32
    assert not model.training                                    # scored in eval mode
    sn = AE.reconstruction_scores(model, normal)
    assert torch.allclose(sn["mse"], losses.reconstruction_error(rec, normal, "mse"), atol=1e-6)
    assert torch.allclose(sn["mae"], losses.reconstruction_error(rec, normal, "mae"), atol=1e-6)
    one = AE.reconstruction_scores(model, normal[3:4])
    assert torch.allclose(one["mae"], sn["mae"][3:4], atol=1e-6)   # an image's score ignores its batch


def test_sigma_threshold_and_rates_by_hand():
    normal = torch.tensor([1.0, 2.0, 2.0, 3.0, 7.0])
    mean, std = 3.0, np.std([1, 2, 2, 3, 7])                      # ddof=0: sqrt(4.4)
    assert AE.sigma_threshold(normal) == pytest.approx(mean + 3 * std, rel=1e-12)
    assert AE.sigma_threshold(normal, n_sigma=1) == pytest.approx(mean + std, rel=1e-12)
    assert AE.sigma_threshold(normal) != pytest.approx(mean + 3 * np.std([1, 2, 2, 3, 7], ddof=1))
    with pytest.raises(ValueError, match="at least two"):
        AE.sigma_threshold(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="at least two"):
        AE.sigma_threshold(torch.tensor([]))

    scores = torch.tensor([0.1, 0.5, 0.9, 0.3, 0.8, 0.2, 0.95])
    is_anomaly = torch.tensor([False, False, False, False, True, True, True])
    r = AE.rates_at(scores, is_anomaly, 0.5)                 # flagged: > 0.5 (0.5 itself is kept)
    assert r == {"normal kept": pytest.approx(3 / 4), "anomalies caught": pytest.approx(2 / 3)}
    r = AE.rates_at(scores, is_anomaly, 1.0)
    assert r == {"normal kept": 1.0, "anomalies caught": 0.0}
    r = AE.rates_at(scores, is_anomaly, 0.0)
    assert r == {"normal kept": 0.0, "anomalies caught": 1.0}
    with pytest.raises(ValueError, match="both"):
        AE.rates_at(scores, torch.zeros(7, dtype=torch.bool), 0.5)
    with pytest.raises(ValueError, match="both"):
        AE.rates_at(scores, torch.ones(7, dtype=torch.bool), 0.5)


# ----------------------------------------------------------------------------- gaussian noise
def test_gaussian_noise():
    gray = torch.full((64, 1, 16, 16), 128, dtype=torch.uint8)
    out = augment.gaussian_noise(gray, 0.1, torch.Generator().manual_seed(0))
    assert out.shape == gray.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    diff = out - 128 / 255
    assert diff.std().item() == pytest.approx(0.1, rel=0.03) and abs(diff.mean().item()) < 0.005
    again = augment.gaussian_noise(gray, 0.1, torch.Generator().manual_seed(0))
    other = augment.gaussian_noise(gray, 0.1, torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and not torch.equal(out, other)
    xf = torch.rand(8, 3, 5, 5)
    copy = xf.clone()
    noisy = augment.gaussian_noise(xf, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(xf, copy)                                  # the input is not changed in place
    assert noisy.min() >= 0 and noisy.max() <= 1 and (noisy == 0).any() and (noisy == 1).any()  # clipped
    assert torch.equal(augment.gaussian_noise(gray, 0.0, torch.Generator().manual_seed(0)), gray.float() / 255)


# ----------------------------------------------------------------------------- the benchmark
BUDGET = B.BUDGETS["smoke"]
SETTINGS = [Setting("toy", 2, "cosine"), Setting("toy", 2, "euclidean")]
METHODS = {"softmax": losses.METHODS["softmax"], **B.AUTOENCODERS}
AE_ARCH = {"autoencoder": "conv_ae", "denoising AE": "conv_ae", "super-res AE": "superres_ae"}
KNN_KINDS = ["min", "mean5", "mean10", "mean_all"]


def toy_data(n_train: int = 20, n_test: int = 6, size: int = 16) -> ImageData:
    """10 classes of bars: class c < 5 a vertical bar at column 1 + 3c, c ≥ 5 a horizontal one at row
    1 + 3(c − 5); random brightness and faint noise."""
    g = torch.Generator().manual_seed(0)
    n = n_train + n_test
    xs, ys = [], []
    for c in range(10):
        x = torch.zeros(n, 1, size, size)
        p = 1 + 3 * (c % 5)
        if c < 5:
            x[:, 0, 2:size - 2, p:p + 2] = 1
        else:
            x[:, 0, p:p + 2, 2:size - 2] = 1
        x = x * (0.7 + 0.3 * torch.rand(n, 1, 1, 1, generator=g)) + 0.1 * torch.rand(x.shape, generator=g)
        xs.append(_to_uint8(x)), ys.append(torch.full((n,), c))
    x, y = torch.stack(xs, 1), torch.stack(ys, 1)             # n × 10 × …
    tr, te = slice(0, n_train), slice(n_train, n)
    return ImageData(x[tr].flatten(0, 1), y[tr].flatten(), x[te].flatten(0, 1), y[te].flatten(),
                     [str(c) for c in range(10)], "synthetic bars", "toy")


@pytest.fixture(scope="module")
def toy():
    return toy_data()


@pytest.fixture(scope="module")
def first(tmp_path_factory, toy):
    """One smoke run: 2 settings × 2 cases × (softmax + the 3 autoencoders), own cache and CSV."""
    root = tmp_path_factory.mktemp("ae_benchmark")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DML_CACHE", str(root / "cache"))
        mp.setenv("DML_OFFLINE", "1")
        trains = counting(mp, train, "train")
        df = B.run({"toy": toy}, SETTINGS, METHODS, BUDGET, root / "bench.csv", progress=False)
    return SimpleNamespace(df=df, csv=root / "bench.csv", cache=root / "cache", trains=trains)


def test_method_specs():
    assert set(B.AUTOENCODERS) == set(AE_ARCH)
    for name, spec in B.AUTOENCODERS.items():
        assert len(spec) == 3 and spec[0] == "reconstruction"
        assert B.is_reconstruction(name, None) and B.is_reconstruction(name, spec)
        assert B.method_arch(name, None, BUDGET, "toy") == AE_ARCH[name]
        assert B.cell_kinds(name, spec, BUDGET) == ["mse", "mae"]
    assert B.AUTOENCODERS["denoising AE"][2]["noise"] > 0 and "noise" not in B.AUTOENCODERS["autoencoder"][2]
    assert not B.is_reconstruction("softmax") and B.method_arch("softmax", None, BUDGET, "toy") == "cnn"
    assert B.cell_kinds("softmax", None, BUDGET) == KNN_KINDS
    assert B._spec("softmax", None) == ("softmax", {}, {})
    assert B._spec("x", ("arcface", {"m": 0.3})) == ("arcface", {"m": 0.3}, {})
    with pytest.raises(ValueError, match="not \\['epochs'\\]"):
        B._spec("bad", ("reconstruction", {}, {"epochs": 3}))
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        B._spec("nope", None)
    with pytest.raises(ValueError, match="train_kw"):
        B._spec("bad", ("reconstruction",))


def test_unknown_train_kw_key_stops_run_before_writing(toy, tmp_path):
    with pytest.raises(ValueError, match="train_kw may set"):
        B.run({"toy": toy}, SETTINGS[:1], {"bad AE": ("reconstruction", {}, {"arch": "conv_ae", "sigma": 0.1})},
              BUDGET, tmp_path / "b.csv", progress=False)
    assert not (tmp_path / "b.csv").exists() or B.read_results(tmp_path / "b.csv").empty


def test_run_writes_reconstruction_rows_with_their_arch(first):
    df = first.df
    assert list(pd.read_csv(first.csv, nrows=0).columns) == B.COLUMNS
    assert len(df) == len(SETTINGS) * BUDGET.n_cases * (len(KNN_KINDS) + 2 * len(B.AUTOENCODERS))
    assert set(df["method"]) == set(METHODS)
    for method, rows in df.groupby("method"):
        per_cell = rows.groupby(["metric", "case"])["score"].apply(sorted)
        assert len(per_cell) == len(SETTINGS) * BUDGET.n_cases
        if method in AE_ARCH:
            assert all(v == ["mae", "mse"] for v in per_cell), method
            assert set(rows["arch"]) == {AE_ARCH[method]}
        else:
            assert all(v == sorted(KNN_KINDS) for v in per_cell)
            assert set(rows["arch"]) == {"cnn"}
    assert df["auroc"].between(0, 1).all() and df["auroc"].notna().all()
    configs = df.groupby("method")["config"].unique()
    assert all(len(c) == 1 for c in configs) and len({c[0] for c in configs}) == len(METHODS)
    # one train.train call per cell; each network is trained once: the euclidean setting loads it from the cache
    assert len(first.trains) == len(SETTINGS) * BUDGET.n_cases * len(METHODS)
    assert {kw["arch"] for _, kw in first.trains} == {"cnn", "conv_ae", "superres_ae"}
    assert {kw.get("noise", 0) for _, kw in first.trains} == {0, B.AUTOENCODERS["denoising AE"][2]["noise"]}
    assert not df.loc[df["metric"] == "cosine", "from_cache"].any()
    assert df.loc[df["metric"] == "euclidean", "from_cache"].all()


def test_reconstruction_rows_ignore_the_metric(first):
    ae = first.df[first.df["method"].isin(list(AE_ARCH))]
    wide = ae.pivot_table(index=["case", "method", "score"], columns="metric", values="auroc")
    assert len(wide) == BUDGET.n_cases * len(AE_ARCH) * 2
    np.testing.assert_array_equal(wide["cosine"].to_numpy(), wide["euclidean"].to_numpy())


def test_the_auroc_of_an_autoencoder_row_is_its_reconstruction_scores(first, toy, monkeypatch):
    monkeypatch.setenv("DML_CACHE", str(first.cache))
    cs = B.score_case(toy, SETTINGS[0], 1, "super-res AE", BUDGET)
    assert cs.run.from_cache and cs.train_emb is None and cs.test_emb is None
    assert set(cs.scores) == {"mse", "mae"} and cs.anomalies == [1, 2]
    ref = AE.reconstruction_scores(cs.run.model, toy.x_test)
    df = first.df
    for kind in ("mse", "mae"):
        assert torch.allclose(cs.scores[kind], ref[kind])
        row = df[(df["metric"] == "cosine") & (df["case"] == 1) & (df["method"] == "super-res AE")
                 & (df["score"] == kind)]
        assert len(row) == 1
        assert row["auroc"].iloc[0] == pytest.approx(anomaly.auroc(ref[kind], cs.is_anomaly), abs=1e-12)


def test_rerun_reuses_every_cell(first, toy, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DML_CACHE", str(first.cache))
    csv = tmp_path / "bench.csv"
    shutil.copy(first.csv, csv)
    original = csv.read_bytes()
    cells = counting(monkeypatch, B, "run_case")
    df = B.run({"toy": toy}, SETTINGS, METHODS, BUDGET, csv, progress=False)
    n = len(SETTINGS) * BUDGET.n_cases * len(METHODS)
    assert capsys.readouterr().out.strip() == \
        f"bench.csv: {n} cells, {n} reused from the file (same settings, data and code), 0 computed"
    assert not cells and csv.read_bytes() == original
    pd.testing.assert_frame_equal(df, first.df)


def test_changing_the_denoising_noise_recomputes_only_that_method(first, toy, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DML_CACHE", str(first.cache))
    csv = tmp_path / "bench.csv"
    shutil.copy(first.csv, csv)
    head, hparams, kw = B.AUTOENCODERS["denoising AE"]
    methods = {**METHODS, "denoising AE": (head, hparams, {**kw, "noise": 0.3})}
    cells = counting(monkeypatch, B, "run_case")
    trains = counting(monkeypatch, train, "train")
    df = B.run({"toy": toy}, SETTINGS, methods, BUDGET, csv, progress=False)
    n, changed = len(SETTINGS) * BUDGET.n_cases * len(METHODS), len(SETTINGS) * BUDGET.n_cases
    assert capsys.readouterr().out.strip() == (f"bench.csv: {n} cells, {n - changed} reused from the file "
                                               f"(same settings, data and code), {changed} computed")
    assert {c[0][3] for c in cells} == {"denoising AE"} and len(cells) == changed
    assert len(trains) == changed and all(t[1]["noise"] == 0.3 for t in trains)
    dn = df[df["method"] == "denoising AE"]          # trained once per case; the euclidean cells load it
    assert not dn.loc[dn["metric"] == "cosine", "from_cache"].any()
    assert dn.loc[dn["metric"] == "euclidean", "from_cache"].all()
    old, new = (d.groupby("method")["config"].first() for d in (first.df, df))
    assert new["denoising AE"] != old["denoising AE"]
    assert (new.drop("denoising AE") == old.drop("denoising AE")).all()
    assert len(df) == len(first.df)
    assert len(B.read_results(csv)) == len(first.df) + changed * 2     # the old noise's rows stay in the file


def test_summary_and_table_show_autoencoders_beside_knn_methods(first):
    df = first.df
    for recon in ("mae", "mse"):
        s = B.summary(df, recon_score=recon)
        assert len(s) == len(SETTINGS) * len(METHODS) and (s["n_cases"] == BUDGET.n_cases).all()
        assert set(s["method"]) == set(METHODS)
        for method in METHODS:
            got = s[(s["metric"] == "cosine") & (s["method"] == method)]
            assert len(got) == 1
            want = "min" if method == "softmax" else recon
            rows = df[(df["metric"] == "cosine") & (df["method"] == method) & (df["score"] == want)]
            assert got["mean"].iloc[0] == pytest.approx(rows["auroc"].mean())
            assert got["arch"].iloc[0] == AE_ARCH.get(method, "cnn")
    mean5 = B.summary(df, "mean5")
    assert len(mean5) == len(SETTINGS) * len(METHODS)            # the AE rows are there with any kNN score
    sel = B.select_scores(df, "min", "mse")
    assert set(sel.loc[sel["method"] == "softmax", "score"]) == {"min"}
    assert set(sel.loc[sel["method"].isin(list(AE_ARCH)), "score"]) == {"mse"}
    with pytest.raises(ValueError, match="no 'mean30' scores"):
        B.summary(df[df["method"] == "softmax"], "mean30")
    t = B.table(df[df["method"] == "softmax"])
    assert list(t.index) == ["softmax"] and list(t.columns) == [s.label for s in SETTINGS]


def test_table_shows_autoencoders_beside_knn_methods(first):
    t = B.table(first.df)
    assert list(t.index) == list(METHODS) and list(t.columns) == [s.label for s in SETTINGS]
    assert all(" ± " in v for v in t.to_numpy().ravel())


