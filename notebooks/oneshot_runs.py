"""Notebook 10's kit, beside the notebook it serves: Lake et al.'s official 20-way one-shot runs on Omniglot
(`load_oneshot_runs`), read from `all_runs.zip` into `Episode`s."""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from utils import data as D

ONESHOT_URL = "https://github.com/brendenlake/omniglot/raw/master/python/one-shot-classification/all_runs.zip"


@dataclass
class Episode:
    """One N-way one-shot task: match every query to the support image of the same character.

    `support` and `query` are uint8 N×1×H×W images (ink 255 on background 0, as `load("omniglot")`);
    `answer[i]` (int64) is the index into `support` of query i's character.
    """
    name: str
    support: torch.Tensor
    query: torch.Tensor
    answer: torch.Tensor

    def __repr__(self) -> str:
        return f"Episode({self.name!r}: {len(self.support)} support, {len(self.query)} queries, " \
               f"{'×'.join(map(str, self.support.shape[1:]))})"

    def resized(self, height: int, width: int) -> "Episode":
        """Support and queries resized to height×width (see `D.resize`)."""
        return replace(self, support=D.resize(self.support, height, width), query=D.resize(self.query, height, width))


def read_oneshot_runs(path: str | Path) -> list[Episode]:
    """Lake et al.'s `all_runs.zip` -> one `Episode` per `runNN/` (see `load_oneshot_runs`).

    Each run holds `training/classNN.png` (the support), `test/itemNN.png` (the queries) and
    `class_labels.txt`, one line `runNN/test/itemNN.png runNN/training/classMM.png` per query.
    """
    path = Path(path)
    try:
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise ValueError(f"{path} is not a zip file (an interrupted download?); delete it and fetch it again") from e
    episodes = []
    with z:
        names = set(z.namelist())
        runs = sorted({n.split("/")[0] for n in names if n.count("/") == 1 and n.endswith("/class_labels.txt")},
                      key=D._natural_key)
        if not runs:
            raise ValueError(f"{path} holds no runNN/class_labels.txt: not Lake et al.'s all_runs.zip")
        for run in runs:
            support, query = ([n for n in sorted(names, key=D._natural_key) if n.startswith(f"{run}/{part}/")
                               and n.endswith(".png")] for part in ("training", "test"))
            key = {}
            for line in z.read(f"{run}/class_labels.txt").decode().splitlines():
                if line.strip():
                    if len(line.split()) != 2:
                        raise ValueError(f"{path}: {run}/class_labels.txt: {line!r} is not '<query> <support>'")
                    q, s = line.split()
                    key[q] = s
            answer = []
            for q in query:
                if key.get(q) not in support:
                    raise ValueError(f"{path}: {run}/class_labels.txt gives {q} no match among {run}/training/*.png "
                                     f"(it says {key.get(q)!r})")
                answer.append(support.index(key[q]))
            images = [torch.from_numpy(np.stack([D._ink(z.read(n)) for n in files])).unsqueeze(1)
                      for files in (support, query)]
            episodes.append(Episode(run, *images, torch.tensor(answer, dtype=torch.int64)))
    return episodes


def load_oneshot_runs(root: str | Path | None = None, download: bool = True) -> list[Episode]:
    """Lake et al.'s official 20-way one-shot task on Omniglot: 20 `Episode`s ("run01" … "run20").

    Each run shows one drawing of each of 20 characters (the support) and 20 other drawings of the
    same characters (the queries); `answer` gives each query's correct support. The characters come
    from the evaluation alphabets, which `load("omniglot")` (the background set) never contains: an
    evaluation set only, never train on it. Images as `load("omniglot")`: uint8 20×1×105×105, ink 255.

    Reads `all_runs.zip` from `<root>/omniglot/` (looked up like `load`'s folders); if absent and
    `download`, fetches it from the Omniglot repository into the project's `data/omniglot/`.
    """
    looked = []
    for folder, shown in D._local_folders("omniglot", root):
        looked.append(f"{shown}/all_runs.zip")
        if (folder / "all_runs.zip").is_file():
            return read_oneshot_runs(folder / "all_runs.zip")
    problem = D._why_not_download(download)
    if problem is None:
        path = D.PROJECT_DATA / "omniglot" / "all_runs.zip"
        try:
            D._fetch(ONESHOT_URL, path)
            return read_oneshot_runs(path)
        except Exception as e:  # offline, blocked, …
            problem = f"download failed: {type(e).__name__}: {str(e).splitlines()[0][:100]}"
    raise D.DataNotFound(f"could not load the Omniglot one-shot runs ({problem}). Looked in: {', '.join(looked)}.\n"
                       f"Fix: put all_runs.zip ({ONESHOT_URL}) under <root>/omniglot/ and set DML_DATA=<root>, "
                       f"or pass root=…; or allow the download (download=True, DML_OFFLINE unset).")
