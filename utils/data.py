"""Data sets as in-memory tensors: uint8 images N×C×H×W, int64 labels, class names, provenance; local copies
first (`$DML_DATA`, data/, Debian), downloads otherwise (utils/README.md: the sets and where they are looked for)."""
from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import secrets
import shutil
import warnings
import zipfile
import zlib
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F

from .cache import key as cache_key

PROJECT_DATA = Path(__file__).resolve().parent.parent / "data"
DEBIAN_DATA = Path("/usr/share/datasets")
CACHE_VERSION = 2  # bump when decoding changes, so old caches are never reused

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
FACE_CLASSES = [f"s{i}" for i in range(1, 41)]        # the AT&T faces' folders s1..s40, one per person
FACES_TRAIN = 7              # AT&T faces: images 1–7 of every person train, 8–10 test
OMNIGLOT_TEST_DRAWERS = 4    # Omniglot: per character, the last 4 drawers (by drawer id) test, the rest train

# name -> (folder names to look for under a data root, class names)
KNOWN = {
    "mnist": (["mnist", "MNIST"], MNIST_CLASSES),
    "fashion_mnist": (["fashion_mnist", "fashion-mnist", "FashionMNIST"], FASHION_CLASSES),
    "cifar10": (["cifar10", "cifar-10", "CIFAR10"], CIFAR10_CLASSES),
    "att_faces": (["att_faces", "att-faces", "orl_faces"], FACE_CLASSES),
    "omniglot": (["omniglot", "Omniglot", "omniglot-py"], []),    # class names come from the data
    "digits": ([], MNIST_CLASSES),
    "photos": ([], ["china", "flower"]),
}
NAMES = sorted(KNOWN)

# name -> (what to put under <root>/<folder>/ for a local copy, what else to do): `load`'s fix message
HOW_TO_GET = {
    "mnist": ("the four idx .gz files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
              "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)",
              "or use the offline data set 'digits' (scikit-learn's bundled handwritten digits)"),
    "cifar10": ("train/<class>/ and test/<class>/ image folders, or CIFAR-10's python pickles "
                "(data_batch_1..5, test_batch)",
                "or use the offline data set 'digits' (or 'photos', natural-image patches)"),
    "att_faces": ("the folders s1/ … s40/ of the AT&T faces, each holding 1.pgm … 10.pgm",
                  "or allow the download (download=True, DML_OFFLINE unset): scikit-learn's Olivetti copy"),
    "omniglot": ("images_background_small1.zip and images_background_small2.zip, or the full "
                 "images_background.zip (github.com/brendenlake/omniglot, python/), or it extracted",
                 "or allow the download (download=True, DML_OFFLINE unset): torchvision's Omniglot"),
}
HOW_TO_GET["fashion_mnist"] = HOW_TO_GET["mnist"]


@dataclass
class ImageData:
    """A train/test split held as tensors. Images are uint8 N×C×H×W, labels int64.

    `info` holds anything else a data set knows (e.g. Omniglot's alphabets). Entries named
    `<what>_train` / `<what>_test` that are tensors hold one value per image of that split, and are
    kept in step by `select`, `per_class` and `merged` (and by notebook 09's `hold_out` and 10's `rotations`).
    """
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    source: str
    name: str = ""
    notes: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        c, h, w = self.x_train.shape[1:]
        return (f"ImageData({self.name!r}: train {len(self.y_train):,}, test {len(self.y_test):,}, "
                f"{c}×{h}×{w}, {len(self.classes)} classes; {self.source})")

    def select(self, classes: list[int], relabel: bool = True) -> "ImageData":
        """Keep only `classes` (e.g. the normal ones); labels become 0..k-1 in that order if `relabel`."""
        classes = list(classes)
        tr, te = [torch.isin(y, torch.tensor(classes, dtype=y.dtype)) for y in (self.y_train, self.y_test)]
        y_train, y_test = self.y_train[tr], self.y_test[te]
        if relabel:
            new_label = torch.full((int(max(classes)) + 1,), -1, dtype=torch.int64)
            new_label[torch.tensor(classes)] = torch.arange(len(classes))
            y_train, y_test = new_label[y_train], new_label[y_test]
        names = [self.classes[c] for c in classes] if relabel else self.classes
        return replace(self, x_train=self.x_train[tr], y_train=y_train, x_test=self.x_test[te], y_test=y_test,
                       classes=names, name=f"{self.name}[{','.join(map(str, classes))}]", info=self._info_at(tr, te))

    def per_class(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> "ImageData":
        """Subsample at most `n_train` / `n_test` images per class (seeded; None keeps all)."""
        if n_train is None and n_test is None:
            return self
        tr, te = per_class_index(self.y_train, n_train, seed), per_class_index(self.y_test, n_test, seed)
        return replace(self, x_train=self.x_train[tr], y_train=self.y_train[tr], x_test=self.x_test[te],
                       y_test=self.y_test[te], name=f"{self.name}[n={n_train}/{n_test},seed={seed}]",
                       info=self._info_at(tr, te))

    def resized(self, height: int, width: int) -> "ImageData":
        """Both splits resized to height×width (antialiased bilinear, rounded to uint8; see `resize`)."""
        return replace(self, x_train=resize(self.x_train, height, width), x_test=resize(self.x_test, height, width),
                       name=f"{self.name}[{height}×{width}]")

    def merged(self) -> "ImageData":
        """Every image in the training split (train then test; the test split stays as it was): for
        training on all there is when the evaluation lies elsewhere, e.g. Omniglot's one-shot runs."""
        info = dict(self.info)
        for k in per_image_keys(info):
            info[f"{k}_train"] = torch.cat([info[f"{k}_train"], info[f"{k}_test"]])
        return replace(self, x_train=torch.cat([self.x_train, self.x_test]), info=info,
                       y_train=torch.cat([self.y_train, self.y_test]), name=f"{self.name}[all images]")

    def _info_at(self, train: torch.Tensor, test: torch.Tensor) -> dict:
        """`info` with its per-image entries indexed like the images (`train` / `test`: indices or masks)."""
        info = dict(self.info)
        for k in per_image_keys(info):
            info[f"{k}_train"], info[f"{k}_test"] = info[f"{k}_train"][train], info[f"{k}_test"][test]
        return info


def per_image_keys(info: dict) -> list[str]:
    """The names `k` of `info`'s per-image entries: tensors `<k>_train` and `<k>_test`."""
    return [k[:-len("_train")] for k, v in info.items()
            if k.endswith("_train") and torch.is_tensor(v) and torch.is_tensor(info.get(k[:-len("_train")] + "_test"))]


class DataNotFound(FileNotFoundError):
    """Raised when a data set is neither found locally nor downloadable."""


# ----------------------------------------------------------------------------- readers
def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (MNIST format), gzipped or not, into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # e.g. an interrupted download
        raise ValueError(f"{path} is truncated or corrupted ({type(e).__name__}: {e}); "
                         f"delete it and fetch it again") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: header cut short ({len(raw)} bytes; truncated file?)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} bytes (truncated file?)")
    return data.reshape(shape)


def read_idx_folder(folder: str | Path) -> tuple[torch.Tensor, ...] | None:
    """The four canonical idx files in `folder` (or `folder/raw`) -> x_train, y_train, x_test, y_test."""
    folder = Path(folder)
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    files = [next((f for f in (folder / f"{s}.gz", folder / s, folder / "raw" / f"{s}.gz", folder / "raw" / s)
                   if f.is_file()), None) for s in stems]
    if any(f is None for f in files):
        return None
    xtr, ytr, xte, yte = (read_idx(f) for f in files)
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise ValueError(f"{folder}: image and label counts differ")
    return (torch.from_numpy(xtr.copy()).unsqueeze(1), torch.from_numpy(ytr.astype(np.int64)),
            torch.from_numpy(xte.copy()).unsqueeze(1), torch.from_numpy(yte.astype(np.int64)))


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


def _over_black(pixels: np.ndarray) -> np.ndarray:
    """H×W×(C+1) uint8 with straight (not premultiplied) alpha last -> H×W×C uint8 composited on black."""
    colour, alpha = pixels[..., :-1].astype(np.float64), pixels[..., -1:].astype(np.float64)
    return np.rint(colour * alpha / 255.0).astype(np.uint8)


def _decode_image(path: Path) -> tuple[np.ndarray, str]:
    """One image file -> (pixels, kind), converting every PIL mode explicitly.

    kind "gray": H×W uint8 ("1" -> 0/255, "L", "LA", 16-bit "I;16*" divided by 257, a "P" whose
    colours are all gray); "rgb": H×W×3 uint8 (anything else: "RGB", "RGBA", "CMYK", a "P" with
    colours, …); "I" / "F": H×W int32 / float32 gray values, scaled once per data set (`_wide_scale`).
    Alpha (also a palette's or a PNG's transparent colour) is composited on black.
    """
    from PIL import Image

    with Image.open(path) as im:
        mode = im.mode
        if "transparency" in im.info and mode in ("1", "L", "RGB"):  # a transparent colour -> alpha
            im = im.convert("LA" if mode in ("1", "L") else "RGBA")
            mode = im.mode
        if mode in ("P", "PA"):
            rgb = _over_black(np.asarray(im.convert("RGBA")))
            if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
                return np.ascontiguousarray(rgb[..., 0]), "gray"
            return rgb, "rgb"
        if mode == "1":
            return np.array(im.convert("L")), "gray"
        if mode == "L":
            return np.array(im), "gray"
        if mode == "LA":
            return _over_black(np.asarray(im))[..., 0], "gray"
        if mode == "La":                                   # premultiplied: already on black
            return np.ascontiguousarray(np.asarray(im)[..., 0]), "gray"
        if mode.startswith("I;16"):
            return np.rint(np.asarray(im).astype(np.float64) / 257.0).astype(np.uint8), "gray"
        if mode in ("I", "F"):
            return np.array(im), mode
        if mode == "RGB":
            return np.array(im), "rgb"
        if mode == "RGBA":
            return _over_black(np.asarray(im)), "rgb"
        if mode in ("RGBa", "RGBX"):                       # premultiplied alpha / padding: drop it
            return np.ascontiguousarray(np.asarray(im)[..., :3]), "rgb"
        try:                                               # CMYK, YCbCr, LAB, HSV, …
            return np.array(im.convert("RGB")), "rgb"
        except ValueError as e:
            raise ValueError(f"{path}: cannot convert PIL mode {mode!r} to RGB ({e}); "
                             f"re-save it as an RGB or grayscale PNG") from e


def _wide_scale(values: list[np.ndarray], kind: str, where: str) -> float:
    """The divisor that maps one data set's "I" (32-bit int) or "F" (float) images to 0..255.

    Decided over all such images of the data set at once, so they all share one scale: "I" images
    within 0..65535 are 16-bit content (/257), wider ones full-range 32-bit (/((2³¹−1)/255)); "F"
    images within 0..1 are scaled by 255, within 0..255 kept. Anything else has no defined scale.
    """
    lo = min(float(v.min()) for v in values)
    hi = max(float(v.max()) for v in values)
    if kind == "I" and lo >= 0:
        return 257.0 if hi <= 65535 else (2**31 - 1) / 255.0
    if kind == "F" and 0 <= lo and hi <= 255:
        return 1 / 255.0 if hi <= 1 else 1.0
    raise ValueError(f"{where}: mode {kind!r} images hold values {lo:g}..{hi:g}, which have no defined "
                     f"scale to 0..255 (expected 0..65535 or 0..2³¹−1 for 'I', 0..1 or 0..255 for 'F'); "
                     f"re-save them as 8- or 16-bit PNGs")


def _decode_folder(folder: Path, classes: list[str] | None) -> tuple[list, list[int], list[str]]:
    """`folder/<class>/*` -> decoded images (see `_decode_image`), labels, class names."""
    names = classes or sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not names:
        raise DataNotFound(f"{folder} has no class sub-folders (expected {folder}/<class>/<image>)")
    images, ys = [], []
    for label, name in enumerate(names):
        for p in sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            images.append(_decode_image(p))
            ys.append(label)
    if not images:
        raise DataNotFound(f"{folder} holds no images")
    return images, ys, list(names)


def _stack_images(groups: list[tuple[Path, list]], size: tuple[int, int] | None) -> list[torch.Tensor]:
    """Decoded images of one data set (in groups, e.g. train and test) -> one uint8 N×C×H×W per group.

    Whether the data set is gray (C=1) or RGB (C=3) is decided ONCE, over all groups: gray only if
    every image is; gray images of an RGB data set are replicated to 3 channels.
    """
    everything = [im for _, images in groups for im in images]
    gray = all(kind != "rgb" for _, kind in everything)
    where = " and ".join(str(folder) for folder, _ in groups)
    scale = {kind: _wide_scale([a for a, k in everything if k == kind], kind, where)
             for kind in ("I", "F") if any(k == kind for _, k in everything)}
    out = []
    for folder, images in groups:
        xs = []
        for a, kind in images:
            if kind in scale:
                a = np.rint(a.astype(np.float64) / scale[kind]).clip(0, 255).astype(np.uint8)
            if kind != "rgb":
                a = a[..., None] if gray else np.repeat(a[..., None], 3, axis=2)
            xs.append(a)
        shapes = {a.shape for a in xs}
        if len(shapes) > 1 and size is None:
            raise ValueError(f"{folder}: images differ in size {sorted(shapes)[:3]}…; pass size=(H, W)")
        x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).contiguous() if len(shapes) == 1 else None
        if size is not None and (x is None or tuple(x.shape[-2:]) != tuple(size)):
            x = torch.stack([F.interpolate(torch.from_numpy(a).permute(2, 0, 1)[None].float(), size=size,
                                           mode="bilinear", antialias=True)[0].round().clamp(0, 255).byte()
                             for a in xs])
        out.append(x)
    return out


def read_split_folder(folder: str | Path,
                      size: tuple[int, int] | None = None) -> tuple[tuple[torch.Tensor, ...], list[str]] | None:
    """`folder/train/<class>/…` and `folder/test/<class>/…` -> tensors and class names.

    Decoded by `_decode_folder` and `_stack_images`, with the gray/RGB and scale decisions taken once over both
    splits, so train and test always have the same channel count.
    """
    folder = Path(folder)
    if not (folder / "train").is_dir() or not (folder / "test").is_dir():
        return None
    train, ytr, names = _decode_folder(folder / "train", None)
    test, yte, _ = _decode_folder(folder / "test", names)
    xtr, xte = _stack_images([(folder / "train", train), (folder / "test", test)], size)
    return (xtr, torch.tensor(ytr, dtype=torch.int64), xte, torch.tensor(yte, dtype=torch.int64)), names


def read_cifar_pickles(folder: str | Path) -> tuple[torch.Tensor, ...] | None:
    """CIFAR-10's python pickles (`data_batch_1..5`, `test_batch`) -> tensors, or None if absent."""
    folder = Path(folder)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    train_files = [folder / f"data_batch_{i}" for i in range(1, 6)]
    if not all(p.is_file() for p in train_files + [folder / "test_batch"]):
        return None

    def read(paths):
        xs, ys = [], []
        for p in paths:
            with open(p, "rb") as f:
                d = pickle.load(f, encoding="latin1")
            xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d["labels"], dtype=np.int64))
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    return (*read(train_files), *read([folder / "test_batch"]))


def _natural_key(name: str) -> list:
    """Sort key that orders numbers by value: "s2" before "s10", "class9" before "class10"."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def read_att_faces(folder: str | Path) -> tuple[tuple[torch.Tensor, ...], list[str]] | None:
    """The AT&T (ORL) faces, `folder/s1..s40/1..10.pgm` -> tensors and class names, or None if absent.

    Images uint8 N×1×112×92 (any other size is resized to it). Label k is the k-th person folder in
    numeric order (s1, s2, …, s10, not s1, s10, s2); per person, the first `FACES_TRAIN` = 7 images
    (numeric order) train, the rest (8–10) test; both splits in person-then-image order.
    """
    folder = Path(folder)
    people = sorted((p for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"s\d+", p.name)),
                    key=lambda p: _natural_key(p.name))
    if not people:
        return None
    split: dict[str, tuple[list, list]] = {"train": ([], []), "test": ([], [])}
    for label, person in enumerate(people):
        files = sorted((f for f in person.iterdir() if re.fullmatch(r"\d+\.pgm", f.name, re.IGNORECASE)),
                       key=lambda f: int(f.stem))
        if len(files) <= FACES_TRAIN:
            raise ValueError(f"{person} holds {len(files)} <n>.pgm images; every person needs more than "
                             f"{FACES_TRAIN} (the AT&T faces have 10: 7 train, 3 test)")
        for i, f in enumerate(files):
            images, labels = split["train" if i < FACES_TRAIN else "test"]
            images.append(_decode_image(f))
            labels.append(label)
    (tr, ytr), (te, yte) = split.values()
    xtr, xte = _stack_images([(folder, tr), (folder, te)], size=(112, 92))
    return (xtr, torch.tensor(ytr), xte, torch.tensor(yte)), [p.name for p in people]


def _ink(png: bytes) -> np.ndarray:
    """An Omniglot drawing (black ink on white) -> uint8 H×W with ink 255 on background 0."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        return 255 - np.asarray(im.convert("L"))


def _omniglot_sources(folder: Path) -> list[Path]:
    """Omniglot background-set files in `folder`: the full set (extracted or zipped) if there, else
    the two small sets' zips (whichever of them are there)."""
    for full in (folder / "images_background", folder / "images_background.zip"):
        if full.exists():
            return [full]
    return sorted(folder.glob("images_background_small*.zip"))


def _omniglot_drawings(source: Path):
    """(alphabet, character, file name, PNG bytes) of each drawing in a folder or zip laid out as
    `[<set>/]<alphabet>/<character>/<file>.png`."""
    if source.is_dir():
        for rel, real in _files_under(source):
            if rel.endswith(".png") and len(Path(rel).parts) >= 3:
                yield (*Path(rel).parts[-3:], Path(real).read_bytes())
        return
    with zipfile.ZipFile(source) as z:
        for entry in z.infolist():
            parts = PurePosixPath(entry.filename).parts
            if entry.filename.endswith(".png") and len(parts) >= 3 and "__MACOSX" not in parts:
                yield (*parts[-3:], z.read(entry))


def read_omniglot(folder: str | Path) -> tuple | None:
    """Omniglot's background set from `folder` -> (tensors, classes, info, notes), or None if absent; ink 255 on 0,
    label = character, the last `OMNIGLOT_TEST_DRAWERS` drawers of each character test (utils/README.md)."""
    folder = Path(folder)
    sources = _omniglot_sources(folder)
    if not sources:
        return None
    drawings: dict[tuple[str, str], dict[int, tuple[bytes, str]]] = defaultdict(dict)
    for src in sources:
        for alphabet, character, file, png in _omniglot_drawings(src):
            m = re.fullmatch(r"\d+_(\d+)\.png", file)
            if m is None:
                raise ValueError(f"{src}: {alphabet}/{character}/{file} is not named <id>_<drawer>.png")
            seen = drawings[alphabet, character].setdefault(int(m[1]), (png, src.name))
            if seen[0] != png:
                raise ValueError(f"{alphabet}/{character}/{file} differs between {seen[1]} and {src.name}; "
                                 f"keep only one of them (the official zips hold identical copies)")
    if not drawings:
        raise DataNotFound(f"{' and '.join(map(str, sources))} hold no <alphabet>/<character>/<id>_<drawer>.png")
    characters = sorted(drawings)
    alphabets = sorted({a for a, _ in characters})
    split: dict[str, tuple[list, ...]] = {s: ([], [], [], []) for s in ("train", "test")}  # x, y, alphabet, drawer
    for label, (alphabet, character) in enumerate(characters):
        drawers = sorted(drawings[alphabet, character])
        for i, drawer in enumerate(drawers):
            xs, ys, alpha, drawer_ids = split["train" if i < len(drawers) - OMNIGLOT_TEST_DRAWERS else "test"]
            xs.append(_ink(drawings[alphabet, character][drawer][0]))
            ys.append(label)
            alpha.append(alphabets.index(alphabet))
            drawer_ids.append(drawer)
    shapes = {x.shape for xs, *_ in split.values() for x in xs}
    if len(shapes) > 1:
        raise ValueError(f"{folder}: Omniglot drawings differ in size {sorted(shapes)[:3]} (expected all 105×105)")
    out, info = [], {"alphabets": alphabets}
    for s, (xs, ys, alpha, drawer) in split.items():
        x = torch.from_numpy(np.stack(xs)).unsqueeze(1) if xs else torch.zeros(0, 1, 105, 105, dtype=torch.uint8)
        out += [x, torch.tensor(ys, dtype=torch.int64)]
        info[f"alphabet_{s}"] = torch.tensor(alpha, dtype=torch.int64)
        info[f"drawer_{s}"] = torch.tensor(drawer, dtype=torch.int64)
    notes = [f"Omniglot background set from {' + '.join(s.name for s in sources)}: {len(characters)} characters of "
             f"{len(alphabets)} alphabets; per character the last {OMNIGLOT_TEST_DRAWERS} drawers are the test split"]
    return tuple(out), [f"{a}/{c}" for a, c in characters], info, notes


def load_digits28() -> ImageData:
    """scikit-learn's 1,797 bundled 8×8 digits, upscaled to 28×28 uint8 (a fixed 75/25 split, seed 0)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images).float().unsqueeze(1) / 16.0  # values 0..16
    x = F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False)
    x = F.pad(x, (4, 4, 4, 4))  # MNIST-like: a 20×20 digit centred in 28×28
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    y = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_tr = int(0.75 * len(y))
    tr, te = perm[:n_tr].sort().values, perm[n_tr:].sort().values
    return ImageData(x[tr], y[tr], x[te], y[te], MNIST_CLASSES,
                     "scikit-learn load_digits (bundled, offline), 8×8 upscaled to 28×28", "digits")


def load_photos(n_train: int = 1000, n_test: int = 250, size: int = 32, seed: int = 0) -> ImageData:
    """Random size×size RGB patches of scikit-learn's two bundled photos (a temple in China, a flower).

    Natural-image texture that is certainly not a digit: the offline stand-in for CIFAR-10 when it
    cannot be had. Class = which photo; train and test patches come from disjoint halves (left/right).
    """
    from sklearn.datasets import load_sample_images

    g = torch.Generator().manual_seed(seed)
    sets = {"train": ([], []), "test": ([], [])}
    for label, img in enumerate(load_sample_images().images):
        img = torch.from_numpy(np.array(img)).permute(2, 0, 1)  # 3×H×W uint8 (a writable copy)
        half = img.shape[2] // 2
        for split, n, part in (("train", n_train, img[:, :, :half]), ("test", n_test, img[:, :, half:])):
            top = torch.randint(0, part.shape[1] - size + 1, (n,), generator=g)
            left = torch.randint(0, part.shape[2] - size + 1, (n,), generator=g)
            sets[split][0].append(torch.stack([part[:, t:t + size, l:l + size] for t, l in zip(top.tolist(), left.tolist())]))
            sets[split][1].append(torch.full((n,), label, dtype=torch.int64))
    (xtr, ytr), (xte, yte) = [(torch.cat(a), torch.cat(b)) for a, b in sets.values()]
    return ImageData(xtr, ytr, xte, yte, KNOWN["photos"][1],
                     f"scikit-learn load_sample_images (bundled, offline), random {size}×{size} patches", "photos")


# ----------------------------------------------------------------------------- lookup
def search_roots(root: str | Path | None = None) -> list[tuple[Path, str]]:
    """Where local copies are looked for, in order, as (folder, how to print it) pairs."""
    roots = []
    if root is not None:
        roots.append((Path(root).expanduser(), str(root)))
    if os.environ.get("DML_DATA"):
        roots.append((Path(os.environ["DML_DATA"]).expanduser(), "$DML_DATA"))
    roots += [(PROJECT_DATA, "data"), (DEBIAN_DATA, "Debian's datasets folder")]   # printed without the machine path
    return roots


def _read_local(name: str, folder: Path):
    """Try every format we know in `folder`; return (tensors, classes[, info, notes]) or None."""
    if name == "att_faces":
        return read_att_faces(folder)
    if name == "omniglot":
        return read_omniglot(folder)
    if name in ("mnist", "fashion_mnist"):
        t = read_idx_folder(folder)
        return (t, None) if t is not None else None
    if name == "cifar10":
        t = read_cifar_pickles(folder)
        if t is not None:
            return t, None
    return read_split_folder(folder)


def _files_under(folder: Path) -> list[tuple[str, str]]:
    """Every file under `folder` as (path relative to it, resolved path), following symlinked folders.

    `Path.rglob` does not enter symlinked folders (Python 3.11), so a data set whose train/ and test/
    are links would look empty. A folder reached again (a link cycle, or two links to one place) is
    walked once.
    """
    seen, files = set(), []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        for name in filenames:
            f = os.path.join(dirpath, name)
            files.append((os.path.relpath(f, folder), os.path.realpath(f)))
    return sorted(files)


def _signature(paths: list[Path]) -> str:
    """Key a cache by the decoder version and the content actually read: each path's resolved
    location and, for every file under it (symlinks followed), its path there, its resolved path,
    size and mtime. An edited file, or another folder with the same data set name, gets a new key."""
    seen = []
    for p in sorted(paths):
        seen.append(str(p.resolve()))
        for rel, real in _files_under(p) if p.is_dir() else [(p.name, os.path.realpath(p))]:
            try:
                st = os.stat(real)
            except OSError:                        # a dangling link: nothing is read from it
                continue
            seen.append(f"{rel}|{real}|{st.st_size}|{st.st_mtime_ns}")
    return cache_key(CACHE_VERSION, seen)


def cache_dir() -> Path:
    """Folder for decoded data and trained models (`$DML_CACHE`, default `data/cache`)."""
    d = Path(os.environ.get("DML_CACHE", PROJECT_DATA / "cache"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def atomic_write(path: Path | str, write) -> None:
    """`write(f)` into `path` (a binary file), all or nothing: a temporary file in the same folder, flushed to
    disk, then `os.replace`d onto `path`. A reader (or a crash, or a full disk) never sees a partial file:
    `path` is either the old complete file, absent, or the new complete one. Parent folders are made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)   # usual permissions (umask applies)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save(obj: object, path: Path | str) -> None:
    """`torch.save(obj, path)`, all or nothing (`atomic_write`)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def _cached(name: str, folder: Path, reader):
    """`reader()`, decoded once per content of `folder` (see `_signature`) and kept in `cache_dir()`."""
    key = f"{name}-{_signature([folder])}"
    path = cache_dir() / f"{key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    got = reader()
    if got is not None:
        atomic_save(got, path)
    return got


def _local_folders(name: str, root: str | Path | None) -> list[tuple[Path, str]]:
    """Folders that may hold a local copy of `name`, in search order, as (folder, how to print it)."""
    out = []
    for r, label in search_roots(root):
        for sub in KNOWN[name][0] + ([""] if root is not None and label == str(root) else []):
            if name == "fashion_mnist" and r == DEBIAN_DATA and sub != "fashion-mnist":
                continue
            out.append((r / sub if sub else r, f"{label}/{sub}" if sub else label))
    return out


def _why_not_download(download: bool) -> str | None:
    """None if a download may be tried, else why not."""
    if not download:
        return "download disabled"
    if os.environ.get("DML_OFFLINE"):
        return "offline: DML_OFFLINE is set"
    return None


def _fetch(url: str, path: Path) -> None:
    """Download `url` to `path`, all or nothing (`atomic_write`)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=60) as response:
        atomic_write(path, lambda f: shutil.copyfileobj(response, f))


def _download_olivetti(dest: Path) -> ImageData:
    """The AT&T faces online: scikit-learn's Olivetti copy (400 faces, 64×64 floats in [0, 1], 10
    consecutive images per person), as uint8 resized to 112×92, split 7/3 per person like the originals."""
    from sklearn.datasets import fetch_olivetti_faces

    d = fetch_olivetti_faces(data_home=str(dest))
    x = torch.from_numpy(np.rint(np.asarray(d.images, dtype=np.float64) * 255).clip(0, 255).astype(np.uint8))
    x = resize(x.unsqueeze(1), 112, 92)
    y = torch.as_tensor(np.asarray(d.target), dtype=torch.int64)
    rank = torch.tril(y[:, None] == y[None], diagonal=-1).sum(1)     # position of each image among its person's
    train = rank < FACES_TRAIN
    data = ImageData(x[train], y[train], x[~train], y[~train], FACE_CLASSES,
                     f"downloaded by scikit-learn (fetch_olivetti_faces) into data/{dest.name}", "att_faces")
    data.notes.append("the Olivetti copy of the AT&T faces: 64×64 crops, upsampled to 112×92 "
                      "(blurrier than the originals, and with another framing)")
    return data


def _download_omniglot(dest: Path) -> ImageData:
    """Omniglot's full background set online (964 characters), via torchvision, read like a local copy."""
    import torchvision.datasets as tvd

    ds = tvd.Omniglot(str(dest), background=True, download=True)
    folder = Path(ds.target_folder).parent                       # dest/omniglot-py, holding images_background/
    tensors, classes, info, notes = _cached("omniglot", folder, lambda: read_omniglot(folder))
    return ImageData(*tensors, classes, f"downloaded by torchvision into data/{dest.name}/{folder.name}",
                     "omniglot", [*notes, "downloaded by torchvision (Omniglot, background=True)"], info)


def _download(name: str) -> ImageData:
    """Fetch `name` online: torchvision into data/torchvision; the faces through scikit-learn."""
    if name == "att_faces":
        return _download_olivetti(PROJECT_DATA / "scikit_learn_data")
    dest = PROJECT_DATA / "torchvision"
    if name == "omniglot":
        return _download_omniglot(dest)
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    out = []
    for train in (True, False):
        ds = cls(str(dest), train=train, download=True)
        x = torch.as_tensor(np.asarray(ds.data))
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
        out += [x, torch.as_tensor(ds.targets, dtype=torch.int64)]
    return ImageData(*out, KNOWN[name][1], "downloaded by torchvision into data/torchvision", name)


def load(name: str, root: str | Path | None = None, download: bool = True,
         fallback: str | None = None) -> ImageData:
    """Load a data set by name (see `NAMES`) or from an image-folder path with train/ and test/: local folders
    first, then a download; with `fallback` (e.g. "digits") that set instead, said so; else `DataNotFound`
    saying where it looked and how to fix it (utils/README.md)."""
    if name not in KNOWN:
        p = Path(name).expanduser()
        if p.is_dir():
            got = read_split_folder(p)
            if got is None:
                raise DataNotFound(f"{p} must contain train/<class>/… and test/<class>/… image folders")
            (xtr, ytr, xte, yte), classes = got
            return ImageData(xtr, ytr, xte, yte, classes, f"image folder {p}", p.name)
        raise ValueError(f"unknown data set {name!r}: choose one of {NAMES} "
                         f"or pass a folder that holds train/<class>/ and test/<class>/ images")
    if name == "digits":
        return load_digits28()
    if name == "photos":
        return load_photos()

    folders, classes = KNOWN[name]
    looked = []
    for folder, shown in _local_folders(name, root):
        looked.append(shown)
        if not folder.is_dir():
            continue
        got = _cached(name, folder, lambda f=folder: _read_local(name, f))
        if got is None:
            continue
        tensors, found_classes, *more = got          # att_faces / omniglot also give info and notes
        info, notes = more if more else ({}, [])
        return ImageData(*tensors, found_classes or classes, f"local copy in {shown}", name, list(notes), info)
    problem = _why_not_download(download)
    if problem is None:
        try:
            return _download(name)
        except Exception as e:  # offline, blocked, …
            problem = f"download failed: {type(e).__name__}: {str(e).splitlines()[0][:100]}"
    what, alternative = HOW_TO_GET[name]
    msg = (f"could not load {name!r} ({problem}). Looked in: {', '.join(looked)}.\n"
           f"Fix: put {what} under <root>/{folders[0]}/ and set DML_DATA=<root>, or pass root=…; {alternative}.")
    if fallback:
        warnings.warn(f"{name!r} could not be loaded ({problem}); using {fallback!r} instead. "
                      f"Looked in: {', '.join(looked)}. To use the real data set, set DML_DATA "
                      f"(README: 'Data').", stacklevel=2)
        data = load(fallback, root, download=False)
        data.notes.append(f"{name!r} was not available ({problem}); using {fallback!r} instead")
        return data
    raise DataNotFound(msg)


# ----------------------------------------------------------------------------- selection
def per_class_index(y: torch.Tensor, n: int | None, seed: int = 0) -> torch.Tensor:
    """Indices of at most `n` random samples of every class (seeded), ascending. None: all of them."""
    if n is None:
        return torch.arange(len(y))
    g = torch.Generator().manual_seed(seed)
    idx = []
    for c in torch.unique(y):
        members = torch.nonzero(y == c).flatten()
        idx.append(members[torch.randperm(len(members), generator=g)[:n]])
    return torch.cat(idx).sort().values if idx else torch.zeros(0, dtype=torch.int64)


def to_gray28(x: torch.Tensor) -> torch.Tensor:
    """uint8 images N×C×H×W -> N×1×28×28 grayscale uint8 (ITU-R 601 luma, antialiased resize).

    C=1: gray, kept; C=2: gray + alpha, the gray is kept; C=3: RGB -> luma; C=4: RGBA, the alpha is
    dropped (ignored, not composited), then luma. Any other shape raises a ValueError.
    """
    if x.ndim != 4 or x.shape[1] not in (1, 2, 3, 4):
        raise ValueError(f"to_gray28 needs images N×C×H×W with C = 1 (gray), 2 (gray+alpha), 3 (RGB) or "
                         f"4 (RGBA), got shape {tuple(x.shape)}; add a batch axis with x[None] for one "
                         f"image, or pick the channels to use, e.g. x[:, :3]")
    xf = x.float()
    if xf.shape[1] in (2, 4):                              # drop alpha
        xf = xf[:, :-1]
    if xf.shape[1] == 3:
        xf = (xf * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if tuple(xf.shape[-2:]) != (28, 28):
        xf = F.interpolate(xf, size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
    return xf.round().clamp(0, 255).to(torch.uint8)


def resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 images N×C×H×W -> N×C×height×width: antialiased bilinear, rounded back to uint8.

    Images already of that size are returned as they are. Works in chunks, so a large set never
    needs one float copy of everything at once.
    """
    if x.ndim != 4:
        raise ValueError(f"resize needs images N×C×H×W, got shape {tuple(x.shape)}; add a batch axis with x[None]")
    if tuple(x.shape[-2:]) == (height, width):
        return x
    if len(x) == 0:
        return x.new_zeros((0, x.shape[1], height, width))
    return torch.cat([F.interpolate(chunk.float(), size=(height, width), mode="bilinear", antialias=True,
                                    align_corners=False).round().clamp(0, 255).to(torch.uint8)
                      for chunk in x.split(2048)])
