"""CUB-200-2011 (utils/cub.py) from a tiny fixture in the official archive's exact layout: the standard
split by species, labels, centre crops, the local search, the cache and the offline message."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from notebooks.retrieval import cub
from utils import data

SPECIES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross", "004.Groove_billed_Ani"]


def jpeg(value: int, w: int = 40, h: int = 30) -> bytes:
    """A w×h photo: gray `value`, with a 2-pixel white border on the left and right (cut by a centre crop)."""
    a = np.full((h, w, 3), value, np.uint8)
    a[:, :2] = a[:, -2:] = 255
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=100)
    return buf.getvalue()


def cub_files(per_class: int = 3) -> dict[str, bytes]:
    """{path inside CUB_200_2011/: bytes}: images.txt, image_class_labels.txt, classes.txt and the JPEGs.
    Image ids are listed out of class order; image j of species k is gray 40·k + 10·j."""
    files, images, labels, i = {}, [], [], 0
    order = [(k, j) for j in range(per_class) for k in range(len(SPECIES))]     # interleaved species
    for k, j in order:
        i += 1
        name = f"{SPECIES[k]}/{SPECIES[k].split('.')[1]}_{j:04d}.jpg"
        files[f"images/{name}"] = jpeg(40 * k + 10 * j)
        images.append(f"{i} {name}")
        labels.append(f"{i} {k + 1}")
    files["images.txt"] = ("\n".join(images) + "\n").encode()
    files["image_class_labels.txt"] = ("\n".join(labels) + "\n").encode()
    files["classes.txt"] = ("\n".join(f"{k + 1} {s}" for k, s in enumerate(SPECIES)) + "\n").encode()
    files["attributes/certainties.txt"] = b"1 not visible\n"
    return files


def write_archive(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, content in cub_files().items():
            info = tarfile.TarInfo(f"CUB_200_2011/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path


def write_folder(folder: Path) -> Path:
    for name, content in cub_files().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


@pytest.mark.parametrize("kind", ["archive", "folder"])
def test_standard_split_by_species(tmp_path, kind):
    source = write_archive(tmp_path / "CUB_200_2011.tgz") if kind == "archive" else write_folder(tmp_path / "CUB_200_2011")
    (xtr, ytr, xte, yte), classes, info, notes = cub.read_cub(source, size=16, n_train_classes=2)
    assert classes == SPECIES[:2] and info["test_classes"] == SPECIES[2:]
    assert xtr.shape == (6, 3, 16, 16) and xte.shape == (6, 3, 16, 16) and str(xtr.dtype) == "torch.uint8"
    assert ytr.tolist() == [0, 1, 0, 1, 0, 1] and yte.tolist() == [0, 1, 0, 1, 0, 1]   # image-id order, relabelled
    # the centre square of a 40×30 photo resized to 16 high: the white side borders are cut off
    gray = xtr.float().mean((1, 2, 3))
    assert gray.tolist() == pytest.approx([0, 40, 10, 50, 20, 60], abs=2)
    assert gray.tolist() != pytest.approx(xte.float().mean((1, 2, 3)).tolist(), abs=2)
    assert "the first 2 species train, the last 2" in notes[0]


def test_load_finds_a_local_copy_and_caches(tmp_path, monkeypatch, no_local_data):
    write_archive(tmp_path / "root" / "cub200" / "CUB_200_2011.tgz")
    monkeypatch.setenv("DML_DATA", str(tmp_path / "root"))
    birds = cub.load(16, n_train_classes=2)
    assert birds.name == "cub200" and len(birds.classes) == 2 and birds.x_train.shape[1:] == (3, 16, 16)
    assert birds.info["test_classes"] == SPECIES[2:] and "$DML_DATA" not in birds.source
    assert len(list(Path(data.cache_dir()).glob("cub200-16-2-*.pt"))) == 1
    again = cub.load(16, n_train_classes=2)     # from the cache: the same tensors
    assert (again.x_train == birds.x_train).all() and again.info == birds.info


def test_offline_without_a_copy_says_why(no_local_data):
    with pytest.raises(data.DataNotFound, match=r"offline: DML_OFFLINE is set.*CUB_200_2011\.tgz"):
        cub.load(16)
    with pytest.raises(data.DataNotFound, match="download disabled"):
        cub.load(16, download=False)


def test_not_cub(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "images.txt").write_text("1 a.jpg\n")
    with pytest.raises(data.DataNotFound, match="is not CUB-200-2011: image_class_labels.txt, classes.txt missing"):
        cub.read_cub(tmp_path / "x")
