"""Shared fixtures: an isolated cache, tiny on-disk data sets written by hand, a small digits problem."""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from utils import data

# The tensors here are tiny, so threads buy nothing; and on a busy machine OpenMP's barriers make every
# op wait for a time slice (measured: 50 s instead of 0.5 s for the same 5-epoch fit on 2 loaded cores).
torch.set_num_threads(1)

IDX_STEMS = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Caches go to a fresh temporary folder (never the repo's data/); no DML_DATA unless a test sets it."""
    cache = tmp_path / "dml_cache"
    monkeypatch.setenv("DML_CACHE", str(cache))
    monkeypatch.delenv("DML_DATA", raising=False)
    monkeypatch.setenv("DML_OFFLINE", "1")
    return cache


@pytest.fixture
def no_local_data(tmp_path, monkeypatch):
    """Point the project's data/ and /usr/share/datasets at empty folders, so nothing is found."""
    empty = tmp_path / "empty"
    (empty / "project").mkdir(parents=True)
    (empty / "debian").mkdir()
    monkeypatch.setattr(data, "PROJECT_DATA", empty / "project")
    monkeypatch.setattr(data, "DEBIAN_DATA", empty / "debian")
    return empty


# ----------------------------------------------------------------------------- MNIST-style idx files
def idx_bytes(a: np.ndarray) -> bytes:
    """An unsigned-byte idx file: magic 0x0000 08 <ndim>, big-endian int32 dims, raw bytes."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    head = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return head + a.tobytes()


def mnist_arrays(n_train: int = 30, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Random 28×28 uint8 images with a marker pixel (image i has value i at (0, 0)); labels i % 10."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        x[:, 0, 0] = np.arange(n)
        out[f"x_{split}"], out[f"y_{split}"] = x, (np.arange(n) % 10).astype(np.uint8)
    return out


def write_mnist(folder: Path, arrays: dict[str, np.ndarray], gz: bool = True) -> Path:
    """The four canonical idx files (gzipped or not) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in IDX_STEMS.items():
        raw = idx_bytes(arrays[key])
        (folder / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(raw) if gz else raw)
    return folder


@pytest.fixture
def mnist_root(tmp_path):
    """`<root>/mnist/` holding gzipped idx files of 30 train / 10 test images; returns (root, arrays)."""
    arrays = mnist_arrays()
    root = tmp_path / "datasets"
    write_mnist(root / "mnist", arrays)
    return root, arrays


# ----------------------------------------------------------------------------- CIFAR-10 pickles
def write_cifar(folder: Path, per_batch: int = 2, n_test: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """`data_batch_1..5` and `test_batch` as CIFAR-10's python pickles: {'data': N×3072, 'labels': list}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        x = rng.integers(0, 200, size=(n, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": x, "labels": y, "batch_label": name}, f)
        xs.append(x), ys.append(y)
    return {"x_train": np.concatenate(xs[:5]), "y_train": np.concatenate(ys[:5]),
            "x_test": xs[5], "y_test": np.asarray(ys[5])}


# ----------------------------------------------------------------------------- image folders
def write_image_folder(folder: Path, counts: dict[str, tuple[int, int]], size: int = 12,
                       mode: str = "RGB") -> Path:
    """`folder/{train,test}/<class>/<i>.png`; image i of class k is filled with value 10·k + i."""
    from PIL import Image

    for k, (cls, (n_train, n_test)) in enumerate(counts.items()):
        for split, n in (("train", n_train), ("test", n_test)):
            d = folder / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                shape = (size, size, 3) if mode == "RGB" else (size, size)
                Image.fromarray(np.full(shape, 10 * k + i, dtype=np.uint8), mode).save(d / f"{i}.png")
    return folder


# ----------------------------------------------------------------------------- real (offline) data
@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits at 28×28 (offline)."""
    return data.load_digits28()


@pytest.fixture(scope="session")
def small_digits(digits):
    """20 train and 10 test images per class: a problem a tiny CNN learns in a few CPU seconds."""
    return digits.per_class(n_train=20, n_test=10, seed=0)


# ----------------------------------------------------------------------------- writers, as fixtures
@pytest.fixture
def writers():
    """The writers above, for tests that build their own variants (`writers.mnist(folder, arrays)`, …)."""
    class W:
        idx_bytes = staticmethod(idx_bytes)
        mnist_arrays = staticmethod(mnist_arrays)
        mnist = staticmethod(write_mnist)
        cifar = staticmethod(write_cifar)
        image_folder = staticmethod(write_image_folder)
    return W


@pytest.fixture(scope="session")
def recognizer(digits, tmp_path_factory):
    """A small real draw-a-digit recognizer (`app.recognizer`): a CNN trained 3 epochs on the digits, seconds."""
    from app.recognizer import Recognizer

    with pytest.MonkeyPatch.context() as mp:  # its training cache goes to a folder of its own
        mp.setenv("DML_CACHE", str(tmp_path_factory.mktemp("recognizer_cache")))
        mp.setenv("DML_OFFLINE", "1")
        return Recognizer.build(digits, epochs=3, score="energy")


@pytest.fixture(scope="session")
def digit_png(digits):
    """A test digit (a 1) drawn as on a canvas: dark ink on white, 280×280, as PNG bytes."""
    import io

    from PIL import Image

    ink = Image.fromarray(255 - digits.x_test[0, 0].numpy()).resize((280, 280), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    ink.save(buf, format="PNG")
    return buf.getvalue()
