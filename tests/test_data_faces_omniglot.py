"""The AT&T faces, Omniglot and its one-shot runs, from tiny fixtures written by hand in their exact
on-disk formats; and the helpers for unseen classes: `hold_out`, `rotations`, `resize`."""
from __future__ import annotations

import io
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from utils import data
from utils.augment import rotations   # notebook 10's lesson cell
from utils.verification import hold_out   # notebook 09's lesson cell

from notebooks import oneshot_runs as R


# ----------------------------------------------------------------------------- writers
def write_faces(folder: Path, people: tuple[int, ...] = (1, 2, 10), n: int = 10) -> Path:
    """`folder/s<k>/<i>.pgm`, 92 wide × 112 high, gray 100 with two marker pixels: (0, 0) = k, (0, 1) = i."""
    for k in people:
        (folder / f"s{k}").mkdir(parents=True)
        for i in range(1, n + 1):
            a = np.full((112, 92), 100, np.uint8)
            a[0, 0], a[0, 1] = k, i
            Image.fromarray(a, "L").save(folder / f"s{k}" / f"{i}.pgm")
    (folder / "README").write_text("The ORL face database\n")
    return folder


def drawing(row: int, col: int, size: int = 105) -> bytes:
    """A binary PNG like Omniglot's (mode "1", white background), black ink at one pixel (row, col)."""
    a = np.ones((size, size), bool)
    a[row, col] = False
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


# character -> (its marker column, drawer ids); a drawing of drawer d has its ink at (d, column)
SMALL1 = {("Greek", "character01"): (10, range(1, 21)), ("Greek", "character02"): (11, range(1, 21)),
          ("Balinese", "character01"): (12, range(1, 7))}
SMALL2 = {("Greek", "character01"): (10, range(1, 21)), ("Greek", "character02"): (11, range(1, 21)),
          ("Tagalog", "character03"): (13, [19, 3, 12, 7, 11])}


def write_background_zip(path: Path, chars: dict, set_name: str | None = None, seed: int = 0) -> Path:
    """A zip laid out as Omniglot's: `<set>/<alphabet>/<character>/<id>_<drawer>.png`, entries shuffled."""
    entries = [(f"{alphabet}/{character}/{col:04d}_{d:02d}.png", drawing(d, col))
               for (alphabet, character), (col, drawers) in chars.items() for d in drawers]
    random.Random(seed).shuffle(entries)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for name, png in entries:
            z.writestr(f"{set_name or path.stem}/{name}", png)
    return path


@pytest.fixture
def omniglot_root(tmp_path):
    """`<root>/omniglot/` holding the two small background zips (Greek in both, identical)."""
    root = tmp_path / "datasets"
    write_background_zip(root / "omniglot" / "images_background_small1.zip", SMALL1)
    write_background_zip(root / "omniglot" / "images_background_small2.zip", SMALL2)
    return root


# run -> {query item: support class}; support class k has its ink at (k, 2k), query item j at (j, 2k + 1)
KEYS = {"run01": {1: 3, 2: 1, 3: 2},
        "run02": {j: k for j, k in zip(range(1, 13), [12, 5, 1, 9, 2, 11, 3, 10, 4, 8, 6, 7])}}


def write_runs(path: Path, keys: dict = KEYS) -> Path:
    """An `all_runs.zip` like Lake et al.'s: `runNN/training/classNN.png`, `runNN/test/itemNN.png`,
    `runNN/class_labels.txt` (one line per query: its path, then its correct support's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for run, key in keys.items():
            for k in key.values():
                z.writestr(f"{run}/training/class{k:02d}.png", drawing(k, 2 * k))
            for j, k in key.items():
                z.writestr(f"{run}/test/item{j:02d}.png", drawing(j, 2 * k + 1))
            lines = [f"{run}/test/item{j:02d}.png {run}/training/class{k:02d}.png" for j, k in key.items()]
            z.writestr(f"{run}/class_labels.txt", "\r\n".join(reversed(lines)) + "\r\n")
    return path


def ink_at(x: torch.Tensor) -> list[tuple[int, int]]:
    """(row, column) of the single ink pixel of each 1×H×W image."""
    assert x.unique().tolist() == [0, 255] and ((x == 255).flatten(1).sum(1) == 1).all()
    return [tuple(divmod(int(i), x.shape[-1])) for i in (x == 255).flatten(1).float().argmax(1)]


def tiny(n_classes: int = 3, size: int = 4) -> data.ImageData:
    """2 train and 1 test image per class; image pixels all equal to its index in train + test (0..);
    a per-image `info` entry `id` = that index."""
    y_tr, y_te = torch.arange(n_classes).repeat(2), torch.arange(n_classes)
    ids = torch.arange(3 * n_classes)
    x = torch.randint(0, 256, (3 * n_classes, 1, size, size), generator=torch.Generator().manual_seed(0),
                      dtype=torch.uint8)
    x[:, 0, 0, 0] = ids.to(torch.uint8)
    n_tr = 2 * n_classes
    return data.ImageData(x[:n_tr], y_tr, x[n_tr:], y_te, [f"c{i}" for i in range(n_classes)], "tiny", "tiny",
                          info={"id_train": ids[:n_tr], "id_test": ids[n_tr:], "note": "kept"})


# ----------------------------------------------------------------------------- AT&T faces
def test_att_faces_shapes_order_and_split(tmp_path, no_local_data):
    root = tmp_path / "datasets"
    write_faces(root / "att_faces")
    d = data.load("att_faces", root=root, download=False)
    assert d.x_train.shape == (21, 1, 112, 92) and d.x_test.shape == (9, 1, 112, 92)
    assert d.x_train.dtype == torch.uint8 and d.y_train.dtype == torch.int64 and d.y_test.dtype == torch.int64
    assert d.classes == ["s1", "s2", "s10"]                          # numeric order: s2 before s10
    assert d.y_train.tolist() == [0] * 7 + [1] * 7 + [2] * 7 and d.y_test.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert d.x_train[:, 0, 0, 0].tolist() == [1] * 7 + [2] * 7 + [10] * 7            # the person marker
    assert d.x_train[:, 0, 0, 1].tolist() == list(range(1, 8)) * 3                   # images 1–7 train …
    assert d.x_test[:, 0, 0, 1].tolist() == [8, 9, 10] * 3                           # … 8, 9, 10 test
    assert int(d.x_test[0, 0, 50, 50]) == 100 and d.name == "att_faces" and str(root) in d.source


def test_att_faces_other_folder_name_and_cache(tmp_path, no_local_data, isolated_env, monkeypatch):
    write_faces(tmp_path / "orl_faces", people=(3, 1), n=8)
    first = data.load("att_faces", root=tmp_path, download=False)
    assert first.classes == ["s1", "s3"] and (len(first.y_train), len(first.y_test)) == (14, 2)
    assert len(list(isolated_env.glob("att_faces-*.pt"))) == 1
    monkeypatch.setattr(data, "read_att_faces", lambda *a: pytest.fail("decoded again instead of using the cache"))
    again = data.load("att_faces", root=tmp_path, download=False)
    assert torch.equal(again.x_test, first.x_test) and again.classes == first.classes


def test_att_faces_person_with_too_few_images_is_refused(tmp_path, no_local_data):
    write_faces(tmp_path / "att_faces", people=(1,), n=7)
    with pytest.raises(ValueError, match=r"s1 holds 7"):
        data.load("att_faces", root=tmp_path, download=False)


def test_att_faces_absent_offline_says_what_to_do(tmp_path, no_local_data, monkeypatch):
    monkeypatch.setattr(data, "_download", lambda *a: pytest.fail("tried to download"))
    with pytest.raises(data.DataNotFound) as e:
        data.load("att_faces", root=tmp_path, download=True)
    msg = str(e.value)
    assert "DML_OFFLINE" in msg and f"{tmp_path}/att_faces" in msg and "data/orl_faces" in msg
    assert "s1/" in msg and ".pgm" in msg and "<root>/att_faces/" in msg and "DML_DATA" in msg
    assert "idx" not in msg                                           # not MNIST's instructions


def test_att_faces_online_is_the_olivetti_copy(no_local_data, monkeypatch):
    import sklearn.datasets

    monkeypatch.delenv("DML_OFFLINE")
    calls = []

    def fake_fetch(data_home=None, **kw):                             # 10 consecutive faces per person,
        calls.append(data_home)                                       # face i of person k filled with
        images = np.repeat(np.arange(40) / 39.0, 10)[:, None, None] * np.ones((1, 64, 64))  # value k / 39
        return sklearn.datasets._base.Bunch(images=images.astype(np.float32), target=np.repeat(np.arange(40), 10))

    monkeypatch.setattr(sklearn.datasets, "fetch_olivetti_faces", fake_fetch)
    d = data.load("att_faces")
    assert calls and str(data.PROJECT_DATA) in str(calls[0])         # downloaded into the project's data/
    assert d.x_train.shape == (280, 1, 112, 92) and d.x_test.shape == (120, 1, 112, 92)
    assert d.x_train.dtype == torch.uint8 and d.classes == data.FACE_CLASSES
    assert torch.equal(d.y_train, torch.arange(40).repeat_interleave(7))
    assert torch.equal(d.y_test, torch.arange(40).repeat_interleave(3))
    assert d.x_test[-1].unique().tolist() == [255] and d.x_train[7 * 13].unique().tolist() == [round(13 / 39 * 255)]
    assert any("Olivetti" in n and "64×64" in n for n in d.notes) and "scikit-learn" in d.source


# ----------------------------------------------------------------------------- Omniglot
def test_omniglot_small_zips_dedup_labels_ink_and_split(omniglot_root, no_local_data):
    d = data.load("omniglot", root=omniglot_root, download=False)
    assert d.classes == ["Balinese/character01", "Greek/character01", "Greek/character02", "Tagalog/character03"]
    assert d.x_train.shape == (2 + 16 + 16 + 1, 1, 105, 105) and d.x_test.shape == (4 * 4, 1, 105, 105)
    assert d.x_train.dtype == torch.uint8 and d.y_train.dtype == torch.int64
    # Greek is in both zips, identical: each drawing once (20 per character, not 40)
    assert torch.bincount(torch.cat([d.y_train, d.y_test])).tolist() == [6, 20, 20, 5]
    assert d.y_train.tolist() == [0] * 2 + [1] * 16 + [2] * 16 + [3]
    assert d.y_test.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    # ink (black in the files) is 255 on 0, at (drawer, the character's column)
    cols = [12, 10, 11, 13]
    assert ink_at(d.x_train) == [(int(dr), cols[c]) for dr, c in zip(d.info["drawer_train"], d.y_train)]
    assert ink_at(d.x_test) == [(int(dr), cols[c]) for dr, c in zip(d.info["drawer_test"], d.y_test)]
    # split by drawer: the last 4 drawers of every character test, sorted numerically
    assert d.info["drawer_train"].tolist() == [1, 2] + list(range(1, 17)) * 2 + [3]
    assert d.info["drawer_test"].tolist() == [3, 4, 5, 6] + [17, 18, 19, 20] * 2 + [7, 11, 12, 19]
    assert d.info["drawer_train"].dtype == torch.int64 and d.info["alphabet_test"].dtype == torch.int64
    assert d.info["alphabets"] == ["Balinese", "Greek", "Tagalog"]
    assert d.info["alphabet_train"].tolist() == [0] * 2 + [1] * 32 + [2]
    assert d.info["alphabet_test"].tolist() == [0] * 4 + [1] * 8 + [2] * 4
    assert any("images_background_small1.zip + images_background_small2.zip" in n for n in d.notes)


def test_omniglot_conflicting_copies_are_refused(tmp_path, no_local_data):
    folder = tmp_path / "omniglot"
    write_background_zip(folder / "images_background_small1.zip", SMALL1)
    write_background_zip(folder / "images_background_small2.zip", {("Greek", "character02"): (50, range(1, 21))})
    with pytest.raises(ValueError, match=r"Greek/character02/0050_\d\d.png differs between .*small1.zip and .*2.zip"):
        data.load("omniglot", root=tmp_path, download=False)


@pytest.mark.parametrize("layout", ["zip", "folder"])
def test_omniglot_full_background_set_is_preferred(tmp_path, no_local_data, layout):
    folder = tmp_path / "omniglot"
    write_background_zip(folder / "images_background_small1.zip", SMALL1)
    full = {("Angelic", "character01"): (5, range(1, 21)), ("Korean", "character02"): (6, range(1, 21))}
    write_background_zip(folder / "images_background.zip", full)
    if layout == "folder":                                            # extracted, as torchvision leaves it
        with zipfile.ZipFile(folder / "images_background.zip") as z:
            z.extractall(folder)
        (folder / "images_background.zip").unlink()
    d = data.load("omniglot", root=tmp_path, download=False)
    assert d.classes == ["Angelic/character01", "Korean/character02"] and d.info["alphabets"] == ["Angelic", "Korean"]
    assert (len(d.y_train), len(d.y_test)) == (32, 8)


def test_omniglot_absent_offline_says_what_to_do(tmp_path, no_local_data):
    with pytest.raises(data.DataNotFound) as e:
        data.load("omniglot", root=tmp_path, download=True)
    msg = str(e.value)
    assert "DML_OFFLINE" in msg and "images_background_small1.zip" in msg and "<root>/omniglot/" in msg
    assert "DML_DATA" in msg and "torchvision" in msg


def test_omniglot_online_via_torchvision(tmp_path, no_local_data, monkeypatch):
    import torchvision.datasets

    class FakeOmniglot:                                 # writes what torchvision leaves: root/omniglot-py/…
        def __init__(self, root, background=True, download=False):
            assert background and download
            target = Path(root) / "omniglot-py" / "images_background"
            for (alphabet, character), (col, drawers) in SMALL2.items():
                for dr in drawers:
                    (target / alphabet / character).mkdir(parents=True, exist_ok=True)
                    (target / alphabet / character / f"{col:04d}_{dr:02d}.png").write_bytes(drawing(dr, col))
            self.target_folder = str(target)

    monkeypatch.delenv("DML_OFFLINE")
    monkeypatch.setattr(torchvision.datasets, "Omniglot", FakeOmniglot)
    d = data.load("omniglot", root=tmp_path)
    assert (data.PROJECT_DATA / "torchvision" / "omniglot-py" / "images_background").is_dir()
    assert d.classes == ["Greek/character01", "Greek/character02", "Tagalog/character03"]
    assert d.x_train.shape == (33, 1, 105, 105) and len(d.y_test) == 12 and "torchvision" in d.source
    assert ink_at(d.x_test[-1:]) == [(19, 13)] and d.info["drawer_test"][-1] == 19


def test_select_and_per_class_keep_info_in_step(omniglot_root, no_local_data):
    d = data.load("omniglot", root=omniglot_root, download=False)
    s = d.select([3, 1])                                              # Tagalog -> 0, Greek/character01 -> 1
    assert s.classes == ["Tagalog/character03", "Greek/character01"]
    assert s.info["alphabet_train"].tolist() == [1] * 16 + [2]
    assert s.info["drawer_test"].tolist() == [17, 18, 19, 20, 7, 11, 12, 19]
    p = d.per_class(n_train=1, n_test=2, seed=0)
    assert len(p.info["drawer_train"]) == len(p.y_train) == 4 and len(p.info["drawer_test"]) == len(p.y_test) == 8
    cols = [12, 10, 11, 13]
    assert ink_at(p.x_test) == [(int(dr), cols[c]) for dr, c in zip(p.info["drawer_test"], p.y_test)]
    assert p.info["alphabets"] == d.info["alphabets"]


# ----------------------------------------------------------------------------- one-shot runs
def test_oneshot_runs_parse_and_match_the_key(tmp_path, no_local_data):
    write_runs(tmp_path / "omniglot" / "all_runs.zip")
    runs = R.load_oneshot_runs(root=tmp_path, download=False)
    assert [r.name for r in runs] == ["run01", "run02"]
    for run in runs:
        key = KEYS[run.name]
        n = len(key)
        assert run.support.shape == (n, 1, 105, 105) and run.query.shape == (n, 1, 105, 105)
        assert run.support.dtype == torch.uint8 and run.answer.dtype == torch.int64 and run.answer.shape == (n,)
        classes = sorted(key.values())                                # support i is class{classes[i]:02d}.png
        assert ink_at(run.support) == [(k, 2 * k) for k in classes]   # ink 255: class01, class02, … class12
        assert [classes[a] for a in run.answer.tolist()] == [key[j] for j in sorted(key)]
        # each query's ink column says its character: it must be its answer's column + 1
        assert [c for _, c in ink_at(run.query)] == [2 * classes[a] + 1 for a in run.answer.tolist()]
    assert runs[0].answer.tolist() == [2, 0, 1]
    assert runs[1].resized(28, 28).query.shape == (12, 1, 28, 28)


def test_oneshot_runs_missing_key_line_is_reported(tmp_path):
    path = tmp_path / "all_runs.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("run01/training/class01.png", drawing(1, 1))
        z.writestr("run01/test/item01.png", drawing(1, 2))
        z.writestr("run01/test/item02.png", drawing(1, 3))
        z.writestr("run01/class_labels.txt", "run01/test/item01.png run01/training/class01.png\n")
    with pytest.raises(ValueError, match=r"item02.png no match"):
        R.read_oneshot_runs(path)
    path.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(ValueError, match="not a zip file"):
        R.read_oneshot_runs(path)


def test_oneshot_runs_absent_offline_says_what_to_do(tmp_path, no_local_data, monkeypatch):
    monkeypatch.setattr(data, "_fetch", lambda *a: pytest.fail("tried to download"))
    with pytest.raises(data.DataNotFound) as e:
        R.load_oneshot_runs(root=tmp_path, download=True)
    msg = str(e.value)
    assert "DML_OFFLINE" in msg and f"{tmp_path}/omniglot/all_runs.zip" in msg and "data/omniglot/all_runs.zip" in msg
    assert R.ONESHOT_URL in msg and "DML_DATA" in msg and isinstance(e.value, FileNotFoundError)


def test_oneshot_runs_online_go_to_project_data(tmp_path, no_local_data, monkeypatch):
    source = write_runs(tmp_path / "upstream.zip")
    fetched = []
    monkeypatch.setattr(data, "_fetch", lambda url, path: (fetched.append((url, path)), shutil.copy(source, path)))
    monkeypatch.delenv("DML_OFFLINE")
    (data.PROJECT_DATA / "omniglot").mkdir()
    runs = R.load_oneshot_runs()
    assert fetched == [(R.ONESHOT_URL, data.PROJECT_DATA / "omniglot" / "all_runs.zip")]
    assert [r.name for r in runs] == ["run01", "run02"]
    assert len(R.load_oneshot_runs()) == 2 and len(fetched) == 1     # found locally the second time


# ----------------------------------------------------------------------------- hold_out, rotations, resize
def test_hold_out_relabels_and_moves_both_splits():
    d = tiny(n_classes=4)                 # train ids 0..7 (labels 0,1,2,3,0,1,2,3), test ids 8..11 (0,1,2,3)
    h = hold_out(d, [3, 1])
    assert h.classes == ["c0", "c2"] and h.info["test_classes"] == ["c3", "c1"]
    assert h.x_train[:, 0, 0, 0].tolist() == [0, 2, 4, 6, 8, 10] and h.y_train.tolist() == [0, 1, 0, 1, 0, 1]
    assert h.x_test[:, 0, 0, 0].tolist() == [1, 3, 5, 7, 9, 11] and h.y_test.tolist() == [1, 0, 1, 0, 1, 0]
    assert h.info["id_train"].tolist() == [0, 2, 4, 6, 8, 10] and h.info["id_test"].tolist() == [1, 3, 5, 7, 9, 11]
    assert h.info["note"] == "kept" and "test_classes" not in d.info


@pytest.mark.parametrize("bad,match", [([4], "unknown class indices \\[4\\]"), ([-1], "unknown"),
                                       ([1, 2, 1], "more than once"), ([], "at least one"),
                                       ([0, 1, 2, 3], "at least one")])
def test_hold_out_rejects_bad_class_lists(bad, match):
    with pytest.raises(ValueError, match=match):
        hold_out(tiny(n_classes=4), bad)


def test_rotations_are_new_classes():
    d = tiny(n_classes=3)
    r = rotations(d)
    assert r.x_train.shape == (24, 1, 4, 4) and r.x_test.shape == (12, 1, 4, 4)
    assert r.classes == ["c0", "c1", "c2", "c0@90", "c1@90", "c2@90", "c0@180", "c1@180", "c2@180",
                         "c0@270", "c1@270", "c2@270"]
    assert r.y_train.tolist() == [k * 3 + c for k in range(4) for c in d.y_train.tolist()]
    assert r.y_test.tolist() == [k * 3 + c for k in range(4) for c in d.y_test.tolist()]
    for k in range(4):
        block = r.x_train[6 * k: 6 * (k + 1)]
        assert torch.equal(block, torch.rot90(d.x_train, k, dims=(2, 3)))
        assert torch.equal(torch.rot90(block, 4 - k, dims=(2, 3)), d.x_train)        # turned back: the original
        assert r.classes[r.y_train[6 * k + 2]] == f"{d.classes[d.y_train[2]]}{'' if k == 0 else f'@{90 * k}'}"
    assert not torch.equal(r.x_train[6:12], r.x_train[:6])                           # 90° is not 0°
    assert torch.equal(torch.rot90(d.x_test, 4, dims=(2, 3)), d.x_test)
    assert r.info["id_train"].tolist() == list(range(6)) * 4 and r.info["id_test"].tolist() == [6, 7, 8] * 4


def test_rotations_after_hold_out_number_test_classes_by_their_own_count():
    h = hold_out(tiny(n_classes=4), [2])
    r = rotations(h)
    assert r.info["test_classes"] == ["c2", "c2@90", "c2@180", "c2@270"]
    assert r.y_test.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3 and r.y_train.max() == 11
    with pytest.raises(ValueError, match="square"):
        rotations(data.ImageData(*[torch.zeros(1, 1, 4, 5, dtype=torch.uint8), torch.zeros(1).long()] * 2,
                                      ["a"], "t"))


def test_resize_and_resized(omniglot_root, no_local_data):
    d = data.load("omniglot", root=omniglot_root, download=False)
    r = d.resized(28, 20)
    assert r.x_train.shape == (35, 1, 28, 20) and r.x_test.shape == (16, 1, 28, 20) and r.x_train.dtype == torch.uint8
    assert torch.equal(r.y_train, d.y_train) and r.name == "omniglot[28×20]" and r.info is d.info
    assert int(r.x_train[0].max()) > 0                                # the ink survives antialiasing
    flat = torch.full((2, 3, 10, 10), 77, dtype=torch.uint8)
    assert data.resize(flat, 5, 7).shape == (2, 3, 5, 7) and data.resize(flat, 5, 7).unique().tolist() == [77]
    assert data.resize(flat, 10, 10) is flat
    with pytest.raises(ValueError, match="N×C×H×W"):
        data.resize(flat[0], 5, 5)


def test_merged_puts_every_image_in_the_training_split():
    from utils.data import ImageData

    d = ImageData(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0]),
                  torch.ones(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([1, 1]), ["a", "b"], "toy", "toy",
                  info={"drawer_train": torch.tensor([1, 2, 3]), "drawer_test": torch.tensor([4, 5])})
    m = d.merged()
    assert m.x_train.shape[0] == 5 and m.y_train.tolist() == [0, 1, 0, 1, 1] and m.x_train[3:].eq(1).all()
    assert m.info["drawer_train"].tolist() == [1, 2, 3, 4, 5] and torch.equal(m.x_test, d.x_test)
