"""The ladder as rows of numbers, rendered for terminals (rich), machines (JSON) and README (Markdown).

Computed from the specs every time, so no table anywhere is typed by hand.
"""
from __future__ import annotations

from .budget import phase_cost, require_positive_budget
from .datasets import dataset_info
from .ladders import ladder


def phase_rows(dataset: str, budget: int | None = None) -> list[dict]:
    budget = require_positive_budget(budget if budget is not None else dataset_info(dataset).budget)
    rows = []
    for phase in ladder(dataset):
        cost = phase_cost(phase, budget)
        rows.append({
            "phase": phase.name, "change": phase.change, "arch": phase.arch,
            "params": cost.params, "macs": cost.macs, "budget": budget,
            "within_budget": cost.within_budget, "over_by": cost.over_by,
        })
    return rows


def budget_status(row: dict) -> str:
    return "fits" if row["within_budget"] else f"over by {row['over_by']:,}"


def phases_markdown(dataset: str) -> str:
    info = dataset_info(dataset)
    lines = [f"| phase | change | params | MACs | ≤ {info.budget:,} |", "|---|---|---:|---:|---|"]
    for r in phase_rows(dataset):
        lines.append(f"| `{r['phase']}` | {r['change']} | {r['params']:,} | {r['macs']:,} | {budget_status(r)} |")
    return "\n".join(lines)
