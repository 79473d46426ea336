"""Multi-run jobs: a whole ladder, and the one-technique-at-a-time ablation.

Both are restartable at run granularity: a finished run directory (metrics.json beside
model.pt) is reused, an unfinished one (checkpoint.pt) is resumed.
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable

from .datasets import dataset_info
from .errors import CheckpointError
from .ladders import ablation_plan, get_phase, ladder, previous_phase, recipe_for
from .recipe import Recipe, load_recipe
from .runs import attach_teacher, invoked_command, is_finished, results_root, run_dir_for
from .spec import BlockSpec, PhaseSpec
from .train import device_description, resolve_device, train


def run_or_reuse(phase: PhaseSpec, recipe: Recipe, run_dir: Path, *, quiet=True,
                 command: str = "", recipe_name: str = "", data_dir=None, device="auto") -> dict:
    """The finished run in ``run_dir`` if it is this phase's, else train (or resume) it.

    A KD teacher named by ``recipe.kd_teacher`` is loaded only when training happens, so a
    reused run needs neither the teacher's file nor the time to read it.
    """
    if is_finished(run_dir):
        m = json.loads((run_dir / "metrics.json").read_text())
        # A finished run is reused only for the architecture it trained: after a ladder or
        # an ablation step changes, an old run must not stand in for the new one.
        if m.get("arch") != phase.arch:
            raise CheckpointError(f"{run_dir} holds a finished run of `{m.get('arch')}`, not of {phase.name!r} "
                                  f"(`{phase.arch}`); move it away or delete it to train the new one")
        # ... and only for the recipe it trained with: phases may differ by recipe alone.
        if recipe_name and m.get("recipe_name") and m["recipe_name"] != recipe_name:
            raise CheckpointError(f"{run_dir} holds a finished run with recipe {m['recipe_name']!r}, not "
                                  f"{recipe_name!r}; move it away or delete it to train the new one")
        return m
    resume = (run_dir / "checkpoint.pt").exists()
    recipe, teacher = attach_teacher(phase, recipe)  # the ladder's trained previous phase teaches
    return train(phase, recipe, run_dir, teacher=teacher, resume=resume, quiet=quiet, command=command,
                 recipe_name=recipe_name, data_dir=data_dir, device=device)


def run_ladder(dataset: str, recipe_name: str | None = None, overrides: list[str] | None = None,
               seeds: int = 1, final_seeds: int = 3, phases: list[str] | None = None,
               quiet: bool = True, data_dir=None, device="auto", log: Callable[[str], None] = print) -> list[dict]:
    """Train every phase in order (``final_seeds`` seeds for the final phase, ``seeds`` for others),
    each with its own recipe (`ladders.recipe_for`) unless ``recipe_name`` names one for all."""
    names = [get_phase(dataset, p).name for p in phases] if phases else [p.name for p in ladder(dataset)]
    final = ladder(dataset)[-1].name
    results = []
    for name in names:
        phase = get_phase(dataset, name)
        name_of_recipe = recipe_name or recipe_for(phase)
        phase_recipe = load_recipe(dataset, name_of_recipe, overrides or [])
        for seed in range(final_seeds if name == final else seeds):
            recipe = replace(phase_recipe, seed=seed)
            run_dir = run_dir_for(phase, seed)
            cmd = f"tinycnn train {dataset} --phase {name} --recipe {name_of_recipe} --seed {seed}" + "".join(
                f" --set {o}" for o in overrides or [])
            log(f"{dataset}/{name} seed {seed} -> {run_dir}")
            m = run_or_reuse(phase, recipe, run_dir, quiet=quiet, command=cmd, recipe_name=name_of_recipe,
                             data_dir=data_dir, device=device)
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


def run_ablation(dataset: str, epochs: int | None = None, seed: int = 0, extra: list[str] | None = None,
                 steps: list[str] | None = None, quiet: bool = True, data_dir=None, device="auto",
                 log: Callable[[str], None] = print) -> dict:
    """Run the cumulative ablation; write ``<results>/<dataset>/ablation.json``."""
    info = dataset_info(dataset)
    base_dir = results_root() / info.name / "ablation"
    rows = []
    for step, adds, spec, changes in ablation_steps(info.name):
        run_dir = base_dir / step
        if steps and step not in steps and not is_finished(run_dir):
            continue  # not asked for and never run; finished steps stay in ablation.json
        overrides = changes + [f"seed={seed}"] + ([f"epochs={epochs}"] if epochs else []) + (extra or [])
        recipe = load_recipe(info.name, "plain", overrides)
        log(f"ablation {info.name} step {step}: +{adds}")
        m = run_or_reuse(spec, recipe, run_dir, quiet=quiet, recipe_name="plain",
                         command=f"tinycnn ablate {info.name}" + (f" --epochs {epochs}" if epochs else ""),
                         data_dir=data_dir, device=device)
        rows.append({"step": step, "adds": adds, "arch": spec.arch, "params": m["params"],
                     "overrides": overrides, "val_accuracy": m["val_accuracy"],
                     "test_accuracy": m["test_accuracy"], "train_time_s": m["train_time_s"],
                     "run_dir": str(run_dir), "device": m["device"]})
        log(f"  val {m['val_accuracy']:.4f} test {m['test_accuracy']:.4f}")
    result = {"dataset": info.name, "epochs": epochs or load_recipe(info.name, "plain").epochs, "seed": seed,
              "device": ", ".join(sorted({r["device"] for r in rows})) or device_description(resolve_device(str(device))),
              "command": invoked_command() or f"tinycnn ablate {info.name}" + (f" --epochs {epochs}" if epochs else ""),
              "steps": rows}
    (base_dir.parent / "ablation.json").write_text(json.dumps(result, indent=2))
    return result

