"""Draw a digit in a web page: a small Flask app around `app.recognizer.Recognizer`.

    python -m app                        # http://127.0.0.1:8000 (make demo)
    python -m app --port 8080

`GET /` is the page (`app/webapp.html`): a canvas to draw on with a mouse, pen or finger, Clear,
Upload, and the answer as you draw. `POST /api/predict` takes a picture as a multipart file field
`image` or as JSON `{"image": "data:image/png;base64,…"}` and answers the recognizer's dict as JSON
(`is_digit`, `digit`, `confidence`, `score`, `threshold`, `method`, `probs`, `message`, `seconds`, `nearest`
(the five nearest training digits: `digit`, `distance`, `image`), `digit_scores` (a histogram of the validation
digits' scores: `edges`, `counts`), and
`image`: the 28×28 picture the model saw, as a PNG data URL). `GET /api/status` says whether the
recognizer is ready (`Recognizer.default()` trains it on the very first start). Every error under /api/
is JSON `{"error": "…"}` with its HTTP status; while the recognizer is still being prepared, `POST /api/predict`
answers 503 at once with `"preparing": true` and the seconds so far (the page keeps the drawing and asks again).
One picture is decoded and recognized at a time (`MAX_DECODES`), so concurrent uploads cannot add up in memory,
and `main` gives torch one thread by default: one small image per request gains nothing from more, and a
server sharing busy cores with other work answers far sooner without them.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import io
import json
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from app.recognizer import BadImage, Recognizer

PAGE = Path(__file__).with_name("webapp.html")
SHIPPED = Path(__file__).with_name("recognizer.pt")      # the default recognizer, committed: the app starts at once
SHIPPED_INFO = Path(__file__).with_name("recognizer.json")  # its sha256, the recipe key it was built under, how to rebuild
MAX_MB = 5
MAX_DECODES = 1   # pictures decoded and recognized at once: a 16-megapixel PNG alone takes hundreds of MB
SEND = ('send the picture as a multipart file field named "image", or as JSON '
        '{"image": "data:image/png;base64,..."}')
DATA_URL = re.compile(r"data:image/[\w.+-]+(?:;[\w.+-]+=[\w.+-]+)*;base64,(?P<payload>.*)", re.S)


def png_data_url(image: np.ndarray) -> str:
    """An H×W uint8 array -> a PNG data URL."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def data_url_bytes(url: str) -> bytes:
    """The bytes of a base64 image data URL (`data:image/png;base64,…`); `BadImage` when malformed."""
    m = DATA_URL.fullmatch(url.strip())
    if not m:
        raise BadImage(f"the image is not a base64 image data URL ({url[:30]!r}…): "
                       f"send one like \"data:image/png;base64,iVBORw0…\"")
    try:
        return base64.b64decode(re.sub(r"\s+", "", m["payload"]), validate=True)
    except binascii.Error:
        raise BadImage("the data URL's base64 is malformed: send the string canvas.toDataURL() returns") from None


MAX_SIDE = 1024   # larger pictures are reduced before recognition: a 28×28 answer needs no 16 megapixels


def prepared(data: bytes):
    """The picture to recognize: the bytes themselves for an ordinary picture; for one larger than `MAX_SIDE` on a
    side, a reduced PIL image (JPEG decodes at a reduced scale with `draft`; others are reduced after decoding),
    so that the recognizer's float copies stay small. A picture over `demo.MAX_PIXELS`, or a decompression bomb,
    is refused (413) from its header alone, before any pixel is decoded."""
    from PIL import Image

    from app.recognizer import MAX_PIXELS

    try:
        img = Image.open(io.BytesIO(data))                      # lazy: the header only
    except Image.DecompressionBombError as e:
        raise ApiError(413, f"the picture is too large to decode ({e}): send one under {MAX_PIXELS:,} pixels") from None
    except Exception:  # noqa: BLE001 - not a picture: the recognizer says what to send
        return data
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise ApiError(413, f"the picture is {w}×{h} pixels: send one under {MAX_PIXELS:,} pixels")
    deep = img.mode in ("I;16", "I;16B", "I;16L", "I", "F")    # 16-bit scans, 32-bit integer or float pictures
    if max(w, h) <= MAX_SIDE and not deep:
        return data
    factor = max(1, -(-max(w, h) // MAX_SIDE))                  # ceil: the reduced picture fits MAX_SIDE
    if img.format == "JPEG":
        img.draft(img.mode, (w // factor, h // factor))
    img.load()
    if deep:   # to 8 bits by the picture's own range (converting to "L" would clip every value above 255 to white)
        a = np.asarray(img, dtype=np.float32)
        top = float(a.max(initial=0))
        img = Image.fromarray(np.clip(a * (255.0 / top) if top > 255 else a, 0, 255).astype(np.uint8), "L")
    elif img.mode in ("1", "P", "PA"):
        img = img.convert("L" if img.mode == "1" else "RGBA")
    return img.reduce(factor) if max(img.size) > MAX_SIDE else img


def jsonable(answer: dict) -> dict:
    """The recognizer's answer with its 28×28 images (what the network saw, the nearest training digits) as PNG
    data URLs."""
    nearest = [{**n, "image": png_data_url(n["image"])} for n in answer.get("nearest", [])]
    return {**answer, "image": png_data_url(answer["image"]), "nearest": nearest}


class ApiError(Exception):
    """A request the API refuses: an HTTP status and a message saying what to send."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def chunked_body() -> bytes:
    """A body sent without a Content-Length (chunked), read up to the limit. Werkzeug hands over such a body cut
    at the limit; a further byte means it was longer: 413, not a truncated body that then fails to parse."""
    limit = MAX_MB * 1024 * 1024
    raw = request.stream.read(limit)
    if request.stream.read(1):      # (werkzeug itself may raise its 413 here: the same answer)
        raise ApiError(413, f"the upload is larger than the {MAX_MB} MB limit: send a smaller picture")
    return raw


def picture_from_request() -> bytes:
    """The picture's bytes from a multipart `image` field or a JSON data URL."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("image")
        if upload is None:
            raise ApiError(400, f"no file field \"image\" in the form: {SEND}")
        return upload.read()
    if request.mimetype == "application/json":
        raw = request.get_data() if request.content_length is not None else chunked_body()
        try:
            body = json.loads(raw)
        except RecursionError:
            raise ApiError(400, f"the JSON is nested too deeply to read: {SEND}") from None
        except ValueError:
            body = None
        if body is None:
            raise ApiError(400, f"the body is not valid JSON: {SEND}")
        if not isinstance(body, dict) or not isinstance(body.get("image"), str):
            raise ApiError(400, f"no string field \"image\" in the JSON: {SEND}")
        return data_url_bytes(body["image"])
    raise ApiError(415, f"cannot read a {request.mimetype or 'body without a Content-Type'}: {SEND}")


def load_shipped(log=print) -> Recognizer | None:
    """The committed default recognizer (`app/recognizer.pt`) when its bytes match the sha256 recorded beside it
    (`app/recognizer.json`); None, saying why, when there is none or it does not match."""
    if not (SHIPPED.is_file() and SHIPPED_INFO.is_file()):
        return None
    info = json.loads(SHIPPED_INFO.read_text(encoding="utf-8"))
    digest = hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    if digest != info.get("sha256"):
        log(f"app/{SHIPPED.name} does not match the sha256 in app/{SHIPPED_INFO.name} ({digest[:12]}… against "
            f"{str(info.get('sha256'))[:12]}…): not using it. Rebuild it with `{info.get('rebuild', 'python -m app --rebuild')}`")
        return None
    return Recognizer.load(SHIPPED)


def rebuild(log=print) -> dict:
    """Train (or take from the cache) the default recognizer, `Recognizer.default()`, and write it as the committed
    `app/recognizer.pt` with `app/recognizer.json`; return what was written. The committed file is the full
    recipe's: without MNIST, Fashion-MNIST or Omniglot here it stops (SystemExit saying how to get them) rather
    than write a recognizer trained on a fallback."""
    import shutil

    from app import recognizer as demo
    from utils import data as D

    for name in ("mnist", "fashion_mnist", "omniglot"):
        try:
            D.load(name)
        except D.DataNotFound as e:
            raise SystemExit(f"not rebuilding app/{SHIPPED.name}: the recipe needs {name!r}.\n{e}") from None
    Recognizer.default(progress=True)
    path = demo.default_path()
    shutil.copyfile(path, SHIPPED)
    info = {"sha256": hashlib.sha256(SHIPPED.read_bytes()).hexdigest(), "key": path.stem.split("-", 1)[1],
            "recipe": demo.RECIPE, "rebuild": "python -m app --rebuild"}
    SHIPPED_INFO.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    log(f"wrote app/{SHIPPED.name} ({SHIPPED.stat().st_size:,} bytes) and app/{SHIPPED_INFO.name}")
    return info


class Preparing:
    """The recognizer, loaded (or on a first start trained) in a background thread, started on first need."""

    def __init__(self, recognizer: Recognizer | None = None, log=print):
        self.recognizer, self.error, self.log = recognizer, None, log
        self.started: float | None = None
        self.lock = threading.Lock()

    def start(self) -> None:
        """Begin loading in the background, once."""
        with self.lock:
            if self.recognizer is not None or self.started is not None:
                return
            self.started = time.monotonic()
        threading.Thread(target=self._load, daemon=True).start()

    def _load(self) -> None:
        try:
            shipped = load_shipped(self.log)
            if shipped is not None:
                self.recognizer = shipped
                self.log(f"the recognizer is ready: app/{SHIPPED.name}, read in {self.seconds():.1f} s")
                return
            self.log("preparing the recognizer (Recognizer.default(): from the cache, or trained on a first start, "
                     "with its progress below)…")
            self.recognizer = Recognizer.default(progress=True)
            self.log(f"the recognizer is ready after {self.seconds():.0f} s")
        except Exception as e:  # noqa: BLE001 - reported to every request, and in the log
            self.error = e
            self.log(f"preparing the recognizer failed: {type(e).__name__}: {e}")

    def seconds(self) -> float:
        return 0.0 if self.started is None else time.monotonic() - self.started

    def get(self) -> Recognizer:
        """The recognizer, or an `ApiError` 503 saying it is still being prepared (and how long it has taken)."""
        if self.recognizer is not None:
            return self.recognizer
        self.start()
        if self.error is not None:
            raise ApiError(500, f"the recognizer could not be prepared ({type(self.error).__name__}): see the server's log")
        raise ApiError(503, f"still preparing the recognizer ({self.seconds():.0f} s so far; a first start trains it): "
                            f"try again in a moment")


def create_app(recognizer: Recognizer | None = None) -> Flask:
    """The app. Without `recognizer`, `Recognizer.default()` is prepared in the background on first need
    (`main` starts it at once); until then predictions answer 503 "still preparing"."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_MB * 1024 * 1024
    page = PAGE.read_text(encoding="utf-8")
    preparing = Preparing(recognizer, log=lambda line: print(line, flush=True))
    decoding = threading.BoundedSemaphore(MAX_DECODES)
    app.extensions["recognizer"] = preparing

    @app.get("/")
    def index() -> Response:
        return Response(page, mimetype="text/html")

    @app.get("/api/status")
    def status() -> Response:
        """Whether the recognizer is ready, and since when it is being prepared (asking does not start it)."""
        return jsonify(ready=preparing.recognizer is not None, preparing=preparing.started is not None
                       and preparing.recognizer is None and preparing.error is None, seconds=round(preparing.seconds(), 1))

    @app.post("/api/predict")
    def predict() -> Response:
        recognizer = preparing.get()
        try:
            picture = picture_from_request()
            with decoding:
                return jsonify(jsonable(recognizer.predict(prepared(picture))))
        except BadImage as e:
            raise ApiError(400, str(e)) from None

    @app.errorhandler(ApiError)
    def api_error(e: ApiError) -> tuple[Response, int]:
        extra = {"preparing": True, "seconds": round(preparing.seconds(), 1)} if e.status == 503 else {}
        return jsonify(error=str(e), **extra), e.status

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> HTTPException | tuple[Response, int]:
        if not request.path.startswith("/api/"):
            return e
        message = {413: f"the upload is larger than the {MAX_MB} MB limit: send a smaller picture",
                   405: f"{request.method} is not allowed on {request.path}: POST a picture ({SEND})"}
        return jsonify(error=message.get(e.code, e.description)), e.code

    @app.errorhandler(Exception)
    def server_error(e: Exception) -> tuple[Response, int]:
        app.logger.exception("failed on %s", request.path)
        return jsonify(error=f"the server failed ({type(e).__name__}): see its log"), 500

    return app


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1–65535."""
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a number from 1 to 65535, e.g. 8000")
    return port


def port_taken(host: str, port: int) -> str | None:
    """Why `host`:`port` cannot be listened on (e.g. another program holds it), or None when it can."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            return e.strerror or str(e)
    return None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m app", description='Draw a digit in the browser: the page answers the digit, or "not a digit". '
        "The recognizer is notebook 12's default (Recognizer.default()): read from its file, or trained on a first "
        "start, while the page already opens.",
        epilog="Examples: python -m app · python -m app --port 8080 · make demo")
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 lets other machines in)")
    ap.add_argument("--port", type=port_number, default=8000, help="TCP port, 1-65535 (default 8000)")
    ap.add_argument("--rebuild", action="store_true",
                    help="train the default recognizer (or take it from the cache) and write app/recognizer.pt and "
                         "app/recognizer.json, then exit")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per answer (default 1: one small picture gains nothing from more, and "
                         "busy cores answer far sooner without them)")
    args = ap.parse_args(argv)
    if args.threads < 1:
        ap.error(f"--threads must be at least 1, got {args.threads}")
    import torch

    torch.set_num_threads(args.threads)
    if args.rebuild:
        rebuild()
        return
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"WARNING: listening on {args.host}: other machines can reach this development server")
    why = port_taken(args.host, args.port)
    if why:
        raise SystemExit(f"cannot listen on {args.host}:{args.port} ({why}): another program may hold the port; "
                         f"choose another, e.g. --port {args.port + 1 if args.port < 65535 else 8000}")
    app = create_app()
    app.extensions["recognizer"].start()   # prepare it while the page opens
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"draw a digit at http://{host}:{args.port}/  (Ctrl+C stops)", flush=True)
    try:
        app.run(host=args.host, port=args.port, debug=False, load_dotenv=False)
    except OSError as e:
        raise SystemExit(f"cannot listen on {args.host}:{args.port} ({e.strerror}): choose another --port")


if __name__ == "__main__":
    main()
