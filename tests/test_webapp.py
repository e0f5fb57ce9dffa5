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
        "method": str, "probs": list, "image": str, "message": str, "seconds": float}


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


def test_the_default_recognizer_is_loaded_once_on_first_use(monkeypatch, recognizer, digit_png):
    loads = []
    monkeypatch.setattr(webapp.Recognizer, "default", lambda: loads.append(1) or recognizer)
    client = webapp.create_app().test_client()
    assert client.get("/").status_code == 200 and not loads  # the page does not wait for the network
    assert client.get("/api/status").get_json() == {"ready": False} and not loads   # asking does not load it
    for _ in range(2):
        assert client.post("/api/predict", json={"image": data_url(digit_png)}).status_code == 200
    assert loads == [1]
    assert client.get("/api/status").get_json() == {"ready": True}


def test_main_prints_the_url_and_warns_off_localhost(monkeypatch, capsys, recognizer):
    runs = []
    monkeypatch.setattr(webapp.Recognizer, "default", lambda: recognizer)
    monkeypatch.setattr(webapp.Flask, "run", lambda app, **kw: runs.append(kw))
    webapp.main(["--port", "8123"])
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8123/" in out and "WARNING" not in out
    webapp.main(["--host", "0.0.0.0"])
    assert "WARNING: listening on 0.0.0.0" in capsys.readouterr().out
    assert runs == [{"host": "127.0.0.1", "port": 8123, "debug": False, "load_dotenv": False},
                    {"host": "0.0.0.0", "port": 8000, "debug": False, "load_dotenv": False}]


def test_module_help_exits_0():
    r = subprocess.run([sys.executable, "-m", "app", "--help"], capture_output=True, text=True,
                       cwd=webapp.PAGE.parent.parent, timeout=120)
    assert r.returncode == 0 and "--port" in r.stdout and "--host" in r.stdout


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
    assert widget.answer == direct["message"]
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
    assert label.value == recognizer.predict(digit_png)["message"]
