"""The draw-a-digit web page in a real browser: Debian's headless Chromium driven by Selenium draws with
the mouse, clears, uploads, and saves a screenshot (to tmp_path, and to $DML_SCREENSHOT when set); the
notebook canvas widget's JavaScript draws and shows answers there too."""
from __future__ import annotations

import os
import shutil

import pytest
from test_notebooks import load_script

from app.webapp import create_app

shot = load_script("screenshot_demo")


@pytest.fixture(scope="module")
def driver():
    if reason := shot.missing_browser():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (.ci/run installs them, as root, before make test)")
        pytest.skip(f"no real browser to test the web page with: {reason}")
    with shot.chromium() as d:
        yield d


def test_draw_clear_and_upload_in_a_real_browser(driver, recognizer, digit_png, tmp_path):
    from selenium.webdriver.common.by import By

    with shot.serve(create_app(recognizer)) as url:
        driver.get(url)
        assert shot.wait_answer(driver, ("empty",)) == "draw something"
        shot.draw(driver)
        drawn = shot.wait_answer(driver)
        assert drawn.startswith("not a digit") or drawn[0].isdigit(), drawn
        # the metric on screen: ten probability bars, the score among real digits' scores, five nearest digits
        widths = [b.find_element(By.CLASS_NAME, "fill").get_attribute("style") for b in driver.find_elements(By.CSS_SELECTOR, "#bars .bar")]
        assert len(widths) == 10 and all("width" in w for w in widths)
        assert len(driver.find_elements(By.CSS_SELECTOR, "#dist line.threshold")) == 1
        assert len(driver.find_elements(By.CSS_SELECTOR, "#dist line.score")) == 1
        near = driver.find_elements(By.CSS_SELECTOR, "#nearest figure")
        assert len(near) == 5 and all(f.find_element(By.TAG_NAME, "img").get_attribute("src").startswith("data:image/png")
                                      for f in near)
        assert all(f.text.split(" · ")[0] in "0123456789" for f in near)
        seen = driver.find_element(By.ID, "seen").get_attribute("src")
        assert seen.startswith("data:image/png;base64,")
        driver.save_screenshot(str(tmp_path / "drawn.png"))

        driver.find_element(By.ID, "clear").click()
        assert shot.wait_answer(driver, ("empty",)) == "draw something"
        assert not driver.find_elements(By.CSS_SELECTOR, "#nearest figure, #bars .bar")
        assert driver.find_element(By.ID, "seen").get_attribute("src") is None

        picture = tmp_path / "digit.png"
        picture.write_bytes(digit_png)
        driver.find_element(By.ID, "upload").send_keys(str(picture))
        assert shot.wait_answer(driver) == recognizer.predict(digit_png)["message"]
        driver.save_screenshot(str(tmp_path / "uploaded.png"))
    assert (tmp_path / "drawn.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("DML_SCREENSHOT"):
        shutil.copyfile(tmp_path / "drawn.png", os.environ["DML_SCREENSHOT"])


# A stand-in for the notebook's widget model: the canvas widget's JavaScript runs as in JupyterLab.
FAKE_MODEL = """
const done = arguments[arguments.length - 1], state = {png: "", answer: "draw something", seen: "", size: 280};
const handlers = {};
window.model = {get: k => state[k], set: (k, v) => { state[k] = v; }, on: (e, f) => { (handlers[e] ??= []).push(f); },
                save_changes: () => { window.saved = state.png; }};
window.push = (k, v) => { state[k] = v; (handlers["change:" + k] || []).forEach(f => f()); };
document.body.innerHTML = '<div id="widget"></div>';
import(URL.createObjectURL(new Blob([arguments[0]], {type: "text/javascript"})))
  .then(m => { m.default.render({model, el: document.getElementById("widget")}); done("ok"); }, e => done(String(e)));
"""


SEEN = ("data:image/png;base64,"  # a 1×1 black PNG
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==")


def test_the_notebook_canvas_widget_draws_and_shows_answers(driver, recognizer):
    from selenium.webdriver.common.by import By

    from app.canvas import DigitCanvas

    with shot.serve(create_app(recognizer)) as url:
        driver.get(url)  # any http page: the widget's module is imported there from a blob
        assert driver.execute_async_script(FAKE_MODEL, DigitCanvas._esm) == "ok"
        shot.draw(driver, driver.find_element(By.CSS_SELECTOR, "#widget canvas"))
        assert driver.execute_script("return window.saved").startswith("data:image/png;base64,")
        driver.execute_script("push('answer', arguments[0])", "7 (99% sure)")
        assert "7 (99% sure)" in driver.find_element(By.ID, "widget").text
        driver.execute_script("push('seen', arguments[0])", SEEN)
        assert driver.find_element(By.CSS_SELECTOR, "#widget img").get_attribute("src") == SEEN
        driver.find_element(By.CSS_SELECTOR, "#widget button").click()
        assert driver.execute_script("return window.saved") == ""


# A handwritten "k" as three pen strokes, and a "w" as one (fractions of the canvas): letters, not digits.
LETTER_K = [[(0.3, 0.15), (0.3, 0.85)], [(0.7, 0.4), (0.3, 0.65)], [(0.42, 0.57), (0.72, 0.85)]]
LETTER_W = [[(0.15, 0.35), (0.32, 0.8), (0.5, 0.45), (0.68, 0.8), (0.85, 0.35)]]


@pytest.mark.parametrize("strokes", [LETTER_K, LETTER_W], ids=["k", "w"])
def test_a_letter_drawn_in_the_browser_is_not_a_digit(driver, strokes):
    """The shipped recognizer (`app/recognizer.pt`, what `make demo` serves), drawn on with the mouse: the page
    shows "not a digit" for the finished letter (an answer may come while it is drawn: the last one counts)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from app import webapp

    shipped = webapp.load_shipped()
    assert shipped is not None, "app/recognizer.pt is missing or does not match its hash: run `python -m app --rebuild`"
    with shot.serve(create_app(shipped)) as url:
        driver.get(url)
        assert shot.wait_answer(driver, ("empty",)) == "draw something"
        for stroke in strokes:
            shot.draw(driver, stroke=stroke)
        drawn = driver.execute_script('return document.getElementById("canvas").toDataURL("image/png")')
        final = shipped.predict(webapp.data_url_bytes(drawn))            # the answer to the whole letter
        assert not final["is_digit"], final["message"]
        WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "answer").text == final["message"])
