"""Many runs at once on one device (issue #19): N copies of the MNIST final trained as one
stacked model (`tinycnn.model_array`), against the same N runs trained one after another.

What it measures, per N in ``--copies``: aggregate training images/s (all copies together)
over ``--steps`` steps after a few warm-up steps, for

* ``array`` — one `ModelArray` of N copies (seeds 0..N-1, lrs spread over 0.5x-2x the
  recipe's, as in an lr sweep): one vmapped forward/backward and one fused SGD update for
  all copies per step, each copy on its own batch gathered from uint8 images on the device;
* ``separate`` — the same N runs one after another, each with the engine's own parts
  (`TrainBatches`, `BatchAugment`, `stepper.Stepper`, the engine's SGD): N x ``--steps``
  steps. One after another, the aggregate rate is one run's rate whatever N is; it is
  measured for every N anyway, so the comparison is on the same clock.

Both use the MNIST final's network and the MNIST ``default`` recipe (batch 64, SGD with
Nesterov momentum, weight decay without bias decay, crop 1 px): the final phase's own recipe,
``sam``, adds SAM, which the array does not implement. The images are random uint8 tensors of
MNIST's shape (``--images`` of them): the speed of a step does not depend on their values.
The separate runs use the recipe's channels_last layout; the array ignores it (layout only).

The GPU is the target: one 1.5K-parameter run cannot fill one (its kernels are launch-bound),
N copies in one array can. On a CPU it runs, but the array is expected to be slower than the
separate runs (nothing there is launch-bound, and vmap turns each conv into a grouped conv).

    python experiments/bench_many_runs.py --copies 1 8 32 64 --steps 50

Writes experiments/results/many-runs-<device>.json (``cpu``, or the GPU's name, e.g.
``nvidia-h200``); ``--out`` to write elsewhere. ``--threads`` sets torch's CPU threads.
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from tinycnn.augment import BatchAugment
from tinycnn.batches import TrainBatches
from tinycnn.build import build
from tinycnn.data import Split
from tinycnn.device import device_description, resolve_device, set_threads
from tinycnn.ladders import final_phase
from tinycnn.model_array import ArrayAugment, ArrayBatches, ArraySGD, ModelArray, check_recipe, train_step
from tinycnn.objective import CrossEntropy
from tinycnn.optim import make_optimizer
from tinycnn.recipe import load_recipe
from tinycnn.stepper import make_stepper

RESULTS = Path(__file__).resolve().parent / "results"
WARMUP_STEPS = 3


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_split(n: int, device: torch.device) -> Split:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    return Split(x, torch.randint(0, 10, (n,), generator=g)).to(device)


def endless(batches):
    """Batches of epoch after epoch, for a fixed number of steps."""
    while True:
        yield from batches.indexed()


def timed_steps(step, batches, steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` calls of ``step(x, y)`` after WARMUP_STEPS untimed ones."""
    source = endless(batches)
    for _ in range(WARMUP_STEPS):
        step(*next(source)[:2])
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(*next(source)[:2])
    sync(device)
    return time.perf_counter() - t0


def array_rate(n: int, recipe, train: Split, steps: int, device: torch.device) -> float:
    """Aggregate images/s of N copies trained as one array."""
    seeds = list(range(n))
    array = ModelArray.from_seeds(final_phase("mnist"), seeds, device, recipe, train.x).train()
    sgd = ArraySGD(array, recipe.momentum, recipe.nesterov, torch.full((n,), recipe.weight_decay, device=device),
                   recipe.no_bias_decay)
    lr = recipe.effective_lr * torch.logspace(-1, 1, n, base=2.0, device=device)  # 0.5x .. 2x
    augment = ArrayAugment(recipe.augment_config(), 10, 28)
    seconds = timed_steps(lambda x, y: train_step(array, sgd, *augment(x, y), lr),
                          ArrayBatches(train, recipe.batch_size, seeds), steps, device)
    return n * steps * recipe.batch_size / seconds


def separate_rate(n: int, recipe, train: Split, steps: int, device: torch.device) -> float:
    """Aggregate images/s of N single runs trained one after another with the engine's parts."""
    seconds = 0.0
    layout = torch.channels_last if recipe.channels_last else torch.contiguous_format
    for seed in range(n):
        torch.manual_seed(seed)
        model = build(final_phase("mnist")).to(device).to(memory_format=layout).train()
        stepper = make_stepper(model, model, make_optimizer(model, recipe.optimizer_config()),
                               recipe.step_config(), device)
        augment, objective = BatchAugment(recipe.augment_config(), 10, 28), CrossEntropy()
        seconds += timed_steps(lambda x, y: stepper.step(objective, *augment(x, y)),
                               TrainBatches(train, recipe.batch_size, recipe.channels_last), steps, device)
    return n * steps * recipe.batch_size / seconds


def device_slug(device: torch.device) -> str:
    return "cpu" if device.type == "cpu" else re.sub(r"[^a-z0-9]+", "-", device_description(device).lower()).strip("-")


def measure(recipe, copies: list[int], steps: int, images: int, device: torch.device) -> list[dict]:
    train = random_split(images, device)
    rows = []
    for n in copies:
        array, separate = array_rate(n, recipe, train, steps, device), separate_rate(n, recipe, train, steps, device)
        row = {"copies": n, "array_images_per_s": round(array, 1), "separate_images_per_s": round(separate, 1),
               "array_over_separate": round(array / separate, 3)}
        if device.type == "cuda":
            row["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            torch.cuda.reset_peak_memory_stats(device)
        print(json.dumps(row))
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--steps", type=int, default=50, help="timed steps per run (after warm-up)")
    parser.add_argument("--images", type=int, default=4096, help="random MNIST-shaped training images")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    threads, device = set_threads(args.threads), resolve_device(args.device)
    recipe = load_recipe("mnist", "default")
    check_recipe(recipe)
    rows = measure(recipe, args.copies, args.steps, args.images, device)
    out = args.out or RESULTS / f"many-runs-{device_slug(device)}.json"
    result = {"device": device_description(device), "torch": torch.__version__, "threads": threads,
              "network": final_phase("mnist").arch, "recipe": "mnist default", "batch_size_per_copy": recipe.batch_size,
              "timed_steps": args.steps, "warmup_steps": WARMUP_STEPS, "images": args.images, "results": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
