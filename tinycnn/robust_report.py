"""Corrupted accuracy in reports: read each run's ``robust.json`` (``tinycnn robust --save``).

The results table gains a "corrupted acc" cell per phase; the robustness table lists each
corruption family for the phases that were measured; the figure puts the clean final and
the robust phase side by side, family by family. Test-set files only (robust.json, never
robust-val.json): reports show what was read once per finished run.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from .datasets import dataset_info
from .ladders import ladder
from .results import phase_runs


def robust_records(dataset: str, root: Path | None = None) -> dict[str, list[dict]]:
    """robust.json of every run of every ladder phase that has one, in ladder order."""
    records: dict[str, list[dict]] = {}
    for phase in ladder(dataset):
        for path, _ in phase_runs(dataset_info(dataset).name, phase.name, root):
            file = path.parent / "robust.json"
            if file.is_file():
                records.setdefault(phase.name, []).append(json.loads(file.read_text()))
    return records


def family_means(records: list[dict]) -> dict[str, float]:
    """Each family's accuracy (over its severities), averaged over the seeds measured."""
    names = list(records[0]["corruptions"])
    return {n: statistics.fmean(r["corruptions"][n]["accuracy"] for r in records) for n in names}


def robust_markdown(dataset: str, root: Path | None = None) -> str:
    """One row per corruption family, one column per measured phase (mean over its seeds)."""
    records = robust_records(dataset, root)
    if not records:
        return f"_No corruption benchmark of a {dataset} phase yet (`tinycnn robust RUN/model.pt --save`)._"
    phases = list(records)
    families = {p: family_means(records[p]) for p in phases}
    head = "| corruption | " + " | ".join(f"`{p}` ({len(records[p])} seed{'s' * (len(records[p]) > 1)})"
                                         for p in phases) + " |"
    lines = [head, "|---|" + "---:|" * len(phases)]
    lines.append("| clean | " + " | ".join(f"{statistics.fmean(r['clean'] for r in records[p]):.2%}"
                                           for p in phases) + " |")
    for name in families[phases[0]]:
        lines.append(f"| {name} | " + " | ".join(f"{families[p][name]:.2%}" for p in phases) + " |")
    lines.append("| **mean corrupted** | " + " | ".join(f"**{statistics.fmean(r['mean'] for r in records[p]):.2%}**"
                                                       for p in phases) + " |")
    first = records[phases[0]][0]
    lines += ["", f"{first['benchmark']}; {first['n']:,} test images, corruption seed {first['seed']}; "
              f"command: `tinycnn robust RUN/model.pt --save`."]
    return "\n".join(lines)


def plot_robust(ax, dataset: str, root: Path | None = None) -> bool:
    """Grouped bars per corruption family: every measured phase (the final and the robust one)."""
    records = robust_records(dataset, root)
    if not records:
        return False
    phases = list(records)[-3:]
    families = {p: family_means(records[p]) for p in phases}
    names = list(families[phases[0]])
    width = 0.8 / len(phases)
    for k, p in enumerate(phases):
        ax.bar([i + k * width for i in range(len(names))], [100 * families[p][n] for n in names],
               width, label=f"{p} (mean {100 * statistics.fmean(families[p].values()):.1f}%)")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=60, ha="right")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 118)  # headroom for the legend above the bars
    ax.set_title(f"{dataset}: accuracy per corruption")
    ax.legend(loc="upper center", ncol=len(phases), fontsize=8)
    return True
