"""Reports from committed run directories: ladder summaries, README tables, figures.

Reads ``experiments/results/<dataset>/<phase>/seed<k>/metrics.json`` (and
``ablation.json``) and nothing else: every number it prints came from a run whose model
file sits beside its metrics.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from .atomic import atomic_write_text
from .datasets import dataset_info
from .ladders import final_phase, ladder, recipe_for
from .results import (
    ablation_file,
    display_command,
    first_reach,
    phase_runs,
    prune_runs,
    recipe_runs,
    retrain_records,
    search_runs,
    study_dir,
    write_json,
)
from .robust_report import robust_markdown, robust_records
from .speed_report import (
    bench_markdown,
    compile_markdown,
    engine_vs_loop_markdown,
    latency_markdown,
    time_to_accuracy_markdown,
    tta_markdown,
)

# The reference paper's numbers: (parameters as it reports them, test accuracy).
PAPER = {"mnist": (1_570, 0.992), "cifar10": (143_396, 0.8601)}


def load_runs(dataset: str, root: Path | None = None) -> dict[str, list[dict]]:
    """Finished runs per phase name (in ladder order), each a metrics dict plus its path."""
    runs: dict[str, list[dict]] = {}
    for phase in ladder(dataset):
        for path, m in phase_runs(dataset_info(dataset).name, phase.name, root):
            m["run_dir"] = str(path.parent)
            runs.setdefault(phase.name, []).append(m)
    return runs


def summarize(dataset: str, root: Path | None = None) -> list[dict]:
    """One row per trained phase: accuracy mean/std over seeds, cost, time, time-to-paper."""
    runs = load_runs(dataset, root)
    target = PAPER[dataset_info(dataset).name][1]
    rows = []
    for phase in ladder(dataset):
        ms = runs.get(phase.name)
        if not ms:
            continue
        accs = [m["test_accuracy"] for m in ms]
        first = ms[0]
        rows.append({
            "phase": phase.name, "change": phase.change, "params": first["params"], "macs": first["macs"],
            "seeds": [m["seed"] for m in ms], "test_accuracy": accs,
            "mean": statistics.fmean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "epochs": first["epochs"], "train_time_s": round(statistics.fmean(m["train_time_s"] for m in ms), 1),
            "device": first["device"], "recipe": first.get("recipe_name", ""), "weights": first["final_weights"],
            "devices": [m["device"] for m in ms], "train_times_s": [m["train_time_s"] for m in ms],
            "time_to_paper_val": [first_reach(m["history"], target) for m in ms],
            "command": display_command(first.get("command", ""), phase.name),
            "commands": [display_command(m.get("command", ""), phase.name) for m in ms], "run_dirs": [m["run_dir"] for m in ms],
        })
    return rows


def _by_device(row: dict) -> tuple[str, str]:
    """(train time, device) cells: one entry per device when a row's seeds ran on different ones."""
    groups: dict[str, list[float]] = {}
    for device, t in zip(row["devices"], row["train_times_s"]):
        groups.setdefault(device, []).append(t)
    if len(groups) == 1:
        return f"{row['train_time_s']:.0f} s", row["device"]
    times = "; ".join(f"{statistics.fmean(ts):.0f} s" for ts in groups.values())
    devices = "; ".join(f"{d} ({len(ts)} seed{'s' if len(ts) > 1 else ''})" for d, ts in groups.items())
    return times, devices


def _acc(row: dict) -> str:
    if len(row["seeds"]) > 1:
        return f"{row['mean']:.2%} ± {row['std']:.2%} ({len(row['seeds'])} seeds)"
    return f"{row['mean']:.2%}"


def _ttp(row: dict) -> str:
    hits = [t for t in row["time_to_paper_val"] if t]
    if not hits:
        return "not reached"
    if len(row["seeds"]) == 1:
        return f"ep {hits[0]['epoch']}, {hits[0]['train_time_s']:.0f} s"
    return "; ".join(f"seed {seed}: ep {t['epoch']}, {t['train_time_s']:.0f} s" if t else f"seed {seed}: not reached"
                     for seed, t in zip(row["seeds"], row["time_to_paper_val"]))


def results_markdown(dataset: str, root: Path | None = None) -> str:
    rows = summarize(dataset, root)
    if not rows:
        return f"_No committed {dataset} runs yet._"
    paper_params, paper_acc = PAPER[dataset_info(dataset).name]
    corrupted = robust_records(dataset, root)
    lines = [f"| phase | params | MACs | test acc (final weights) | corrupted acc | epochs | train time | "
             f"first val ≥ {paper_acc:.2%} | device |", "|---|---:|---:|---|---|---:|---:|---|---|"]
    for r in rows:
        times, devices = _by_device(r)
        lines.append(f"| `{r['phase']}` | {r['params']:,} | {r['macs']:,} | {_acc(r)} | "
                     f"{corrupted_cell(corrupted.get(r['phase'], []), len(r['seeds']))} | {r['epochs']} | "
                     f"{times} | {_ttp(r)} | {devices} |")
    lines.append("")
    lines.append(f"Paper: {paper_acc:.2%} with {paper_params:,} parameters. Reproduce a row with its command:")
    lines.append("")
    for r in rows:
        if len(set(r["commands"])) == 1:
            lines.append(f"- `{r['phase']}`: `{r['command']}`")
        else:
            lines.extend(f"- `{r['phase']}` seed {seed}: `{c}`" for seed, c in zip(r["seeds"], r["commands"]))
    return "\n".join(lines)


def ablation_markdown(dataset: str, root: Path | None = None) -> str:
    path = ablation_file(dataset_info(dataset).name, root)
    if not path.exists():
        return f"_No committed {dataset} ablation yet (`tinycnn ablate {dataset}`)._"
    data = json.loads(path.read_text())
    lines = ["| step | adds | val acc | test acc | gain (test) |", "|---|---|---:|---:|---:|"]
    prev = None
    for s in data["steps"]:
        gain = "" if prev is None else f"{(s['test_accuracy'] - prev) * 100:+.2f} pt"
        lines.append(f"| {s['step']} | {s['adds']} | {s['val_accuracy']:.2%} | {s['test_accuracy']:.2%} | {gain} |")
        prev = s["test_accuracy"]
    lines.append("")
    lines.append(f"{data['epochs']} epochs per step, seed {data['seed']}, {data['device']}; command: `{data['command']}`")
    return "\n".join(lines)


def write_report(dataset: str, root: Path | None = None) -> Path:
    """``report.md`` and ``report.json`` beside the dataset's run directories."""
    base = study_dir(dataset_info(dataset).name, root)
    base.mkdir(parents=True, exist_ok=True)
    rows = summarize(dataset, root)
    write_json(base / "report.json", rows)
    md = [f"# {dataset} ladder report", "", results_markdown(dataset, root), "",
          "## Ablation", "", ablation_markdown(dataset, root), "",
          "## Candidates and time to accuracy (validation split)", "", candidates_markdown(dataset, root), "",
          "## Corrupted accuracy", "", robust_markdown(dataset, root), "",
          "## Deployed: float, int8 and C", "", export_markdown(dataset, root), "",
          "## Pruning vs from scratch", "", prune_markdown(dataset, root), ""]
    atomic_write_text(base / "report.md", "\n".join(md))
    return base / "report.md"


def candidates_markdown(dataset: str, root: Path | None = None) -> str:
    """The runs a choice was made from, by *validation* accuracy only (test is in their files).

    Architecture candidates sit in ``<dataset>/search/<name>/`` (one run) or
    ``<dataset>/search/<name>/seed<k>/`` (several seeds); recipe candidates for the final phase
    in ``<dataset>/recipes/<recipe>/seed<k>/``. The final phase's own seeds are listed too,
    as the incumbent they were compared with.
    """
    name = dataset_info(dataset).name
    groups: dict[str, list[dict]] = {}
    for candidate, m in search_runs(name, root):
        groups.setdefault(f"search/{candidate}", []).append(m)
    recipes = recipe_runs(name, root)
    final = final_phase(dataset)
    # The ladder runs the candidates were compared with: the final's, those of phases with the
    # final's network (trained with another recipe), and of any phase a recipe candidate trained.
    compared = ({p.name for p in ladder(dataset) if p.arch == final.arch} | {m.get("phase") for _, m in recipes})
    for phase in ladder(dataset):
        if phase.name not in compared:
            continue
        label = f"{phase.name} ({'final' if phase == final else 'ladder'} phase, {recipe_for(phase)} recipe)"
        for _, m in phase_runs(name, phase.name, root):
            groups.setdefault(label, []).append(m)
    for candidate, m in recipes:
        groups.setdefault(f"recipes/{candidate}", []).append(m)
    if not groups:
        return f"_No {dataset} candidate runs committed._"
    target = PAPER[dataset_info(dataset).name][1]
    lines = [f"| runs | params | epochs | batch | val acc (mean of seeds) | seeds | first val ≥ {target:.2%} "
             "(epoch, train time, device) | architecture / command |",
             "|---|---:|---:|---:|---|---:|---|---|"]
    for key, ms in groups.items():
        m = ms[0]
        vals = [x["val_accuracy"] for x in ms]
        val = f"{statistics.fmean(vals):.2%}" + (f" ± {statistics.stdev(vals):.2%}" if len(vals) > 1 else "")
        what = f"`{m['arch']}`" if key.startswith("search/") else f"`{display_command(m.get('command', ''), m.get('phase', ''))}`"
        lines.append(f"| {key} | {m['params']:,} | {m['recipe']['epochs']} | {m['recipe']['batch_size']} | "
                     f"{val} | {len(ms)} | {_first_reach_cell(ms, target)} | {what} |")
    return "\n".join(lines)


def _first_reach_cell(runs: list[dict], target: float) -> str:
    """Per run: when validation accuracy first reached ``target``, and on what it ran."""
    cells = []
    for m in runs:
        hit = first_reach(m["history"], target)
        cells.append(f"ep {hit['epoch']}, {hit['train_time_s']:.0f} s, {_short_device(m['device'])}" if hit
                     else "not reached")
    return "; ".join(cells)


def _short_device(device: str) -> str:
    """``cpu (x86_64, 2 threads)`` -> ``CPU 2 thr``; GPU names shortened to their model."""
    if device.startswith("cpu"):
        threads = device.split(",")[-1].strip(" )").split()[0] if "thread" in device else "?"
        return f"CPU {threads} thr"
    return device.replace("NVIDIA ", "").split(" 80GB")[0]


def readme_results_sections() -> dict:
    sections = {}
    for dataset in ("mnist", "cifar10"):
        sections[f"{dataset}-results"] = lambda d=dataset: results_markdown(d)
        sections[f"{dataset}-ablation"] = lambda d=dataset: ablation_markdown(d)
    for dataset in ("mnist", "cifar10"):
        sections[f"{dataset}-candidates"] = lambda d=dataset: candidates_markdown(d)
    sections["bench"] = bench_markdown
    sections["engine-vs-loop"] = engine_vs_loop_markdown
    sections["latency"] = latency_markdown
    sections["compile"] = compile_markdown
    sections["tta"] = tta_markdown
    sections["time-to-accuracy"] = time_to_accuracy_markdown
    for dataset in ("mnist", "cifar10"):
        sections[f"{dataset}-export"] = lambda d=dataset: export_markdown(d)
    sections["mnist-prune"] = lambda: prune_markdown("mnist")
    for dataset in ("mnist", "cifar10"):
        sections[f"{dataset}-robust"] = lambda d=dataset: robust_markdown(d)
    sections["search-retrained"] = retrained_markdown
    sections["search-incremental"] = incremental_markdown
    return sections


def retrained_markdown(root: Path | None = None) -> str:
    """Search trials retrained as ordinary runs (`tinycnn search retrain`), from each retrain.json:
    the study's validation accuracy beside the test accuracy over the seeds."""
    records = retrain_records(root)
    if not records:
        return "_No searched net retrained yet (`tinycnn search retrain STUDY`)._"
    lines = ["| dataset | study | trial | params | val acc (in the study) | test acc (final weights) | seeds | command |",
             "|---|---|---:|---:|---:|---|---:|---|"]
    for r in records:
        tests = [run["test_accuracy"] for run in r["runs"]]
        lines.append(f"| {r['dataset']} | `{r['study']}` | {r['trial']} | {r['params']:,} | "
                     f"{r['val_accuracy_in_study']:.2%} | {_mean_sd(tests)} | {len(tests)} | `{r['command']}` |")
    return "\n".join(lines)


def incremental_markdown(root: Path | None = None) -> str:
    """Issue #16's incremental table: a final phase's committed runs (its own recipe) beside the
    same network retrained with the recipe a recipe-only study found (``[arch] fixed``)."""
    records = [r for r in retrain_records(root) if r.get("phase")]
    if not records:
        return ("_No recipe-only study retrained yet (a space with `[arch] fixed = \"<phase>\"`, then "
                "`tinycnn search retrain STUDY`)._")
    lines = ["| dataset | phase (its recipe) | params | test acc, its recipe | fit on | study, trial: searched "
             "recipe | test acc, searched | fit on | gain |", "|---|---|---:|---|---:|---|---|---:|---:|"]
    for r in records:
        own = [m for _, m in phase_runs(r["dataset"], r["phase"], root)]
        searched = [run["test_accuracy"] for run in r["runs"]]
        gain = (f"{(statistics.fmean(searched) - statistics.fmean(m['test_accuracy'] for m in own)) * 100:+.2f} pt"
                if own else "—")
        own_cell = _mean_sd([m["test_accuracy"] for m in own]) + f" ({len(own)} seeds)" if own else "no committed runs"
        recipe = f"`{r['recipe']}` " + " ".join(f"`{o}`" for o in r["overrides"])
        lines.append(f"| {r['dataset']} | `{r['phase']}` (`{own[0]['recipe_name'] if own else '?'}`) | {r['params']:,} | "
                     f"{own_cell} | {_fit_images(r['dataset'], own[0]['recipe'] if own else None)} | "
                     f"`{r['study']}`, {r['trial']}: {recipe} | {_mean_sd(searched)} ({len(searched)} seeds) | "
                     f"{_fit_images(r['dataset'], r['runs'][0])} | {gain} |")
    return "\n".join(lines)


def _fit_images(dataset: str, recipe: dict | None) -> str:
    """Training images a run fitted on: the training set less its validation split (``val_size``
    of its recipe, or of a retrain.json run entry)."""
    if not recipe or "val_size" not in recipe:
        return "?"
    return f"{dataset_info(dataset).train_size - recipe['val_size']:,}"


# Cited, not run here: ST model zoo's MLPerf Tiny ResNet-8 for CIFAR-10 (issue #22's anchor).
ST_RESNET8 = ("| ST model zoo's MLPerf Tiny ResNet-8, 78.7K params (cited from its README, not run here) | 87.01% | "
              "85.59% | -1.42 pt | 76.9 KiB | — | — | 133.4 KiB | 69.7 KiB | — |")


def _c_cells(e: dict) -> str:
    """C build columns: bit-exact count and accuracy, flash (Cortex-M4F where built), arena, stack."""
    c = e.get("c")
    if not c or "memory" not in c:  # not exported to C, or by the generator before #22 (emx, no arena)
        return "— | — | — | — | —"
    check, obj = c["check"], c.get(c.get("flash_of") or "object") or c["object"]
    target = "M4F" if c.get("flash_of") == "cortex_m4" else "host"
    patch, arena = c.get("patch") or {}, f"{c['memory']['arena_bytes']:,} B"
    if patch.get("applied"):
        arena += (f" (first stage in {patch['bands']} bands, +{patch['extra_macs_fraction']:.0%} MACs; "
                  f"{patch['arena_bytes_untiled']:,} B whole)")
    return (f"{check['bit_exact']:,}/{check['images']:,} | {check['test_accuracy']:.2%} | "
            f"{obj['flash_bytes']:,} B ({target}) | {arena} | {obj['stack_bytes']:,} B")


def export_markdown(dataset: str, root: Path | None = None) -> str:
    """Float vs int8 accuracy of the final's runs as onnxruntime scores their exported files,
    and the C build's exactness, accuracy, flash, arena and stack where it was exported."""
    final = final_phase(dataset).name
    rows = [(path.parent, json.loads((path.parent / "export.json").read_text()))
            for path, _ in phase_runs(dataset_info(dataset).name, final, root) if (path.parent / "export.json").exists()]
    if not rows:
        return f"_No exported {dataset} final yet (`tinycnn export`)._"
    lines = ["| run | float (ONNX) | int8 (onnxruntime) | int8 − float | int8 weight bytes | C bit-exact | "
             "C accuracy | flash | arena (RAM) | stack |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run_dir, e in rows:
        f, q = e["float"]["test_accuracy"], e["int8"]["test_accuracy"]
        lines.append(f"| `{run_dir.parent.name}/{run_dir.name}` | {f:.2%} | {q:.2%} | {(q - f) * 100:+.2f} pt | "
                     f"{e['int8']['int8_weight_bytes']:,} | {_c_cells(e)} |")
    if dataset == "cifar10":
        lines.append(ST_RESNET8)
    return "\n".join(lines)


def prune_markdown(dataset: str, root: Path | None = None) -> str:
    """Pruned + fine-tuned vs the same narrower net from scratch (issue #17, item 7), one row each."""
    rows: dict[str, list[dict]] = {}
    for row, m in prune_runs(dataset_info(dataset).name, root):
        rows.setdefault(row, []).append(m)
    if not rows:
        return f"_No pruning runs for {dataset} yet (`tinycnn prune`)._"
    lines = ["| row | params | arch | start | epochs | val acc | test acc (final weights) | seeds | train time, s |",
             "|---|---:|---|---|---:|---|---|---:|---|"]
    for row, runs in sorted(rows.items()):
        origin = runs[0].get("initial_weights")
        start = (f"pruned from `{Path(origin['model']).parent.parent.name}` ({origin['params']:,} params)"
                 if origin else "random (from scratch)")
        times = ", ".join(f"{m['train_time_s']:.0f}" for m in runs)
        lines.append(f"| {row} | {runs[0]['params']:,} | `{runs[0]['arch']}` | {start} | {runs[0]['epochs']} | "
                     f"{_mean_sd([m['val_accuracy'] for m in runs])} | {_mean_sd([m['test_accuracy'] for m in runs])} "
                     f"| {len(runs)} | {times} |")
    return "\n".join(lines)


def corrupted_cell(records: list[dict], seeds: int) -> str:
    """Mean corrupted test accuracy over the seeds measured ("—" when none was)."""
    if not records:
        return "—"
    cell = _mean_sd([r["mean"] for r in records])
    return cell + (f" ({len(records)} of {seeds} seeds)" if len(records) < seeds else "")


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2%}"
    return f"{statistics.mean(values):.2%} ± {statistics.stdev(values):.2%}"
