"""The ladder as rows of numbers, rendered for terminals (rich), machines (JSON) and README (Markdown).

Computed from the specs every time, so no table anywhere is typed by hand. ``params`` is
the deployed count the budget checks (`budget.deployed_params`); ``train_params`` the
model as trained, which differs only for re-parameterised (rep*) blocks, so the Markdown
table shows it only then.
"""
from __future__ import annotations

from collections.abc import Iterable

from .budget import phase_cost, require_positive_budget
from .datasets import dataset_info
from .ladders import ladder
from .spec import PhaseSpec


def phase_rows(dataset: str, budget: int | None = None,
               phases: Iterable[PhaseSpec] | None = None) -> list[dict]:
    """One row per phase of ``dataset``'s ladder (or of ``phases``, specs of that dataset)."""
    budget = require_positive_budget(budget if budget is not None else dataset_info(dataset).budget)
    rows = []
    for phase in ladder(dataset) if phases is None else phases:
        cost = phase_cost(phase, budget)
        rows.append({
            "phase": phase.name, "change": phase.change, "arch": phase.arch,
            "params": cost.params, "train_params": cost.train_params, "macs": cost.macs, "budget": budget,
            "within_budget": cost.within_budget, "over_by": cost.over_by,
        })
    return rows


def budget_status(row: dict) -> str:
    return "fits" if row["within_budget"] else f"over by {row['over_by']:,}"


def phases_markdown(dataset: str, phases: Iterable[PhaseSpec] | None = None) -> str:
    info = dataset_info(dataset)
    rows = phase_rows(dataset, phases=phases)
    trained = any(r["train_params"] != r["params"] for r in rows)
    extra = (" train params |", "---:|") if trained else ("", "")
    lines = [f"| phase | change | params |{extra[0]} MACs | ≤ {info.budget:,} |",
             f"|---|---|---:|{extra[1]}---:|---|"]
    for r in rows:
        train = f" {r['train_params']:,} |" if trained else ""
        lines.append(f"| `{r['phase']}` | {r['change']} | {r['params']:,} |{train} {r['macs']:,} "
                     f"| {budget_status(r)} |")
    return "\n".join(lines)
