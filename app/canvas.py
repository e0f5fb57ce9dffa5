"""Draw a digit in a notebook: a canvas widget (anywidget) and an upload box wired to a `Recognizer`.

    from app.canvas import draw_a_digit, upload_box
    draw_a_digit(recognizer)     # draw with a mouse, pen or finger; the answer shows under the canvas
    upload_box(recognizer)       # or upload a picture

Both need a live notebook front end (JupyterLab, Jupyter Notebook, VS Code, Colab). In headless runs
(`DML_HEADLESS=1`, set by scripts/run_notebooks.py) they print a note and return None, so executed
notebooks carry no widget state.
"""
from __future__ import annotations

import os
import sys

import anywidget
import traitlets

from app.recognizer import BadImage, Recognizer
from .webapp import data_url_bytes, png_data_url

HEADLESS_NOTE = "headless run: the {what} needs JupyterLab or Colab (the gallery shows the recognizer's answers)"


class DigitCanvas(anywidget.AnyWidget):
    """A white canvas to draw on: `png` is the drawing as a PNG data URL ("" when cleared), sent on each
    pointer release; `answer` (text) and `seen` (a picture's data URL) are shown beside it."""

    _esm = """
    function render({ model, el }) {
      const canvas = document.createElement("canvas"), ctx = canvas.getContext("2d");
      canvas.width = canvas.height = model.get("size");
      canvas.style.cssText = "border:2px solid #888;border-radius:6px;touch-action:none;cursor:crosshair";
      const clear = Object.assign(document.createElement("button"), { textContent: "Clear" });
      const answer = Object.assign(document.createElement("div"), { style: "font-size:1.5em;margin:.3em 0" });
      const seen = Object.assign(document.createElement("img"), { width: 112, height: 112,
        style: "image-rendering:pixelated;background:#000", title: "what the network saw (28×28)" });
      const blank = () => { ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height); };
      const at = e => { const r = canvas.getBoundingClientRect();
        return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height]; };
      const line = (a, b) => { Object.assign(ctx, { strokeStyle: "#000", lineWidth: canvas.width / 10,
        lineCap: "round", lineJoin: "round" }); ctx.beginPath(); ctx.moveTo(...a); ctx.lineTo(...b); ctx.stroke(); };
      const send = png => { model.set("png", png); model.save_changes(); };
      const update = () => { answer.textContent = model.get("answer"); seen.src = model.get("seen");
        seen.style.visibility = model.get("seen") ? "visible" : "hidden"; };
      let last = null;
      canvas.addEventListener("pointerdown", e => {
        last = at(e); line(last, last); canvas.setPointerCapture(e.pointerId); });
      canvas.addEventListener("pointermove", e => { if (last) { const p = at(e); line(last, p); last = p; } });
      const stop = () => { if (last) { last = null; send(canvas.toDataURL("image/png")); } };
      canvas.addEventListener("pointerup", stop);
      canvas.addEventListener("pointercancel", stop);
      clear.addEventListener("click", () => { blank(); send(""); });
      model.on("change:answer", update);
      model.on("change:seen", update);
      blank(); update();
      const side = Object.assign(document.createElement("div"),
        { style: "display:inline-block;vertical-align:top;margin-left:1em" });
      side.append(answer, seen);
      const left = Object.assign(document.createElement("div"), { style: "display:inline-block" });
      left.append(canvas, document.createElement("br"), clear);
      el.append(left, side);
    }
    export default { render };
    """
    png = traitlets.Unicode("").tag(sync=True)
    answer = traitlets.Unicode("draw something").tag(sync=True)
    seen = traitlets.Unicode("").tag(sync=True)
    size = traitlets.Int(280).tag(sync=True)


def widgets_live(what: str) -> bool:
    """False, after a one-line note, in headless runs (`DML_HEADLESS=1`); in Colab, turns on the custom
    widget manager that third-party widgets need."""
    if os.environ.get("DML_HEADLESS") == "1":
        print(HEADLESS_NOTE.format(what=what))
        return False
    if "google.colab" in sys.modules:
        from google.colab import output

        output.enable_custom_widget_manager()
    return True


def answer(recognizer: Recognizer, image) -> tuple[str, str]:
    """(the sentence to show, the 28×28 picture the network saw as a data URL or "") for a picture: a data
    URL or anything `recognizer.predict` reads."""
    try:
        a = recognizer.predict(data_url_bytes(image) if isinstance(image, str) else image)
    except BadImage as e:  # EmptyImage included: "the picture is empty: draw something"
        return str(e), ""
    return f"{a['message']} · {score_line(a)}", png_data_url(a["image"])


def score_line(a: dict) -> str:
    """The score beside the answer: "energy score -2.05 > threshold -3.15"."""
    return f"{a['method']} score {a['score']:.3g} {'≤' if a['is_digit'] else '>'} threshold {a['threshold']:.3g}"


def draw_a_digit(recognizer: Recognizer) -> DigitCanvas | None:
    """A canvas whose every drawing goes to `recognizer.predict`; its answer shows beside it."""
    if not widgets_live("canvas"):
        return None
    w = DigitCanvas()

    def on_drawing(change: dict) -> None:
        w.answer, w.seen = answer(recognizer, change["new"]) if change["new"] else ("draw something", "")

    w.observe(on_drawing, names="png")
    return w


def upload_box(recognizer: Recognizer) -> "ipywidgets.VBox | None":  # noqa: F821
    """A file-upload button and, under it, the answer for the uploaded picture."""
    import ipywidgets as W

    if not widgets_live("upload box"):
        return None
    upload, out = W.FileUpload(accept="image/*", multiple=False), W.Label("upload a picture of a digit")

    def on_upload(change: dict) -> None:
        if change["new"]:
            out.value = answer(recognizer, bytes(change["new"][0]["content"]))[0]

    upload.observe(on_upload, names="value")
    return W.VBox([upload, out])
