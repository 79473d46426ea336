"""Does `torch.compile` pay for the finals' training on this device? (issue #19, item 3)

A tiny net's training step on a CPU is hundreds of small kernels (BatchNorm, activations,
SE's pooling, BlurPool) that each read and write a few KB: Inductor fuses them into
generated C++ loops. Whether that beats eager depends on the net and the machine, so it is
measured here, not assumed: each final with its own final recipe (MNIST `sam`, CIFAR-10
`long_cutout`), eager against `compile = true` in NCHW and channels_last, through
`tinycnn.engine.fit` itself (the loop a run gets). A configuration trains ``--epochs`` short
epochs of ``--images`` images; the first epoch carries the compilation and is reported
apart (``first_epoch_s``), the steady speed is the best of the later epochs. Results go to
experiments/results/compile-<device>[-<threads>thread].json.

    python experiments/bench_compile.py [--device cpu] [--threads 1] [--images 4096] [--epochs 3]
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from tinycnn.data import Splits, load_splits
from tinycnn.device import device_description, resolve_device
from tinycnn.engine import fit
from tinycnn.ladders import get_phase
from tinycnn.recipe import load_recipe

RESULTS = Path(__file__).resolve().parent / "results"
FINAL_RECIPES = {"mnist": "sam", "cifar10": "long_cutout"}


def configurations(recipe) -> dict:
    """Eager and compiled, each in both memory layouts: name -> recipe."""
    return {f"{'compiled' if c else 'eager'}, {'channels_last' if cl else 'NCHW'}":
            replace(recipe, compile=c, channels_last=cl) for c in (False, True) for cl in (False, True)}


def measure(phase, recipe, splits: Splits, device) -> dict:
    """One short fit: the first epoch's wall time (compilation included) and the best later speed."""
    start = time.perf_counter()
    history = fit(phase, recipe, splits, device=device).history
    return {"first_epoch_s": round(history[0]["epoch_time_s"], 2),
            "images_per_s": round(max(h["images_per_s"] for h in history[1:]), 1),
            "wall_s": round(time.perf_counter() - start, 1)}


def bench_dataset(dataset: str, images: int, epochs: int, device) -> dict:
    splits = load_splits(dataset, val_size=0)
    small = Splits(splits.info, splits.train.subset(images), splits.val, splits.test.subset(256))
    phase = get_phase(dataset, "final")
    recipe = replace(load_recipe(dataset, FINAL_RECIPES[dataset]), epochs=epochs, val_size=0)
    rows = {}
    for name, r in configurations(recipe).items():
        torch._dynamo.reset()  # each compiled configuration pays its own compilation
        rows[name] = measure(phase, r, small, device)
        print(dataset, name, rows[name], flush=True)
    eager = rows["eager, NCHW"]["images_per_s"]
    return {"phase": phase.name, "recipe": FINAL_RECIPES[dataset], "batch_size": recipe.batch_size,
            "sam_rho": recipe.sam_rho, "configurations": rows,
            "speedup_over_eager_nchw": {k: round(v["images_per_s"] / eager, 2) for k, v in rows.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--images", type=int, default=4096, help="training images per epoch")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per configuration (>= 2: the first compiles)")
    ap.add_argument("--datasets", nargs="+", default=list(FINAL_RECIPES), choices=list(FINAL_RECIPES))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.epochs < 2:
        ap.error(f"--epochs must be at least 2 (the first epoch compiles), got {args.epochs}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    report = {"device": device_description(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "images_per_epoch": args.images, "epochs": args.epochs,
              "datasets": {d: bench_dataset(d, args.images, args.epochs, device) for d in args.datasets}}
    suffix = f"-{args.threads}thread" if args.threads and device.type == "cpu" else ""
    out = Path(args.out) if args.out else RESULTS / f"compile-{device.type}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
