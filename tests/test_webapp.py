"""The draw-a-digit web app (app.webapp: every answer and every refusal is JSON) and the notebook canvas
(app.canvas: no widget in headless runs; a live one answers each drawing)."""
from __future__ import annotations

import base64
import io
import subprocess
import sys
from datetime import datetime

import numpy as np
import pytest
from PIL import Image

from app import canvas, webapp

KEYS = {"is_digit": bool, "digit": (int, type(None)), "confidence": float, "score": float, "threshold": float,
        "method": str, "probs": list, "image": str, "message": str, "seconds": float, "nearest": list,
        "digit_scores": dict}


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def image_of(url: str) -> np.ndarray:
    """The picture in a PNG data URL, as an array."""
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def wait_until(done, seconds: float = 10.0) -> None:
    """Poll `done()` until it is true or `seconds` have passed (the app prepares its recognizer in a thread)."""
    import time

    end = time.monotonic() + seconds
    while not done() and time.monotonic() < end:
        time.sleep(0.02)


@pytest.fixture
def client(recognizer):
    return webapp.create_app(recognizer).test_client()


def test_page_has_the_canvas_buttons_and_answer(client):
    r = client.get("/")
    assert r.status_code == 200 and r.mimetype == "text/html"
    page = r.get_data(as_text=True)
    for element in ('id="canvas"', 'id="clear"', 'id="upload" type="file" accept="image/*"', 'id="answer"',
                    'id="seen"', "draw something", "api/predict"):
        assert element in page


@pytest.mark.parametrize("how", ["multipart", "data URL"])
def test_a_drawn_digit_gets_the_recognizers_answer_as_json(client, recognizer, digit_png, how):
    if how == "multipart":
        r = client.post("/api/predict", data={"image": (io.BytesIO(digit_png), "digit.png")})
    else:
        r = client.post("/api/predict", json={"image": data_url(digit_png)})
    assert r.status_code == 200, r.get_data(as_text=True)
    a, direct = r.get_json(), recognizer.predict(digit_png)
    assert set(a) == set(KEYS) and all(isinstance(a[k], t) for k, t in KEYS.items()), a
    assert len(a["probs"]) == 10 and abs(sum(a["probs"]) - 1) < 1e-3
    assert (a["is_digit"], a["digit"], a["message"]) == (direct["is_digit"], direct["digit"], direct["message"])
    seen = image_of(a["image"])
    assert seen.shape == (28, 28) and np.array_equal(seen, direct["image"])
    assert [(n["digit"], n["distance"]) for n in a["nearest"]] == [(n["digit"], n["distance"]) for n in direct["nearest"]]
    assert all(np.array_equal(image_of(n["image"]), d["image"]) for n, d in zip(a["nearest"], direct["nearest"]))
    assert a["digit_scores"] == direct["digit_scores"]


BLANK = png(np.full((280, 280), 255, np.uint8))
TOO_BIG = {"image": "data:image/png;base64," + "A" * (webapp.MAX_MB * 1024 * 1024)}


@pytest.mark.parametrize("request_kwargs, status, says", [
    ({"json": {"image": data_url(BLANK)}}, 400, "draw something"),
    ({"data": {"image": (io.BytesIO(BLANK), "blank.png")}}, 400, "draw something"),
    ({"data": {"image": (io.BytesIO(b"hello, world"), "notes.txt")}}, 400, "not a picture"),
    ({"data": {"image": (io.BytesIO(b""), "")}}, 400, "upload is empty"),
    ({"data": {"picture": (io.BytesIO(BLANK), "blank.png")}}, 400, 'file field named "image"'),
    ({"json": {"picture": "data:image/png;base64,"}}, 400, 'field "image"'),
    ({"json": ["data:image/png;base64,"]}, 400, 'field "image"'),
    ({"data": "{not json", "content_type": "application/json"}, 400, "not valid JSON"),
    ({"json": {"image": "hello"}}, 400, "not a base64 image data URL"),
    ({"json": {"image": "data:text/plain;base64,aGk="}}, 400, "not a base64 image data URL"),
    ({"json": {"image": "data:image/png;base64,@@not base64@@"}}, 400, "base64 is malformed"),
    ({"json": TOO_BIG}, 413, f"{webapp.MAX_MB} MB limit"),
    ({"data": {"image": (io.BytesIO(b"\0" * (webapp.MAX_MB * 1024 * 1024 + 1)), "big.png")}}, 413, "MB limit"),
    ({"data": "a seven", "content_type": "text/plain"}, 415, "cannot read a text/plain"),
    ({}, 415, "body without a Content-Type"),
], ids=["blank canvas", "blank upload", "not an image", "empty upload", "no image field", "no image key",
        "JSON not an object", "bad JSON", "not a data URL", "not an image data URL", "bad base64",
        "too large JSON", "too large upload", "text/plain", "no body"])
def test_bad_input_gets_a_json_error_with_its_status(client, request_kwargs, status, says):
    r = client.post("/api/predict", **request_kwargs)
    assert r.status_code == status and r.is_json, r.get_data(as_text=True)[:300]
    assert says in r.get_json()["error"] and "Traceback" not in r.get_data(as_text=True)


def test_wrong_method_and_unknown_api_paths_are_json(client):
    r = client.get("/api/predict")
    assert r.status_code == 405 and "POST a picture" in r.get_json()["error"]
    r = client.get("/api/nothing")
    assert r.status_code == 404 and "error" in r.get_json()
    assert client.get("/nothing").mimetype == "text/html"  # pages outside /api/ keep Flask's HTML


def test_a_failure_inside_is_a_json_500_without_a_stack_trace(digit_png):
    class Broken:
        def predict(self, image):
            raise RuntimeError("secret detail")

    r = webapp.create_app(Broken()).test_client().post("/api/predict", json={"image": data_url(digit_png)})
    assert r.status_code == 500 and r.get_json() == {"error": "the server failed (RuntimeError): see its log"}


def test_the_default_recognizer_is_prepared_once_in_the_background(monkeypatch, recognizer, digit_png):
    """The page opens at once; asking for the status starts nothing; a prediction starts the preparation and is
    answered 503 "still preparing" at once instead of waiting; once ready, every prediction is answered."""
    import threading

    loads, release = [], threading.Event()

    def slow_default(progress=None):
        loads.append(1)
        assert release.wait(30)
        return recognizer

    monkeypatch.setattr(webapp.Recognizer, "default", slow_default)
    monkeypatch.setattr(webapp, "load_shipped", lambda log=print: None)     # as on a clone without the file
    app = webapp.create_app()
    client = app.test_client()
    assert client.get("/").status_code == 200 and not loads  # the page does not wait for the network
    assert client.get("/api/status").get_json() == {"ready": False, "preparing": False, "seconds": 0.0} and not loads
    r = client.post("/api/predict", json={"image": data_url(digit_png)})
    assert r.status_code == 503 and r.get_json()["preparing"] is True and "still preparing" in r.get_json()["error"]
    status = client.get("/api/status").get_json()
    assert status["ready"] is False and status["preparing"] is True and status["seconds"] >= 0
    release.set()
    for _ in range(300):
        if client.get("/api/status").get_json()["ready"]:
            break
        threading.Event().wait(0.05)
    for _ in range(2):
        assert client.post("/api/predict", json={"image": data_url(digit_png)}).status_code == 200
    assert loads == [1]
    assert client.get("/api/status").get_json()["ready"] is True


def test_a_recognizer_that_cannot_be_prepared_is_a_json_500(monkeypatch, digit_png):
    def broken(progress=None):
        raise RuntimeError("no data here")

    monkeypatch.setattr(webapp.Recognizer, "default", broken)
    monkeypatch.setattr(webapp, "load_shipped", lambda log=print: None)
    app = webapp.create_app()
    app.extensions["recognizer"].start()
    wait_until(lambda: app.extensions["recognizer"].error is not None)
    r = app.test_client().post("/api/predict", json={"image": data_url(digit_png)})
    assert r.status_code == 500 and "could not be prepared (RuntimeError)" in r.get_json()["error"]


def test_deeply_nested_json_is_a_400_not_a_crash(client):
    body = "[" * 100_000 + "]" * 100_000
    r = client.post("/api/predict", data=body, content_type="application/json")
    assert r.status_code == 400 and "nested too deeply" in r.get_json()["error"]


def test_a_chunked_body_over_the_limit_is_a_413(client):
    """Without a Content-Length (chunked transfer), the limit still holds while reading: 413, not 400."""
    big = io.BytesIO(b'{"image": "data:image/png;base64,' + b"A" * (webapp.MAX_MB * 1024 * 1024 + 10) + b'"}')
    r = client.post("/api/predict", input_stream=big, content_type="application/json",
                    headers={"Transfer-Encoding": "chunked"}, environ_overrides={"wsgi.input_terminated": True})
    assert r.status_code == 413 and "MB limit" in r.get_json()["error"]


def test_a_chunked_body_under_the_limit_is_answered(client, digit_png):
    body = io.BytesIO(('{"image": "%s"}' % data_url(digit_png)).encode())
    r = client.post("/api/predict", input_stream=body, content_type="application/json",
                    headers={"Transfer-Encoding": "chunked"}, environ_overrides={"wsgi.input_terminated": True})
    assert r.status_code == 200 and r.get_json()["digit"] is not None


def test_main_prints_the_url_and_warns_off_localhost(monkeypatch, capsys, recognizer):
    runs = []
    monkeypatch.setattr(webapp.Recognizer, "default", lambda progress=None: recognizer)
    monkeypatch.setattr(webapp.Flask, "run", lambda app, **kw: runs.append(kw))
    webapp.main(["--port", "8123"])
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8123/" in out and "WARNING" not in out
    webapp.main(["--host", "0.0.0.0"])
    assert "WARNING: listening on 0.0.0.0" in capsys.readouterr().out
    assert runs == [{"host": "127.0.0.1", "port": 8123, "debug": False, "load_dotenv": False},
                    {"host": "0.0.0.0", "port": 8000, "debug": False, "load_dotenv": False}]


def test_module_help_explains_every_option():
    r = subprocess.run([sys.executable, "-m", "app", "--help"], capture_output=True, text=True,
                       cwd=webapp.PAGE.parent.parent, timeout=120)
    text = " ".join(r.stdout.split())
    assert r.returncode == 0
    for option, says in (("--port", "1-65535"), ("--host", "this machine only"), ("--threads", "torch threads")):
        assert option in text and says in text, r.stdout


@pytest.mark.parametrize("port", ["70000", "0", "-1", "http"])
def test_a_port_out_of_range_is_refused_before_anything_starts(port, capsys):
    with pytest.raises(SystemExit) as e:
        webapp.main(["--port", port])
    assert e.value.code == 2 and "give a number from 1 to 65535" in capsys.readouterr().err


def test_a_taken_port_says_so_in_the_apps_words(monkeypatch):
    import socket

    runs = []
    monkeypatch.setattr(webapp.Flask, "run", lambda app, **kw: runs.append(kw))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with pytest.raises(SystemExit) as e:
            webapp.main(["--port", str(taken)])
    assert f"cannot listen on 127.0.0.1:{taken}" in str(e.value) and "--port" in str(e.value) and not runs


def test_main_gives_torch_the_threads_asked_for(monkeypatch, recognizer):
    import torch

    monkeypatch.setattr(webapp.Recognizer, "default", lambda progress=None: recognizer)
    monkeypatch.setattr(webapp.Flask, "run", lambda app, **kw: None)
    before = torch.get_num_threads()
    try:
        webapp.main(["--port", "8124", "--threads", "2"])
        assert torch.get_num_threads() == 2
        webapp.main(["--port", "8124"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- the notebook canvas
def test_headless_runs_get_a_note_and_no_widget(monkeypatch, capsys, recognizer):
    import ipywidgets.widgets.widget as w

    monkeypatch.setenv("DML_HEADLESS", "1")
    before = len(w._instances)
    assert canvas.draw_a_digit(recognizer) is None and canvas.upload_box(recognizer) is None
    assert len(w._instances) == before
    out = capsys.readouterr().out.splitlines()
    assert out == ["headless run: the canvas needs JupyterLab or Colab (the gallery shows the recognizer's answers)",
                   "headless run: the upload box needs JupyterLab or Colab (the gallery shows the recognizer's answers)"]


def test_the_canvas_answers_each_drawing(monkeypatch, recognizer, digit_png):
    import anywidget

    monkeypatch.delenv("DML_HEADLESS", raising=False)
    widget = canvas.draw_a_digit(recognizer)
    assert isinstance(widget, anywidget.AnyWidget) and widget.answer == "draw something" and not widget.seen
    widget.png = data_url(digit_png)
    direct = recognizer.predict(digit_png)
    assert widget.answer == f"{direct['message']} · {canvas.score_line(direct)}" and "score" in widget.answer
    assert np.array_equal(image_of(widget.seen), direct["image"])
    widget.png = data_url(BLANK)
    assert widget.answer == "the picture is empty: draw something" and widget.seen == ""
    widget.png = data_url(digit_png)
    widget.png = ""  # Clear
    assert widget.answer == "draw something" and widget.seen == ""


def test_the_upload_box_answers_an_uploaded_picture(monkeypatch, recognizer, digit_png):
    monkeypatch.delenv("DML_HEADLESS", raising=False)
    box = canvas.upload_box(recognizer)
    upload, label = box.children
    upload.value = ({"name": "digit.png", "type": "image/png", "size": len(digit_png),
                     "content": memoryview(digit_png), "last_modified": datetime.now()},)
    direct = recognizer.predict(digit_png)
    assert label.value == f"{direct['message']} · {canvas.score_line(direct)}"


# ----------------------------------------------------------------------------- the shipped recognizer
def test_the_shipped_recognizer_matches_its_hash_and_the_current_recipe(monkeypatch):
    """`app/recognizer.pt` is committed so that the app starts at once: its bytes match the sha256 recorded in
    `app/recognizer.json`, and it was built under the recipe key `Recognizer.default()` would use now (the recipe,
    the code and the digits), so it is what training would give; `python -m app --rebuild` rewrites both."""
    import hashlib
    import json

    from test_demo import REAL_DATA

    from utils import data
    from app import recognizer as demo

    info = json.loads(webapp.SHIPPED_INFO.read_text())
    assert hashlib.sha256(webapp.SHIPPED.read_bytes()).hexdigest() == info["sha256"]
    assert info["recipe"] == demo.RECIPE and info["rebuild"] == "python -m app --rebuild"
    try:
        data.load("mnist", root=REAL_DATA, download=False)
    except data.DataNotFound:
        pytest.skip(f"MNIST is not in {REAL_DATA} (set DML_DATA to the offline copies)")
    monkeypatch.setenv("DML_DATA", REAL_DATA)
    assert demo.default_path().stem.split("-", 1)[1] == info["key"], \
        "the recipe, the code or the digits changed since app/recognizer.pt was built: run `python -m app --rebuild`"
    shipped = webapp.load_shipped()
    assert shipped is not None
    # what it was trained with is the recipe (a file saved under the recipe's key must be that recipe's)
    assert shipped.info["head_hparams"].get("lam") == demo.RECIPE["lam"] and shipped.info["epochs"] == demo.RECIPE["epochs"]
    assert shipped.info["keep"] == demo.RECIPE["keep"] and shipped.scorer.name == demo.RECIPE["score"]
    assert shipped.info["data"].startswith("mnist")


def test_a_shipped_file_that_does_not_match_its_hash_is_not_used(monkeypatch, tmp_path, capsys):
    import json

    bad, info = tmp_path / "recognizer.pt", tmp_path / "recognizer.json"
    bad.write_bytes(b"not the recognizer")
    info.write_text(json.dumps({"sha256": "0" * 64, "rebuild": "python -m app --rebuild"}))
    monkeypatch.setattr(webapp, "SHIPPED", bad)
    monkeypatch.setattr(webapp, "SHIPPED_INFO", info)
    assert webapp.load_shipped() is None
    assert "does not match the sha256" in capsys.readouterr().out


def test_the_app_starts_from_the_shipped_file_without_training(monkeypatch):
    trained = []
    monkeypatch.setattr(webapp.Recognizer, "default", lambda progress=None: trained.append(1))
    app = webapp.create_app()
    app.extensions["recognizer"].start()
    wait_until(lambda: app.extensions["recognizer"].recognizer is not None)
    assert app.extensions["recognizer"].recognizer is not None and not trained


# ----------------------------------------------------------------------------- every picture format, bounded memory
def _answer(client, data: bytes) -> dict:
    r = client.post("/api/predict", data={"image": (io.BytesIO(data), "picture.png")})
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()


@pytest.mark.parametrize("paper, ink", [(65535, 0), (60000, 20000)], ids=["full range", "a dim 16-bit scan"])
def test_a_16_bit_png_gets_the_answer_of_its_8_bit_original(client, digit_png, paper, ink):
    """`convert("L")` would clip every 16-bit value above 255 to white: a 16-bit digit read as "not a digit" and a
    16-bit scan as "empty". The app scales 16-bit pictures by their own range first."""
    eight = np.asarray(Image.open(io.BytesIO(digit_png)), dtype=np.float64)
    sixteen = (ink + (paper - ink) * eight / 255).round().astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(sixteen).save(buf, format="PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I;16")
    a, b = _answer(client, digit_png), _answer(client, buf.getvalue())
    assert (b["is_digit"], b["digit"]) == (a["is_digit"], a["digit"]) and b["is_digit"]


def test_a_huge_drawing_is_reduced_and_answered_like_the_canvas_one(client, digit_png):
    big = Image.open(io.BytesIO(digit_png)).resize((4096, 4096), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    big.save(buf, format="PNG")
    a, b = _answer(client, digit_png), _answer(client, buf.getvalue())
    assert (b["is_digit"], b["digit"]) == (a["is_digit"], a["digit"])


@pytest.mark.parametrize("side, says", [(5000, "5000×5000 pixels"), (14000, "too large to decode")])
def test_oversized_pictures_and_decompression_bombs_are_refused_from_the_header(client, side, says):
    buf = io.BytesIO()
    Image.new("1", (side, side), 1).save(buf, format="PNG")     # a few KB that would decode to side² pixels
    r = client.post("/api/predict", data={"image": (io.BytesIO(buf.getvalue()), "bomb.png")})
    assert r.status_code == 413 and says in r.get_json()["error"], r.get_json()


@pytest.mark.skipif(not __import__("pathlib").Path("/proc/self/clear_refs").exists(), reason="Linux's /proc measures it")
def test_four_concurrent_4096_pixel_uploads_stay_under_a_gigabyte():
    """`scripts/upload_memory.py`: four 4096×4096 drawings posted at once raise the peak resident memory by less
    than 1 GB (each is reduced to 1,024 pixels a side, one is recognized at a time)."""
    import json

    r = subprocess.run([sys.executable, "scripts/upload_memory.py"], capture_output=True, text=True,
                       cwd=webapp.PAGE.parent.parent, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["answers"] == [[200, out["answers"][0][1]]] and out["peak_rise_mb"] < 1000, out


def test_rebuild_refuses_to_ship_a_recognizer_trained_without_the_recipes_data(monkeypatch, tmp_path):
    """`python -m app --rebuild` writes the committed file only from the full recipe: without Omniglot (or MNIST, or
    Fashion-MNIST) it stops and says how to get the data, and nothing is trained or written."""
    from utils import data

    def load(name, *args, **kwargs):
        if name == "omniglot":
            raise data.DataNotFound("could not load 'omniglot' … Fix: put images_background_small1.zip …")
        return None

    trained = []
    monkeypatch.setattr(data, "load", load)
    monkeypatch.setattr(webapp.Recognizer, "default", lambda progress=None: trained.append(1))
    monkeypatch.setattr(webapp, "SHIPPED", tmp_path / "recognizer.pt")
    with pytest.raises(SystemExit, match="(?s)needs 'omniglot'.*Fix: put"):
        webapp.rebuild()
    assert not trained and not (tmp_path / "recognizer.pt").exists()
