"""Data loading from hand-written tiny fixtures: idx files, CIFAR pickles, image folders, errors,
the offline digits set, class selection / subsampling, grayscale conversion and the decode cache."""
from __future__ import annotations

import gzip
import os
import warnings

import numpy as np
import pytest
import torch

from utils import data


def assert_matches(d: data.ImageData, arrays: dict[str, np.ndarray]) -> None:
    """`d` holds exactly the MNIST-style arrays: N×1×28×28 uint8, int64 labels, same values."""
    for split in ("train", "test"):
        x, y = getattr(d, f"x_{split}"), getattr(d, f"y_{split}")
        n = len(arrays[f"y_{split}"])
        assert x.shape == (n, 1, 28, 28) and x.dtype == torch.uint8
        assert y.shape == (n,) and y.dtype == torch.int64
        assert np.array_equal(x[:, 0].numpy(), arrays[f"x_{split}"])
        assert np.array_equal(y.numpy(), arrays[f"y_{split}"].astype(np.int64))


# ----------------------------------------------------------------------------- MNIST idx files
def test_mnist_gz_from_root(mnist_root, no_local_data):
    root, arrays = mnist_root
    d = data.load("mnist", root=root, download=False)
    assert_matches(d, arrays)
    assert (len(d.y_train), len(d.y_test)) == (30, 10)
    assert d.classes == [str(i) for i in range(10)]
    assert d.name == "mnist"
    assert "mnist" in d.source and str(root) in d.source


def test_mnist_from_dml_data(mnist_root, no_local_data, monkeypatch):
    root, arrays = mnist_root
    monkeypatch.setenv("DML_DATA", str(root))
    d = data.load("mnist", download=False)
    assert_matches(d, arrays)
    assert "DML_DATA" in d.source and "mnist" in d.source


@pytest.mark.parametrize("layout", ["plain", "raw", "raw_gz"])
def test_mnist_uncompressed_and_torchvision_raw_layouts(tmp_path, writers, no_local_data, layout):
    """Un-gzipped idx files, and torchvision's `MNIST/raw/` folder (gzipped or not)."""
    arrays = writers.mnist_arrays(n_train=12, n_test=5, seed=1)
    if layout == "plain":
        writers.mnist(tmp_path / "mnist", arrays, gz=False)
    else:
        writers.mnist(tmp_path / "MNIST" / "raw", arrays, gz=layout == "raw_gz")
    d = data.load("mnist", root=tmp_path, download=False)
    assert_matches(d, arrays)


def test_mnist_folder_given_directly_as_root(tmp_path, writers, no_local_data):
    arrays = writers.mnist_arrays(n_train=12, n_test=5)
    writers.mnist(tmp_path / "somewhere", arrays)
    assert_matches(data.load("mnist", root=tmp_path / "somewhere", download=False), arrays)


def test_read_idx_round_trip(tmp_path, writers):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(writers.idx_bytes(a))
    (tmp_path / "a.gz").write_bytes(gzip.compress(writers.idx_bytes(a)))
    assert np.array_equal(data.read_idx(tmp_path / "a"), a)
    assert np.array_equal(data.read_idx(tmp_path / "a.gz"), a)


@pytest.mark.parametrize("damage", ["truncated_body", "truncated_gz", "not_gzip", "bad_magic", "header_only"])
def test_corrupted_idx_gives_clear_value_error(tmp_path, writers, no_local_data, damage):
    arrays = writers.mnist_arrays(n_train=12, n_test=5)
    folder = writers.mnist(tmp_path / "mnist", arrays)
    victim = folder / "train-images-idx3-ubyte.gz"
    raw = writers.idx_bytes(arrays["x_train"])
    if damage == "truncated_body":      # complete gzip stream, but the idx data is cut short
        victim.write_bytes(gzip.compress(raw[:-100]))
    elif damage == "truncated_gz":      # an interrupted download: the gzip stream itself ends early
        victim.write_bytes(victim.read_bytes()[:200])
    elif damage == "not_gzip":
        victim.write_bytes(b"<html>404 not found</html>")
    elif damage == "bad_magic":
        victim.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + raw[4:]))
    else:
        victim.write_bytes(gzip.compress(raw[:6]))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        data.load("mnist", root=tmp_path, download=False)


def test_image_and_label_counts_must_agree(tmp_path, writers, no_local_data):
    arrays = writers.mnist_arrays(n_train=12, n_test=5)
    arrays["y_train"] = arrays["y_train"][:-1]
    writers.mnist(tmp_path / "mnist", arrays)
    with pytest.raises(ValueError, match="differ"):
        data.load("mnist", root=tmp_path, download=False)


# ----------------------------------------------------------------------------- CIFAR-10 pickles
def test_cifar_pickles_channel_layout(tmp_path, writers, no_local_data):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    arrays = writers.cifar(folder, per_batch=2, n_test=4)
    d = data.load("cifar10", root=tmp_path, download=False)
    assert d.x_train.shape == (10, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
    assert d.x_train.dtype == torch.uint8 and d.y_train.dtype == torch.int64
    assert d.y_train.tolist() == arrays["y_train"].tolist() and d.y_test.tolist() == arrays["y_test"].tolist()
    assert d.classes == data.CIFAR10_CLASSES
    # CIFAR rows are the red plane (1024 values, row-major), then green, then blue
    row = arrays["x_train"][3]
    assert np.array_equal(d.x_train[3].numpy().reshape(-1), row)
    assert int(d.x_train[3, 0, 5, 7]) == row[5 * 32 + 7]
    assert int(d.x_train[3, 1, 5, 7]) == row[1024 + 5 * 32 + 7]


def test_cifar_pixel_set_in_red_plane_is_channel_0(tmp_path, writers, no_local_data):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    writers.cifar(folder, per_batch=1, n_test=1)
    with open(folder / "test_batch", "rb") as f:
        import pickle
        batch = pickle.load(f)
    batch["data"][0] = 0
    batch["data"][0, 2 * 32 + 9] = 255          # red plane, row 2, column 9
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch, f)
    x = data.load("cifar10", root=tmp_path, download=False).x_test[0]
    assert int(x[0, 2, 9]) == 255
    assert int(x.sum()) == 255                  # nowhere else: not in green/blue, not transposed


# ----------------------------------------------------------------------------- image folders
COUNTS = {"zebra": (3, 1), "ant": (2, 2), "moth": (1, 1)}


def test_image_folder_by_path(tmp_path, writers):
    folder = writers.image_folder(tmp_path / "shapes", COUNTS)
    d = data.load(str(folder))
    assert d.classes == ["ant", "moth", "zebra"]                  # sorted
    assert d.x_train.shape == (6, 3, 12, 12) and d.x_test.shape == (4, 3, 12, 12)
    assert d.x_train.dtype == torch.uint8 and d.y_train.dtype == torch.int64
    assert d.y_train.tolist() == [0, 0, 1, 2, 2, 2] and d.y_test.tolist() == [0, 0, 1, 2]
    # image i of class k (in COUNTS' order) was filled with 10·k + i
    assert d.x_train[0].unique().tolist() == [10]                 # ant/0.png
    assert d.x_train[3].unique().tolist() == [0]                  # zebra/0.png
    assert "shapes" in d.source and d.name == "shapes"


def test_grayscale_image_folder_has_one_channel(tmp_path, writers):
    folder = writers.image_folder(tmp_path / "g", {"a": (2, 1), "b": (1, 1)}, mode="L")
    assert data.load(str(folder)).x_train.shape == (3, 1, 12, 12)


def test_folder_without_splits_is_refused(tmp_path):
    (tmp_path / "flat" / "cat").mkdir(parents=True)
    with pytest.raises(data.DataNotFound, match="train"):
        data.load(str(tmp_path / "flat"))


def test_cifar10_name_finds_an_image_folder(tmp_path, writers, no_local_data):
    writers.image_folder(tmp_path / "cifar10", {"cat": (2, 1), "airplane": (1, 1)}, size=32)
    d = data.load("cifar10", root=tmp_path, download=False)
    assert d.classes == ["airplane", "cat"]
    assert d.x_train.shape == (3, 3, 32, 32) and d.y_train.tolist() == [0, 1, 1]


# ----------------------------------------------------------------------------- errors and fallback
def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as e:
        data.load("imagenet-nope", download=False)
    for name in data.NAMES:
        assert name in str(e.value)


def test_nothing_found_explains_where_it_looked(tmp_path, no_local_data):
    with pytest.raises(data.DataNotFound) as e:
        data.load("mnist", root=tmp_path, download=False)
    msg = str(e.value)
    assert str(tmp_path) in msg and "mnist" in msg
    assert "data/mnist" in msg                     # the project's data/ folder was looked in too
    assert "digits" in msg and "DML_DATA" in msg
    assert isinstance(e.value, FileNotFoundError)


def test_nothing_found_lists_dml_data_when_set(tmp_path, no_local_data, monkeypatch):
    monkeypatch.setenv("DML_DATA", str(tmp_path))
    with pytest.raises(data.DataNotFound, match=r"\$DML_DATA/mnist"):
        data.load("mnist", download=False)


def test_offline_download_is_not_attempted(no_local_data, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("tried to download")
    monkeypatch.setattr(data, "_download", boom)
    with pytest.raises(data.DataNotFound, match="DML_OFFLINE"):
        data.load("fashion_mnist", download=True)


def test_fallback_warns_and_returns_digits(tmp_path, no_local_data):
    with pytest.warns(UserWarning, match="digits"):
        d = data.load("cifar10", root=tmp_path, download=False, fallback="digits")
    assert d.name == "digits" and d.x_train.shape[1:] == (1, 28, 28)
    assert len(d.notes) == 1 and "cifar10" in d.notes[0] and "digits" in d.notes[0]


# ----------------------------------------------------------------------------- digits
def test_digits_offline_shape_and_split(no_local_data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # no fallback warning: digits is always there
        d = data.load("digits", download=False)
    assert d.x_train.shape == (1347, 1, 28, 28) and d.x_test.shape == (450, 1, 28, 28)
    assert d.x_train.dtype == torch.uint8 and d.y_train.dtype == torch.int64
    assert d.classes == [str(i) for i in range(10)]
    assert sorted(d.y_train.unique().tolist()) == list(range(10))
    assert int(d.x_train.max()) == 255 and int(d.x_train[:, :, :4].max()) == 0   # centred, 4-pixel border


def test_digits_is_deterministic(digits):
    again = data.load_digits28()
    assert torch.equal(again.x_train, digits.x_train) and torch.equal(again.y_test, digits.y_test)


def test_photos_offline_patches_are_seeded_and_disjoint(no_local_data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = data.load("photos", download=False)
    assert p.x_train.shape == (2000, 3, 32, 32) and p.x_test.shape == (500, 3, 32, 32)
    assert p.x_train.dtype == torch.uint8 and p.classes == ["china", "flower"]
    assert torch.bincount(p.y_test).tolist() == [250, 250]
    assert p.x_train.float().std() > 20                      # real texture, not a constant
    again = data.load_photos()
    assert torch.equal(again.x_train, p.x_train)              # seeded
    assert not torch.equal(data.load_photos(seed=1).x_train, p.x_train)
    assert data.to_gray28(p.x_test).shape == (500, 1, 28, 28)


# ----------------------------------------------------------------------------- selection
def test_select_relabels_in_given_order_and_keeps_class_names():
    x = torch.arange(8).view(8, 1, 1, 1).to(torch.uint8)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    d = data.ImageData(x, y, x[:4], y[:4], ["a", "b", "c", "d"], "test")
    s = d.select([3, 1])
    assert s.x_train.flatten().tolist() == [1, 3, 5, 7] and s.x_test.flatten().tolist() == [1, 3]
    assert s.y_train.tolist() == [1, 0, 1, 0] and s.classes == ["d", "b"]   # class 3 -> 0, class 1 -> 1
    kept = d.select([3, 1], relabel=False)
    assert kept.y_train.tolist() == [1, 3, 1, 3] and kept.classes == d.classes


def test_image_data_select_renames_classes(digits):
    d = digits.select([7, 2])
    assert d.classes == ["7", "2"] and set(d.y_train.tolist()) == {0, 1}
    assert torch.equal(d.x_train[d.y_train == 0], digits.x_train[digits.y_train == 7])


def test_per_class_subsamples_both_splits(digits):
    d = digits.per_class(n_train=5, n_test=3, seed=0)
    assert torch.bincount(d.y_train).tolist() == [5] * 10
    assert torch.bincount(d.y_test).tolist() == [3] * 10


# ----------------------------------------------------------------------------- grayscale
def test_to_gray28_shape_and_dtype():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    g = data.to_gray28(x)
    assert g.shape == (4, 1, 28, 28) and g.dtype == torch.uint8


@pytest.mark.parametrize("channel,weight", [(0, 0.299), (1, 0.587), (2, 0.114)])
def test_to_gray28_luma_of_pure_colours(channel, weight):
    x = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    x[:, channel] = 255
    g = data.to_gray28(x)
    assert g.unique().tolist() == [round(255 * weight)]


def test_to_gray28_keeps_gray_28x28_images():
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(data.to_gray28(x), x)


# ----------------------------------------------------------------------------- decode cache
def test_second_load_is_served_from_cache(mnist_root, no_local_data, isolated_env, monkeypatch):
    root, arrays = mnist_root
    first = data.load("mnist", root=root, download=False)
    cached = list(isolated_env.glob("mnist-*.pt"))
    assert len(cached) == 1
    monkeypatch.setattr(data, "read_idx", lambda *a: pytest.fail("decoded again instead of using the cache"))
    second = data.load("mnist", root=root, download=False)
    assert_matches(second, arrays)
    assert torch.equal(first.x_train, second.x_train)


def test_changed_source_file_is_not_served_stale(mnist_root, writers, no_local_data, isolated_env):
    root, arrays = mnist_root
    assert_matches(data.load("mnist", root=root, download=False), arrays)
    path = root / "mnist" / "train-images-idx3-ubyte.gz"
    before = path.stat()
    changed = dict(arrays, x_train=255 - arrays["x_train"])          # same shape, different pixels
    writers.mnist(root / "mnist", changed)
    if path.stat().st_mtime_ns == before.st_mtime_ns:                # coarse file-system clock: the
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # edit lands a tick later
    assert_matches(data.load("mnist", root=root, download=False), changed)
    assert len(list(isolated_env.glob("mnist-*.pt"))) == 2           # a new key, not an overwrite


def _png(path, pixels, mode: str, palette: list[int] | None = None, mtime_bump: bool = False) -> None:
    """Save `pixels` (a numpy array) as a PNG of PIL `mode` at `path` (creating folders); with
    `mtime_bump`, make sure the file's mtime differs from the previous one even on a coarse clock."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    before = path.stat() if path.exists() else None
    im = Image.fromarray(np.asarray(pixels)) if mode in ("I;16", "1") else Image.fromarray(np.asarray(pixels), mode)
    if mode == "1":
        im = im.convert("1")
    if palette is not None:
        im.putpalette(palette)
    im.save(path)
    if mtime_bump and before is not None and path.stat().st_mtime_ns <= before.st_mtime_ns:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))


def _split_folder(real, fill: int) -> None:
    """`real/{train,test}/{a,b}/0.png`: 4×4 RGB images; class a is filled with `fill`, b with `fill + 1`."""
    for split in ("train", "test"):
        for k, cls in enumerate("ab"):
            _png(real / split / cls / "0.png", np.full((4, 4, 3), fill + k, np.uint8), "RGB")


def _symlinked_cifar_root(base, fill: int):
    """`base/root/cifar10/{train,test}` are symlinks to `base/real/{train,test}`; returns (root, real)."""
    real, root = base / "real", base / "root"
    _split_folder(real, fill)
    (root / "cifar10").mkdir(parents=True)
    for split in ("train", "test"):
        (root / "cifar10" / split).symlink_to(real / split, target_is_directory=True)
    return root, real


def test_cache_follows_symlinked_split_folders(tmp_path, no_local_data, isolated_env):
    """An edited image behind symlinked train/ and test/ folders is decoded again, not served stale."""
    root, real = _symlinked_cifar_root(tmp_path, fill=10)
    d = data.load("cifar10", root=root, download=False)
    assert d.x_train[0].unique().tolist() == [10]
    _png(real / "train" / "a" / "0.png", np.full((4, 4, 3), 200, np.uint8), "RGB", mtime_bump=True)
    d = data.load("cifar10", root=root, download=False)
    assert d.x_train[0].unique().tolist() == [200] and d.x_train[1].unique().tolist() == [11]
    assert len(list(isolated_env.glob("cifar10-*.pt"))) == 2         # a new key, not an overwrite


def test_cache_keeps_roots_with_the_same_data_set_name_apart(tmp_path, no_local_data, isolated_env):
    root1, _ = _symlinked_cifar_root(tmp_path / "one", fill=10)
    root2, _ = _symlinked_cifar_root(tmp_path / "two", fill=50)
    assert data.load("cifar10", root=root1, download=False).x_train[0].unique().tolist() == [10]
    assert data.load("cifar10", root=root2, download=False).x_train[0].unique().tolist() == [50]
    assert data.load("cifar10", root=root1, download=False).x_train[0].unique().tolist() == [10]


def test_signature_survives_a_symlink_cycle(tmp_path):
    real = tmp_path / "real"
    _split_folder(real, fill=0)
    (real / "train" / "loop").symlink_to(real, target_is_directory=True)     # train/loop -> its grandparent
    assert [rel for rel, _ in data._files_under(real)] == ["test/a/0.png", "test/b/0.png",
                                                          "train/a/0.png", "train/b/0.png"]   # each once
    assert len(data._signature([real])) == 16


# ----------------------------------------------------------------------------- atomic cache writes
def test_atomic_save_round_trip_creates_parent_folders(tmp_path):
    target = tmp_path / "a" / "b" / "t.pt"
    data.atomic_save({"x": torch.arange(3)}, str(target))
    assert torch.equal(torch.load(target, weights_only=True)["x"], torch.arange(3))
    assert [p.name for p in target.parent.iterdir()] == ["t.pt"]           # no temporary file left


def _failing_save(obj, f, *args, **kwargs):
    """torch.save that writes a few bytes, then fails (disk full, killed, …)."""
    if hasattr(f, "write"):
        f.write(b"PK\x03\x04 partial")
        f.flush()
    else:
        with open(f, "wb") as g:
            g.write(b"PK\x03\x04 partial")
    raise OSError("no space left on device")


@pytest.mark.parametrize("old", [False, True])
def test_atomic_save_failure_leaves_no_partial_file(tmp_path, monkeypatch, old):
    target = tmp_path / "t.pt"
    if old:
        data.atomic_save(torch.ones(2), target)
    monkeypatch.setattr(torch, "save", _failing_save)
    with pytest.raises(OSError, match="no space"):
        data.atomic_save(torch.zeros(5), target)
    assert [p.name for p in tmp_path.iterdir()] == (["t.pt"] if old else [])
    if old:                                                           # the old, complete file
        assert torch.equal(torch.load(target, weights_only=True), torch.ones(2))


def test_failed_cache_write_leaves_no_partial_cache(mnist_root, no_local_data, isolated_env, monkeypatch):
    root, arrays = mnist_root
    monkeypatch.setattr(torch, "save", _failing_save)
    with pytest.raises(OSError, match="no space"):
        data.load("mnist", root=root, download=False)
    assert list(isolated_env.iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setenv("DML_CACHE", str(isolated_env))
    monkeypatch.setenv("DML_OFFLINE", "1")
    assert_matches(data.load("mnist", root=root, download=False), arrays)


# ----------------------------------------------------------------------------- image modes
GRAY4 = [0, 0, 0, 85, 85, 85, 170, 170, 170, 255, 255, 255]        # a gray palette: index i -> 85·i
COLOUR4 = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]                # black, red, green, blue
INDICES = np.array([[0, 1], [2, 3]], np.uint8)


def _read(folder, **kw):
    x, = data._stack_images([(folder, data._decode_folder(folder, None)[0])], kw.get("size"))
    assert x.dtype == torch.uint8 and x.ndim == 4
    return x


def test_gray_palette_png_gives_gray_levels_not_indices(tmp_path):
    _png(tmp_path / "f" / "a" / "0.png", INDICES, "P", palette=GRAY4)
    x = _read(tmp_path / "f")
    assert x.shape == (1, 1, 2, 2)
    assert x[0, 0].tolist() == [[0, 85], [170, 255]]


def test_colour_palette_png_gives_rgb(tmp_path):
    _png(tmp_path / "f" / "a" / "0.png", INDICES, "P", palette=COLOUR4)
    x = _read(tmp_path / "f")
    assert x.shape == (1, 3, 2, 2)
    assert x[0, :, 0, 1].tolist() == [255, 0, 0] and x[0, :, 1, 0].tolist() == [0, 255, 0]
    assert x[0, :, 1, 1].tolist() == [0, 0, 255] and x[0, :, 0, 0].tolist() == [0, 0, 0]


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    _png(tmp_path / "f" / "a" / "0.png", np.array([[0, 257], [128 * 257, 65535]], np.uint16), "I;16")
    x = _read(tmp_path / "f")
    assert x.shape == (1, 1, 2, 2)
    assert x[0, 0].tolist() == [[0, 1], [128, 255]]


def test_bilevel_png_gives_0_and_255(tmp_path):
    _png(tmp_path / "f" / "a" / "0.png", np.array([[0, 255], [255, 0]], np.uint8), "1")
    x = _read(tmp_path / "f")
    assert x.shape == (1, 1, 2, 2)
    assert x[0, 0].tolist() == [[0, 255], [255, 0]]


def test_gray_alpha_png_is_composited_on_black(tmp_path):
    la = np.array([[[200, 255], [200, 0]], [[100, 51], [255, 255]]], np.uint8)   # (gray, alpha) pairs
    _png(tmp_path / "f" / "a" / "0.png", la, "LA")
    x = _read(tmp_path / "f")
    assert x.shape == (1, 1, 2, 2)
    assert x[0, 0].tolist() == [[200, 0], [20, 255]]


def test_rgba_png_is_composited_on_black(tmp_path):
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = [200, 100, 50, 255]
    rgba[0, 1] = [200, 100, 50, 51]                                   # alpha 0.2
    _png(tmp_path / "f" / "a" / "0.png", rgba, "RGBA")
    x = _read(tmp_path / "f")
    assert x.shape == (1, 3, 1, 2)
    assert x[0, :, 0, 0].tolist() == [200, 100, 50] and x[0, :, 0, 1].tolist() == [40, 20, 10]


@pytest.mark.parametrize("size", [None, (2, 2)])
def test_folder_mixing_palette_and_rgb_images(tmp_path, size):
    _png(tmp_path / "f" / "a" / "0.png", INDICES, "P", palette=COLOUR4)
    _png(tmp_path / "f" / "a" / "1.png", INDICES, "P", palette=GRAY4)     # a gray palette, in an RGB set
    _png(tmp_path / "f" / "b" / "0.png", np.full((2, 2, 3), [1, 2, 3], np.uint8), "RGB")
    x = _read(tmp_path / "f", size=size)
    assert x.shape == (3, 3, 2, 2)
    assert x[0, :, 0, 1].tolist() == [255, 0, 0]
    assert x[1, :, 1, 0].tolist() == [170, 170, 170]                  # gray, replicated to 3 channels
    assert x[2, :, 0, 0].tolist() == [1, 2, 3]


def test_folder_mixing_gray_palette_and_gray_images_stays_gray(tmp_path):
    _png(tmp_path / "f" / "a" / "0.png", INDICES, "P", palette=GRAY4)
    _png(tmp_path / "f" / "b" / "0.png", np.full((2, 2), 7, np.uint8), "L")
    _png(tmp_path / "f" / "b" / "1.png", np.array([[0, 65535], [0, 0]], np.uint16), "I;16")
    x = _read(tmp_path / "f")
    assert x.shape == (3, 1, 2, 2)
    assert x[0, 0].tolist() == [[0, 85], [170, 255]] and x[1].unique().tolist() == [7]
    assert x[2, 0].tolist() == [[0, 255], [0, 0]]


def test_train_and_test_folders_agree_on_channels(tmp_path):
    """A gray train/ and a test/ holding one colour image: both splits become RGB."""
    for split in ("train", "test"):
        _png(tmp_path / "s" / split / "a" / "0.png", np.full((3, 3), 9, np.uint8), "L")
    _png(tmp_path / "s" / "test" / "a" / "1.png", np.full((3, 3, 3), [9, 8, 7], np.uint8), "RGB")
    d = data.load(str(tmp_path / "s"))
    assert d.x_train.shape == (1, 3, 3, 3) and d.x_test.shape == (2, 3, 3, 3)
    assert d.x_train[0, :, 0, 0].tolist() == [9, 9, 9] and d.x_test[1, :, 0, 0].tolist() == [9, 8, 7]


# ----------------------------------------------------------------------------- to_gray28 channels
def test_to_gray28_drops_alpha_then_takes_luma():
    x = torch.zeros(1, 4, 28, 28, dtype=torch.uint8)
    x[:, 0] = 255                                                      # pure red …
    x[:, 3] = 0                                                        # … fully transparent: alpha ignored
    g = data.to_gray28(x)
    assert g.shape == (1, 1, 28, 28) and g.unique().tolist() == [round(255 * 0.299)]


def test_to_gray28_keeps_the_gray_of_gray_alpha():
    x = torch.randint(0, 256, (2, 2, 28, 28), dtype=torch.uint8)
    assert torch.equal(data.to_gray28(x), x[:, :1])


@pytest.mark.parametrize("shape", [(1, 5, 28, 28), (1, 0, 28, 28), (3, 28, 28)])
def test_to_gray28_rejects_other_shapes(shape):
    with pytest.raises(ValueError, match=r"to_gray28.*" + r"\D*".join(map(str, shape))):
        data.to_gray28(torch.zeros(shape, dtype=torch.uint8))


def test_32bit_and_float_images_share_one_scale_per_data_set(tmp_path):
    """"I" images within 0..65535 are 16-bit content; wider ones full-range 32-bit; "F" 0..1 or 0..255."""
    def stack(*images):
        x, = data._stack_images([(tmp_path, list(images))], None)
        assert x.dtype == torch.uint8 and x.shape[1] == 1
        return x[:, 0, 0].tolist()

    i16 = np.array([[0, 257, 65535]], np.int32)
    assert stack((i16, "I")) == [[0, 1, 255]]
    assert stack((i16, "I"), (np.array([[0, 0, 2**31 - 1]], np.int32), "I")) == [[0, 0, 0], [0, 0, 255]]
    assert stack((np.array([[0, 0.5, 1]], np.float32), "F")) == [[0, 128, 255]]
    assert stack((np.array([[0, 0.5, 200]], np.float32), "F")) == [[0, 0, 200]]
    with pytest.raises(ValueError, match="re-save"):
        stack((np.array([[-1, 0, 1]], np.float32), "F"))
