"""Draw a digit: turn any picture into an MNIST-style 28×28 digit, and answer a digit or "not a digit".

    from app.recognizer import Recognizer
    r = Recognizer.default()          # notebook 12's recipe: trained once (a minute or two), then cached
    r.predict(png_bytes)              # {"is_digit": True, "digit": 7, "confidence": 0.99, "score": …, …}

`to_mnist` prepares an image the way MNIST's digits were made (LeCun et al. 1998): gray, light ink on a
dark background, cropped to the ink, scaled so the longer side is 20 pixels (aspect ratio kept),
placed in 28×28 with its centre of mass at the centre; strokes much thinner or thicker than MNIST's
are first thickened or thinned. A `Recognizer` is an embedding network with its classification head,
a "not a digit" score (`app.ood`) and the threshold above which it answers "not a digit".
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from app import ood

MAX_PIXELS = 4096 * 4096        # larger pictures are refused (decompression bombs, accidental huge uploads)
BOX = 20                        # MNIST: the digit's longer side, in pixels
SIDE = 28
CENTRE = 14.0                   # MNIST's centre of mass: (13.99, 14.00) on the test set, in pixel indices
INK = 0.2                       # ink = pixels brighter than this fraction of the brightest one
MNIST_THICKNESS = 3.2           # MNIST's median stroke width, in 28×28 pixels (`stroke_width` on the test set)
UNEVEN = 24                     # grey levels: a border whose darker half spreads wider is under uneven light
WORK_SIDE = 140                 # larger drawings are shrunk to this (7× MNIST's box) before strokes are adjusted


class BadImage(ValueError):
    """The input cannot be read as a picture; the message says what to send instead."""


class EmptyImage(BadImage):
    """The picture has no ink: nothing to recognize."""


# ----------------------------------------------------------------------------- reading pictures
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 gray from RGB, as `utils.data.to_gray28`


def _check_pixels(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise BadImage(f"the picture is {width}×{height} pixels; send one under {MAX_PIXELS:,} pixels")


def _from_pil(img) -> np.ndarray:
    """A PIL image -> float gray H×W in 0..255. Transparent pixels are composited over the background the
    drawing implies: white under dark ink, black under light ink."""
    _check_pixels(img.width, img.height)
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)
        gray, alpha = rgba[..., :3] @ LUMA, rgba[..., 3] / 255
        opaque = alpha > 0.5
        bg = 0.0 if opaque.any() and gray[opaque].mean() > 127 else 255.0
        return gray * alpha + bg * (1 - alpha)
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB" if img.mode in ("CMYK", "YCbCr", "HSV", "LAB") else "L")
    arr = np.asarray(img, dtype=np.float32)
    if img.mode == "I;16" or arr.max(initial=0) > 255:
        arr = arr * (255.0 / max(float(arr.max()), 1.0))
    return arr @ LUMA if arr.ndim == 3 else arr


def decode(data: bytes) -> "PIL.Image.Image":  # noqa: F821
    """PNG/JPEG/… bytes -> a PIL image; `BadImage` when they are not a picture PIL can read."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadImage("the upload is empty: send a PNG or JPEG picture")
    try:
        img = Image.open(io.BytesIO(data))          # lazy: the size is known before the pixels are decoded
        _check_pixels(img.width, img.height)
        img.load()
    except BadImage:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise BadImage(f"this is not a picture that can be read ({type(e).__name__}): send a PNG or JPEG") from None
    return img


def to_gray(image) -> np.ndarray:
    """Any picture -> float32 gray H×W in 0..255.

    Accepts PNG/JPEG bytes, a PIL image, or an array / tensor: H×W gray, H×W×C or C×H×W with C = 1, 3
    (RGB) or 4 (RGBA), or 1×1×H×W; uint8 (0..255) or float (0..1, or 0..255 when larger values occur).
    """
    from PIL import Image

    if isinstance(image, (bytes, bytearray, memoryview)):
        return _from_pil(decode(bytes(image)))
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise BadImage(f"cannot read a {type(image).__name__}: pass PNG/JPEG bytes, a PIL image or an H×W array")
    a = np.asarray(image)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)                       # C×H×W -> H×W×C
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))) or min(a.shape[:2]) < 1:
        raise BadImage(f"an image array must be H×W, H×W×3 (RGB) or H×W×4 (RGBA), got shape {tuple(image.shape)}")
    _check_pixels(a.shape[1], a.shape[0])
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if not np.issubdtype(a.dtype, np.number):
        raise BadImage(f"image arrays must hold numbers, not {a.dtype}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise BadImage("the image array holds NaN or infinite values")
    if not np.issubdtype(image.dtype, np.integer) and a.max(initial=0) <= 1.0:
        a = a * 255
    if a.ndim == 3:
        mode = "RGBA" if a.shape[-1] == 4 else "RGB"
        return _from_pil(Image.fromarray(a.clip(0, 255).round().astype(np.uint8), mode))
    return a.clip(0, 255)


# ----------------------------------------------------------------------------- MNIST's convention
def ink_on_dark(gray: np.ndarray) -> np.ndarray:
    """Light ink on a dark background, background at 0: a picture whose border is mostly dark keeps its
    ink and loses the border's median level; one whose border is mostly light (dark ink on paper, a
    canvas) is inverted and loses the paper's level (`background`: even, or under uneven light)."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) <= 127:
        return np.clip(gray - np.median(border), 0, None)
    ink = 255 - gray
    return np.clip(ink - background(ink), 0, None)


def background(gray: np.ndarray) -> np.ndarray | float:
    """The level of the paper under the ink, in an inverted picture (ink light, paper dark). An even border
    (a canvas, a scan) gives its median, one number. A border whose darker half spreads over more than UNEVEN
    grey levels (10th percentile to the median: a photo under uneven light) gives a surface: the median over a window a
    quarter of the picture wide (strokes, narrower, cover less than half of it) of a copy at most 64 pixels
    wide, smoothed and enlarged back."""
    from scipy import ndimage

    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    lo, mid = np.percentile(border, [10, 50])      # the lower half: ink reaching the border is bright, above it
    if mid - lo <= UNEVEN:
        return float(np.median(border))
    step = max(1, round(max(gray.shape) / 64))
    small = gray[::step, ::step]
    size = max(3, min(small.shape) // 4)
    level = ndimage.uniform_filter(ndimage.median_filter(small, size=size, mode="nearest"), size, mode="nearest")
    return _resize(level, *gray.shape)


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width of a binary ink mask, in pixels: the ink area divided by half its boundary."""
    from scipy import ndimage

    area = mask.sum()
    boundary = (mask & ~ndimage.binary_erosion(mask)).sum()
    return float(area / (boundary / 2)) if boundary else 0.0


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius + 0.5


def _normalize_strokes(ink: np.ndarray, scale: float) -> np.ndarray:
    """Bring strokes into MNIST's range of widths, measured as they will be after scaling by `scale`:
    strokes thinner than 0.6× MNIST's median width are thickened to the median (grey dilation with a
    disk), strokes thicker than 1.8× are thinned towards that bound (grey erosion) — by whole pixels
    of the picture, never so far that the drawing disappears. MNIST's own digits lie between and are kept."""
    from scipy import ndimage

    width = stroke_width(ink > INK * ink.max()) * scale
    if width <= 0:
        return ink
    if width < 0.6 * MNIST_THICKNESS:
        radius = int(round((MNIST_THICKNESS - width) / scale / 2))
        return ndimage.grey_dilation(ink, footprint=_disk(radius)) if radius >= 1 else ink
    if width > 1.8 * MNIST_THICKNESS:
        radius = int((width - 1.8 * MNIST_THICKNESS) / scale / 2)
        thin = ndimage.grey_erosion(ink, footprint=_disk(radius)) if radius >= 1 else ink
        return thin if thin.max() > INK * ink.max() else ink
    return ink


def _resize(a: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(a.astype(np.float32), "F").resize((width, height), Image.Resampling.LANCZOS
                                                                        if min(height, width) < min(a.shape) else Image.Resampling.BILINEAR))


def to_mnist(image, normalize_strokes: bool = True) -> np.ndarray:
    """Any picture (see `to_gray`) -> 28×28 uint8, prepared as MNIST's digits were.

    Raises `EmptyImage` when there is no ink (a blank or uniform picture) and `BadImage` for input that
    is not a picture.
    """
    ink = ink_on_dark(to_gray(image))
    peak = float(ink.max(initial=0))
    if peak < 32:                                    # nothing brighter than an eighth of full scale
        raise EmptyImage("the picture is empty: draw something")
    rows, cols = np.nonzero(ink > INK * peak)
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    if max(ink.shape) > WORK_SIDE:                   # a large photo: work at a bounded size (time, memory)
        f = WORK_SIDE / max(ink.shape)
        ink = np.clip(_resize(ink, max(1, round(ink.shape[0] * f)), max(1, round(ink.shape[1] * f))), 0, None)
    scale = BOX / max(ink.shape)
    if normalize_strokes:
        ink = _normalize_strokes(np.pad(ink, 8), scale)
        rows, cols = np.nonzero(ink > INK * ink.max())
        ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        scale = BOX / max(ink.shape)
    h, w = max(1, round(ink.shape[0] * scale)), max(1, round(ink.shape[1] * scale))
    small = np.clip(_resize(ink, h, w), 0, None)
    small = small * (255.0 / max(float(small.max()), 1e-6))
    out = np.zeros((SIDE, SIDE), np.float32)
    top, left = (SIDE - h) // 2, (SIDE - w) // 2
    out[top:top + h, left:left + w] = small
    ys, xs = np.mgrid[:SIDE, :SIDE]
    m = out.sum()
    dy, dx = round(CENTRE - (out * ys).sum() / m), round(CENTRE - (out * xs).sum() / m)
    dy = int(np.clip(dy, -top, SIDE - top - h)); dx = int(np.clip(dx, -left, SIDE - left - w))  # noqa: E702
    out = np.roll(out, (dy, dx), axis=(0, 1))
    return out.round().clip(0, 255).astype(np.uint8)


def batch_to_mnist(images, normalize_strokes: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """`to_mnist` over a stack of images (N×C×H×W uint8): (N'×1×28×28 uint8, the indices kept). Empty
    pictures are left out (the recognizer answers "draw something" for them)."""
    out, kept = [], []
    for i, img in enumerate(images):
        try:
            out.append(to_mnist(img, normalize_strokes))
            kept.append(i)
        except EmptyImage:
            pass
    x = torch.from_numpy(np.stack(out)).unsqueeze(1) if out else torch.zeros(0, 1, SIDE, SIDE, dtype=torch.uint8)
    return x, torch.tensor(kept, dtype=torch.int64)


# ----------------------------------------------------------------------------- the recognizer
@dataclass
class Recognizer:
    """A digit classifier that can say "not a digit".

    `model` maps 28×28 images to embeddings, `head.logits` them to class scores; `scorer` (`app.ood`)
    gives a score that grows as an image looks less like a digit, and an image is rejected when that
    score is above `threshold`. `info` says how it was made (data, training, the measured rates).
    """

    model: torch.nn.Module
    head: torch.nn.Module
    scorer: ood.Scorer
    threshold: float
    classes: list[str] = field(default_factory=lambda: [str(i) for i in range(10)])
    info: dict = field(default_factory=dict)
    reference: dict | None = None             # a few training digits: L2-normalized embeddings, images, labels
    valid_scores: torch.Tensor | None = None  # the scores of the validation digits the threshold was set on

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """For prepared 28×28 images (N×1×28×28 uint8): class probabilities, predictions, rejection scores."""
        from utils.train import embed

        self.model.eval(), self.head.eval()
        emb = embed(self.model, x, device="cpu")
        logits = self.head.logits(emb)
        probs = logits.softmax(1)
        return {"probs": probs, "pred": probs.argmax(1), "score": self.scorer.score(emb, logits),
                "emb": emb, "logits": logits}

    def accepts(self, x: torch.Tensor) -> torch.Tensor:
        """Whether each prepared image is taken for a digit (its score at or below the threshold)."""
        return self.scores(x)["score"] <= self.threshold

    def predict(self, image) -> dict:
        """Answer one picture (anything `to_gray` reads): a dict with `is_digit`, `digit` (None when
        rejected), `confidence` (the top class probability), `score`, `threshold`, `method`, `probs`,
        `image` (the 28×28 uint8 array the model saw) and `message` (a sentence to show).

        Raises `EmptyImage` for a picture with no ink and `BadImage` for one that cannot be read.
        """
        t0 = time.perf_counter()
        x28 = to_mnist(image)
        s = self.scores(torch.from_numpy(x28)[None, None])
        nearest = self.nearest(s["emb"][0])
        score, probs = float(s["score"][0]), s["probs"][0]
        top = int(probs.argmax())
        ok = score <= self.threshold
        msg = f"{self.classes[top]} ({probs[top]:.0%} sure)" if ok else "not a digit"   # the score: beside it
        return {"is_digit": bool(ok), "digit": top if ok else None, "confidence": float(probs[top]),
                "score": score, "threshold": float(self.threshold), "method": self.scorer.name,
                "probs": [round(float(p), 4) for p in probs], "image": x28, "message": msg,
                "nearest": nearest, "digit_scores": self.digit_scores(), "seconds": time.perf_counter() - t0}

    def nearest(self, emb: torch.Tensor, k: int = 5) -> list[dict]:
        """The `k` training digits of `reference` nearest to one embedding (cosine distance, 1 − cos θ): each a
        dict with its `digit`, `distance` and 28×28 `image`; empty without a reference."""
        if self.reference is None:
            return []
        d = 1 - self.reference["emb"].float() @ torch.nn.functional.normalize(emb.float(), dim=0)
        top = d.topk(min(k, len(d)), largest=False)
        return [{"digit": int(self.reference["labels"][i]), "distance": round(float(v), 4),
                 "image": self.reference["images"][i].numpy()} for v, i in zip(top.values, top.indices)]

    def digit_scores(self, bins: int = 30) -> dict | None:
        """Where real digits' scores lie: a histogram (`edges`, `counts`) of the validation digits' scores that
        set the threshold; None when they were not kept."""
        if self.valid_scores is None or not len(self.valid_scores):
            return None
        s = self.valid_scores.float()
        counts = torch.histc(s, bins, float(s.min()), float(s.max()))
        edges = torch.linspace(float(s.min()), float(s.max()), bins + 1)
        return {"edges": [round(float(e), 4) for e in edges], "counts": [int(c) for c in counts]}

    # ------------------------------------------------------------------ saving, loading, the default
    def save(self, path: str | Path) -> None:
        """Write the recognizer (weights, scorer, threshold, info) atomically."""
        from utils.data import atomic_save

        atomic_save({"model": self.model.state_dict(), "head": self.head.state_dict(),
                     "head_name": self.head.name, "head_hparams": self.info.get("head_hparams", {}),
                     "emb_dim": self.model.emb_dim, "scorer": self.scorer.state(),
                     "threshold": float(self.threshold), "classes": self.classes, "info": self.info,
                     "reference": self.reference, "valid_scores": self.valid_scores}, path)

    @classmethod
    def load(cls, path: str | Path) -> "Recognizer":
        """Read a recognizer written by `save`."""
        from utils import losses, models

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no recognizer at {path}: build one with Recognizer.build() or use "
                                    f"Recognizer.default()")
        st = torch.load(path, map_location="cpu", weights_only=True)   # tensors, numbers and strings only
        model = models.make_model("cnn", in_channels=1, emb_dim=st["emb_dim"])
        model.load_state_dict(st["model"])
        head = losses.make(st["head_name"], emb_dim=st["emb_dim"], n_classes=len(st["classes"]), **st["head_hparams"])
        head.load_state_dict(st["head"])
        return cls(model.eval(), head.eval(), ood.Scorer.from_state(st["scorer"]), st["threshold"],
                   st["classes"], st["info"], st.get("reference"), st.get("valid_scores"))

    @classmethod
    def build(cls, digits, outliers: torch.Tensor | None = None, *, score: str = "energy",
              valid: torch.Tensor | None = None, keep: float = 0.99, epochs: int = 3, bs: int = 128,
              emb_dim: int = 64, alpha: float = 16.0, lam: float = 0.5, seed: int = 0,
              progress: bool | None = False) -> "Recognizer":
        """Train a recognizer on `digits` (an `ImageData` of 28×28 digits) and fit its score.

        With `outliers` (N×1×28×28 uint8 pictures that are not digits, already through `to_mnist`) it
        trains with outlier exposure (the `outlier_exposure` head, its weight `lam`), else with plain L2-softmax. The
        threshold keeps a fraction `keep` of the `valid` digits (default: the test split's). Training
        is cached by `utils.train.train`.
        """
        from dataclasses import replace

        from utils.train import embed, train

        hparams = {"alpha": alpha}
        data = digits
        if outliers is not None and len(outliers):
            data = replace(digits, x_train=torch.cat([digits.x_train, outliers]),
                           y_train=torch.cat([digits.y_train, torch.full((len(outliers),), ood.NOT_A_DIGIT)]),
                           name=f"{digits.name}+{len(outliers)} outliers")
            hparams["lam"] = lam
        head = "outlier_exposure" if data is not digits else "l2softmax"
        run = train(data, head, hparams=hparams, emb_dim=emb_dim, epochs=epochs, bs=bs, augment=2,
                    seed=seed, progress=progress)
        model, hd = run.model.cpu().eval(), run.head.cpu().eval()
        scorer = ood.make_scorer(score)
        if type(scorer).fit is not ood.Scorer.fit:       # a score of the embeddings: fitted on the training digits'
            scorer.fit(embed(model, digits.x_train, device="cpu"), digits.y_train)
        r = cls(model, hd, scorer, float("inf"), list(digits.classes),
                {"head": head, "head_hparams": hparams, "data": digits.name, "outliers": int(len(data.y_train) - len(digits.y_train)),
                 "epochs": epochs, "seed": seed, "train_seconds": float(run.history["seconds"].sum()),
                 "test_acc": float(run.history["test_acc"].iloc[-1]), "keep": keep, "training_key": run.key})
        r.calibrate(valid if valid is not None else digits.x_test, keep)
        r.reference = reference_digits(model, digits, seed=seed)
        return r

    def calibrate(self, digits: torch.Tensor, keep: float = 0.99, outputs: dict | None = None) -> float:
        """Set the threshold that keeps a fraction `keep` of these prepared real digits; return it. `outputs`:
        this model's `scores` of those digits, when already computed (their embeddings and logits are reused)."""
        out = self.scores(digits) if outputs is None else outputs
        scores = self.scorer.score(out["emb"], out["logits"]).float()
        self.threshold = ood.threshold_keeping(scores, keep)
        self.valid_scores = scores.sort().values
        self.info["keep"] = keep
        return self.threshold

    @classmethod
    def default(cls, progress: bool | None = False) -> "Recognizer":
        """The default recognizer: notebook 12's recipe (`default_recipe`), loaded from the cache
        (`default_path`) or — the first time — trained now (about 90 s on a 2-core CPU) and cached. It
        trains on MNIST; offline without MNIST, on scikit-learn's digits, and says so."""
        path = default_path()
        if path.is_file():
            return cls.load(path)
        print("training the default recognizer once (a minute or two on a 2-core CPU; then it is cached)…", flush=True)
        r = default_recipe(progress=progress)
        r.save(path)
        return r


def reference_digits(model: torch.nn.Module, digits, n_per_class: int = 30, seed: int = 0) -> dict:
    """`n_per_class` training digits of every class (seeded) with their L2-normalized embeddings (float16): the
    digits `Recognizer.nearest` shows beside an answer."""
    import torch.nn.functional as F

    from utils.data import per_class_index
    from utils.train import embed

    idx = per_class_index(digits.y_train, n_per_class, seed)
    x = digits.x_train[idx]
    return {"emb": F.normalize(embed(model, x, device="cpu").float(), dim=1).half(), "images": x[:, 0].clone(),
            "labels": digits.y_train[idx].clone()}


def default_path(seed: int = 0) -> Path:
    """Where the default recognizer is cached: `<cache>/demo/recognizer-<key>.pt`, the key covering
    `RECIPE`, the seed, the source of `app.recognizer`, `app.ood` and the training code, and the digits'
    content — so a change to any of them trains a new one."""
    from utils import data as D
    from utils.cache import key as cache_key
    from utils.train import TRAINING_CODE, data_fingerprint

    digits = D.load("mnist", fallback="digits")
    key = cache_key({**RECIPE, "seed": seed, "data": data_fingerprint(digits.x_train, digits.y_train)},
                    code=(*TRAINING_CODE, "app/ood.py", "app/recognizer.py"))
    return D.cache_dir() / "demo" / f"recognizer-{key}.pt"


# Omniglot's alphabets (offline: the two minimal background sets), split before anything was measured:
# outlier exposure trains on the first group, the score is chosen on the second, the third is only reported.
CHARACTER_SPLIT = {"exposed": ("Balinese", "Japanese_(katakana)", "Korean", "Sanskrit"),
                   "choice": ("Early_Aramaic", "Tagalog"),
                   "report": ("Greek", "Latin")}
LATIN = "abcdefghijklmnopqrstuvwxyz"   # Omniglot's Latin characters 01–26 are these letters, handwritten
LOOKALIKES = {"b": 6, "g": 9, "i": 1, "l": 1, "o": 0, "q": 9, "s": 5, "z": 2}   # letters a digit can look like


def characters(omniglot, group: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every drawing (both splits, all drawers) of the alphabets of `CHARACTER_SPLIT[group]` in `omniglot`
    (`utils.data.load("omniglot")`): (N×1×H×W uint8 images, class ids into `omniglot.classes`)."""
    if group not in CHARACTER_SPLIT:
        raise ValueError(f"unknown group {group!r}: choose one of {list(CHARACTER_SPLIT)}")
    names = list(omniglot.info["alphabets"])
    missing = [a for a in CHARACTER_SPLIT[group] if a not in names]
    if missing:
        raise ValueError(f"the Omniglot data lacks the alphabets {missing} (it has {names}): load the background set")
    alpha = torch.cat([omniglot.info["alphabet_train"], omniglot.info["alphabet_test"]])
    pick = torch.isin(alpha, torch.tensor([names.index(a) for a in CHARACTER_SPLIT[group]]))
    return torch.cat([omniglot.x_train, omniglot.x_test])[pick], torch.cat([omniglot.y_train, omniglot.y_test])[pick]


def letter(class_name: str) -> str | None:
    """The Latin letter an Omniglot class name ("Latin/character03") stands for ("c"), else None."""
    alphabet, _, char = class_name.partition("/")
    return LATIN[int(char[-2:]) - 1] if alphabet == "Latin" else None


# chosen on validation data (scripts/demo_recipe_choice.py: the choice alphabets, pen-drawn digits of another seed)
RECIPE = dict(n_outliers_each=3000, n_degraded=15000, n_drawn=15000, characters=True, mirrored=True, lam=1.0, epochs=3,
              score="energy", keep=0.995, n_valid=5000)


def turned_characters(characters: torch.Tensor, n_each: int, seed: int = 0,
                      mirrored: bool = RECIPE["mirrored"]) -> torch.Tensor:
    """Up to `n_each` handwritten characters (N×C×H×W uint8, drawn at random, seeded) prepared by `to_mnist`,
    each also turned by 90°, 180° and 270° (as notebook 10 turns characters) and, `mirrored`, all four mirrored:
    more shapes that are not digits."""
    c = batch_to_mnist(characters[torch.randperm(len(characters), generator=torch.Generator().manual_seed(seed))[:n_each]])[0]
    turned = torch.cat([c.rot90(k, (2, 3)) for k in range(4)])
    return torch.cat([turned, turned.flip(3)]) if mirrored else turned


def outlier_set(n_each: int, seed: int = 0, fashion: torch.Tensor | None = None,
                photos: torch.Tensor | None = None, characters: torch.Tensor | None = None) -> torch.Tensor:
    """Pictures that are not digits, for outlier exposure, prepared by `to_mnist`: `n_each` of every
    drawn family of `app.ood.EXPOSED` (scribbles, strokes, shapes), up to `n_each` of `fashion` and
    `photos` (N×C×H×W uint8) when given, and `turned_characters` of `characters` (last)."""
    parts = [ood.DRAWN[name](n_each, seed) for name in ood.EXPOSED]
    for extra in (fashion, photos):
        if extra is not None:
            parts.append(extra[torch.randperm(len(extra), generator=torch.Generator().manual_seed(seed))[:n_each]])
    out = [batch_to_mnist(p)[0] for p in parts]
    if characters is not None and len(characters):
        out.append(turned_characters(characters, n_each, seed))
    return torch.cat(out)



def degrade(x: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits as other sources give them, prepared by `to_mnist`: each 28×28 digit scanned at a lower
    resolution (its 20-pixel box shrunk to 7–14 pixels and enlarged back: the blur of a small photo or
    of scikit-learn's 8×8 digits), and in a third of them the pen made one pixel thicker or thinner.
    Returns (the degraded digits, the indices of `x` they come from: see `batch_to_mnist`)."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    xf = x.float() / 255
    res = torch.randint(7, 15, (len(x),), generator=g)
    out = torch.empty_like(xf)
    for r in res.unique().tolist():
        i = (res == r).nonzero().flatten()
        small = F.interpolate(xf[i], scale_factor=r / BOX, mode="bilinear", antialias=True, align_corners=False)
        out[i] = F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)
    pen = torch.rand(len(x), generator=g)
    thick, thin = pen < 1 / 6, (pen >= 1 / 6) & (pen < 1 / 3)
    out[thick] = F.max_pool2d(out[thick], 3, 1, 1)
    out[thin] = -F.max_pool2d(-out[thin], 3, 1, 1)
    out = out / out.amax((1, 2, 3), keepdim=True).clamp_min(1e-6)
    prepared, kept = batch_to_mnist((out * 255).round().to(torch.uint8))
    return prepared, kept


@dataclass
class RecipeData:
    """What a recognizer is trained and calibrated on: the training digits (MNIST's training images but the
    validation ones), the validation digits (28×28, for the threshold) and the outlier-exposure pictures
    (through `to_mnist`); `notes` say what could not be had."""
    digits: "ImageData"  # noqa: F821
    valid: torch.Tensor
    outliers: torch.Tensor
    notes: list[str] = field(default_factory=list)
    n_characters: int = 0          # the last `n_characters` outliers are the handwritten characters and their turns


def recipe_data(seed: int = 0, n_outliers_each: int = RECIPE["n_outliers_each"], n_valid: int = RECIPE["n_valid"],
                n_train: int | None = None, n_degraded: int = RECIPE["n_degraded"],
                n_drawn: int = RECIPE["n_drawn"], with_characters: bool = RECIPE["characters"]) -> RecipeData:
    """The default recipe's data: MNIST (scikit-learn's digits offline without it) with `n_valid` training
    images held out for the threshold, plus `n_degraded` training digits at a lower resolution
    (`degrade`) and `n_drawn` digits drawn with a pen (`app.ood.drawn_digits`); and `outlier_set` of drawn
    strokes, scribbles and shapes, Fashion-MNIST's training images (when available), crops of scikit-learn's
    photos (their left halves) and, `with_characters`, the handwritten characters of the exposed Omniglot
    alphabets (`CHARACTER_SPLIT`) with their turns (`turned_characters`). `n_train` subsamples the
    digits per class (None: all)."""
    from dataclasses import replace

    from utils import data as D

    digits = D.load("mnist", fallback="digits")
    perm = torch.randperm(len(digits.y_train), generator=torch.Generator().manual_seed(seed))
    n_valid = min(n_valid, len(perm) // 5)
    valid, rest = perm[:n_valid].sort().values, perm[n_valid:].sort().values
    train_digits = replace(digits, x_train=digits.x_train[rest], y_train=digits.y_train[rest],
                           name=f"{digits.name}[-{n_valid} validation]").per_class(n_train, None, seed)
    pick = torch.randperm(len(train_digits.y_train), generator=torch.Generator().manual_seed(seed + 1))[:n_degraded]
    low, kept = degrade(train_digits.x_train[pick], seed)
    pen, labels = ood.drawn_digits(n_drawn, seed)
    pen, drawn_kept = batch_to_mnist(pen)
    train_digits = replace(train_digits, x_train=torch.cat([train_digits.x_train, low, pen]),
                           y_train=torch.cat([train_digits.y_train, train_digits.y_train[pick][kept], labels[drawn_kept]]),
                           name=f"{train_digits.name}+{len(low)} at low resolution+{len(pen)} drawn")
    notes = []
    try:
        fashion = D.load("fashion_mnist").x_train
    except D.DataNotFound:
        fashion = None
        notes.append("no Fashion-MNIST here: outlier exposure goes without it")
    chars = None
    if with_characters:
        try:
            chars = characters(D.load("omniglot"), "exposed")[0]
        except D.DataNotFound:
            notes.append("no Omniglot here: outlier exposure goes without handwritten characters")
    photos = D.load_photos(n_train=n_outliers_each, n_test=1, size=64, seed=seed).x_train
    turned = turned_characters(chars, n_outliers_each, seed) if chars is not None else torch.zeros(0, 1, SIDE, SIDE, dtype=torch.uint8)
    outliers = torch.cat([outlier_set(n_outliers_each, seed, fashion, photos), turned])
    return RecipeData(train_digits, digits.x_train[valid], outliers, notes, len(turned))


def default_recipe(seed: int = 0, progress: bool | None = False, **overrides) -> Recognizer:
    """The default recognizer's recipe (`RECIPE`, notebook 12): outlier exposure on `recipe_data`, the
    score `RECIPE["score"]`, the threshold that keeps 99.5 % of the validation digits."""
    cfg = {**RECIPE, **overrides}
    say = print if progress else (lambda *args, **kw: None)
    say("1/2 preparing the pictures (digits, drawings, photos, clothes, characters) as to_mnist does…", flush=True)
    d = recipe_data(seed, cfg["n_outliers_each"], cfg["n_valid"], n_degraded=cfg["n_degraded"], n_drawn=cfg["n_drawn"],
                    with_characters=cfg["characters"])
    say(f"2/2 training on {len(d.digits.y_train):,} digits and {len(d.outliers):,} other pictures, {cfg['epochs']} epochs "
        f"(progress bars below)…", flush=True)
    return Recognizer.build(d.digits, d.outliers, score=cfg["score"], valid=d.valid, keep=cfg["keep"],
                            epochs=cfg["epochs"], lam=cfg["lam"], seed=seed, progress=progress)


# ----------------------------------------------------------------------------- measuring rejection
@dataclass
class Prepared:
    """A set of pictures as the recognizer sees them: the prepared 28×28 images, and how many of the
    original pictures were empty (answered "draw something": counted as rejected)."""
    x: torch.Tensor
    n_empty: int

    @property
    def n(self) -> int:
        return len(self.x) + self.n_empty


def prepare(images: torch.Tensor) -> Prepared:
    """Pass N×C×H×W uint8 pictures through `to_mnist`, as the demo does."""
    x, kept = batch_to_mnist(images)
    return Prepared(x, len(images) - len(kept))


def variants(models: dict[str, Recognizer], train: tuple[torch.Tensor, torch.Tensor], valid: torch.Tensor,
             scores: tuple[str, ...] = ood.SCORES, keep: float = 0.99,
             embeddings: dict[str, torch.Tensor] | None = None) -> dict[tuple[str, str], Recognizer]:
    """Every (model, score) pair as a recognizer: the score fitted on the training digits `train` = (x, y)
    and its threshold set to keep a fraction `keep` of the `valid` digits. `embeddings`: the models' embeddings
    of those training digits, when already computed (by name; the others are computed here)."""
    out = {}
    for name, rec in models.items():
        emb = (embeddings or {}).get(name)
        emb = rec.scores(train[0])["emb"] if emb is None else emb
        on_valid = rec.scores(valid)                    # one pass over the validation digits per model
        for score in scores:
            r = Recognizer(rec.model, rec.head, ood.make_scorer(score).fit(emb, train[1]), float("inf"),
                           rec.classes, {**rec.info, "score": score}, rec.reference)
            r.calibrate(valid, keep, on_valid)
            out[name, score] = r
    return out


def rejection_rates(recognizers: dict[tuple[str, str], Recognizer], sets: dict[str, Prepared],
                    outputs: dict | None = None):
    """Fraction of every set answered "not a digit" (empty pictures included) by every recognizer: a
    DataFrame, a row per (model, score), a column per set. Embeddings are computed once per model and set;
    pass the same `outputs` dict to several calls to share them (a set is known by its identity)."""
    import pandas as pd

    rows = {}
    cache = {} if outputs is None else outputs
    for (model, score), r in recognizers.items():
        row = {}
        for name, s in sets.items():
            if (model, id(s)) not in cache:         # the set is kept with its outputs: its identity stays its own
                cache[model, id(s)] = s, (r.scores(s.x) if len(s.x) else None)
            out = cache[model, id(s)][1]
            rejected = int((r.scorer.score(out["emb"], out["logits"]) > r.threshold).sum()) if out else 0
            row[name] = (rejected + s.n_empty) / max(s.n, 1)
        rows[model, score] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["model", "score"])
