"""The `tinycnn` command: thin. It parses, calls the library, and prints with rich.

Every TinyCNNError becomes one red line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich import box
from rich.table import Table

from .datasets import DATASETS
from .errors import ExportError, RunInterrupted, SpecError, TinyCNNError

DESCRIPTION = ("Build, train, verify and report tiny CNNs for MNIST (<= 1,500 parameters) and "
               "CIFAR-10 (<= 140,000), one declared phase at a time.")

console = Console()
err_console = Console(stderr=True)


def _dataset_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help=f"one of: {', '.join(DATASETS)}")


def _threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's own; on a busy machine 1 per run is much faster)")


def _ram_budget_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ram-budget", type=int, default=None, metavar="BYTES",
                   help="activation RAM of the target chip: the planned int8 arena of one forward pass "
                        "(computed from the spec, no training) must fit it")


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}


def duration_seconds(text: str) -> float:
    """``--timeout`` values: seconds, or a number with s, m or h (``5400``, ``90m``, ``1.5h``)."""
    value, unit = (text[:-1], text[-1]) if text and text[-1] in DURATION_UNITS else (text, "s")
    try:
        seconds = float(value) * DURATION_UNITS[unit]
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; accepted: a positive number of seconds, "
                                         f"or with s, m or h (5400, 90m, 1.5h)")
    return seconds


# Under this many terminal columns the ladder table leaves out its "change" column (listed below it):
# squeezed beside seven number columns it collapses to nothing and rich truncates the numbers.
WIDE_TABLE_COLUMNS = 130


def _ladder_table(rows: list[dict], title: str, with_change: bool) -> Table:
    from .phases_table import budget_status

    table = Table(title=title, pad_edge=with_change, box=box.HEAVY_HEAD if with_change else box.SIMPLE_HEAD)
    weights, peak = ("int8 weights", "peak RAM") if with_change else ("int8\nweights", "peak\nRAM")
    cells = [[r["phase"], *([r["change"]] if with_change else []), f"{r['params']:,}", f"{r['macs']:,}",
              f"{r['int8_weight_bytes']:,} B", f"{r['peak_ram_bytes']:,} B", f"{r['arena_bytes']:,} B",
              "[green]fits[/]" if r["within_budget"] else f"[red]{budget_status(r)}[/]"] for r in rows]
    names = ["phase", *(["change"] if with_change else []), "params", "MACs", weights, peak, "arena", "budget"]
    for i, name in enumerate(names):
        if name in ("change", "budget"):  # the text columns wrap; the numbers keep their full width
            table.add_column(name, ratio=1 if name == "change" else None)
        else:
            widest = max(len(row[i]) for row in cells)
            table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True, min_width=widest,
                             style="bold" if i == 0 else None)
    for row in cells:
        table.add_row(*row)
    return table


def cmd_phases(args: argparse.Namespace) -> int:
    from .phases_table import phase_rows

    rows = phase_rows(args.dataset, args.budget, ram_budget=args.ram_budget)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    ram = f", {args.ram_budget:,} B of RAM" if args.ram_budget is not None else ""
    title = f"{args.dataset} ladder (budget {rows[0]['budget']:,} parameters{ram})"
    narrow = console.width < WIDE_TABLE_COLUMNS
    console.print(_ladder_table(rows, title, with_change=not narrow))
    if narrow:  # the descriptions go under the table, where they can wrap, instead of squeezing the numbers
        for r in rows:
            console.print(f"[bold]{r['phase']}[/]: {r['change']}")
    if args.arch:
        for r in rows:
            console.print(f"[bold]{r['phase']}[/]: {r['arch']}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from .budget import count_macs, fit_width
    from .build import build
    from .ladders import get_phase
    from .memory import planned_arena_bytes

    phase = get_phase(args.dataset, args.phase)
    fit = fit_width(phase, args.budget, step=args.step, multiple=args.multiple, ram_budget=args.ram_budget)
    macs, arena = count_macs(build(fit.spec), args.dataset), planned_arena_bytes(fit.spec)
    result = {"dataset": args.dataset, "phase": phase.name, "budget": args.budget, "ram_budget": args.ram_budget,
              "width": fit.width, "params": fit.params, "macs": macs, "arena_bytes": arena, "arch": fit.spec.arch}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        ram = f", RAM budget {args.ram_budget:,} B" if args.ram_budget is not None else ""
        console.print(f"[bold]{phase.name}[/] x{fit.width}: {fit.params:,} params (budget {args.budget:,}{ram}), "
                      f"{macs:,} MACs, {arena:,} B int8 activation arena")
        console.print(f"arch: {fit.spec.arch}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinycnn", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phases", help="list a ladder's phases with params, MACs and budget status")
    _dataset_arg(p)
    p.add_argument("--budget", type=int, default=None, help="compare against this budget instead")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--arch", action="store_true", help="also print each phase's architecture string")
    _ram_budget_arg(p)
    p.set_defaults(func=cmd_phases)

    p = sub.add_parser("fit", help="widest width multiplier of a phase that fits a budget")
    _dataset_arg(p)
    p.add_argument("--phase", default="final")
    p.add_argument("--budget", type=int, required=True)
    p.add_argument("--step", type=float, default=0.01, help="multiplier grid step (default 0.01)")
    p.add_argument("--multiple", type=int, default=1,
                   help="round every width to a multiple of this (e.g. 8: faster CPU kernels)")
    _ram_budget_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_fit)

    _add_training_commands(sub)
    _add_study_commands(sub)
    _add_deploy_commands(sub)
    _add_search_command(sub)
    _add_prune_command(sub)
    _add_robust_command(sub)
    return parser


def _add_robust_command(sub) -> None:
    p = sub.add_parser("robust", help="accuracy under common corruptions (MNIST-C / CIFAR-10-C style) of a model file")
    p.add_argument("model", help="path to a model.pt written by tinycnn")
    p.add_argument("--seed", type=int, default=0, help="seed of the corruptions (default 0)")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="test (default) or the run's own validation split, for tuning (needs its metrics.json)")
    p.add_argument("--n", type=int, default=0, metavar="N",
                   help="corrupt a seeded random N of the split's images: a quicker estimate (default: all)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--save", action="store_true",
                   help="also write it beside the model: robust.json (robust-val.json for --split val, "
                        "-nN for a sample), which reports read")
    _threads_arg(p)
    p.set_defaults(func=cmd_robust)


def _robust_split(args: argparse.Namespace, model):
    """The split to corrupt: the test set, or the validation split the model was trained with
    (`_training_split`; here a model without a record of it is refused, not given defaults)."""
    from .data import load_dataset, load_splits

    if args.split == "test":
        return load_dataset(model.spec.dataset, args.data_dir).test
    val_size, split_seed = _training_split(args, model, require_record=True)
    return load_splits(model.spec.dataset, val_size, args.data_dir, split_seed=split_seed).val


def cmd_robust(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .device import set_threads
    from .atomic import atomic_write_text
    from .robust import robustness, subset

    if args.n < 0:
        raise SpecError(f"--n must be >= 0 (0: every image), got {args.n}")
    threads = set_threads(args.threads)
    model = load_model(args.model)
    split = _robust_split(args, model)
    if args.n > len(split):  # a sample "of 100000" would be recorded (and saved as one) for all 10,000
        raise SpecError(f"--n {args.n} is more than the {len(split):,} images of the {args.split} split; "
                        f"give fewer, or 0 for every image")
    n = 0 if args.n == len(split) else args.n  # every image: recorded and saved as the full result
    split = subset(split, n)
    result = robustness(model, model.spec.dataset, split, seed=args.seed)
    result.update(model=str(args.model), split=args.split, subset=n or None, threads=threads)
    if args.save:
        name = "robust" + ("-val" if args.split == "val" else "") + (f"-n{n}" if n else "") + ".json"
        atomic_write_text(Path(args.model).parent / name, json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    table = Table(title=f"{args.model}: {result['benchmark']}, {result['n']:,} {args.split} images, seed {args.seed}")
    for col in ("corruption", "accuracy", "drop"):
        table.add_column(col, justify="left" if col == "corruption" else "right")
    for name, row in result["corruptions"].items():
        table.add_row(name, f"{row['accuracy']:.2%}", f"{row['drop'] * 100:+.2f} pt")
    console.print(table)
    console.print(f"clean [bold]{result['clean']:.2%}[/], mean corrupted [bold]{result['mean']:.2%}[/] "
                  f"(drop {result['drop'] * 100:.2f} pt; worst: {', '.join(result['worst'])}) in {result['seconds']:.0f} s")
    return 0


def _add_training_commands(sub) -> None:
    p = sub.add_parser("train", help="train one phase with a recipe; writes model.pt and metrics.json")
    p.add_argument("dataset", nargs="?", help=f"one of: {', '.join(DATASETS)} (omit with --resume)")
    p.add_argument("--phase", default=None, help="a phase of the ladder (default: final)")
    p.add_argument("--arch", default=None, help="train a custom architecture string instead of a phase")
    p.add_argument("--recipe", default=None,
                   help="a recipe name in experiments/recipes/<dataset>.toml, or a .toml path "
                        "(default: the phase's own recipe, `default` for most)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one recipe field (repeatable), e.g. --set epochs=5")
    p.add_argument("--seed", type=int, default=None, help="shorthand for --set seed=N")
    p.add_argument("--out", default=None, help="run directory (default: runs/<dataset>/<phase>/seed<k>; "
                                                  "$TINYCNN_RUNS replaces runs/)")
    p.add_argument("--force", action="store_true",
                   help="start over: move the run already in the directory aside (to .replaced-<name>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue a killed run from its checkpoint")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--data-dir", default=None, help="folder with <dataset>.npz (default: $TINYCNN_DATA or ~/.cache/tinycnn)")
    p.add_argument("--budget", type=int, default=None, help="refuse to train a model over this many parameters")
    p.add_argument("--quiet", action="store_true", help="log lines only, no live display")
    _threads_arg(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="accuracy, per-class accuracy and confusion matrix of a model file")
    p.add_argument("model", help="path to a model.pt written by tinycnn")
    p.add_argument("--dataset", default=None, help="default: the dataset the model was built for")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--val-size", type=int, default=None,
                   help="size of the validation split; default: the model's metrics.json recipe")
    p.add_argument("--split-seed", type=int, default=None,
                   help="seed that drew the validation split; default: the model's metrics.json recipe")
    p.add_argument("--tta", action="store_true", help="average with horizontally flipped images (CIFAR-10 only)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    _threads_arg(p)
    p.set_defaults(func=cmd_eval)


def _add_study_commands(sub) -> None:
    p = sub.add_parser("ladder", help="train every phase in order, then write the ladder report")
    _dataset_arg(p)
    p.add_argument("--recipe", default=None, help="one recipe for every phase (default: each phase's own)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seeds", type=int, default=1, help="seeds per intermediate phase (default 1)")
    p.add_argument("--final-seeds", type=int, default=3, help="seeds for the final phase (default 3)")
    p.add_argument("--phases", default=None, help="comma-separated subset of phases")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    _threads_arg(p)
    p.set_defaults(func=cmd_ladder)

    p = sub.add_parser("ablate", help="add one technique at a time on the final architecture")
    _dataset_arg(p)
    p.add_argument("--epochs", type=int, default=None, help="epochs per step (default: the plain recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", default=None, help="comma-separated subset of steps")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    _threads_arg(p)
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("report", help="write report.md/.json and figures from committed runs")
    _dataset_arg(p)
    p.add_argument("--no-figures", action="store_true")
    p.set_defaults(func=cmd_report)


def _add_deploy_commands(sub) -> None:
    p = sub.add_parser("export", help="ONNX, int8 ONNX and C files of a model, checked with onnxruntime")
    p.add_argument("model", metavar="MODEL_OR_RUN", help="a model.pt written by tinycnn, or a run directory holding one")
    p.add_argument("--format", default="int8",
                   help="onnx: float model.onnx (batch 1) and model.dynamic.onnx (any batch); int8: those and "
                        "model.int8.onnx, quantised with onnxruntime; c: those and model.c/.h, golden vectors "
                        "and a harness (tinycnn's own C: one static arena, no heap, no libm), compiled with the system C compiler to "
                        "check them bit for bit against onnxruntime on the test set (default: int8)")
    patch = p.add_mutually_exclusive_group()
    patch.add_argument("--patch", action="store_true",
                       help="with --format c: run the first stage (up to its first downsampling) band by band, "
                            "halo rows recomputed (MCUNetV2's patch-based inference), at the band height of the "
                            "smallest arena; falls back to whole ops, saying why, when the stage cannot be tiled")
    patch.add_argument("--patch-rows", type=int, default=None, metavar="N",
                       help="as --patch with N output rows of the stage a band (an error if it cannot be tiled)")
    p.add_argument("--out", default=None, help="output directory (default: beside the model)")
    p.add_argument("--calibration", type=int, default=500,
                   help="training images that calibrate the int8 ranges (default 500; never test images)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", action="store_true", help="print export.json's record instead of a summary")
    _threads_arg(p)
    p.set_defaults(func=cmd_export)


def _add_prune_command(sub) -> None:
    p = sub.add_parser("prune", help="structured channel pruning of a trained model to a smaller budget, then fine-tuning")
    p.add_argument("model", metavar="MODEL_OR_RUN", help="a model.pt written by tinycnn, or a run directory holding one")
    p.add_argument("--budget", type=int, required=True, help="deployed parameters of the pruned network")
    p.add_argument("--recipe", default="finetune", help="fine-tuning recipe (default: finetune in "
                                                        "experiments/recipes/<dataset>.toml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one recipe field (repeatable)")
    p.add_argument("--seed", type=int, default=None, help="shorthand for --set seed=N")
    p.add_argument("--out", default=None, help="run directory (default: runs/<dataset>/<phase>-pruned<budget>/seed<k>)")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--quiet", action="store_true", help="log lines only, no live display")
    _threads_arg(p)
    p.set_defaults(func=cmd_prune)


def cmd_prune(args: argparse.Namespace) -> int:
    from .device import set_threads
    from .pipeline import run_or_reuse

    set_threads(args.threads)
    req = _prune_request(args)
    console.print(f"pruned {req.origin['model']} ({req.origin['params']:,} params) to `{req.spec.arch}` "
                  f"({req.origin['pruned_params']:,} params); fine-tuning with recipe {req.recipe_name}")
    metrics = run_or_reuse(req, "new")
    console.print(f"[bold green]{req.label}[/]: test accuracy {metrics['test_accuracy']:.2%} "
                  f"({metrics['final_weights']} weights, {metrics['params']:,} params) -> {req.run_dir}")
    return 0


def _prune_request(args: argparse.Namespace):
    from dataclasses import replace

    from .budget import count_params
    from .checkpoint import load_model
    from .export import resolve_model_path
    from .pipeline import RunRequest
    from .prune import prune_weights, pruning_target
    from .recipe import load_recipe
    from .results import invoked_command, portable, run_dir_for, user_runs_root

    path = resolve_model_path(args.model)
    model = load_model(path)
    parent, target = model.spec, pruning_target(model.spec, args.budget)
    spec = replace(target.spec, name=f"{parent.name}-pruned{args.budget}",
                   change=f"{parent.name} pruned to {target.params:,} params (width x{target.width:g}), fine-tuned")
    overrides = _recipe_overrides(args)
    recipe = load_recipe(parent.dataset, args.recipe, overrides)
    run_dir = Path(args.out) if args.out else run_dir_for(spec, recipe.seed, root=user_runs_root())
    origin = {"model": portable(path), "arch": parent.arch, "params": count_params(model),
              "pruned_params": target.params, "width": target.width,
              "method": "structured channel pruning, group L1 magnitude (torch-pruning)"}
    return RunRequest(spec, recipe, run_dir, recipe_name=args.recipe, command=invoked_command() or "",
                      data_dir=args.data_dir, device=args.device, quiet=args.quiet,
                      initial_weights=prune_weights(model, parent, target.spec), origin=origin)


def _add_search_command(sub) -> None:
    p = sub.add_parser("search", help="Optuna search for the best net and recipe under a budget (val split only); "
                                      "`tinycnn search report STUDY` reports a study, `tinycnn search retrain "
                                      "STUDY` retrains its best trial",
                       epilog=f"Report a study: {SEARCH_REPORT_USAGE} (see `tinycnn search report --help`). "
                              f"Retrain its best trial over seeds: {SEARCH_RETRAIN_USAGE} "
                              f"(see `tinycnn search retrain --help`).")
    _dataset_arg(p)
    p.add_argument("--budget", type=int, required=True, help="deployed parameters every candidate must fit")
    p.add_argument("--space", default=None, help="search space TOML (default: experiments/spaces/<dataset>.toml)")
    p.add_argument("--study", default=None, help="study name; the same name continues it (default: <dataset>-<budget>)")
    p.add_argument("--trials", type=int, default=10, help="trials to add (default 10)")
    p.add_argument("--timeout", type=duration_seconds, default=None, metavar="DURATION",
                   help="start no trial after this long (5400, 90m, 1.5h): the running one finishes and is kept, "
                        "so a sitting with an end time stops by itself; the same command continues it")
    p.add_argument("--sampler", default="tpe", help="tpe, random, grid or nsga2 (default tpe)")
    p.add_argument("--pruner", default=None, help="median, halving, hyperband or none (default median)")
    p.add_argument("--objective", default="val", help="val, pareto (val vs params) or pareto-macs (default val)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on one journal (one thread each)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads of a single worker (default 1: torch's default on a busy machine collapses "
                        "to a tenth of the speed; spawned workers use one each)")
    p.add_argument("--storage", default=None, help="journal file (default experiments/search/<study>/journal.log), "
                                                   "or postgresql://user:pass@host/db for many machines")
    p.add_argument("--seed", type=int, default=None, help="sampler seed")
    _ram_budget_arg(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_search)


SEARCH_REPORT_USAGE = "tinycnn search report STUDY [--storage URL_OR_PATH] [--out DIR]"


def build_search_report_parser() -> argparse.ArgumentParser:
    """`tinycnn search report`, parsed apart so that `tinycnn search DATASET` keeps its positional."""
    p = argparse.ArgumentParser(prog="tinycnn search report", description=(
        "Write a study's report: report.md and report.json (best trials with arch strings and recipes, trial "
        "counts) and figures (optimisation history, params vs val accuracy with the ladder final and published "
        "anchors, parameter importances), in the study's folder."))
    p.add_argument("study", help="study name (as `tinycnn search --study`, default <dataset>-<budget>)")
    p.add_argument("--storage", default=None, help="journal file (default experiments/search/<study>/journal.log) "
                                                   "or postgresql://user:pass@host/db")
    p.add_argument("--out", default=None, help="folder for the report (default: the journal's folder)")
    p.add_argument("--top", type=int, default=10, help="rows in the best-trials table (default 10)")
    p.set_defaults(func=cmd_search_report)
    return p


def cmd_search_report(args: argparse.Namespace) -> int:
    from .search_report import write_search_report

    for path in write_search_report(args.study, args.storage, args.out, top=args.top):
        console.print(f"wrote {path}", highlight=False)
    return 0


SEARCH_RETRAIN_USAGE = "tinycnn search retrain STUDY [--trial N] [--seeds 0 1 2] [--storage URL_OR_PATH] [--out-root DIR]"


def build_search_retrain_parser() -> argparse.ArgumentParser:
    """`tinycnn search retrain`, parsed apart like `tinycnn search report`."""
    p = argparse.ArgumentParser(prog="tinycnn search retrain", description=(
        "Retrain a study's best trial (the complete trial with the highest validation accuracy; a tie: the "
        "fewer deployed parameters) or --trial N as ordinary runs, one per seed, each scoring the test split "
        "once at the end, into <results>/<dataset>/search/<study>/trial<N>/seed<k>, with retrain.json beside "
        "them. A finished seed is reused, an unfinished one resumes."))
    p.add_argument("study", help="study name (as `tinycnn search --study`, default <dataset>-<budget>)")
    p.add_argument("--trial", type=int, default=None, help="retrain this complete trial instead of the best "
                                                          "(needed for a two-objective study)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="K", help="seeds (default 0 1 2)")
    p.add_argument("--storage", default=None, help="journal file (default experiments/search/<study>/journal.log) "
                                                   "or postgresql://user:pass@host/db")
    p.add_argument("--out-root", default=None, help="results root instead of experiments/results "
                                                    "(or $TINYCNN_RESULTS)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--data-dir", default=None, help="folder with <dataset>.npz (default: $TINYCNN_DATA or ~/.cache/tinycnn)")
    p.add_argument("--quiet", action="store_true", help="log lines only, no live display")
    _threads_arg(p)
    p.set_defaults(func=cmd_search_retrain)
    return p


def cmd_search_retrain(args: argparse.Namespace) -> int:
    from .device import set_threads
    from .search_retrain import RetrainRequest, retrain

    set_threads(args.threads)
    record = retrain(RetrainRequest(args.study, args.trial, tuple(args.seeds), args.storage,
                                    Path(args.out_root) if args.out_root else None, args.data_dir, args.device,
                                    args.quiet), log=lambda line: console.print(line, highlight=False))
    table = Table(title=f"study {record['study']}, trial {record['trial']} retrained "
                        f"(val {record['val_accuracy_in_study']:.2%} in the study)")
    for col in ("seed", "val acc", "test acc", "params"):
        table.add_column(col, justify="right")
    for run in record["runs"]:
        table.add_row(str(run["seed"]), f"{run['val_accuracy']:.2%}", f"{run['test_accuracy']:.2%}",
                      f"{record['params']:,}")
    console.print(table)
    sd = f" ± {record['test_sd']:.2%}" if record["test_sd"] is not None else ""
    console.print(f"test accuracy [bold]{record['test_mean']:.2%}{sd}[/] over {len(record['runs'])} seed(s) "
                  f"(final weights): `{record['arch']}`", highlight=False)
    return 0


def _log_line(message: str, **kw) -> None:
    """One log line, never broken at the console's width: rich wraps at 80 columns when
    stdout is a file, which splits a trial's arch string and recipe over several lines."""
    console.print(message, soft_wrap=True, **kw)


def _run_search_live(args: argparse.Namespace):
    """`run_search`, with a live rich status line (trials done / pruned / best) on a terminal,
    printed once per finished trial into a log file; the log lines print above it either way.
    One worker: an Optuna callback after each trial updates the line; several: the parent polls
    the storage every few seconds and prints the line when it changes (the workers write to the
    terminal themselves, which a Live would garble)."""
    from rich.live import Live

    from .search import run_search
    from .search_report import SearchProgress

    progress = SearchProgress(total=args.trials)

    def search(callbacks=(), poll=None):
        return run_search(args.dataset, args.budget, args.space, args.study, args.trials, args.sampler, args.pruner,
                          args.objective, args.workers, args.storage, args.data_dir, log=_log_line,
                          device=args.device, seed=args.seed, ram_budget=args.ram_budget, callbacks=callbacks,
                          poll=poll, timeout_s=args.timeout)

    if args.workers > 1:  # the workers print to the terminal themselves: a line per change, not a Live
        shown = [progress.line()]

        def poll(trials):
            progress.observe(trials)
            if progress.line() != shown[-1]:
                shown.append(progress.line())
                _log_line(f"[dim]progress: {shown[-1]}[/]", highlight=False)
        return search(poll=poll)
    if not console.is_terminal:  # a log file: the status line once per finished trial
        def print_line(study, trial):
            progress(study, trial)
            _log_line(f"progress: {progress.line()}", highlight=False)
        return search((print_line,))
    with Live(progress.line(), console=console, refresh_per_second=2, transient=True) as live:
        def show(study, trial):
            progress(study, trial)
            live.update(progress.line(), refresh=True)
        return search((show,))


def cmd_search(args: argparse.Namespace) -> int:
    from .device import set_threads
    from .search import best_table

    set_threads(args.threads)
    study = _run_search_live(args)
    table = Table(title=f"study {study.study_name}: best trials (validation accuracy)")
    for col in ("trial", "val acc", "params", "arch"):
        table.add_column(col)
    for row in best_table(study)[:5]:
        table.add_row(str(row["trial"]), f"{row['val_accuracy']:.2%}", f"{row['params']:,}", row["arch"])
    console.print(table)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .device import set_threads
    from .export import export_run

    set_threads(args.threads)
    if (args.patch or args.patch_rows is not None) and args.format != "c":
        raise ExportError("--patch and --patch-rows apply to --format c only")
    if args.patch_rows is not None and args.patch_rows < 1:  # before the ONNX and int8 work, not after
        raise ExportError(f"--patch-rows must be >= 1 (output rows of the first stage per band), got {args.patch_rows}")
    record = export_run(args.model, args.out, (args.format,), args.calibration, args.data_dir,
                        log=(lambda _: None) if args.json else console.print,
                        c_patch=args.patch_rows if args.patch_rows is not None else (True if args.patch else None))
    if args.json:
        print(json.dumps(record, indent=2))
        return 0
    summary = f"float {record['float']['test_accuracy']:.2%}"
    if "int8" in record:
        int8 = record["int8"]
        summary += f", int8 {int8['test_accuracy']:.2%} ({int8['int8_weight_bytes']:,} B of int8 weights)"
    if "c" in record:
        check = record["c"]["check"]
        summary += f", C {check['bit_exact']:,}/{check['images']:,} bit-exact"
    console.print(f"[bold green]exported[/] {record['model']}: {summary} -> {record['out_dir']}")
    return 0


def _comma_list(text: str | None, flag: str, accepted: str) -> list[str] | None:
    """A comma-separated flag's names (None: not given, meaning all); an empty one is refused,
    not read as "all"."""
    if text is None:
        return None
    if not text.strip():
        raise SpecError(f"{flag} is empty; give comma-separated {accepted}, or leave it out for all")
    return text.split(",")


def cmd_ladder(args: argparse.Namespace) -> int:
    from .device import set_threads
    from .studies import run_ladder
    from .report import write_report

    set_threads(args.threads)
    phases = _comma_list(args.phases, "--phases", "phases, e.g. --phases plain,dw")
    run_ladder(args.dataset, args.recipe, args.overrides, args.seeds, args.final_seeds, phases,
               data_dir=args.data_dir, device=args.device, log=console.print)
    console.print(f"report: {write_report(args.dataset)}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from .device import set_threads
    from .studies import run_ablation
    from .report import write_report

    set_threads(args.threads)
    steps = _comma_list(args.steps, "--steps", "ablation steps, e.g. --steps plain,clr")
    run_ablation(args.dataset, args.epochs, args.seed, args.overrides, steps,
                 data_dir=args.data_dir, device=args.device, log=console.print)
    console.print(f"report: {write_report(args.dataset)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(args.dataset)
    console.print(f"wrote {path} and {path.with_suffix('.json')}")
    if not args.no_figures:
        from .figures import write_figures

        for fig in write_figures(args.dataset):
            console.print(f"wrote {fig}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .budget import check_budget
    from .device import set_threads
    from .pipeline import run_or_reuse

    set_threads(args.threads)
    req, mode = (_resume_request(args), "resume") if args.resume else (_new_request(args), "force" if args.force else "new")
    if args.budget is not None:
        check_budget(req.spec, args.budget)
    metrics = run_or_reuse(req, mode)
    console.print(f"[bold green]{req.label}[/]: test accuracy {metrics['test_accuracy']:.2%} "
                  f"({metrics['final_weights']} weights, {metrics['params']:,} params) -> {req.run_dir}")
    return 0


def _train_spec(args: argparse.Namespace, dataset: str):
    from .ladders import get_phase
    from .spec import PhaseSpec

    if args.arch is None:
        return get_phase(dataset, args.phase or "final")
    if args.phase is not None:
        raise SpecError("give --phase or --arch, not both")
    if not args.arch.strip():
        raise SpecError("--arch is empty; give block strings ending with a head, e.g. --arch 'conv_k3_c8 max sep_k3_c16 gap'")
    return PhaseSpec.from_arch("custom", dataset, args.arch, "custom architecture")


def _recipe_overrides(args: argparse.Namespace) -> list[str]:
    """``--set KEY=VALUE`` flags, with ``--seed N`` as one more."""
    return args.overrides + ([f"seed={args.seed}"] if args.seed is not None else [])


def _new_request(args: argparse.Namespace):
    from .ladders import recipe_for
    from .pipeline import RunRequest
    from .recipe import load_recipe
    from .results import invoked_command, run_dir_for, user_runs_root

    if not args.dataset:
        raise SpecError(f"train needs a dataset ({', '.join(DATASETS)}) or --resume RUN_DIR")
    spec = _train_spec(args, args.dataset)
    overrides = _recipe_overrides(args)
    recipe_name = args.recipe or recipe_for(spec)
    recipe = load_recipe(args.dataset, recipe_name, overrides)
    tag = "" if recipe_name == recipe_for(spec) else Path(recipe_name).stem
    run_dir = Path(args.out) if args.out else run_dir_for(spec, recipe.seed, root=user_runs_root(), tag=tag)
    return RunRequest(spec, recipe, run_dir, recipe_name=recipe_name, command=invoked_command() or "",
                      data_dir=args.data_dir, device=args.device, quiet=args.quiet)


def _resume_request(args: argparse.Namespace):
    """The checkpoint decides everything; a flag that says otherwise is refused by name."""
    from .checkpoint import load_checkpoint
    from .pipeline import RunRequest
    from .recipe import Recipe
    from .results import has_checkpoint, is_finished
    from .spec import PhaseSpec

    run_dir = Path(args.resume)
    if is_finished(run_dir) and not has_checkpoint(run_dir):
        raise SpecError(f"{run_dir} holds a finished run (model.pt and metrics.json): nothing to resume; "
                        f"train a new one without --resume")
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    spec, recipe = PhaseSpec.from_dict(ckpt["spec"]), Recipe.from_dict(ckpt["recipe"])
    conflicts = _resume_conflicts(args, spec, recipe, run_dir)
    if conflicts:
        raise SpecError(f"--resume continues {run_dir} exactly as its checkpoint records; these flags contradict "
                        f"it: {'; '.join(conflicts)}. Drop them, or start a new run (without --resume)")
    return RunRequest(spec, recipe, run_dir, recipe_name=ckpt.get("recipe_name", ""),
                      data_dir=args.data_dir, device=args.device, quiet=args.quiet)


def _resume_conflicts(args: argparse.Namespace, spec, recipe, run_dir: Path) -> list[str]:
    from dataclasses import fields

    from .recipe import apply_overrides, load_recipe

    found = []
    if args.dataset and args.dataset != spec.dataset:
        found.append(f"dataset {args.dataset} (the checkpoint is {spec.dataset})")
    if args.phase is not None or args.arch is not None:
        asked = _train_spec(args, spec.dataset)
        if asked.arch != spec.arch:
            found.append(f"{'--arch' if args.arch is not None else '--phase ' + args.phase} (the checkpoint trains `{spec.arch}`)")
    overrides = _recipe_overrides(args)
    asked = load_recipe(spec.dataset, args.recipe, overrides) if args.recipe else apply_overrides(recipe, overrides)
    found += [f"{f.name}={getattr(asked, f.name)!r} (the checkpoint has {getattr(recipe, f.name)!r})"
              for f in fields(recipe) if getattr(asked, f.name) != getattr(recipe, f.name)]
    if args.out and Path(args.out).resolve() != run_dir.resolve():
        found.append(f"--out {args.out} (the run lives in {run_dir})")
    if args.force:
        found.append("--force (it starts over; --resume continues)")
    return found


def _training_split(args: argparse.Namespace, model, require_record: bool = False) -> tuple[int, int]:
    """The (val_size, split_seed) the model was trained with, so `--split val` never scores
    images the model was fitted on: explicit flags win, then the model file's own record,
    then (for files written before it kept one) the run's metrics.json, then the defaults
    (or, with ``require_record``, an error naming the missing file)."""
    from .recipe import Recipe

    recorded = {k: model.info[k] for k in ("val_size", "split_seed") if k in model.info}
    if len(recorded) < 2:
        metrics_path = Path(args.model).with_name("metrics.json")
        try:
            r = Recipe.from_dict(json.loads(metrics_path.read_text()).get("recipe", {}))
        except (OSError, json.JSONDecodeError, TinyCNNError) as e:
            if require_record:
                raise SpecError(f"--split val needs the run's metrics.json beside the model, recording "
                                f"recipe.val_size and recipe.split_seed; could not read {metrics_path}: {e}") from e
            r = Recipe()  # no readable record beside it: the defaults, as for a model file on its own
        recorded = {"val_size": r.val_size, "split_seed": r.split_seed, **recorded}
    val_size = recorded["val_size"] if getattr(args, "val_size", None) is None else args.val_size
    split_seed = recorded["split_seed"] if getattr(args, "split_seed", None) is None else args.split_seed
    if args.split == "val" and val_size < 1:
        given = (f"got --val-size {val_size}" if getattr(args, "val_size", None) is not None
                 else f"{args.model} was trained without one (val_size = {val_size}); use --split test")
        raise SpecError(f"--split val needs a validation split of at least 1 image; {given}")
    if split_seed < 0:  # no run draws its split with one (recipes refuse it): these images were trained on
        raise SpecError(f"--split-seed must be >= 0, as a recipe's split_seed is, got {split_seed}")
    return val_size, split_seed


def _model_label(args: argparse.Namespace, model) -> str:
    """Phase, network and recipe: a ladder phase may be another phase's network trained with
    its own recipe (MNIST's `sam` is `deep`'s network with the `sam` recipe)."""
    from .ladders import phase_named_by

    recipe = model.info.get("recipe_name")
    if recipe is None:
        try:
            recipe = json.loads(Path(args.model).with_name("metrics.json").read_text()).get("recipe_name")
        except (OSError, json.JSONDecodeError):
            recipe = None
    phase = phase_named_by(model.spec.dataset, model.spec.arch, recipe) or model.info.get("phase") or model.spec.name
    network = "" if phase == model.spec.name else f", {model.spec.name}'s network"
    return f"phase {phase}{network}" + (f", recipe {recipe}" if recipe else "")


def cmd_eval(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .data import load_splits
    from .datasets import dataset_info
    from .device import resolve_device, set_threads
    from .evaluate import evaluate

    set_threads(args.threads)
    device = resolve_device(args.device)
    model = load_model(args.model)
    dataset = args.dataset or model.spec.dataset
    info = dataset_info(dataset)
    if info.name != model.spec.dataset:
        raise SpecError(f"{args.model} was trained on {model.spec.dataset}; it cannot be evaluated on {info.name}")
    val_size, split_seed = _training_split(args, model)
    splits = load_splits(dataset, val_size, args.data_dir, split_seed=split_seed)
    split = splits.test if args.split == "test" else splits.val
    result = evaluate(model.to(device), split, info.num_classes, tta=args.tta)
    result.update({"model": str(args.model), "dataset": dataset, "split": args.split,
                   "phase": model.info.get("phase", model.spec.name), "label": _model_label(args, model),
                   "network": model.spec.name,
                   "arch": model.spec.arch})
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    console.print(f"[bold]{args.model}[/] ({_model_label(args, model)}; {dataset} {args.split}, {result['n']:,} images"
                  f"{', flip TTA' if args.tta else ''}): accuracy [bold]{result['accuracy']:.2%}[/]")
    console.print(_confusion_table(info, result))
    return 0


def _confusion_table(info, result: dict) -> Table:
    table = Table(title="confusion matrix (rows: true class, columns: predicted)")
    table.add_column("class")
    for j in range(info.num_classes):
        table.add_column(str(j), justify="right")
    table.add_column("acc", justify="right")
    for i, name in enumerate(info.classes):
        table.add_row(f"{i} {name}", *[str(v) for v in result["confusion"][i]], f"{result['per_class'][i]:.1%}")
    return table


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    search_commands = {"report": build_search_report_parser, "retrain": build_search_retrain_parser}
    if argv[:1] == ["search"] and argv[1:2] and argv[1] in search_commands:
        args = search_commands[argv[1]]().parse_args(argv[2:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RunInterrupted as e:
        err_console.print(escape(str(e)), highlight=False, soft_wrap=True)
        return 130
    except TinyCNNError as e:  # escaped: a message naming "[arch]" or "[recipe]" is text, not rich markup
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
