"""Figures for reports and notebooks (matplotlib, no display needed).

Each function draws onto a given Axes so notebooks can compose them; ``write_figures``
saves the set as PNG files beside the dataset's report. Nothing here picks a backend or
imports pyplot: notebooks keep their inline backend, and the saved figures are bare
``Figure`` objects on an Agg canvas, which needs no display.
"""
from __future__ import annotations

import json
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .datasets import dataset_info
from .ladders import final_phase
from .phases_table import phase_rows
from .report import PAPER, summarize
from .results import ablation_file, study_dir
from .robust_report import plot_robust


def plot_params_per_phase(ax, dataset: str) -> None:
    rows = phase_rows(dataset)
    colors = ["tab:green" if r["within_budget"] else "tab:red" for r in rows]
    ax.bar([r["phase"] for r in rows], [r["params"] for r in rows], color=colors)
    ax.axhline(rows[0]["budget"], color="k", ls="--", lw=1, label=f"budget {rows[0]['budget']:,}")
    ax.set_yscale("log")
    ax.set_ylabel("parameters")
    ax.set_title(f"{dataset}: parameters per phase")
    ax.legend()


def plot_accuracy_vs_params(ax, dataset: str, root: Path | None = None) -> None:
    rows = summarize(dataset, root)
    paper_params, paper_acc = PAPER[dataset_info(dataset).name]
    if rows:
        ax.errorbar([r["params"] for r in rows], [100 * r["mean"] for r in rows],
                    yerr=[100 * r["std"] for r in rows], fmt="o-", capsize=3, label="tinycnn (test, final weights)")
        for r in rows:
            ax.annotate(r["phase"], (r["params"], 100 * r["mean"]), textcoords="offset points", xytext=(4, 4))
    ax.scatter([paper_params], [100 * paper_acc], marker="*", s=150, color="tab:red", label="paper", zorder=3)
    ax.axvline(dataset_info(dataset).budget, color="k", ls="--", lw=1, label="budget")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{dataset}: accuracy vs parameters")
    ax.legend(loc="lower right")


def plot_ablation(ax, dataset: str, root: Path | None = None) -> bool:
    path = ablation_file(dataset_info(dataset).name, root)
    if not path.exists():
        return False
    steps = json.loads(path.read_text())["steps"]
    accs = [100 * s["test_accuracy"] for s in steps]
    bottoms = [accs[0]] + accs[:-1]
    gains = [accs[0] - min(accs) + 0.05] + [a - b for a, b in zip(accs[1:], accs[:-1])]
    base = min(accs) - 0.05
    colors = ["tab:gray"] + ["tab:green" if g >= 0 else "tab:red" for g in gains[1:]]
    ax.bar([s["step"] for s in steps], gains, bottom=[base] + bottoms[1:], color=colors)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{dataset}: one technique at a time")
    ax.tick_params(axis="x", rotation=45)
    return True


def plot_confusion(ax, confusion: list[list[int]], classes: tuple[str, ...], title: str) -> None:
    ax.imshow(confusion, cmap="Blues")
    for i, row in enumerate(confusion):
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                        color="white" if v > max(map(max, confusion)) / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=90)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)


def _new_axes(figsize: tuple[float, float]):
    """A pyplot-free figure on an Agg canvas: works headless, leaves any notebook backend alone."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def write_figures(dataset: str, root: Path | None = None) -> list[Path]:
    info = dataset_info(dataset)
    out_dir = study_dir(info.name, root)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name):
        path = out_dir / name
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        written.append(path)

    fig, ax = _new_axes((7, 4))
    plot_params_per_phase(ax, info.name)
    save(fig, "params_per_phase.png")
    fig, ax = _new_axes((7, 4.5))
    plot_accuracy_vs_params(ax, info.name, root)
    save(fig, "accuracy_vs_params.png")
    fig, ax = _new_axes((7, 4))
    if plot_ablation(ax, info.name, root):
        save(fig, "ablation.png")
    fig, ax = _new_axes((9, 4.5))
    if plot_robust(ax, info.name, root):
        save(fig, "robust.png")
    final_name = final_phase(info.name).name
    final_runs = [r for r in summarize(info.name, root) if r["phase"] == final_name]
    if final_runs:
        metrics = json.loads((Path(final_runs[0]["run_dirs"][0]) / "metrics.json").read_text())
        fig, ax = _new_axes((6, 5.5))
        plot_confusion(ax, metrics["test_confusion"], info.classes,
                       f"{info.name} final ({metrics['phase']}), test {metrics['test_accuracy']:.2%}")
        save(fig, "confusion_final.png")
    return written
