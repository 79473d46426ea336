"""Training throughput on this device: per phase, per augmentation backend, SAM on/off,
NCHW vs channels_last, batch size, bf16 autocast.

Every number comes from tinycnn's real training loop (`tinycnn.engine.fit`, one short
epoch on a slice of the real data), so what is measured is what a run gets. Results go
to experiments/results/bench-<device>.json.

    python experiments/bench_train.py [--device cpu] [--threads 2] [--images 4096] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from tinycnn import ladder
from tinycnn.augment import AugmentConfig, BatchAugment
from tinycnn.budget import fit_width
from tinycnn.data import Splits, load_splits
from tinycnn.datasets import dataset_info
from tinycnn.recipe import load_recipe
from tinycnn.device import device_description, resolve_device
from tinycnn.engine import fit

RESULTS = Path(__file__).resolve().parent / "results"


def best_images_per_s(runs: dict, splits: Splits, device, repeats: int) -> dict[str, float]:
    """Best of ``repeats`` one-epoch runs per configuration (name -> (phase, recipe)).

    Noise on a shared machine only ever slows a run down, so the fastest run is the truest
    estimate of the loop itself; and the runs go round-robin, every configuration once per
    round, so a spell of contention for a core slows them all alike rather than one block
    of them (run back to back, one configuration measured 2,807 and 1,733 img/s).
    """
    best = dict.fromkeys(runs, 0.0)
    for _ in range(repeats):
        for name, (phase, recipe) in runs.items():
            result = fit(phase, recipe, splits, device=device)
            best[name] = max(best[name], result.history[0]["images_per_s"])
    return {name: round(v, 1) for name, v in best.items()}


def augment_images_per_s(cfg: AugmentConfig, x: torch.Tensor, y: torch.Tensor, repeats: int = 20) -> float:
    aug = BatchAugment(cfg, 10, x.shape[-1])
    aug(x, y)  # warm-up (kornia builds its parameter generators lazily)
    t = time.perf_counter()
    for _ in range(repeats):
        aug(x, y)
    return round(repeats * len(x) / (time.perf_counter() - t), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--images", type=int, default=4096, help="training images per measured epoch")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs per configuration")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    report = {"device": device_description(device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "images_per_epoch": args.images, "best_of": args.repeats,
              "phases": {}, "augment": {}, "final_train": {}}
    for dataset in ("mnist", "cifar10"):
        splits = load_splits(dataset, val_size=0)
        small = Splits(splits.info, splits.train.subset(args.images), splits.val, splits.test.subset(256))
        base = replace(load_recipe(dataset, "default"), epochs=1, val_size=0)
        final = ladder(dataset)[-1]
        # Every phase is timed with the default recipe, so a phase that changes only the recipe
        # (MNIST's `sam`, CIFAR-10's `long`) is its network's measurement again: time each
        # network once, under the first phase that has it, and give that row to both.
        first_with = {}
        for phase in ladder(dataset):
            first_with.setdefault(phase.arch, phase)
        networks = {phase.name: (phase, base) for phase in first_with.values()}
        # Beside the ladder: the final re-fitted to the budget with widths in multiples of 8,
        # which CPU kernels vectorise over in channels_last (for MNIST: round 7's `w8` in experiments/LOG.md).
        w8 = fit_width(final, dataset_info(dataset).budget, multiple=8).spec
        if w8.arch != final.arch:
            networks["w8"] = (w8, base)
        timed = best_images_per_s(networks, small, device, args.repeats)
        report["phases"][dataset] = {phase.name: timed[first_with[phase.arch].name] for phase in ladder(dataset)}
        if "w8" in timed:
            report["phases"][dataset]["w8"] = timed["w8"]
        print(dataset, "phases", report["phases"][dataset], flush=True)

        x = small.train.x[:128].to(device).float() / 255
        y = small.train.y[:128].to(device)
        full = AugmentConfig(crop_pad=base.crop_pad or 2, flip=dataset == "cifar10", cutout=8, mixup_alpha=0.2)
        report["augment"][dataset] = {
            name: {backend: augment_images_per_s(replace(cfg, backend=backend), x, y) for backend in ("tensor", "kornia")}
            for name, cfg in (("crop", AugmentConfig(crop_pad=full.crop_pad)),
                              ("cutout", AugmentConfig(cutout=8)),
                              ("mixup", AugmentConfig(mixup_alpha=0.2)),
                              ("crop+flip+cutout+mixup", full))
        }
        print(dataset, "augment", report["augment"][dataset], flush=True)

        variants = {
            "tensor aug": replace(base, crop_pad=full.crop_pad, flip=full.flip, cutout=8, mixup_alpha=0.2),
            "kornia aug": replace(base, crop_pad=full.crop_pad, flip=full.flip, cutout=8, mixup_alpha=0.2,
                                  aug_backend="kornia"),
            "no SAM": base,
            "SAM rho=0.05": replace(base, sam_rho=0.05),
            "NCHW": replace(base, channels_last=False),
            "channels_last": replace(base, channels_last=True),
            # levers for time to accuracy: bigger batches amortise per-op cost (fewer steps,
            # though), bf16 autocast only pays where the CPU's bf16 kernels beat fp32 ones
            "batch 64": replace(base, batch_size=64),
            "batch 128": replace(base, batch_size=128),
            "batch 256": replace(base, batch_size=256),
            "bf16 autocast": replace(base, amp="bf16"),
        }
        report["final_train"][dataset] = best_images_per_s(
            {k: (final, r) for k, r in variants.items()}, small, device, args.repeats)
        print(dataset, "final", report["final_train"][dataset], flush=True)

    out = Path(args.out) if args.out else RESULTS / f"bench-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print("wrote", out)


if __name__ == "__main__":
    main()
