"""Data sets as in-memory tensors: uint8 images N×C×H×W, int64 labels, class names, provenance.

`load(name)` looks for local copies first (explicit `root`, `$DML_DATA`, the project's `data/`,
Debian's `/usr/share/datasets`), then downloads through torchvision. `digits` (scikit-learn's
bundled 8×8 digits, upscaled to 28×28) and `photos` (32×32 patches of scikit-learn's two bundled
photos, an offline stand-in for natural images) work on any machine, offline.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import secrets
import warnings
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PROJECT_DATA = Path(__file__).resolve().parent.parent / "data"
DEBIAN_DATA = Path("/usr/share/datasets")
CACHE_VERSION = 2  # bump when decoding changes, so old caches are never reused

MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]

# name -> (folder names to look for under a data root, class names)
KNOWN = {
    "mnist": (["mnist", "MNIST"], MNIST_CLASSES),
    "fashion_mnist": (["fashion_mnist", "fashion-mnist", "FashionMNIST"], FASHION_CLASSES),
    "cifar10": (["cifar10", "cifar-10", "CIFAR10"], CIFAR10_CLASSES),
    "digits": ([], MNIST_CLASSES),
    "photos": ([], ["china", "flower"]),
}
NAMES = sorted(KNOWN)


@dataclass
class ImageData:
    """A train/test split held as tensors. Images are uint8 N×C×H×W, labels int64."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    source: str
    name: str = ""
    notes: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        c, h, w = self.x_train.shape[1:]
        return (f"ImageData({self.name!r}: train {len(self.y_train):,}, test {len(self.y_test):,}, "
                f"{c}×{h}×{w}, {len(self.classes)} classes; {self.source})")

    def select(self, classes: list[int], relabel: bool = True) -> "ImageData":
        """Keep only `classes` (e.g. the normal ones); labels become 0..k-1 in that order if `relabel`."""
        tr, te = select_classes(self.x_train, self.y_train, classes, relabel), \
            select_classes(self.x_test, self.y_test, classes, relabel)
        names = [self.classes[c] for c in classes] if relabel else self.classes
        return replace(self, x_train=tr[0], y_train=tr[1], x_test=te[0], y_test=te[1], classes=names,
                       name=f"{self.name}[{','.join(map(str, classes))}]")

    def per_class(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> "ImageData":
        """Subsample at most `n_train` / `n_test` images per class (seeded; None keeps all)."""
        if n_train is None and n_test is None:
            return self
        x_tr, y_tr = sample_per_class(self.x_train, self.y_train, n_train, seed)
        x_te, y_te = sample_per_class(self.x_test, self.y_test, n_test, seed)
        return replace(self, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
                       name=f"{self.name}[n={n_train}/{n_test},seed={seed}]")


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


def _find_file(folder: Path, stem: str) -> Path | None:
    for cand in (folder / f"{stem}.gz", folder / stem, folder / "raw" / f"{stem}.gz", folder / "raw" / stem):
        if cand.is_file():
            return cand
    return None


def read_idx_folder(folder: str | Path) -> tuple[torch.Tensor, ...] | None:
    """The four canonical idx files in `folder` (or `folder/raw`) -> x_train, y_train, x_test, y_test."""
    folder = Path(folder)
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    files = [_find_file(folder, s) for s in stems]
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


def read_image_folder(folder: str | Path, classes: list[str] | None = None,
                      size: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode `folder/<class>/*` images into uint8 N×C×H×W. Class order: `classes` or sorted names.

    PIL modes are converted explicitly, deciding once for the whole folder: C=1 if every image is
    gray ("1", "L", "LA", "I", "I;16*", "F", or a "P" whose colours are all gray), else C=3 (gray
    images replicated). "1" becomes 0/255; 16-bit images are divided by 257 (65535 -> 255), 32-bit
    "I" and float "F" images scaled by one data-set-wide rule (`_wide_scale`), never clipped. Alpha is
    dropped by compositing on black (a fully transparent pixel becomes 0). Differently sized images
    need `size=(H, W)` (antialiased bilinear resize).
    """
    folder = Path(folder)
    images, ys, names = _decode_folder(folder, classes)
    x, = _stack_images([(folder, images)], size)
    return x, torch.tensor(ys, dtype=torch.int64), names


def read_split_folder(folder: str | Path,
                      size: tuple[int, int] | None = None) -> tuple[tuple[torch.Tensor, ...], list[str]] | None:
    """`folder/train/<class>/…` and `folder/test/<class>/…` -> tensors and class names.

    Decoded as `read_image_folder` does, with the gray/RGB and scale decisions taken once over both
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
    roots += [(PROJECT_DATA, "data"), (DEBIAN_DATA, str(DEBIAN_DATA))]
    return roots


def _read_local(name: str, folder: Path):
    """Try every format we know in `folder`; return (tensors, classes) or None."""
    if name in ("mnist", "fashion_mnist"):
        t = read_idx_folder(folder)
        return (t, None) if t is not None else None
    if name == "cifar10":
        t = read_cifar_pickles(folder)
        if t is not None:
            return t, None
    got = read_split_folder(folder)
    return got


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
    h = hashlib.sha1(str(CACHE_VERSION).encode())
    for p in sorted(paths):
        h.update(f"\0{p.resolve()}".encode())
        entries = _files_under(p) if p.is_dir() else [(p.name, os.path.realpath(p))]
        for rel, real in entries:
            try:
                st = os.stat(real)
            except OSError:                        # a dangling link: nothing is read from it
                continue
            h.update(f"\0{rel}|{real}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    """Folder for decoded data and trained models (`$DML_CACHE`, default `data/cache`)."""
    d = Path(os.environ.get("DML_CACHE", PROJECT_DATA / "cache"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def atomic_save(obj: object, path: Path | str) -> None:
    """`torch.save(obj, path)`, all or nothing: write a temporary file in the same folder, then
    `os.replace` it onto `path`. A reader (or a crash, or a full disk) never sees a partial file:
    `path` is either the old complete file, absent, or the new complete one. Parent folders are made."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)   # usual permissions (umask applies)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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


def _download(name: str, dest: Path) -> tuple[torch.Tensor, ...]:
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    out = []
    for train in (True, False):
        ds = cls(str(dest), train=train, download=True)
        x = torch.as_tensor(np.asarray(ds.data))
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2).contiguous()
        out += [x, torch.as_tensor(ds.targets, dtype=torch.int64)]
    return tuple(out)


def load(name: str, root: str | Path | None = None, download: bool = True,
         fallback: str | None = None) -> ImageData:
    """Load a data set by name (see `NAMES`) or from an image-folder path with train/ and test/.

    Looks in `root`, `$DML_DATA`, the project's `data/`, `/usr/share/datasets`; then downloads with
    torchvision if `download`. If all fail and `fallback` is given (e.g. "digits"), loads that instead
    and says so; otherwise raises `DataNotFound` explaining where it looked and how to fix it.
    """
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
    for r, label in search_roots(root):
        for sub in folders + ([""] if root is not None and label == str(root) else []):
            folder = r / sub if sub else r
            if name == "fashion_mnist" and r == DEBIAN_DATA and sub != "fashion-mnist":
                continue
            shown = f"{label}/{sub}" if sub else label
            looked.append(shown)
            if not folder.is_dir():
                continue
            got = _cached(name, folder, lambda f=folder: _read_local(name, f))
            if got is None:
                continue
            tensors, found_classes = got
            return ImageData(*tensors, found_classes or classes, f"local copy in {shown}", name)
    problem = "download disabled"
    if download and os.environ.get("DML_OFFLINE"):
        problem = "offline: DML_OFFLINE is set"
    elif download:
        dest = PROJECT_DATA / "torchvision"
        try:
            t = _download(name, dest)
            return ImageData(*t, classes, "downloaded by torchvision into data/torchvision", name)
        except Exception as e:  # offline, blocked, …
            problem = f"download failed: {type(e).__name__}: {str(e).splitlines()[0][:100]}"
    msg = (f"could not load {name!r} ({problem}). Looked in: {', '.join(looked)}.\n"
           f"Fix: put the four idx .gz files (MNIST / Fashion-MNIST) or train/<class>/ and test/<class>/ "
           f"image folders (CIFAR-10) under <root>/{folders[0]}/ and set DML_DATA=<root>, or pass root=…; "
           f"or use the offline data set 'digits' (scikit-learn's bundled handwritten digits).")
    if fallback:
        warnings.warn(f"{name!r} could not be loaded ({problem}); using {fallback!r} instead. "
                      f"Looked in: {', '.join(looked)}. To use the real data set, set DML_DATA "
                      f"(README: 'Data').", stacklevel=2)
        data = load(fallback, root, download=False)
        data.notes.append(f"{name!r} was not available ({problem}); using {fallback!r} instead")
        return data
    raise DataNotFound(msg)


# ----------------------------------------------------------------------------- selection
def select_classes(x: torch.Tensor, y: torch.Tensor, classes: list[int],
                   relabel: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep samples whose label is in `classes`; relabel them 0..k-1 in the order given."""
    classes = list(classes)
    keep = torch.isin(y, torch.tensor(classes, dtype=y.dtype))
    x, y = x[keep], y[keep]
    if relabel:
        lut = torch.full((int(max(classes)) + 1,), -1, dtype=torch.int64)
        lut[torch.tensor(classes)] = torch.arange(len(classes))
        y = lut[y]
    return x, y


def sample_per_class(x: torch.Tensor, y: torch.Tensor, n: int | None,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """At most `n` random samples of every class (seeded), in original order. None keeps all."""
    if n is None:
        return x, y
    g = torch.Generator().manual_seed(seed)
    idx = []
    for c in torch.unique(y):
        members = torch.nonzero(y == c).flatten()
        idx.append(members[torch.randperm(len(members), generator=g)[:n]])
    idx = torch.cat(idx).sort().values
    return x[idx], y[idx]


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
