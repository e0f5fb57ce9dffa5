"""Screenshot of the draw-a-digit web app in a real browser (Debian's headless Chromium, Selenium).

    python scripts/screenshot_demo.py                         # results/demo_screenshot.png
    python scripts/screenshot_demo.py /tmp/shot.png

Starts `app.webapp` with `Recognizer.default()` on a free local port, draws a 7 on the canvas with
the mouse, waits for the answer and saves a PNG screenshot. tests/test_browser.py drives the page with
the same functions. Needs /usr/bin/chromium and /usr/bin/chromedriver (`apt-get install chromium
chromium-driver`); Selenium Manager is never asked to download a browser.
"""
from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SEVEN = [(0.2, 0.2), (0.8, 0.2), (0.65, 0.45), (0.45, 0.85)]  # a 7 (fractions of the canvas), one stroke
ANSWERED = ("digit", "not-digit")                               # #answer's data-state once the server answered


def missing_browser() -> str | None:
    """What is missing to drive Chromium, or None."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    return f"{' and '.join(missing)} not found: apt-get install chromium chromium-driver" if missing else None


@contextmanager
def serve(app) -> Iterator[str]:
    """Serve a WSGI app on a free port of 127.0.0.1 in a background thread; yield its URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        thread.join()


@contextmanager
def chromium(width: int = 900, height: int = 700) -> Iterator["webdriver.Chrome"]:  # noqa: F821
    """A headless Chromium driven by Debian's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def draw(driver, canvas=None, stroke: list[tuple[float, float]] = SEVEN, steps: int = 8) -> None:
    """Draw one stroke through `stroke`'s points (fractions of the canvas) with the mouse on `canvas` (an
    element; default: the page's #canvas)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = canvas or driver.find_element(By.ID, "canvas")
    w, h = canvas.size["width"], canvas.size["height"]
    points = [(round((x - 0.5) * w), round((y - 0.5) * h)) for x, y in stroke]  # offsets from the centre
    chain = ActionChains(driver, duration=20).move_to_element_with_offset(canvas, *points[0]).click_and_hold()
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        for i in range(1, steps + 1):
            chain.move_to_element_with_offset(canvas, x0 + (x1 - x0) * i // steps, y0 + (y1 - y0) * i // steps)
    chain.release().perform()


def wait_answer(driver, states: tuple[str, ...] = ANSWERED, timeout: float = 20) -> str:
    """Wait until the answer's state is one of `states` ("digit", "not-digit", "empty", "error"); its text."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    answer = driver.find_element(By.ID, "answer")
    try:
        WebDriverWait(driver, timeout).until(lambda _: answer.get_attribute("data-state") in states)
    except TimeoutException:
        raise TimeoutError(f"after {timeout} s the answer is {answer.text!r} "
                           f"({answer.get_attribute('data-state')}), not one of {states}") from None
    return answer.text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", nargs="?", default=str(ROOT / "results" / "demo_screenshot.png"))
    args = ap.parse_args(argv)
    if reason := missing_browser():
        ap.error(reason)
    from app.recognizer import Recognizer
    from app.webapp import create_app

    with serve(create_app(Recognizer.default())) as url, chromium() as driver:
        driver.get(url)
        draw(driver)
        print(f"answer: {wait_answer(driver)}")
        Path(args.path).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.path)
    print(f"screenshot: {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
