"""How fast the draw-a-digit app answers: p50 and p95 of N requests, on an idle machine and with every core busy.

    python scripts/latency.py                      # 200 requests idle, then 200 with os.cpu_count() busy loops
    python scripts/latency.py --threads 0          # the same with torch's default thread count in the server

Starts `python -m app` on a free local port (the server as a user runs it), waits until it is ready, and posts a
drawn digit (a PNG of a canvas drawing) as JSON, one request at a time; a request's time is the round trip seen
by the client. "Busy" runs one pure-Python busy loop per core beside the server, as a learner's laptop doing
other work. Writes `results/latency.json`.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drawn_digit_json() -> bytes:
    """A 280×280 canvas with a 7 drawn in black on white, as the page sends it."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(img).line([(60, 60), (220, 60), (180, 130), (120, 240)], fill=0, width=28, joint="curve")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return json.dumps({"image": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()}).encode()


def wait_ready(url: str, timeout: float = 900.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            with urllib.request.urlopen(url + "api/status", timeout=5) as r:
                if json.load(r)["ready"]:
                    return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the app was not ready after {timeout:.0f} s")


def measure(url: str, body: bytes, n: int) -> dict:
    times = []
    for _ in range(n):
        req = urllib.request.Request(url + "api/predict", data=body, headers={"Content-Type": "application/json"})
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=60) as r:
            answer = json.load(r)
        times.append(1000 * (time.perf_counter() - t0))
    times.sort()
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]  # noqa: E731
    return {"requests": n, "p50_ms": round(pick(0.50), 2), "p95_ms": round(pick(0.95), 2),
            "max_ms": round(times[-1], 2), "answer": answer["message"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1, help="the server's torch threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "latency.json")
    args = ap.parse_args(argv)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, "-m", "app", "--port", str(port)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = dict(os.environ)
    if not args.threads:   # torch's default: as many threads as cores
        env["LATENCY_DEFAULT_THREADS"] = "1"
        cmd = [sys.executable, "-c", "import torch, sys; n = torch.get_num_threads(); from app.webapp import main; "
               "sys.argv = ['app', '--port', '%d', '--threads', str(n)]; main(sys.argv[1:])" % port]
    t0 = time.perf_counter()
    server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    busy = []
    try:
        ready = wait_ready(url)
        first = time.perf_counter() - t0
        body = drawn_digit_json()
        measure(url, body, 10)                                       # warm-up
        idle = measure(url, body, args.requests)
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
        time.sleep(1.0)
        loaded = measure(url, body, args.requests)
    finally:
        for p in busy:
            p.kill()
        server.terminate()
        server.wait(timeout=30)
    result = {"threads": args.threads or "torch default", "cores": os.cpu_count(), "ready_after_s": round(first, 2),
              "status_ready_s": round(ready, 2), "idle": idle, "busy": {**loaded, "busy_loops": len(busy)}}
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
