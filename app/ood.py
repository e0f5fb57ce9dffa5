"""Out-of-distribution ("not a digit") scores for a trained classifier, outlier exposure, and generated
images that are not digits.

Post-hoc scores, computed from a trained network without retraining (higher = more anomalous, as in
`utils.anomaly`):

- `msp`: 1 − the maximum softmax probability (Hendrycks & Gimpel 2017);
- `energy`: −logsumexp of the logits, the free energy (Liu et al. 2020);
- `mahalanobis`: the smallest class-conditional Mahalanobis distance of the embedding, class means with
  one shared covariance (Lee et al. 2018, on the last embedding, without their input perturbation);
- `knn`: cosine distance to the nearest training embedding (notebook 06);
- `lof`: the Local Outlier Factor of the embedding among the training embeddings (notebook 06).

Outlier exposure (Hendrycks et al. 2019) trains instead: the `outlier_exposure` head is L2-softmax for
images with a class label and, for images labelled −1 (not digits), the cross-entropy to the uniform
distribution — the network learns to be unsure on what is not a digit.

`scribbles`, `strokes`, `shapes`, `specks` and `blanks` draw pictures that are not digits the way people
draw on a canvas: dark strokes on white, in families, seeded; `drawn_digits` draws digits the same way,
from a few stroke templates per digit, jittered, slanted, stretched, smooth or jagged.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from utils import anomaly, losses, scores
from utils.not_a_digit import energy_score, fit_mahalanobis, mahalanobis_score, msp_score  # notebook 12's lesson cells
from utils.outlier_exposure import NOT_A_DIGIT, OutlierExposureHead  # noqa: F401

SCORES = ("msp", "energy", "mahalanobis", "knn", "lof")


# ----------------------------------------------------------------------------- outlier exposure
# The head is notebook 12's lesson cell (`utils.outlier_exposure`).
losses.register("outlier_exposure")(OutlierExposureHead)


# ----------------------------------------------------------------------------- post-hoc scores
class Scorer:
    """A "not a digit" score fitted on the training embeddings: `score(emb, logits)` (higher = less like a
    digit). `state()` / `Scorer.from_state` store and rebuild it (tensors and numbers only)."""

    name = "score"

    def fit(self, emb: torch.Tensor, y: torch.Tensor) -> "Scorer":
        return self

    def score(self, emb: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state(self) -> dict:
        return {"name": self.name, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}

    @staticmethod
    def from_state(state: dict) -> "Scorer":
        state = dict(state)
        s = make_scorer(state.pop("name"))
        vars(s).update(state)
        return s


class MSP(Scorer):
    """1 − max softmax probability."""
    name = "msp"

    def score(self, emb, logits):
        return msp_score(logits)


class Energy(Scorer):
    """−logsumexp(logits): low (very negative) when some class is confident."""
    name = "energy"

    def score(self, emb, logits):
        return energy_score(logits)


class Mahalanobis(Scorer):
    """min over classes of (z − μ_c)ᵀ Σ⁻¹ (z − μ_c), with Σ the covariance pooled over classes.

    An embedding's covariance is nearly singular (directions with almost no variance would dominate the
    distance and amplify rounding), so Σ is the Ledoit–Wolf shrinkage estimate (scikit-learn)."""
    name = "mahalanobis"

    def fit(self, emb, y):
        self.means, self.precision = fit_mahalanobis(emb, y)
        return self

    def score(self, emb, logits):
        return mahalanobis_score(emb, self.means, self.precision)


class KNN(Scorer):
    """Cosine distance to the nearest training embedding (`utils.anomaly.knn_distance`)."""
    name = "knn"

    def fit(self, emb, y):
        self.train = F.normalize(emb.float(), dim=1)
        return self

    def score(self, emb, logits):
        return anomaly.knn_distance(self.train, emb, k=1, metric="cosine", device="cpu")


class LOF(Scorer):
    """Local Outlier Factor (20 neighbours, cosine geometry: unit embeddings) among at most `MAX_TRAIN`
    training embeddings (a seeded sample: scikit-learn's LOF is the slowest score here)."""
    name = "lof"
    MAX_TRAIN = 10_000

    def fit(self, emb, y):
        keep = torch.randperm(len(emb), generator=torch.Generator().manual_seed(0))[:self.MAX_TRAIN]
        self.train = F.normalize(emb[keep.sort().values].float(), dim=1)
        return self

    def score(self, emb, logits):
        if getattr(self, "_lof", None) is None:
            self._lof = scores.lof(self.train, n_neighbors=20, n_jobs=1)
        return scores.lof_scores(self._lof, F.normalize(emb.float(), dim=1))


_SCORERS = {c.name: c for c in (MSP, Energy, Mahalanobis, KNN, LOF)}


def make_scorer(name: str) -> Scorer:
    """A new, unfitted scorer by name (one of `SCORES`)."""
    if name not in _SCORERS:
        raise ValueError(f"unknown score {name!r}: choose one of {list(SCORES)}")
    return _SCORERS[name]()


def threshold_keeping(scores: torch.Tensor, keep: float) -> float:
    """The score at or below which a fraction `keep` of these (real-digit) scores lies: the cut-off that
    keeps at least `keep` of them (an image is rejected when its score is above it)."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be a fraction in (0, 1], got {keep!r}")
    s = torch.as_tensor(scores).float().sort().values
    return float(s[min(len(s) - 1, math.ceil(keep * len(s)) - 1)])


# ----------------------------------------------------------------------------- drawings that are not digits
SIDE = 112  # the drawings' canvas: 112 × 112 pixels, dark ink on white, like a small drawing canvas


def _canvas():
    from PIL import Image, ImageDraw

    img = Image.new("L", (SIDE, SIDE), 255)
    return img, ImageDraw.Draw(img)


def _points(rng: np.random.Generator, n: int, margin: float = 0.12) -> list[tuple[float, float]]:
    lo, hi = margin * SIDE, (1 - margin) * SIDE
    return [tuple(p) for p in rng.uniform(lo, hi, (n, 2))]


def _smooth(points: list[tuple[float, float]], per_segment: int = 12) -> list[tuple[float, float]]:
    """A Catmull–Rom spline through `points` (a smooth pen path)."""
    p = np.array([points[0], *points, points[-1]], dtype=float)
    out = []
    for i in range(1, len(p) - 2):
        for t in np.linspace(0, 1, per_segment, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(0.5 * ((2 * p[i]) + (-p[i - 1] + p[i + 1]) * t + (2 * p[i - 1] - 5 * p[i] + 4 * p[i + 1] - p[i + 2]) * t2
                              + (-p[i - 1] + 3 * p[i] - 3 * p[i + 1] + p[i + 2]) * t3))
    out.append(p[-2])
    return [tuple(q) for q in out]


def _pen(rng: np.random.Generator) -> int:
    return int(rng.integers(5, 13))


def _draw_family(n: int, seed: int, draw_one) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    out = np.empty((n, 1, SIDE, SIDE), dtype=np.uint8)
    for i in range(n):
        img, d = _canvas()
        draw_one(rng, d)
        out[i, 0] = np.asarray(img)
    return torch.from_numpy(out)


def scribbles(n: int, seed: int = 0) -> torch.Tensor:
    """Random smooth pen paths through 6–12 points: scribbles. n × 1 × 112 × 112 uint8, dark on white."""
    def one(rng, d):
        d.line(_smooth(_points(rng, int(rng.integers(6, 13)))), fill=0, width=_pen(rng), joint="curve")
    return _draw_family(n, seed, one)


def strokes(n: int, seed: int = 0) -> torch.Tensor:
    """Straight strokes: zigzags of 5–8 segments, 3–4 crossing lines, hashes (#) and tally marks."""
    def one(rng, d):
        w, kind = _pen(rng), rng.integers(4)
        if kind == 0:
            d.line(_points(rng, int(rng.integers(6, 10))), fill=0, width=w, joint="curve")
        elif kind == 1:
            for _ in range(int(rng.integers(3, 5))):
                d.line(_points(rng, 2), fill=0, width=w)
        elif kind == 2:
            a, b = sorted(rng.uniform(0.25, 0.75, 2) * SIDE)
            lo, hi = 0.12 * SIDE, 0.88 * SIDE
            for v in (a, b):
                d.line([(v, lo), (v, hi)], fill=0, width=w)
                d.line([(lo, v), (hi, v)], fill=0, width=w)
        else:
            xs = np.linspace(0.2, 0.8, int(rng.integers(3, 7))) * SIDE
            for x in xs:
                d.line([(x, 0.2 * SIDE), (x + rng.uniform(-8, 8), 0.8 * SIDE)], fill=0, width=w)
            d.line([(0.12 * SIDE, 0.7 * SIDE), (0.88 * SIDE, 0.3 * SIDE)], fill=0, width=w)
    return _draw_family(n, seed, one)


def shapes(n: int, seed: int = 0) -> torch.Tensor:
    """Geometric shapes: rectangles, triangles, stars, filled blobs, a smiley, nested squares, a spiral."""
    def one(rng, d):
        w, kind = _pen(rng), rng.integers(7)
        c, r = SIDE / 2 + rng.uniform(-8, 8, 2), rng.uniform(0.25, 0.42) * SIDE
        box = [c[0] - r, c[1] - r * rng.uniform(0.6, 1.0), c[0] + r, c[1] + r * rng.uniform(0.6, 1.0)]
        if kind == 0:
            d.rectangle(box, outline=0, width=w)
        elif kind == 1:
            a = rng.uniform(0, 2 * math.pi)
            d.polygon([(c[0] + r * math.cos(a + k * 2 * math.pi / 3), c[1] + r * math.sin(a + k * 2 * math.pi / 3))
                       for k in range(3)], outline=0, width=w)
        elif kind == 2:
            a = rng.uniform(0, 2 * math.pi)
            pts = [(c[0] + (r if k % 2 == 0 else 0.45 * r) * math.cos(a + k * math.pi / 5),
                    c[1] + (r if k % 2 == 0 else 0.45 * r) * math.sin(a + k * math.pi / 5)) for k in range(10)]
            d.polygon(pts, outline=0, width=w)
        elif kind == 3:
            (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=0)
        elif kind == 4:
            d.ellipse(box, outline=0, width=w)
            for dx in (-0.35, 0.35):
                d.ellipse([c[0] + dx * r - 5, c[1] - 0.3 * r - 5, c[0] + dx * r + 5, c[1] - 0.3 * r + 5], fill=0)
            d.arc([c[0] - 0.5 * r, c[1] - 0.3 * r, c[0] + 0.5 * r, c[1] + 0.5 * r], 20, 160, fill=0, width=w)
        elif kind == 5:
            for f in (1.0, 0.55):
                d.rectangle([c[0] - f * r, c[1] - f * r, c[0] + f * r, c[1] + f * r], outline=0, width=w)
        else:
            t = np.linspace(0, rng.uniform(3, 5) * math.pi, 120)
            rr = r * t / t[-1]
            d.line(list(zip(c[0] + rr * np.cos(t), c[1] + rr * np.sin(t))), fill=0, width=w, joint="curve")
    return _draw_family(n, seed, one)


def specks(n: int, seed: int = 0) -> torch.Tensor:
    """Near-blank canvases: one small dot, or a few scattered specks (a stray click)."""
    def one(rng, d):
        for x, y in _points(rng, 1 if rng.random() < 0.5 else int(rng.integers(2, 5)), margin=0.05):
            s = rng.uniform(1.5, 4)
            d.ellipse([x - s, y - s, x + s, y + s], fill=0)
    return _draw_family(n, seed, one)


def blanks(n: int, seed: int = 0) -> torch.Tensor:
    """Blank canvases: white, black or a uniform gray, with faint sensor-like noise (σ ≤ 3 levels)."""
    rng = np.random.default_rng(seed)
    level = rng.choice([0.0, 255.0, -1.0], n)
    level[level < 0] = rng.uniform(30, 225, (level < 0).sum())
    noise = rng.normal(0, 1, (n, 1, SIDE, SIDE)) * rng.uniform(0, 3, (n, 1, 1, 1))
    return torch.from_numpy((level[:, None, None, None] + noise).round().clip(0, 255).astype(np.uint8))


# stroke templates of the ten digits in a unit box (x right, y down): a digit is one or more polylines
DIGIT_STROKES: dict[int, list[list[list[tuple[float, float]]]]] = {
    0: [[[(.5, .02), (.15, .3), (.15, .7), (.5, .98), (.85, .7), (.85, .3), (.5, .02)]]],
    1: [[[(.5, .03), (.5, .97)]], [[(.3, .22), (.55, .03), (.55, .97)]],
        [[(.3, .22), (.55, .03), (.55, .97)], [(.3, .97), (.8, .97)]]],
    2: [[[(.15, .25), (.35, .04), (.7, .04), (.85, .3), (.6, .6), (.15, .96), (.9, .96)]],
        [[(.15, .2), (.5, .03), (.85, .25), (.15, .96), (.9, .96)]]],
    3: [[[(.15, .15), (.5, .02), (.8, .2), (.5, .48), (.85, .7), (.55, .98), (.15, .85)]],
        [[(.15, .04), (.85, .04), (.45, .45), (.85, .7), (.55, .98), (.15, .85)]]],
    4: [[[(.65, .03), (.1, .65), (.9, .65)], [(.65, .3), (.65, .97)]],
        [[(.2, .03), (.15, .55), (.85, .55)], [(.7, .03), (.7, .97)]]],
    5: [[[(.8, .04), (.25, .04), (.2, .45), (.55, .38), (.85, .6), (.75, .9), (.4, .98), (.15, .85)]],
        [[(.25, .04), (.2, .45), (.55, .38), (.85, .6), (.75, .9), (.4, .98), (.15, .85)], [(.25, .04), (.85, .04)]]],
    6: [[[(.75, .03), (.35, .3), (.18, .65), (.35, .96), (.7, .9), (.8, .65), (.55, .5), (.22, .62)]]],
    7: [[[(.1, .04), (.9, .04), (.4, .97)]], [[(.1, .04), (.9, .04), (.4, .97)], [(.35, .5), (.78, .5)]],
        [[(.1, .2), (.1, .04), (.9, .04), (.55, .5), (.5, .97)]]],
    8: [[[(.5, .5), (.8, .25), (.5, .02), (.2, .25), (.5, .5), (.85, .75), (.5, .98), (.15, .75), (.5, .5)]]],
    9: [[[(.8, .35), (.5, .04), (.2, .25), (.4, .5), (.8, .35), (.75, .97)]],
        [[(.8, .3), (.5, .04), (.2, .22), (.45, .45), (.8, .3), (.8, .97)]]],
}


def drawn_digits(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits drawn as on a canvas: (n × 1 × 112 × 112 uint8 dark on white, labels 0–9, balanced).

    A template of `DIGIT_STROKES` per picture, every point jittered by up to 6 % of the box, the whole
    slanted (±12°), sheared, narrowed (width 45–100 % of the height), placed at a random size and
    position, and drawn with a random pen either smooth (a spline through the points) or as it is."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    out = np.empty((n, 1, SIDE, SIDE), dtype=np.uint8)
    for i, digit in enumerate(labels):
        img, d = _canvas()
        template = DIGIT_STROKES[digit][rng.integers(len(DIGIT_STROKES[digit]))]
        angle, shear = math.radians(rng.uniform(-12, 12)), rng.uniform(-0.25, 0.25)
        height = rng.uniform(0.45, 0.8) * SIDE
        width = height * rng.uniform(0.45, 1.0)
        c = SIDE / 2 + rng.uniform(-0.08, 0.08, 2) * SIDE
        smooth, w = rng.random() < 0.6, _pen(rng)
        for stroke in template:
            p = np.array(stroke) + rng.uniform(-0.06, 0.06, (len(stroke), 2))
            p = (p - 0.5) * [width, height]
            p[:, 0] += shear * p[:, 1]
            p = p @ np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]]) + c
            pts = [tuple(q) for q in p]
            if len(pts) == 2:
                d.line(pts, fill=0, width=w)
            else:
                d.line(_smooth(pts, 8) if smooth else pts, fill=0, width=w, joint="curve")
        out[i, 0] = np.asarray(img)
    return torch.from_numpy(out), torch.from_numpy(labels.astype(np.int64))


DRAWN = {"scribbles": scribbles, "strokes": strokes, "shapes": shapes, "specks": specks, "blank": blanks}
EXPOSED = ("scribbles", "strokes", "shapes")  # the drawn families outlier exposure trains on
