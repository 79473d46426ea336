"""Write the walkthrough notebooks (outputs cleared). The cells live here as plain text so
a diff of a notebook is a diff of this file.

    python notebooks/make_notebooks.py

Every notebook honours TINYCNN_NOTEBOOK_SMALL=1 (the test suite sets it) to run in seconds.
"""
from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).resolve().parent

SETUP = """import os
SMALL = os.environ.get("TINYCNN_NOTEBOOK_SMALL") == "1"   # the test suite runs every notebook small
import matplotlib.pyplot as plt
import tinycnn"""

NOTEBOOKS = {
    "01_phases.ipynb": [
        ("md", "# 01 · The phases\nEach ladder shrinks a CNN one declared change at a time. A phase is data: a list of block strings that one builder turns into a model."),
        ("code", SETUP),
        ("code", """from tinycnn.phases_table import phase_rows, budget_status
for dataset in ("mnist", "cifar10"):
    print(f"== {dataset} (budget {phase_rows(dataset)[0]['budget']:,}) ==")
    for r in phase_rows(dataset):
        print(f"{r['phase']:6} {r['params']:>8,} params {r['macs']:>12,} MACs  {budget_status(r):>16}  {r['change']}")"""),
        ("md", "The difference between two consecutive architecture strings *is* the change:"),
        ("code", """for phase in tinycnn.ladder("mnist"):
    print(f"{phase.name:6} {phase.arch}")"""),
        ("md", "Build any phase; the model takes images in [0, 1] (normalisation is inside) and returns logits."),
        ("code", """import torch
model = tinycnn.build(tinycnn.get_phase("mnist", "final"))
print(model)
print(model(torch.rand(2, 1, 28, 28)).shape, tinycnn.count_params(model), "params")"""),
        ("code", """from tinycnn.figures import plot_params_per_phase
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
plot_params_per_phase(axes[0], "mnist"); plot_params_per_phase(axes[1], "cifar10")
plt.tight_layout()"""),
        ("md", "Any budget: the width solver finds the widest multiplier of a phase that fits."),
        ("code", """for budget in (500, 1000, 1500, 3000):
    fit = tinycnn.fit_width(tinycnn.get_phase("mnist", "final"), budget)
    print(f"{budget:>5}: x{fit.width:<5} {fit.params:>5} params  {fit.spec.arch}")"""),
    ],
    "02_training_tricks.ipynb": [
        ("md", "# 02 · Training tricks\nSchedules, augmentations on real images, a short run, and what SWA / SAM do on it."),
        ("code", SETUP),
        ("code", """from tinycnn.optim import lr_factor
from tinycnn.recipe import Recipe
steps_per_epoch, epochs = 100, 10
fig, ax = plt.subplots(figsize=(8, 3))
for r in (Recipe(schedule="onecycle"), Recipe(schedule="clr", clr_half_epochs=1, min_lr_ratio=0.1),
          Recipe(schedule="cosine", warmup_epochs=1), Recipe(schedule="step")):
    total = steps_per_epoch * epochs
    ax.plot([0.1 * lr_factor(s, total, steps_per_epoch, r) for s in range(total)], label=r.schedule)
ax.set_xlabel("step"); ax.set_ylabel("lr"); ax.legend();"""),
        ("md", "Augmentations run on whole batches on the device. Real images from the data directory (`$TINYCNN_DATA` or `~/.cache/tinycnn`):"),
        ("code", """import torch
from tinycnn.augment import AugmentConfig, BatchAugment
from tinycnn.data import load_dataset
cifar = load_dataset("cifar10")
x, y = cifar.train.x[:8].float() / 255, cifar.train.y[:8]
torch.manual_seed(0)
rows = {"original": AugmentConfig(), "crop+flip": AugmentConfig(crop_pad=4, flip=True),
        "cutout 8": AugmentConfig(cutout=8), "mixup a=1": AugmentConfig(mixup_alpha=1.0),
        "cutmix a=1": AugmentConfig(cutmix_alpha=1.0)}
fig, axes = plt.subplots(len(rows), 8, figsize=(12, 1.6 * len(rows)))
for i, (name, cfg) in enumerate(rows.items()):
    xa, t = BatchAugment(cfg, 10, 32)(x, y)
    for j in range(8):
        axes[i, j].imshow(xa[j].permute(1, 2, 0).clamp(0, 1)); axes[i, j].axis("off")
        axes[i, j].set_title(f"{t[j].max():.2f} {cifar.info.classes[int(t[j].argmax())]}", fontsize=7)
    axes[i, 0].text(-4, 16, name, ha="right", va="center")"""),
        ("md", "A short MNIST run of the final phase (≤ 1,500 parameters), with training curves."),
        ("code", """from tinycnn.data import Splits, load_splits
from tinycnn.engine import fit
s = load_splits("mnist", val_size=1000)
n = 1024 if SMALL else 8192
small = Splits(s.info, s.train.subset(n), s.val, s.test.subset(2000))
epochs = 1 if SMALL else 4
runs = {}
for name, r in {"plain": Recipe(epochs=epochs, schedule="constant", lr=0.05),
                "one-cycle + crop": Recipe(epochs=epochs, crop_pad=2),
                "+ SWA": Recipe(epochs=epochs, crop_pad=2, swa=True, swa_start=0.5),
                "+ SAM": Recipe(epochs=epochs, crop_pad=2, sam_rho=0.05)}.items():
    runs[name] = fit(tinycnn.get_phase("mnist", "final"), r, small)  # no files: the model comes back
    print(f"{name:18} val {runs[name].val_accuracy:.4f} ({runs[name].weights} weights, "
          f"{runs[name].train_time:.0f} s)")"""),
        ("code", """fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for name, result in runs.items():
    ep = [h["epoch"] for h in result.history]
    axes[0].plot(ep, [h["train_loss"] for h in result.history], "o-", label=name)
    axes[1].plot(ep, [h["val_acc"] for h in result.history], "o-", label=name)
axes[0].set_title("train loss"); axes[1].set_title("val accuracy (current weights)")
axes[1].legend();"""),
    ],
    "03_results.ipynb": [
        ("md", "# 03 · Results\nEverything here is read from the committed run directories under `experiments/results/`."),
        ("code", SETUP),
        ("code", """from tinycnn.report import summarize, results_markdown, ablation_markdown
from IPython.display import Markdown, display
for dataset in ("mnist", "cifar10"):
    display(Markdown(f"### {dataset}\\n" + results_markdown(dataset) + "\\n\\n#### ablation\\n" + ablation_markdown(dataset)))"""),
        ("code", """from tinycnn.figures import plot_accuracy_vs_params, plot_ablation
fig, axes = plt.subplots(2, 2, figsize=(13, 9))
for i, dataset in enumerate(("mnist", "cifar10")):
    plot_accuracy_vs_params(axes[0, i], dataset)
    if not plot_ablation(axes[1, i], dataset):
        axes[1, i].text(0.5, 0.5, "no ablation committed yet", ha="center"); axes[1, i].axis("off")
plt.tight_layout()"""),
        ("code", """import json
from pathlib import Path
from tinycnn.figures import plot_confusion
from tinycnn.datasets import dataset_info
finals = [(d, summarize(d)) for d in ("mnist", "cifar10")]
finals = [(d, [r for r in rows if r["phase"] == tinycnn.ladder(d)[-1].name]) for d, rows in finals]
finals = [(d, rows[0]) for d, rows in finals if rows]
if finals:
    fig, axes = plt.subplots(1, len(finals), figsize=(6 * len(finals), 5.5), squeeze=False)
    for ax, (d, row) in zip(axes[0], finals):
        m = json.loads((Path(row["run_dirs"][0]) / "metrics.json").read_text())
        plot_confusion(ax, m["test_confusion"], dataset_info(d).classes, f"{d} final, test {m['test_accuracy']:.2%}")
    plt.tight_layout()
else:
    print("no final runs committed yet")"""),
    ],
}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = nbf.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src) for kind, src in cells]
        nbf.write(nb, HERE / name)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
