"""Measure training throughput on this machine and write `results/throughput.json`.

    python scripts/measure_throughput.py            # about a minute on a 2-core CPU
    python scripts/measure_throughput.py --only conv_ae-1x28x28   # add or refresh some networks only

For each network the notebooks train (the small CNN on 1×28×28 and 3×32×32, ResNet18 on 3×32×32) it
measures the forward FLOPs of one image (torch's FlopCounterMode), the training throughput in images/s
at batch 128 (AdamW steps of `utils.train.fit`'s kind, the first ones discarded as warm-up) and the
time of one step on a single image (the fixed cost of a step: Python, dispatch, optimizer). It also
measures this machine's float32 matrix-product rate. `utils.notebook.estimate_minutes` reads the file
to estimate how long a budget takes on a T4 (free Colab GPU) when no GPU is at hand to measure it:
the time per step is the fixed cost measured here plus the step's FLOPs at the rate this machine
reaches on the same network, scaled by the ratio of the T4's float32 peak to this machine's measured
matrix-product rate. On a CUDA machine it measures the GPU instead (the file then says which).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = {"cnn-1x28x28": ("cnn", (1, 28, 28)), "cnn-3x32x32": ("cnn", (3, 32, 32)),
           "resnet18-3x32x32": ("resnet18", (3, 32, 32)),
           # the autoencoders of notebook 11 and the benchmark (trained with the "reconstruction" head)
           **{f"{a}-{c}x{s}x{s}": (a, (c, s, s)) for a in ("conv_ae", "unet_ae", "superres_ae")
              for c, s in ((1, 28), (3, 32))}}


def forward_flops(model: torch.nn.Module, shape: tuple[int, int, int]) -> float:
    """FLOPs of one forward pass of one image (FlopCounterMode counts multiply-adds as 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, *shape))
    return float(fc.get_total_flops())


def step_seconds(model, head, shape, bs: int, steps: int, device: torch.device) -> float:
    """Mean seconds of one training step (forward, backward, AdamW) on batches of `bs` random images."""
    from utils import train as T

    model.to(device).train(), head.to(device).train()
    opt = torch.optim.AdamW(T.param_groups(model, head, 1e-3, 1e-2))
    x = torch.randint(0, 256, (bs, *shape), dtype=torch.uint8, device=device)
    y = torch.randint(0, 10, (bs,), device=device)
    amp_dtype = T.choose_precision(device.type)[0]

    def one():
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = head(model(x), y, inputs=x) if head.uses_inputs else head(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def matmul_flops(device: torch.device, n: int = 2048, reps: int = 5) -> float:
    """Measured float32 FLOP/s of an n×n matrix product."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    from utils import losses, models

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per network at batch 128")
    ap.add_argument("--out", default=str(ROOT / "results" / "throughput.json"))
    ap.add_argument("--only", nargs="+", choices=sorted(CONFIGS), metavar="KEY",
                    help="measure these networks only and keep the file's other figures (same machine)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "CPU",
           "device_type": device.type, "threads": torch.get_num_threads(), "torch": torch.__version__,
           "matmul_flops_per_s": matmul_flops(device), "networks": {}}
    path = Path(args.out)
    if args.only:
        if not path.is_file():
            raise SystemExit(f"--only adds to an existing file, and {path} does not exist: run without --only first")
        out = json.loads(path.read_text())
        if out["device_type"] != device.type:
            raise SystemExit(f"{path} was measured on {out['device_type']}, this is {device.type}: run without --only")
    for key, (arch, shape) in CONFIGS.items():
        if args.only and key not in args.only:
            continue
        model = models.make_model(arch, in_channels=shape[0], emb_dim=64)
        head = losses.make("reconstruction" if arch in models.AUTOENCODERS else "softmax", emb_dim=64, n_classes=10)
        flops = forward_flops(model, shape)
        t128 = step_seconds(model, head, shape, 128, max(2, args.steps // 5) if arch == "resnet18" else args.steps, device)
        t1 = step_seconds(model, head, shape, 1, 20, device)
        out["networks"][key] = {"forward_flops_per_image": flops, "images_per_s_bs128": 128 / t128,
                                "step_seconds_bs1": t1}
        print(f"{key:18s} {flops / 1e6:8.1f} MFLOP/image  {128 / t128:9.0f} images/s at batch 128  "
              f"{1e3 * t1:6.1f} ms per step of one image", flush=True)
    print(f"float32 matrix product: {out['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s on {out['threads']} threads")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print("written:", path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
