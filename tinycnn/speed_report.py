"""The speed tables of SPEED.md and README (issue #19), from the benchmark files the scripts in
experiments/ commit under experiments/results/: training images/s, the engine beside a plain
loop, inference latency, time to accuracy beside the peers. Never measured here: read only."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .results import benchmark_files


def per_benchmark_file(prefix: str, script: str, render: Callable[[str, dict], list[str]],
                       root: Path | None = None) -> str:
    """``render(file name, its JSON)``'s lines for each committed ``<prefix>*.json``, or a line
    saying which script measures it when none is committed yet."""
    paths = benchmark_files(prefix, root)
    if not paths:
        return f"_Not measured yet (`python experiments/{script}`)._"
    return "\n".join(line for path in paths for line in render(path.name, json.loads(path.read_text())))


def engine_vs_loop_markdown(root: Path | None = None) -> str:
    """The engine beside a plain TensorDataset + DataLoader loop (experiments/bench_engine_vs_loop.py)."""
    return per_benchmark_file("engine-vs-loop-", "bench_engine_vs_loop.py", _engine_vs_loop, root)


def _engine_vs_loop(name: str, b: dict) -> list[str]:
    out = [f"`{name}` — {b['device']}, torch {b['torch']}, best of {b['best_of']}, {b['augmentation']}:", "",
           "| dataset (recipe) | images, batch | engine img/s | plain loop img/s | engine / plain | "
           "data path µs/image: engine slices vs DataLoader |", "|---|---|---:|---:|---:|---|"]
    for ds, r in b["datasets"].items():
        ips, us = r["images_per_s"], r["data_path_us_per_image"]
        out.append(f"| {ds} ({r['recipe']}) | {r['images']:,}, {r['batch_size']} | {ips['engine']:,.0f} | "
                   f"{ips['plain_loop']:,.0f} | {r['engine_over_plain']:.2f} | "
                   f"{us['engine_slices']:.1f} vs {us['dataloader']:.1f} |")
    return out + [""]


def latency_markdown(root: Path | None = None) -> str:
    """Per-image latency of the finals at batch 1 (experiments/bench_latency.py)."""
    return per_benchmark_file("latency-", "bench_latency.py", _latency, root)


def _latency(name: str, b: dict) -> list[str]:
    out = [f"`{name}` — {b['device']}, torch {b['torch_version']}, best median of {b['rounds']} "
           f"round-robin rounds; {b['compiler']}:", "",
           "| final | engine | µs per image | vs PyTorch eager |", "|---|---|---:|---:|"]
    for ds, r in b["datasets"].items():
        out += [f"| {ds} (`{r['run']}`) | {engine} | {us:,.1f} | {r['speedup_over_pytorch'][engine]:.2f}x |"
                for engine, us in r["us_per_image"].items()]
    return out + [""]


def _table_of_dicts(first_col: str, rows: dict[str, dict[str, float]]) -> list[str]:
    """A Markdown table: one row per key of ``rows``, one column per inner key of any row
    (the ladders differ: MNIST has a `sep` phase, CIFAR-10 not), blank where a row lacks it."""
    cols = list(dict.fromkeys(c for row in rows.values() for c in row))
    lines = [f"| {first_col} | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    lines += [f"| {name} | " + " | ".join(f"{row[c]:,.0f}" if c in row else "" for c in cols) + " |"
              for name, row in rows.items()]
    return lines


def bench_markdown(root: Path | None = None) -> str:
    """Training images/s per phase, augmentation backends, the finals (experiments/bench_train.py)."""
    return per_benchmark_file("bench-", "bench_train.py", _bench, root)


def _bench(name: str, b: dict) -> list[str]:
    out = [f"`{name}` — {b['device']}, torch {b['torch']}, {b['threads']} threads, "
           f"{b['images_per_epoch']} images per measured epoch, best of {b.get('best_of', 1)} "
           f"(training images/s):", ""]
    out += _table_of_dicts("dataset", b["phases"]) + [""]
    out += ["| dataset | augmentation (batch of 128) | tensor ops (img/s) | kornia (img/s) |", "|---|---|---:|---:|"]
    out += [f"| {ds} | {aug} | {v['tensor']:,.0f} | {v['kornia']:,.0f} |"
            for ds, augs in b["augment"].items() for aug, v in augs.items()]
    return out + [""] + _table_of_dicts("final phase", b["final_train"]) + [""]


def compile_markdown(root: Path | None = None) -> str:
    """Eager against torch.compile on each final's own recipe (experiments/bench_compile.py)."""
    return per_benchmark_file("compile-", "bench_compile.py", _compile, root)


def _compile(name: str, b: dict) -> list[str]:
    out = [f"`{name}` — {b['device']}, torch {b['torch']}, {b['epochs']} epochs "
           f"of {b['images_per_epoch']:,} images per configuration (steady speed: the best epoch after the first):",
           "", "| final (recipe, batch) | configuration | training img/s | vs eager NCHW | first epoch s "
           "(compiles) |", "|---|---|---:|---:|---:|"]
    for ds, r in b["datasets"].items():
        for config, c in r["configurations"].items():
            out.append(f"| {ds} `{r['phase']}` (`{r['recipe']}`, {r['batch_size']}) | {config} | "
                       f"{c['images_per_s']:,.0f} | {r['speedup_over_eager_nchw'][config]:.2f}x | "
                       f"{c['first_epoch_s']:,.1f} |")
    return out + [""]


def tta_markdown(root: Path | None = None) -> str:
    """Flip test-time augmentation on the finished runs' validation splits (experiments/bench_tta.py)."""
    return per_benchmark_file("tta-", "bench_tta.py", _tta, root)


def _tta(name: str, b: dict) -> list[str]:
    out = [f"`{name}` — {b['device']}, torch {b['torch']}; mean gain {b['mean_gain_points']:+.2f} points:", "",
           "| run | val images | val acc | with flip TTA | gain (points) | eval s | eval s with TTA |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    out += [f"| `{run}` | {r['val_images']:,} | {r['val_acc']:.2%} | {r['val_acc_tta']:.2%} | "
            f"{r['gain_points']:+.2f} | {r['eval_s']:.1f} | {r['eval_s_tta']:.1f} |" for run, r in b["runs"].items()]
    return out + [""]


# Contestants of experiments/bench_time_to_accuracy.py, in the order a reader compares them.
TTA_LABELS = {"tinycnn": "tinycnn engine, the final's recipe", "plain_loop": "plain DataLoader loop",
              "composer": "Composer peer", "tinycnn_fast": "tinycnn engine, `fast` recipe"}


def time_to_accuracy_markdown(root: Path | None = None) -> str:
    """Seconds and epochs until the validation split first reaches each target, per contestant,
    with the ratio to tinycnn's own figure (experiments/bench_time_to_accuracy.py)."""
    return per_benchmark_file("time-to-accuracy-", "bench_time_to_accuracy.py", _time_to_accuracy, root)


def _time_to_accuracy(name: str, b: dict) -> list[str]:
    out = []
    for ds, r in b["datasets"].items():
        split = r["val_split"]
        peers = "".join(f"; {TTA_LABELS.get(n, n)}: {c['engine']}" for n, c in r["contestants"].items()
                        if c.get("engine"))
        out += [f"`{name}` — {ds}, the `{r['phase']}` final, {b['device']}, torch {b['torch']}{peers}; "
                f"validation split of {split['val_size']:,} images (split_seed {split['split_seed']}), "
                f"seed {b['seed']}:", ""]
        out += _tta_table(r) + [""]
    return out


def _tta_table(r: dict) -> list[str]:
    targets = [f"{t:.3f}" for t in r["targets"]]
    head = " | ".join(f"first val ≥ {float(t):.1%}: epoch, s (vs tinycnn)" for t in targets)
    lines = [f"| contestant | recipe | epochs | {head} | training s | final val | test (final weights) |",
             "|---|---|---:|" + "---|" * len(targets) + "---:|---:|---:|"]
    ratios = r.get("seconds_over_tinycnn", {})
    for name in sorted(r["contestants"], key=lambda n: list(TTA_LABELS).index(n) if n in TTA_LABELS else 99):
        c = r["contestants"][name]
        label = c.get("label") or TTA_LABELS.get(name, name)
        if "skipped" in c:
            lines.append(f"| {label} | skipped: {c['skipped']} |" + " |" * (len(targets) + 4))
            continue
        cells = [_tta_cell(c["time_to"][t], ratios.get(name, {}).get(t)) for t in targets]
        changes = ", ".join(f"{k} {a} → {b}" for k, (a, b) in c.get("recipe_changes", {}).items())
        recipe = f"`{c['recipe']}`" + (f" ({changes})" if changes else "")
        val = c.get("final_weights_val_acc", c["final_val_acc"])
        lines.append(f"| {label} | {recipe} | {c['epochs']} | " + " | ".join(cells)
                     + f" | {c['train_time_s']:,.0f} | {val:.2%} ({c['final_weights']}) | {c['test_acc']:.2%} |")
    return lines


def _tta_cell(hit: dict | None, ratio: float | None) -> str:
    if hit is None:
        return "not reached"
    return f"{hit['epoch']}, {hit['train_time_s']:,.0f} s" + (f" ({ratio:.2f}x)" if ratio is not None else "")
