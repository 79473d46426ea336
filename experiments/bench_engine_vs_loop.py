"""The engine against a plain hand-written PyTorch loop, side by side, on each dataset's final.

Contestants, per dataset (MNIST, CIFAR-10), on the first N training images:

* ``engine`` — ``tinycnn.engine.fit`` for one epoch: uint8 images kept whole on the device,
  one ``randperm`` per epoch, each batch an index slice converted to float (`TrainBatches`);
* ``plain_loop`` — what a user would otherwise write: a ``TensorDataset`` of float32 images
  in [0, 1], ``DataLoader(batch_size, shuffle=True, drop_last=True, num_workers=0)``,
  ``torch.optim.SGD`` + ``OneCycleLR`` + ``nn.CrossEntropyLoss(label_smoothing=...)``.

Both train the same network (``tinycnn.build`` of the final phase, same memory format) with
the same recipe: the final's own recipe (MNIST ``sam``, CIFAR-10 ``long_cutout``) minus what
the plain loop does not do — SAM, weight averaging, distillation, clipping and *all*
augmentation are off in both; batch size, SGD nesterov, lr, weight decay with no-bias-decay
groups (`tinycnn.optim.param_groups`), the linear one-cycle per step and label smoothing are
kept. Epoch time excludes validation; each contestant is warmed up once, then timed best of
``--repeats`` one-epoch runs, round-robin (as in bench_train.py). To explain the ratio, the
parts where the two differ are timed alone: the data paths with no model step (the
DataLoader's per-sample ``__getitem__`` + ``default_collate`` against the engine's index
slices), and the engine's extra per-step work on logits alone (one-hot targets, soft-target
cross-entropy, running statistics, against the fused ``nn.CrossEntropyLoss``); the JSON's
``why`` sets the gap they predict against the gap seen. (A uint8 TensorDataset converted per
batch is not a third contestant: the data-path timing already shows what the data path costs.)

    python experiments/bench_engine_vs_loop.py --threads 1

``--images`` (default 4096 MNIST, 2048 CIFAR-10) must be at least 8 batches of the recipe.

Writes experiments/results/engine-vs-loop-cpu.json (``--out`` to override).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tinycnn.augment import BatchAugment
from tinycnn.batches import TrainBatches
from tinycnn.build import build
from tinycnn.data import Splits, load_splits
from tinycnn.device import device_description, resolve_device, set_threads
from tinycnn.engine import EpochStats, fit
from tinycnn.ladders import get_phase, recipe_for
from tinycnn.objective import CrossEntropy
from tinycnn.optim import param_groups
from tinycnn.recipe import Recipe, load_recipe

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_IMAGES = {"mnist": 4096, "cifar10": 2048}
WARMUP_STEPS = 5
MIN_STEPS = 8  # torch's OneCycleLR divides by zero at 4 steps (its peak lands on step 0)
AUGMENT = "none in both contestants (no crop, flip, Cutout or Mixup); label smoothing kept, in the loss"
# What the plain loop does not do, switched off in the engine's recipe too.
LIKE_FOR_LIKE = dict(epochs=1, val_size=0, train_subset=0, sam_rho=0.0, sam_adaptive=False, swa=False,
                     ema_decay=0.0, kd_teacher="", lookahead=False, grad_clip=0.0, amp="none", compile=False,
                     crop_pad=0, flip=False, cutout=0, mixup_alpha=0.0, cutmix_alpha=0.0)
CAVEATS = [
    "the engine also keeps a running loss and accuracy and checks the loss for NaN/inf every step "
    "(a host sync per step on a CPU); the plain loop computes nothing beyond the loss",
    "the engine's loss is soft-target cross-entropy on smoothed one-hot targets (log_softmax + sum); "
    "the plain loop's is nn.CrossEntropyLoss(label_smoothing=...), the same value from fused kernels",
    "the plain loop's images are converted to float32 once, before timing; the engine converts each "
    "uint8 batch to float inside its epoch (but gathers 4x fewer bytes per batch)",
    "the two shuffles draw different permutations (device randperm vs RandomSampler); same work, other order",
]


@dataclass
class Contest:
    """One dataset's contestants: the network, the shared recipe and the data each one reads."""

    dataset: str
    spec: object
    recipe_name: str
    recipe: Recipe
    splits: Splits  # the engine's: the first N training images, uint8, no val split
    x: torch.Tensor  # the plain loop's: the same images as float32 in [0, 1]
    y: torch.Tensor
    device: torch.device

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.recipe.channels_last else torch.contiguous_format


def like_for_like(dataset: str) -> tuple[str, Recipe, dict]:
    """The final's recipe with everything the plain loop lacks switched off, and what changed."""
    name = recipe_for(get_phase(dataset, "final"))
    base = load_recipe(dataset, name)
    if base.optimizer != "sgd" or base.schedule != "onecycle":
        raise SystemExit(f"{dataset}'s {name} recipe uses {base.optimizer}/{base.schedule}; "
                         "the plain loop here is SGD + OneCycleLR only")
    recipe = replace(base, **LIKE_FOR_LIKE)
    old, new = base.to_dict(), recipe.to_dict()
    changed = {k: [old[k], new[k]] for k in new if old[k] != new[k]}
    return name, recipe, changed


def make_contest(dataset: str, images: int, device: torch.device) -> tuple[Contest, dict]:
    name, recipe, changed = like_for_like(dataset)
    if images < MIN_STEPS * recipe.batch_size:
        raise SystemExit(f"--images {images} is under {MIN_STEPS} batches of {recipe.batch_size} for {dataset}")
    full = load_splits(dataset, val_size=0)
    train = full.train.subset(images)
    splits = Splits(full.info, train, full.val, full.test.subset(0))
    x = train.x.float().div_(255)
    return Contest(dataset, get_phase(dataset, "final"), name, recipe, splits, x, train.y, device), changed


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loader(c: Contest, n: int | None = None) -> DataLoader:
    x, y = (c.x, c.y) if n is None else (c.x[:n], c.y[:n])
    return DataLoader(TensorDataset(x, y), batch_size=c.recipe.batch_size, shuffle=True, drop_last=True,
                      num_workers=0, pin_memory=c.device.type == "cuda")


def plain_setup(c: Contest, steps: int):
    """The plain loop's model, optimiser, schedule and loss, as a user would build them."""
    r = c.recipe
    torch.manual_seed(r.seed)
    model = build(c.spec).to(c.device).to(memory_format=c.memory_format)
    opt = torch.optim.SGD(param_groups(model, r.weight_decay, r.no_bias_decay), lr=r.effective_lr,
                          momentum=r.momentum, nesterov=r.nesterov)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=r.effective_lr, total_steps=steps * r.epochs, pct_start=r.onecycle_pct,
        anneal_strategy="linear", div_factor=r.onecycle_div, final_div_factor=r.onecycle_final_div,
        cycle_momentum=False)  # the engine's one-cycle moves the lr only
    return model, opt, sched, nn.CrossEntropyLoss(label_smoothing=r.label_smoothing)


def plain_epoch(c: Contest, n: int | None = None) -> float:
    """One epoch of the standard loop; images/s over the epoch (no validation)."""
    loader = plain_loader(c, n)
    model, opt, sched, loss_fn = plain_setup(c, len(loader))
    model.train()
    t0 = time.perf_counter()
    for x, y in loader:
        x = x.to(c.device, memory_format=c.memory_format, non_blocking=True)
        y = y.to(c.device, non_blocking=True)
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    sync(c.device)
    return len(loader) * loader.batch_size / (time.perf_counter() - t0)


def engine_epoch(c: Contest, n: int | None = None) -> float:
    """One epoch of ``tinycnn.engine.fit``; its own images/s (epoch time, no validation)."""
    s = c.splits
    splits = s if n is None else Splits(s.info, s.train.subset(n), s.val, s.test)
    return fit(c.spec, c.recipe, splits, device=c.device).history[0]["images_per_s"]


def loader_data_path(c: Contest) -> float:
    """The plain loop's data path alone: DataLoader batches moved to the model's device and format."""
    loader = plain_loader(c)
    t0 = time.perf_counter()
    for x, y in loader:
        x = x.to(c.device, memory_format=c.memory_format, non_blocking=True)
        y = y.to(c.device, non_blocking=True)
    sync(c.device)
    return len(loader) * loader.batch_size / (time.perf_counter() - t0)


def engine_data_path(c: Contest) -> float:
    """The engine's data path alone: `TrainBatches` over the split on the device (slice + to float)."""
    batches = TrainBatches(c.splits.train.to(c.device), c.recipe.batch_size, c.recipe.channels_last)
    t0 = time.perf_counter()
    for x, y in batches:
        pass
    sync(c.device)
    return len(batches) * batches.batch_size / (time.perf_counter() - t0)


def round_robin(runs: dict, repeats: int) -> dict[str, list[float]]:
    """Every run once per round, the order reversed every other round, so that a spell of
    contention for a core (or whatever the first run of a round pays) hits all alike."""
    seen = {name: [] for name in runs}
    for r in range(repeats):
        for name in (list(runs) if r % 2 == 0 else list(reversed(runs))):
            seen[name].append(round(runs[name](), 1))
    return seen


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / max(values)


def per_call_s(f, device: torch.device, calls: int = 200, blocks: int = 3) -> float:
    """Best-of-``blocks`` seconds per call of ``f`` (after 10 warm-up calls)."""
    for _ in range(10):
        f()
    best = float("inf")
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(calls):
            f()
        sync(device)
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def step_extras_s(c: Contest) -> float:
    """Seconds per epoch of what the engine's step does beyond the plain loop's, timed on
    logits alone with the engine's own code: one-hot (smoothed) targets, soft-target
    cross-entropy and `EpochStats.update` (running loss/accuracy, NaN guard), less the plain
    loop's fused ``nn.CrossEntropyLoss``. The model's forward/backward is common to both."""
    bs, k, ls = c.recipe.batch_size, c.splits.info.num_classes, c.recipe.label_smoothing
    z = torch.randn(bs, k, device=c.device, requires_grad=True)
    y = torch.randint(0, k, (bs,), device=c.device)
    smooth = BatchAugment(c.recipe.augment_config(), k, c.splits.info.size)  # no ops: smoothing only
    objective, stats, ce = CrossEntropy(), EpochStats(c.device, 0, 0.0), nn.CrossEntropyLoss(label_smoothing=ls)

    def engine() -> None:
        _, targets = smooth(z, y)
        loss, logits = objective(lambda _: z, z, targets)
        loss.backward()
        stats.update(0, 1, loss, logits, targets, 0.1)

    extra = per_call_s(engine, c.device) - per_call_s(lambda: ce(z, y).backward(), c.device)
    return (len(c.y) // bs) * extra


def ms(t: float) -> str:
    return f"{1e3 * t:.1f} ms"


def explain(d: dict) -> str:
    """A one-line why, from the measurements: the gap the measured parts predict, against the gap seen."""
    epoch_s, parts, runs = d["epoch_s"], d["parts_s"], d["runs_images_per_s"]
    gap = epoch_s["plain_loop"] - epoch_s["engine"]  # > 0: the engine is faster
    predicted = parts["dataloader"] - parts["engine_slices"] - parts["engine_step_extras"]
    noise = max(spread(v) for v in runs.values())
    verdict = f"engine {d['engine_over_plain']:.2f}x the plain loop " + (
        f"(best of {len(runs['engine'])}, runs spread up to {noise:.0%})" if len(runs["engine"]) > 1 else "(one run each)")
    data = (f"data path: the DataLoader's per-sample __getitem__ + default_collate takes {ms(parts['dataloader'])} "
            f"an epoch ({parts['dataloader'] / epoch_s['plain_loop']:.1%} of the plain loop's epoch, "
            f"{d['data_path_us_per_image']['dataloader']:.1f} us/image) against {ms(parts['engine_slices'])} for "
            f"the engine's index slices on the device")
    step = (f"the engine's extra per-step work (one-hot targets, soft-target CE, running stats + NaN guard) "
            f"costs {ms(parts['engine_step_extras'])} an epoch")
    rest = (f"together they predict the engine {ms(abs(predicted))} {'faster' if predicted >= 0 else 'slower'} "
            f"({abs(predicted) / epoch_s['plain_loop']:.1%} of an epoch); seen: {ms(abs(gap))} "
            f"{'faster' if gap >= 0 else 'slower'}; the forward/backward, the rest of the epoch, is the same in both")
    unexplained = "" if abs(gap - predicted) <= abs(predicted) else (
        f". The other {ms(abs(gap - predicted))} is in no part timed here: noise in the shared forward/backward")
    return f"{verdict}. {data}; {step}; {rest}{unexplained}"


def seconds(images: int, batch_size: int, images_per_s: float) -> float:
    return (images // batch_size) * batch_size / images_per_s


def bench_dataset(dataset: str, images: int, device: torch.device, repeats: int) -> dict:
    c, changed = make_contest(dataset, images, device)
    bs, used = c.recipe.batch_size, (images // c.recipe.batch_size) * c.recipe.batch_size
    engine_epoch(c, WARMUP_STEPS * bs)  # warm-up: first-call costs (allocator, kernel choice) off the clock
    plain_epoch(c, WARMUP_STEPS * bs)
    runs = round_robin({"engine": lambda: engine_epoch(c), "plain_loop": lambda: plain_epoch(c)}, repeats)
    data = round_robin({"engine_slices": lambda: engine_data_path(c), "dataloader": lambda: loader_data_path(c)},
                       repeats)
    ips = {k: max(v) for k, v in runs.items()}
    parts = {k: seconds(images, bs, max(v)) for k, v in data.items()}
    parts["engine_step_extras"] = step_extras_s(c)
    d = {"recipe": c.recipe_name, "recipe_changes": changed, "recipe_used": c.recipe.to_dict(),
         "phase": c.spec.name, "arch": c.spec.arch, "images": used, "batch_size": bs,
         "steps_per_epoch": images // bs, "channels_last": c.recipe.channels_last,
         "images_per_s": ips, "engine_over_plain": round(ips["engine"] / ips["plain_loop"], 3),
         "epoch_s": {k: round(seconds(images, bs, v), 4) for k, v in ips.items()},
         "parts_s": {k: round(v, 5) for k, v in parts.items()},
         "data_path_us_per_image": {k: round(1e6 * parts[k] / used, 2) for k in data},
         "runs_images_per_s": runs, "runs_data_path_images_per_s": data}
    d["why"] = explain(d)
    return d


def print_table(datasets: dict) -> None:
    head = f"{'dataset':<8} {'engine img/s':>12} {'plain img/s':>12} {'ratio':>6} {'loader ms':>10} {'slices ms':>10}"
    print(head, "-" * len(head), sep="\n")
    for name, d in datasets.items():
        ips, data = d["images_per_s"], d["parts_s"]
        print(f"{name:<8} {ips['engine']:>12.1f} {ips['plain_loop']:>12.1f} {d['engine_over_plain']:>6.2f} "
              f"{1e3 * data['dataloader']:>10.1f} {1e3 * data['engine_slices']:>10.1f}")
    for name, d in datasets.items():
        print(f"{name}: {d['why']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--images", type=int, default=None,
                    help=f"training images per measured epoch (default {DEFAULT_IMAGES})")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs per contestant")
    ap.add_argument("--datasets", nargs="+", default=list(DEFAULT_IMAGES), choices=list(DEFAULT_IMAGES))
    ap.add_argument("--out", default=str(RESULTS / "engine-vs-loop-cpu.json"))
    args = ap.parse_args()
    threads = set_threads(args.threads)
    device = resolve_device(args.device)
    report = {"device": device_description(device), "torch": torch.__version__, "threads": threads,
              "best_of": args.repeats, "warmup_steps": WARMUP_STEPS, "augmentation": AUGMENT,
              "switched_off_in_both": sorted(k for k in LIKE_FOR_LIKE if k not in ("epochs", "val_size", "train_subset")),
              "caveats": CAVEATS, "datasets": {}}
    for dataset in args.datasets:
        images = args.images or DEFAULT_IMAGES[dataset]
        report["datasets"][dataset] = bench_dataset(dataset, images, device, args.repeats)
        print(dataset, report["datasets"][dataset]["images_per_s"], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print_table(report["datasets"])
    print("wrote", out)


if __name__ == "__main__":
    main()
