"""The `tinycnn` command: thin. It parses, calls the library, and prints with rich.

Every TinyCNNError becomes one red line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .datasets import DATASETS
from .errors import SpecError, TinyCNNError

console = Console()
err_console = Console(stderr=True)


def _dataset_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help=f"one of: {', '.join(DATASETS)}")


def cmd_phases(args: argparse.Namespace) -> int:
    from .phases_table import budget_status, phase_rows

    rows = phase_rows(args.dataset, args.budget)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title=f"{args.dataset} ladder (budget {rows[0]['budget']:,} parameters)")
    for col, kw in (("phase", {"style": "bold"}), ("change", {}), ("params", {"justify": "right"}),
                    ("MACs", {"justify": "right"}), ("budget", {})):
        table.add_column(col, **kw)
    for r in rows:
        status = "[green]fits[/]" if r["within_budget"] else f"[red]{budget_status(r)}[/]"
        table.add_row(r["phase"], r["change"], f"{r['params']:,}", f"{r['macs']:,}", status)
    console.print(table)
    if args.arch:
        for r in rows:
            console.print(f"[bold]{r['phase']}[/]: {r['arch']}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from .budget import count_macs, fit_width
    from .build import build
    from .ladders import get_phase

    phase = get_phase(args.dataset, args.phase)
    fit = fit_width(phase, args.budget, step=args.step, multiple=args.multiple)
    macs = count_macs(build(fit.spec), args.dataset)
    result = {"dataset": args.dataset, "phase": phase.name, "budget": args.budget, "width": fit.width,
              "params": fit.params, "macs": macs, "arch": fit.spec.arch}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        console.print(f"[bold]{phase.name}[/] x{fit.width}: {fit.params:,} params "
                      f"(budget {args.budget:,}), {macs:,} MACs")
        console.print(f"arch: {fit.spec.arch}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinycnn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phases", help="list a ladder's phases with params, MACs and budget status")
    _dataset_arg(p)
    p.add_argument("--budget", type=int, default=None, help="compare against this budget instead")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--arch", action="store_true", help="also print each phase's architecture string")
    p.set_defaults(func=cmd_phases)

    p = sub.add_parser("fit", help="widest width multiplier of a phase that fits a budget")
    _dataset_arg(p)
    p.add_argument("--phase", default="final")
    p.add_argument("--budget", type=int, required=True)
    p.add_argument("--step", type=float, default=0.01, help="multiplier grid step (default 0.01)")
    p.add_argument("--multiple", type=int, default=1,
                   help="round every width to a multiple of this (e.g. 8: faster CPU kernels)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_fit)

    _add_training_commands(sub)
    _add_study_commands(sub)
    return parser


def _add_training_commands(sub) -> None:
    p = sub.add_parser("train", help="train one phase with a recipe; writes model.pt and metrics.json")
    p.add_argument("dataset", nargs="?", help=f"one of: {', '.join(DATASETS)} (omit with --resume)")
    p.add_argument("--phase", default="final", help="a phase of the ladder (default: final)")
    p.add_argument("--arch", default=None, help="train a custom architecture string instead of a phase")
    p.add_argument("--recipe", default=None,
                   help="a recipe name in experiments/recipes/<dataset>.toml, or a .toml path "
                        "(default: the phase's own recipe, `default` for most)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one recipe field (repeatable), e.g. --set epochs=5")
    p.add_argument("--seed", type=int, default=None, help="shorthand for --set seed=N")
    p.add_argument("--out", default=None, help="run directory (default: experiments/results/<dataset>/<phase>/seed<k>)")
    p.add_argument("--force", action="store_true", help="overwrite a finished run directory")
    p.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue a killed run from its checkpoint")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--data-dir", default=None, help="folder with <dataset>.npz (default: $TINYCNN_DATA or ~/.cache/tinycnn)")
    p.add_argument("--budget", type=int, default=None, help="refuse to train a model over this many parameters")
    p.add_argument("--quiet", action="store_true", help="log lines only, no live display")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="accuracy, per-class accuracy and confusion matrix of a model file")
    p.add_argument("model", help="path to a model.pt written by tinycnn")
    p.add_argument("--dataset", default=None, help="default: the dataset the model was built for")
    p.add_argument("--split", choices=("test", "val"), default="test")
    p.add_argument("--val-size", type=int, default=None,
                   help="size of the validation split; default: the model's metrics.json recipe")
    p.add_argument("--split-seed", type=int, default=None,
                   help="seed that drew the validation split; default: the model's metrics.json recipe")
    p.add_argument("--tta", action="store_true", help="average with horizontally flipped images (CIFAR-10)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
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
    p.set_defaults(func=cmd_ladder)

    p = sub.add_parser("ablate", help="add one technique at a time on the final architecture")
    _dataset_arg(p)
    p.add_argument("--epochs", type=int, default=None, help="epochs per step (default: the plain recipe's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", default=None, help="comma-separated subset of steps")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("report", help="write report.md/.json and figures from committed runs")
    _dataset_arg(p)
    p.add_argument("--no-figures", action="store_true")
    p.set_defaults(func=cmd_report)


def cmd_ladder(args: argparse.Namespace) -> int:
    from .pipeline import run_ladder
    from .report import write_report

    phases = args.phases.split(",") if args.phases else None
    run_ladder(args.dataset, args.recipe, args.overrides, args.seeds, args.final_seeds, phases,
               data_dir=args.data_dir, device=args.device, log=console.print)
    console.print(f"report: {write_report(args.dataset)}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from .pipeline import run_ablation
    from .report import write_report

    steps = args.steps.split(",") if args.steps else None
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
    from .checkpoint import load_checkpoint
    from .ladders import get_phase, recipe_for
    from .recipe import Recipe, load_recipe
    from .runs import attach_teacher, invoked_command, run_dir_for
    from .spec import PhaseSpec
    from .train import train

    command = invoked_command()
    if args.resume:
        ckpt = load_checkpoint(Path(args.resume) / "checkpoint.pt")
        spec, recipe = PhaseSpec.from_dict(ckpt["spec"]), Recipe.from_dict(ckpt["recipe"])
        run_dir, recipe_name = Path(args.resume), ""
    else:
        if not args.dataset:
            raise SpecError(f"train needs a dataset ({', '.join(DATASETS)}) or --resume RUN_DIR")
        overrides = args.overrides + ([f"seed={args.seed}"] if args.seed is not None else [])
        spec = (PhaseSpec.from_arch("custom", args.dataset, args.arch, "custom architecture")
                if args.arch else get_phase(args.dataset, args.phase))
        recipe_name = args.recipe or recipe_for(spec)
        recipe = load_recipe(args.dataset, recipe_name, overrides)
        tag = "" if recipe_name == recipe_for(spec) else Path(recipe_name).stem
        run_dir = Path(args.out) if args.out else run_dir_for(spec, recipe.seed, tag=tag)
        if (run_dir / "metrics.json").exists() and not args.force:
            raise TinyCNNError(f"{run_dir} already holds a finished run; pass --force to overwrite or --out DIR")
        if (run_dir / "checkpoint.pt").exists() and not args.force:
            raise TinyCNNError(f"{run_dir} holds an unfinished run; continue it with --resume {run_dir}, "
                               f"or pass --force to start over")
    if args.budget is not None:
        check_budget(spec, args.budget)
    recipe, teacher = attach_teacher(spec, recipe)
    metrics = train(spec, recipe, run_dir, data_dir=args.data_dir, device=args.device, teacher=teacher,
                    resume=bool(args.resume), quiet=args.quiet, command=command, recipe_name=recipe_name)
    console.print(f"[bold green]{spec.dataset}/{spec.name}[/]: test accuracy "
                  f"{metrics['test_accuracy']:.2%} ({metrics['final_weights']} weights, "
                  f"{metrics['params']:,} params) -> {run_dir}")
    return 0


def _training_split(args: argparse.Namespace) -> tuple[int, int]:
    """The (val_size, split_seed) the model was trained with, so `--split val` never scores
    images the model was fitted on: explicit flags win, then the run's metrics.json recipe,
    then the Recipe defaults."""
    from .recipe import Recipe

    recipe = Recipe()
    metrics_path = Path(args.model).with_name("metrics.json")
    if metrics_path.exists():
        try:
            recipe = Recipe.from_dict(json.loads(metrics_path.read_text()).get("recipe", {}))
        except (OSError, json.JSONDecodeError, TinyCNNError):
            pass  # unreadable beside-file: the defaults, as for a model file on its own
    val_size = args.val_size if args.val_size is not None else recipe.val_size
    split_seed = args.split_seed if args.split_seed is not None else recipe.split_seed
    return val_size, split_seed


def cmd_eval(args: argparse.Namespace) -> int:
    from .checkpoint import load_model
    from .data import load_splits
    from .datasets import dataset_info
    from .evaluate import evaluate
    from .train import resolve_device

    model = load_model(args.model)
    dataset = args.dataset or model.spec.dataset
    info = dataset_info(dataset)
    if info.name != model.spec.dataset:
        raise SpecError(f"{args.model} was trained on {model.spec.dataset}; it cannot be evaluated on {info.name}")
    val_size, split_seed = _training_split(args)
    splits = load_splits(dataset, val_size, args.data_dir, split_seed=split_seed)
    split = splits.test if args.split == "test" else splits.val
    model = model.to(resolve_device(args.device))
    result = evaluate(model, split, info.num_classes, tta=args.tta)
    result.update({"model": str(args.model), "dataset": dataset, "split": args.split,
                   "phase": model.spec.name, "arch": model.spec.arch})
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    console.print(f"[bold]{args.model}[/] ({model.spec.name}, {dataset} {args.split}, {result['n']:,} images"
                  f"{', flip TTA' if args.tta else ''}): accuracy [bold]{result['accuracy']:.2%}[/]")
    table = Table(title="confusion matrix (rows: true class, columns: predicted)")
    table.add_column("class")
    for j in range(info.num_classes):
        table.add_column(str(j), justify="right")
    table.add_column("acc", justify="right")
    for i, name in enumerate(info.classes):
        table.add_row(f"{i} {name}", *[str(v) for v in result["confusion"][i]], f"{result['per_class'][i]:.1%}")
    console.print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TinyCNNError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
