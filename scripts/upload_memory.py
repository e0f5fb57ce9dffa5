"""Peak memory of the draw-a-digit app for concurrent uploads of large pictures (Linux: /proc/self/status).

    python scripts/upload_memory.py                 # four 4096×4096 PNG drawings at once
    python scripts/upload_memory.py --side 2048 --uploads 8

Loads the committed recognizer (`app/recognizer.pt`), answers once (so that torch and the model are warm), resets
the process's peak resident memory (`/proc/self/clear_refs`), then posts the uploads from as many threads at once
through Flask's test client and prints how far the peak rose above the memory in use before, in MB.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (this measures on Linux only)")


def drawing(side: int) -> bytes:
    """A 7 drawn across a white side×side canvas, as a PNG (it compresses to a few hundred KB)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (side, side), "white")
    k = side / 280
    ImageDraw.Draw(img).line([(60 * k, 60 * k), (220 * k, 60 * k), (180 * k, 130 * k), (120 * k, 240 * k)],
                             fill="black", width=int(28 * k))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def measure(side: int = 4096, uploads: int = 4) -> dict:
    from app import webapp

    recognizer = webapp.load_shipped()
    if recognizer is None:
        raise SystemExit("app/recognizer.pt is missing or does not match its hash: run `python -m app --rebuild`")
    client = webapp.create_app(recognizer).test_client()
    png = drawing(side)
    first = client.post("/api/predict", data={"image": (io.BytesIO(png), "seven.png")})
    assert first.status_code == 200, first.get_data(as_text=True)
    Path("/proc/self/clear_refs").write_text("5")              # reset the peak (VmHWM) to the current RSS
    before = rss_mb("VmRSS")
    answers = []

    def post() -> None:
        r = client.post("/api/predict", data={"image": (io.BytesIO(png), "seven.png")})
        answers.append((r.status_code, r.get_json().get("message")))

    threads = [threading.Thread(target=post) for _ in range(uploads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"side": side, "uploads": uploads, "png_kb": round(len(png) / 1024, 1), "rss_before_mb": round(before, 1),
            "peak_rise_mb": round(rss_mb("VmHWM") - before, 1), "answers": sorted(set(answers))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=4096)
    ap.add_argument("--uploads", type=int, default=4)
    args = ap.parse_args(argv)
    print(json.dumps(measure(args.side, args.uploads), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
