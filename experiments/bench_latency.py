"""CPU latency per image of each committed final, as a user would deploy it (issue #17, item 6).

    python experiments/bench_latency.py [--out experiments/results/latency-cpu.json]

One image per call (batch 1, what a sensor loop does), one thread, on real test images:
PyTorch eager on model.pt (what a user would otherwise run), onnxruntime on model.onnx
(float) and on model.int8.onnx, and the generated C (model.c, built with the system
compiler at -O2) where the run directory holds it. Per engine the median of ``calls``
timed calls after a warm-up; the engines take turns for ``rounds`` rounds (round-robin:
the machine is shared and its second core may be busy) and the best median of the rounds
is kept. The C harness is timed over a whole file of images (process start excluded by
subtracting a run on one image). Ratios within the file are what to read.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tinycnn import cgen  # noqa: E402
from tinycnn.atomic import atomic_write_text  # noqa: E402
from tinycnn.batches import to_float  # noqa: E402
from tinycnn.checkpoint import load_model  # noqa: E402
from tinycnn.data import load_splits  # noqa: E402
from tinycnn.provenance import environment, utc_now  # noqa: E402

FINALS = {"mnist": "experiments/results/mnist/sam/seed0", "cifar10": "experiments/results/cifar10/long/seed0"}
CALLS = {"mnist": 2000, "cifar10": 300}


def _median_call(fn, images: list, calls: int) -> float:
    for x in images[:20]:
        fn(x)  # warm-up: allocations, caches
    times = []
    for i in range(calls):
        x = images[i % len(images)]
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def _engines(run_dir: Path) -> dict:
    model = load_model(run_dir / "model.pt")
    torch_call = torch.no_grad()(lambda x: model(torch.from_numpy(x)))
    engines = {"pytorch eager (model.pt)": torch_call}
    for label, name in (("onnxruntime float (model.onnx)", "model.onnx"),
                        ("onnxruntime int8 (model.int8.onnx)", "model.int8.onnx")):
        if (run_dir / name).exists():
            engines[label] = _session(run_dir / name)
    return engines


def _c_seconds_per_image(run_dir: Path, pixels: torch.Tensor) -> float | None:
    """Per-image time of the compiled harness over a file of images, start-up subtracted."""
    if not (run_dir / cgen.C_FILE).exists():
        return None
    with tempfile.TemporaryDirectory(prefix="tinycnn-latency-") as tmp:
        exe = cgen.build_harness(run_dir, Path(tmp))
        timings = {}
        for n in (1, len(pixels)):
            t = time.perf_counter()
            cgen.run_c(exe, pixels[:n], Path(tmp))
            timings[n] = time.perf_counter() - t
    return (timings[len(pixels)] - timings[1]) / (len(pixels) - 1)


def bench_dataset(dataset: str, rounds: int) -> dict:
    run_dir = ROOT / FINALS[dataset]
    test = load_splits(dataset, val_size=0).test
    pixels = test.x[:CALLS[dataset]]
    images = [to_float(pixels[i:i + 1]).numpy() for i in range(len(pixels))]
    engines = _engines(run_dir)
    best = {name: float("inf") for name in engines}
    best_c = float("inf")
    for _ in range(rounds):
        for name, fn in engines.items():
            best[name] = min(best[name], _median_call(fn, images, CALLS[dataset]))
        c = _c_seconds_per_image(run_dir, pixels)
        best_c = min(best_c, c) if c is not None else best_c
    us = {name: round(s * 1e6, 1) for name, s in best.items()}
    if best_c < float("inf"):
        us["generated C, -O2 (model.c)"] = round(best_c * 1e6, 1)
    base = us["pytorch eager (model.pt)"]
    return {"run": FINALS[dataset], "calls": CALLS[dataset], "us_per_image": us,
            "speedup_over_pytorch": {name: round(base / v, 2) for name, v in us.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "experiments/results/latency-cpu.json"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = {"benchmark": "latency per image, batch 1, one thread", "measured_at": utc_now(),
              "device": f"cpu ({platform.machine()}, 1 thread)", "rounds": args.rounds, **environment(),
              "compiler": subprocess.run([cgen.find_compiler(), "--version"], capture_output=True,
                                         text=True).stdout.splitlines()[0],
              "datasets": {d: bench_dataset(d, args.rounds) for d in FINALS}}
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["datasets"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
