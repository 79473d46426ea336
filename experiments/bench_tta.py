"""What flip test-time augmentation buys the committed CIFAR-10 final (issue #19, item 2).

TTA changes no training: it averages each image's logits with its mirror's, at twice the
inference cost. So it is measured on the finished runs themselves, on their own validation
split (the test set is read once per run, at its end, and not again here): accuracy and
evaluation time with and without it, per seed. Results go to experiments/results/tta-<device>.json.

    python experiments/bench_tta.py [--threads 1] [--runs experiments/results/cifar10/long/seed*]
"""
from __future__ import annotations

import argparse
import json
import time
from functools import lru_cache
from pathlib import Path

import torch

from tinycnn.data import load_splits
from tinycnn.device import device_description, resolve_device
from tinycnn.evaluate import evaluate
from tinycnn.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


@lru_cache(maxsize=None)
def _val_of(val_size: int, split_seed: int):
    """One load of the dataset per split: the three seeds of a final share theirs."""
    return load_splits("cifar10", val_size=val_size, split_seed=split_seed).val


def val_split(run: Path):
    """The run's own validation split, drawn as its recipe drew it."""
    recipe = json.loads((run / "metrics.json").read_text())["recipe"]
    return _val_of(recipe["val_size"], recipe["split_seed"])


def timed_accuracy(model, split, tta: bool) -> tuple[float, float]:
    start = time.perf_counter()
    acc = evaluate(model, split, 10, tta=tta)["accuracy"]
    return acc, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", nargs="+", type=Path,
                    default=sorted((RESULTS / "cifar10" / "long").glob("seed*")))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows = {}
    for run in args.runs:
        model, split = load_model(run / "model.pt").to(device).eval(), val_split(run)
        (plain, t_plain), (tta, t_tta) = timed_accuracy(model, split, False), timed_accuracy(model, split, True)
        key = run.resolve().relative_to(ROOT).as_posix()
        rows[key] = {"val_images": len(split), "val_acc": plain, "val_acc_tta": tta,
                     "gain_points": round(100 * (tta - plain), 2), "eval_s": round(t_plain, 2), "eval_s_tta": round(t_tta, 2)}
        print(key, rows[key], flush=True)
    report = {"device": device_description(device), "torch": torch.__version__, "runs": rows,
              "mean_gain_points": round(sum(r["gain_points"] for r in rows.values()) / len(rows), 2)}
    out = RESULTS / f"tta-{device.type}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
