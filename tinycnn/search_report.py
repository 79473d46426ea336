"""`tinycnn search report STUDY`: a study's table, counts and figures; live search progress.

    load_study(name, storage) -> write_search_report -> report.md, report.json,
                                 history.png, pareto.png, importances.png (the study's folder or ``out``)

The table lists the best complete trials (the Pareto front, by size, for two objectives) with
validation accuracy, parameters, MACs, epochs run, arch string and recipe overrides, and the
`tinycnn train` command that retrains each (`tinycnn.search.best_table`). The counts split the
trials into complete / pruned / infeasible (pruned before training: the candidate did not fit)
/ failed / running / waiting.

**Figures** are drawn with matplotlib directly, on the same pyplot-free Agg figures as
`tinycnn.figures`, not with ``optuna.visualization.matplotlib``: that module is experimental
(it warns on every call, and its look and arguments may change between Optuna releases),
cannot mark pruned trials, ladder finals or anchors, and goes through pyplot's global state.

- history: each trial's value (a pruned trial at its last reported epoch, marked x), the
  best-so-far line.
- pareto: parameters vs validation accuracy of every complete trial; the non-dominated ones
  (``study.best_trials`` for a two-objective study; for one objective, the trials no other trial
  beats with fewer or equal parameters) joined as the front. The ladder finals of the same
  dataset are marked with their **validation** accuracy (``metrics.json``; the test accuracy is
  never read here), and the `ANCHORS`, which are published **test** figures: not comparable
  with validation accuracy, marked as such.
- importances: ``optuna.importance.get_param_importances`` with the PED-ANOVA evaluator on the
  complete trials (Optuna's default, fANOVA, needs scikit-learn, which tinycnn does not depend on;
  PED-ANOVA needs only numpy and is deterministic); too few trials, a single parameter, or a space Optuna cannot evaluate gives a note
  in the report and on the figure, not an error.

`SearchProgress` is an Optuna callback that counts a running search's trials (done / pruned /
infeasible / failed / best so far) for a live line (the CLI shows it with rich); with several
workers the parent process polls the storage instead (`SearchProgress.observe`).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.trial import FrozenTrial, TrialState

from .atomic import atomic_write_text
from .ladders import final_phase
from .results import phase_runs, write_json
from .search import (
    SearchError,
    best_table,
    is_database_url,
    load_study,
    quiet_optuna,
    search_root,
    storage_location,
)

# Published figures to beat, (parameters, accuracy, label). They are TEST accuracies (some stopped
# early on the test set), drawn beside validation accuracies only as a reference point.
ANCHORS = {
    "mnist": [(697, 0.9903, "best public ≤1.5K (test, stopped early)")],
    "cifar10": [(40_000, 0.91, "ThriftyNet ~40K (test)")],
}
MIN_TRIALS_FOR_IMPORTANCE = 3
# Under this many complete trials the importances are computed but flagged: a sitting of three
# trials ranks 20 parameters from three points (study S5's first sitting did).
FEW_TRIALS_FOR_IMPORTANCE = 10
FIGURES = ("history.png", "pareto.png", "importances.png")


# --- reading a study ------------------------------------------------------------------------

def default_out_dir(study_name: str, storage=None) -> Path:
    """The journal's folder, or ``<search root>/<study>`` for a database."""
    location = storage_location(study_name, storage)
    return search_root() / study_name if is_database_url(location) else Path(location).parent


def is_infeasible(t: FrozenTrial) -> bool:
    return "infeasible" in t.user_attrs


def trial_counts(trials: list[FrozenTrial]) -> dict[str, int]:
    """complete / pruned (trained, then stopped) / infeasible / failed / running / waiting / total."""
    def n(state):
        return sum(t.state == state for t in trials)

    infeasible = sum(is_infeasible(t) for t in trials)
    return {"total": len(trials), "complete": n(TrialState.COMPLETE), "pruned": n(TrialState.PRUNED) - infeasible,
            "infeasible": infeasible, "failed": n(TrialState.FAIL), "running": n(TrialState.RUNNING),
            "waiting": n(TrialState.WAITING)}


def history_points(study: optuna.Study) -> list[dict]:
    """Trials in order with a validation accuracy: complete ones (their value) and pruned ones
    (their last reported epoch); infeasible, failed and running trials have none."""
    points = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state == TrialState.COMPLETE:
            points.append({"trial": t.number, "val_accuracy": t.values[0], "pruned": False})
        elif t.state == TrialState.PRUNED and t.intermediate_values:
            last = max(t.intermediate_values)
            points.append({"trial": t.number, "val_accuracy": t.intermediate_values[last], "pruned": True})
    return points


def non_dominated(points: list[tuple[int, float]]) -> list[int]:
    """Indices of the (params, accuracy) points no other point beats: fewer or equal
    parameters and higher or equal accuracy, one of them strictly."""
    def beaten(i):
        p, a = points[i]
        return any((q <= p and b >= a) and (q < p or b > a) for q, b in points)

    return [i for i in range(len(points)) if not beaten(i)]


def scatter_points(study: optuna.Study) -> list[dict]:
    """Every complete trial as (params, val accuracy), ``front`` marking the non-dominated ones."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    done = [t for t in done if "params" in t.user_attrs]
    if len(study.directions) > 1:
        front = {t.number for t in study.best_trials}
    else:
        idx = non_dominated([(t.user_attrs["params"], t.values[0]) for t in done])
        front = {done[i].number for i in idx}
    return [{"trial": t.number, "params": t.user_attrs["params"], "val_accuracy": t.values[0],
             "front": t.number in front} for t in done]


def ladder_finals(dataset: str, root: Path | None = None) -> list[dict]:
    """The dataset's ladder final, seed by seed: parameters and VALIDATION accuracy only."""
    try:
        final = final_phase(dataset).name
    except (KeyError, ValueError):
        return []
    return [{"phase": final, "seed": m.get("seed"), "params": m["params"], "val_accuracy": m["val_accuracy"]}
            for _, m in phase_runs(dataset, final, root) if m.get("val_accuracy") is not None]


def importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """(parameter -> importance, note); the note says why the dict is empty or trivial."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}, (f"parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials; "
                    f"this study has {len(done)}")
    try:
        with quiet_optuna(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            values = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
                target=(lambda t: t.values[0]) if len(study.directions) > 1 else None)
    except (ValueError, RuntimeError, ZeroDivisionError, ImportError) as e:
        return {}, f"parameter importances could not be computed: {e}"
    values = {k: float(v) for k, v in values.items() if not math.isnan(v)}
    # largest first, ties by name: Optuna's order of equal values varies, and the report is committed
    values = dict(sorted(values.items(), key=lambda kv: (-round(kv[1], 3), kv[0])))
    if any("select the same set of trials" in str(w.message) for w in caught):  # PED-ANOVA's own warning, as a note
        return values, ("parameter importances are all equal: the best trials do not stand apart from the rest "
                        "yet (PED-ANOVA's top and whole-study quantiles select the same trials)")
    if not values:
        return {}, "parameter importances: no parameter was drawn in every complete trial"
    if len(values) == 1:
        return values, f"only one parameter ({next(iter(values))}) was searched in every complete trial: it has all the importance"
    if len(done) < FEW_TRIALS_FOR_IMPORTANCE:
        return values, (f"from only {len(done)} complete trials over {len(values)} parameters, these importances "
                        f"are a hint, not a finding")
    return values, ""


# --- figures --------------------------------------------------------------------------------

def _new_axes(figsize: tuple[float, float]):
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def plot_history(ax, points: list[dict], title: str) -> None:
    """Each trial's validation accuracy (pruned ones marked x) and the best so far."""
    done = [p for p in points if not p["pruned"]]
    pruned = [p for p in points if p["pruned"]]
    if done:
        ax.scatter([p["trial"] for p in done], [100 * p["val_accuracy"] for p in done], s=18, label="complete")
    if pruned:
        ax.scatter([p["trial"] for p in pruned], [100 * p["val_accuracy"] for p in pruned], marker="x",
                   color="tab:gray", s=18, label="pruned (last epoch reported)")
    best, xs, ys = -math.inf, [], []
    for p in done:
        best = max(best, p["val_accuracy"])
        xs.append(p["trial"])
        ys.append(100 * best)
    if xs:
        ax.step(xs, ys, where="post", color="tab:red", label="best so far")
    if not points:
        ax.text(0.5, 0.5, "no trial has a validation accuracy yet", ha="center", va="center", transform=ax.transAxes)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title)
    if points:
        ax.legend(loc="best", fontsize=8)


def plot_pareto(ax, points: list[dict], finals: list[dict], anchors: list[tuple], budget, title: str) -> None:
    """Params vs validation accuracy; the front joined; ladder finals (val) and anchors (test) marked."""
    if points:
        ax.scatter([p["params"] for p in points], [100 * p["val_accuracy"] for p in points], s=16,
                   color="tab:blue", alpha=0.5, label="trials (val)")
        front = sorted((p for p in points if p["front"]), key=lambda p: p["params"])
        ax.plot([p["params"] for p in front], [100 * p["val_accuracy"] for p in front], "o-", color="tab:orange",
                label="non-dominated (val)")
    if finals:
        ax.scatter([f["params"] for f in finals], [100 * f["val_accuracy"] for f in finals], marker="s", s=40,
                   color="tab:green", zorder=3, label=f"ladder final {finals[0]['phase']} (val)")
    for i, (params, acc, label) in enumerate(anchors):
        ax.scatter([params], [100 * acc], marker="*", s=150, color="tab:red", zorder=3,
                   label="published anchor (TEST accuracy, not comparable)" if i == 0 else None)
        ax.annotate(label, (params, 100 * acc), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if budget:
        ax.axvline(budget, color="k", ls="--", lw=1, label=f"budget {budget:,}")
    ax.set_xlabel("deployed parameters")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=7)


def plot_importances(ax, values: dict[str, float], note: str, title: str) -> None:
    if values:
        names = list(values)[::-1]
        ax.barh(names, [values[n] for n in names], color="tab:blue")
        ax.set_xlabel("importance (PED-ANOVA, normalised)")
    if note:
        ax.text(0.5, 0.5 if not values else 0.02, note, ha="center", va="center" if not values else "bottom",
                transform=ax.transAxes, fontsize=8, wrap=True)
    ax.set_title(title)


# --- the report -----------------------------------------------------------------------------

def study_report(study: optuna.Study, results_root: Path | None = None, top: int = 10) -> dict:
    """Everything report.md and the figures show, as JSON-ready data."""
    attrs = study.user_attrs
    dataset = attrs.get("dataset", "")
    values, note = importances(study)
    known = dataset in ANCHORS
    return {
        "study": study.study_name, "dataset": dataset, "budget": attrs.get("budget"),
        "objective": attrs.get("objective", "val"), "directions": [d.name.lower() for d in study.directions],
        "space": attrs.get("space"), "counts": trial_counts(study.get_trials(deepcopy=False)),
        "best": best_table(study, top=top), "history": history_points(study), "scatter": scatter_points(study),
        "ladder_finals": ladder_finals(dataset, results_root) if known else [],
        "anchors": [{"params": p, "test_accuracy": a, "label": lab} for p, a, lab in ANCHORS.get(dataset, [])],
        "importances": values, "importance_note": note,
    }


def write_search_report(study_name: str, storage=None, out=None, results_root: Path | None = None,
                        top: int = 10) -> list[Path]:
    """Write report.md, report.json and the three figures; returns their paths."""
    if top < 1:  # a slice [:-1] would silently drop the last row, [:0] leave the table empty
        raise SearchError(f"--top must be >= 1 (rows in the best-trials table), got {top}")
    study = load_study(study_name, storage)
    data = study_report(study, results_root, top)
    out_dir = Path(out) if out is not None else default_out_dir(study_name, storage)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SearchError(f"cannot write the report to {out_dir}: {e}") from None
    paths = [out_dir / "report.json", out_dir / "report.md"]
    write_json(paths[0], data)
    atomic_write_text(paths[1], render_markdown(data))
    return paths + write_report_figures(data, out_dir)


def write_report_figures(data: dict, out_dir: Path) -> list[Path]:
    name = data["study"]
    anchors = [(a["params"], a["test_accuracy"], a["label"]) for a in data["anchors"]]
    drawings = [
        ((7, 4), lambda ax: plot_history(ax, data["history"], f"{name}: optimisation history")),
        ((7, 4.5), lambda ax: plot_pareto(ax, data["scatter"], data["ladder_finals"], anchors, data["budget"],
                                          f"{name}: parameters vs accuracy")),
        ((7, 4), lambda ax: plot_importances(ax, data["importances"], data["importance_note"],
                                             f"{name}: parameter importances")),
    ]
    written = []
    for filename, (size, draw) in zip(FIGURES, drawings):
        fig, ax = _new_axes(size)
        draw(ax)
        fig.tight_layout()
        fig.savefig(out_dir / filename, dpi=100)
        written.append(out_dir / filename)
    return written


def render_markdown(data: dict) -> str:
    c = data["counts"]
    lines = [f"# Search study `{data['study']}`", "",
             (f"{data['dataset']} under {data['budget']:,} parameters, objective `{data['objective']}` "
              f"({', '.join(data['directions'])}), space `{data['space']}`. Accuracies are on the validation "
              f"split; a search never reads the test split."), "",
             (f"Trials: {c['total']} — {c['complete']} complete, {c['pruned']} pruned, {c['infeasible']} infeasible "
              f"(did not fit, never trained), {c['failed']} failed, {c['running']} running"
              + (f", {c['waiting']} waiting" if c["waiting"] else "") + "."), "",
             "## " + ("Pareto front (by size)" if len(data["directions"]) > 1 else "Best trials"), "",
             "| trial | val acc | params | MACs | epochs run | arch | recipe |",
             "|---:|---:|---:|---:|---:|---|---|"]
    for r in data["best"]:
        recipe = " ".join([r["recipe"], *(f"`{o}`" for o in r["overrides"])])
        macs = f"{r['macs']:,}" if r.get("macs") is not None else "—"
        lines.append(f"| {r['trial']} | {r['val_accuracy']:.2%} | {r['params']:,} | {macs} | "
                     f"{r.get('epochs_run') or '—'} | `{r['arch']}` | {recipe} |")
    if not data["best"]:
        lines.append("| — | no complete trial yet | | | | | |")
    if data["best"]:
        lines += ["", f"Retrain the best as ordinary runs, seeds 0 1 2, test read once: `tinycnn search retrain "
                  f"{data['study']}`; one run of it alone: `" + data["best"][0]["command"] + "`"]
    lines += ["", "## Figures", "", "![history](history.png)", "", "![pareto](pareto.png)", ""]
    if data["ladder_finals"]:
        lines.append(f"Squares: the ladder final `{data['ladder_finals'][0]['phase']}` (validation accuracy, "
                     f"{len(data['ladder_finals'])} seed(s)).")
    if data["anchors"]:
        lines.append("Stars: published anchors — **test** accuracies (" + "; ".join(
            f"{a['label']}: {a['params']:,} params, {a['test_accuracy']:.2%}" for a in data["anchors"])
            + "), not comparable with the validation figures.")
    lines += ["", "![importances](importances.png)", ""]
    if data["importance_note"]:
        lines += [f"Note: {data['importance_note']}.", ""]
    for k, v in data["importances"].items():
        lines.append(f"- `{k}`: {v:.3f}")
    return "\n".join(lines).rstrip() + "\n"


# --- live progress --------------------------------------------------------------------------

@dataclass
class SearchProgress:
    """An Optuna callback counting this command's finished trials; `line` is the live status."""

    total: int | None = None
    done: int = 0
    counts: dict = field(default_factory=lambda: {"complete": 0, "pruned": 0, "infeasible": 0, "failed": 0})
    best: float | None = None
    best_trial: int | None = None
    running: int = 0

    def __call__(self, study, trial: FrozenTrial) -> None:
        self.done += 1
        if is_infeasible(trial):
            self.counts["infeasible"] += 1
        elif trial.state == TrialState.PRUNED:
            self.counts["pruned"] += 1
        elif trial.state == TrialState.COMPLETE:
            self.counts["complete"] += 1
            value = trial.values[0]
            if self.best is None or value > self.best:
                self.best, self.best_trial = value, trial.number
        else:
            self.counts["failed"] += 1

    def observe(self, trials: list[FrozenTrial]) -> None:
        """Recount from trials read from the storage (the parent of several workers polls it)."""
        fresh = SearchProgress(self.total)
        for t in trials:
            if t.state.is_finished():
                fresh(None, t)
        fresh.running = sum(t.state == TrialState.RUNNING for t in trials)
        self.done, self.counts, self.best, self.best_trial, self.running = (
            fresh.done, fresh.counts, fresh.best, fresh.best_trial, fresh.running)

    def line(self) -> str:
        c = self.counts
        of = f"/{self.total}" if self.total is not None else ""
        best = f"best val {self.best:.4f} (trial {self.best_trial})" if self.best is not None else "no best yet"
        return (f"trials {self.done}{of} done: {c['complete']} complete, {c['pruned']} pruned, "
                f"{c['infeasible']} infeasible, {c['failed']} failed"
                + (f", {self.running} running" if self.running else "") + f"; {best}")
