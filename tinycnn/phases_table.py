"""The ladder as rows of numbers, rendered for terminals (rich), machines (JSON) and README (Markdown).

Computed from the specs every time, so no table anywhere is typed by hand. ``params`` is
the deployed count the budget checks (`budget.deployed_params`); ``train_params`` the
model as trained, which differs only for re-parameterised (rep*) blocks, so the Markdown
table shows it only then. ``int8_weight_bytes`` and ``peak_ram_bytes`` are the flash and
RAM a microcontroller developer checks first (`memory`).
"""
from __future__ import annotations

from collections.abc import Iterable

from .budget import phase_cost, require_positive_budget
from .datasets import dataset_info
from .ladders import ladder
from .memory import int8_weight_bytes, peak_activation_bytes, planned_arena_bytes
from .spec import PhaseSpec


def phase_rows(dataset: str, budget: int | None = None,
               phases: Iterable[PhaseSpec] | None = None, ram_budget: int | None = None) -> list[dict]:
    """One row per phase of ``dataset``'s ladder (or of ``phases``, specs of that dataset);
    with ``ram_budget`` (bytes) a phase fits only if its planned activation arena does too."""
    budget = require_positive_budget(budget if budget is not None else dataset_info(dataset).budget)
    if ram_budget is not None:
        require_positive_budget(ram_budget, "RAM budget", "bytes")
    rows = []
    for phase in ladder(dataset) if phases is None else phases:
        cost, arena = phase_cost(phase, budget), planned_arena_bytes(phase)
        ram_over = max(0, arena - ram_budget) if ram_budget is not None else 0
        rows.append({
            "phase": phase.name, "change": phase.change, "arch": phase.arch,
            "params": cost.params, "train_params": cost.train_params, "macs": cost.macs, "budget": budget,
            "within_budget": cost.within_budget and not ram_over, "over_by": cost.over_by,
            "int8_weight_bytes": int8_weight_bytes(phase), "peak_ram_bytes": peak_activation_bytes(phase),
            "arena_bytes": arena, "ram_budget": ram_budget, "ram_over_by": ram_over,
        })
    return rows


def budget_status(row: dict) -> str:
    over = ([f"over by {row['over_by']:,}"] if row["over_by"] else []) + (
        [f"RAM over by {row['ram_over_by']:,} B"] if row.get("ram_over_by") else [])
    return ", ".join(over) or "fits"


def phases_markdown(dataset: str, phases: Iterable[PhaseSpec] | None = None) -> str:
    info = dataset_info(dataset)
    rows = phase_rows(dataset, phases=phases)
    trained = any(r["train_params"] != r["params"] for r in rows)
    extra = (" train params |", "---:|") if trained else ("", "")
    lines = [f"| phase | change | params |{extra[0]} MACs | int8 weights | peak RAM (int8) | arena (int8) "
             f"| ≤ {info.budget:,} |", f"|---|---|---:|{extra[1]}---:|---:|---:|---:|---|"]
    for r in rows:
        train = f" {r['train_params']:,} |" if trained else ""
        lines.append(f"| `{r['phase']}` | {r['change']} | {r['params']:,} |{train} {r['macs']:,} "
                     f"| {r['int8_weight_bytes']:,} B | {r['peak_ram_bytes']:,} B | {r['arena_bytes']:,} B "
                     f"| {budget_status(r)} |")
    return "\n".join(lines)
