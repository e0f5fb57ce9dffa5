"""Draw a digit in a web page: a small Flask app around `utils.demo.Recognizer`.

    python -m app                        # http://127.0.0.1:8000 (make demo)
    python -m app --port 8080

`GET /` is the page (`app/webapp.html`): a canvas to draw on with a mouse, pen or finger, Clear,
Upload, and the answer as you draw. `POST /api/predict` takes a picture as a multipart file field
`image` or as JSON `{"image": "data:image/png;base64,…"}` and answers the recognizer's dict as JSON
(`is_digit`, `digit`, `confidence`, `score`, `threshold`, `method`, `probs`, `message`, `seconds`, and
`image`: the 28×28 picture the model saw, as a PNG data URL). `GET /api/status` says whether the
recognizer is ready (`Recognizer.default()` trains it on the very first start). Every error under /api/
is JSON `{"error": "…"}` with its HTTP status.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import io
import re
import threading
from pathlib import Path

import numpy as np
from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from utils.demo import BadImage, Recognizer

PAGE = Path(__file__).with_name("webapp.html")
MAX_MB = 5
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


def jsonable(answer: dict) -> dict:
    """The recognizer's answer with its 28×28 image as a PNG data URL."""
    return {**answer, "image": png_data_url(answer["image"])}


class ApiError(Exception):
    """A request the API refuses: an HTTP status and a message saying what to send."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def picture_from_request() -> bytes:
    """The picture's bytes from a multipart `image` field or a JSON data URL."""
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("image")
        if upload is None:
            raise ApiError(400, f"no file field \"image\" in the form: {SEND}")
        return upload.read()
    if request.mimetype == "application/json":
        body = request.get_json(silent=True)
        if body is None:
            raise ApiError(400, f"the body is not valid JSON: {SEND}")
        if not isinstance(body, dict) or not isinstance(body.get("image"), str):
            raise ApiError(400, f"no string field \"image\" in the JSON: {SEND}")
        return data_url_bytes(body["image"])
    raise ApiError(415, f"cannot read a {request.mimetype or 'body without a Content-Type'}: {SEND}")


def create_app(recognizer: Recognizer | None = None) -> Flask:
    """The app. Without `recognizer`, `Recognizer.default()` is loaded on first use (or by
    `app.extensions["recognizer"]()`, which `main` calls in the background at start-up)."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_MB * 1024 * 1024
    page = PAGE.read_text(encoding="utf-8")
    lock = threading.Lock()
    loaded: list[Recognizer] = [recognizer] if recognizer is not None else []

    def get_recognizer() -> Recognizer:
        with lock:
            if not loaded:
                loaded.append(Recognizer.default())
        return loaded[0]

    app.extensions["recognizer"] = get_recognizer

    @app.get("/")
    def index() -> Response:
        return Response(page, mimetype="text/html")

    @app.get("/api/status")
    def status() -> Response:
        """Whether the recognizer is loaded (its first start may train it: the page says so meanwhile)."""
        return jsonify(ready=bool(loaded))

    @app.post("/api/predict")
    def predict() -> Response:
        try:
            return jsonify(jsonable(get_recognizer().predict(picture_from_request())))
        except BadImage as e:
            raise ApiError(400, str(e)) from None

    @app.errorhandler(ApiError)
    def api_error(e: ApiError) -> tuple[Response, int]:
        return jsonify(error=str(e)), e.status

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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m app",
                                 description='Draw a digit in the browser: the answer is a digit or "not a digit".')
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"WARNING: listening on {args.host}: other machines can reach this development server")
    app = create_app()
    threading.Thread(target=app.extensions["recognizer"], daemon=True).start()  # load while the page opens
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"draw a digit at http://{host}:{args.port}/  (Ctrl+C stops)", flush=True)
    try:
        app.run(host=args.host, port=args.port, debug=False, load_dotenv=False)
    except OSError as e:
        raise SystemExit(f"cannot listen on {args.host}:{args.port} ({e.strerror}): choose another --port")


if __name__ == "__main__":
    main()
