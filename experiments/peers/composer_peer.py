"""The Composer peer of bench_time_to_accuracy.py: the dataset's final network trained by
MosaicML Composer's ``Trainer`` (the reference paper's engine), same data, split and recipe.

Runs in its own virtual environment, because Composer 0.32.1 needs torch < 2.7.1 and ours
is newer; it imports tinycnn from the source tree (PYTHONPATH) for the network, the splits
and the accuracy, never for training. Set-up (about 4 GB: PyPI's torch 2.7 wheel pulls CUDA
libraries even for a CPU run):

    python3 -m venv .venv-composer
    .venv-composer/bin/pip install mosaicml==0.32.1 torchvision==0.22.0 "kornia>=0.7.3,<0.10" "rich>=13,<16"

The recipe is the final's, spelled in Composer's terms: SGD (nesterov, no-bias-decay groups)
with torch's ``OneCycleLR`` stepped every batch, Composer's ``LabelSmoothing`` and ``SAM``
algorithms where the recipe has them (Composer's SAM is textbook SAM: the update uses the
perturbed gradient; our MNIST final's ``sam_gradient = "sum"`` adds the clean one), its
``ChannelsLast`` algorithm for channels_last, the same per-sample crop/flip data path as the
plain loop. Cutout, Mixup, EMA and SWA are left out (the CIFAR-10 final's Cutout is not
Composer's CutOut semantics). Each epoch is timed from Composer's EPOCH_START to EPOCH_END;
validation runs after that, off the clock. Writes one JSON file (``--out``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from composer import Trainer
from composer.algorithms import SAM, ChannelsLast, LabelSmoothing
from composer.core import Callback
from composer.models import ComposerClassifier
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_time_to_accuracy import PLAIN_OFF, AugmentedImages, epoch_record, recipe_changes  # noqa: E402

from tinycnn.build import build  # noqa: E402
from tinycnn.data import load_splits  # noqa: E402
from tinycnn.evaluate import accuracy  # noqa: E402
from tinycnn.ladders import final_phase, recipe_for  # noqa: E402
from tinycnn.optim import param_groups  # noqa: E402
from tinycnn.recipe import load_recipe  # noqa: E402

# What Composer is not asked to do here (as for the plain loop), except SAM, which it has.
NOT_IN_PEER = {k: v for k, v in PLAIN_OFF.items() if k not in ("sam_rho",)}


class EpochClock(Callback):
    """Training seconds per epoch (EPOCH_START to EPOCH_END) and val after each, off the clock."""

    def __init__(self, val, channels_last: bool) -> None:
        self.val, self.channels_last = val, channels_last
        self.history, self.trained, self.t0 = [], 0.0, 0.0

    def epoch_start(self, state, logger) -> None:
        self.t0 = time.perf_counter()

    def epoch_end(self, state, logger) -> None:
        self.trained += time.perf_counter() - self.t0
        val = accuracy(state.model.module, self.val, 2000, self.channels_last)
        self.history.append(epoch_record(len(self.history) + 1, self.trained, val))


def algorithms(recipe) -> list:
    algs = [LabelSmoothing(recipe.label_smoothing)] if recipe.label_smoothing else []
    algs += [SAM(rho=recipe.sam_rho)] if recipe.sam_rho else []
    return algs + ([ChannelsLast()] if recipe.channels_last else [])


def train(dataset: str, seed: int, short: dict) -> dict:
    spec, name = final_phase(dataset), recipe_for(final_phase(dataset))
    base = load_recipe(dataset, name)
    recipe = replace(base, seed=seed, **NOT_IN_PEER, **short)
    splits = load_splits(dataset, recipe.val_size, split_seed=recipe.split_seed)
    train_split = splits.train.subset(recipe.train_subset) if recipe.train_subset else splits.train
    data = AugmentedImages(train_split.x.float().div_(255), train_split.y, recipe.crop_pad, recipe.flip)
    loader = DataLoader(data, batch_size=recipe.batch_size, shuffle=True, drop_last=True, num_workers=0)
    torch.manual_seed(seed)
    module = build(spec)
    opt = torch.optim.SGD(param_groups(module, recipe.weight_decay, recipe.no_bias_decay), lr=recipe.effective_lr,
                          momentum=recipe.momentum, nesterov=recipe.nesterov)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=recipe.effective_lr, total_steps=len(loader) * recipe.epochs, pct_start=recipe.onecycle_pct,
        anneal_strategy="linear", div_factor=recipe.onecycle_div, final_div_factor=recipe.onecycle_final_div,
        cycle_momentum=False)
    clock = EpochClock(splits.val, recipe.channels_last)
    trainer = Trainer(model=ComposerClassifier(module, num_classes=splits.info.num_classes), train_dataloader=loader,
                      max_duration=f"{recipe.epochs}ep", optimizers=opt, schedulers=sched,
                      step_schedulers_every_batch=True, algorithms=algorithms(recipe), callbacks=[clock],
                      device="cpu", seed=seed, progress_bar=False, log_to_console=False, loggers=[])
    trainer.fit()
    test = accuracy(module, splits.test, 2000, recipe.channels_last)
    import composer
    return {"history": clock.history, "test_acc": test, "recipe": name, "recipe_changes": recipe_changes(base, recipe),
            "final_weights": "last", "engine": f"composer {composer.__version__}, torch {torch.__version__}",
            "algorithms": [type(a).__name__ for a in algorithms(recipe)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=0)
    ap.add_argument("--train-subset", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    Path(args.out).write_text(json.dumps(train(args.dataset, args.seed, {k: v for k, v in (("epochs", args.epochs),
                                                                      ("train_subset", args.train_subset)) if v}), indent=2))


if __name__ == "__main__":
    main()
