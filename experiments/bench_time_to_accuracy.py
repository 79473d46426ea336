"""Time to accuracy (issue #19): training seconds until the validation split first reaches a
target, side by side with what a user would otherwise run, in one invocation.

What a user of a tiny-net tool waits for is the time until the net is good enough, so each
contestant trains the dataset's final network for its full schedule, validates after every
epoch (not timed), and reports, per target (MNIST 99.0% / 99.2%, CIFAR-10 86% / 90% on the
validation split), the first epoch that reaches it and the training seconds until then, and
the test accuracy of its final weights (read once, at the end). Contestants:

* ``tinycnn`` — ``tinycnn.engine.fit`` with the final's own recipe (MNIST ``sam``, CIFAR-10
  ``long_cutout``): what ``tinycnn train DATASET --phase final`` runs;
* ``tinycnn_fast`` — the same network with the ``fast`` recipe (issue #19 item 2's options:
  short one-cycle at a higher peak lr, EMA weights; see the recipe files);
* ``plain_loop`` — a hand-written PyTorch loop a user would write for the same network and
  recipe: a ``Dataset`` with per-sample ``torchvision.transforms.v2`` crop (and flip), a
  ``DataLoader(shuffle=True)``, SGD + ``OneCycleLR`` + ``CrossEntropyLoss(label_smoothing)``;
  no SAM, no weight averaging, no Cutout/Mixup (what such a loop does not have);
* ``composer`` — MosaicML Composer's ``Trainer`` (the reference paper's engine) on the same
  network, data and recipe (its own SAM and label smoothing algorithms), run in its own
  virtual environment by ``experiments/peers/composer_peer.py``; skipped with a note where
  that environment is missing (``--composer-python``; set-up in that file's docstring).

**Each option of the `fast` recipe, measured** (issue #19 item 2): ``--only fast_variants`` runs
`fast` with one option taken out or one added at a time (`FAST_VARIANTS`: no EMA, no dirac
stem, the default peak lr, label smoothing, Lookahead, patch whitening, a longer schedule; on
CIFAR-10 also the alternating flip and flip test-time augmentation), each recorded as a
contestant ``fast:<name>`` with its changes against `fast`, so the table shows what each buys.

The machine is shared and noisy, so the JSON keeps ratios to ``tinycnn`` beside the absolute
seconds, and the load average around each contestant. Contestants run one after another;
``--only`` runs some of them and merges them into the existing results file.

    python experiments/bench_time_to_accuracy.py --dataset mnist --threads 1

Writes experiments/results/time-to-accuracy-cpu.json (``--out`` to override).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine_vs_loop import Contest, plain_setup, sync  # noqa: E402

from tinycnn.data import Splits, load_splits  # noqa: E402
from tinycnn.device import device_description, resolve_device, set_threads  # noqa: E402
from tinycnn.engine import fit  # noqa: E402
from tinycnn.evaluate import accuracy  # noqa: E402
from tinycnn.ladders import final_phase, recipe_for  # noqa: E402
from tinycnn.recipe import Recipe, load_recipe  # noqa: E402
from tinycnn.results import first_reach, write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# The targets, and below them the bar the short `fast` schedules can reach (MNIST 98.5%),
# so that its options can be told apart by time, not only by final accuracy.
TARGETS = {"mnist": (0.985, 0.990, 0.992), "cifar10": (0.86, 0.90)}
CONTESTANTS = ("tinycnn", "tinycnn_fast", "plain_loop", "composer")
# `fast` with one option out or in: name -> (recipe overrides, label). Picked once, not tuned.
FAST_VARIANTS = {
    "mnist": {
        "no_ema": ({"ema_decay": 0.0, "ema_warmup": False}, "`fast` without EMA (last weights)"),
        "no_dirac": ({"dirac_init": False}, "`fast` without the dirac stem"),
        "lr0.1": ({"lr": 0.1}, "`fast` at the default peak lr 0.1"),
        "smooth0.1": ({"label_smoothing": 0.1}, "`fast` + label smoothing 0.1"),
        "lookahead": ({"lookahead": True}, "`fast` + Lookahead (k 5, α 0.5)"),
        "whiten": ({"whiten_init": True, "dirac_init": False}, "`fast`, stem = frozen patch whitening"),
        "12ep": ({"epochs": 12}, "`fast` over 12 epochs"),
    },
    "cifar10": {
        "alternate": ({"flip_mode": "alternate"}, "`fast` + alternating flip"),
        "whiten": ({"whiten_init": True}, "`fast`, stem = frozen patch whitening"),
        "ema": ({"ema_decay": 0.99, "ema_warmup": True}, "`fast` + EMA of the weights"),
    },
}
# What a hand-written loop does not do; off in the plain loop's recipe (and recorded).
PLAIN_OFF = dict(sam_rho=0.0, sam_adaptive=False, swa=False, ema_decay=0.0, lookahead=False, kd_teacher="",
                 cutout=0, mixup_alpha=0.0, cutmix_alpha=0.0, grad_clip=0.0)


# --- what every contestant returns ----------------------------------------------------------

def outcome(history: list[dict], test_acc: float, dataset: str, **extra) -> dict:
    """A contestant's record: per-epoch (seconds, val), time to each target, final test."""
    reach = {f"{t:.3f}": first_reach(history, t) for t in TARGETS[dataset]}
    last = history[-1]
    return {"epochs": last["epoch"], "train_time_s": round(last["train_time_s"], 1),
            "final_val_acc": last["val_acc"], "test_acc": test_acc, "time_to": reach,
            "history": [{k: rec[k] for k in ("epoch", "train_time_s", "val_acc")} for rec in history], **extra}


def epoch_record(epoch: int, train_time_s: float, val_acc: float) -> dict:
    return {"epoch": epoch, "train_time_s": round(train_time_s, 2), "val_acc": val_acc}


def recipe_changes(base: Recipe, used: Recipe) -> dict:
    old, new = base.to_dict(), used.to_dict()
    return {k: [old[k], new[k]] for k in new if old[k] != new[k]}


# --- tinycnn --------------------------------------------------------------------------------

def run_engine(dataset: str, recipe_name: str, splits: Splits, device: torch.device, seed: int,
               short: dict, changes: dict | None = None) -> dict:
    """``tinycnn.engine.fit``: its history already holds training seconds and val per epoch.
    ``changes``: a `FAST_VARIANTS` entry's overrides, recorded against the named recipe."""
    spec = final_phase(dataset)
    base = load_recipe(dataset, recipe_name)
    recipe = replace(base, seed=seed, **{**(changes or {}), **short})
    result = fit(spec, recipe, splits, device=device)
    test = accuracy(result.model, splits.test, recipe.eval_batch_size, recipe.channels_last)
    extra = {"recipe_changes": recipe_changes(replace(base, seed=seed, **short), recipe)} if changes else {}
    return outcome(result.history, test, dataset, recipe=recipe_name, final_weights=_weights(recipe),
                   final_weights_val_acc=result.val_accuracy, **extra)


def _weights(recipe: Recipe) -> str:
    return "swa" if recipe.swa else "ema" if recipe.ema_decay else "last"


# --- the plain loop -------------------------------------------------------------------------

class AugmentedImages(Dataset):
    """Float images with per-sample torchvision transforms: the usual user-side data path."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, crop_pad: int, flip: bool) -> None:
        from torchvision.transforms import v2
        ops = [v2.RandomCrop(x.shape[-1], padding=crop_pad, padding_mode="reflect")] if crop_pad else []
        ops += [v2.RandomHorizontalFlip()] if flip else []
        self.x, self.y, self.transform = x, y, v2.Compose(ops) if ops else None

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        img = self.x[i]
        return (self.transform(img) if self.transform else img), self.y[i]


def plain_recipe(dataset: str, seed: int, short: dict) -> tuple[str, Recipe, dict]:
    name = recipe_for(final_phase(dataset))
    base = load_recipe(dataset, name)
    used = replace(base, seed=seed, **PLAIN_OFF, **short)
    return name, used, recipe_changes(base, used)


def run_plain(dataset: str, splits: Splits, device: torch.device, seed: int, short: dict) -> dict:
    """The hand-written loop, a full schedule, validated after every epoch (off the clock)."""
    name, recipe, changed = plain_recipe(dataset, seed, short)
    train = splits.train.subset(recipe.train_subset) if recipe.train_subset else splits.train
    data = AugmentedImages(train.x.float().div_(255), train.y, recipe.crop_pad, recipe.flip)
    loader = DataLoader(data, batch_size=recipe.batch_size, shuffle=True, drop_last=True, num_workers=0)
    c = Contest(dataset, final_phase(dataset), name, recipe, splits, data.x, data.y, device)
    model, opt, sched, loss_fn = plain_setup(c, len(loader))
    history, trained = [], 0.0
    for epoch in range(1, recipe.epochs + 1):
        trained += plain_epoch(model, loader, opt, sched, loss_fn, c)
        history.append(epoch_record(epoch, trained, accuracy(model, splits.val, 2000, recipe.channels_last)))
    test = accuracy(model, splits.test, 2000, recipe.channels_last)
    return outcome(history, test, dataset, recipe=name, recipe_changes=changed, final_weights="last")


def plain_epoch(model: nn.Module, loader: DataLoader, opt, sched, loss_fn, c: Contest) -> float:
    model.train()
    t0 = time.perf_counter()
    for x, y in loader:
        x = x.to(c.device, memory_format=c.memory_format, non_blocking=True)
        loss = loss_fn(model(x), y.to(c.device, non_blocking=True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    sync(c.device)
    return time.perf_counter() - t0


# --- the Composer peer ----------------------------------------------------------------------

def run_composer(dataset: str, python: Path, threads: int, seed: int, short: dict) -> dict:
    """Composer in its own environment (its torch differs from ours); its script prints JSON."""
    if not python.exists():
        return {"skipped": f"no Composer environment at {python}; see experiments/peers/composer_peer.py"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "composer.json"
        cmd = [str(python), str(HERE / "peers" / "composer_peer.py"), dataset, "--threads", str(threads),
               "--seed", str(seed), "--out", str(out)]
        cmd += [a for k, v in short.items() for a in (f"--{k.replace('_', '-')}", str(v))]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
        if proc.returncode != 0:
            return {"skipped": f"the Composer peer failed (exit {proc.returncode}): {proc.stderr.strip()[-600:]}"}
        d = json.loads(out.read_text())
    history = d.pop("history")
    return outcome(history, d.pop("test_acc"), dataset, **d)


# --- the benchmark --------------------------------------------------------------------------

def run_contestant(name: str, dataset: str, splits: Splits, device, args) -> dict:
    load_before, t0, short = os.getloadavg()[0], time.time(), shortened(args)
    if name == "tinycnn":
        d = run_engine(dataset, recipe_for(final_phase(dataset)), splits, device, args.seed, short)
    elif name == "tinycnn_fast":
        d = run_engine(dataset, "fast", splits, device, args.seed, short)
    elif name.startswith("fast:"):
        changes, label = FAST_VARIANTS[dataset][name.removeprefix("fast:")]
        d = run_engine(dataset, "fast", splits, device, args.seed, short, changes)
        d["label"] = label
    elif name == "plain_loop":
        d = run_plain(dataset, splits, device, args.seed, short)
    else:
        d = run_composer(dataset, Path(args.composer_python), args.threads, args.seed, short)
    d.update(load_before=round(load_before, 2), load_after=round(os.getloadavg()[0], 2),
             wall_s=round(time.time() - t0, 1), measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return d


def shortened(args) -> dict:
    """Smoke-test overrides (``--epochs``, ``--train-subset``) for every contestant; none by default."""
    return {k: v for k, v in (("epochs", args.epochs), ("train_subset", args.train_subset)) if v}


def ratios(contestants: dict) -> dict:
    """Each contestant's seconds to each target over tinycnn's (below 1: faster than tinycnn)."""
    ref = contestants.get("tinycnn", {}).get("time_to", {})
    out = {}
    for name, d in contestants.items():
        for target, hit in d.get("time_to", {}).items():
            base = ref.get(target)
            if hit and base:
                out.setdefault(name, {})[target] = round(hit["train_time_s"] / base["train_time_s"], 3)
    return out


def bench_dataset(dataset: str, device, args, report: dict, out: Path) -> None:
    """Each contestant in turn, the results file rewritten after each (a killed bench keeps them)."""
    recipe = load_recipe(dataset, recipe_for(final_phase(dataset)))
    splits = load_splits(dataset, recipe.val_size, split_seed=recipe.split_seed)
    contestants = dict(report["datasets"].get(dataset, {}).get("contestants", {}))
    for name in contestant_names(dataset, args.only):
        print(f"{dataset}: {name} ...", flush=True)
        contestants[name] = run_contestant(name, dataset, splits, device, args)
        print(f"{dataset}: {name}: {summary_line(contestants[name])}", flush=True)
        spec = final_phase(dataset)
        retarget(contestants, dataset)
        report["datasets"][dataset] = {
            "phase": spec.name, "arch": spec.arch, "targets": list(TARGETS[dataset]),
            "val_split": {"val_size": recipe.val_size, "split_seed": recipe.split_seed},
            "contestants": contestants, "seconds_over_tinycnn": ratios(contestants)}
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, report)


def contestant_names(dataset: str, only: list[str]) -> list[str]:
    """``--only`` with ``fast_variants`` expanded into this dataset's ``fast:<name>`` contestants."""
    names = []
    for name in only:
        names += [f"fast:{v}" for v in FAST_VARIANTS[dataset]] if name == "fast_variants" else [name]
    return names


def retarget(contestants: dict, dataset: str) -> None:
    """Time to each of today's targets, recomputed from every stored history (a target added
    later applies to contestants measured before it)."""
    for d in contestants.values():
        if "history" in d:
            d["time_to"] = {f"{t:.3f}": first_reach(d["history"], t) for t in TARGETS[dataset]}


def summary_line(d: dict) -> str:
    if "skipped" in d:
        return "skipped: " + d["skipped"]
    hits = ", ".join(f"{t}: " + (f"epoch {h['epoch']} at {h['train_time_s']:.0f} s" if h else "not reached")
                     for t, h in d["time_to"].items())
    return f"{hits}; {d['epochs']} epochs {d['train_time_s']:.0f} s, test {d['test_acc']:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=list(TARGETS), required=True)
    ap.add_argument("--only", nargs="+", default=list(CONTESTANTS), choices=[*CONTESTANTS, "fast_variants"],
                    help="contestants to run (default: the four peers); fast_variants: each option of `fast`")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--composer-python", default=str(HERE.parent / ".venv-composer" / "bin" / "python"))
    ap.add_argument("--epochs", type=int, default=0, help="smoke test: this many epochs (default: each recipe's)")
    ap.add_argument("--train-subset", type=int, default=0, help="smoke test: the first N training images")
    ap.add_argument("--out", default=str(RESULTS / "time-to-accuracy-cpu.json"))
    args = ap.parse_args()
    threads, device = set_threads(args.threads), resolve_device(args.device)
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {"datasets": {}}
    report.update(device=device_description(device), torch=torch.__version__, threads=threads, seed=args.seed)
    bench_dataset(args.dataset, device, args, report, out)
    print("wrote", out)


if __name__ == "__main__":
    main()
