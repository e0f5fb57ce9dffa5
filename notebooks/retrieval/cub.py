"""CUB-200-2011 (Wah et al. 2011): 11,788 photos of 200 bird species, the standard retrieval benchmark.

The metric-learning split (Oh Song et al. 2016, and Musgrave et al. 2020): the first 100 species
train, the last 100 are the unseen test classes. `load(size)` returns it as an `ImageData` whose
training split holds every image of species 1–100 and whose test split every image of species
101–200, each relabelled 0..99 (`classes` names the training species, `info["test_classes"]` the
test ones), images uint8 3×size×size: the shorter side resized to `size`, then the centre square.

Where it looks, in order: `root=`, `$DML_DATA`, the project's `data/`, each with a folder `cub200/`
(or `CUB_200_2011/`) that holds the official `CUB_200_2011.tgz` or it extracted (`images.txt`,
`image_class_labels.txt`, `classes.txt`, `images/`); then, unless offline (`DML_OFFLINE`) or
`download=False`, it downloads the official archive (1.1 GB) from Caltech's data repository into
`data/cub200/`. Decoded images are cached per size under `cache_dir()`. When none of this works,
`DataNotFound` says why (the notebook prints it and goes on without CUB).
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import torch

from utils import data as D

URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1"
ARCHIVE = "CUB_200_2011.tgz"
FOLDERS = ("cub200", "CUB_200_2011", "cub_200_2011")
N_TRAIN_CLASSES = 100


def _listing(text: str) -> dict[int, str]:
    """'id value' lines -> {id: value}."""
    out = {}
    for line in text.splitlines():
        if line.strip():
            key, value = line.split(maxsplit=1)
            out[int(key)] = value.strip()
    return out


def _square(jpeg: bytes, size: int) -> np.ndarray:
    """A photo -> uint8 size×size×3: the shorter side resized to `size` (antialiased), the centre cropped."""
    from PIL import Image

    with Image.open(io.BytesIO(jpeg)) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = size / min(w, h)
        im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR, reducing_gap=None)
        w, h = im.size
        left, top = (w - size) // 2, (h - size) // 2
        return np.asarray(im.crop((left, top, left + size, top + size)))


def _files(source: Path):
    """(path inside CUB_200_2011/, bytes reader) of every file of an archive or an extracted folder."""
    if source.is_dir():
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            yield path.relative_to(source).as_posix(), path.read_bytes
        return
    with tarfile.open(source, "r:*") as tar:
        for m in tar:
            if m.isfile():
                name = m.name.split("CUB_200_2011/", 1)[-1]
                data = tar.extractfile(m).read()
                yield name, (lambda d=data: d)


def read_cub(source: str | Path, size: int = 64, n_train_classes: int = N_TRAIN_CLASSES) -> tuple:
    """Decode CUB from an archive or an extracted `CUB_200_2011/` folder -> (tensors, classes, info, notes).

    Classes with id ≤ `n_train_classes` train, the others test (the standard split at 100)."""
    source = Path(source)
    meta, jpegs = {}, {}
    for name, read in _files(source):
        if name in ("images.txt", "image_class_labels.txt", "classes.txt"):
            meta[name] = read().decode()
        elif name.startswith("images/") and name.lower().endswith((".jpg", ".jpeg", ".png")):
            jpegs[name[len("images/"):]] = read()
    missing = [k for k in ("images.txt", "image_class_labels.txt", "classes.txt") if k not in meta]
    if missing:
        raise D.DataNotFound(f"{source} is not CUB-200-2011: {', '.join(missing)} missing")
    images, labels, names = (_listing(meta[k]) for k in ("images.txt", "image_class_labels.txt", "classes.txt"))
    ids = sorted(images)
    absent = [images[i] for i in ids if images[i] not in jpegs]
    if absent:
        raise D.DataNotFound(f"{source}: {len(absent)} images listed in images.txt are missing, e.g. {absent[0]}")
    class_ids = sorted(names)
    train_ids, test_ids = [c for c in class_ids if c <= n_train_classes], [c for c in class_ids if c > n_train_classes]
    out = []
    for split in (train_ids, test_ids):
        index = {c: i for i, c in enumerate(split)}
        chosen = [i for i in ids if int(labels[i]) in index]
        x = np.stack([_square(jpegs[images[i]], size) for i in chosen]) if chosen else np.zeros((0, size, size, 3), np.uint8)
        out += [torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(),
                torch.tensor([index[int(labels[i])] for i in chosen], dtype=torch.int64)]
    info = {"test_classes": [names[c] for c in test_ids]}
    notes = [f"CUB-200-2011 from {source.name}: {len(ids):,} images of {len(class_ids)} species; the first "
             f"{len(train_ids)} species train, the last {len(test_ids)} are the unseen test classes; "
             f"shorter side resized to {size}, centre square"]
    return tuple(out), [names[c] for c in train_ids], info, notes


def find(root: str | Path | None = None) -> list[Path]:
    """Local copies (archives or extracted folders), in search order."""
    found = []
    for r, _ in D.search_roots(root):
        for sub in FOLDERS:
            folder = r / sub
            for candidate in (folder / ARCHIVE, folder / "CUB_200_2011", folder):
                if candidate.is_file() or (candidate / "images.txt").is_file():
                    found.append(candidate)
                    break
    return found


def load(size: int = 64, root: str | Path | None = None, download: bool = True,
         n_train_classes: int = N_TRAIN_CLASSES) -> D.ImageData:
    """CUB-200-2011 with the standard split (see the module docstring; `n_train_classes` species train),
    images at `size`."""
    sources = find(root)
    problem = None
    if not sources:
        problem = D._why_not_download(download)
        if problem is None:
            path = D.PROJECT_DATA / "cub200" / ARCHIVE
            try:
                D._fetch(URL, path)
                sources = [path]
            except Exception as e:  # offline, blocked, moved
                problem = f"download failed: {type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"
    if not sources:
        looked = ", ".join(f"{shown}/{sub}" for _, shown in D.search_roots(root) for sub in FOLDERS[:1])
        raise D.DataNotFound(f"CUB-200-2011 is not here ({problem}). Looked in: {looked}. Fix: put {ARCHIVE} "
                             f"({URL.split('?')[0]}) under <root>/cub200/ and set DML_DATA=<root>, or allow the "
                             f"download (download=True, DML_OFFLINE unset)")
    source = sources[0]
    tensors, classes, info, notes = D._cached(f"cub200-{size}-{n_train_classes}", source,
                                              lambda: read_cub(source, size, n_train_classes))
    return D.ImageData(*tensors, classes, f"CUB-200-2011 from {source.name}", "cub200", list(notes), info)
