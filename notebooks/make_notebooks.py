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
finals = [(d, [r for r in rows if r["phase"] == tinycnn.get_phase(d, "final").name]) for d, rows in finals]
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
    "04_search.ipynb": [
        ("md", "# 04 · Find a net for any budget\nA search space is a file; a candidate is drawn from it and widened to fill the budget before anything trains. Then a tiny real search, and the committed studies."),
        ("code", SETUP),
        ("md", "The space the `mnist-700` study searched. A list is a choice, `{low, high}` a range; widths are never searched (every candidate is widened by the width solver)."),
        ("code", """import warnings
warnings.filterwarnings("ignore", message="IProgress not found")  # optuna's tqdm, where ipywidgets is missing
from IPython.display import Markdown, display
from tinycnn.searchspace import load_space, spaces_dir
path = spaces_dir() / "mnist.toml"
space = load_space(path, "mnist")   # checked: an unknown key or a bad range is one clear error
display(Markdown(f"```toml\\n{path.read_text()}\\n```"))"""),
        ("md", "One candidate, drawn without training. With the same seed the sampler draws the same network, so the same unit-width architecture fills 700, 1,500 or 5,000 parameters. A candidate that fits only with blocks under `min_width` channels is *infeasible*: recorded and pruned, never trained."),
        ("code", """import optuna
from tinycnn.searchspace import suggest
optuna.logging.set_verbosity(optuna.logging.WARNING)

def draw(budget, seed):
    \"\"\"One candidate's record (user attributes of its trial); suggest raises TrialPruned if it cannot fit.\"\"\"
    trial = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
    try:
        suggest(trial, space, "mnist", budget)
    except optuna.TrialPruned:
        pass
    return trial.user_attrs

a = draw(1500, seed=3)
print("unit widths:", a["unit_arch"])
print("recipe:     ", a["recipe_base"], *a["overrides"])
for budget in (700, 1500, 5000):
    a = draw(budget, seed=3)
    print(f"{budget:>5}: {a['params']:>5,} params at x{a['width']:<5} {a['arch']}")
print("seed 0 at 700:", draw(700, seed=0)["infeasible"])"""),
        ("md", "A real search, tiny: a two-stage space, a slice of MNIST (no test split: a search never reads it), a journal in a temporary folder that is deleted afterwards. Small settings score near chance; the point is the mechanics."),
        ("code", """import tempfile
from pathlib import Path
from tinycnn.data import Splits, load_splits
from tinycnn.search import best_table, run_search
TINY_SPACE = \"\"\"
[arch]
base_width = 4
stages = 2
downsample = "max"
[arch.stage]
blocks = 1
kind = ["sep", "dw", "ir"]
[recipe]
base = "default"
epochs = EPOCHS
batch_size = 16
crop_pad = 0
lr = {low = 0.05, high = 0.2, log = true}
\"\"\"
s = load_splits("mnist", val_size=1000)
n_train, n_val, epochs, trials = (1024, 200, 1, 3) if SMALL else (8192, 1000, 3, 8)
splits = Splits(s.info, s.train.subset(n_train), s.val.subset(n_val), None)
with tempfile.TemporaryDirectory() as tmp:
    space_file = Path(tmp) / "tiny.toml"
    space_file.write_text(TINY_SPACE.replace("EPOCHS", str(epochs)))
    study = run_search("mnist", budget=1500, space_path=space_file, study_name="tiny", n_trials=trials,
                       storage=Path(tmp) / "journal.log", sampler="random", pruner="none", seed=0, splits=splits)
    rows = best_table(study)
for r in rows:
    print(f"trial {r['trial']}: val {r['val_accuracy']:.2%}, {r['params']:,} params  {r['arch']}")
print("retrain the best:", rows[0]["command"])"""),
        ("md", "A committed study, read from its journal (read only): the report `tinycnn search report` writes, its table here and its figures drawn below. Other studies: `mnist-700-sep`, `mnist-final-recipe`, `cifar10-40k` (`experiments/search/`)."),
        ("code", """from tinycnn.search import load_study
from tinycnn.search_report import render_markdown, study_report
STUDY = "mnist-700"
data = study_report(load_study(STUDY))
display(Markdown(render_markdown(data).split("## Figures")[0]))  # the text part; the figures follow"""),
        ("code", """from tinycnn.search_report import ANCHORS, plot_history, plot_pareto
fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
plot_history(axes[0], data["history"], f"{STUDY}: optimisation history")
plot_pareto(axes[1], data["scatter"], data["ladder_finals"], ANCHORS.get(data["dataset"], []), data["budget"],
            f"{STUDY}: parameters vs accuracy")
plt.tight_layout()"""),
        ("md", "A search only ever sees validation accuracy. `tinycnn search retrain STUDY` trains the chosen trial again as ordinary runs (three seeds, the test set read once, at the end):"),
        ("code", """from tinycnn.report import retrained_markdown
display(Markdown(retrained_markdown()))"""),
    ],
    "05_deploy.ipynb": [
        ("md", "# 05 · From trained model to microcontroller\nThe committed MNIST final, step by step: the deployed network, ONNX float and int8, C source with its flash / RAM / stack, the RAM estimate from the spec alone, and robustness. Every file goes to a temporary folder."),
        ("code", SETUP),
        ("md", "The ladder's final phase, seed 0, as committed under `experiments/results/` (`tinycnn eval`, `export` and `robust` load a model file the same way). Test images: a seeded sample, since MNIST's test set puts its two writer populations in halves."),
        ("code", """from tinycnn.data import load_dataset
from tinycnn.results import portable, run_dir_for
from tinycnn.robust import subset
phase = tinycnn.get_phase("mnist", "final")
model_path = run_dir_for(phase, 0) / "model.pt"
model = tinycnn.load_model(model_path)
data = load_dataset("mnist")
test = subset(data.test, 300 if SMALL else 0)  # 0: the whole test set
print(portable(model_path), f"({phase.name}): {model.spec.arch}")
print(f"test accuracy recorded by its run: {model.info['test_accuracy']:.2%}; this notebook uses {len(test):,} test images")"""),
        ("md", "What the budget counts is the *deployed* network: re-parameterised blocks (rep, repdw, reppw) fused into one conv. Folding BatchNorm into the convs is an export step, not counted. The final has no rep blocks, so only folding changes its count; a searched net with rep blocks shows fusing:"),
        ("code", """from tinycnn.budget import phase_cost
from tinycnn.deploy import deploy
from tinycnn.evaluate import predict_logits
from tinycnn.results import retrain_records
cost = phase_cost(model.spec)
fused = deploy(model)  # a copy: rep* fused, conv -> BN folded, eval mode
print(f"final: as trained {cost.train_params:,}, deployed {cost.params:,}, BN folded {tinycnn.count_params(fused):,} "
      f"parameters; {cost.macs:,} MACs")
print(f"same function: max |logit diff| {(predict_logits(model, test.x) - predict_logits(fused, test.x)).abs().max():.1e}")
arch = next(r["arch"] for r in retrain_records() if r["study"] == "mnist-700")
searched = phase_cost(tinycnn.PhaseSpec.from_arch("searched", "mnist", arch))
print(f"mnist-700's best: as trained {searched.train_params:,}, deployed {searched.params:,}  {arch}")"""),
        ("md", "ONNX: the deployed network with its normalisation, taking [0, 1] images; then onnxruntime's static int8 quantisation, calibrated on training images only. Both files are scored as they ship (batch 1) against the torch model. (`tinycnn export RUN --format c` does this and the next step on the whole test set.)"),
        ("code", """import tempfile
from pathlib import Path
from tinycnn.evaluate import accuracy
from tinycnn.export import draw_calibration, export_onnx, onnx_accuracy, quantize_int8
tmp = tempfile.TemporaryDirectory()  # removed in the last cell
out = Path(tmp.name)
float_onnx = export_onnx(model, out / "model.onnx")
int8_onnx = quantize_int8(float_onnx, out / "model.int8.onnx", draw_calibration(data.train, 100 if SMALL else 500))
for name, acc in {"torch": accuracy(model, test), "ONNX float": onnx_accuracy(float_onnx, test),
                  "ONNX int8": onnx_accuracy(int8_onnx, test)}.items():
    print(f"{name:10} {acc:.2%}")
print(f"files: float {float_onnx.stat().st_size:,} B, int8 {int8_onnx.stat().st_size:,} B")"""),
        ("md", "C source from the int8 file: one static arena, no heap, no libm. It is compiled with the system C compiler, its int8 logits compared with onnxruntime's bit for bit, and the object measured (flash = text + data at `-Os`; a Cortex-M4F build where `arm-none-eabi-gcc` is installed)."),
        ("code", """import shutil
from tinycnn import cgen
c = None
if shutil.which("cc") or shutil.which("gcc"):
    (out / "c").mkdir()
    c = cgen.export_c(int8_onnx, out / "c", test.x, test.y)  # generate, build and check, measure
    obj, target = (c["cortex_m4"], "Cortex-M4F") if c["cortex_m4"] else (c["object"], "host")
    size = lambda v: "?" if v is None else f"{v:,} B"
    print(f"bit-exact with onnxruntime: {c['check']['bit_exact']}/{c['check']['images']}, "
          f"accuracy {c['check']['test_accuracy']:.2%}")
    print(f"{target} object: flash {size(obj['flash_bytes'])}, stack {size(obj['stack_bytes'])}, "
          f"heap {obj['heap']}; arena {size(c['memory']['arena_bytes'])} (lower bound {size(c['memory']['lower_bound_bytes'])})")
    print(cgen.prototype((out / "c" / "model.c").read_text()))
else:
    print("skipped: no C compiler (cc or gcc) on PATH; install one (e.g. apt-get install gcc) to generate and check the C")"""),
        ("md", "The same flash and RAM questions answered from the spec alone, no training and no compiler: what `--ram-budget` checks in `phases`, `fit` and `search`."),
        ("code", """from tinycnn.memory import int8_weight_bytes, peak_activation_bytes, planned_arena_bytes
print(f"int8 weights {int8_weight_bytes(model.spec):,} B")
print(f"activations: planned arena {planned_arena_bytes(model.spec):,} B, lower bound {peak_activation_bytes(model.spec):,} B"
      + (f"; the C arena: {c['memory']['arena_bytes']:,} B" if c else ""))"""),
        ("md", "A deployed sensor sees noisy, blurred, shifted digits. Accuracy on corrupted copies of a seeded test sample (MNIST-C's families at its own severities, generated on the fly from a seed):"),
        ("code", """from tinycnn.robust import robustness
r = robustness(model, "mnist", subset(data.test, 300 if SMALL else 2000), seed=0)
names = list(r["corruptions"])
fig, ax = plt.subplots(figsize=(11, 3.5))
ax.bar(names, [100 * r["corruptions"][n]["accuracy"] for n in names])
ax.axhline(100 * r["clean"], color="k", ls="--", lw=1, label=f"clean {r['clean']:.1%}")
ax.axhline(100 * r["mean"], color="tab:red", ls=":", label=f"mean corrupted {r['mean']:.1%}")
ax.set_ylabel("accuracy (%)"); ax.set_title(f"{phase.name}: {r['n']:,} test images, seed {r['seed']}")
ax.set_xticks(range(len(names)), names, rotation=40, ha="right"); ax.legend(loc="lower left");"""),
        ("code", """tmp.cleanup()  # nothing of this notebook stays on disk"""),
    ],
}


def build(name: str) -> nbf.NotebookNode:
    """One notebook from its cells, outputs empty (what is committed)."""
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [(nbf.v4.new_markdown_cell if kind == "md" else nbf.v4.new_code_cell)(src, id=f"{name[:2]}-{i:02d}")
                for i, (kind, src) in enumerate(NOTEBOOKS[name])]  # stable ids: regenerating changes only what changed
    return nb


def main() -> None:
    for name in NOTEBOOKS:
        nbf.write(build(name), HERE / name)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
