"""The committed study: a whole ladder, and the one-technique-at-a-time ablation.

Both write under ``experiments/results`` (`results.results_root`) and are restartable at
run granularity through `pipeline.run_or_reuse`: a finished run directory is reused, an
unfinished one resumed.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from .datasets import dataset_info
from .device import device_description, resolve_device
from .errors import SpecError
from .ladders import ablation_plan, final_phase, get_phase, ladder, previous_phase, recipe_for
from .pipeline import RunRequest, run_or_reuse
from .recipe import load_recipe
from .results import (ablation_dir, ablation_file, invoked_command, is_finished, read_metrics, run_dir_for,
                      train_command, write_json)
from .spec import BlockSpec, PhaseSpec


def run_ladder(dataset: str, recipe_name: str | None = None, overrides: list[str] | None = None,
               seeds: int = 1, final_seeds: int = 3, phases: list[str] | None = None,
               quiet: bool = True, data_dir=None, device="auto", log: Callable[[str], None] = print) -> list[dict]:
    """Train every phase in order (``final_seeds`` seeds for the final phase, ``seeds`` for others),
    each with its own recipe (`ladders.recipe_for`) unless ``recipe_name`` names one for all."""
    if seeds < 0 or final_seeds < 0:
        raise SpecError(f"--seeds and --final-seeds must be >= 0 (0: none), got {seeds} and {final_seeds}")
    names = [get_phase(dataset, p).name for p in phases] if phases else [p.name for p in ladder(dataset)]
    final = final_phase(dataset).name
    results = []
    for name in names:
        phase = get_phase(dataset, name)
        name_of_recipe = recipe_name or recipe_for(phase)
        phase_recipe = load_recipe(dataset, name_of_recipe, overrides or [])
        for seed in range(final_seeds if name == final else seeds):
            run_dir = run_dir_for(phase, seed)
            log(f"{dataset}/{name} seed {seed} -> {run_dir}")
            req = RunRequest(phase, replace(phase_recipe, seed=seed), run_dir, recipe_name=name_of_recipe,
                             command=train_command(dataset, name, name_of_recipe, seed, overrides),
                             data_dir=data_dir, device=device, quiet=quiet)
            m = run_or_reuse(req, "continue")
            log(f"{dataset}/{name} seed {seed}: test {m['test_accuracy']:.4f}")
            results.append(m)
    return results


def with_blurpool(spec: PhaseSpec) -> PhaseSpec:
    """``spec`` with every max-pool replaced by BlurPool (the parameter count is unchanged)."""
    blocks = tuple(BlockSpec("blur") if b.kind == "max" else b for b in spec.blocks)
    return replace(spec, name=f"{spec.name}+blur", blocks=blocks, change="max-pools become BlurPool")


def without_se_and_blur(spec: PhaseSpec) -> PhaseSpec:
    """``spec`` with squeeze-excite removed and BlurPool back to max-pool: where the ablation
    of a final architecture starts, so that SE and BlurPool are measured as steps."""
    blocks = tuple(BlockSpec("max") if b.kind == "blur" else replace(b, se=0) for b in spec.blocks)
    return replace(spec, name=f"{spec.name}-se-blur", blocks=blocks, change="no SE, max-pools")


def ablation_steps(dataset: str) -> list[tuple[str, str, PhaseSpec, list[str]]]:
    """(step, what it adds, architecture, cumulative recipe overrides on the `plain` recipe).

    The architecture starts where the dataset's `AblationPlan` says (by default the final
    phase without SE and with max-pools) and ends at the final phase, so SE and BlurPool
    are measured as steps like the training tricks.
    """
    final = get_phase(dataset, "final")
    plan = ablation_plan(dataset)
    base = get_phase(dataset, plan.start_phase) if plan.start_phase else without_se_and_blur(final)
    teacher = previous_phase(final)
    aug = [f"crop_pad={plan.crop_pad}"] + (["flip=true"] if plan.flip else [])
    steps = [
        ("plain", "constant lr, no tricks (`plain` recipe)", base, []),
        ("clr", "one-cycle cyclical lr + no-bias-decay", base, ["schedule=onecycle", "no_bias_decay=true"]),
        ("crop", "random crop" + (" + flip" if plan.flip else ""), base, aug),
        ("ls", "label smoothing 0.1", base, ["label_smoothing=0.1"]),
        ("cutout", f"Cutout {plan.cutout} px", base, [f"cutout={plan.cutout}"]),
        ("mixup", "Mixup alpha 0.2", base, ["mixup_alpha=0.2"]),
        ("blurpool", "BlurPool instead of max-pool", with_blurpool(base), []),
        ("se", "squeeze-excite (the final architecture)", final, []),
        ("swa", "SWA over the last 25% of epochs", final, ["swa=true", "swa_start=0.75"]),
        ("sam", "SAM rho 0.05", final, ["sam_rho=0.05"]),
        ("kd", f"distillation from the `{teacher.name}` phase's model", final, ["kd_teacher=previous"]),
    ]
    out, acc = [], []
    for step, adds, spec, changes in steps:
        acc = acc + changes
        out.append((step, adds, spec, list(acc)))
    return out


def _check_steps(dataset: str, steps: list[str] | None) -> None:
    names = [s[0] for s in ablation_steps(dataset)]
    unknown = [s for s in steps or [] if s not in names]
    if unknown:
        raise SpecError(f"unknown ablation step(s) {', '.join(unknown)} for {dataset}; accepted: {', '.join(names)}")


def run_ablation(dataset: str, epochs: int | None = None, seed: int = 0, extra: list[str] | None = None,
                 steps: list[str] | None = None, quiet: bool = True, data_dir=None, device="auto",
                 log: Callable[[str], None] = print) -> dict:
    """Run the cumulative ablation; write ``<results>/<dataset>/ablation.json``.

    Steps not asked for keep their rows as the file has them (or as their finished run
    records them), so a partial re-run never rewrites what other invocations ran.
    """
    info = dataset_info(dataset)
    _check_steps(info.name, steps)
    base_dir = ablation_dir(info.name)
    kept = _saved_rows(info.name)
    command = invoked_command() or f"tinycnn ablate {info.name}" + (f" --epochs {epochs}" if epochs is not None else "")
    rows = []
    for step, adds, spec, changes in ablation_steps(info.name):
        run_dir = base_dir / step
        if steps and step not in steps:
            if is_finished(run_dir):
                rows.append(kept.get(step) or _ablation_row(step, adds, spec, read_metrics(run_dir), run_dir, changes))
            continue
        overrides = changes + [f"seed={seed}"] + ([f"epochs={epochs}"] if epochs is not None else []) + (extra or [])
        log(f"ablation {info.name} step {step}: +{adds}")
        req = RunRequest(spec, load_recipe(info.name, "plain", overrides), run_dir, recipe_name="plain",
                         command=command, data_dir=data_dir, device=device, quiet=quiet)
        m = run_or_reuse(req, "continue")
        rows.append(_ablation_row(step, adds, spec, m, run_dir, overrides))
        log(f"  val {m['val_accuracy']:.4f} test {m['test_accuracy']:.4f}")
    return _write_ablation(info.name, rows, seed, device)


def _saved_rows(dataset: str) -> dict[str, dict]:
    path = ablation_file(dataset)
    if not path.exists():
        return {}
    import json

    return {row["step"]: row for row in json.loads(path.read_text()).get("steps", [])}


def _ablation_row(step: str, adds: str, spec: PhaseSpec, m: dict, run_dir: Path, overrides: list[str]) -> dict:
    return {"step": step, "adds": adds, "arch": spec.arch, "params": m["params"], "overrides": overrides,
            "epochs": m.get("epochs"), "val_accuracy": m["val_accuracy"], "test_accuracy": m["test_accuracy"],
            "train_time_s": m["train_time_s"], "run_dir": str(run_dir), "device": m["device"],
            "command": m.get("command", "")}


def _write_ablation(dataset: str, rows: list[dict], seed: int, device) -> dict:
    """The file's epochs and command are those of its rows' own runs, never a default."""
    epochs = sorted({r["epochs"] for r in rows if r.get("epochs") is not None})
    commands = list(dict.fromkeys(r["command"] for r in rows if r.get("command")))
    result = {"dataset": dataset, "epochs": epochs[0] if len(epochs) == 1 else epochs, "seed": seed,
              "device": ", ".join(sorted({r["device"] for r in rows})) or device_description(resolve_device(str(device))),
              "command": "; ".join(commands), "steps": rows}
    write_json(ablation_file(dataset), result)
    return result
