"""The `tinycnn` command: thin. It parses, calls the library, and prints with rich.

Every TinyCNNError becomes one red line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from .datasets import DATASETS
from .errors import TinyCNNError

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
    fit = fit_width(phase, args.budget, step=args.step)
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
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_fit)

    _add_training_commands(sub)
    return parser


def _add_training_commands(sub) -> None:  # filled in by the training engine
    pass


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
